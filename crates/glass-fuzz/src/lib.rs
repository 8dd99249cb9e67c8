//! Fuzz targets for every parser of untrusted bytes in Glass, driven by proptest on
//! stable Rust (see `tests/fuzz.rs` and `docs/threat-model.md` for why).
//!
//! A target takes the bytes of one file, puts them where Glass reads that file in a
//! scratch copy of a real trained run (re-sealing hashes the way a forger would, so the
//! checks behind the hash checks are reached too), and runs every reader of that file.
//! The property: each call returns a value or an error — never a panic, an abort, an
//! unbounded allocation or a hang. Results are deliberately ignored.

pub mod http;
pub mod mutate;
pub mod readers;
pub mod reseal;

use std::path::{Path, PathBuf};

use mutate::Kind;

/// Where the committed seed corpus lives.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// A fuzz target: its name, how its seeds are mutated, its seed files (relative to the
/// corpus directory or the workspace), and the function that consumes one input.
pub struct Target {
    /// Name (also the regression-file prefix).
    pub name: &'static str,
    /// How seeds are edited.
    pub kind: Kind,
    /// Seed files, relative to the workspace root.
    pub seeds: &'static [&'static str],
    /// Runs every reader of the file on `bytes` inside `scratch`.
    pub run: fn(&Scratch, &[u8]),
}

