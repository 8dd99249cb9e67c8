//! The `[data]` table of a run's `glass.toml`: everything the training order depends on.
//!
//! Every struct denies unknown keys, so a typo is an error naming the key rather than a
//! silently different dataset. Other top-level tables of the run config are ignored here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::embedded::EmbeddedSet;
use crate::error::{DataError, Result};

/// Name of the run config file inside a run directory.
pub const RUN_CONFIG_FILE: &str = "glass.toml";

/// The whole data configuration: seed, row geometry, tokenizer, sources and stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Seed of every random choice (document shuffles, row shuffles, FIM cuts).
    pub seed: u64,
    /// Tokens per training input; rows hold `seq_len + 1` tokens (inputs and shifted targets).
    pub seq_len: usize,
    /// Rows in one global batch (one optimizer step), for every world size.
    pub rows_per_step: usize,
    /// Steps per chunk file, equal to the checkpoint interval: chunk k is exactly the data
    /// between checkpoints k-1 and k.
    pub steps_per_chunk: u64,
    /// Token integer width on disk; `auto` picks u16 when the vocabulary fits.
    #[serde(default)]
    pub token_dtype: DtypeChoice,
    /// How the tokenizer is obtained and which special tokens frame documents.
    pub tokenizer: TokenizerConfig,
    /// Named inputs; documents get ids `(source, file, line)`.
    pub sources: Vec<SourceConfig>,
    /// Curriculum stages, trained in order.
    pub stages: Vec<StageConfig>,
    /// Held-out rows for validation loss, from sources no stage trains on.
    #[serde(default)]
    pub validation: Option<ValidationConfig>,
    /// Document deduplication before packing (absent: none). Written only when set, so
    /// configs without it keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupConfig>,
    /// Benchmark tasks, spelled as `glass eval --tasks` takes them (bundled task names,
    /// harness task YAML files relative to the run directory, or harness task/group
    /// names): training documents sharing a `decontaminate_ngram`-token window with any
    /// of their items are removed before packing. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decontaminate: Vec<String>,
    /// N-gram length of decontamination, in tokens (default 13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decontaminate_ngram: Option<usize>,
    /// Where the hub datasets of `decontaminate` tasks are (as `glass eval --data-dir`,
    /// relative to the run directory); the Hugging Face datasets cache is searched after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decontaminate_data_dir: Vec<PathBuf>,
    /// Documents of every source withheld from training for per-source held-out loss
    /// (absent: none). Written only when set, so configs without it keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout: Option<HeldoutConfig>,
}

/// `[data.heldout]`: up to `docs_per_source` documents of every source, chosen by a
/// pure function of `[data] seed` and each document's identity (`crate::heldout`), kept
/// out of the training stream and recorded with their text and tokens in
/// `RUN/data/heldout.json`, for `glass analyze dynamics`'s per-source loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldoutConfig {
    /// Documents withheld per source (fewer when a source has fewer candidates).
    pub docs_per_source: usize,
    /// Token cap per held-out document: each is scored on its longest prefix of whole
    /// lines of at most this many tokens (absent: the whole document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_doc_tokens: Option<usize>,
    /// Training sources documents are withheld from (default: every one). Validation
    /// sources always get documents chosen by the same rule (they are never trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
}

/// `[data.dedup]`: which duplicate documents are removed before packing. Decisions are a
/// pure function of the documents in recorded order (sources in config order, each
/// source's documents in store order) and of this table, never of threads or resumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Remove documents whose normalized text equals an earlier document's.
    #[serde(default = "default_true")]
    pub exact: bool,
    /// Remove near-duplicates: MinHash signatures whose LSH bands collide with an
    /// earlier document's (FineWeb/datatrove's method and defaults).
    #[serde(default = "default_true")]
    pub near: bool,
    /// Sources deduplicated together (default: every source a stage trains on).
    /// Validation sources are never deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Seed of the MinHash hash functions (default: `[data] seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Words per shingle.
    #[serde(default = "default_shingle_words")]
    pub shingle_words: usize,
    /// LSH bands; `bands * rows` hash functions in all.
    #[serde(default = "default_bands")]
    pub bands: usize,
    /// Hash functions per band: two documents collide in a band when all agree.
    #[serde(default = "default_band_rows")]
    pub rows: usize,
    /// Exact-substring deduplication: cut every span of at least this many tokens that
    /// occurred earlier in the recorded order (absent: off; 50 in the published method).
    /// Written only when set, so configs without it keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substring: Option<u32>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            exact: true,
            near: true,
            sources: None,
            seed: None,
            shingle_words: default_shingle_words(),
            bands: default_bands(),
            rows: default_band_rows(),
            substring: None,
        }
    }
}

