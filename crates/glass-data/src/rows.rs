//! A run's training rows, whatever holds them: the packed chunks of a prepared run
//! (`RUN/data/chunks`) or the data of an imported suite read in place
//! (`glass-external-data-v1`, [`crate::external`]). Analyses that read training rows
//! (memorization, the index, tracing) go through [`TrainingRows`], so they run on both
//! the same way.
//!
//! Rows are numbered globally in training order: row `g` is slot `g mod B` of step
//! `⌊g / B⌋`, `B` rows per step. Rows are grouped into chunks: a prepared run's chunk
//! files, or, for external data, blocks of [`EXTERNAL_STEPS_PER_CHUNK`] steps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::{chunk_stem, read_header, read_rows, read_segments, ChunkHeader};
use crate::error::{DataError, Result};
use crate::external::{ExternalData, ExternalRow};
use crate::manifest::MANIFEST_FILE;
use crate::pack::SegmentKind;
use crate::tokenizer::GlassTokenizer;

/// Steps per chunk of an external-data run: Pythia and OLMo publish a checkpoint every
/// 1000 steps, so chunk `C` is what the model trained on between the checkpoints of steps
/// `1000·C` and `1000·(C+1)`.
pub const EXTERNAL_STEPS_PER_CHUNK: u64 = 1000;

/// A group of consecutive steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowChunk {
    /// Chunk index.
    pub index: u64,
    /// First step.
    pub first_step: u64,
    /// Steps.
    pub n_steps: u64,
    /// First global row.
    pub first_row: u64,
    /// Rows.
    pub n_rows: u64,
}

/// Where a row came from, as far as its format tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowOrigin {
    /// Training step.
    pub step: u64,
    /// Row within the step's global batch.
    pub slot: u64,
    /// Global row.
    pub row: u64,
    /// Source name: a prepared run's source of the row's first document; OLMo: the data
    /// file's `data.datasets` label, else the suite; CrystalCoder: the stage; Pythia: the
    /// suite.
    pub source: String,
    /// The file the row's first token is read from.
    pub file: String,
    /// Document (prepared run: within its source), idx entry (Pythia) or instance
    /// (OLMo) of the row's first token.
    pub doc: u64,
    /// OLMo: the chunk within the file; CrystalCoder: the row within the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_file: Option<u64>,
    /// Byte offset of the row's first token in `file` (external data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte: Option<u64>,
}

/// One row: its token ids and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Token ids (`row_len` of them).
    pub ids: Vec<u32>,
    /// Provenance.
    pub origin: RowOrigin,
}

struct NativeChunk {
    root: PathBuf,
    dir: PathBuf,
    header: ChunkHeader,
}

enum Source {
    Native {
        manifest: Box<crate::Manifest>,
        chunks: Vec<NativeChunk>,
    },
    External(Box<ExternalData>),
}

/// The training rows of a run (see the module docs).
pub struct TrainingRows {
    run_dir: PathBuf,
    source: Source,
    n_steps: u64,
    rows_per_step: u64,
    row_len: usize,
}

