//! `glass diff RUN_A RUN_B`: two runs side by side from their common checkpoint — per
//! checkpoint the validation loss, evaluation scores, memorization and whether the bits
//! are the same, and the data difference (which steps trained on different rows, and how
//! many tokens per source each side trained on there).
//!
//! Steps are aligned by their distance from the common checkpoint: for a branch that
//! continues its parent's stream that is the same step number in both runs; for a
//! continued-pretraining branch, the branch's step 0 faces the parent checkpoint's step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use glass_data::PreparedData;
use serde::Serialize;

use crate::checkpoint::{CheckpointState, MODEL_FILE, OPTIMIZER_FILE};
use crate::error::{Result, RunError};
use crate::integrity;
use crate::manifest::RunManifest;
use crate::metrics::{Metrics, METRICS_FILE};

/// One run of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRun {
    /// The directory as given.
    pub run_dir: String,
    /// Its run id.
    pub run_id: String,
    /// Its lineage, as `glass info` shows it.
    pub parent: Option<crate::manifest::Parent>,
}

/// Where the two runs last shared their state.
#[derive(Debug, Clone, Serialize)]
pub struct CommonPoint {
    /// Checkpoint index in A.
    pub a_checkpoint: u32,
    /// Its step in A.
    pub a_step: u64,
    /// Checkpoint index in B.
    pub b_checkpoint: u32,
    /// Its step in B.
    pub b_step: u64,
    /// The shared checkpoint's hash (the parent's checkpoint, which a branch's
    /// checkpoint 0 names as predecessor).
    pub sha256: String,
}

/// One run's side of a checkpoint row.
#[derive(Debug, Clone, Serialize)]
pub struct DiffSide {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Data step.
    pub step: u64,
    /// Checkpoint hash.
    pub sha256: String,
    /// sha256 of its `model.safetensors`.
    pub model_sha256: String,
    /// sha256 of its `optimizer.safetensors`.
    pub optimizer_sha256: String,
    /// Held-out loss.
    pub val_loss: Option<f64>,
    /// `glass eval` results: `task/metric` → value.
    pub evals: BTreeMap<String, f64>,
    /// `glass analyze memorization`: mean token-match rate over the measured chunks.
    pub memorization_token_match: Option<f64>,
    /// Mean full-match rate.
    pub memorization_full_match: Option<f64>,
}

/// One row of the side-by-side table: checkpoints at the same distance from the common
/// point.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    /// Steps since the common checkpoint.
    pub offset: u64,
    /// A's checkpoint there, if it has one.
    pub a: Option<DiffSide>,
    /// B's checkpoint there, if it has one.
    pub b: Option<DiffSide>,
    /// Both have one and their weights are bit-identical.
    pub same_model: bool,
    /// Both have one and their AdamW states are bit-identical.
    pub same_optimizer: bool,
}

/// What the two runs trained on, step by step, from the common point.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DataDiff {
    /// Steps compared (from the common point to the last step both published).
    pub steps_compared: u64,
    /// The steps (offsets from the common point) at which the two runs trained on
    /// different rows — including steps one of them skipped — as `[first, end)` ranges.
    pub differing: Vec<[u64; 2]>,
    /// Number of differing steps.
    pub differing_steps: u64,
    /// At those steps: row tokens A trained on, per source.
    pub a_tokens: BTreeMap<String, u64>,
    /// At those steps: row tokens B trained on, per source.
    pub b_tokens: BTreeMap<String, u64>,
    /// Steps (offsets) A skipped and B did not.
    pub a_only_skipped: u64,
    /// Steps (offsets) B skipped and A did not.
    pub b_only_skipped: u64,
}

/// `glass diff` output.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Run A.
    pub a: DiffRun,
    /// Run B.
    pub b: DiffRun,
    /// The common checkpoint.
    pub common: CommonPoint,
    /// Tables of `glass.toml` whose text differs (`run`, `optim`, `guard`, …).
    pub config_tables: Vec<String>,
    /// Checkpoints side by side.
    pub checkpoints: Vec<DiffRow>,
    /// The data difference.
    pub data: DataDiff,
}

