//! Tracing text back to training: the maximal spans of a text that occur verbatim in the
//! training stream (selected the OLMoTrace way), and for each the steps, rows, documents
//! and source text that held it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use glass_data::chunk::{read_header, read_segments};
use glass_data::pack::{Segment, SegmentKind};
use glass_data::rows::TrainingRows;
use glass_data::store::SourceView;
use glass_data::{GlassTokenizer, PreparedData};
use glass_engine::ops::fastmath::ln_f64;
use serde::Serialize;

use crate::error::{AnalysisError, Result};
use crate::query::Index;

/// How spans are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// Longest first.
    Length,
    /// Lowest unigram log-probability first (the rarest text, as OLMoTrace ranks).
    Unigram,
}

impl std::str::FromStr for Rank {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "length" => Ok(Rank::Length),
            "unigram" => Ok(Rank::Unigram),
            _ => Err(format!("`{s}`: rank by `length` or `unigram`")),
        }
    }
}

/// Options of [`trace`].
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Shortest span reported, in tokens.
    pub min_tokens: usize,
    /// Occurrences listed per span (all are counted).
    pub max_occurrences: usize,
    /// Span order.
    pub rank: Rank,
    /// Count occurrences before this checkpoint: (index, step).
    pub checkpoint: Option<(u32, u64)>,
}

/// One place a span occurs in training. On a run over a suite's data read in place
/// (`glass import pythia|olmo|crystalcoder`) the document is the row's place in the
/// suite's files: `source` is the suite (OLMo: the file's `data.datasets` label;
/// CrystalCoder: the stage), `doc` the Megatron idx entry (Pythia) or the instance
/// (OLMo) the row starts in, `doc_id` the file and the chunk or row within it (Pythia:
/// the byte offset of the row, `FILE@BYTE`), `doc_tokens` the match's positions in the
/// row, `doc_bytes` `[0, 0]` (the formats keep no document text), and the context around
/// the match is decoded from the row.
#[derive(Debug, Clone, Serialize)]
pub struct Occurrence {
    /// Training step.
    pub step: u64,
    /// Row within the step's global batch.
    pub slot: u64,
    /// Global row.
    pub row: u64,
    /// Token position in the row.
    pub offset: u64,
    /// Chunk file.
    pub chunk: u64,
    /// Source name (of the document the match starts in).
    pub source: String,
    /// Document index within the source.
    pub doc: u64,
    /// Stable document id: input path, plus `:line` for JSONL.
    pub doc_id: String,
    /// Byte range of the matched text within the document's text (`[start, end)`).
    pub doc_bytes: [u64; 2],
    /// Token range within the document.
    pub doc_tokens: [u64; 2],
    /// About 50 characters of the document before the match.
    pub before: String,
    /// The matched text as the document has it.
    pub text: String,
    /// About 50 characters of the document after the match.
    pub after: String,
}

/// One maximal span of the text that occurs in training.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// The span's text.
    pub text: String,
    /// Its token ids.
    pub tokens: Vec<u32>,
    /// Token range `[start, end)` within the traced text.
    pub start: usize,
    /// End (exclusive).
    pub end: usize,
    /// Occurrences in the training rows.
    pub count: u64,
    /// Occurrences at steps before the checkpoint (when one is given).
    pub count_before_checkpoint: Option<u64>,
    /// Occurrences in the validation rows.
    pub validation_count: u64,
    /// First training step holding it.
    pub first_step: u64,
    /// Last training step holding it.
    pub last_step: u64,
    /// Sum of the tokens' unigram log-probabilities in the training stream (natural log).
    pub unigram_logprob: f64,
    /// The first occurrences in training order.
    pub occurrences: Vec<Occurrence>,
}

/// Result of [`trace`].
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// The traced text.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Checkpoint index the `count_before_checkpoint` values refer to.
    pub checkpoint: Option<u32>,
    /// That checkpoint's step.
    pub checkpoint_step: Option<u64>,
    /// Minimum span length used.
    pub min_tokens: usize,
    /// Ranking used.
    pub rank: Rank,
    /// Spans, ranked.
    pub spans: Vec<Span>,
}

