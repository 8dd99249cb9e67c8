//! `glass import hf`: a transformers LLaMA folder becomes a Glass run whose checkpoint 0
//! holds its weights, with every source file's sha256 recorded as provenance.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_data::config::{FimTokens, TokenizerConfig};
use glass_data::GlassTokenizer;
use glass_engine::{Model, ModelConfig};
use glass_io::atomic::sha256_file;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{file_err, io, Result};
use crate::export::ExportedFile;
use crate::hf_config::from_hf;
use crate::weights::{discover, load_into, LoadStats, WeightFormat};

/// What [`import`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The new run.
    pub run_dir: PathBuf,
    /// Its model config.
    #[serde(skip)]
    pub model: Option<ModelConfig>,
    /// `safetensors` or `pytorch`.
    pub format: String,
    /// Weight files read.
    pub shards: usize,
    /// Tensors converted.
    pub tensors: usize,
    /// Bytes of tensor data read.
    pub tensor_bytes: u64,
    /// Source dtypes.
    pub dtypes: Vec<String>,
    /// config.json fields that cannot change the function and were not mapped.
    pub ignored_config_keys: Vec<String>,
    /// Tensors deliberately not imported.
    pub skipped_tensors: Vec<String>,
    /// Checkpoint 0's hash.
    pub checkpoint_sha256: String,
    /// The run holds the weights as stored, with no optimizer state (`--weights-only`).
    pub weights_only: bool,
    /// The checkpoint's weights dtype (`f32`, `bf16`, `f16`).
    pub checkpoint_dtype: String,
    /// Bytes of checkpoint 0's files (weights, plus the optimizer state unless
    /// weights-only).
    pub checkpoint_bytes: u64,
    /// Tokenizer ids vs model rows, when they differ (training needs them equal).
    pub vocab_note: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The special tokens a folder's tokenizer uses.
pub struct Specials {
    /// EOS token string.
    pub eos: String,
    /// BOS token string, when the tokenizer has one.
    pub bos: Option<String>,
    /// Whether documents start with BOS.
    pub add_bos: bool,
}

fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// The special tokens of the tokenizer `tok_json` found in folder `src` (its
/// `tokenizer_config.json`, else the ids `config.json` names).
pub fn specials(
    src: &Path,
    tok_json: &[u8],
    bos_id: Option<u32>,
    eos_id: Option<u32>,
) -> Result<Specials> {
    let tc_path = src.join("tokenizer_config.json");
    let tc: Value = if tc_path.exists() {
        serde_json::from_slice(
            &glass_io::open::open_regular(&tc_path)
                .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?,
        )
        .map_err(|e| file_err(&tc_path, format!("not valid JSON: {e}")))?
    } else {
        Value::Null
    };
    let hf = glass_data::tokenizer::parse_tokenizer_json(tok_json)
        .map_err(|e| file_err(src.join("tokenizer.json"), e.to_string()))?;
    let by_id = |id: Option<u32>| id.and_then(|i| hf.id_to_token(i));
    let eos = token_string(tc.get("eos_token"))
        .or_else(|| by_id(eos_id))
        .ok_or_else(|| {
            file_err(
                &tc_path,
                "no EOS token: neither tokenizer_config.json `eos_token` nor config.json `eos_token_id` names one",
            )
        })?;
    let bos = token_string(tc.get("bos_token")).or_else(|| by_id(bos_id));
    // LlamaTokenizer prepends BOS unless told otherwise; other tokenizers say so explicitly.
    let llama_class = tc
        .get("tokenizer_class")
        .and_then(|c| c.as_str())
        .is_some_and(|c| c.starts_with("Llama"));
    let add_bos = bos.is_some()
        && tc
            .get("add_bos_token")
            .and_then(|b| b.as_bool())
            .unwrap_or(llama_class);
    Ok(Specials { eos, bos, add_bos })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `glass.toml` of an imported run: `[model]` spelled out field by field so it
/// reproduces the imported config exactly, and a `[data]` table that uses the imported
/// tokenizer on the embedded corpus (edit `[[data.sources]]` for real data).
pub fn run_toml(name: &str, src: &Path, m: &ModelConfig, sp: &Specials) -> String {
    let bos = match &sp.bos {
        Some(b) => format!("bos = {}\n", toml_str(b)),
        None => "# bos = \"<s>\"\n".into(),
    };
    format!(
        r#"# Glass run imported from a Hugging Face folder by `glass import hf`.
# Checkpoint 0 holds the imported weights; import.json records every source file's
# sha256. `glass generate` works now; for continued pretraining edit [data] (sources,
# stages), then `glass data prepare` and `glass train`.

[run]
name = {name}
# Unused: checkpoint 0 holds imported weights, not a seeded initialisation.
seed = 0

[model]
# Mapped from {src}/config.json; must keep matching the imported weights.
vocab_size = {vocab}
d_model = {d}
n_layers = {layers}
n_heads = {heads}
n_kv_heads = {kv}
ffn_hidden = {ffn}
max_seq_len = {maxpos}
norm = "{norm}"
norm_eps = {eps:?}
rope_theta = {theta:?}
rotary_fraction = {rot:?}
tie_embeddings = {tied}
{tables}
[optim]
# Continued pretraining: a short warm-up, then cosine decay (AdamW moments start at zero).
lr = 3e-4
min_lr = 3e-5
warmup_steps = 20
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
weight_decay = 0.1
grad_clip = 1.0
decay_embeddings = false
decay_norms = false

[train]
micro_batch_rows = 4

[checkpoints]
log_spaced_early = false

[guard]
spike_factor = 0.0
spike_window = 20
skip = "batch"
skip_steps = []

[data]
seed = 1234
seq_len = {seq}
rows_per_step = 16
steps_per_chunk = 20
token_dtype = "auto"

[data.tokenizer]
# The imported tokenizer, copied into the run.
path = "tokenizer.json"
eos = {eos}
add_eos = true
{bos}add_bos = {add_bos}

[[data.sources]]
name = "english"
kind = "embedded"
embedded = "english"

[[data.sources]]
name = "heldout"
kind = "embedded"
embedded = "english-held-out"

[[data.stages]]
name = "continue"
tokens = 100000
weights = {{ english = 1.0 }}

[data.validation]
sources = ["heldout"]
rows = 16
"#,
        name = toml_str(name),
        src = src.display(),
        vocab = m.vocab_size,
        d = m.d_model,
        layers = m.n_layers,
        heads = m.n_heads,
        kv = m.n_kv_heads,
        ffn = m.ffn_hidden,
        maxpos = m.max_seq_len,
        eps = m.norm_eps,
        theta = m.rope_theta,
        tied = m.tie_embeddings,
        norm = match m.norm {
            glass_engine::NormKind::RmsNorm => "rmsnorm",
            glass_engine::NormKind::LayerNorm => "layernorm",
        },
        rot = m.rotary_fraction,
        tables = model_tables(m),
        seq = m.max_seq_len.min(128),
        eos = toml_str(&sp.eos),
        add_bos = sp.add_bos,
    )
}

/// `[model.mup]` and `[model.arch]` when they differ from plain LLaMA (CrystalCoder's
/// muP, the other suites' blocks), as TOML tables under `[model]`.
fn model_tables(m: &ModelConfig) -> String {
    #[derive(serde::Serialize)]
    struct Tables<'a> {
        model: ModelTables<'a>,
    }
    #[derive(serde::Serialize)]
    struct ModelTables<'a> {
        mup: Option<&'a glass_engine::MupConfig>,
        arch: Option<&'a glass_engine::ArchConfig>,
    }
    let t = Tables {
        model: ModelTables {
            mup: (m.mup != glass_engine::MupConfig::default()).then_some(&m.mup),
            arch: (!m.arch.is_llama()).then_some(&m.arch),
        },
    };
    match toml::to_string(&t) {
        Ok(s) if s.trim() != "[model]" => format!("\n{}", s.replace("[model]\n", "")),
        _ => String::new(),
    }
}