fn default_shingle_words() -> usize {
    5
}
fn default_bands() -> usize {
    14
}
fn default_band_rows() -> usize {
    8
}

/// Most MinHash hash functions (`bands * rows`).
pub const MAX_DEDUP_HASHES: usize = 1024;

/// Largest `seq_len`.
pub const MAX_SEQ_LEN: u64 = 1 << 24;
/// Largest `rows_per_step`.
pub const MAX_ROWS_PER_STEP: u64 = 1 << 24;
/// Largest `steps_per_chunk`.
pub const MAX_STEPS_PER_CHUNK: u64 = 1 << 32;
/// Largest chunk, in tokens (a chunk is built in memory: 2^32 tokens is 16 GiB of u32).
pub const MAX_CHUNK_TOKENS: u64 = 1 << 32;
/// Largest run, in tokens over all stages (2^50 ≈ 10^15, ~100× the largest runs).
pub const MAX_RUN_TOKENS: u64 = 1 << 50;
/// Largest validation set, in rows.
pub const MAX_VALIDATION_ROWS: u64 = 1 << 24;

/// Token integer width requested in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtypeChoice {
    /// u16 when every id fits, else u32.
    #[default]
    Auto,
    /// Little-endian u16; the vocabulary must have at most 65,536 ids.
    U16,
    /// Little-endian u32.
    U32,
}

/// Tokenizer settings: either a `tokenizer.json` to load or a byte-level BPE to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// An existing HF `tokenizer.json` (relative to the run directory), e.g. LLaMA's.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Train a byte-level BPE of this many ids (special tokens included) on the sources.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Sources the BPE is trained on (default: every source some stage trains on).
    #[serde(default)]
    pub train_sources: Option<Vec<String>>,
    /// Minimum pair frequency for a BPE merge.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
    /// End-of-document token, appended after every document when `add_eos`.
    #[serde(default = "default_eos")]
    pub eos: String,
    /// Append `eos` after every document (Amber packs documents with EOS between them).
    #[serde(default = "default_true")]
    pub add_eos: bool,
    /// Beginning-of-document token, prepended when `add_bos`.
    #[serde(default)]
    pub bos: Option<String>,
    /// Prepend `bos` before every document.
    #[serde(default)]
    pub add_bos: bool,
    /// Fill-in-the-middle sentinels (added to the vocabulary when missing).
    #[serde(default)]
    pub fim: FimTokens,
}

/// The three fill-in-the-middle sentinel strings (StarCoder's PSM format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FimTokens {
    /// Precedes the prefix.
    pub prefix: String,
    /// Precedes the middle (the part the model learns to fill).
    pub middle: String,
    /// Precedes the suffix.
    pub suffix: String,
}

impl Default for FimTokens {
    fn default() -> Self {
        Self {
            prefix: "<|fim_prefix|>".into(),
            middle: "<|fim_middle|>".into(),
            suffix: "<|fim_suffix|>".into(),
        }
    }
}

fn default_min_frequency() -> u64 {
    2
}
fn default_eos() -> String {
    "<|endoftext|>".into()
}
fn default_true() -> bool {
    true
}

/// What a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Plain-text files; one file is one document.
    Text,
    /// JSON Lines, plain or compressed (`.jsonl.gz`, `.json.gz`, `.jsonl.zst`, read
    /// through the decompressor); one line is one document, its text in `text_field`.
    Jsonl,
    /// Parquet files (a web corpus as the hub ships it); one row is one document, its
    /// text in the column `text_field` (a dotted path reaches into struct columns).
    Parquet,
    /// Arrow IPC files or streams, and `datasets` folders (`save_to_disk` output); one
    /// row is one document, as for Parquet.
    Arrow,
    /// A source-code tree filtered by `extensions`; one file is one document.
    Code,
    /// Data compiled into Glass (see [`EmbeddedSet`]).
    Embedded,
    /// Rows taken as they are from a published release (`glass import llm360`): already
    /// tokenized and packed, so `glass data prepare` cannot rebuild them.
    Release,
}