struct Side<'a> {
    dir: &'a Path,
    m: RunManifest,
}

/// Compares `a` and `b` from their common checkpoint.
pub fn diff(a: &Path, b: &Path) -> Result<DiffReport> {
    let sa = Side {
        dir: a,
        m: RunManifest::require(a)?,
    };
    let sb = Side {
        dir: b,
        m: RunManifest::require(b)?,
    };
    let common = common_point(&sa, &sb)?;
    let config_tables = config_tables(a, b)?;
    let (rows_a, skips_a) = sides(&sa, common.a_checkpoint)?;
    let (rows_b, skips_b) = sides(&sb, common.b_checkpoint)?;
    let mut by_offset: BTreeMap<u64, (Option<DiffSide>, Option<DiffSide>)> = BTreeMap::new();
    for s in rows_a {
        let off = s.step - common.a_step;
        by_offset.entry(off).or_default().0 = Some(s);
    }
    for s in rows_b {
        let off = s.step - common.b_step;
        by_offset.entry(off).or_default().1 = Some(s);
    }
    let checkpoints = by_offset
        .into_iter()
        .map(|(offset, (a, b))| {
            let both = |f: fn(&DiffSide) -> &String| match (&a, &b) {
                (Some(x), Some(y)) => f(x) == f(y),
                _ => false,
            };
            DiffRow {
                offset,
                same_model: both(|s| &s.model_sha256),
                same_optimizer: both(|s| &s.optimizer_sha256),
                a,
                b,
            }
        })
        .collect();
    let end_a = sa.m.checkpoints.last().map_or(0, |c| c.step);
    let end_b = sb.m.checkpoints.last().map_or(0, |c| c.step);
    let n = end_a
        .saturating_sub(common.a_step)
        .min(end_b.saturating_sub(common.b_step));
    let data = data_diff(
        (a, common.a_step, &skips_a),
        (b, common.b_step, &skips_b),
        n,
    )?;
    Ok(DiffReport {
        a: DiffRun {
            run_dir: a.display().to_string(),
            run_id: sa.m.run_id.clone(),
            parent: sa.m.parent.clone(),
        },
        b: DiffRun {
            run_dir: b.display().to_string(),
            run_id: sb.m.run_id.clone(),
            parent: sb.m.parent.clone(),
        },
        common,
        config_tables,
        checkpoints,
        data,
    })
}

/// The common checkpoint of two runs: one is a branch of the other, or both branch from
/// the same checkpoint of a third run, or they are the same run.
fn common_point(a: &Side, b: &Side) -> Result<CommonPoint> {
    let entry = |s: &Side, k: u32| -> Result<(u64, String)> {
        let (e, _) = integrity::checked_entry(s.dir, &s.m, k)?;
        Ok((e.step, e.sha256))
    };
    // `child` is a branch of `parent` at checkpoint K when its lineage names K's hash.
    let branch_of = |child: &Side, parent: &Side| -> Result<Option<(u32, u64, String)>> {
        match &child.m.parent {
            Some(p) if p.run_id == parent.m.run_id => {
                let (step, sha) = entry(parent, p.checkpoint)?;
                if sha != p.checkpoint_sha256 {
                    return Err(RunError::Invalid(format!(
                        "{} names {} checkpoint {} with hash {}, but it is now {sha}; run `glass verify {}`",
                        child.dir.display(),
                        parent.dir.display(),
                        p.checkpoint,
                        p.checkpoint_sha256,
                        parent.dir.display()
                    )));
                }
                Ok(Some((p.checkpoint, step, sha)))
            }
            _ => Ok(None),
        }
    };
    let first = |s: &Side| -> Result<u64> { Ok(entry(s, 0)?.0) };
    if let Some((k, step, sha)) = branch_of(b, a)? {
        return Ok(CommonPoint {
            a_checkpoint: k,
            a_step: step,
            b_checkpoint: 0,
            b_step: first(b)?,
            sha256: sha,
        });
    }
    if let Some((k, step, sha)) = branch_of(a, b)? {
        return Ok(CommonPoint {
            a_checkpoint: 0,
            a_step: first(a)?,
            b_checkpoint: k,
            b_step: step,
            sha256: sha,
        });
    }
    match (&a.m.parent, &b.m.parent) {
        (Some(x), Some(y)) if x.checkpoint_sha256 == y.checkpoint_sha256 => Ok(CommonPoint {
            a_checkpoint: 0,
            a_step: first(a)?,
            b_checkpoint: 0,
            b_step: first(b)?,
            sha256: x.checkpoint_sha256.clone(),
        }),
        _ if a.m.run_id == b.m.run_id => Ok(CommonPoint {
            a_checkpoint: 0,
            a_step: first(a)?,
            b_checkpoint: 0,
            b_step: first(b)?,
            sha256: entry(a, 0)?.1,
        }),
        _ => Err(RunError::Invalid(format!(
            "{} and {} share no checkpoint: neither is a branch of the other (`glass train NEW --from RUN --checkpoint K`) and they do not branch from the same checkpoint",
            a.dir.display(),
            b.dir.display()
        ))),
    }
}