/// Hashes every regular file directly inside `src`, in name order.
fn source_files(src: &Path) -> Result<Vec<ExportedFile>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(src).map_err(io(src))? {
        let e = e.map_err(io(src))?;
        if e.file_type().map_err(io(e.path()))?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
        .par_iter()
        .map(|n| {
            let (sha256, bytes) = sha256_file(&src.join(n))?;
            Ok(ExportedFile {
                path: n.clone(),
                sha256,
                bytes,
            })
        })
        .collect()
}

/// A transformers folder's `config.json`, as JSON and mapped to a Glass model config.
pub fn read_config(src: &Path) -> Result<(Value, crate::hf_config::HfModelInfo)> {
    let cp = src.join("config.json");
    if !src.is_dir() {
        return Err(file_err(src, "is not a directory"));
    }
    let v: Value = serde_json::from_slice(
        &glass_io::open::open_regular(&cp)
            .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?,
    )
    .map_err(|e| file_err(&cp, format!("not valid JSON: {e}")))?;
    let info = from_hf(&v, &cp)?;
    Ok((v, info))
}

/// A transformers folder's weights as stored (for a weights-only import): the mapped
/// shards, read by [`stored_folder_tensors`].
pub struct StoredFolder {
    /// The folder's config facts.
    pub info: crate::hf_config::HfModelInfo,
    /// The model config.
    pub cfg: ModelConfig,
    /// The weight files.
    pub files: crate::weights::WeightFiles,
    /// The dtype `config.json` names, if any.
    pub want: Option<(safetensors::Dtype, String)>,
    /// `config.json`'s path.
    pub config_path: PathBuf,
    /// The shards, mapped read-only.
    pub maps: Vec<memmap2::Mmap>,
}

/// Maps a transformers folder's weight files for a weights-only import.
pub fn open_stored_folder(src: &Path) -> Result<StoredFolder> {
    let (v, info) = read_config(src)?;
    let cfg = info.cfg.clone().expect("mapped");
    let files = discover(src)?;
    if info.family == crate::families::Family::Llama {
        crate::weights::check_shapes(&files, &cfg)?;
    }
    let maps = crate::weights::map_shards(&files)?;
    Ok(StoredFolder {
        want: crate::weights::config_dtype(&v),
        info,
        cfg,
        files,
        config_path: src.join("config.json"),
        maps,
    })
}

/// The tensors of a folder opened by [`open_stored_folder`], in its source dtype, and
/// the load statistics ([`crate::weights::stored_tensors`]).
pub fn stored_folder_tensors(
    f: &StoredFolder,
) -> Result<(Vec<crate::weights::StoredTensor<'_>>, LoadStats)> {
    crate::weights::stored_tensors(
        &f.files,
        &f.maps,
        &f.cfg,
        f.want.clone(),
        &f.config_path,
        f.info.family,
        false,
    )
}

/// Safetensors views of stored tensors.
pub fn tensor_views<'a>(
    tensors: &'a [crate::weights::StoredTensor<'_>],
) -> Vec<glass_io::safetensors::TensorBytes<'a>> {
    tensors
        .iter()
        .map(|t| glass_io::safetensors::TensorBytes {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: &t.data,
        })
        .collect()
}

/// Options of [`import_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Keep the weights in their source dtype and write no optimizer state: a run that
    /// evaluates, generates and is analysed, but does not train (docs/hf-interop.md).
    pub weights_only: bool,
}

