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
    }
}

impl DataConfig {
    /// The default curriculum: stage 1 English only; stage 2 English plus the project's
    /// Rust code with fill-in-the-middle on code; a 4096-id byte-level BPE trained on the
    /// embedded data; 129-token rows small enough for a CPU model; held-out works for
    /// validation.
    pub fn default_demo() -> Self {
        let w = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        DataConfig {
            seed: 1234,
            seq_len: 128,
            rows_per_step: 16,
            steps_per_chunk: 20,
            token_dtype: DtypeChoice::Auto,
            tokenizer: TokenizerConfig {
                path: None,
                vocab_size: Some(4096),
                train_sources: None,
                min_frequency: 2,
                eos: "<|endoftext|>".into(),
                add_eos: true,
                bos: None,
                add_bos: false,
                fim: FimTokens::default(),
            },
            sources: vec![
                embedded("english", EmbeddedSet::English),
                embedded("code", EmbeddedSet::Code),
                embedded("heldout", EmbeddedSet::EnglishHeldOut),
            ],
            stages: vec![
                StageConfig {
                    name: "text".into(),
                    tokens: 500_000,
                    weights: w(&[("english", 1.0)]),
                    fim_rate: BTreeMap::new(),
                },
                StageConfig {
                    name: "text+code".into(),
                    tokens: 300_000,
                    weights: w(&[("english", 0.7), ("code", 0.3)]),
                    fim_rate: w(&[("code", 0.5)]),
                },
            ],
            validation: Some(ValidationConfig {
                sources: vec!["heldout".into()],
                rows: 64,
            }),
        }
    }
}

/// The default `[data]` table as commented TOML, for `glass init` to write into
/// `glass.toml`; it parses back to [`DataConfig::default_demo`].
pub fn default_demo_toml() -> String {
    r#"# ---------------------------------------------------------------------------
# Data: which exact tokens are in every step. The row at every position is a
# pure function of this table and the seed (never of world size or threads).
# `glass data prepare RUN` writes RUN/data/; see docs/data-format.md.
# ---------------------------------------------------------------------------
[data]
seed = 1234             # seeds document shuffles, row shuffles and FIM cuts
seq_len = 128           # rows hold seq_len + 1 tokens (inputs and shifted targets)
rows_per_step = 16      # global batch in rows, identical for any world size
steps_per_chunk = 20    # = checkpoint interval: chunk k is the data between checkpoints k-1 and k
token_dtype = "auto"    # "auto" | "u16" | "u32"

[data.tokenizer]
vocab_size = 4096       # train a byte-level BPE on the training sources...
# path = "tokenizer.json"   # ...or load an existing one instead (relative to the run)
min_frequency = 2
eos = "<|endoftext|>"   # appended after every document
add_eos = true
add_bos = false
# bos = "<s>"

# The embedded English corpus minus the held-out works (see glass_data::HELD_OUT_WORKS).
[[data.sources]]
name = "english"
kind = "embedded"
embedded = "english"

# A fixed snapshot of the project's Rust sources (corpus/code/), embedded at build time.
[[data.sources]]
name = "code"
kind = "embedded"
embedded = "code"

# Held-out works: validation only, never trained on.
[[data.sources]]
name = "heldout"
kind = "embedded"
embedded = "english-held-out"

# Other kinds:
# [[data.sources]]
# name = "web"
# kind = "jsonl"            # one document per line
# paths = ["data/*.jsonl"]  # files, directories or globs, relative to the run
# text_field = "text"
# id_field = "id"
# bad_lines = "skip"        # "error" (default) or "skip" and count in the manifest
#
# [[data.sources]]
# name = "python"
# kind = "code"
# paths = ["src/"]
# extensions = ["py"]

[[data.stages]]
name = "text"
tokens = 500000         # rounded up to whole steps
weights = { english = 1.0 }

[[data.stages]]
name = "text+code"
tokens = 300000
weights = { english = 0.7, code = 0.3 }
fim_rate = { code = 0.5 } # fill-in-the-middle on half of the code documents

[data.validation]
sources = ["heldout"]
rows = 64
"#
    .to_string()
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