impl TrainingRows {
    /// Opens the rows of `run_dir`: its prepared chunks, or its external data (whose
    /// files' lengths are checked, nothing hashed).
    pub fn open(run_dir: &Path) -> Result<Self> {
        let p = run_dir.join("data").join(MANIFEST_FILE);
        if !p.exists() {
            return Err(DataError::Format(format!(
                "{} has no training data ({} is missing): prepare it with `glass data prepare {}` or import a suite's data with `glass import pythia|olmo|crystalcoder`",
                run_dir.display(),
                p.display(),
                run_dir.display()
            )));
        }
        if crate::external::is_external(run_dir) {
            let x = ExternalData::open(run_dir)?;
            let m = x.manifest();
            let row_len = usize::try_from(m.row_len)
                .map_err(|_| DataError::Format(format!("{}: row_len too large", p.display())))?;
            return Ok(TrainingRows {
                run_dir: run_dir.to_path_buf(),
                n_steps: m.n_steps,
                rows_per_step: m.rows_per_step,
                row_len,
                source: Source::External(Box::new(x)),
            });
        }
        let m = crate::Manifest::load(run_dir)?;
        let mut chunks = Vec::with_capacity(m.chunks.len());
        for c in &m.chunks {
            let stem = chunk_stem(c.index);
            let dir = m.chunk_dir(run_dir, &stem);
            let root = m.root_of(run_dir, &format!("chunks/{stem}.json"));
            let header = read_header(&root, &dir, &stem)?;
            chunks.push(NativeChunk { root, dir, header });
        }
        Ok(TrainingRows {
            run_dir: run_dir.to_path_buf(),
            n_steps: m.n_steps,
            rows_per_step: m.config.rows_per_step as u64,
            row_len: m.row_len,
            source: Source::Native {
                manifest: Box::new(m),
                chunks,
            },
        })
    }

    /// Whether the rows are external data read in place.
    pub fn is_external(&self) -> bool {
        matches!(self.source, Source::External(_))
    }

    /// The suite of external data (`pythia`, `olmo`, `crystalcoder`); `None` for a
    /// prepared run.
    pub fn suite(&self) -> Option<&str> {
        match &self.source {
            Source::External(x) => Some(&x.manifest().suite),
            Source::Native { .. } => None,
        }
    }

    /// The prepared data's manifest (`None` for external data).
    pub fn prepared(&self) -> Option<&crate::Manifest> {
        match &self.source {
            Source::Native { manifest, .. } => Some(manifest),
            Source::External(_) => None,
        }
    }

    /// The external data (`None` for a prepared run).
    pub fn external(&self) -> Option<&ExternalData> {
        match &self.source {
            Source::External(x) => Some(x),
            Source::Native { .. } => None,
        }
    }

    /// Training steps the data holds.
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// Rows per step (the global batch).
    pub fn rows_per_step(&self) -> u64 {
        self.rows_per_step
    }

    /// Tokens per row (Pythia: `seq_len + 1`; OLMo and CrystalCoder: `seq_len`; a
    /// prepared run: `seq_len + 1`).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Training rows in all.
    pub fn n_rows(&self) -> u64 {
        match &self.source {
            Source::Native { chunks, .. } => chunks.iter().map(|c| c.header.n_rows).sum(),
            Source::External(_) => self.n_steps * self.rows_per_step,
        }
    }

    /// The chunks, in training order.
    pub fn chunks(&self) -> Vec<RowChunk> {
        match &self.source {
            Source::Native { chunks, .. } => chunks
                .iter()
                .filter_map(|c| {
                    let h = &c.header;
                    Some(RowChunk {
                        index: h.chunk?,
                        first_step: h.first_step,
                        n_steps: h.n_steps,
                        first_row: h.first_row,
                        n_rows: h.n_rows,
                    })
                })
                .collect(),
            Source::External(_) => {
                let per = EXTERNAL_STEPS_PER_CHUNK;
                (0..self.n_steps.div_ceil(per))
                    .map(|c| {
                        let first_step = c * per;
                        let n_steps = per.min(self.n_steps - first_step);
                        RowChunk {
                            index: c,
                            first_step,
                            n_steps,
                            first_row: first_step * self.rows_per_step,
                            n_rows: n_steps * self.rows_per_step,
                        }
                    })
                    .collect()
            }
        }
    }

    /// A hex sha256 that changes whenever the rows may: a prepared chunk's token-file
    /// hash; for external data, the data manifest with its deferred hashes left out (so
    /// `glass data verify` recording them changes nothing) and the chunk's step range.
    pub fn chunk_pin(&self, c: &RowChunk) -> Result<String> {
        match &self.source {
            Source::Native { chunks, .. } => chunks
                .iter()
                .find(|x| x.header.chunk == Some(c.index))
                .map(|x| x.header.tokens.sha256.clone())
                .ok_or_else(|| DataError::Range(format!("no chunk {}", c.index))),
            Source::External(x) => {
                let mut m = x.manifest().clone();
                clear_hashes(&mut m);
                let v = serde_json::json!({
                    "data": m,
                    "chunk": c,
                });
                Ok(glass_io::atomic::sha256_hex(
                    &serde_json::to_vec(&v).expect("json"),
                ))
            }
        }
    }