/// Reads a transformers folder's weights into a Glass model (also used by benchmarks and
/// tests). Returns the model, the load statistics and the config facts.
pub fn load_folder(
    src: &Path,
) -> Result<(
    Model,
    LoadStats,
    crate::hf_config::HfModelInfo,
    crate::weights::WeightFiles,
)> {
    let (_, info) = read_config(src)?;
    let cfg = info.cfg.clone().expect("mapped");
    let files = discover(src)?;
    if info.family != crate::families::Family::Llama {
        // Other families move tensors between layouts: read them as stored, moved into
        // the Glass layout, then widen each (any mix of dtypes) into the model.
        let maps = crate::weights::map_shards(&files)?;
        let (tensors, stats) = crate::weights::stored_tensors(
            &files,
            &maps,
            &cfg,
            None,
            &src.join("config.json"),
            info.family,
            true,
        )?;
        // Shapes were checked against the config above, before anything is allocated.
        let mut model = Model::zeros(&cfg)?;
        let layout = model.layout.clone();
        for (t, view) in tensors.iter().zip(layout.tensors()) {
            crate::weights::stored_to_f32(t.dtype, &t.data, &mut model.params[view.range()]);
        }
        drop(tensors);
        return Ok((model, stats, info, files));
    }
    crate::weights::check_shapes(&files, &cfg)?;
    let mut model = Model::zeros(&cfg)?;
    let stats = load_into(&files, &mut model)?;
    Ok((model, stats, info, files))
}

/// Creates `run_dir` from the transformers LLaMA folder `src`.
pub fn import(src: &Path, run_dir: &Path) -> Result<ImportReport> {
    import_with(src, run_dir, &ImportOptions::default())
}

/// The weights of an import: converted into an f32 model, or as stored.
enum Loaded<'a> {
    Model(Box<Model>),
    Stored(Vec<crate::weights::StoredTensor<'a>>),
}

/// [`import`] with options: `weights_only` keeps the weights in the source dtype.
pub fn import_with(src: &Path, run_dir: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    import_inner(src, run_dir, opts, None)
}

/// Where a folder made by a conversion (`glass import gguf`) came from: the run records
/// this file as its source instead of the intermediate folder.
pub struct ConvertedFrom {
    /// The original file, as the user named it.
    pub path: String,
    /// What the conversion recorded (format, hash, tensor types ...).
    pub record: Value,
}

/// [`import_with`] of a folder that a conversion of `from` just wrote.
pub fn import_converted(
    folder: &Path,
    run_dir: &Path,
    opts: &ImportOptions,
    from: &ConvertedFrom,
) -> Result<ImportReport> {
    import_inner(folder, run_dir, opts, Some(from))
}

