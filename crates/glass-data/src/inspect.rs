//! Answers "which exact tokens, from which source and document, were in step N" and
//! "how much of each source went into each stage", from a prepared run.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::manifest::Manifest;
use crate::pack::SegmentKind;
use crate::reader::PreparedData;
use crate::store::SourceView;

/// One segment of a row, with the document's stable id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentView {
    /// Position of the first token in the row.
    pub pos: u32,
    /// Tokens.
    pub len: u32,
    /// `text`, `bos`, `eos`, `fim_prefix`, `fim_middle` or `fim_suffix`.
    pub kind: String,
    /// Source name.
    pub source: String,
    /// Document index within the source.
    pub doc: u64,
    /// Stable document id: input path, plus `:line` for JSONL.
    pub doc_id: String,
    /// JSONL id/metadata fields, when kept.
    pub meta: Option<serde_json::Value>,
    /// Source epoch the document was drawn in.
    pub epoch: u32,
    /// Offset of the first token within the document.
    pub doc_tok: u64,
}

/// One row of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowView {
    /// Global row index (`step * rows_per_step + slot`).
    pub row: u64,
    /// Index within the global batch.
    pub slot: usize,
    /// Source of the row (every row comes from one source).
    pub source: String,
    /// Tokens in the row (`seq_len + 1`).
    pub tokens: usize,
    /// Of which document tokens (the rest are special tokens).
    pub doc_tokens: usize,
    /// Documents touched.
    pub docs: usize,
    /// The token ids.
    pub ids: Vec<u32>,
    /// The decoded text.
    pub text: String,
    /// Segments in row order.
    pub segments: Vec<SegmentView>,
}

/// The rows a rank sees at one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchView {
    /// Step.
    pub step: u64,
    /// Stage name.
    pub stage: String,
    /// Rank.
    pub rank: usize,
    /// World size.
    pub world_size: usize,
    /// Rows, in order.
    pub rows: Vec<RowView>,
}

fn kind_name(k: SegmentKind) -> &'static str {
    match k {
        SegmentKind::Text => "text",
        SegmentKind::Bos => "bos",
        SegmentKind::Eos => "eos",
        SegmentKind::FimPrefix => "fim_prefix",
        SegmentKind::FimMiddle => "fim_middle",
        SegmentKind::FimSuffix => "fim_suffix",
    }
}

/// Every row `rank` of `world_size` trains on at `step`, with documents and decoded text.
pub fn show(run_dir: &Path, step: u64, rank: usize, world_size: usize) -> Result<BatchView> {
    if crate::external::is_external(run_dir) {
        return show_external(run_dir, step, rank, world_size);
    }
    let data = PreparedData::open(run_dir)?;
    let tok = data.tokenizer()?;
    let (a, b) = data.rank_rows(rank, world_size)?;
    let mut ids = Vec::new();
    data.rows(step, rank, world_size, &mut ids)?;
    let segs = data.batch_segments(step)?;
    let names: Vec<String> = data
        .manifest()
        .config
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let mut views: Vec<Option<SourceView>> = (0..names.len()).map(|_| None).collect();
    let row_len = data.row_len();
    let mut rows = Vec::new();
    for slot in a..b {
        let row_ids = ids[(slot - a) * row_len..(slot - a + 1) * row_len].to_vec();
        let mut segments = Vec::new();
        for s in &segs[slot] {
            let src = s.source as usize;
            if views[src].is_none() {
                views[src] = Some(data.source_view(&names[src])?);
            }
            let view = views[src].as_ref().expect("opened");
            let (path, line) = view.doc_id(s.doc)?;
            segments.push(SegmentView {
                pos: s.pos,
                len: s.len,
                kind: kind_name(s.kind).into(),
                source: names[src].clone(),
                doc: s.doc,
                doc_id: if line == 0 {
                    path
                } else {
                    format!("{path}:{line}")
                },
                meta: view.doc_meta(s.doc),
                epoch: s.epoch,
                doc_tok: s.doc_tok,
            });
        }
        let mut docs: Vec<(u64, &str)> = segments
            .iter()
            .map(|s| (s.doc, s.source.as_str()))
            .collect();
        docs.dedup();
        rows.push(RowView {
            row: step * data.rows_per_step() as u64 + slot as u64,
            slot,
            source: segments
                .first()
                .map(|s| s.source.clone())
                .unwrap_or_default(),
            tokens: row_ids.len(),
            doc_tokens: segments
                .iter()
                .filter(|s| s.kind == "text")
                .map(|s| s.len as usize)
                .sum(),
            docs: docs.len(),
            text: tok.decode(&row_ids)?,
            ids: row_ids,
            segments,
        });
    }
    Ok(BatchView {
        step,
        stage: data.stage_of(step).to_string(),
        rank,
        world_size,
        rows,
    })
}

