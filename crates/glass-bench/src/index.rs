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
    /// What the build figures include.
    pub note: String,
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
    let (_, bytes, _) = glass_analysis::index::build_sa_file(path, dtype, row_len, n, false, out)?;
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
    if let Some(run) = &o.run {
        let index = Index::open(run)?;
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
        let vocab = index.data.tokenizer.vocab_size as u64;
        let mut times = Vec::with_capacity(o.queries);
        let mut found = 0u64;
        for i in 0..o.queries {
            let len = 8 + (rng.next() % 25) as usize;
            let q: Vec<u32> = if i % 2 == 0 && !index.shards.is_empty() {
                let s = &index.shards[(rng.next() % index.shards.len() as u64) as usize];
                let l = s.rec.row_len as u64;
                let row = rng.next() % s.rec.n_rows.max(1);
                let off = rng.next() % (l - len as u64 + 1);
                (0..len as u64)
                    .map(|j| s.token(row * l + off + j))
                    .collect()
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
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(IndexBench {
        threads,
        build: builds,
        count_latency: latency,
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
        assert_eq!(keys, ["build", "count_latency", "note", "threads"]);
    }
}
