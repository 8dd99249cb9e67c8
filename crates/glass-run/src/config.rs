//! `glass.toml`: the one file that, with the data, determines every bit of a run.
//!
//! Top-level tables: `[run]`, `[model]`, `[optim]`, `[train]`, `[checkpoints]`,
//! `[guard]` and `[data]` (owned by `glass-data`). Unknown tables and keys are errors
//! naming the key.

use std::path::{Path, PathBuf};

use glass_engine::{AdamWConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};

/// Name of the config file inside a run directory.
pub const CONFIG_FILE: &str = "glass.toml";

const TABLES: &[&str] = &[
    "run",
    "model",
    "optim",
    "train",
    "checkpoints",
    "guard",
    "data",
];

/// `[run]`: identity and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Human-readable name.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of the weight initialisation (the data order has its own seed in `[data]`).
    #[serde(default)]
    pub seed: u64,
}

fn default_name() -> String {
    "glass-run".into()
}

/// `[optim]`: AdamW plus the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (Amber: 3e-4).
    pub lr: f32,
    /// Floor reached by the cosine decay at the last step (Amber: 3e-5).
    pub min_lr: f32,
    /// Linear warm-up steps (Amber: 2000).
    pub warmup_steps: u64,
    /// Step at which the cosine decay reaches `min_lr` (it stays there afterwards);
    /// absent: the last step. An earlier value decays earlier, e.g. in a branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay_end_step: Option<u64>,
    /// AdamW hyperparameters.
    #[serde(flatten)]
    pub adamw: AdamWConfig,
}

/// `[train]`: how a step's global batch is computed on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Rows per micro-batch (gradient accumulation); does not change the result's math,
    /// only rounding, so it is part of the config.
    pub micro_batch_rows: usize,
    /// Gradient groups per step (a power of two dividing `[data] rows_per_step`): the
    /// step's gradient is a fixed pairwise tree over them, which every data-parallel
    /// world size dividing it reproduces bit for bit. Default: see
    /// [`crate::dist::default_grad_groups`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_groups: Option<usize>,
}

impl TrainSection {
    /// The gradient groups of a step of `rows_per_step` rows, checked.
    pub fn resolved_grad_groups(&self, rows_per_step: usize, path: &Path) -> Result<usize> {
        match self.grad_groups {
            None => Ok(crate::dist::default_grad_groups(
                rows_per_step,
                self.micro_batch_rows,
            )),
            Some(g) if g.is_power_of_two() && rows_per_step.is_multiple_of(g) => Ok(g),
            Some(g) => Err(RunError::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "[train] grad_groups = {g} must be a power of two dividing [data] rows_per_step = {rows_per_step}; valid: {}",
                    glass_dist::valid_world_sizes(rows_per_step & rows_per_step.wrapping_neg())
                        .iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

/// `[checkpoints]`: the checkpoint plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Also checkpoint at steps 1, 2, 4, 8, … before the first chunk boundary (Pythia).
    #[serde(default)]
    pub log_spaced_early: bool,
}

/// What the guard skips after a bad step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipUnit {
    /// Only the offending step's batch.
    Batch,
    /// The rest of the offending data chunk.
    Chunk,
}

/// `[guard]`: NaN / spike handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSection {
    /// A loss above `spike_factor ×` the mean of the previous `spike_window` losses counts
    /// as a spike; `0` disables spike detection (non-finite values are always caught).
    #[serde(default)]
    pub spike_factor: f64,
    /// Losses averaged for the spike rule.
    #[serde(default = "default_window")]
    pub spike_window: usize,
    /// What to skip after rolling back.
    #[serde(default = "default_skip")]
    pub skip: SkipUnit,
    /// Steps whose data is skipped from the start (no update is made for them).
    #[serde(default)]
    pub skip_steps: Vec<u64>,
    /// Data chunks whose steps are all skipped (chunk `c` holds steps
    /// `[c·steps_per_chunk, (c+1)·steps_per_chunk)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_chunks: Vec<u64>,
}

fn default_window() -> usize {
    20
}
fn default_skip() -> SkipUnit {
    SkipUnit::Batch
}

impl Default for GuardSection {
    fn default() -> Self {
        GuardSection {
            spike_factor: 0.0,
            spike_window: default_window(),
            skip: SkipUnit::Batch,
            skip_steps: vec![],
            skip_chunks: vec![],
        }
    }
}

/// A parsed, validated `glass.toml`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `[run]`.
    pub run: RunSection,
    /// `[model]` resolved (preset plus overrides).
    pub model: ModelConfig,
    /// `[optim]`.
    pub optim: OptimConfig,
    /// `[train]`.
    pub train: TrainSection,
    /// `[checkpoints]`.
    pub checkpoints: CheckpointSection,
    /// `[guard]`.
    pub guard: GuardSection,
    /// The file's exact text (hashed into the manifest).
    pub text: String,
}