const RUN: &str = "crates/glass-fuzz/corpus/run";

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "chunk_header",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/data/chunks/chunk-00000.json"],
        run: |s, b| s.data_file("chunks/chunk-00000.json", b),
    },
    Target {
        name: "chunk_segments",
        kind: Kind::Bytes,
        seeds: &["crates/glass-fuzz/corpus/run/data/chunks/chunk-00000.segments"],
        run: |s, b| s.data_file("chunks/chunk-00000.segments", b),
    },
    Target {
        name: "chunk_tokens",
        kind: Kind::Bytes,
        seeds: &["crates/glass-fuzz/corpus/run/data/chunks/chunk-00000.tokens"],
        run: |s, b| s.data_file("chunks/chunk-00000.tokens", b),
    },
    Target {
        name: "validation_header",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/data/validation.json"],
        run: |s, b| s.data_file("validation.json", b),
    },
    Target {
        name: "store_header",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/data/tokens/train/00000-of-00001.json"],
        run: |s, b| s.data_file("tokens/train/00000-of-00001.json", b),
    },
    Target {
        name: "store_docs",
        kind: Kind::Bytes,
        seeds: &["crates/glass-fuzz/corpus/run/data/tokens/train/00000-of-00001.docs"],
        run: |s, b| s.data_file("tokens/train/00000-of-00001.docs", b),
    },
    Target {
        name: "data_manifest",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/data/manifest.json"],
        run: |s, b| s.data_file("manifest.json", b),
    },
    Target {
        name: "run_manifest",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/manifest.json"],
        run: |s, b| s.run_file("manifest.json", b),
    },
    Target {
        name: "state",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/checkpoints/ckpt-0001-step-00000002/state.json"],
        run: |s, b| s.run_file("checkpoints/ckpt-0001-step-00000002/state.json", b),
    },
    Target {
        name: "checkpoint_safetensors",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-fuzz/corpus/run/checkpoints/ckpt-0001-step-00000002/model.safetensors",
        ],
        run: |s, b| s.run_file("checkpoints/ckpt-0001-step-00000002/model.safetensors", b),
    },
    Target {
        name: "glass_toml",
        kind: Kind::Text,
        seeds: &["crates/glass-fuzz/corpus/run/glass.toml"],
        run: |_, b| glass_toml(b),
    },
    Target {
        name: "hf_safetensors",
        kind: Kind::Bytes,
        seeds: &["crates/glass-hf/tests/fixtures/hf/tied/model.safetensors"],
        run: |_, b| hf_safetensors(b),
    },
    Target {
        name: "hf_family_weights",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-hf/tests/fixtures/families/crystalcoder/model.safetensors",
            "crates/glass-hf/tests/fixtures/families/gpt_neox/model.safetensors",
        ],
        run: |_, b| hf_family_weights(b),
    },
    Target {
        name: "gguf",
        kind: Kind::Bytes,
        seeds: &["crates/glass-hf/tests/fixtures/gguf/tiny.gguf"],
        run: |_, b| gguf(b),
    },
    Target {
        name: "pickle",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-hf/tests/fixtures/hf/tied-bin/pytorch_model.bin",
            "crates/glass-hf/tests/fixtures/hf/evil-bin/pytorch_model.bin",
            "crates/glass-hf/tests/fixtures/families/crystalcoder-bin/pytorch_model.bin",
            "crates/glass-fuzz/corpus/pickle/data.pkl",
        ],
        run: |_, b| pickle(b),
    },
    Target {
        name: "hf_config",
        kind: Kind::Json,
        seeds: &[
            "crates/glass-hf/tests/fixtures/hf/tied/config.json",
            "crates/glass-hf/tests/fixtures/hf/st/config.json",
            "crates/glass-hf/tests/fixtures/families/crystalcoder/config.json",
            "crates/glass-hf/tests/fixtures/families/gpt_neox/config.json",
            "crates/glass-hf/tests/fixtures/families/olmo/config.json",
            "crates/glass-hf/tests/fixtures/families/olmo2/config.json",
        ],
        run: |_, b| hf_config(b),
    },
    Target {
        name: "task_yaml",
        kind: Kind::Text,
        seeds: &[
            "crates/glass-eval/tests/fixtures/arc/arc_easy.yaml",
            "crates/glass-fuzz/corpus/task/templates.yaml",
        ],
        run: |s, b| task_yaml(s, b),
    },
    Target {
        name: "index_manifest",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/index/manifest.json"],
        run: |s, b| readers::index_file(s, "manifest.json", b),
    },
    Target {
        name: "index_suffix_array",
        kind: Kind::Bytes,
        seeds: &["crates/glass-fuzz/corpus/run/index/chunk-00000.sa"],
        run: |s, b| readers::index_file(s, "chunk-00000.sa", b),
    },
    Target {
        name: "release_manifest",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/release/manifest.json"],
        run: |_, b| readers::release_file("manifest.json", b),
    },
    Target {
        name: "release_rows",
        kind: Kind::Text,
        seeds: &["crates/glass-fuzz/corpus/release/data/train_000.jsonl"],
        run: |_, b| readers::release_file("data/train_000.jsonl", b),
    },
    Target {
        name: "llm360_rows",
        kind: Kind::Text,
        seeds: &["crates/glass-cli/tests/fixtures/llm360-mini/data/train_000.jsonl"],
        run: |_, b| readers::llm360_rows(b),
    },
    Target {
        name: "megatron_idx",
        kind: Kind::Bytes,
        seeds: &["crates/glass-cli/tests/fixtures/suites/pythia/document.idx"],
        run: |_, b| readers::suite_file("pythia", "document.idx", b),
    },
    Target {
        name: "megatron_bin_piece",
        kind: Kind::Bytes,
        seeds: &["crates/glass-cli/tests/fixtures/suites/pythia/document-00000-of-00001.bin"],
        run: |_, b| readers::suite_file("pythia", "document-00000-of-00001.bin", b),
    },
    Target {
        name: "npy_index",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-cli/tests/fixtures/suites/olmo/global_indices_u8.npy",
            "crates/glass-cli/tests/fixtures/suites/olmo/data/global_indices.npy",
        ],
        run: |_, b| readers::suite_file("olmo", "data/global_indices.npy", b),
    },
    Target {
        name: "hdf5_file",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/data/stage1/data-00000.h5",
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/data/stage1/data-00002.h5",
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/data/stage2/examples_0_0.h5",
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/bad/wrong_shape.h5",
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/variants/edge_chunks.h5",
            "crates/glass-cli/tests/fixtures/suites/crystalcoder/variants/compact.h5",
        ],
        run: |_, b| readers::hdf5_file(b),
    },
    Target {
        name: "olmo_config",
        kind: Kind::Text,
        seeds: &["crates/glass-cli/tests/fixtures/suites/olmo/config.yaml"],
        run: |_, b| readers::suite_file("olmo", "config.yaml", b),
    },
    Target {
        name: "eval_jsonl",
        kind: Kind::Text,
        seeds: &["crates/glass-fuzz/corpus/task/docs.jsonl"],
        run: |s, b| readers::eval_rows(s, "test.jsonl", b),
    },
    Target {
        name: "eval_parquet",
        kind: Kind::Bytes,
        seeds: &["crates/glass-eval/tests/fixtures/hub/cais/mmlu/anatomy/test-00000-of-00001.parquet"],
        run: |s, b| readers::eval_rows(s, "test-00000-of-00001.parquet", b),
    },
    Target {
        name: "eval_arrow",
        kind: Kind::Bytes,
        seeds: &["crates/glass-eval/tests/fixtures/hf_cache/truthfulqa___truthful_qa/multiple_choice/0.0.0/fixture/truthful_qa-validation.arrow"],
        run: |s, b| readers::eval_rows(s, "truthful_qa-validation.arrow", b),
    },
    Target {
        name: "corpus_jsonl_gz",
        kind: Kind::Bytes,
        seeds: &["crates/glass-data/tests/fixtures/corpus/docs.jsonl.gz"],
        run: |s, b| readers::corpus_file(s, "jsonl", "docs.jsonl.gz", b),
    },
    Target {
        name: "corpus_jsonl_zst",
        kind: Kind::Bytes,
        seeds: &["crates/glass-data/tests/fixtures/corpus/docs.jsonl.zst"],
        run: |s, b| readers::corpus_file(s, "jsonl", "docs.jsonl.zst", b),
    },
    Target {
        name: "corpus_parquet",
        kind: Kind::Bytes,
        seeds: &["crates/glass-data/tests/fixtures/corpus/docs.parquet"],
        run: |s, b| readers::corpus_file(s, "parquet", "docs.parquet", b),
    },
    Target {
        name: "corpus_arrow",
        kind: Kind::Bytes,
        seeds: &["crates/glass-data/tests/fixtures/corpus/hf/data-00000-of-00002.arrow"],
        run: |s, b| readers::corpus_file(s, "arrow", "data.arrow", b),
    },
    Target {
        name: "tokenizer_json",
        kind: Kind::Json,
        seeds: &["crates/glass-fuzz/corpus/run/data/tokenizer.json"],
        run: readers::tokenizer,
    },
    Target {
        name: "optimizer_safetensors",
        kind: Kind::Bytes,
        seeds: &[
            "crates/glass-fuzz/corpus/run/checkpoints/ckpt-0001-step-00000002/optimizer.safetensors",
        ],
        run: readers::optimizer,
    },
    Target {
        name: "metrics_sqlite",
        kind: Kind::Bytes,
        seeds: &["crates/glass-fuzz/corpus/metrics.sqlite"],
        run: readers::metrics,
    },
    Target {
        name: "http_request",
        kind: Kind::Text,
        seeds: &[
            "crates/glass-fuzz/corpus/http/series.txt",
            "crates/glass-fuzz/corpus/http/trace.txt",
            "crates/glass-fuzz/corpus/http/data.txt",
        ],
        run: |_, b| http::request(b),
    },
];

