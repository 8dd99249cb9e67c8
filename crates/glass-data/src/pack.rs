//! Packing documents into rows in training order.
//!
//! Each source is one endless stream: its documents in a seeded shuffle per epoch (a fresh
//! shuffle each time the source runs out), each framed as `[BOS] body [EOS]`, where the
//! body is either the document or its fill-in-the-middle rearrangement, cut into rows of
//! `seq_len + 1` tokens. Each row of a stage takes the next row of the source the
//! [`Blend`] picks, and rows are shuffled within each chunk∩stage window by a keyed
//! permutation. Every choice comes from [`crate::order`], so the whole stream is a pure
//! function of the config, the seed and the tokenized sources.

use serde::{Deserialize, Serialize};

use crate::config::DataConfig;
use crate::order::{hash_words, mix, permute, str_key, unit_f64, Blend, Plan};
use crate::store::SourceView;
use crate::tokenizer::SpecialIds;

/// Bytes per [`Segment`] record on disk.
pub const SEGMENT_BYTES: usize = 40;

/// What a segment of a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u32)]
pub enum SegmentKind {
    /// Tokens `[doc_tok, doc_tok + len)` of the document.
    Text = 0,
    /// The BOS token before the document.
    Bos = 1,
    /// The EOS token after the document.
    Eos = 2,
    /// FIM prefix sentinel.
    FimPrefix = 3,
    /// FIM middle sentinel.
    FimMiddle = 4,
    /// FIM suffix sentinel.
    FimSuffix = 5,
}

impl SegmentKind {
    /// Parses the on-disk code.
    pub fn from_code(c: u32) -> Option<Self> {
        Some(match c {
            0 => Self::Text,
            1 => Self::Bos,
            2 => Self::Eos,
            3 => Self::FimPrefix,
            4 => Self::FimMiddle,
            5 => Self::FimSuffix,
            _ => return None,
        })
    }
}

/// One run of consecutive tokens of a row that come from one place (40 bytes on disk,
/// little-endian: `row, pos, len, kind, source, epoch` as u32, then `doc, doc_tok` as u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Row index within the chunk.
    pub row: u32,
    /// First position within the row.
    pub pos: u32,
    /// Number of tokens.
    pub len: u32,
    /// Document text or which special token.
    pub kind: SegmentKind,
    /// Source index in the config.
    pub source: u32,
    /// Epoch of the source the document was drawn in.
    pub epoch: u32,
    /// Document index within the source (see the source's document table).
    pub doc: u64,
    /// Offset of the first token within the document's tokens (0 for special tokens).
    pub doc_tok: u64,
}

impl Segment {
    /// The on-disk bytes.
    pub fn to_bytes(&self) -> [u8; SEGMENT_BYTES] {
        let mut b = [0u8; SEGMENT_BYTES];
        for (i, v) in [
            self.row,
            self.pos,
            self.len,
            self.kind as u32,
            self.source,
            self.epoch,
        ]
        .iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[24..32].copy_from_slice(&self.doc.to_le_bytes());
        b[32..40].copy_from_slice(&self.doc_tok.to_le_bytes());
        b
    }

    /// Parses the on-disk bytes; `None` for an unknown kind code.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let u = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        Some(Self {
            row: u(0),
            pos: u(1),
            len: u(2),
            kind: SegmentKind::from_code(u(3))?,
            source: u(4),
            epoch: u(5),
            doc: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
            doc_tok: u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
        })
    }
}

/// Per-source numbers for one stage, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStageStats {
    /// Source name.
    pub source: String,
    /// Configured weight.
    pub weight: f64,
    /// Configured FIM rate.
    pub fim_rate: f64,
    /// Rows drawn from the source.
    pub rows: u64,
    /// Tokens in those rows (special tokens included).
    pub tokens: u64,
    /// Document tokens in those rows.
    pub doc_tokens: u64,
    /// Documents started in this stage.
    pub docs: u64,
    /// Of those, documents given the FIM transform.
    pub fim_docs: u64,
    /// Passes over the source completed by the end of the stage (fractional).
    pub epochs: f64,
}