/// Whether a token position is a word boundary: position `i` sits between tokens `i-1`
/// and `i`; the ends of the text are boundaries.
pub fn word_boundaries(tok: &GlassTokenizer, ids: &[u32]) -> Result<Vec<bool>> {
    let pieces = ids
        .iter()
        .map(|&t| tok.decode(&[t]))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A piece that is only part of a UTF-8 character decodes to U+FFFD: treat it as
    // inside a word, so a span never cuts a character.
    let wordy = |c: char| c.is_alphanumeric() || c == '\u{fffd}' || c == '_';
    let mut b = vec![true; ids.len() + 1];
    for i in 1..ids.len() {
        let end_prev = pieces[i - 1].chars().last();
        let start_cur = pieces[i].chars().next();
        b[i] = match (end_prev, start_cur) {
            (Some(a), Some(c)) => !(wordy(a) && wordy(c)),
            _ => true,
        };
    }
    Ok(b)
}

/// The maximal spans `[start, end)` of `ids` that occur in training: starting and ending
/// on word boundaries, at least `min_tokens` long, and not inside another such span.
pub fn maximal_spans(
    index: &Index,
    ids: &[u32],
    boundary: &[bool],
    min_tokens: usize,
) -> Result<Vec<(usize, usize)>> {
    let longest = index.longest_matches(ids)?;
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut reach = 0usize;
    for i in 0..ids.len() {
        if !boundary[i] {
            continue;
        }
        let mut e = i + longest[i];
        while e > i && !boundary[e] {
            e -= 1;
        }
        // Starts increase, so a span is inside an earlier one exactly when an earlier
        // span reaches at least as far.
        if e - i >= min_tokens.max(1) && e > reach {
            out.push((i, e));
            reach = e;
        }
    }
    Ok(out)
}

/// `ln(count / total)`, a token's unigram log-probability in the training stream, with
/// the numerics contract's `ln`: the rarity ranking and the published
/// `unigram_logprob` are the same on every CPU.
fn unigram_logprob(count: u64, total: u64) -> f64 {
    ln_f64(count as f64 / total.max(1) as f64)
}

/// The tokenizer a run's training rows were made with: a Glass run's own, or the one
/// imported with a suite's data (an error saying how to add it when there is none).
pub fn run_tokenizer(run_dir: &Path) -> Result<GlassTokenizer> {
    if !glass_data::external::is_external(run_dir) {
        return Ok(glass_run::run_tokenizer(run_dir)?);
    }
    TrainingRows::open(run_dir)?.tokenizer()?.ok_or_else(|| {
        AnalysisError::Input(format!(
            "{} reads a suite's data in place and has no tokenizer ({} is missing): import the data again into a new run directory with `--tokenizer FILE` (Pythia and OLMo: EleutherAI's 20B_tokenizer.json)",
            run_dir.display(),
            run_dir.join("data/tokenizer.json").display()
        ))
    })
}