fn import_inner(
    src: &Path,
    run_dir: &Path,
    opts: &ImportOptions,
    from: Option<&ConvertedFrom>,
) -> Result<ImportReport> {
    let t0 = Instant::now();
    if run_dir.join(glass_run::config::CONFIG_FILE).exists() {
        return Err(file_err(
            run_dir,
            "already holds a run; import into a new directory",
        ));
    }
    let tp = src.join("tokenizer.json");
    let tok_json = glass_io::open::open_regular(&tp)
        .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))
        .map_err(|e| {
            file_err(
                &tp,
                format!("{}; glass needs the fast tokenizer file (in Python: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) writes it)", e.source),
            )
        })?;
    let folder = if opts.weights_only {
        Some(open_stored_folder(src)?)
    } else {
        None
    };
    let (loaded, stats, info, files) = match &folder {
        Some(f) => {
            // Every check (dtype, names, shapes, finiteness) before anything is written.
            let (tensors, stats) = stored_folder_tensors(f)?;
            (
                Loaded::Stored(tensors),
                stats,
                f.info.clone(),
                f.files.clone(),
            )
        }
        None => {
            let (model, stats, info, files) = load_folder(src)?;
            (Loaded::Model(Box::new(model)), stats, info, files)
        }
    };
    let cfg = info.cfg.clone().expect("mapped");
    let sp = specials(src, &tok_json, info.bos_token_id, info.eos_token_id)?;
    let tcfg = TokenizerConfig {
        path: Some("tokenizer.json".into()),
        vocab_size: None,
        train_sources: None,
        min_frequency: 2,
        eos: sp.eos.clone(),
        add_eos: true,
        bos: sp.bos.clone(),
        add_bos: sp.add_bos,
        fim: FimTokens::default(),
    };
    let tok =
        GlassTokenizer::from_json(&tok_json, &tcfg).map_err(|e| file_err(&tp, e.to_string()))?;
    if tok.vocab_size() > cfg.vocab_size {
        return Err(file_err(
            &tp,
            format!(
                "the tokenizer has {} ids but config.json vocab_size is {}; tokens past the embedding would be unusable",
                tok.vocab_size(),
                cfg.vocab_size
            ),
        ));
    }
    let vocab_note = (tok.vocab_size() != cfg.vocab_size).then(|| {
        format!(
            "the tokenizer has {} ids, the model {} rows: generation and evaluation work; `glass train` needs them equal",
            tok.vocab_size(),
            cfg.vocab_size
        )
    });
    let source = source_files(src)?;
    let name = run_dir
        .file_name()
        .map_or("imported".into(), |n| n.to_string_lossy().into_owned());
    let shown_path = from.map(|f| PathBuf::from(&f.path));
    let text = run_toml(&name, shown_path.as_deref().unwrap_or(src), &cfg, &sp);
    let format = match files.format {
        WeightFormat::Safetensors => "safetensors",
        WeightFormat::PytorchBin => "pytorch",
    };
    let shard_names: Vec<String> = files
        .shards
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let src_shown = from.map_or_else(|| src.display().to_string(), |f| f.path.clone());
    let record = json!({
        "format": "huggingface",
        "source_dir": src_shown,
        "converted_from": from.map(|f| &f.record),
        "files": source,
        "weights": {
            "format": format,
            "index": files.index.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
            "shards": shard_names,
            "dtypes": stats.dtypes,
            "tensors": stats.tensors,
            "tensor_bytes": stats.bytes,
            "skipped": stats.skipped,
            "weights_only": opts.weights_only,
        },
        "config": {
            "ignored_keys": info.ignored,
            "bos_token_id": info.bos_token_id,
            "eos_token_id": info.eos_token_id,
        },
        "tokenizer": {"eos": sp.eos, "bos": sp.bos, "add_bos": sp.add_bos, "ids": tok.vocab_size()},
        "glass_version": env!("CARGO_PKG_VERSION"),
    });
    let mut record_bytes = serde_json::to_vec_pretty(&record).expect("json");
    record_bytes.push(b'\n');
    let (manifest, checkpoint_dtype) = match &loaded {
        Loaded::Model(model) => (
            glass_run::create_imported_run(
                run_dir,
                &glass_run::ImportedRun {
                    config_text: &text,
                    model,
                    tokenizer_json: &tok_json,
                    record_json: &record_bytes,
                    source_dir: &src_shown,
                },
            )?,
            "f32".to_string(),
        ),
        Loaded::Stored(tensors) => {
            let views = tensor_views(tensors);
            let dtype = views
                .first()
                .map_or("f32", |t| crate::weights::dtype_lower(t.dtype));
            (
                glass_run::create_weights_only_run(
                    run_dir,
                    &glass_run::WeightsOnlyRun {
                        config_text: &text,
                        model: &cfg,
                        tensors: &views,
                        tokenizer_json: &tok_json,
                        record_json: &record_bytes,
                        source_dir: &src_shown,
                    },
                )?,
                dtype.to_string(),
            )
        }
    };
    let checkpoint_bytes = manifest.checkpoints[0]
        .files
        .iter()
        .filter(|f| f.path.starts_with("checkpoints/"))
        .map(|f| f.bytes)
        .sum();
    Ok(ImportReport {
        run_dir: run_dir.to_path_buf(),
        model: Some(cfg),
        format: format.into(),
        shards: files.shards.len(),
        tensors: stats.tensors,
        tensor_bytes: stats.bytes,
        dtypes: stats.dtypes,
        ignored_config_keys: info.ignored,
        skipped_tensors: stats.skipped,
        checkpoint_sha256: manifest.checkpoints[0].sha256.clone(),
        weights_only: opts.weights_only,
        checkpoint_dtype,
        checkpoint_bytes,
        vocab_note,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