/// Per-stage numbers, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// Stage name.
    pub name: String,
    /// First global step.
    pub first_step: u64,
    /// Steps.
    pub n_steps: u64,
    /// Rows.
    pub rows: u64,
    /// Tokens.
    pub tokens: u64,
    /// Per trained source, in config order.
    pub sources: Vec<SourceStageStats>,
}

#[derive(Debug, Clone, Copy)]
enum Piece {
    Special(SegmentKind, u32),
    Text { start: u32, len: u32 },
}

impl Piece {
    fn len(&self) -> u32 {
        match self {
            Piece::Special(..) => 1,
            Piece::Text { len, .. } => *len,
        }
    }
}

struct Current {
    doc: u64,
    epoch: u64,
    pieces: Vec<Piece>,
    piece: usize,
    off: u32,
}

/// How documents are framed.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// BOS id, when added.
    pub bos: Option<u32>,
    /// EOS id, when added.
    pub eos: Option<u32>,
    /// FIM sentinels `(prefix, middle, suffix)`, when present.
    pub fim: Option<(u32, u32, u32)>,
}

impl Framing {
    /// The framing a config and tokenizer give.
    pub fn new(cfg: &DataConfig, sp: SpecialIds) -> Self {
        let fim = match (sp.fim_prefix, sp.fim_middle, sp.fim_suffix) {
            (Some(p), Some(m), Some(s)) => Some((p, m, s)),
            _ => None,
        };
        Self {
            bos: if cfg.tokenizer.add_bos { sp.bos } else { None },
            eos: if cfg.tokenizer.add_eos {
                Some(sp.eos)
            } else {
                None
            },
            fim,
        }
    }
}

/// One source's endless stream of framed documents.
struct Stream<'a> {
    view: &'a SourceView,
    source: u32,
    key: u64,
    epoch: u64,
    pos: u64,
    cur: Option<Current>,
}

const FIM_TAG: u64 = 0x4649_4d00;
const ROWS_TAG: u64 = 0x524f_5753;
const DOCS_TAG: u64 = 0x444f_4353;

impl<'a> Stream<'a> {
    fn start_doc(&mut self, framing: &Framing, fim_rate: f64, st: &mut SourceStageStats) {
        let n = self.view.n_drawable();
        let doc = self.view.drawable(permute(
            self.pos,
            n,
            hash_words(&[self.key, DOCS_TAG, self.epoch]),
        ));
        // A document substring deduplication cut is framed as its remaining tokens.
        let len = self.view.kept_len(doc);
        let h = hash_words(&[self.key, FIM_TAG, self.epoch, doc]);
        let mut pieces = Vec::with_capacity(8);
        pieces.extend(framing.bos.map(|b| Piece::Special(SegmentKind::Bos, b)));
        match framing.fim {
            Some((p, m, s)) if fim_rate > 0.0 && unit_f64(h) < fim_rate => {
                let (mut a, mut b) = (
                    (mix(h ^ 1) % (len as u64 + 1)) as u32,
                    (mix(h ^ 2) % (len as u64 + 1)) as u32,
                );
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                pieces.push(Piece::Special(SegmentKind::FimPrefix, p));
                pieces.push(Piece::Text { start: 0, len: a });
                pieces.push(Piece::Special(SegmentKind::FimSuffix, s));
                pieces.push(Piece::Text {
                    start: b,
                    len: len - b,
                });
                pieces.push(Piece::Special(SegmentKind::FimMiddle, m));
                pieces.push(Piece::Text {
                    start: a,
                    len: b - a,
                });
                st.fim_docs += 1;
            }
            _ => pieces.push(Piece::Text { start: 0, len }),
        }
        pieces.extend(framing.eos.map(|e| Piece::Special(SegmentKind::Eos, e)));
        if self.view.is_cut(doc) {
            pieces = pieces
                .into_iter()
                .flat_map(|p| match p {
                    Piece::Text { start, len } => self
                        .view
                        .kept_ranges(doc, start, len)
                        .into_iter()
                        .map(|(start, len)| Piece::Text { start, len })
                        .collect(),
                    special => vec![special],
                })
                .collect();
        }
        pieces.retain(|p| p.len() > 0);
        st.docs += 1;
        self.cur = Some(Current {
            doc,
            epoch: self.epoch,
            pieces,
            piece: 0,
            off: 0,
        });
        self.pos += 1;
        if self.pos == n {
            self.pos = 0;
            self.epoch += 1;
        }
    }