/// Traces `ids` (the tokens of `text`) through the index.
pub fn trace(
    run_dir: &Path,
    index: &Index,
    tok: &GlassTokenizer,
    text: &str,
    ids: &[u32],
    opts: &TraceOptions,
) -> Result<TraceReport> {
    if ids.is_empty() {
        return Err(AnalysisError::Input(
            "the text has no tokens to trace".into(),
        ));
    }
    let boundary = word_boundaries(tok, ids)?;
    let spans = maximal_spans(index, ids, &boundary, opts.min_tokens)?;
    let total: u64 = index.shards.iter().map(|s| s.len()).sum();
    let mut unigram: HashMap<u32, f64> = HashMap::new();
    let mut ctx = Context::new(run_dir, index)?;
    let mut out = Vec::new();
    for (a, b) in spans {
        let q = &ids[a..b];
        let occ = index.occurrences(q)?;
        let locs: Vec<_> = occ
            .iter()
            .map(|&(k, p)| (k, index.shards[k].locate(p, index.rows_per_step)))
            .collect();
        let mut lp = 0.0;
        for &t in q {
            let v = match unigram.get(&t) {
                Some(v) => *v,
                None => {
                    let v = unigram_logprob(index.count(&[t])?, total);
                    unigram.insert(t, v);
                    v
                }
            };
            lp += v;
        }
        let mut occurrences = Vec::new();
        for &(k, loc) in locs.iter().take(opts.max_occurrences) {
            occurrences.push(ctx.describe(index, tok, k, loc, q.len())?);
        }
        out.push(Span {
            text: tok.decode(q)?,
            tokens: q.to_vec(),
            start: a,
            end: b,
            count: locs.len() as u64,
            count_before_checkpoint: opts
                .checkpoint
                .map(|(_, s)| locs.iter().filter(|l| l.1.step < s).count() as u64),
            validation_count: index.count_validation(q)?,
            first_step: locs.first().map_or(0, |l| l.1.step),
            last_step: locs.last().map_or(0, |l| l.1.step),
            unigram_logprob: lp,
            occurrences,
        });
    }
    match opts.rank {
        Rank::Length => out.sort_by(|x, y| {
            (y.end - y.start)
                .cmp(&(x.end - x.start))
                .then(x.start.cmp(&y.start))
        }),
        Rank::Unigram => out.sort_by(|x, y| {
            x.unigram_logprob
                .total_cmp(&y.unigram_logprob)
                .then(x.start.cmp(&y.start))
        }),
    }
    Ok(TraceReport {
        text: text.to_string(),
        tokens: ids.to_vec(),
        checkpoint: opts.checkpoint.map(|c| c.0),
        checkpoint_step: opts.checkpoint.map(|c| c.1),
        min_tokens: opts.min_tokens,
        rank: opts.rank,
        spans: out,
    })
}

/// Lazily opened segments and document tables, for describing occurrences.
struct Context {
    data: Option<PreparedData>,
    /// External data (no segments or document tables: rows describe themselves).
    rows: Option<TrainingRows>,
    run_dir: PathBuf,
    names: Vec<String>,
    segments: HashMap<usize, Vec<Segment>>,
    views: HashMap<u32, SourceView>,
}

impl Context {
    fn new(run_dir: &Path, index: &Index) -> Result<Self> {
        let Some(m) = &index.data.manifest else {
            return Ok(Context {
                data: None,
                rows: Some(TrainingRows::open(run_dir)?),
                run_dir: run_dir.to_path_buf(),
                names: vec![],
                segments: HashMap::new(),
                views: HashMap::new(),
            });
        };
        Ok(Context {
            data: Some(PreparedData::open(run_dir)?),
            rows: None,
            run_dir: run_dir.to_path_buf(),
            names: m.config.sources.iter().map(|s| s.name.clone()).collect(),
            segments: HashMap::new(),
            views: HashMap::new(),
        })
    }