/// Every checkpoint from `from` on, with its metrics; and the steps the run skipped
/// (from its last checkpoint's state, which records all of them).
fn sides(s: &Side, from: u32) -> Result<(Vec<DiffSide>, BTreeSet<u64>)> {
    let metrics = if s.dir.join(METRICS_FILE).exists() {
        Some(Metrics::open_read_only(s.dir)?)
    } else {
        None
    };
    let mut evals: BTreeMap<u32, BTreeMap<String, f64>> = BTreeMap::new();
    let mut memo: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    if let Some(m) = &metrics {
        for r in m.evals()? {
            evals
                .entry(r.checkpoint)
                .or_default()
                .insert(format!("{}/{}", r.task, r.metric), r.value);
        }
        for (k, t, f) in m.memorization_means()? {
            memo.insert(k, (t, f));
        }
    }
    let mut out = Vec::new();
    let mut last: Option<CheckpointState> = None;
    for c in s.m.checkpoints.iter().filter(|c| c.index >= from) {
        let (e, st) = integrity::checked_entry(s.dir, &s.m, c.index)?;
        let file = |name: &str| {
            e.files
                .iter()
                .find(|f| f.path.ends_with(name))
                .map_or(String::new(), |f| f.sha256.clone())
        };
        out.push(DiffSide {
            checkpoint: e.index,
            step: e.step,
            sha256: e.sha256.clone(),
            model_sha256: file(MODEL_FILE),
            optimizer_sha256: file(OPTIMIZER_FILE),
            val_loss: e.val_loss,
            evals: evals.remove(&e.index).unwrap_or_default(),
            memorization_token_match: memo.get(&e.index).map(|m| m.0),
            memorization_full_match: memo.get(&e.index).map(|m| m.1),
        });
        last = Some(st);
    }
    let skips = last.map_or_else(BTreeSet::new, |st| st.skipped_steps.into_iter().collect());
    Ok((out, skips))
}

/// Top-level tables of the two `glass.toml` files whose values differ.
fn config_tables(a: &Path, b: &Path) -> Result<Vec<String>> {
    let read = |dir: &Path| -> Result<toml::Table> {
        let p = crate::config::RunConfig::path(dir);
        let text = String::from_utf8(glass_io::open::read_beneath(
            dir,
            &p,
            glass_io::open::MAX_RECORD_BYTES,
        )?)
        .map_err(|_| RunError::Config {
            path: p.clone(),
            msg: "not UTF-8".into(),
        })?;
        toml::from_str(&text).map_err(|e| RunError::Config {
            path: p,
            msg: e.to_string(),
        })
    };
    let (x, y) = (read(a)?, read(b)?);
    let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .map(|k| k.to_string())
        .collect())
}

