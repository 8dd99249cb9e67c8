//! Numpy `.npy` headers and the one-dimensional index arrays stored in them (or raw, as
//! `np.memmap` writes them): OLMo's `global_indices.npy` is such an array.
//!
//! Only what an index array needs is accepted: dtype `<u4` or `<u8`, `fortran_order`
//! false, a one-dimensional shape whose byte count is exactly the rest of the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The six bytes every `.npy` file starts with.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest header accepted (numpy writes at most a few hundred bytes).
pub const MAX_HEADER_BYTES: usize = 1 << 16;

/// Element type of an index array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexDtype {
    /// Little-endian u32 (`<u4`).
    U32,
    /// Little-endian u64 (`<u8`).
    U64,
}

impl IndexDtype {
    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            Self::U32 => 4,
            Self::U64 => 8,
        }
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: IndexDtype,
    /// Shape (one dimension for an index array; kept as parsed).
    pub shape: Vec<u64>,
    /// Offset of the first data byte.
    pub data_offset: u64,
}

fn bad(path: &Path, offset: u64, msg: impl Into<String>) -> DataError {
    DataError::layout(path, Some(offset), msg)
}

impl NpyHeader {
    /// Parses the header at the start of `bytes` (the file's first bytes; `path` names it in
    /// errors). Checks the magic, version, header length, `descr`, `fortran_order` and
    /// `shape` keys; the caller checks the data length.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
            return Err(bad(path, 0, "not a numpy .npy file (no \\x93NUMPY magic)"));
        }
        let major = bytes[6];
        let (hlen, start) = match major {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err(bad(path, 8, "header length cut short"));
                }
                (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12usize,
                )
            }
            v => return Err(bad(path, 6, format!("unsupported .npy version {v}"))),
        };
        if hlen > MAX_HEADER_BYTES {
            return Err(bad(
                path,
                8,
                format!("header of {hlen} bytes, more than {MAX_HEADER_BYTES}"),
            ));
        }
        let end = start + hlen;
        if bytes.len() < end {
            return Err(bad(
                path,
                start as u64,
                format!("header of {hlen} bytes runs past the end of the file"),
            ));
        }
        let text = std::str::from_utf8(&bytes[start..end])
            .map_err(|_| bad(path, start as u64, "header is not UTF-8"))?;
        let dict = parse_dict(text).map_err(|m| bad(path, start as u64, m))?;
        let mut descr = None;
        let mut fortran = None;
        let mut shape = None;
        for (k, v) in dict {
            match (k.as_str(), v) {
                ("descr", Lit::Str(s)) => descr = Some(s),
                ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
                ("shape", Lit::Tuple(t)) => shape = Some(t),
                (k, _) => {
                    return Err(bad(
                        path,
                        start as u64,
                        format!("unexpected header key or value type `{k}`"),
                    ))
                }
            }
        }
        let descr = descr.ok_or_else(|| bad(path, start as u64, "header has no `descr`"))?;
        let dtype = match descr.as_str() {
            "<u4" => IndexDtype::U32,
            "<u8" => IndexDtype::U64,
            d => {
                return Err(bad(
                    path,
                    start as u64,
                    format!("dtype `{d}`: an index array must be `<u4` or `<u8`"),
                ))
            }
        };
        if fortran.ok_or_else(|| bad(path, start as u64, "header has no `fortran_order`"))? {
            return Err(bad(
                path,
                start as u64,
                "fortran_order is True; expected False",
            ));
        }
        let shape = shape.ok_or_else(|| bad(path, start as u64, "header has no `shape`"))?;
        Ok(Self {
            dtype,
            shape,
            data_offset: end as u64,
        })
    }
}

