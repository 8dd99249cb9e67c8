//! Megatron / GPT-NeoX indexed datasets (`.bin` + `.idx`, the `MMIDIDX` format): the
//! layout Pythia's training data ships in.
//!
//! The `.idx` is: magic `MMIDIDX\x00\x00`, `<u8` version (1), `u8` dtype code, `<u8`
//! sequence count `n`, `<u8` document count `d`, then `<i4` sizes[n], `<i8` pointers[n]
//! (byte offsets into the `.bin`), `<i8` doc_idx[d]. Dtype codes follow GPT-NeoX's
//! `indexed_dataset.py` table: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 float (f64), 7 double
//! (f64), 8 u16. The `.bin` may be given as byte-split pieces ([`crate::pieces`]).
//!
//! A step's rows follow Pythia's `utils/batch_viewer.py`: the batch of step `s` is idx
//! entries `[s·B, (s+1)·B)`, read as one contiguous run of tokens starting at the first
//! entry's pointer and cut into rows of `row_len` tokens (2049 for Pythia).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{DataError, Result};
use crate::pieces::Pieces;

/// The nine magic bytes of an `.idx` file.
pub const IDX_MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// Bytes before the sizes array.
pub const IDX_HEADER_BYTES: u64 = 34;

/// Element type of a Megatron dataset (GPT-NeoX's code table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MegatronDtype {
    /// Code 1.
    U8,
    /// Code 2.
    I8,
    /// Code 3.
    I16,
    /// Code 4.
    I32,
    /// Code 5.
    I64,
    /// Code 6 (`np.float`) and 7 (`np.double`): 64-bit floats, not token ids.
    F64,
    /// Code 8.
    U16,
}

impl MegatronDtype {
    /// The dtype of `code`, if the table has it.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::U8,
            2 => Self::I8,
            3 => Self::I16,
            4 => Self::I32,
            5 => Self::I64,
            6 | 7 => Self::F64,
            8 => Self::U16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn width(self) -> u64 {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }

    /// Decodes one element as a token id (`None`: negative or past u32).
    fn token(self, b: &[u8]) -> Option<u32> {
        match self {
            Self::U8 => Some(b[0] as u32),
            Self::I8 => u32::try_from(b[0] as i8).ok(),
            Self::I16 => u32::try_from(i16::from_le_bytes([b[0], b[1]])).ok(),
            Self::U16 => Some(u16::from_le_bytes([b[0], b[1]]) as u32),
            Self::I32 => u32::try_from(i32::from_le_bytes(b[..4].try_into().ok()?)).ok(),
            Self::I64 => u32::try_from(i64::from_le_bytes(b[..8].try_into().ok()?)).ok(),
            Self::F64 => None,
        }
    }
}

