//! Benchmark contamination: which evaluation items occur in the training stream.
//!
//! Definition (docs/data-format.md, "Contamination"): an item's text is tokenized with
//! the run's tokenizer; the item is contaminated when any of its `n`-token windows
//! (`n = 13`, GPT-3's and lm-evaluation-harness's decontamination length, here in tokens)
//! occurs inside one training row — the context the model saw — at any step. Items of
//! fewer than `n` tokens are counted as too short and not checked.
//!
//! Two ways find the same matches: with `glass index RUN` built, each distinct n-gram is
//! looked up in the suffix arrays (time grows with the benchmark, not the corpus);
//! without it, the stream is scanned once: the items' distinct n-grams go in a hash map
//! (exact keys, so no false positives) and every window of every row is looked up in it,
//! in parallel over the steps of each chunk. Memory is bounded by the benchmark; results
//! never depend on the thread count or the method.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use glass_data::pack::Segment;
use glass_data::store::SourceView;
use glass_data::PreparedData;
use rayon::prelude::*;

use crate::error::{AnalysisError, Result};

// The report's format is owned by glass-eval, which attaches its figures to results.
pub use glass_eval::contamination_report::{
    task_figure, ContaminatedItem, ContaminationReport, Figure, Hit, Method, TaskContamination,
    TaskFigure, CONTAMINATION_FILE, CONTAMINATION_FORMAT,
};

/// The default n-gram length, in tokens (the same as decontamination's).
pub const DEFAULT_NGRAM: usize = glass_data::decontaminate::DEFAULT_NGRAM;

/// One benchmark item to check (the same items `[data] decontaminate` removes).
pub use glass_data::decontaminate::BenchItem;

/// How to check.
#[derive(Debug, Clone)]
pub struct ContaminationOptions {
    /// How the rows are searched.
    pub method: Method,
    /// N-gram length in tokens.
    pub n: usize,
    /// Places listed per contaminated item (all are counted).
    pub max_hits: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The document limit the items were taken with (recorded in the report).
    pub limit: Option<usize>,
    /// Per task name, the sha256 of its definition and data (`glass eval`'s
    /// `task_sha256`), recorded so that a figure for a task that changed since is not
    /// shown as current.
    pub task_sha256: BTreeMap<String, String>,
}

impl Default for ContaminationOptions {
    fn default() -> Self {
        Self {
            method: Method::Auto,
            n: DEFAULT_NGRAM,
            max_hits: 5,
            progress: false,
            limit: None,
            task_sha256: BTreeMap::new(),
        }
    }
}

/// Per item: its tokens, or `None` when too short.
type ItemGrams = Vec<Option<Vec<u32>>>;

/// Where each distinct n-gram is: n-gram → id, and id → items holding it.
struct GramTable<'a> {
    ids: HashMap<&'a [u32], u32>,
    items: Vec<Vec<u32>>,
}

fn gram_table<'a>(tokens: &'a ItemGrams, n: usize) -> GramTable<'a> {
    let mut t = GramTable {
        ids: HashMap::new(),
        items: Vec::new(),
    };
    for (i, toks) in tokens.iter().enumerate() {
        let Some(toks) = toks else { continue };
        for g in toks.windows(n) {
            let next = t.ids.len() as u32;
            let id = *t.ids.entry(g).or_insert(next);
            if id == next {
                t.items.push(Vec::new());
            }
            let list = &mut t.items[id as usize];
            if list.last() != Some(&(i as u32)) {
                list.push(i as u32);
            }
        }
    }
    t
}