impl SourceKind {
    /// Whether documents are records (JSONL lines, Parquet/Arrow rows) with fields,
    /// rather than whole files.
    pub fn has_records(self) -> bool {
        matches!(self, Self::Jsonl | Self::Parquet | Self::Arrow)
    }
}

/// What to do with a JSONL line that does not parse or lacks the text field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadInput {
    /// Stop with an error naming file and line.
    #[default]
    Error,
    /// Skip it and count it in the manifest.
    Skip,
}

/// One named input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name used by stages, metadata and the manifest.
    pub name: String,
    /// How the files are read.
    pub kind: SourceKind,
    /// Files, directories (walked recursively) or glob patterns, relative to the run directory.
    #[serde(default)]
    pub paths: Vec<String>,
    /// File extensions kept (without dot); required for `code`, optional for `text`.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// JSONL field (Parquet/Arrow column) holding the document text; `a.b` is field `b`
    /// of the object (struct) in `a`.
    #[serde(default)]
    pub text_field: Option<String>,
    /// Field holding a document id, kept in the document table.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Fields kept as per-document metadata.
    #[serde(default)]
    pub metadata_fields: Vec<String>,
    /// Malformed records (a JSONL line that does not parse, a record without the text
    /// field, a document over the size limit): error (default) or skip and count.
    #[serde(default)]
    pub bad_lines: BadInput,
    /// Documents that are not valid UTF-8: error (default) or skip and count.
    #[serde(default)]
    pub invalid_utf8: BadInput,
    /// Which embedded collection, for kind `embedded`.
    #[serde(default)]
    pub embedded: Option<EmbeddedSet>,
    /// Kind `embedded`: only these files of the set (e.g. `shakespeare/sonnets.txt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub works: Vec<String>,
    /// Kind `embedded`: every file of the set but these (held-out code, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Whole-file documents (text, code, embedded): keep only each one's first lines, up
    /// to the first line end at or after this many bytes (a small text seen for many
    /// epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_bytes: Option<u64>,
    /// Whole-file documents: cut each into pieces, each ending at the first line end at
    /// or after this many bytes, each its own document (shuffled, packed, traced on its own). A corpus
    /// of whole books is otherwise shuffled book by book, so a chunk of steps sees only
    /// a few of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece_bytes: Option<u64>,
}

/// One curriculum stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Name shown in stats and the manifest.
    pub name: String,
    /// Token budget; rounded up to whole steps of `rows_per_step * (seq_len + 1)` tokens.
    pub tokens: u64,
    /// Share of rows per source; must sum to 1.
    pub weights: BTreeMap<String, f64>,
    /// Fill-in-the-middle rate per source (fraction of documents transformed).
    #[serde(default)]
    pub fim_rate: BTreeMap<String, f64>,
}

/// Which held-out sources make the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Sources packed, in order, into validation rows; no stage may train on them.
    pub sources: Vec<String>,
    /// Maximum number of validation rows.
    pub rows: usize,
}

