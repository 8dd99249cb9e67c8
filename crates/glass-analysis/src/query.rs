//! Counting and locating token sequences in a run's index: binary search over each
//! shard's suffix array, comparing every suffix only up to the end of its row, so a match
//! never spans two rows.

use std::ops::Range;
use std::path::Path;

use glass_data::dtype::TokenDtype;

use crate::error::{AnalysisError, Result};
use crate::index::{data_shards, DataShard, IndexManifest, ShardRecord};

/// A read-only memory map of a whole regular file beneath the run (empty files need
/// none), with its length checked against what the index records.
struct Bytes(Option<memmap2::Mmap>);

impl Bytes {
    fn open(root: &Path, path: &Path, want: u64) -> Result<Self> {
        let f = glass_io::open::open_beneath(root, path)?;
        let len = f.len();
        if len != want {
            return Err(AnalysisError::Stale(format!(
                "{}: {len} bytes, the index expects {want}; rebuild the index with `glass index RUN` (and check the data with `glass verify RUN`)",
                path.display()
            )));
        }
        Ok(Self(f.map()?))
    }
    fn get(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// One opened shard: its chunk's tokens and its suffix array.
pub struct Shard {
    /// The shard's record.
    pub rec: ShardRecord,
    tokens: Bytes,
    sa: Bytes,
}

impl Shard {
    /// Token at position `p` of the chunk (`row · row_len + offset`).
    #[inline]
    pub fn token(&self, p: u64) -> u32 {
        let b = self.tokens.get();
        let i = p as usize;
        match self.rec.dtype {
            TokenDtype::U16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
            TokenDtype::U32 => {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
        }
    }

    /// Suffix-array entry `i`: a position in the chunk.
    #[inline]
    pub fn suffix(&self, i: u64) -> u64 {
        let b = self.sa.get();
        let w = self.rec.width;
        let a = i as usize * w;
        let mut x = [0u8; 8];
        x[..w].copy_from_slice(&b[a..a + w]);
        u64::from_le_bytes(x)
    }

    /// Positions indexed.
    pub fn len(&self) -> u64 {
        self.rec.n_suffixes
    }

    /// True for a shard without tokens.
    pub fn is_empty(&self) -> bool {
        self.rec.n_suffixes == 0
    }

    /// The token `depth` positions after suffix `i`, or `-1` past the end of its row.
    #[inline]
    fn key(&self, i: u64, depth: usize) -> i64 {
        let p = self.suffix(i);
        let l = self.rec.row_len as u64;
        if p % l + depth as u64 >= l {
            -1
        } else {
            self.token(p + depth as u64) as i64
        }
    }

    /// Narrows `range` (suffixes that all start with the same `depth` tokens) to those
    /// whose next token is `t`.
    pub fn narrow(&self, range: Range<u64>, depth: usize, t: u32) -> Range<u64> {
        let t = t as i64;
        let lo = partition(range.clone(), |i| self.key(i, depth) < t);
        let hi = partition(lo..range.end, |i| self.key(i, depth) <= t);
        lo..hi
    }

    /// Suffix-array range of the suffixes that start with `q` (within one row).
    pub fn find(&self, q: &[u32]) -> Range<u64> {
        let mut r = 0..self.len();
        for (d, &t) in q.iter().enumerate() {
            if r.is_empty() {
                break;
            }
            r = self.narrow(r, d, t);
        }
        r
    }

    /// The global training step and batch slot of chunk position `p`.
    pub fn locate(&self, p: u64, rows_per_step: u64) -> Location {
        let l = self.rec.row_len as u64;
        let row_in_chunk = p / l;
        let row = self.rec.first_row + row_in_chunk;
        Location {
            row,
            row_in_chunk,
            offset: p % l,
            step: row / rows_per_step,
            slot: row % rows_per_step,
        }
    }
}

/// First index in `r` where `pred` is false (`pred` true on a prefix of `r`).
fn partition(r: Range<u64>, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (r.start, r.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where an occurrence is in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Location {
    /// Training step whose global batch holds the row (validation: 0).
    pub step: u64,
    /// Row within that step's global batch (world-size independent).
    pub slot: u64,
    /// Global row index.
    pub row: u64,
    /// Row index within the chunk file.
    pub row_in_chunk: u64,
    /// Token position in the row.
    pub offset: u64,
}

/// A run's index, checked against the run's data and opened for queries.
pub struct Index {
    /// Training shards in training order.
    pub shards: Vec<Shard>,
    /// The validation rows' shard.
    pub validation: Option<Shard>,
    /// Tokens per row.
    pub row_len: usize,
    /// Rows per global batch.
    pub rows_per_step: u64,
    /// The prepared data's manifest.
    pub data: glass_data::Manifest,
}

impl Index {
    /// Opens `RUN/index/`, refusing an index that is missing, incomplete, or built from
    /// chunk files other than the ones the run has now (compared by sha256).
    pub fn open(run_dir: &Path) -> Result<Self> {
        let m = IndexManifest::load(run_dir)?;
        let (data, chunks, validation) = data_shards(run_dir)?;
        let rebuild = format!("rebuild it with `glass index {}`", run_dir.display());
        if m.tokenizer_sha256 != data.tokenizer.sha256 {
            return Err(AnalysisError::Stale(format!(
                "the index of {} was built with another tokenizer (sha256 {}, the data has {}); {rebuild}",
                run_dir.display(),
                m.tokenizer_sha256,
                data.tokenizer.sha256
            )));
        }
        let open = |rec: &ShardRecord, ds: &DataShard| -> Result<Shard> {
            if rec.tokens.sha256 != ds.header.tokens.sha256 || rec.row_len != ds.header.row_len {
                return Err(AnalysisError::Stale(format!(
                    "index shard {} was built from {} with sha256 {}, the run's file now has {}: the index is stale; {rebuild}",
                    rec.name, rec.tokens.path, rec.tokens.sha256, ds.header.tokens.sha256
                )));
            }
            // Both files beneath the run that holds them: the token file where the data
            // says it is, the array by its path confined to this run.
            Ok(Shard {
                tokens: Bytes::open(
                    &ds.root,
                    &ds.dir.join(&ds.header.tokens.file),
                    rec.tokens.bytes,
                )?,
                sa: Bytes::open(
                    run_dir,
                    &run_dir.join(&rec.sa.path),
                    rec.n_suffixes * rec.width as u64,
                )?,
                rec: rec.clone(),
            })
        };
        let mut shards = Vec::new();
        for ds in &chunks {
            let rec = m.shards.iter().find(|r| r.name == ds.name).ok_or_else(|| {
                AnalysisError::Stale(format!(
                    "the index covers {} of the run's {} chunks ({} is missing); {rebuild}",
                    m.shards.len(),
                    chunks.len(),
                    ds.name
                ))
            })?;
            shards.push(open(rec, ds)?);
        }
        let validation = match (&validation, &m.validation) {
            (Some(ds), Some(rec)) => Some(open(rec, ds)?),
            (Some(_), None) => {
                return Err(AnalysisError::Stale(format!(
                    "the index has no validation shard but the run has validation rows; {rebuild}"
                )))
            }
            _ => None,
        };
        Ok(Index {
            shards,
            validation,
            row_len: data.row_len,
            rows_per_step: data.config.rows_per_step as u64,
            data,
        })
    }

    /// Checks that `q` can be looked up at all.
    pub fn check_query(&self, q: &[u32]) -> Result<()> {
        if q.is_empty() {
            return Err(AnalysisError::Input("the query has no tokens".into()));
        }
        if q.len() > self.row_len {
            return Err(AnalysisError::Input(format!(
                "the query has {} tokens, longer than a training row ({} tokens): matches never span rows, so it cannot occur",
                q.len(),
                self.row_len
            )));
        }
        Ok(())
    }

    /// Occurrences of `q` in the training rows (all chunks).
    pub fn count(&self, q: &[u32]) -> Result<u64> {
        self.check_query(q)?;
        Ok(self.shards.iter().map(|s| range_len(&s.find(q))).sum())
    }

    /// Occurrences of `q` in the validation rows.
    pub fn count_validation(&self, q: &[u32]) -> Result<u64> {
        self.check_query(q)?;
        Ok(self
            .validation
            .as_ref()
            .map_or(0, |s| range_len(&s.find(q))))
    }

    /// Occurrences of `q` in training rows at steps before `step` (what a checkpoint at
    /// `step` has seen). Whole chunks are counted from range sizes; only a chunk that
    /// straddles `step` is scanned.
    pub fn count_before(&self, q: &[u32], step: u64) -> Result<u64> {
        self.check_query(q)?;
        let mut n = 0;
        for s in &self.shards {
            let r = &s.rec;
            let steps = r.n_rows.div_ceil(self.rows_per_step);
            if r.first_step >= step {
                break;
            }
            let range = s.find(q);
            if r.first_step + steps <= step {
                n += range_len(&range);
            } else {
                n += range
                    .filter(|&i| s.locate(s.suffix(i), self.rows_per_step).step < step)
                    .count() as u64;
            }
        }
        Ok(n)
    }

    /// Every training occurrence of `q` as (shard index, chunk position), in training
    /// order (step, slot, offset).
    pub fn occurrences(&self, q: &[u32]) -> Result<Vec<(usize, u64)>> {
        self.check_query(q)?;
        let mut out = Vec::new();
        for (k, s) in self.shards.iter().enumerate() {
            let r = s.find(q);
            let mut pos: Vec<u64> = r.map(|i| s.suffix(i)).collect();
            pos.sort_unstable();
            out.extend(pos.into_iter().map(|p| (k, p)));
        }
        Ok(out)
    }

    /// For each start `i` of `q`, the length of the longest prefix of `q[i..]` that occurs
    /// in training (0 when even `q[i]` does not).
    pub fn longest_matches(&self, q: &[u32]) -> Vec<usize> {
        (0..q.len())
            .map(|i| {
                let mut ranges: Vec<Range<u64>> = self.shards.iter().map(|s| 0..s.len()).collect();
                let mut len = 0;
                for (d, &t) in q[i..].iter().enumerate().take(self.row_len) {
                    let mut any = false;
                    for (s, r) in self.shards.iter().zip(ranges.iter_mut()) {
                        if !r.is_empty() {
                            *r = s.narrow(r.clone(), d, t);
                            any |= !r.is_empty();
                        }
                    }
                    if !any {
                        break;
                    }
                    len = d + 1;
                }
                len
            })
            .collect()
    }
}

fn range_len(r: &Range<u64>) -> u64 {
    r.end.saturating_sub(r.start)
}