/// Checks `items` against the training rows of `run_dir` and stores the report.
pub fn contamination(
    run_dir: &Path,
    items: &[BenchItem],
    opts: &ContaminationOptions,
) -> Result<ContaminationReport> {
    if opts.n == 0 {
        return Err(AnalysisError::Input(
            "the n-gram length must be at least 1".into(),
        ));
    }
    let data = PreparedData::open(run_dir)?;
    if opts.n > data.row_len() {
        return Err(AnalysisError::Input(format!(
            "n-grams of {} tokens cannot lie inside rows of {} tokens",
            opts.n,
            data.row_len()
        )));
    }
    let tok = data.tokenizer()?;
    let tokens: ItemGrams = items
        .par_iter()
        .map(|it| {
            let t = tok.encode(&it.text)?;
            Ok((t.len() >= opts.n).then_some(t))
        })
        .collect::<std::result::Result<_, glass_data::DataError>>()?;
    let table = gram_table(&tokens, opts.n);
    let tokens_total = data.n_steps() * data.rows_per_step() as u64 * data.row_len() as u64;
    let method = match opts.method {
        Method::Auto
            if run_dir.join(crate::index::INDEX_MANIFEST).exists()
                && index_is_cheaper(table.ids.len(), opts.n, data.n_chunks(), tokens_total) =>
        {
            Method::Index
        }
        Method::Auto => Method::Scan,
        m => m,
    };
    let matches = match method {
        Method::Index => lookup(run_dir, &table, opts)?,
        _ => scan(&data, &table, opts)?,
    };

    // Per item: matched n-gram ids, occurrences, first places.
    let mut matched: Vec<Vec<u32>> = vec![Vec::new(); items.len()];
    let mut occurrences = vec![0u64; items.len()];
    let mut places: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); items.len()];
    for &(step, slot, pos, id) in &matches {
        for &i in &table.items[id as usize] {
            let i = i as usize;
            matched[i].push(id);
            occurrences[i] += 1;
            places[i].push((step, slot, pos));
        }
    }
    let mut resolver = Resolver::new(&data);
    let mut by_task: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tasks: Vec<TaskContamination> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let t = *by_task.entry(&it.task).or_insert_with(|| {
            tasks.push(TaskContamination {
                task: it.task.clone(),
                task_sha256: opts.task_sha256.get(&it.task).cloned(),
                items: 0,
                too_short: 0,
                contaminated: 0,
                contaminated_items: Vec::new(),
            });
            tasks.len() - 1
        });
        let task = &mut tasks[t];
        task.items += 1;
        let Some(toks) = &tokens[i] else {
            task.too_short += 1;
            continue;
        };
        if occurrences[i] == 0 {
            continue;
        }
        task.contaminated += 1;
        let mut ids = std::mem::take(&mut matched[i]);
        ids.sort_unstable();
        ids.dedup();
        let mut distinct: Vec<(u64, u64, u64)> = std::mem::take(&mut places[i]);
        distinct.sort_unstable();
        let mut hits: Vec<Hit> = Vec::new();
        for (step, slot, pos) in distinct {
            if hits.len() >= opts.max_hits {
                break;
            }
            let h = resolver.hit(step, slot, pos)?;
            if !hits.iter().any(|x| {
                x.step == h.step && x.slot == h.slot && x.source == h.source && x.doc == h.doc
            }) {
                hits.push(h);
            }
        }
        let mut grams: Vec<&[u32]> = toks.windows(opts.n).collect();
        grams.sort_unstable();
        grams.dedup();
        task.contaminated_items.push(ContaminatedItem {
            id: it.id.clone(),
            tokens: toks.len(),
            ngrams: grams.len(),
            matched_ngrams: ids.len(),
            occurrences: occurrences[i],
            hits,
        });
    }
    let report = ContaminationReport {
        format: CONTAMINATION_FORMAT.into(),
        ngram: opts.n,
        method,
        data_manifest_sha256: glass_io::open::sha256_beneath(
            run_dir,
            &run_dir.join("data/manifest.json"),
            None,
        )?
        .0,
        tokenizer_sha256: data.manifest().tokenizer.sha256.clone(),
        steps: data.n_steps(),
        tokens: tokens_total,
        limit: opts.limit,
        tasks,
    };
    let bytes = serde_json::to_vec_pretty(&report).expect("json");
    glass_io::atomic::write_atomic_beneath(run_dir, &run_dir.join(CONTAMINATION_FILE), &bytes)?;
    Ok(report)
}