/// A scratch copy of the seed run in which one file at a time is replaced.
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The run directory.
    pub run: PathBuf,
    pristine: PathBuf,
}

impl Scratch {
    /// Copies the committed seed run.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let pristine = workspace().join(RUN);
        copy_dir(&pristine, &run);
        Self {
            _dir: dir,
            run,
            pristine,
        }
    }

    pub(crate) fn restore(&self, rel: &str) {
        let _ = std::fs::remove_dir_all(self.run.join(rel));
        let _ = std::fs::remove_file(self.run.join(rel));
        let from = self.pristine.join(rel);
        if from.is_dir() {
            copy_dir(&from, &self.run.join(rel));
        } else {
            std::fs::copy(&from, self.run.join(rel)).expect("restore");
        }
    }

    /// Replaces `RUN/data/rel`, re-seals the data hashes, and runs every data reader.
    pub fn data_file(&self, rel: &str, bytes: &[u8]) {
        std::fs::write(self.run.join("data").join(rel), bytes).expect("write");
        if rel != "manifest.json" {
            reseal::data(&self.run.join("data"));
        }
        read_data(&self.run);
        self.restore("data");
    }

    /// Replaces `RUN/rel`, re-seals the run's hashes, and runs every checkpoint reader.
    pub fn run_file(&self, rel: &str, bytes: &[u8]) {
        std::fs::write(self.run.join(rel), bytes).expect("write");
        if rel != "manifest.json" {
            reseal::run(&self.run);
        }
        read_run(&self.run);
        self.restore("manifest.json");
        self.restore("checkpoints");
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace")
}

