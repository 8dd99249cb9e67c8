//! Deduplication before packing (`[data.dedup]`): which documents are removed, why, and
//! the record of it in the run.
//!
//! Decisions are a pure function of the documents in recorded order — the deduplicated
//! sources in config order, each source's documents in store order (units sorted by path,
//! records in file order) — and of the `[data.dedup]` table: fingerprints are computed in
//! parallel but clustered in that order, so thread count and resumes never change them.
//! In every cluster the first document in recorded order is kept.
//!
//! 1. exact: a document whose exact key ([`crate::minhash::exact_key`]) equals an earlier
//!    document's is removed, as a duplicate of the first;
//! 2. near: among the documents left, two documents whose MinHash signatures agree on
//!    every row of some LSH band are joined (union-find, as datatrove does); every
//!    document but the first of a connected cluster is removed, as a duplicate of the
//!    first, with the Jaccard similarity the two signatures estimate.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{DataConfig, DedupConfig};
use crate::error::{DataError, Result};
use crate::minhash::{band_key, exact_key, jaccard_estimate, MinHasher};
use crate::sources::{read_unit, RawDoc, Unit};
use crate::store::SourceView;
use glass_io::atomic::AtomicFile;
use glass_io::progress::Progress;

/// The removed-documents file, relative to `RUN/data/`.
pub const REMOVED_FILE: &str = "dedup_removed.jsonl";

/// What deduplication and decontamination (`[data] decontaminate`) removed, in the data
/// manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The MinHash seed used (`[data.dedup] seed`, else `[data] seed`).
    pub seed: u64,
    /// The benchmark items documents were checked against (absent without
    /// `[data] decontaminate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decontaminate: Option<crate::decontaminate::DecontaminateRecord>,
    /// Every removed document with its provenance and what it duplicates (JSON Lines,
    /// relative to `RUN/data/`; hashed in `files`).
    pub file: String,
    /// Per deduplicated or decontaminated source, in config order.
    pub sources: Vec<DedupSourceRecord>,
}

/// Documents and tokens one filter removed from one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Documents removed.
    pub docs: u64,
    /// Their tokens (as tokenized in the source's store).
    pub tokens: u64,
    /// Their input bytes (record byte lengths).
    pub bytes: u64,
}

/// One source's numbers before and after deduplication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupSourceRecord {
    /// Source name.
    pub name: String,
    /// Documents before deduplication.
    pub docs_before: u64,
    /// Tokens before deduplication.
    pub tokens_before: u64,
    /// Removed for sharing an n-gram with a benchmark item (`[data] decontaminate`).
    #[serde(default)]
    pub decontaminate: Removed,
    /// Removed as exact duplicates.
    pub exact: Removed,
    /// Removed as near duplicates.
    pub near: Removed,
    /// Cut by substring deduplication (absent when it is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substring: Option<SubstringRemoved>,
    /// Documents packed.
    pub docs_after: u64,
    /// Tokens of those documents.
    pub tokens_after: u64,
}

/// What substring deduplication cut from one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubstringRemoved {
    /// Spans cut.
    pub spans: u64,
    /// Tokens cut (spans and emptied documents).
    pub tokens: u64,
    /// Documents with at least one span cut that kept some tokens.
    pub docs_cut: u64,
    /// Documents every token of which was cut: removed whole.
    pub docs_emptied: u64,
}

/// One line of [`REMOVED_FILE`]: a removed document and the kept one it duplicates, or
/// the benchmark item it matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedDoc {
    /// `decontaminate`, `exact` or `near`.
    pub filter: String,
    /// The removed document.
    #[serde(flatten)]
    pub doc: DocPlace,
    /// Its tokens.
    pub tokens: u64,
    /// The kept document it duplicates (the first of its cluster; `exact` and `near`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<DocPlace>,
    /// The benchmark item it shares an n-gram with (`decontaminate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<crate::decontaminate::BenchMatch>,
    /// Near duplicates: the Jaccard similarity of the two documents' shingle sets, as
    /// their signatures estimate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaccard: Option<f64>,
    /// Substring spans: the tokens `[start, end)` of the document that were cut (absent:
    /// the whole document was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<[u32; 2]>,
    /// Substring spans: where in `kept` the span's first window occurred first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<u32>,
}

/// Where a document came from: the provenance `glass data show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPlace {
    /// Source name.
    pub source: String,
    /// Document index within the source (as in chunk segments).
    pub doc: u64,
    /// Input file (unit path).
    pub file: String,
    /// 1-based line (JSONL) or row (Parquet/Arrow); 0 for a whole file.
    pub line: u64,
    /// Byte offset of the record in the file.
    pub byte_start: u64,
    /// Byte length of the record.
    pub byte_len: u64,
}