impl RunConfig {
    /// Reads and validates `RUN/glass.toml`.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(CONFIG_FILE);
        let bytes = glass_io::open::read_beneath(run_dir, &path, glass_io::open::MAX_RECORD_BYTES)
            .map_err(|e| RunError::Config {
                path: path.clone(),
                msg: format!(
                    "cannot read ({}); create the run with `glass init {}`",
                    e.source,
                    run_dir.display()
                ),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| RunError::Config {
            path: path.clone(),
            msg: "not UTF-8".into(),
        })?;
        Self::parse(&text, &path)
    }

    /// Parses config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |msg: String| RunError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let value: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        for key in value.keys() {
            if !TABLES.contains(&key.as_str()) {
                return Err(err(format!(
                    "unknown table `[{key}]`; expected one of {}",
                    TABLES.join(", ")
                )));
            }
        }
        let table = |name: &str| {
            value
                .get(name)
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()))
        };
        fn section<T: serde::de::DeserializeOwned>(
            v: toml::Value,
            name: &str,
            path: &Path,
        ) -> Result<T> {
            T::deserialize(v).map_err(|e| RunError::Config {
                path: path.to_path_buf(),
                msg: format!("[{name}]: {e}"),
            })
        }
        let model = resolve_model(table("model"), path)?;
        let optim: OptimConfig = section(table("optim"), "optim", path)?;
        let train: TrainSection = section(table("train"), "train", path)?;
        let cfg = RunConfig {
            run: section(table("run"), "run", path)?,
            model,
            optim,
            train,
            checkpoints: section(table("checkpoints"), "checkpoints", path)?,
            guard: section(table("guard"), "guard", path)?,
            text: text.to_string(),
        };
        if cfg.train.micro_batch_rows == 0 {
            return Err(err("[train] micro_batch_rows must be at least 1".into()));
        }
        check_micro_batch(&value, cfg.train.micro_batch_rows).map_err(err)?;
        let o = &cfg.optim;
        if !(o.lr.is_finite()
            && o.lr > 0.0
            && o.min_lr.is_finite()
            && o.min_lr >= 0.0
            && o.min_lr <= o.lr)
        {
            return Err(err(
                "[optim] needs finite lr > 0 and 0 <= min_lr <= lr".into()
            ));
        }
        if !(cfg.guard.spike_factor.is_finite() && cfg.guard.spike_factor >= 0.0) {
            return Err(err(
                "[guard] spike_factor must be >= 0 (0 disables the spike rule)".into(),
            ));
        }
        validate_ranges(&cfg).map_err(err)?;
        Ok(cfg)
    }

    /// Path of the config inside `run_dir`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(CONFIG_FILE)
    }
}

/// Range checks of every number outside `[model]` beyond what the types enforce, so a
/// run never "succeeds" while its optimizer produces NaN or does nothing.
fn validate_ranges(cfg: &RunConfig) -> std::result::Result<(), String> {
    cfg.optim
        .adamw
        .validate()
        .map_err(|e| format!("[optim] {e}"))?;
    if cfg.optim.lr > 1e3 {
        return Err(format!(
            "[optim] lr = {} is absurd (Amber: 3e-4); set a learning rate below 1000",
            cfg.optim.lr
        ));
    }
    if cfg.train.micro_batch_rows > 1 << 20 {
        return Err(format!(
            "[train] micro_batch_rows = {} is larger than glass supports (2^20)",
            cfg.train.micro_batch_rows
        ));
    }
    let w = cfg.guard.spike_window;
    if w == 0 || w > 1 << 20 {
        return Err(format!(
            "[guard] spike_window = {w} must be between 1 and 2^20"
        ));
    }
    Ok(())
}