pub(crate) fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Every reader of prepared data: open, every step's batch and segments, validation
/// rows, `data show` for the first steps, stats, verify, the tokenizer.
pub(crate) fn read_data(run: &Path) {
    if let Ok(d) = glass_data::PreparedData::open(run) {
        let mut rows = Vec::new();
        for step in 0..d.n_steps().min(8) {
            let _ = d.batch(step, &mut rows);
            let _ = d.batch_segments(step);
        }
        let _ = d.validation(&mut rows);
        let _ = d.rank_rows(1, 2);
    }
    for step in 0..3 {
        let _ = glass_data::inspect::show(run, step, 0, 1);
    }
    let _ = glass_data::inspect::stats(run);
    let _ = glass_data::verify(run);
    let _ = glass_run::run_tokenizer(run);
}

/// Every reader of checkpoints: verify, info, every loader's checks, weights.
pub(crate) fn read_run(run: &Path) {
    let _ = glass_run::verify_run(run);
    let _ = glass_run::info(run);
    let _ = glass_run::load_model(run, None);
    for k in 0..3 {
        let _ = glass_run::load_model(run, Some(k));
    }
}

fn glass_toml(b: &[u8]) {
    let Ok(text) = std::str::from_utf8(b) else {
        return;
    };
    if let Ok(c) = glass_run::RunConfig::parse(text, Path::new("glass.toml")) {
        let _ = c.model.checked_sizes();
        let _ = glass_run::lr_at(&c.optim, 3, 10);
    }
    if let Ok(d) = glass_data::DataConfig::from_run_toml(text) {
        let _ = glass_data::order::Plan::new(&d);
        let _ = d.hash();
    }
}

fn convert(tensors: Vec<glass_hf::weights::SrcTensor<'_>>) {
    for t in tensors {
        let n = t.numel();
        if n <= 1 << 20 {
            let mut v = vec![0f32; n];
            t.convert_into(&mut v);
        }
    }
}

fn hf_safetensors(b: &[u8]) {
    if let Ok(t) = glass_hf::weights::read_safetensors(b, Path::new("model.safetensors")) {
        convert(t);
    }
}

fn pickle(b: &[u8]) {
    let _ = glass_hf::pickle::load(b);
    if let Ok(t) = glass_hf::torch_bin::read(b, Path::new("pytorch_model.bin")) {
        convert(t);
    }
}

/// A (mutated) GGUF file converted as `glass import gguf` does: header, metadata,
/// tensor table, dequantization, tokenizer and config, all from hostile bytes.
fn gguf(b: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.gguf");
    std::fs::write(&src, b).expect("write");
    let _ = glass_hf::gguf::convert(&src, &dir.path().join("hf"), &Default::default());
}

/// Every tensor of a (mutated) CrystalCoder or GPT-NeoX weight file moved into the Glass
/// layout, as the import does: shapes that disagree with the config must be errors.
fn hf_family_weights(b: &[u8]) {
    let Ok(tensors) = glass_hf::weights::read_safetensors(b, Path::new("model.safetensors")) else {
        return;
    };
    for fam in ["crystalcoder", "gpt_neox"] {
        let cp = workspace().join(format!(
            "crates/glass-hf/tests/fixtures/families/{fam}/config.json"
        ));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cp).expect("seed config")).expect("seed config");
        let info = glass_hf::hf_config::from_hf(&v, &cp).expect("seed config");
        let cfg = info.cfg.expect("mapped");
        for t in &tensors {
            if t.numel() > 1 << 20 {
                continue;
            }
            let mut vals = vec![0.0f32; t.numel()];
            t.convert_into(&mut vals);
            let bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
            let _ = glass_hf::families::to_glass(
                info.family,
                &cfg,
                &t.name,
                &t.shape,
                std::borrow::Cow::Owned(bytes),
                4,
            );
        }
    }
}

fn hf_config(b: &[u8]) {
    if let Ok(v) = serde_json::from_slice(b) {
        if let Ok(info) = glass_hf::hf_config::from_hf(&v, Path::new("config.json")) {
            if let Some(c) = info.cfg {
                let _ = c.checked_sizes();
            }
        }
    }
}

fn task_yaml(_s: &Scratch, b: &[u8]) {
    let Ok(text) = std::str::from_utf8(b) else {
        return;
    };
    let dir = workspace().join("crates/glass-fuzz/corpus/task");
    let mut files = std::collections::BTreeMap::new();
    for split in ["train", "validation", "test"] {
        files.insert(split.to_string(), vec![dir.join("docs.jsonl")]);
    }
    for over in [None, Some(&files)] {
        if let Ok(t) = glass_eval::TaskDef::parse(text, "task.yaml", &dir, over) {
            if let Ok(d) = t.load() {
                let _ = glass_eval::prompts::prepare(&t, &d, Some(4), 1234);
            }
        }
    }
}