/// A document's fingerprints.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// Exact-text key.
    pub exact: u128,
    /// MinHash signature (`None`: no words, never a near duplicate).
    pub sig: Option<Vec<u32>>,
}

/// Why a document was removed: `(index, kept index, filter is near, jaccard)`, indices
/// in recorded order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The removed document.
    pub removed: usize,
    /// The kept document it duplicates.
    pub kept: usize,
    /// Removed by the near-duplicate filter (else exact).
    pub near: bool,
    /// Estimated Jaccard similarity (near duplicates).
    pub jaccard: Option<f64>,
}

/// Clusters fingerprints given in recorded order; the decisions sorted by removed index.
pub fn cluster(fps: &[Fingerprint], cfg: &DedupConfig) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut removed = vec![false; fps.len()];
    if cfg.exact {
        let mut first: HashMap<u128, usize> = HashMap::with_capacity(fps.len());
        for (i, f) in fps.iter().enumerate() {
            match first.get(&f.exact) {
                Some(&k) => {
                    removed[i] = true;
                    out.push(Decision {
                        removed: i,
                        kept: k,
                        near: false,
                        jaccard: None,
                    });
                }
                None => {
                    first.insert(f.exact, i);
                }
            }
        }
    }
    if cfg.near {
        let live: Vec<usize> = (0..fps.len())
            .filter(|&i| !removed[i] && fps[i].sig.is_some())
            .collect();
        let mut parent: Vec<usize> = (0..fps.len()).collect();
        let bands: Vec<Vec<(u64, usize)>> = (0..cfg.bands)
            .into_par_iter()
            .map(|j| {
                let mut keys: Vec<(u64, usize)> = live
                    .iter()
                    .map(|&i| (band_key(fps[i].sig.as_ref().expect("live"), j, cfg.rows), i))
                    .collect();
                keys.sort_unstable();
                keys
            })
            .collect();
        for keys in &bands {
            for w in keys.windows(2) {
                if w[0].0 == w[1].0 {
                    union(&mut parent, w[0].1, w[1].1);
                }
            }
        }
        for &i in &live {
            let root = find(&mut parent, i);
            if root != i {
                out.push(Decision {
                    removed: i,
                    kept: root,
                    near: true,
                    jaccard: Some(jaccard_estimate(
                        fps[i].sig.as_ref().expect("live"),
                        fps[root].sig.as_ref().expect("live"),
                    )),
                });
            }
        }
    }
    out.sort_by_key(|d| d.removed);
    out
}

/// The root of `i`'s set: its smallest member, so the first document of a cluster.
fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = (ra.min(rb), ra.max(rb));
    parent[hi] = lo;
}

/// Documents are fingerprinted in parallel in batches of about this many bytes.
const BATCH_BYTES: usize = 8 << 20;

/// Re-reads the units of one source and fingerprints the documents its store kept, in
/// store order. Each unit must hash as the store recorded it.
pub fn fingerprint_source(
    cfg: &DataConfig,
    s: usize,
    units: &[Unit],
    view: &SourceView,
    hasher: &MinHasher,
    progress: &Progress,
) -> Result<Vec<Fingerprint>> {
    let src = &cfg.sources[s];
    let near = cfg.dedup.as_ref().is_some_and(|d| d.near);
    let mut out = Vec::with_capacity(view.n_docs() as usize);
    let mut batch: Vec<RawDoc> = Vec::new();
    let mut bytes = 0usize;
    let flush = |batch: &mut Vec<RawDoc>, out: &mut Vec<Fingerprint>| {
        let fps: Vec<Fingerprint> = batch
            .par_iter()
            .map(|d| Fingerprint {
                exact: exact_key(&d.text),
                sig: if near {
                    hasher.signature(&d.text)
                } else {
                    None
                },
            })
            .collect();
        for d in batch.drain(..) {
            progress.inc(d.byte_len, 0);
        }
        out.extend(fps);
    };
    for (u, rec) in view.units().enumerate() {
        let docs = view.unit_docs(u);
        let mut next = docs.start;
        let unit = units.get(u).filter(|x| x.path == rec.path).ok_or_else(|| {
            DataError::Format(format!(
                "source `{}`: unit {u} of the store is {}, not an input of the source",
                src.name, rec.path
            ))
        })?;
        let counts = read_unit(src, unit, &mut |d| {
            // The store skipped empty documents: match the kept ones by place.
            if next < docs.end {
                let r = view.doc(next);
                if r.line == d.line && r.byte_start == d.byte_start {
                    next += 1;
                    bytes += d.text.len();
                    batch.push(d);
                    if bytes >= BATCH_BYTES {
                        flush(&mut batch, &mut out);
                        bytes = 0;
                    }
                }
            }
            Ok(())
        })?;
        if counts.sha256 != rec.counts.sha256 || next != docs.end {
            return Err(DataError::Source {
                source_name: src.name.clone(),
                message: format!(
                    "{} changed since it was tokenized (sha256 {} then, {} now); run `glass data prepare` again",
                    rec.path, rec.counts.sha256, counts.sha256
                ),
            });
        }
    }
    flush(&mut batch, &mut out);
    Ok(out)
}