#[derive(Debug)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the Python dict literal numpy writes (`{'descr': '<u4', 'fortran_order': False,
/// 'shape': (3,), }` padded with spaces and a newline). Nothing else is accepted.
fn parse_dict(text: &str) -> std::result::Result<Vec<(String, Lit)>, String> {
    let b = text.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] as char).is_ascii_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> std::result::Result<String, String> {
        let q = b[*i];
        *i += 1;
        let s = *i;
        while *i < b.len() && b[*i] != q {
            if b[*i] == b'\\' {
                return Err("escapes in header strings are not supported".into());
            }
            *i += 1;
        }
        if *i >= b.len() {
            return Err("unterminated string in header".into());
        }
        let out = text[s..*i].to_string();
        *i += 1;
        Ok(out)
    };
    ws(&mut i);
    if i >= b.len() || b[i] != b'{' {
        return Err("header is not a dict literal".into());
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        ws(&mut i);
        if i >= b.len() {
            return Err("header dict is not closed".into());
        }
        if b[i] == b'}' {
            i += 1;
            break;
        }
        if b[i] != b'\'' && b[i] != b'"' {
            return Err(format!("expected a quoted key at header offset {i}"));
        }
        let key = string(&mut i)?;
        ws(&mut i);
        if i >= b.len() || b[i] != b':' {
            return Err(format!("expected `:` after key `{key}`"));
        }
        i += 1;
        ws(&mut i);
        if i >= b.len() {
            return Err(format!("no value for key `{key}`"));
        }
        let v = match b[i] {
            b'\'' | b'"' => Lit::Str(string(&mut i)?),
            b'T' if text[i..].starts_with("True") => {
                i += 4;
                Lit::Bool(true)
            }
            b'F' if text[i..].starts_with("False") => {
                i += 5;
                Lit::Bool(false)
            }
            b'(' => {
                i += 1;
                let mut dims = Vec::new();
                loop {
                    ws(&mut i);
                    if i >= b.len() {
                        return Err("shape tuple is not closed".into());
                    }
                    if b[i] == b')' {
                        i += 1;
                        break;
                    }
                    let s = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if s == i || i - s > 19 {
                        return Err(format!("bad dimension in shape at header offset {s}"));
                    }
                    let d: u64 = text[s..i]
                        .parse()
                        .map_err(|_| format!("bad dimension `{}`", &text[s..i]))?;
                    dims.push(d);
                    ws(&mut i);
                    if i < b.len() && b[i] == b',' {
                        i += 1;
                    }
                }
                Lit::Tuple(dims)
            }
            _ => return Err(format!("unsupported value for key `{key}`")),
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("key `{key}` appears twice"));
        }
        out.push((key, v));
        ws(&mut i);
        if i < b.len() && b[i] == b',' {
            i += 1;
        }
    }
    ws(&mut i);
    if i != b.len() {
        return Err("bytes after the header dict".into());
    }
    Ok(out)
}

/// How an index array is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexFormat {
    /// A `.npy` file with a header.
    Npy,
    /// Bare little-endian u32 values, as `np.memmap(..., dtype=np.uint32)` writes (OLMo's
    /// `global_indices.npy`).
    RawU32,
}

/// A memory-mapped one-dimensional array of u32 or u64 indices.
pub struct IndexArray {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
    dtype: IndexDtype,
    format: IndexFormat,
    offset: usize,
    len: u64,
}

