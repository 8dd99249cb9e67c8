//! The one safetensors writer, for training checkpoints and Hugging Face exports alike:
//! streamed through [`crate::AtomicFile`], so a file is hashed as it is written and never
//! read back.

use std::collections::HashMap;
use std::path::Path;

pub use ::safetensors::Dtype;
use serde::Serialize;

use crate::error::Result;

/// One tensor of a safetensors file being written: its raw little-endian bytes.
pub struct TensorBytes<'a> {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The values' bytes.
    pub data: &'a [u8],
}

/// Writes `tensors` as a safetensors file at `path`, byte for byte what
/// `safetensors::serialize_to_file` writes for them, atomically and fsynced, and returns
/// its (sha256, bytes): the file is hashed as it is written (through
/// [`crate::AtomicFile`]), never read back.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
) -> Result<(String, u64)> {
    let mut out = crate::AtomicFile::create(path)?;
    emit(tensors, meta, &mut |b| out.write(b))?;
    out.commit()
}

/// The (sha256, bytes) of the file [`write_safetensors`] would write, computed without
/// writing anything (a replay compares hashes; it has nothing to keep).
pub fn hash_safetensors(
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
) -> (String, u64) {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    emit(tensors, meta, &mut |b| {
        h.update(b);
        n += b.len() as u64;
        Ok(())
    })
    .expect("hashing does not fail");
    (hex::encode(h.finalize()), n)
}

/// Hands the bytes of the safetensors file of `tensors` to `sink`, in order.
fn emit(
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let headers = headers_of(tensors);
    let (header, _) = header_bytes(&headers, meta);
    sink(&header)?;
    for i in file_order(&headers) {
        sink(tensors[i].data)?;
    }
    Ok(())
}

fn headers_of(tensors: &[TensorBytes<'_>]) -> Vec<TensorHeader> {
    tensors
        .iter()
        .map(|t| TensorHeader {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.data.len(),
        })
        .collect()
}

/// A tensor of a safetensors file whose bytes come later ([`SafetensorsWriter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Length of its data in bytes.
    pub bytes: usize,
}

/// The order in which a safetensors file holds `tensors` (indices into it): by descending
/// dtype, then name, as the `safetensors` crate lays them out.
pub fn file_order(tensors: &[TensorHeader]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        (tensors[b].dtype.cmp(&tensors[a].dtype)).then(tensors[a].name.cmp(&tensors[b].name))
    });
    order
}

/// The file's first bytes (the header's length, then the header) and the data bytes it
/// announces.
///
/// The header is written out here because the crate writes only to a file it opens
/// itself and keeps its header builder private: sorted by descending dtype, then name;
/// `__metadata__` first; the entries are the crate's own `TensorInfo` serialised; padded
/// with spaces to a multiple of 8 bytes. A test checks every byte against the crate.
fn header_bytes(tensors: &[TensorHeader], meta: &HashMap<String, String>) -> (Vec<u8>, u64) {
    let mut header = format!("{{\"__metadata__\":{}", to_json(meta));
    let mut offset = 0;
    for i in file_order(tensors) {
        let t = &tensors[i];
        let info = ::safetensors::tensor::TensorInfo {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data_offsets: (offset, offset + t.bytes),
        };
        offset += t.bytes;
        header.push_str(&format!(",{}:{}", to_json(&t.name), to_json(&info)));
    }
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    (out, offset as u64)
}

/// A safetensors file written as a stream: the header first, from the tensors' names,
/// dtypes, shapes and lengths, then their bytes in [`file_order`], in as many pieces as
/// the caller likes. So a file far larger than memory (a sharded optimizer's moments
/// arriving piece by piece) has exactly the bytes [`write_safetensors`] gives the whole.
pub struct SafetensorsWriter {
    path: std::path::PathBuf,
    out: crate::AtomicFile,
    /// Data bytes the header announced, and those written so far.
    expected: u64,
    written: u64,
}