/// Every `(step, slot, pos, n-gram id)` where a row window equals a benchmark n-gram,
/// sorted.
fn scan(
    data: &PreparedData,
    table: &GramTable<'_>,
    opts: &ContaminationOptions,
) -> Result<Vec<(u64, u64, u64, u32)>> {
    let (n, row_len, b) = (opts.n, data.row_len(), data.rows_per_step());
    let bar = glass_io::progress::bar(
        data.n_steps(),
        opts.progress,
        "contamination [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}",
    );
    let mut out = Vec::new();
    if table.ids.is_empty() {
        bar.finish_and_clear();
        return Ok(out);
    }
    let spc = data.steps_per_chunk();
    let mut first = 0;
    while first < data.n_steps() {
        let last = (first + spc).min(data.n_steps());
        let found: Vec<Vec<(u64, u64, u64, u32)>> = (first..last)
            .into_par_iter()
            .map(|step| {
                let mut rows = Vec::with_capacity(b * row_len);
                data.batch(step, &mut rows)?;
                let mut f = Vec::new();
                for (slot, row) in rows.chunks_exact(row_len).enumerate() {
                    for (pos, w) in row.windows(n).enumerate() {
                        if let Some(&id) = table.ids.get(w) {
                            f.push((step, slot as u64, pos as u64, id));
                        }
                    }
                }
                bar.inc(1);
                Ok(f)
            })
            .collect::<std::result::Result<_, glass_data::DataError>>()?;
        out.extend(found.into_iter().flatten());
        first = last;
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Whether looking `grams` n-grams up in the suffix arrays of `shards` chunks is
/// estimated to beat scanning `tokens` tokens. A lookup is two binary searches per
/// token of the n-gram in every shard, each step a random read (about a quarter of the
/// cost of a scanned token's hash lookup, measured): small streams and large
/// benchmarks scan, large streams look up.
fn index_is_cheaper(grams: usize, n: usize, shards: u64, tokens: u64) -> bool {
    let per_shard = (tokens / shards.max(1)).max(2) as f64;
    let lookups = grams as f64 * shards as f64 * 2.0 * n as f64 * per_shard.log2();
    lookups / 4.0 < tokens as f64
}

/// The same matches as [`scan`], from the suffix arrays of `glass index RUN`.
fn lookup(
    run_dir: &Path,
    table: &GramTable<'_>,
    opts: &ContaminationOptions,
) -> Result<Vec<(u64, u64, u64, u32)>> {
    let index = crate::query::Index::open(run_dir)?;
    let grams: Vec<(&[u32], u32)> = table.ids.iter().map(|(g, &id)| (*g, id)).collect();
    let bar = glass_io::progress::bar(
        grams.len() as u64,
        opts.progress,
        "contamination [{bar:30}] {pos}/{len} n-grams {per_sec} ETA {eta}",
    );
    let found: Vec<Vec<(u64, u64, u64, u32)>> = grams
        .par_iter()
        .map(|&(g, id)| {
            let occ = index.occurrences(g)?;
            bar.inc(1);
            Ok(occ
                .into_iter()
                .map(|(k, p)| {
                    let l = index.shards[k].locate(p, index.rows_per_step);
                    (l.step, l.slot, l.offset, id)
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut out: Vec<_> = found.into_iter().flatten().collect();
    out.sort_unstable();
    Ok(out)
}

/// Maps a row position to the document it lies in (segments cached per chunk).
struct Resolver<'a> {
    data: &'a PreparedData,
    chunk: Option<(u64, u64, Vec<Segment>)>,
    views: HashMap<u32, SourceView>,
}

impl<'a> Resolver<'a> {
    fn new(data: &'a PreparedData) -> Self {
        Self {
            data,
            chunk: None,
            views: HashMap::new(),
        }
    }

    fn hit(&mut self, step: u64, slot: u64, pos: u64) -> Result<Hit> {
        let c = step / self.data.steps_per_chunk();
        if self.chunk.as_ref().map(|x| x.0) != Some(c) {
            let (first_step, segs) = self.data.chunk_segments(step)?;
            self.chunk = Some((c, first_step, segs));
        }
        let (_, first_step, segs) = self.chunk.as_ref().expect("loaded");
        let row = ((step - first_step) * self.data.rows_per_step() as u64 + slot) as u32;
        // The segment the position lies in (special tokens carry their document too).
        let i = segs.partition_point(|s| (s.row, s.pos) <= (row, pos as u32));
        let seg = i
            .checked_sub(1)
            .map(|i| segs[i])
            .filter(|s| s.row == row)
            .ok_or_else(|| {
                AnalysisError::Input(format!("step {step} row {slot}: no segment at {pos}"))
            })?;
        let names = &self.data.manifest().config.sources;
        let name = names[seg.source as usize].name.clone();
        if !self.views.contains_key(&seg.source) {
            self.views.insert(seg.source, self.data.source_view(&name)?);
        }
        let view = &self.views[&seg.source];
        let (path, line) = view.doc_id(seg.doc)?;
        Ok(Hit {
            step,
            slot,
            pos,
            source: name,
            doc: seg.doc,
            doc_id: if line == 0 {
                path
            } else {
                format!("{path}:{line}")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_scans_small_streams_and_looks_up_in_large_chunks() {
        // The measured case: 10 chunks of 0.4M tokens, ~1e5 n-grams: scan.
        assert!(!index_is_cheaper(100_000, 13, 10, 4_000_000));
        // 100 chunks of 1e9 tokens, the same benchmark: index.
        assert!(index_is_cheaper(100_000, 13, 100, 100_000_000_000));
    }
}
