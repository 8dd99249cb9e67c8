//! `glass bench index`: trace-index build speed and peak memory (each shard of an indexed
//! run rebuilt, and one shard of a synthetic stream), and count latency on the run's
//! index: the functions `glass index` and `glass trace` use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_analysis::Index;
use glass_data::dtype::TokenDtype;
use serde::Serialize;

use crate::error::io;
use crate::Result;

/// What to time.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// An indexed run: times rebuilding each of its shards and counting random queries.
    pub run: Option<PathBuf>,
    /// Tokens of a synthetic stream to build one shard of (0 skips it).
    pub synthetic_tokens: u64,
    /// Vocabulary of the synthetic stream (ids are log-uniform, like a Zipf tail).
    pub vocab: u32,
    /// Row length of the synthetic stream.
    pub row_len: usize,
    /// Count queries timed on the run (8–32 tokens; half taken from the data, half random).
    pub queries: usize,
}

/// Everything `glass bench index` measured.
#[derive(Debug, Clone, Serialize)]
pub struct IndexBench {
    /// Rayon threads of the process.
    pub threads: usize,
    /// The run's shards together, then the synthetic shard.
    pub build: Vec<BuildMeasure>,
    /// Count latency on the run's index, when a run was given.
    pub count_latency: Option<CountLatency>,
    /// What opening the run's index costs, when a run was given.
    pub open: Option<OpenCost>,
    /// Hashing the synthetic shard's array and token file (what `Index::open` adds for
    /// a shard that size), when one was built.
    pub synthetic_open_hash: Option<HashCost>,
    /// What the build figures include.
    pub note: String,
}

/// Opening an index: structure and bounds only, then with every array and token file
/// hash-checked (the default).
#[derive(Debug, Clone, Serialize)]
pub struct OpenCost {
    /// Milliseconds for structure and bounds only.
    pub bounds_only_ms: f64,
    /// Milliseconds with every file hashed.
    pub hashed_ms: f64,
    /// Bytes hashed.
    pub hashed_bytes: u64,
    /// Hashing speed (the difference of the two opens over the bytes), GB/s.
    pub hash_gb_per_s: f64,
}

/// Hashing one shard's files.
#[derive(Debug, Clone, Serialize)]
pub struct HashCost {
    /// Tokens of the shard.
    pub tokens: u64,
    /// Bytes hashed (array and token file).
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
    /// GB/s.
    pub gb_per_s: f64,
}

/// One build measured: tokens, seconds, peak memory above the starting RSS.
#[derive(Debug, Clone, Serialize)]
pub struct BuildMeasure {
    /// What was built.
    pub what: String,
    /// Tokens (suffixes) sorted.
    pub tokens: u64,
    /// Seconds.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Peak resident memory above the RSS before the build, bytes.
    pub peak_bytes: u64,
    /// The peak per token.
    pub peak_bytes_per_token: f64,
    /// Suffix-array bytes per token.
    pub index_bytes_per_token: f64,
}