/// `[model]` is either a full model table or `preset = "NAME"` plus overriding keys.
fn resolve_model(v: toml::Value, path: &Path) -> Result<ModelConfig> {
    let err = |msg: String| RunError::Config {
        path: path.to_path_buf(),
        msg: format!("[model]: {msg}"),
    };
    let mut table = match v {
        toml::Value::Table(t) => t,
        _ => return Err(err("must be a table".into())),
    };
    let merged = match table.remove("preset") {
        Some(toml::Value::String(name)) => {
            let base = ModelConfig::preset(&name).map_err(|e| err(e.to_string()))?;
            let mut base_table = toml::Table::try_from(&base).map_err(|e| err(e.to_string()))?;
            for (k, v) in table {
                if !base_table.contains_key(&k) {
                    return Err(err(format!("unknown key `{k}`")));
                }
                base_table.insert(k, v);
            }
            base_table
        }
        Some(_) => return Err(err("`preset` must be a string".into())),
        None => table,
    };
    let cfg =
        ModelConfig::deserialize(toml::Value::Table(merged)).map_err(|e| err(e.to_string()))?;
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

/// The learning rate at `step` (0-based): linear warm-up to `lr` over `warmup_steps`,
/// then cosine decay to `min_lr` at `total_steps` (or at `decay_end_step` when set and
/// earlier), constant `min_lr` after it.
pub fn lr_at(o: &OptimConfig, step: u64, total_steps: u64) -> f32 {
    if step < o.warmup_steps {
        return o.lr * (step + 1) as f32 / o.warmup_steps as f32;
    }
    let end = o.decay_end_step.map_or(total_steps, |e| e.min(total_steps));
    let span = end.saturating_sub(o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps) as f64 / span).min(1.0);
    let cos = 0.5 * (1.0 + glass_engine::ops::fastmath::cos_f64(std::f64::consts::PI * progress));
    (o.min_lr as f64 + (o.lr - o.min_lr) as f64 * cos) as f32
}

/// A step's rows must split into whole micro-batches: a short last micro-batch would
/// change the shape of the engine's work every step. `[data]` belongs to `glass-data`;
/// only this relation between the two tables is checked here.
fn check_micro_batch(
    value: &toml::Table,
    micro_batch_rows: usize,
) -> std::result::Result<(), String> {
    let rows = value
        .get("data")
        .and_then(|d| d.get("rows_per_step"))
        .and_then(|v| v.as_integer());
    match rows {
        Some(r) if r > 0 && r % micro_batch_rows as i64 != 0 => Err(format!(
            "[data] rows_per_step = {r} is not a multiple of [train] micro_batch_rows = \
             {micro_batch_rows}; set micro_batch_rows to a divisor of rows_per_step"
        )),
        _ => Ok(()),
    }
}

/// `[train] micro_batch_rows` of a new run whose steps have `rows_per_step` rows: the
/// preset's micro-batch (4 rows for the 7B presets, 16 otherwise), lowered to the largest
/// divisor of `rows_per_step` that leaves [`crate::dist::MAX_DEFAULT_GROUPS`] (8) rows'
/// worth of gradient groups, so that the default `grad_groups` is 8 whenever 16 divides
/// `rows_per_step`: the run launches unchanged on 1, 2, 4 and 8 ranks. Never below 2 rows
/// (where the step has them): one-row micro-batches cost the default run (`glass demo`,
/// 4-row steps) about 30 % of its training time, so its steps have 2 groups (1 or 2
/// ranks); more ranks need `grad_groups` set (docs/scaling.md).
pub fn init_micro_batch_rows(preset: &str, rows_per_step: usize) -> usize {
    let cap = if preset == "amber-7b" || preset == "crystalcoder-7b" {
        4
    } else {
        16
    };
    let floor = rows_per_step.clamp(1, 2);
    let most = (rows_per_step / crate::dist::MAX_DEFAULT_GROUPS).clamp(floor, cap);
    (1..=most)
        .rev()
        .find(|m| rows_per_step.is_multiple_of(*m))
        .unwrap_or(1)
}