impl SafetensorsWriter {
    /// Starts `path` (atomically: nothing appears there before [`Self::commit`]) with the
    /// header of `tensors` and `meta`.
    pub fn create(
        path: &Path,
        tensors: &[TensorHeader],
        meta: &HashMap<String, String>,
    ) -> Result<Self> {
        let (header, expected) = header_bytes(tensors, meta);
        let mut out = crate::AtomicFile::create(path)?;
        out.write(&header)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            expected,
            written: 0,
        })
    }

    /// Appends the next tensor bytes (in [`file_order`]).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.expected {
            return Err(self.short_or_long());
        }
        self.out.write(bytes)
    }

    /// Publishes the file once every announced byte was written; returns its (sha256,
    /// bytes).
    pub fn commit(self) -> Result<(String, u64)> {
        if self.written != self.expected {
            return Err(self.short_or_long());
        }
        self.out.commit()
    }

    fn short_or_long(&self) -> crate::IoError {
        crate::IoError {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} tensor bytes written where the header announces {}",
                    self.written, self.expected
                ),
            ),
        }
    }
}

/// Compact JSON of plain data (strings, the metadata map, the crate's `TensorInfo`).
fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct Raw<'a>(&'a TensorBytes<'a>);

    impl ::safetensors::View for Raw<'_> {
        fn dtype(&self) -> Dtype {
            self.0.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.0.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.0.data)
        }
        fn data_len(&self) -> usize {
            self.0.data.len()
        }
    }

    /// A checkpoint's optimizer file (two prefixes, names out of order, metadata holding
    /// quotes, mixed dtypes) is byte for byte what `safetensors::serialize_to_file`
    /// writes, and the returned hash and length are the file's.
    #[test]
    fn streamed_files_equal_the_crates_own() {
        let values: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin()).collect();
        let halves: Vec<u8> = (0..600u16).flat_map(|x| x.to_le_bytes()).collect();
        let f32s: &[u8] = bytemuck::cast_slice(&values);
        let tensors = vec![
            TensorBytes {
                name: "exp_avg_sq.layers.0.w".into(),
                dtype: Dtype::F32,
                shape: vec![20, 50],
                data: &f32s[..4000],
            },
            TensorBytes {
                name: "exp_avg.b".into(),
                dtype: Dtype::F32,
                shape: vec![2000],
                data: &f32s[4000..],
            },
            TensorBytes {
                name: "a.half".into(),
                dtype: Dtype::BF16,
                shape: vec![600],
                data: &halves,
            },
        ];
        let meta = HashMap::from([(
            "glass".to_string(),
            "{\"kind\":\"optimizer\",\"adamw_step\":7}".to_string(),
        )]);
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.safetensors");
        let (sha, len) = write_safetensors(&ours, &tensors, &meta).unwrap();
        let theirs = dir.path().join("theirs.safetensors");
        let views: Vec<(String, Raw)> = tensors.iter().map(|t| (t.name.clone(), Raw(t))).collect();
        ::safetensors::serialize_to_file(views, &Some(meta.clone()), &theirs).unwrap();
        let bytes = std::fs::read(&ours).unwrap();
        assert!(bytes == std::fs::read(&theirs).unwrap());
        assert_eq!(hash_safetensors(&tensors, &meta), (sha.clone(), len));
        assert_eq!(
            (sha.clone(), len),
            (crate::sha256_hex(&bytes), bytes.len() as u64)
        );

        // The same file streamed in 7-byte pieces that straddle tensor boundaries.
        let headers: Vec<TensorHeader> = tensors
            .iter()
            .map(|t| TensorHeader {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes: t.data.len(),
            })
            .collect();
        let data: Vec<u8> = file_order(&headers)
            .into_iter()
            .flat_map(|i| tensors[i].data.iter().copied())
            .collect();
        let streamed = dir.path().join("streamed.safetensors");
        let mut w = SafetensorsWriter::create(&streamed, &headers, &meta).unwrap();
        for piece in data.chunks(7) {
            w.write(piece).unwrap();
        }
        assert_eq!(w.commit().unwrap(), (sha, len));
        assert!(std::fs::read(&streamed).unwrap() == bytes);

        // One byte short, or one too many: an error, and no file.
        let short = dir.path().join("short.safetensors");
        let mut w = SafetensorsWriter::create(&short, &headers, &meta).unwrap();
        w.write(&data[1..]).unwrap();
        assert!(w.commit().unwrap_err().to_string().contains("announces"));
        let mut w = SafetensorsWriter::create(&short, &headers, &meta).unwrap();
        w.write(&data).unwrap();
        assert!(w.write(&[0]).is_err());
        drop(w);
        assert!(!short.exists());
    }
}