/// Count latency over random queries.
#[derive(Debug, Clone, Serialize)]
pub struct CountLatency {
    /// Queries timed.
    pub queries: usize,
    /// Queries found at least once.
    pub found: u64,
    /// Training shards of the index.
    pub shards: usize,
    /// Training tokens of the index.
    pub tokens: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// Peak resident memory since the last reset, and the current one (bytes; Linux).
fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak-RSS counter so each build is measured on its own (Linux).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn measure_build(
    what: &str,
    path: &Path,
    dtype: TokenDtype,
    row_len: usize,
    n: u64,
    out: &Path,
) -> Result<BuildMeasure> {
    reset_peak();
    let (_, base) = rss();
    let t0 = Instant::now();
    let (_, bytes, _) = glass_analysis::index::build_sa_file(
        glass_io::open::open_regular(path)?,
        dtype,
        row_len,
        n,
        false,
        glass_io::atomic::AtomicFile::create(out)?,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let (peak, _) = rss();
    let peak = peak.saturating_sub(base);
    Ok(BuildMeasure {
        what: what.into(),
        tokens: n,
        seconds: secs,
        tokens_per_s: n as f64 / secs.max(1e-9),
        peak_bytes: peak,
        peak_bytes_per_token: peak as f64 / n.max(1) as f64,
        index_bytes_per_token: bytes as f64 / n.max(1) as f64,
    })
}

/// SplitMix64: a fixed, dependency-free stream for synthetic data and queries.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs the builds and the count queries in a scratch folder under the temp directory.
pub fn run(o: &IndexOptions) -> Result<IndexBench> {
    let tmp = std::env::temp_dir().join(format!("glass-bench-index-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    let mut builds = Vec::new();
    let mut latency = None;
    let threads = rayon::current_num_threads();
    let mut open = None;
    let mut synthetic_open_hash = None;
    if let Some(run) = &o.run {
        // Opening: structure and bounds only, then with every array and token file
        // hash-checked (the default; the first open in a process hashes).
        let t0 = Instant::now();
        drop(Index::open_with(
            run,
            glass_analysis::query::IndexCheck::BoundsOnly,
        )?);
        let bounds_s = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let index = Index::open(run)?;
        let hashed_s = t0.elapsed().as_secs_f64();
        let hashed_bytes: u64 = index
            .shards
            .iter()
            .chain(index.validation.iter())
            .map(|s| s.rec.sa.bytes + s.rec.tokens.bytes)
            .sum();
        open = Some(OpenCost {
            bounds_only_ms: bounds_s * 1e3,
            hashed_ms: hashed_s * 1e3,
            hashed_bytes,
            hash_gb_per_s: hashed_bytes as f64 / (hashed_s - bounds_s).max(1e-9) / 1e9,
        });
        // Build: every shard of the run again, into a scratch directory (cold page cache
        // is not forced; the chunk files are small and usually cached).
        let mut total = BuildMeasure {
            what: format!("{} (all shards)", run.display()),
            tokens: 0,
            seconds: 0.0,
            tokens_per_s: 0.0,
            peak_bytes: 0,
            peak_bytes_per_token: 0.0,
            index_bytes_per_token: 4.0,
        };
        for s in index.shards.iter().chain(index.validation.iter()) {
            let r = &s.rec;
            let m = measure_build(
                &r.name,
                &run.join(&r.tokens.path),
                r.dtype,
                r.row_len,
                r.n_suffixes,
                &tmp.join("x.sa"),
            )?;
            total.tokens += m.tokens;
            total.seconds += m.seconds;
            if m.peak_bytes_per_token > total.peak_bytes_per_token {
                total.peak_bytes_per_token = m.peak_bytes_per_token;
                total.peak_bytes = m.peak_bytes;
            }
        }
        total.tokens_per_s = total.tokens as f64 / total.seconds.max(1e-9);
        builds.push(total);
        // Count latency over random 8–32-token queries: half copied from random rows
        // (present at least once), half random ids (mostly absent).
        let mut rng = Mix(42);
        let vocab = index
            .data
            .manifest
            .as_ref()
            .map_or(1 << 16, |m| m.tokenizer.vocab_size as u64);
        let mut times = Vec::with_capacity(o.queries);
        let mut found = 0u64;
        for i in 0..o.queries {
            // 8-32 tokens, at most a row (a query longer than a row cannot occur).
            let len = (8 + (rng.next() % 25) as usize).min(index.row_len);
            let q: Vec<u32> = if i % 2 == 0 && !index.shards.is_empty() {
                let s = &index.shards[(rng.next() % index.shards.len() as u64) as usize];
                let l = s.rec.row_len as u64;
                let row = rng.next() % s.rec.n_rows.max(1);
                let off = rng.next() % (l - len as u64 + 1);
                (0..len as u64)
                    .map(|j| s.token(row * l + off + j))
                    .collect::<glass_analysis::Result<Vec<u32>>>()?
            } else {
                (0..len).map(|_| (rng.next() % vocab) as u32).collect()
            };
            let t0 = Instant::now();
            let c = index.count(&q)?;
            times.push(t0.elapsed().as_secs_f64());
            found += (c > 0) as u64;
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)] * 1e3;
        latency = Some(CountLatency {
            queries: o.queries,
            found,
            shards: index.shards.len(),
            tokens: index.shards.iter().map(|s| s.len()).sum::<u64>(),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: times.last().copied().unwrap_or(0.0) * 1e3,
        });
    }
    if o.synthetic_tokens > 0 {
        let rows = o.synthetic_tokens.div_ceil(o.row_len as u64);
        let n = rows * o.row_len as u64;
        let dtype = if o.vocab as usize <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        };
        let path = tmp.join("synthetic.tokens");
        write_synthetic(&path, n, o.vocab, dtype).map_err(io("writing", &path))?;
        builds.push(measure_build(
            &format!(
                "synthetic {n} tokens, vocab {}, rows of {}",
                o.vocab, o.row_len
            ),
            &path,
            dtype,
            o.row_len,
            n,
            &tmp.join("synthetic.sa"),
        )?);
        // What `Index::open` adds for a shard this size: hashing its array and its token
        // file (one thread per file, as there).
        let t0 = Instant::now();
        let (sa, tok) = rayon::join(
            || glass_io::sha256_file(&tmp.join("synthetic.sa")),
            || glass_io::sha256_file(&path),
        );
        let (sa, tok) = (sa?, tok?);
        let seconds = t0.elapsed().as_secs_f64();
        synthetic_open_hash = Some(HashCost {
            tokens: n,
            bytes: sa.1 + tok.1,
            seconds,
            gb_per_s: (sa.1 + tok.1) as f64 / seconds.max(1e-9) / 1e9,
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(IndexBench {
        threads,
        build: builds,
        count_latency: latency,
        open,
        synthetic_open_hash,
        note: "build: libsais single-threaded over each shard, timing the file map, sort and atomic write; peak = VmHWM above the RSS before the build (warm page cache)".into(),
    })
}

/// `n` log-uniform token ids below `vocab` (a Zipf-like tail), as `dtype`, into `path`.
fn write_synthetic(path: &Path, n: u64, vocab: u32, dtype: TokenDtype) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Mix(7);
    let lv = (vocab as f64).ln();
    let (mut ids, mut buf) = (Vec::with_capacity(1 << 20), Vec::new());
    let mut left = n;
    while left > 0 {
        let k = left.min(1 << 20);
        ids.clear();
        ids.extend((0..k).map(|_| {
            ((rng.unit() * lv).exp() as u32)
                .saturating_sub(1)
                .min(vocab - 1)
        }));
        buf.clear();
        dtype.encode(&ids, &mut buf);
        f.write_all(&buf)?;
        left -= k;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_synthetic_shard_is_built_and_measured() {
        let r = run(&IndexOptions {
            run: None,
            synthetic_tokens: 10_000,
            vocab: 1000,
            row_len: 100,
            queries: 0,
        })
        .unwrap();
        assert_eq!(r.build.len(), 1);
        assert_eq!(r.build[0].tokens, 10_000);
        assert!(r.build[0].index_bytes_per_token > 0.0);
        assert!(r.count_latency.is_none());
        // Printed through a JSON value, as the command does: keys in name order.
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "build",
                "count_latency",
                "note",
                "open",
                "synthetic_open_hash",
                "threads"
            ]
        );
    }
}