impl IndexArray {
    /// Maps `path`: a `.npy` file (header checked, data length exactly `shape · width`)
    /// or, when the file does not start with the `.npy` magic, raw u32 values (length a
    /// multiple of 4).
    pub fn open(path: &Path) -> Result<Self> {
        let opened = glass_io::open::open_regular(path)?;
        let map = opened.map()?;
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let file_len = bytes.len() as u64;
        let (dtype, format, offset, len) = if bytes.starts_with(NPY_MAGIC) {
            let h = NpyHeader::parse(bytes, path)?;
            if h.shape.len() != 1 {
                return Err(bad(
                    path,
                    0,
                    format!(
                        "shape {:?}: an index array must be one-dimensional",
                        h.shape
                    ),
                ));
            }
            let want = h.shape[0]
                .checked_mul(h.dtype.width() as u64)
                .and_then(|n| n.checked_add(h.data_offset));
            if want != Some(file_len) {
                return Err(bad(
                    path,
                    h.data_offset,
                    format!(
                        "header says {} values of {} bytes after a {}-byte header, but the file has {file_len} bytes",
                        h.shape[0],
                        h.dtype.width(),
                        h.data_offset
                    ),
                ));
            }
            (
                h.dtype,
                IndexFormat::Npy,
                h.data_offset as usize,
                h.shape[0],
            )
        } else {
            if !file_len.is_multiple_of(4) {
                return Err(bad(
                    path,
                    file_len,
                    format!(
                        "no .npy header, and {file_len} bytes is not a whole number of u32 values"
                    ),
                ));
            }
            (IndexDtype::U32, IndexFormat::RawU32, 0, file_len / 4)
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
            dtype,
            format,
            offset,
            len,
        })
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element type.
    pub fn dtype(&self) -> IndexDtype {
        self.dtype
    }

    /// Storage format.
    pub fn format(&self) -> IndexFormat {
        self.format
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of value `i` in the file.
    pub fn byte_offset(&self, i: u64) -> u64 {
        self.offset as u64 + i * self.dtype.width() as u64
    }

    /// Value `i`; an index past the end is an error naming the file.
    pub fn get(&self, i: u64) -> Result<u64> {
        if i >= self.len {
            return Err(DataError::layout(
                &self.path,
                None,
                format!("index {i} past the {} values of the array", self.len),
            ));
        }
        let bytes = self.map.as_deref().unwrap_or(&[]);
        let at = self.byte_offset(i) as usize;
        Ok(match self.dtype {
            IndexDtype::U32 => {
                u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as u64
            }
            IndexDtype::U64 => u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_npy_and_raw_index_arrays() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.npy");
        let vals: Vec<u8> = [5u32, 0, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy("<u4", "False", "(3,)", &vals)).unwrap();
        let a = IndexArray::open(&p).unwrap();
        assert_eq!((a.len(), a.format()), (3, IndexFormat::Npy));
        assert_eq!(
            (0..3).map(|i| a.get(i).unwrap()).collect::<Vec<_>>(),
            [5, 0, 7]
        );
        assert!(a.get(3).unwrap_err().to_string().contains("a.npy"));
        let r = d.path().join("raw.npy");
        std::fs::write(&r, &vals).unwrap();
        let a = IndexArray::open(&r).unwrap();
        assert_eq!(
            (a.len(), a.format(), a.get(2).unwrap()),
            (3, IndexFormat::RawU32, 7)
        );
        let v8: Vec<u8> = [9u64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy("<u8", "False", "(2,)", &v8)).unwrap();
        assert_eq!(IndexArray::open(&p).unwrap().get(0).unwrap(), 9);
    }

    #[test]
    fn refuses_bad_headers_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bad.npy");
        let vals = [0u8; 12];
        for (descr, fo, shape, data, want) in [
            ("<f4", "False", "(3,)", &vals[..], "dtype `<f4`"),
            ("<u4", "True", "(3,)", &vals[..], "fortran_order"),
            ("<u4", "False", "(4,)", &vals[..], "file has"),
            ("<u4", "False", "(3, 1)", &vals[..], "one-dimensional"),
            (">u4", "False", "(3,)", &vals[..], "dtype `>u4`"),
        ] {
            std::fs::write(&p, npy(descr, fo, shape, data)).unwrap();
            let e = IndexArray::open(&p).err().expect("refused").to_string();
            assert!(e.contains("bad.npy") && e.contains(want), "{e}");
        }
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert!(IndexArray::open(&p).is_err());
        for h in ["{'descr': '<u4'", "{'descr': '<u4', 'descr': '<u4'}", "[1]"] {
            assert!(parse_dict(h).is_err(), "{h}");
        }
    }
}