impl DataConfig {
    /// Reads `run_dir/glass.toml` and returns its validated `[data]` table.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(RUN_CONFIG_FILE);
        let bytes = glass_io::open::read_beneath(run_dir, &path, glass_io::open::MAX_RECORD_BYTES)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| DataError::Config(format!("{}: not UTF-8", path.display())))?;
        Self::from_run_toml(&text)
    }

    /// Parses a whole run config, takes its `[data]` table and validates it; other
    /// top-level tables belong to other parts of Glass and are ignored.
    pub fn from_run_toml(text: &str) -> Result<Self> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| DataError::Config(format!("glass.toml: {e}")))?;
        let data = value
            .get("data")
            .ok_or_else(|| DataError::Config("glass.toml has no [data] table".into()))?
            .clone();
        let cfg: DataConfig = data
            .try_into()
            .map_err(|e: toml::de::Error| DataError::Config(format!("[data]: {}", e.message())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The sha256 of the canonical JSON form: two configs with equal hashes give the same data.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("config serializes");
        hex::encode(Sha256::digest(json))
    }

    /// Index of a source by name.
    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    /// Sources that some stage trains on (positive weight), in config order.
    pub fn training_sources(&self) -> Vec<usize> {
        (0..self.sources.len())
            .filter(|&i| {
                let n = &self.sources[i].name;
                self.stages
                    .iter()
                    .any(|s| s.weights.get(n).is_some_and(|w| *w > 0.0))
            })
            .collect()
    }

    /// Sources that are tokenized at all: training sources plus validation sources.
    pub fn used_sources(&self) -> Vec<usize> {
        let mut used = self.training_sources();
        if let Some(v) = &self.validation {
            used.extend(v.sources.iter().filter_map(|n| self.source_index(n)));
        }
        used.sort_unstable();
        used.dedup();
        used
    }

    /// Checks everything that can be checked without reading sources.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(DataError::Config(m));
        if self.seq_len == 0 {
            return err("seq_len must be at least 1".into());
        }
        if self.rows_per_step == 0 {
            return err("rows_per_step must be at least 1".into());
        }
        if self.steps_per_chunk == 0 {
            return err("steps_per_chunk must be at least 1".into());
        }
        self.validate_sizes()?;
        self.validate_tokenizer()?;
        if self.sources.is_empty() {
            return err("no [[data.sources]] declared".into());
        }
        for (i, s) in self.sources.iter().enumerate() {
            validate_source(s)?;
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return err(format!("source name `{}` declared twice", s.name));
            }
        }
        if self.stages.is_empty() {
            return err("no [[data.stages]] declared".into());
        }
        for st in &self.stages {
            self.validate_stage(st)?;
        }
        if let Some(v) = &self.validation {
            if v.sources.is_empty() || v.rows == 0 {
                return err("[data.validation] needs at least one source and rows >= 1".into());
            }
            for n in &v.sources {
                if self.source_index(n).is_none() {
                    return err(format!("[data.validation] names unknown source `{n}`"));
                }
                if self
                    .training_sources()
                    .iter()
                    .any(|&i| &self.sources[i].name == n)
                {
                    return err(format!(
                        "validation source `{n}` is also trained on; held-out data must stay held out"
                    ));
                }
            }
        }
        self.validate_dedup()?;
        if let Some(h) = &self.heldout {
            if h.docs_per_source == 0 {
                return err("[data.heldout] docs_per_source must be at least 1 (leave the table out for none)".into());
            }
            if h.max_doc_tokens == Some(0) {
                return err("[data.heldout] max_doc_tokens must be at least 1".into());
            }
            let train = self.training_sources();
            for n in h.sources.iter().flatten() {
                match self.source_index(n) {
                    Some(i) if train.contains(&i) => {}
                    Some(_) => return err(format!("[data.heldout] sources names `{n}`, which no stage trains on (validation sources are held out already)")),
                    None => return err(format!("[data.heldout] sources names unknown source `{n}`")),
                }
            }
        }
        if self.decontaminate_ngram == Some(0) {
            return Err(DataError::Config(
                "decontaminate_ngram must be at least 1".into(),
            ));
        }
        if self.decontaminate.is_empty()
            && (self.decontaminate_ngram.is_some() || !self.decontaminate_data_dir.is_empty())
        {
            return Err(DataError::Config(
                "decontaminate_ngram and decontaminate_data_dir apply to decontaminate, which names no task".into(),
            ));
        }
        Ok(())
    }

    /// The decontamination n-gram length in tokens.
    pub fn decontaminate_ngram(&self) -> usize {
        self.decontaminate_ngram
            .unwrap_or(crate::decontaminate::DEFAULT_NGRAM)
    }

    /// The sources `[data.dedup]` covers, in config order (empty without dedup).
    pub fn dedup_sources(&self) -> Vec<usize> {
        match &self.dedup {
            None => vec![],
            Some(d) => match &d.sources {
                None => self.training_sources(),
                Some(names) => {
                    let mut v: Vec<usize> =
                        names.iter().filter_map(|n| self.source_index(n)).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
            },
        }
    }

    fn validate_dedup(&self) -> Result<()> {
        let Some(d) = &self.dedup else {
            return Ok(());
        };
        let err = |m: String| Err(DataError::Config(format!("[data.dedup] {m}")));
        if d.shingle_words == 0 {
            return err("shingle_words must be at least 1".into());
        }
        if d.bands == 0 || d.rows == 0 {
            return err("bands and rows must be at least 1".into());
        }
        if d.bands.saturating_mul(d.rows) > MAX_DEDUP_HASHES {
            return err(format!(
                "bands × rows = {} hash functions; at most {MAX_DEDUP_HASHES} are supported",
                d.bands.saturating_mul(d.rows)
            ));
        }
        if let Some(k) = d.substring {
            use crate::substring::{MAX_SPAN, MIN_SPAN};
            if !(MIN_SPAN..=MAX_SPAN).contains(&k) {
                return err(format!(
                    "substring = {k}: spans of {MIN_SPAN} to {MAX_SPAN} tokens are supported (50 is the published choice)"
                ));
            }
        }
        let train = self.training_sources();
        for n in d.sources.iter().flatten() {
            match self.source_index(n) {
                None => return err(format!("sources names unknown source `{n}`")),
                Some(i) if !train.contains(&i) => {
                    return err(format!(
                        "sources names `{n}`, which no stage trains on (validation data is never deduplicated)"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Bounds every size so that the products the plan and the chunk writer compute
    /// (tokens per step, per chunk, per run) cannot overflow, naming the key at fault.
    fn validate_sizes(&self) -> Result<()> {
        let too_big = |key: &str, v: u64, max: u64| {
            Err(DataError::Config(format!(
                "{key} = {v} is larger than glass supports ({max})"
            )))
        };
        for (key, v, max) in [
            ("seq_len", self.seq_len as u64, MAX_SEQ_LEN),
            (
                "rows_per_step",
                self.rows_per_step as u64,
                MAX_ROWS_PER_STEP,
            ),
            ("steps_per_chunk", self.steps_per_chunk, MAX_STEPS_PER_CHUNK),
        ] {
            if v > max {
                return too_big(key, v, max);
            }
        }
        // Each factor is below 2^32 now, so these products fit in u64.
        let step_tokens = self.rows_per_step as u64 * (self.seq_len as u64 + 1);
        if step_tokens * self.steps_per_chunk > MAX_CHUNK_TOKENS {
            return Err(DataError::Config(format!(
                "one chunk would hold {} tokens (rows_per_step × (seq_len + 1) × steps_per_chunk); at most {MAX_CHUNK_TOKENS} are supported — lower steps_per_chunk",
                step_tokens * self.steps_per_chunk
            )));
        }
        let mut total = 0u64;
        for st in &self.stages {
            total = total
                .checked_add(st.tokens)
                .filter(|&t| t <= MAX_RUN_TOKENS)
                .ok_or_else(|| {
                    DataError::Config(format!(
                        "stage `{}`: tokens = {} brings the run past {MAX_RUN_TOKENS} tokens, more than glass supports",
                        st.name, st.tokens
                    ))
                })?;
        }
        if let Some(v) = self.tokenizer.vocab_size {
            if v as u64 > 1 << 32 {
                return too_big("[data.tokenizer] vocab_size", v as u64, 1 << 32);
            }
        }
        if let Some(v) = &self.validation {
            if v.rows as u64 > MAX_VALIDATION_ROWS {
                return too_big("[data.validation] rows", v.rows as u64, MAX_VALIDATION_ROWS);
            }
        }
        Ok(())
    }

    fn validate_tokenizer(&self) -> Result<()> {
        let t = &self.tokenizer;
        let err = |m: &str| Err(DataError::Config(format!("[data.tokenizer]: {m}")));
        match (&t.path, t.vocab_size) {
            (Some(_), Some(_)) => {
                return err("set either `path` (load) or `vocab_size` (train), not both")
            }
            (None, None) => {
                return err("set `path` to load a tokenizer.json or `vocab_size` to train one")
            }
            (None, Some(v)) if v < 300 => {
                return err(
                    "vocab_size must be at least 300 (256 bytes plus special tokens and merges)",
                )
            }
            (Some(_), None) if t.train_sources.is_some() => {
                return err("`train_sources` only applies when training (`vocab_size`)")
            }
            _ => {}
        }
        if let (DtypeChoice::U16, Some(v)) = (self.token_dtype, t.vocab_size) {
            if v > 65536 {
                return Err(DataError::Config(format!(
                    "vocab_size {v} does not fit token_dtype u16 (at most 65536 ids)"
                )));
            }
        }
        if t.add_bos && t.bos.is_none() {
            return err("add_bos = true needs a `bos` token");
        }
        if let Some(ts) = &t.train_sources {
            for n in ts {
                if self.source_index(n).is_none() {
                    return err(&format!("train_sources names unknown source `{n}`"));
                }
            }
        }
        let names = [&t.eos, &t.fim.prefix, &t.fim.middle, &t.fim.suffix];
        if names.iter().any(|n| n.is_empty()) || t.bos.as_ref().is_some_and(|b| b.is_empty()) {
            return err("special token strings must not be empty");
        }
        Ok(())
    }

    fn validate_stage(&self, st: &StageConfig) -> Result<()> {
        let err = |m: String| Err(DataError::Config(format!("stage `{}`: {m}", st.name)));
        if st.tokens == 0 {
            return err("tokens must be at least 1".into());
        }
        if st.weights.is_empty() {
            return err("no weights".into());
        }
        let mut sum = 0.0;
        for (n, w) in &st.weights {
            if self.source_index(n).is_none() {
                return err(format!("weight for unknown source `{n}`"));
            }
            if !(w.is_finite() && *w >= 0.0) {
                return err(format!(
                    "weight of `{n}` must be a finite number >= 0, got {w}"
                ));
            }
            sum += w;
        }
        if (sum - 1.0).abs() > 1e-6 {
            return err(format!("weights sum to {sum}, not 1"));
        }
        for (n, r) in &st.fim_rate {
            if !st.weights.get(n).is_some_and(|w| *w > 0.0) {
                return err(format!(
                    "fim_rate for `{n}`, which this stage does not train on"
                ));
            }
            if !(r.is_finite() && (0.0..=1.0).contains(r)) {
                return err(format!("fim_rate of `{n}` must be in [0, 1], got {r}"));
            }
        }
        Ok(())
    }

    /// Whether any stage applies fill-in-the-middle.
    pub fn uses_fim(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.fim_rate.values().any(|r| *r > 0.0))
    }
}

fn validate_source(s: &SourceConfig) -> Result<()> {
    let err = |m: &str| Err(DataError::Config(format!("source `{}`: {m}", s.name)));
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(DataError::Config(format!(
            "source name `{}` must be non-empty ASCII letters, digits, `_` or `-`",
            s.name
        )));
    }
    let jsonl_only =
        s.text_field.is_some() || s.id_field.is_some() || !s.metadata_fields.is_empty();
    match s.kind {
        SourceKind::Embedded => {
            if s.embedded.is_none() {
                return err("kind = \"embedded\" needs `embedded` (english, english-held-out, english-all, code)");
            }
            if !s.paths.is_empty() || !s.extensions.is_empty() || jsonl_only {
                return err("an embedded source takes no paths, extensions or JSONL fields");
            }
        }
        kind => {
            if s.embedded.is_some() {
                return err("`embedded` only applies to kind = \"embedded\"");
            }
            if s.paths.is_empty() {
                return err("`paths` is empty");
            }
            match kind {
                SourceKind::Jsonl | SourceKind::Parquet | SourceKind::Arrow
                    if s.text_field.is_none() =>
                {
                    return err("kinds jsonl, parquet and arrow need `text_field` (the field or column holding the text; `a.b` reaches into a struct)")
                }
                SourceKind::Code if s.extensions.is_empty() => {
                    return err("kind = \"code\" needs `extensions`")
                }
                SourceKind::Text | SourceKind::Code if jsonl_only => {
                    return err("text_field, id_field and metadata_fields only apply to jsonl, parquet and arrow")
                }
                _ => {}
            }
        }
    }
    if s.bad_lines == BadInput::Skip && !s.kind.has_records() {
        return err("bad_lines only applies to jsonl, parquet and arrow");
    }
    if (!s.works.is_empty() || !s.exclude.is_empty()) && s.kind != SourceKind::Embedded {
        return err("`works` and `exclude` pick files of an embedded set; for files on disk, list them in `paths`");
    }
    if !s.works.is_empty() && !s.exclude.is_empty() {
        return err("give `works` (files to keep) or `exclude` (files to drop), not both");
    }
    if let Some(set) = s.embedded {
        let names: Vec<&str> = crate::embedded::embedded_set(set)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        if let Some(w) = s
            .works
            .iter()
            .chain(&s.exclude)
            .find(|w| !names.contains(&w.as_str()))
        {
            return Err(DataError::Config(format!(
                "source `{}`: `{w}` is not a file of the embedded set (it has {} files, e.g. `{}`)",
                s.name,
                names.len(),
                names.first().copied().unwrap_or("")
            )));
        }
    }
    for (key, v) in [("head_bytes", s.head_bytes), ("piece_bytes", s.piece_bytes)] {
        if v == Some(0) {
            return Err(DataError::Config(format!(
                "source `{}`: {key} must be at least 1",
                s.name
            )));
        }
        if v.is_some() && s.kind.has_records() {
            return err("head_bytes and piece_bytes apply to whole-file documents (text, code, embedded), not jsonl lines or parquet/arrow rows");
        }
    }
    Ok(())
}