/// The commented `glass.toml` written by `glass init` (everything but `[data]`), for
/// steps of `rows_per_step` rows.
pub fn init_toml(preset: &str, name: &str, rows_per_step: usize) -> Result<String> {
    let model = ModelConfig::preset(preset).map_err(|e| RunError::Invalid(e.to_string()))?;
    let amber = preset == "amber-7b" || preset == "crystalcoder-7b";
    let (lr, min_lr, warmup) = if amber {
        ("3e-4", "3e-5", 2000)
    } else {
        ("3e-3", "3e-4", 20)
    };
    let micro = init_micro_batch_rows(preset, rows_per_step);
    let _ = model;
    Ok(format!(
        r#"# Glass run configuration. With the data below and the seeds, this file determines
# every bit of the run: same file + same data => bit-identical checkpoints on any
# number of threads. Unknown keys are errors.

[run]
name = "{name}"
# Seed of the weight initialisation.
seed = 0

[model]
# A named preset ({presets}); any model key below overrides it,
# e.g. `n_layers = 2` or a whole table of vocab_size, d_model, n_layers, n_heads,
# n_kv_heads, ffn_hidden, max_seq_len, norm, norm_eps, rope_theta, rotary_fraction,
# tie_embeddings and [model.mup]. vocab_size must equal the tokenizer's.
# [model.mup] is CrystalCoder's muP (absent = plain LLaMA): embedding_multiplier,
# output_logit_multiplier, attention_scale ("inv_sqrt_d" or "inv_d"), lr_multipliers
# {{ embedding, hidden, norm, output }}, and the initialisation: init_std (0.02, the
# embedding's std), base_width (the width the hyperparameters were tuned at: hidden
# matrices and the LM head start with std init_std * sqrt(base_width / d_model); 0 = no
# width scaling) and scale_residual_init (o_proj and down_proj also / sqrt(2 * n_layers)).
preset = "{preset}"

[optim]
# AdamW with linear warm-up then cosine decay to min_lr at the last step
# (Amber: 3e-4 -> 3e-5, 2000 warm-up steps, betas 0.9/0.95, wd 0.1, clip 1.0).
lr = {lr}
min_lr = {min_lr}
warmup_steps = {warmup}
# The cosine reaches min_lr at this step instead of the last one, then stays there:
# decay_end_step = 1000
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
weight_decay = 0.1
grad_clip = 1.0
decay_embeddings = false
decay_norms = false

[train]
# Rows per micro-batch; the step's global batch ([data] rows_per_step) is accumulated
# from micro-batches of this size, so it must divide rows_per_step. Chosen so that a step
# has 8 gradient groups (below): larger micro-batches are faster in one process, but
# fewer groups allow fewer ranks.
micro_batch_rows = {micro}
# The step's gradient is a fixed pairwise tree over this many groups of rows, so
# `mpirun -n W glass train` gives the same bits for every power-of-two W dividing it.
# Default: the largest power of two <= rows_per_step / micro_batch_rows (at most 8).
# More ranks need more groups (a power of two dividing rows_per_step; each group's rows
# are then split into micro-batches of at most micro_batch_rows):
# grad_groups = 16

[checkpoints]
# One checkpoint per data chunk (LLM360-style) is always written, plus step 0.
# Also checkpoint at steps 1, 2, 4, 8, ... inside the first chunk (Pythia-style):
log_spaced_early = true

[guard]
# Non-finite loss or gradient norm => roll back to the last checkpoint, skip, record.
# Spike rule: loss > spike_factor x mean of the last spike_window losses (0 = off).
spike_factor = 0.0
spike_window = 20
# Skip the offending "batch" or the rest of its "chunk".
skip = "batch"
# Steps whose data is skipped from the start (data consumed, no update).
skip_steps = []
# Data chunks whose steps are all skipped: skip_chunks = [3]

"#,
        presets = glass_engine::PRESETS.join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        init_toml("tiny", "t", 16).unwrap()
    }

    #[test]
    fn init_config_parses_and_presets_resolve() {
        let c = RunConfig::parse(&base(), Path::new("glass.toml")).unwrap();
        assert_eq!(c.model, ModelConfig::preset("tiny").unwrap());
        let c = RunConfig::parse(
            &base().replacen(
                "preset = \"tiny\"\n",
                "preset = \"tiny\"\nn_layers = 2\n",
                1,
            ),
            Path::new("g"),
        )
        .unwrap();
        assert_eq!(c.model.n_layers, 2);
    }

    #[test]
    fn rows_per_step_must_split_into_micro_batches() {
        let with_rows = |r: u32| format!("{}\n[data]\nrows_per_step = {r}\n", base());
        let micro = RunConfig::parse(&base(), Path::new("g"))
            .unwrap()
            .train
            .micro_batch_rows as u32;
        assert!(RunConfig::parse(&with_rows(2 * micro), Path::new("g")).is_ok());
        let e = RunConfig::parse(&with_rows(2 * micro + 1), Path::new("g"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rows_per_step") && e.contains("micro_batch_rows"),
            "{e}"
        );
    }

    #[test]
    fn new_runs_have_eight_gradient_groups() {
        for preset in glass_engine::PRESETS {
            for rows in [16, 32, 64, 1024] {
                let text = format!(
                    "{}\n[data]\nrows_per_step = {rows}\n",
                    init_toml(preset, "t", rows).unwrap()
                );
                let c = RunConfig::parse(&text, Path::new("g")).unwrap();
                let g = c.train.resolved_grad_groups(rows, Path::new("g")).unwrap();
                assert_eq!(g, 8, "{preset}, {rows} rows per step");
                assert_eq!(
                    glass_dist::valid_world_sizes(g),
                    vec![1, 2, 4, 8],
                    "{preset}"
                );
            }
        }
        // The preset's micro-batch where the rows allow it; never a non-divisor.
        assert_eq!(init_micro_batch_rows("small", 16), 2);
        assert_eq!(init_micro_batch_rows("small", 1024), 16);
        assert_eq!(init_micro_batch_rows("amber-7b", 1024), 4);
        assert_eq!(init_micro_batch_rows("tiny", 40), 5);
        // Never one-row micro-batches where the step has two rows or more.
        assert_eq!(init_micro_batch_rows("tiny", 12), 2);
        assert_eq!(init_micro_batch_rows("tiny", 8), 2);
        assert_eq!(init_micro_batch_rows("tiny", 4), 2);
        assert_eq!(init_micro_batch_rows("tiny", 3), 1);
        assert_eq!(init_micro_batch_rows("tiny", 1), 1);
    }

    #[test]
    fn unknown_keys_and_tables_are_named() {
        let e = RunConfig::parse(
            &base().replacen("[optim]\n", "[optim]\nlrate = 1\n", 1),
            Path::new("g"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lrate"), "{e}");
        let e = RunConfig::parse(&format!("{}\n[optimiser]\n", base()), Path::new("g"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("optimiser"), "{e}");
        let e = RunConfig::parse(
            &base().replacen("preset = \"tiny\"\n", "preset = \"tiny\"\nlayers = 2\n", 1),
            Path::new("g"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("layers"), "{e}");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_floor() {
        let o = OptimConfig {
            lr: 3e-4,
            min_lr: 3e-5,
            warmup_steps: 2000,
            decay_end_step: None,
            adamw: AdamWConfig::default(),
        };
        assert!((lr_at(&o, 0, 10_000) - 3e-4 / 2000.0).abs() < 1e-12);
        assert!((lr_at(&o, 1999, 10_000) - 3e-4).abs() < 1e-9);
        assert!(
            (lr_at(&o, 6000, 10_000) - 1.65e-4).abs() < 1e-7,
            "half way: midpoint"
        );
        assert!((lr_at(&o, 10_000, 10_000) - 3e-5).abs() < 1e-9);
        let early = OptimConfig {
            decay_end_step: Some(6000),
            ..o.clone()
        };
        assert_eq!(lr_at(&early, 1999, 10_000), lr_at(&o, 1999, 10_000));
        assert!((lr_at(&early, 4000, 10_000) - 1.65e-4).abs() < 1e-7);
        assert!((lr_at(&early, 6000, 10_000) - 3e-5).abs() < 1e-9);
        assert!((lr_at(&early, 8000, 10_000) - 3e-5).abs() < 1e-9);
    }

    #[test]
    fn amber_preset_defaults_follow_llm360() {
        let c = RunConfig::parse(&init_toml("amber-7b", "a", 16).unwrap(), Path::new("g")).unwrap();
        assert_eq!(
            (c.optim.lr, c.optim.min_lr, c.optim.warmup_steps),
            (3e-4, 3e-5, 2000)
        );
        assert_eq!(
            (
                c.optim.adamw.beta1,
                c.optim.adamw.beta2,
                c.optim.adamw.weight_decay,
                c.optim.adamw.grad_clip
            ),
            (0.9, 0.95, 0.1, 1.0)
        );
    }
}
