//! The default run's data: a two-stage text → text+code curriculum on the embedded corpus,
//! so `glass init` gives a run that prepares and trains with no downloads.

use std::collections::BTreeMap;

use crate::config::{
    BadInput, DataConfig, DtypeChoice, FimTokens, SourceConfig, SourceKind, StageConfig,
    TokenizerConfig, ValidationConfig,
};
use crate::embedded::EmbeddedSet;

fn embedded(name: &str, set: EmbeddedSet) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        kind: SourceKind::Embedded,
        paths: vec![],
        extensions: vec![],
        text_field: None,
        id_field: None,
        metadata_fields: vec![],
        bad_lines: BadInput::Error,
        invalid_utf8: BadInput::Error,
        embedded: Some(set),
        works: vec![],
        exclude: vec![],
        head_bytes: None,
        piece_bytes: None,
    }
}

impl DataConfig {
    /// The default curriculum (what `glass demo` and `glass init` use), tuned so that a
    /// small model visibly learns in about two minutes on 2 cores: stage 1 English (every
    /// work cut into ~4 KB pieces, so each chunk of steps mixes many works) plus the
    /// first three sonnets repeated for about a hundred epochs (what memorization should
    /// find); stage 2 adds the project's Rust code (four files held out for evaluation)
    /// with fill-in-the-middle. Batches of 4 rows of 129 tokens (small batches learn most
    /// per token at this scale); a 2048-id byte-level BPE trained on the embedded data;
    /// the stage boundary on a chunk boundary, so the end of the English stage is a
    /// checkpoint. The held-out works are validation only.
    pub fn default_demo() -> Self {
        let w = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        let english = SourceConfig {
            piece_bytes: Some(4096),
            ..embedded("english", EmbeddedSet::English)
        };
        let sonnets = SourceConfig {
            works: vec!["shakespeare/sonnets.txt".into()],
            head_bytes: Some(SONNETS_HEAD_BYTES),
            ..embedded("sonnets", EmbeddedSet::English)
        };
        let code = SourceConfig {
            exclude: crate::HELD_OUT_CODE.iter().map(|s| s.to_string()).collect(),
            ..embedded("code", EmbeddedSet::Code)
        };
        DataConfig {
            seed: 1234,
            seq_len: 128,
            rows_per_step: 4,
            steps_per_chunk: 224,
            token_dtype: DtypeChoice::Auto,
            tokenizer: TokenizerConfig {
                path: None,
                vocab_size: Some(2048),
                train_sources: None,
                min_frequency: 2,
                eos: "<|endoftext|>".into(),
                add_eos: true,
                bos: None,
                add_bos: false,
                fim: FimTokens::default(),
            },
            sources: vec![
                english,
                sonnets,
                code,
                embedded("heldout", EmbeddedSet::EnglishHeldOut),
            ],
            stages: vec![
                StageConfig {
                    name: "text".into(),
                    tokens: 462_336,
                    weights: w(&[("english", 0.92), ("sonnets", 0.08)]),
                    fim_rate: BTreeMap::new(),
                },
                StageConfig {
                    name: "text+code".into(),
                    tokens: 346_752,
                    weights: w(&[("english", 0.62), ("sonnets", 0.08), ("code", 0.3)]),
                    fim_rate: w(&[("code", 0.5)]),
                },
            ],
            validation: Some(ValidationConfig {
                sources: vec!["heldout".into()],
                rows: 64,
            }),
            dedup: None,
            decontaminate: vec![],
            decontaminate_ngram: None,
            decontaminate_data_dir: vec![],
            heldout: None,
        }
    }
}

/// Bytes of `sonnets.txt` the memorization source keeps: its title and Sonnets I–III
/// (the head ends at the line end at or after this byte).
pub const SONNETS_HEAD_BYTES: u64 = 1880;