    fn describe(
        &mut self,
        index: &Index,
        tok: &GlassTokenizer,
        shard: usize,
        loc: crate::query::Location,
        len: usize,
    ) -> Result<Occurrence> {
        let rec = &index.shards[shard].rec;
        if let Some(rows) = &self.rows {
            return describe_row(rows, tok, rec.chunk.unwrap_or(0), loc, len);
        }
        let data = self.data.as_ref().expect("prepared data");
        let chunks_dir = data.manifest().chunk_dir(&self.run_dir, &rec.name);
        if let std::collections::hash_map::Entry::Vacant(e) = self.segments.entry(shard) {
            let root = data
                .manifest()
                .root_of(&self.run_dir, &format!("chunks/{}.json", rec.name));
            let h = read_header(&root, &chunks_dir, &rec.name)?;
            e.insert(read_segments(&root, &chunks_dir, &h)?);
        }
        let segs = &self.segments[&shard];
        let (r, off) = (loc.row_in_chunk as u32, loc.offset as u32);
        let end = off + len as u32;
        // Segments are sorted by (row, pos) and tile each row: the first one that
        // overlaps the match and holds document text.
        let first = segs.partition_point(|s| (s.row, s.pos + s.len) <= (r, off));
        let seg = segs[first..]
            .iter()
            .take_while(|s| s.row == r && s.pos < end)
            .find(|s| s.kind == SegmentKind::Text)
            .or_else(|| segs.get(first))
            .copied()
            .ok_or_else(|| AnalysisError::Format {
                path: chunks_dir.join(format!("{}.segments", rec.name)),
                msg: format!("no segment covers row {r} position {off}"),
            })?;
        let name = self
            .names
            .get(seg.source as usize)
            .cloned()
            .unwrap_or_default();
        let mut o = Occurrence {
            step: loc.step,
            slot: loc.slot,
            row: loc.row,
            offset: loc.offset,
            chunk: rec.chunk.unwrap_or(0),
            source: name.clone(),
            doc: seg.doc,
            doc_id: String::new(),
            doc_bytes: [0, 0],
            doc_tokens: [0, 0],
            before: String::new(),
            text: String::new(),
            after: String::new(),
        };
        if seg.kind != SegmentKind::Text {
            return Ok(o);
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.views.entry(seg.source) {
            e.insert(data.source_view(&name)?);
        }
        let view = &self.views[&seg.source];
        let (path, line) = view.doc_id(seg.doc)?;
        o.doc_id = if line == 0 {
            path
        } else {
            format!("{path}:{line}")
        };
        let a = off.max(seg.pos);
        let b = end.min(seg.pos + seg.len);
        let t0 = seg.doc_tok + (a - seg.pos) as u64;
        let t1 = t0 + (b - a) as u64;
        let doc_len = view.doc_len(seg.doc) as u64;
        let get = |x: u64, y: u64| -> Result<String> {
            let mut v = Vec::new();
            view.doc_tokens(seg.doc, x as u32, (y - x) as u32, &mut v);
            Ok(tok.decode(&v)?)
        };
        // Byte offsets: decoded length of the document's token prefix (byte-level BPE
        // decodes every prefix to the document's own bytes).
        let pre = get(0, t0)?.len() as u64;
        o.text = get(t0, t1)?;
        o.doc_bytes = [pre, pre + o.text.len() as u64];
        o.doc_tokens = [t0, t1];
        let before = get(t0.saturating_sub(40), t0)?;
        let after = get(t1, (t1 + 40).min(doc_len))?;
        o.before = last_chars(&before, 50);
        o.after = after.chars().take(50).collect();
        Ok(o)
    }
}

/// An occurrence in a row of external data: what the row's format tells of where it
/// came from, and the text around the match decoded from the row.
fn describe_row(
    rows: &TrainingRows,
    tok: &GlassTokenizer,
    chunk: u64,
    loc: crate::query::Location,
    len: usize,
) -> Result<Occurrence> {
    let row = rows.row(loc.step, loc.slot)?;
    let o = row.origin;
    let a = (loc.offset as usize).min(row.ids.len());
    let b = (a + len).min(row.ids.len());
    let before = tok.decode(&row.ids[a.saturating_sub(40)..a])?;
    let after = tok.decode(&row.ids[b..(b + 40).min(row.ids.len())])?;
    Ok(Occurrence {
        step: loc.step,
        slot: loc.slot,
        row: loc.row,
        offset: loc.offset,
        chunk,
        source: o.source,
        doc: o.doc,
        doc_id: match (o.within_file, o.byte) {
            (Some(w), _) => format!("{}:{w}", o.file),
            (None, Some(byte)) => format!("{}@{byte}", o.file),
            (None, None) => o.file,
        },
        doc_bytes: [0, 0],
        doc_tokens: [a as u64, b as u64],
        before: last_chars(&before, 50),
        text: tok.decode(&row.ids[a..b])?,
        after: after.chars().take(50).collect(),
    })
}

fn last_chars(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    c[c.len().saturating_sub(n)..].iter().collect()
}

#[cfg(test)]
mod tests {
    /// Shares where glibc's `log` (what `f64::ln` calls on Linux, its code path chosen by
    /// CPU) and musl's differ in the last bit: the published log-probability is musl's,
    /// the contract's.
    #[test]
    fn unigram_logprob_uses_the_contract_ln() {
        for count in [33u64, 245, 251, 417, 435, 464, 538, 832] {
            let want = libm::log(count as f64 / 1_234_567.0);
            assert_eq!(
                super::unigram_logprob(count, 1_234_567).to_bits(),
                want.to_bits(),
                "{count}"
            );
        }
        assert_eq!(super::unigram_logprob(0, 0), f64::NEG_INFINITY);
    }
}