    /// Fills `out` (one row) with the next tokens of the stream, recording segments.
    fn fill(
        &mut self,
        row: u32,
        (out, segs): &mut (Vec<u32>, Vec<Segment>),
        row_len: usize,
        framing: &Framing,
        fim_rate: f64,
        st: &mut SourceStageStats,
    ) {
        let mut filled = 0usize;
        while filled < row_len {
            if self.cur.is_none() {
                self.start_doc(framing, fim_rate, st);
            }
            let cur = self.cur.as_mut().expect("started");
            let piece = cur.pieces[cur.piece];
            let take = ((piece.len() - cur.off) as usize).min(row_len - filled) as u32;
            let (kind, doc_tok) = match piece {
                Piece::Special(kind, id) => {
                    out.push(id);
                    (kind, 0)
                }
                Piece::Text { start, .. } => {
                    self.view.doc_tokens(cur.doc, start + cur.off, take, out);
                    st.doc_tokens += take as u64;
                    (SegmentKind::Text, (start + cur.off) as u64)
                }
            };
            segs.push(Segment {
                row,
                pos: filled as u32,
                len: take,
                kind,
                source: self.source,
                epoch: cur.epoch as u32,
                doc: cur.doc,
                doc_tok,
            });
            filled += take as usize;
            cur.off += take;
            if cur.off == piece.len() {
                cur.off = 0;
                cur.piece += 1;
                if cur.piece == cur.pieces.len() {
                    self.cur = None;
                }
            }
        }
        st.rows += 1;
        st.tokens += row_len as u64;
    }

    fn epochs(&self) -> f64 {
        self.epoch as f64 + self.pos as f64 / self.view.n_drawable() as f64
    }
}

/// Rows of one chunk in training order, with their segments sorted by (row, pos).
#[derive(Debug, Default)]
pub struct ChunkRows {
    /// `n_rows * row_len` token ids.
    pub tokens: Vec<u32>,
    /// Segments of all rows.
    pub segments: Vec<Segment>,
    /// Rows in the chunk.
    pub n_rows: u64,
}

/// Generates the chunks of a run in order, carrying every source's stream state across
/// chunks and stages.
pub struct Packer<'a> {
    plan: Plan,
    seed: u64,
    framing: Framing,
    streams: Vec<Option<Stream<'a>>>,
    weights: Vec<Vec<f64>>,
    fim: Vec<Vec<f64>>,
    blends: Vec<Option<Blend>>,
    stats: Vec<StageStats>,
    next_chunk: u64,
}