    fn check_row(&self, global: u64) -> Result<()> {
        let n = self.n_rows();
        if global >= n {
            return Err(DataError::Range(format!(
                "row {global} is past the last row ({n} rows: {} steps of {})",
                self.n_steps, self.rows_per_step
            )));
        }
        Ok(())
    }

    fn native_chunk(&self, global: u64) -> Result<&NativeChunk> {
        let Source::Native { chunks, .. } = &self.source else {
            unreachable!("native only")
        };
        chunks
            .iter()
            .find(|c| (c.header.first_row..c.header.first_row + c.header.n_rows).contains(&global))
            .ok_or_else(|| DataError::Range(format!("no chunk holds row {global}")))
    }

    /// Appends the tokens of global rows `[first, first + n)` to `out` (`n · row_len`
    /// ids). External data is read one step at a time.
    pub fn read_range(&self, first: u64, n: u64, out: &mut Vec<u32>) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let end = first
            .checked_add(n)
            .ok_or_else(|| DataError::Range(format!("rows {first} + {n} are past the data")))?;
        self.check_row(first)?;
        self.check_row(end - 1)?;
        let b = self.rows_per_step;
        let mut g = first;
        while g < end {
            match &self.source {
                Source::Native { .. } => {
                    let c = self.native_chunk(g)?;
                    let h = &c.header;
                    let take = (h.first_row + h.n_rows).min(end) - g;
                    read_rows(&c.root, &c.dir, h, g - h.first_row, take, out)?;
                    g += take;
                }
                Source::External(x) => {
                    let step = g / b;
                    let lo = g % b;
                    let hi = b.min(lo + (end - g));
                    if lo == 0 && hi == b {
                        for (_, r) in x.rows(step, 0, 1)? {
                            out.extend_from_slice(&r.ids);
                        }
                    } else {
                        for slot in lo..hi {
                            out.extend_from_slice(&self.external_row(x, step, slot)?.ids);
                        }
                    }
                    g += hi - lo;
                }
            }
        }
        Ok(())
    }

    fn external_row(&self, x: &ExternalData, step: u64, slot: u64) -> Result<ExternalRow> {
        let b = self.rows_per_step as usize;
        let mut v = x.rows(step, slot as usize, b)?;
        match v.pop() {
            Some((s, r)) if s as u64 == slot && v.is_empty() => Ok(r),
            _ => Err(DataError::Range(format!(
                "step {step} slot {slot}: the data gave no single row"
            ))),
        }
    }

    /// Row `slot` of step `step`, with its provenance.
    pub fn row(&self, step: u64, slot: u64) -> Result<Row> {
        if slot >= self.rows_per_step {
            return Err(DataError::Range(format!(
                "slot {slot}: a step holds {} rows",
                self.rows_per_step
            )));
        }
        let global = step
            .checked_mul(self.rows_per_step)
            .and_then(|g| g.checked_add(slot))
            .ok_or_else(|| DataError::Range(format!("step {step} is past the data")))?;
        self.check_row(global)?;
        match &self.source {
            Source::Native { manifest, .. } => {
                let c = self.native_chunk(global)?;
                let h = &c.header;
                let r = global - h.first_row;
                let mut ids = Vec::with_capacity(self.row_len);
                read_rows(&c.root, &c.dir, h, r, 1, &mut ids)?;
                let segs = read_segments(&c.root, &c.dir, h)?;
                let seg = segs
                    .iter()
                    .filter(|s| s.row as u64 == r)
                    .find(|s| s.kind == SegmentKind::Text)
                    .or_else(|| segs.iter().find(|s| s.row as u64 == r));
                let source = seg
                    .and_then(|s| manifest.config.sources.get(s.source as usize))
                    .map_or(String::new(), |s| s.name.clone());
                Ok(Row {
                    ids,
                    origin: RowOrigin {
                        step,
                        slot,
                        row: global,
                        source,
                        file: c.dir.join(&h.tokens.file).display().to_string(),
                        doc: seg.map_or(0, |s| s.doc),
                        within_file: Some(r),
                        byte: None,
                    },
                })
            }
            Source::External(x) => {
                let r = self.external_row(x, step, slot)?;
                let suite = &x.manifest().suite;
                Ok(Row {
                    origin: RowOrigin {
                        step,
                        slot,
                        row: global,
                        source: r.label.clone().unwrap_or_else(|| suite.clone()),
                        file: r.file,
                        doc: r.sequence,
                        within_file: r.chunk.or(r.row),
                        // HDF5 rows are chunked and filtered: no byte offset.
                        byte: r.row.is_none().then_some(r.byte),
                    },
                    ids: r.ids,
                })
            }
        }
    }

    /// The tokenizer the rows were made with: a prepared run's, or the one copied into an
    /// external run at import (`None` when none was given; import again with
    /// `--tokenizer`). Its end-of-text token is `<|endoftext|>`, else `</s>`, else the
    /// first special token.
    pub fn tokenizer(&self) -> Result<Option<GlassTokenizer>> {
        match &self.source {
            Source::Native { .. } => {
                let data = crate::PreparedData::open(&self.run_dir)?;
                Ok(Some(data.tokenizer()?))
            }
            Source::External(x) => {
                let Some(t) = &x.manifest().tokenizer else {
                    return Ok(None);
                };
                // Checks the copy's hash and parses it.
                let Some(hf) = x.tokenizer()? else {
                    return Ok(None);
                };
                let p = self.run_dir.join("data").join(&t.file);
                let bytes = glass_io::open::read_beneath(
                    &self.run_dir,
                    &p,
                    glass_io::open::MAX_RECORD_BYTES,
                )?;
                let vocab = hf.get_vocab(true);
                let eos = ["<|endoftext|>", "</s>", "<eos>"]
                    .into_iter()
                    .map(String::from)
                    .find(|s| vocab.contains_key(s))
                    .or_else(|| {
                        let mut specials: Vec<(u32, String)> = hf
                            .get_added_tokens_decoder()
                            .into_iter()
                            .filter(|(_, a)| a.special)
                            .map(|(i, a)| (i, a.content))
                            .collect();
                        specials.sort();
                        specials.into_iter().next().map(|s| s.1)
                    })
                    .ok_or_else(|| {
                        DataError::Tokenizer(format!(
                            "{}: no end-of-text token (<|endoftext|> or </s>)",
                            p.display()
                        ))
                    })?;
                let mut cfg: crate::config::TokenizerConfig =
                    serde_json::from_str("{}").expect("defaults");
                cfg.eos = eos;
                GlassTokenizer::from_json(&bytes, &cfg)
                    .map(Some)
                    .map_err(|e| match e {
                        DataError::Tokenizer(m) => {
                            DataError::Tokenizer(format!("{}: {m}", p.display()))
                        }
                        other => other,
                    })
            }
        }
    }
}

fn clear_hashes(m: &mut crate::external::ExternalManifest) {
    use crate::external::ExternalLayout;
    let clear = |f: &mut crate::external::ExternalFile| f.sha256 = None;
    match &mut m.layout {
        ExternalLayout::Megatron { index, pieces } => {
            clear(index);
            pieces.iter_mut().for_each(clear);
        }
        ExternalLayout::Olmo {
            config,
            files,
            global_indices,
            ..
        } => {
            clear(config);
            files.iter_mut().for_each(clear);
            clear(global_indices);
        }
        ExternalLayout::Hdf5 { stages, .. } => stages.iter_mut().flatten().for_each(clear),
    }
}