/// The place of document `doc` of `view`.
pub fn place(view: &SourceView, doc: u64) -> DocPlace {
    let r = view.doc(doc);
    DocPlace {
        source: view.name.clone(),
        doc,
        file: view.unit_path(r.unit as usize).to_string(),
        line: r.line,
        byte_start: r.byte_start,
        byte_len: r.byte_len,
    }
}

/// Writes [`REMOVED_FILE`] atomically (one JSON line per removed document, in recorded
/// order); returns its sha256 and length.
pub fn write_removed(
    root: &Path,
    data_dir: &Path,
    lines: impl Iterator<Item = RemovedDoc>,
) -> Result<(String, u64)> {
    let mut f = AtomicFile::create_beneath(root, &data_dir.join(REMOVED_FILE))?;
    for l in lines {
        let mut b = serde_json::to_vec(&l).expect("json");
        b.push(b'\n');
        f.write(&b)?;
    }
    Ok(f.commit()?)
}

/// What [`REMOVED_FILE`] says packing leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removals {
    /// Removed documents, `(source, doc)`.
    pub docs: Vec<(String, u64)>,
    /// Token ranges cut by substring deduplication, `(source, doc, start, end)`.
    pub spans: Vec<(String, u64, u32, u32)>,
}

impl Removals {
    /// The cut ranges of `source` as [`SourceView::cut_spans`] takes them.
    pub fn spans_of(&self, source: &str) -> Vec<(u64, u32, u32)> {
        self.spans
            .iter()
            .filter(|s| s.0 == source)
            .map(|s| (s.1, s.2, s.3))
            .collect()
    }
}

/// Reads [`REMOVED_FILE`]: the removed documents and the cut spans.
pub fn read_removed(root: &Path, path: &Path) -> Result<Removals> {
    let bytes = glass_io::open::read_beneath(root, path, u64::MAX)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DataError::Format(format!("{}: not UTF-8", path.display())))?;
    let mut out = Removals::default();
    for (i, l) in text.lines().enumerate() {
        let d: RemovedDoc = serde_json::from_str(l)
            .map_err(|e| DataError::Format(format!("{}:{}: {e}", path.display(), i + 1)))?;
        match d.span {
            Some([a, b]) if a < b => out.spans.push((d.doc.source, d.doc.doc, a, b)),
            Some(_) => {
                return Err(DataError::Format(format!(
                    "{}:{}: an empty or reversed span",
                    path.display(),
                    i + 1
                )))
            }
            None => out.docs.push((d.doc.source, d.doc.doc)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(text: &str, m: &MinHasher) -> Fingerprint {
        Fingerprint {
            exact: exact_key(text),
            sig: m.signature(text),
        }
    }

    #[test]
    fn clusters_keep_the_first_document() {
        let cfg = DedupConfig::default();
        let m = MinHasher::new(3, cfg.bands * cfg.rows, cfg.shingle_words);
        let base: String = (0..300).map(|i| format!("w{i} ")).collect();
        let near = base.replace("w150 ", "changed ");
        let other: String = (0..300).map(|i| format!("x{i} ")).collect();
        let texts = [
            other.clone(),
            base.clone(),
            base.to_uppercase(),
            near.clone(),
            other.clone(),
        ];
        let fps: Vec<_> = texts.iter().map(|t| fp(t, &m)).collect();
        let d = cluster(&fps, &cfg);
        assert_eq!(
            d.iter()
                .map(|d| (d.removed, d.kept, d.near))
                .collect::<Vec<_>>(),
            vec![(2, 1, false), (3, 1, true), (4, 0, false)]
        );
        assert!(d[1].jaccard.unwrap() > 0.8);
        let off = DedupConfig {
            near: false,
            ..cfg.clone()
        };
        assert_eq!(cluster(&fps, &off).len(), 2);
    }
}
