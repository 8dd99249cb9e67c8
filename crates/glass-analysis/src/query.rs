//! Counting and locating token sequences in a run's index: binary search over each
//! shard's suffix array, comparing every suffix only up to the end of its row, so a match
//! never spans two rows.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use glass_data::dtype::TokenDtype;

use crate::error::{AnalysisError, Result};
use crate::index::{
    data_shards, token_ref, DataShard, IndexManifest, ShardRecord, INDEX_FORMAT, INDEX_MANIFEST,
};

/// A read-only memory map of a whole regular file beneath the run (empty files need
/// none), with its length checked against what the index records.
struct Bytes {
    map: Option<memmap2::Mmap>,
    /// The file, as opened (its identity keys the hash cache).
    identity: glass_io::open::FileIdentity,
    path: PathBuf,
}

impl Bytes {
    fn open(root: &Path, path: &Path, want: u64) -> Result<Self> {
        let f = glass_io::open::open_beneath(root, path)?;
        if f.len() != want {
            return Err(AnalysisError::Stale(format!(
                "{}: {} bytes, the index expects {want}; rebuild the index with `glass index RUN` (and check the data with `glass verify RUN`)",
                path.display(),
                f.len()
            )));
        }
        Ok(Self {
            map: f.map()?,
            identity: f.identity(),
            path: path.to_path_buf(),
        })
    }
    fn get(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Checks the bytes against `sha256` (once per process for an unchanged file: see
    /// [`HASHED`]).
    fn check_hash(&self, sha256: &str, what: &str) -> Result<()> {
        let key = (self.identity, sha256.to_string());
        if hashed()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let got = glass_io::sha256_hex(self.get());
        if got != sha256 {
            return Err(AnalysisError::Stale(format!(
                "{}: sha256 {got}, but {what} records {sha256}: the file was changed or replaced after the index was built; rebuild the index with `glass index RUN` (and check the run with `glass verify RUN`)",
                self.path.display()
            )));
        }
        hashed()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(())
    }
}

/// Files this process has hashed and found as recorded, keyed by their identity (device,
/// inode, size, modification and change times: a file written since has another) and the
/// hash: a long-lived process (`glass serve`) hashes an index once, not per query. Kept
/// in memory only, so nothing a forger could write says "already checked".
fn hashed() -> &'static Mutex<HashSet<(glass_io::open::FileIdentity, String)>> {
    static HASHED: OnceLock<Mutex<HashSet<(glass_io::open::FileIdentity, String)>>> =
        OnceLock::new();
    HASHED.get_or_init(Default::default)
}

/// One opened shard: its chunk's tokens and its suffix array.
pub struct Shard {
    /// The shard's record.
    pub rec: ShardRecord,
    tokens: Bytes,
    sa: Bytes,
}

impl Shard {
    /// An entry or position outside the shard: the array is not the one `glass index`
    /// wrote (its hash was rewritten too, or hashes were not checked).
    fn out_of_range(&self, what: String) -> AnalysisError {
        AnalysisError::Format {
            path: self.sa.path.clone(),
            msg: format!(
                "index shard {}: {what}, outside its {} positions: the suffix array is corrupt or forged; rebuild it with `glass index RUN`",
                self.rec.name, self.rec.n_suffixes
            ),
        }
    }

