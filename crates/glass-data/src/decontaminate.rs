//! Benchmark decontamination before packing (`[data] decontaminate`): training documents
//! that share an n-token window with a benchmark item are removed.
//!
//! Definition (docs/data-format.md, "Decontamination"): each benchmark item's text is
//! tokenized with the run's tokenizer; a training document is removed when any window of
//! `n` consecutive tokens of it (`n = decontaminate_ngram`, default 13) equals a window of
//! an item. Items of fewer than `n` tokens are counted as too short and never match. A
//! removed document is attributed to the first matching window in the document and, of
//! the items holding that window, the first in benchmark order — so the decisions are a
//! pure function of the documents and the items, never of the thread count.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::store::SourceView;
use glass_io::progress::Progress;

/// The default n-gram length, in tokens (GPT-3's and lm-evaluation-harness's
/// decontamination length, here in tokens).
pub const DEFAULT_NGRAM: usize = 13;

/// One benchmark item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchItem {
    /// Task name.
    pub task: String,
    /// Where the item came from (`file:line`).
    pub id: String,
    /// The text checked.
    pub text: String,
}

/// The benchmark item a removed document matched (in the removed-documents file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchMatch {
    /// Task name.
    pub task: String,
    /// The item (`file:line`).
    pub item: String,
    /// Token position in the document of the first window shared with the item.
    pub pos: u64,
}

/// What decontamination checked against, in the data manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecontaminateRecord {
    /// N-gram length in tokens.
    pub ngram: usize,
    /// sha256 of the items (task, id and text of each, as JSON Lines, in order).
    pub items_sha256: String,
    /// Per task, in the order given.
    pub tasks: Vec<DecontaminateTask>,
}

/// One benchmark task's items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecontaminateTask {
    /// Task name.
    pub task: String,
    /// Items.
    pub items: u64,
    /// Items of fewer than `ngram` tokens (never match).
    pub too_short: u64,
}

/// The items' distinct n-grams, each mapped to the first item holding it.
pub struct BenchGrams<'a> {
    n: usize,
    first: HashMap<&'a [u32], u32>,
}

impl<'a> BenchGrams<'a> {
    /// Indexes `tokens` (per item; `None` for an item too short).
    pub fn new(tokens: &'a [Option<Vec<u32>>], n: usize) -> Self {
        let mut first = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            for g in t.iter().flat_map(|t| t.windows(n)) {
                first.entry(g).or_insert(i as u32);
            }
        }
        Self { n, first }
    }

    /// The first window of `doc` that an item holds: `(position, item)`.
    pub fn first_match(&self, doc: &[u32]) -> Option<(u64, u32)> {
        if self.first.is_empty() {
            return None;
        }
        doc.windows(self.n)
            .enumerate()
            .find_map(|(p, w)| self.first.get(w).map(|&i| (p as u64, i)))
    }
}

/// The record of `items` as tokenized (`tokens`, per item), per task in order of first
/// appearance.
pub fn record(items: &[BenchItem], tokens: &[Option<Vec<u32>>], n: usize) -> DecontaminateRecord {
    let mut tasks: Vec<DecontaminateTask> = Vec::new();
    let mut lines = Vec::new();
    for (it, t) in items.iter().zip(tokens) {
        let line = serde_json::json!({ "task": it.task, "id": it.id, "text": it.text });
        lines.extend_from_slice(line.to_string().as_bytes());
        lines.push(b'\n');
        let k = match tasks.iter().position(|x| x.task == it.task) {
            Some(k) => k,
            None => {
                tasks.push(DecontaminateTask {
                    task: it.task.clone(),
                    items: 0,
                    too_short: 0,
                });
                tasks.len() - 1
            }
        };
        tasks[k].items += 1;
        tasks[k].too_short += u64::from(t.is_none());
    }
    DecontaminateRecord {
        ngram: n,
        items_sha256: glass_io::atomic::sha256_hex(&lines),
        tasks,
    }
}

/// Every document of `view` sharing a window with an item: `(doc, position, item)`, in
/// document order. Documents are searched in parallel; the result does not depend on it.
pub fn matches(
    view: &SourceView,
    grams: &BenchGrams<'_>,
    progress: &Progress,
) -> Vec<(u64, u64, u32)> {
    (0..view.n_docs())
        .into_par_iter()
        .map_init(Vec::new, |buf, doc| {
            let r = view.doc(doc);
            buf.clear();
            view.doc_tokens(doc, 0, r.n_tokens, buf);
            progress.inc(r.byte_len, r.n_tokens as u64);
            grams.first_match(buf).map(|(pos, item)| (doc, pos, item))
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_window_and_the_first_item_holding_it_are_reported() {
        let tokens = vec![
            Some(vec![1, 2, 3, 4]),
            None,
            Some(vec![9, 2, 3, 4, 5]),
            Some(vec![7, 8, 9]),
        ];
        let g = BenchGrams::new(&tokens, 3);
        assert_eq!(g.first_match(&[0, 0, 3, 4, 5, 2, 3, 4]), Some((2, 2)));
        assert_eq!(g.first_match(&[2, 3, 4, 5]), Some((0, 0)));
        assert_eq!(g.first_match(&[1, 2]), None);
        assert_eq!(g.first_match(&[7, 8, 0, 9]), None);
        let items: Vec<BenchItem> = ["a", "a", "b", "b"]
            .iter()
            .map(|t| BenchItem {
                task: t.to_string(),
                id: "f:1".into(),
                text: "x".into(),
            })
            .collect();
        let r = record(&items, &tokens, 3);
        assert_eq!(r.tasks.len(), 2);
        assert_eq!((r.tasks[0].items, r.tasks[0].too_short), (2, 1));
    }
}