/// Per-source, per-stage numbers of a prepared run: docs, tokens, epochs, share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// Stage name.
    pub stage: String,
    /// Source name.
    pub source: String,
    /// Documents started in the stage.
    pub docs: u64,
    /// Tokens (rows × row length).
    pub tokens: u64,
    /// Document tokens.
    pub doc_tokens: u64,
    /// FIM-transformed documents.
    pub fim_docs: u64,
    /// Passes over the source by the end of the stage.
    pub epochs: f64,
    /// Share of the stage's tokens.
    pub share: f64,
}

/// The stats table of a run, from its manifest.
pub fn stats(run_dir: &Path) -> Result<(Manifest, Vec<StatsRow>)> {
    let m = Manifest::load(run_dir)?;
    let mut rows = Vec::new();
    for st in &m.stages {
        for s in &st.sources {
            rows.push(StatsRow {
                stage: st.name.clone(),
                source: s.source.clone(),
                docs: s.docs,
                tokens: s.tokens,
                doc_tokens: s.doc_tokens,
                fim_docs: s.fim_docs,
                epochs: s.epochs,
                share: if st.tokens == 0 {
                    0.0
                } else {
                    s.tokens as f64 / st.tokens as f64
                },
            });
        }
    }
    Ok((m, rows))
}

/// [`show`] for a run over external data (`glass import pythia` / `olmo` / `crystalcoder`): each row is one
/// text segment whose `doc` is the sequence (Pythia: idx entry; OLMo: instance) and whose
/// `doc_id` names the file and byte offset; `meta` holds the same as fields.
fn show_external(run_dir: &Path, step: u64, rank: usize, world_size: usize) -> Result<BatchView> {
    let data = crate::external::ExternalData::open(run_dir)?;
    let tok = data.tokenizer()?;
    let m = data.manifest();
    let mut rows = Vec::new();
    for (slot, r) in data.rows(step, rank, world_size)? {
        let source = r.label.clone().unwrap_or_else(|| m.suite.clone());
        let text = match &tok {
            Some(t) => t
                .decode(&r.ids, false)
                .map_err(|e| crate::error::DataError::Tokenizer(e.to_string()))?,
            None => String::new(),
        };
        let doc_id = match (r.chunk, r.row) {
            (Some(c), _) => format!("{}:chunk {c} (byte {})", r.file, r.byte),
            (None, Some(row)) => format!("{}:row {row}", r.file),
            (None, None) => format!("{}:byte {}", r.file, r.byte),
        };
        let mut meta = serde_json::json!({
            "suite": m.suite, "sequence": r.sequence, "file": r.file, "byte": r.byte,
            "chunk": r.chunk, "label": r.label,
        });
        if let Some(row) = r.row {
            meta["row"] = row.into();
        }
        rows.push(RowView {
            row: step * m.rows_per_step + slot as u64,
            slot,
            source: source.clone(),
            tokens: r.ids.len(),
            doc_tokens: r.ids.len(),
            docs: 1,
            text,
            segments: vec![SegmentView {
                pos: 0,
                len: r.ids.len() as u32,
                kind: "text".into(),
                source,
                doc: r.sequence,
                doc_id,
                meta: Some(meta),
                epoch: 0,
                doc_tok: 0,
            }],
            ids: r.ids,
        });
    }
    // CrystalCoder's steps each lie in one training stage: name it.
    let stage = match (&m.layout, rows.first()) {
        (crate::external::ExternalLayout::Hdf5 { .. }, Some(r)) => r.source.clone(),
        _ => m.suite.clone(),
    };
    Ok(BatchView {
        step,
        stage,
        rank,
        world_size,
        rows,
    })
}