    /// Token at position `p` of the chunk (`row · row_len + offset`).
    #[inline]
    pub fn token(&self, p: u64) -> Result<u32> {
        if p >= self.rec.n_suffixes {
            return Err(self.out_of_range(format!("position {p}")));
        }
        let b = self.tokens.get();
        let i = p as usize;
        // In bounds: the token file was checked to hold n_suffixes tokens of this dtype.
        Ok(match self.rec.dtype {
            TokenDtype::U16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
            TokenDtype::U32 => {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
        })
    }

    /// Suffix-array entry `i`: a position in the chunk (checked to be one).
    #[inline]
    pub fn suffix(&self, i: u64) -> Result<u64> {
        if i >= self.rec.n_suffixes {
            return Err(self.out_of_range(format!("entry {i} requested")));
        }
        let b = self.sa.get();
        let w = self.rec.width;
        let a = i as usize * w;
        let mut x = [0u8; 8];
        // In bounds: the array file was checked to hold n_suffixes entries of `width`.
        x[..w].copy_from_slice(&b[a..a + w]);
        let p = u64::from_le_bytes(x);
        if p >= self.rec.n_suffixes {
            return Err(self.out_of_range(format!("entry {i} is position {p}")));
        }
        Ok(p)
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
    fn key(&self, i: u64, depth: usize) -> Result<i64> {
        let p = self.suffix(i)?;
        let l = self.rec.row_len as u64;
        if p % l + depth as u64 >= l {
            Ok(-1)
        } else {
            Ok(self.token(p + depth as u64)? as i64)
        }
    }

    /// Narrows `range` (suffixes that all start with the same `depth` tokens) to those
    /// whose next token is `t`.
    pub fn narrow(&self, range: Range<u64>, depth: usize, t: u32) -> Result<Range<u64>> {
        let t = t as i64;
        let lo = partition(range.clone(), |i| Ok(self.key(i, depth)? < t))?;
        let hi = partition(lo..range.end, |i| Ok(self.key(i, depth)? <= t))?;
        Ok(lo..hi)
    }

    /// Suffix-array range of the suffixes that start with `q` (within one row).
    pub fn find(&self, q: &[u32]) -> Result<Range<u64>> {
        let mut r = 0..self.len();
        for (d, &t) in q.iter().enumerate() {
            if r.is_empty() {
                break;
            }
            r = self.narrow(r, d, t)?;
        }
        Ok(r)
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
fn partition(r: Range<u64>, pred: impl Fn(u64) -> Result<bool>) -> Result<u64> {
    let (mut lo, mut hi) = (r.start, r.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
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
    /// What the index knows of the run's data: the prepared data's manifest, or that it
    /// is a suite's data read in place.
    pub data: crate::index::DataInfo,
}

/// How much [`Index::open_with`] checks besides the structure and every read's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexCheck {
    /// Hash every suffix array and chunk token file against the index's records (once
    /// per process for an unchanged file): a damaged or swapped file is refused. The
    /// default, [`Index::open`].
    Hashes,
    /// Structure and bounds only: never a panic or a read outside a shard, but an array
    /// whose bytes were changed in place answers wrongly. For benchmarks, and for callers
    /// that have just hash-checked the files themselves.
    BoundsOnly,
}

impl Index {
    /// Opens `RUN/index/` with [`IndexCheck::Hashes`], refusing an index that is missing,
    /// incomplete, built from chunk files other than the ones the run has now, whose
    /// records disagree with the chunk headers, or whose files do not hash as recorded.
    pub fn open(run_dir: &Path) -> Result<Self> {
        Self::open_with(run_dir, IndexCheck::Hashes)
    }

    /// [`Index::open`] with the hash check chosen by `check`.
    pub fn open_with(run_dir: &Path, check: IndexCheck) -> Result<Self> {
        let m = IndexManifest::load(run_dir)?;
        let (data, chunks, validation) = data_shards(run_dir)?;
        let rebuild = format!("rebuild it with `glass index {}`", run_dir.display());
        if m.tokenizer_sha256 != data.tokenizer_sha256 {
            return Err(AnalysisError::Stale(format!(
                "the index of {} was built with another tokenizer (sha256 {}, the data has {}); {rebuild}",
                run_dir.display(),
                m.tokenizer_sha256,
                data.tokenizer_sha256
            )));
        }
        let open = |rec: &ShardRecord, ds: &DataShard| -> Result<Shard> {
            if rec.tokens.sha256 != ds.header.tokens.sha256 || rec.row_len != ds.header.row_len {
                return Err(AnalysisError::Stale(format!(
                    "index shard {} was built from {} with sha256 {}, the run's file now has {}: the index is stale; {rebuild}",
                    rec.name, rec.tokens.path, rec.tokens.sha256, ds.header.tokens.sha256
                )));
            }
            check_record(run_dir, &m, rec, ds)?;
            // Both files are opened where the run's data and index say they are, never
            // by a path the index manifest names.
            let tokens = Bytes::open(
                &ds.root,
                &ds.dir.join(&ds.header.tokens.file),
                ds.header.tokens.bytes,
            )?;
            let sa = Bytes::open(
                run_dir,
                &run_dir.join(shard_sa_path(&ds.name)),
                rec.sa.bytes,
            )?;
            Ok(Shard {
                tokens,
                sa,
                rec: rec.clone(),
            })
        };
        let mut pairs = Vec::new();
        for ds in &chunks {
            let rec = m.shards.iter().find(|r| r.name == ds.name).ok_or_else(|| {
                AnalysisError::Stale(format!(
                    "the index covers {} of the run's {} chunks ({} is missing); {rebuild}",
                    m.shards.len(),
                    chunks.len(),
                    ds.name
                ))
            })?;
            pairs.push((rec, ds));
        }
        if m.shards.len() != chunks.len() {
            return Err(AnalysisError::Stale(format!(
                "the index lists {} training shards, the run has {} chunks; {rebuild}",
                m.shards.len(),
                chunks.len()
            )));
        }
        let validation_pair = match (&validation, &m.validation) {
            (Some(ds), Some(rec)) => Some((rec, ds)),
            (Some(_), None) => {
                return Err(AnalysisError::Stale(format!(
                    "the index has no validation shard but the run has validation rows; {rebuild}"
                )))
            }
            _ => None,
        };
        let shards = pairs
            .iter()
            .map(|(rec, ds)| open(rec, ds))
            .collect::<Result<Vec<_>>>()?;
        let validation = validation_pair.map(|(rec, ds)| open(rec, ds)).transpose()?;
        if check == IndexCheck::Hashes {
            // Every file of every shard, side by side (each hash is one sequential pass).
            use rayon::prelude::*;
            let files: Vec<(&Bytes, &str, &str)> = shards
                .iter()
                .chain(validation.iter())
                .flat_map(|s| {
                    [
                        (&s.sa, s.rec.sa.sha256.as_str(), INDEX_MANIFEST),
                        (
                            &s.tokens,
                            s.rec.tokens.sha256.as_str(),
                            "the chunk header (and the index)",
                        ),
                    ]
                })
                .collect();
            files
                .par_iter()
                .try_for_each(|(b, sha, what)| b.check_hash(sha, what))?;
        }
        Ok(Index {
            shards,
            validation,
            row_len: data.row_len,
            rows_per_step: data.rows_per_step,
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
        let mut n = 0;
        for s in &self.shards {
            n += range_len(&s.find(q)?);
        }
        Ok(n)
    }

    /// Occurrences of `q` in the validation rows.
    pub fn count_validation(&self, q: &[u32]) -> Result<u64> {
        self.check_query(q)?;
        Ok(match &self.validation {
            Some(s) => range_len(&s.find(q)?),
            None => 0,
        })
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
            let range = s.find(q)?;
            if r.first_step + steps <= step {
                n += range_len(&range);
            } else {
                for i in range {
                    n += (s.locate(s.suffix(i)?, self.rows_per_step).step < step) as u64;
                }
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
            let r = s.find(q)?;
            let mut pos = r.map(|i| s.suffix(i)).collect::<Result<Vec<u64>>>()?;
            pos.sort_unstable();
            out.extend(pos.into_iter().map(|p| (k, p)));
        }
        Ok(out)
    }

    /// For each start `i` of `q`, the length of the longest prefix of `q[i..]` that occurs
    /// in training (0 when even `q[i]` does not).
    pub fn longest_matches(&self, q: &[u32]) -> Result<Vec<usize>> {
        (0..q.len())
            .map(|i| {
                let mut ranges: Vec<Range<u64>> = self.shards.iter().map(|s| 0..s.len()).collect();
                let mut len = 0;
                for (d, &t) in q[i..].iter().enumerate().take(self.row_len) {
                    let mut any = false;
                    for (s, r) in self.shards.iter().zip(ranges.iter_mut()) {
                        if !r.is_empty() {
                            *r = s.narrow(r.clone(), d, t)?;
                            any |= !r.is_empty();
                        }
                    }
                    if !any {
                        break;
                    }
                    len = d + 1;
                }
                Ok(len)
            })
            .collect()
    }
}

/// Where shard `name`'s suffix array is, relative to the run: the only place an index's
/// array is read from or written to.
pub(crate) fn shard_sa_path(name: &str) -> String {
    format!("{}/{name}.sa", crate::index::INDEX_DIR)
}

/// Checks a shard record of `index/manifest.json` against the chunk it indexes (the
/// chunk header, which the data manifest pins) and against the manifest's own file list,
/// so that no field of the record is used unchecked: the width and dtype decide every
/// read's offsets, the counts every bound.
pub(crate) fn check_record(
    run_dir: &Path,
    m: &IndexManifest,
    rec: &ShardRecord,
    ds: &DataShard,
) -> Result<()> {
    let h = &ds.header;
    let bad = |what: String| {
        AnalysisError::Format {
        path: run_dir.join(INDEX_MANIFEST),
        msg: format!(
            "index shard {}: {what}; the index is damaged or forged: rebuild it with `glass index {}`",
            rec.name,
            run_dir.display()
        ),
    }
    };
    let n = h.n_rows.checked_mul(h.row_len as u64);
    let mut diffs = Vec::new();
    let mut differs = |field: &str, got: String, want: String| {
        if got != want {
            diffs.push(format!("{field} is {got}, the chunk header says {want}"));
        }
    };
    differs("format", rec.format.clone(), INDEX_FORMAT.into());
    differs(
        "chunk",
        format!("{:?}", rec.chunk),
        format!("{:?}", h.chunk),
    );
    differs(
        "first_step",
        rec.first_step.to_string(),
        h.first_step.to_string(),
    );
    differs(
        "first_row",
        rec.first_row.to_string(),
        h.first_row.to_string(),
    );
    differs("n_rows", rec.n_rows.to_string(), h.n_rows.to_string());
    differs("row_len", rec.row_len.to_string(), h.row_len.to_string());
    differs(
        "dtype",
        format!("{:?}", rec.dtype).to_lowercase(),
        format!("{:?}", h.dtype).to_lowercase(),
    );
    differs(
        "n_suffixes",
        rec.n_suffixes.to_string(),
        n.map_or("more than 2^64".into(), |n| n.to_string()),
    );
    differs("tokens.path", rec.tokens.path.clone(), token_ref(ds).path);
    differs(
        "tokens.bytes",
        rec.tokens.bytes.to_string(),
        h.tokens.bytes.to_string(),
    );
    if let Some(d) = diffs.into_iter().next() {
        return Err(bad(d));
    }
    if n.and_then(|n| n.checked_mul(h.dtype.width() as u64)) != Some(h.tokens.bytes) {
        return Err(AnalysisError::Format {
            path: ds.dir.join(format!("{}.json", ds.name)),
            msg: format!(
                "{} rows of {} tokens do not make {} bytes of {:?} tokens; run `glass data verify`",
                h.n_rows, h.row_len, h.tokens.bytes, h.dtype
            ),
        });
    }
    if rec.width != 4 && rec.width != 5 {
        return Err(bad(format!("width is {}, not 4 or 5", rec.width)));
    }
    if rec.width == 4 && rec.n_suffixes > 1 << 32 {
        return Err(bad(format!(
            "{} positions do not fit 4-byte entries",
            rec.n_suffixes
        )));
    }
    let want_sa = shard_sa_path(&rec.name);
    if rec.sa.path != want_sa {
        return Err(bad(format!(
            "its array is named `{}`; a shard's array is `{want_sa}`",
            rec.sa.path
        )));
    }
    if Some(rec.sa.bytes) != rec.n_suffixes.checked_mul(rec.width as u64) {
        return Err(bad(format!(
            "its array has {} bytes recorded, not {} positions of width {}",
            rec.sa.bytes, rec.n_suffixes, rec.width
        )));
    }
    if !m.files.iter().any(|f| f == &rec.sa) {
        return Err(bad(format!(
            "its array `{}` is not in the manifest's file list with the same sha256 and size",
            rec.sa.path
        )));
    }
    Ok(())
}

fn range_len(r: &Range<u64>) -> u64 {
    r.end.saturating_sub(r.start)
}