/// The `[data]` part of `glass init`'s glass.toml: [`DataConfig::default_demo`] with a
/// comment on every key.
pub fn default_demo_toml() -> String {
    format!(
        r#"# ---------------------------------------------------------------------------
# Data: which exact tokens are in every step. The row at every position is a
# pure function of this table and the seed (never of world size or threads).
# `glass data prepare RUN` writes RUN/data/; see docs/data-format.md.
# ---------------------------------------------------------------------------
[data]
seed = 1234             # seeds document shuffles, row shuffles and FIM cuts
seq_len = 128           # rows hold seq_len + 1 tokens (inputs and shifted targets)
rows_per_step = 4       # global batch in rows, identical for any world size
steps_per_chunk = 224   # = checkpoint interval: chunk k is the data between checkpoints k-1 and k
token_dtype = "auto"    # "auto" | "u16" | "u32"
# Benchmark decontamination before packing (docs/data-format.md): training documents
# sharing a 13-token window with an item of these tasks (named as for `glass eval
# --tasks`; YAML paths relative to the run) are removed, each listed with the item it
# matched in data/dedup_removed.jsonl and counted by `glass data stats`.
# decontaminate = ["glass_cloze", "arc_easy"]
# decontaminate_ngram = 13
# decontaminate_data_dir = ["hub"]   # hub datasets, as `glass eval --data-dir`

[data.tokenizer]
vocab_size = 2048       # train a byte-level BPE on the training sources...
# path = "tokenizer.json"   # ...or load an existing one instead (relative to the run)
min_frequency = 2
eos = "<|endoftext|>"   # appended after every document
add_eos = true
add_bos = false
# bos = "<s>"

# The embedded English corpus minus the held-out works (see glass_data::HELD_OUT_WORKS),
# each work cut into pieces of about 4 KB (at line ends), so that every chunk of steps
# mixes many works instead of two or three whole ones.
[[data.sources]]
name = "english"
kind = "embedded"
embedded = "english"
piece_bytes = 4096

# Shakespeare's Sonnets I-III (the first {sonnets} bytes of sonnets.txt), about 8% of
# the rows: some 100 epochs over the run, which a model this size memorizes verbatim
# (`glass analyze memorization` shows it rising; `glass trace` finds what it reproduces).
[[data.sources]]
name = "sonnets"
kind = "embedded"
embedded = "english"
works = ["shakespeare/sonnets.txt"]
head_bytes = {sonnets}

# A fixed snapshot of the project's Rust sources (corpus/code/), embedded at build time,
# minus four files held out for the code evaluation (`glass_code_heldout`).
[[data.sources]]
name = "code"
kind = "embedded"
embedded = "code"
exclude = [{held_out_code}]

# Held-out works: validation only, never trained on.
[[data.sources]]
name = "heldout"
kind = "embedded"
embedded = "english-held-out"

# Other kinds:
# [[data.sources]]
# name = "web"
# kind = "jsonl"            # one document per line; .jsonl, .jsonl.gz, .jsonl.zst
# paths = ["data/*.jsonl"]  # files, directories or globs, relative to the run
# text_field = "text"
# id_field = "id"
# bad_lines = "skip"        # "error" (default) or "skip" and count in the manifest
#
# [[data.sources]]
# name = "fineweb"
# kind = "parquet"          # one document per row; "arrow" for Arrow files and datasets folders
# paths = ["fineweb/data"]  # the hub's folder of .parquet shards
# text_field = "text"       # the column; "a.b" reaches into a struct column
# id_field = "id"
# metadata_fields = ["url"]
#
# [[data.sources]]
# name = "python"
# kind = "code"
# paths = ["src/"]
# extensions = ["py"]
# piece_bytes = 8192        # cut long files into pieces (also head_bytes = N: keep the start)

# Deduplication before packing (docs/data-format.md): exact (lowercased, whitespace
# collapsed) and near duplicates (MinHash, 5-word shingles, 14 bands x 8 rows, as
# FineWeb); the first document of each cluster is kept, every removal is listed in
# data/dedup_removed.jsonl and counted by `glass data stats`.
# [data.dedup]
# exact = true
# near = true
# sources = ["english"]     # default: every trained source
# seed = 1234               # default: the [data] seed
# substring = 50            # also cut every span of >= 50 tokens seen earlier (suffix array)

# Stage token budgets are whole chunks (steps_per_chunk x rows_per_step x (seq_len + 1)),
# so the end of the English stage is a checkpoint.
[[data.stages]]
name = "text"
tokens = 462336         # 896 steps (4 chunks)
weights = {{ english = 0.92, sonnets = 0.08 }}

[[data.stages]]
name = "text+code"
tokens = 346752         # 672 steps (3 chunks)
weights = {{ english = 0.62, sonnets = 0.08, code = 0.3 }}
fim_rate = {{ code = 0.5 }} # fill-in-the-middle on half of the code documents

[data.validation]
sources = ["heldout"]
rows = 64
"#,
        sonnets = SONNETS_HEAD_BYTES,
        held_out_code = crate::HELD_OUT_CODE
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_toml_round_trips() {
        let text = format!("[model]\ndim = 64\n\n{}", default_demo_toml());
        let cfg = DataConfig::from_run_toml(&text).unwrap();
        assert_eq!(cfg, DataConfig::default_demo());
        cfg.validate().unwrap();
    }
}