/// Step-by-step comparison of what the two runs trained on over `n` steps from their
/// common point.
fn data_diff(
    (a, a0, skips_a): (&Path, u64, &BTreeSet<u64>),
    (b, b0, skips_b): (&Path, u64, &BTreeSet<u64>),
    n: u64,
) -> Result<DataDiff> {
    let mut d = DataDiff {
        steps_compared: n,
        ..Default::default()
    };
    if n == 0 {
        return Ok(d);
    }
    let da = PreparedData::open(a)?;
    let db = PreparedData::open(b)?;
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let (mut ta_tokens, mut tb_tokens) = (SourceTokens::default(), SourceTokens::default());
    for i in 0..n {
        let (sa, sb) = (a0 + i, b0 + i);
        let (ta, tb) = (!skips_a.contains(&sa), !skips_b.contains(&sb));
        let same = match (ta, tb) {
            (false, false) => true,
            (true, true) => same_rows(&da, sa, &db, sb, &mut ra, &mut rb)?,
            _ => false,
        };
        if same {
            continue;
        }
        match d.differing.last_mut() {
            Some(r) if r[1] == i => r[1] = i + 1,
            _ => d.differing.push([i, i + 1]),
        }
        d.differing_steps += 1;
        d.a_only_skipped += u64::from(!ta && tb);
        d.b_only_skipped += u64::from(ta && !tb);
        if ta {
            ta_tokens.add(&da, sa, &mut d.a_tokens)?;
        }
        if tb {
            tb_tokens.add(&db, sb, &mut d.b_tokens)?;
        }
    }
    Ok(d)
}

/// Whether step `sa` of `da` and step `sb` of `db` hold the same rows: by the chunk
/// file's hash when both read the same chunk file at the same place, else row by row.
fn same_rows(
    da: &PreparedData,
    sa: u64,
    db: &PreparedData,
    sb: u64,
    ra: &mut Vec<u32>,
    rb: &mut Vec<u32>,
) -> Result<bool> {
    let same_place = da.rows_per_step() == db.rows_per_step()
        && da.steps_per_chunk() == db.steps_per_chunk()
        && sa % da.steps_per_chunk().max(1) == sb % db.steps_per_chunk().max(1)
        && da.chunk_tokens_sha256(sa).is_some()
        && da.chunk_tokens_sha256(sa) == db.chunk_tokens_sha256(sb);
    if same_place {
        return Ok(true);
    }
    da.batch(sa, ra)?;
    db.batch(sb, rb)?;
    Ok(ra == rb)
}

/// Row tokens per source of each step, a chunk's segments read once.
#[derive(Default)]
struct SourceTokens {
    chunk_first_step: Option<u64>,
    per_step: Vec<BTreeMap<u32, u64>>,
}

impl SourceTokens {
    fn add(
        &mut self,
        data: &PreparedData,
        step: u64,
        out: &mut BTreeMap<String, u64>,
    ) -> Result<()> {
        let spc = data.steps_per_chunk().max(1);
        if self.chunk_first_step != Some(step / spc * spc) {
            let (first, segs) = data.chunk_segments(step)?;
            let rows = data.rows_per_step() as u64;
            self.per_step = vec![BTreeMap::new(); spc as usize];
            for s in segs {
                if let Some(m) = self.per_step.get_mut((s.row as u64 / rows) as usize) {
                    *m.entry(s.source).or_default() += s.len as u64;
                }
            }
            self.chunk_first_step = Some(first);
        }
        let names = &data.manifest().config.sources;
        let i = (step - self.chunk_first_step.unwrap_or(0)) as usize;
        for (&src, &n) in self.per_step.get(i).into_iter().flatten() {
            let name = names
                .get(src as usize)
                .map_or_else(|| format!("#{src}"), |x| x.name.clone());
            *out.entry(name).or_default() += n;
        }
        Ok(())
    }
}