/// A memory-mapped, header-checked `.idx` file.
pub struct MegatronIndex {
    path: PathBuf,
    map: memmap2::Mmap,
    dtype: MegatronDtype,
    count: u64,
    doc_count: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl MegatronIndex {
    /// Maps `path` and checks the header: magic, version 1, a known integer dtype code,
    /// and a file length of exactly `34 + 12·n + 8·d` bytes.
    pub fn open(path: &Path) -> Result<Self> {
        let opened = glass_io::open::open_regular(path)?;
        let len = opened.len();
        let Some(map) = opened.map()? else {
            return Err(DataError::layout(
                path,
                Some(0),
                "empty file: not a Megatron .idx",
            ));
        };
        if len < IDX_HEADER_BYTES || &map[..9] != IDX_MAGIC {
            return Err(DataError::layout(
                path,
                Some(0),
                "not a Megatron .idx file (no MMIDIDX\\x00\\x00 magic)",
            ));
        }
        let version = u64_at(&map, 9);
        if version != 1 {
            return Err(DataError::layout(
                path,
                Some(9),
                format!("version {version}; only version 1 is known"),
            ));
        }
        let code = map[17];
        let dtype = MegatronDtype::from_code(code).ok_or_else(|| {
            DataError::layout(
                path,
                Some(17),
                format!("unknown dtype code {code} (known: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6/7 float, 8 u16)"),
            )
        })?;
        if dtype == MegatronDtype::F64 {
            return Err(DataError::layout(
                path,
                Some(17),
                format!("dtype code {code} is a float type: not token ids"),
            ));
        }
        let count = u64_at(&map, 18);
        let doc_count = u64_at(&map, 26);
        let want = count
            .checked_mul(12)
            .and_then(|a| doc_count.checked_mul(8).and_then(|b| a.checked_add(b)))
            .and_then(|x| x.checked_add(IDX_HEADER_BYTES));
        if want != Some(len) {
            return Err(DataError::layout(
                path,
                Some(18),
                format!(
                    "header counts {count} sequences and {doc_count} document boundaries, which need {} bytes, but the file has {len}",
                    want.map_or("more than 2^64".to_string(), |w| w.to_string())
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            dtype,
            count,
            doc_count,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Element type of the `.bin`.
    pub fn dtype(&self) -> MegatronDtype {
        self.dtype
    }

    /// Sequences (entries).
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entries of `doc_idx`.
    pub fn doc_count(&self) -> u64 {
        self.doc_count
    }

    fn size_offset(&self, i: u64) -> u64 {
        IDX_HEADER_BYTES + 4 * i
    }

    fn pointer_offset(&self, i: u64) -> u64 {
        IDX_HEADER_BYTES + 4 * self.count + 8 * i
    }

    fn doc_offset(&self, j: u64) -> u64 {
        IDX_HEADER_BYTES + 12 * self.count + 8 * j
    }

    /// Entry `i` as (byte pointer into the `.bin`, size in elements), checked: both
    /// non-negative and the bytes within `bin_len`.
    pub fn entry(&self, i: u64, bin_len: u64) -> Result<(u64, u64)> {
        if i >= self.count {
            return Err(DataError::Range(format!(
                "{}: sequence {i} past the {} sequences",
                self.path.display(),
                self.count
            )));
        }
        let so = self.size_offset(i);
        let po = self.pointer_offset(i);
        let size = i32::from_le_bytes(
            self.map[so as usize..so as usize + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let ptr = u64_at(&self.map, po as usize) as i64;
        if size < 0 {
            return Err(DataError::layout(
                &self.path,
                Some(so),
                format!("sequence {i} has negative size {size}"),
            ));
        }
        if ptr < 0 {
            return Err(DataError::layout(
                &self.path,
                Some(po),
                format!("sequence {i} has negative pointer {ptr}"),
            ));
        }
        let (ptr, size) = (ptr as u64, size as u64);
        if ptr
            .checked_add(size * self.dtype.width())
            .is_none_or(|e| e > bin_len)
        {
            return Err(DataError::layout(
                &self.path,
                Some(po),
                format!(
                    "sequence {i} (pointer {ptr}, {size} elements of {} bytes) runs past the {bin_len} bytes of the .bin",
                    self.dtype.width()
                ),
            ));
        }
        Ok((ptr, size))
    }

    /// `doc_idx[j]`.
    pub fn doc_idx(&self, j: u64) -> Result<u64> {
        if j >= self.doc_count {
            return Err(DataError::Range(format!(
                "{}: document boundary {j} past the {}",
                self.path.display(),
                self.doc_count
            )));
        }
        let at = self.doc_offset(j);
        let v = u64_at(&self.map, at as usize) as i64;
        u64::try_from(v).map_err(|_| {
            DataError::layout(
                &self.path,
                Some(at),
                format!("doc_idx[{j}] = {v} is negative"),
            )
        })
    }

    /// The cheap check made on every open: the last sequence ends exactly at the end of
    /// the `.bin` (the `.idx` counts agree with the `.bin` size).
    pub fn check_bin_len(&self, bin_len: u64, bin_name: &str) -> Result<()> {
        let end = if self.count == 0 {
            0
        } else {
            let (p, s) = self.entry(self.count - 1, bin_len).map_err(|e| match e {
                DataError::Layout {
                    path,
                    offset,
                    message,
                } => DataError::Layout {
                    path,
                    offset,
                    message: format!("{message} ({bin_name})"),
                },
                other => other,
            })?;
            p + s * self.dtype.width()
        };
        if end != bin_len {
            return Err(DataError::layout(
                &self.path,
                Some(18),
                format!(
                    "the {} sequences end at byte {end}, but the .bin ({bin_name}) has {bin_len} bytes: the .idx does not describe this .bin",
                    self.count
                ),
            ));
        }
        Ok(())
    }

    /// Every record checked (O(n), for imports): each entry within the `.bin`, pointers
    /// the running sum of the sizes (as Megatron's builder writes them), `doc_idx`
    /// non-decreasing and at most `n`. `progress` gets the records checked so far.
    pub fn validate_all(&self, bin_len: u64, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let mut next = 0u64;
        for i in 0..self.count {
            let (p, s) = self.entry(i, bin_len)?;
            if p != next {
                return Err(DataError::layout(
                    &self.path,
                    Some(self.pointer_offset(i)),
                    format!("sequence {i} starts at byte {p}, but the previous one ends at {next}"),
                ));
            }
            next = p + s * self.dtype.width();
            if i.is_multiple_of(1 << 20) {
                progress(i);
            }
        }
        let mut prev = 0u64;
        for j in 0..self.doc_count {
            let v = self.doc_idx(j)?;
            if v < prev || v > self.count {
                return Err(DataError::layout(
                    &self.path,
                    Some(self.doc_offset(j)),
                    format!(
                        "doc_idx[{j}] = {v} after {prev}: document boundaries must be non-decreasing and at most {}",
                        self.count
                    ),
                ));
            }
            prev = v;
        }
        progress(self.count);
        Ok(())
    }
}

/// Where one row of a step came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowOrigin {
    /// The idx entry (sequence) the row is, in Pythia's layout.
    pub sequence: u64,
    /// Byte offset of the row's first token in the concatenated `.bin`.
    pub byte: u64,
    /// The piece holding that byte.
    pub piece: usize,
    /// Offset within that piece.
    pub piece_offset: u64,
}

/// A Megatron dataset: one `.idx` over one `.bin` given whole or in pieces.
pub struct MegatronDataset {
    index: MegatronIndex,
    bin: Pieces,
}

impl MegatronDataset {
    /// Opens the index and the pieces and makes the O(1) checks (header, file lengths).
    pub fn open(idx: &Path, bins: &[PathBuf]) -> Result<Self> {
        let index = MegatronIndex::open(idx)?;
        let bin = Pieces::open(bins)?;
        let name = match bins {
            [one] => one.display().to_string(),
            more => format!(
                "{} pieces {} … {}",
                more.len(),
                more[0].display(),
                more[more.len() - 1].display()
            ),
        };
        index.check_bin_len(bin.len(), &name)?;
        Ok(Self { index, bin })
    }

    /// The index.
    pub fn index(&self) -> &MegatronIndex {
        &self.index
    }

    /// The `.bin` pieces.
    pub fn bin(&self) -> &Pieces {
        &self.bin
    }

    /// Checks every record (see [`MegatronIndex::validate_all`]).
    pub fn validate_all(&self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.index.validate_all(self.bin.len(), progress)
    }

    /// Steps of `rows_per_step` sequences the index holds.
    pub fn n_steps(&self, rows_per_step: u64) -> u64 {
        self.index.len() / rows_per_step.max(1)
    }

    /// The token ids of step `step` (`rows_per_step · row_len` of them, row after row)
    /// and each row's origin, as Pythia's `batch_viewer.py` reads them.
    pub fn step_rows(
        &self,
        step: u64,
        rows_per_step: u64,
        row_len: u64,
    ) -> Result<(Vec<u32>, Vec<RowOrigin>)> {
        let n = self.n_steps(rows_per_step);
        if step >= n || rows_per_step == 0 || row_len == 0 {
            return Err(DataError::Range(format!(
                "step {step} is past the last step: {} holds {} sequences, {n} steps of {rows_per_step}",
                self.index.path.display(),
                self.index.len()
            )));
        }
        let first = step * rows_per_step;
        let bin_len = self.bin.len();
        let (ptr, _) = self.index.entry(first, bin_len)?;
        let mut total = 0u64;
        for i in first..first + rows_per_step {
            total += self.index.entry(i, bin_len)?.1;
        }
        if Some(total) != rows_per_step.checked_mul(row_len) {
            return Err(DataError::layout(
                &self.index.path,
                Some(self.index.size_offset(first)),
                format!(
                    "step {step}: sequences [{first}, {}) hold {total} tokens, not {rows_per_step} rows of {row_len}: set --seq-len (row length − 1) and --rows-per-step to the run's",
                    first + rows_per_step
                ),
            ));
        }
        let w = self.index.dtype.width();
        let mut bytes = Vec::with_capacity((total * w) as usize);
        self.bin
            .read(ptr, total * w, &mut bytes, &self.index.path)?;
        let mut ids = Vec::with_capacity(total as usize);
        for (k, b) in bytes.chunks_exact(w as usize).enumerate() {
            let id = self.index.dtype.token(b).ok_or_else(|| {
                let at = ptr + k as u64 * w;
                let loc = self.bin.locate(at).expect("read above");
                DataError::layout(
                    &self.bin.paths()[loc.piece],
                    Some(loc.offset),
                    "a negative token id, or one past u32",
                )
            })?;
            ids.push(id);
        }
        let origins = (0..rows_per_step)
            .map(|r| {
                let byte = ptr + r * row_len * w;
                let loc = self.bin.locate(byte).expect("within the read range");
                RowOrigin {
                    sequence: first + r,
                    byte,
                    piece: loc.piece,
                    piece_offset: loc.offset,
                }
            })
            .collect();
        Ok((ids, origins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(code: u8, sizes: &[i32], pointers: &[i64], docs: &[i64]) -> Vec<u8> {
        let mut b = IDX_MAGIC.to_vec();
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(code);
        b.extend_from_slice(&(sizes.len() as u64).to_le_bytes());
        b.extend_from_slice(&(docs.len() as u64).to_le_bytes());
        sizes
            .iter()
            .for_each(|s| b.extend_from_slice(&s.to_le_bytes()));
        pointers
            .iter()
            .for_each(|p| b.extend_from_slice(&p.to_le_bytes()));
        docs.iter()
            .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
        b
    }

    #[test]
    fn steps_read_contiguously_across_byte_split_pieces() {
        let d = tempfile::tempdir().unwrap();
        // 6 sequences of 3 u16 tokens: token value = 10·sequence + position.
        let toks: Vec<u16> = (0..6)
            .flat_map(|s| (0..3).map(move |p| 10 * s + p))
            .collect();
        let bin: Vec<u8> = toks.iter().flat_map(|t| t.to_le_bytes()).collect();
        let (a, b) = bin.split_at(7); // mid-token
        std::fs::write(d.path().join("p0.bin"), a).unwrap();
        std::fs::write(d.path().join("p1.bin"), b).unwrap();
        let ptrs: Vec<i64> = (0..6).map(|i| i * 6).collect();
        let idx = d.path().join("d.idx");
        std::fs::write(&idx, idx_bytes(8, &[3; 6], &ptrs, &[0, 2, 6])).unwrap();
        let bins = [d.path().join("p0.bin"), d.path().join("p1.bin")];
        let ds = MegatronDataset::open(&idx, &bins).unwrap();
        ds.validate_all(&mut |_| {}).unwrap();
        assert_eq!(ds.n_steps(2), 3);
        let (ids, origins) = ds.step_rows(1, 2, 3).unwrap();
        assert_eq!(ids, [20, 21, 22, 30, 31, 32]);
        assert_eq!(origins[0].piece, 1);
        assert_eq!(origins[0].piece_offset, 12 - 7);
        let (ids, _) = ds.step_rows(0, 2, 3).unwrap();
        assert_eq!(ids, [0, 1, 2, 10, 11, 12]);
        assert!(ds.step_rows(3, 2, 3).is_err());
        assert!(ds
            .step_rows(0, 2, 4)
            .unwrap_err()
            .to_string()
            .contains("d.idx"));
        // A negative i16 token is refused naming the piece.
        std::fs::write(&idx, idx_bytes(3, &[3; 6], &ptrs, &[0, 6])).unwrap();
        let mut neg = a.to_vec();
        neg[0] = 0xff;
        neg[1] = 0xff;
        std::fs::write(&bins[0], &neg).unwrap();
        let ds = MegatronDataset::open(&idx, &bins).unwrap();
        assert!(ds
            .step_rows(0, 2, 3)
            .unwrap_err()
            .to_string()
            .contains("p0.bin"));
        // Pointers that are not the running sum of the sizes.
        std::fs::write(&idx, idx_bytes(8, &[3; 6], &[0, 6, 6, 18, 24, 30], &[0, 6])).unwrap();
        let ds = MegatronDataset::open(&idx, &bins).unwrap();
        assert!(ds
            .validate_all(&mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("starts at byte 6"));
        // Float dtypes and unknown codes.
        for code in [6u8, 7, 0, 9] {
            std::fs::write(&idx, idx_bytes(code, &[3; 6], &ptrs, &[0, 6])).unwrap();
            let e = MegatronDataset::open(&idx, &bins)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("d.idx") && e.contains("byte 17"), "{e}");
        }
    }
}