impl<'a> Packer<'a> {
    /// A packer over `views` (indexed like `cfg.sources`; `None` for untrained sources).
    pub fn new(cfg: &DataConfig, framing: Framing, views: &'a [Option<SourceView>]) -> Self {
        let plan = Plan::new(cfg);
        let streams = views
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_ref().map(|view| Stream {
                    view,
                    source: i as u32,
                    key: hash_words(&[cfg.seed, str_key(&cfg.sources[i].name)]),
                    epoch: 0,
                    pos: 0,
                    cur: None,
                })
            })
            .collect();
        let per_source = |m: &std::collections::BTreeMap<String, f64>| -> Vec<f64> {
            cfg.sources
                .iter()
                .map(|s| m.get(&s.name).copied().unwrap_or(0.0))
                .collect()
        };
        let weights: Vec<Vec<f64>> = cfg.stages.iter().map(|s| per_source(&s.weights)).collect();
        let fim: Vec<Vec<f64>> = cfg.stages.iter().map(|s| per_source(&s.fim_rate)).collect();
        let stats = plan
            .stages
            .iter()
            .enumerate()
            .map(|(k, sp)| StageStats {
                name: sp.name.clone(),
                first_step: sp.first_step,
                n_steps: sp.n_steps,
                rows: 0,
                tokens: 0,
                sources: cfg
                    .sources
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| weights[k][*i] > 0.0)
                    .map(|(i, s)| SourceStageStats {
                        source: s.name.clone(),
                        weight: weights[k][i],
                        fim_rate: fim[k][i],
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        let blends = vec![None; cfg.stages.len()];
        Self {
            plan,
            seed: cfg.seed,
            framing,
            streams,
            weights,
            fim,
            blends,
            stats,
            next_chunk: 0,
        }
    }

    /// From `from_step` on (a chunk boundary not yet packed), draw with the stage weights
    /// and FIM rates of `cfg` instead: a branch that re-weights or drops sources for the
    /// remaining stream. A stage whose weights change draws from a fresh [`Blend`]
    /// starting at `from_step` (so the rest of it matches the new weights within one row);
    /// the streams continue where they were. `cfg` must have the same sources and stages
    /// (names, tokens) as the packer's config.
    pub fn reweight(&mut self, cfg: &DataConfig, from_step: u64) {
        let per_source = |m: &std::collections::BTreeMap<String, f64>| -> Vec<f64> {
            cfg.sources
                .iter()
                .map(|s| m.get(&s.name).copied().unwrap_or(0.0))
                .collect()
        };
        for k in self.plan.stage_of(from_step)..self.plan.stages.len() {
            if self.plan.stages[k].first_step + self.plan.stages[k].n_steps <= from_step {
                continue;
            }
            let (w, f) = (
                per_source(&cfg.stages[k].weights),
                per_source(&cfg.stages[k].fim_rate),
            );
            if w == self.weights[k] && f == self.fim[k] {
                continue;
            }
            self.weights[k] = w;
            self.fim[k] = f;
            self.blends[k] = None;
            let stats = &mut self.stats[k].sources;
            for (i, src) in cfg.sources.iter().enumerate() {
                match stats.iter_mut().find(|t| t.source == src.name) {
                    Some(t) => {
                        t.weight = self.weights[k][i];
                        t.fim_rate = self.fim[k][i];
                    }
                    None if self.weights[k][i] > 0.0 => stats.push(SourceStageStats {
                        source: src.name.clone(),
                        weight: self.weights[k][i],
                        fim_rate: self.fim[k][i],
                        ..Default::default()
                    }),
                    None => {}
                }
            }
            stats.sort_by_key(|t| cfg.source_index(&t.source));
        }
    }

    /// The plan being packed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Generates the next chunk (chunks must be generated in order: the streams carry over).
    pub fn next_chunk(&mut self) -> ChunkRows {
        let c = self.next_chunk;
        self.next_chunk += 1;
        let (first, end) = self.plan.chunk_steps(c);
        let b = self.plan.rows_per_step;
        let row_len = self.plan.row_len;
        let n_rows = (end - first) * b;
        let mut rows: Vec<(Vec<u32>, Vec<Segment>)> =
            vec![(Vec::new(), Vec::new()); n_rows as usize];
        for (k, x, y) in self.plan.windows(c) {
            let blend = self.blends[k].get_or_insert_with(|| Blend::new(self.weights[k].clone()));
            let m = (y - x) * b;
            let base = (x - first) * b;
            let key = hash_words(&[self.seed, ROWS_TAG, x]);
            for j in 0..m {
                let s = blend.next_source();
                let slot = (base + permute(j, m, key)) as usize;
                let stream = self.streams[s]
                    .as_mut()
                    .expect("weighted sources have views");
                let st_idx = self.stats[k]
                    .sources
                    .iter()
                    .position(|t| t.source == stream.view.name)
                    .expect("stats entry");
                let st = &mut self.stats[k].sources[st_idx];
                stream.fill(
                    slot as u32,
                    &mut rows[slot],
                    row_len,
                    &self.framing,
                    self.fim[k][s],
                    st,
                );
                self.stats[k].rows += 1;
                self.stats[k].tokens += row_len as u64;
            }
            if y == self.plan.stages[k].first_step + self.plan.stages[k].n_steps {
                for t in &mut self.stats[k].sources {
                    let s = self
                        .streams
                        .iter()
                        .flatten()
                        .find(|s| s.view.name == t.source)
                        .expect("stream");
                    t.epochs = s.epochs();
                }
            }
        }
        let mut out = ChunkRows {
            tokens: Vec::with_capacity(n_rows as usize * row_len),
            segments: Vec::new(),
            n_rows,
        };
        for (tok, segs) in rows {
            out.tokens.extend_from_slice(&tok);
            out.segments.extend_from_slice(&segs);
        }
        out
    }

    /// Per-stage statistics so far (complete once every chunk has been generated).
    pub fn stats(&self) -> &[StageStats] {
        &self.stats
    }
}

/// Packs validation rows: the documents of `views` in order (no shuffle, no FIM), framed
/// like training documents; only complete rows are kept, at most `max_rows`.
pub fn pack_validation(
    views: &[(u32, &SourceView)],
    framing: &Framing,
    row_len: usize,
    max_rows: u64,
) -> ChunkRows {
    let mut out = ChunkRows::default();
    let mut row: Vec<u32> = Vec::with_capacity(row_len);
    let mut segs: Vec<Segment> = Vec::new();
    let push = |kind: SegmentKind,
                source: u32,
                doc: u64,
                doc_tok: u64,
                toks: &[u32],
                out: &mut ChunkRows,
                row: &mut Vec<u32>,
                segs: &mut Vec<Segment>| {
        let mut i = 0;
        while i < toks.len() && out.n_rows < max_rows {
            let take = (row_len - row.len()).min(toks.len() - i);
            segs.push(Segment {
                row: out.n_rows as u32,
                pos: row.len() as u32,
                len: take as u32,
                kind,
                source,
                epoch: 0,
                doc,
                doc_tok: doc_tok + i as u64,
            });
            row.extend_from_slice(&toks[i..i + take]);
            i += take;
            if row.len() == row_len {
                out.tokens.append(row);
                out.segments.append(segs);
                out.n_rows += 1;
            }
        }
    };
    let mut buf = Vec::new();
    // Every document contributes at most an equal share (a prefix), so the rows cover
    // all held-out documents instead of only the first one.
    let total_docs: u64 = views.iter().map(|(_, v)| v.n_docs()).sum::<u64>().max(1);
    let share = (max_rows * row_len as u64).div_ceil(total_docs).max(1);
    'outer: for &(source, view) in views {
        for doc in 0..view.n_docs() {
            if out.n_rows >= max_rows {
                break 'outer;
            }
            if let Some(b) = framing.bos {
                push(
                    SegmentKind::Bos,
                    source,
                    doc,
                    0,
                    &[b],
                    &mut out,
                    &mut row,
                    &mut segs,
                );
            }
            buf.clear();
            let len = (view.doc_len(doc) as u64).min(share) as u32;
            let whole = len == view.doc_len(doc);
            view.doc_tokens(doc, 0, len, &mut buf);
            push(
                SegmentKind::Text,
                source,
                doc,
                0,
                &buf,
                &mut out,
                &mut row,
                &mut segs,
            );
            if let (Some(e), true) = (framing.eos, whole) {
                push(
                    SegmentKind::Eos,
                    source,
                    doc,
                    0,
                    &[e],
                    &mut out,
                    &mut row,
                    &mut segs,
                );
            }
        }
    }
    out
}
