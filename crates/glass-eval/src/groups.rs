//! Task groups and their aggregate scores, as the harness computes them
//! (`lm_eval.api.group.Group.aggregate`): for each `aggregate_metric_list` entry, the
//! metric of every *leaf* task under the group (nested groups flattened) is combined by
//! `aggregate_subtask_metrics` — with `weight_by_size: true` (the default, and what MMLU
//! uses) the mean weighted by each task's number of documents, i.e. the accuracy over
//! all documents pooled; with `false` the plain mean over leaf tasks — and the stderr by
//! `pooled_sample_stderr` (pooled variance of the leaves). Group results are stored like
//! task results: `RUN/evals/ckpt-KKKK/<group>.json` and rows of `metrics.sqlite`.

use std::collections::BTreeMap;
use std::path::Path;

use glass_io::atomic::{sha256_hex, write_atomic};
use glass_run::metrics::{EvalRow, EvalRunRow};
use glass_run::Metrics;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::results::MetricValue;
use crate::run::{result_path, TaskResult};
use crate::EvalError;

/// One `aggregate_metric_list` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggMetric {
    /// Metric name (`acc`).
    pub metric: String,
    /// Weight each leaf task by its number of documents.
    pub weight_by_size: bool,
}

/// A member of a group.
#[derive(Debug, Clone)]
pub enum GroupMember {
    /// A task, by name.
    Task(String),
    /// A nested group.
    Group(GroupDef),
}

/// A group definition.
#[derive(Debug, Clone)]
pub struct GroupDef {
    /// `group:`.
    pub name: String,
    /// `group_alias:`.
    pub alias: Option<String>,
    /// The file it came from.
    pub source: String,
    /// Members in file order.
    pub members: Vec<GroupMember>,
    /// How to aggregate (empty: the group only lists tasks, no score of its own).
    pub aggregate: Vec<AggMetric>,
}

impl GroupDef {
    /// Leaf task names under the group, each once, in order.
    pub fn leaf_tasks(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }
    fn collect_leaves(&self, out: &mut Vec<String>) {
        for m in &self.members {
            match m {
                GroupMember::Task(t) => {
                    if !out.contains(t) {
                        out.push(t.clone())
                    }
                }
                GroupMember::Group(g) => g.collect_leaves(out),
            }
        }
    }
    /// This group and every nested group, outermost first.
    pub fn all_groups(&self) -> Vec<&GroupDef> {
        let mut out = vec![self];
        for m in &self.members {
            if let GroupMember::Group(g) = m {
                out.extend(g.all_groups());
            }
        }
        out
    }
}

/// `aggregate_subtask_metrics`: Σ metric·size / Σ size (sizes 1 when not weighting).
pub fn aggregate_subtask_metrics(values: &[f64], sizes: &[usize], weight_by_size: bool) -> f64 {
    let w: Vec<f64> = sizes
        .iter()
        .map(|&s| if weight_by_size { s as f64 } else { 1.0 })
        .collect();
    let num: f64 = values.iter().zip(&w).map(|(v, w)| v * w).sum();
    num / w.iter().sum::<f64>()
}

/// `pooled_sample_stderr`: √(Σ (nᵢ−1)·seᵢ²·nᵢ / (Σnᵢ − k) / Σnᵢ).
pub fn pooled_sample_stderr(stderrs: &[f64], sizes: &[usize]) -> f64 {
    let total: usize = sizes.iter().sum();
    let var: f64 = sizes
        .iter()
        .zip(stderrs)
        .map(|(&n, se)| (n as f64 - 1.0) * se * se * n as f64)
        .sum::<f64>()
        / (total as f64 - sizes.len() as f64);
    (var / total as f64).sqrt()
}

/// A group's metrics from its leaf tasks' results (all of one checkpoint).
pub fn aggregate(group: &GroupDef, results: &[&TaskResult]) -> Result<Vec<MetricValue>, EvalError> {
    let leaves = group.leaf_tasks();
    let mut out = Vec::new();
    for agg in &group.aggregate {
        let (mut values, mut sizes, mut stderrs) = (Vec::new(), Vec::new(), Vec::new());
        for leaf in &leaves {
            let r = results.iter().find(|r| &r.task == leaf).ok_or_else(|| {
                EvalError::Invalid(format!(
                    "group `{}`: no result for task `{leaf}`",
                    group.name
                ))
            })?;
            let Some(m) = r.metrics.iter().find(|m| m.metric == agg.metric) else {
                continue;
            };
            values.push(m.value);
            sizes.push(m.n);
            stderrs.push(m.stderr);
        }
        if values.is_empty() {
            continue;
        }
        let stderr = if stderrs.iter().all(Option::is_some) {
            let s: Vec<f64> = stderrs.into_iter().flatten().collect();
            Some(pooled_sample_stderr(&s, &sizes))
        } else {
            None
        };
        out.push(MetricValue {
            metric: agg.metric.clone(),
            value: aggregate_subtask_metrics(&values, &sizes, agg.weight_by_size),
            stderr,
            n: sizes.iter().sum(),
        });
    }
    Ok(out)
}

/// One group's results at one checkpoint: what `RUN/evals/ckpt-KKKK/<group>.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    /// Checkpoint index.
    pub checkpoint: u32,
    /// Its data step.
    pub step: u64,
    /// sha256 of the checkpoint.
    pub checkpoint_sha256: String,
    /// Group name.
    pub group: String,
    /// Its alias.
    pub alias: Option<String>,
    /// Where it was defined.
    pub source: String,
    /// How each metric is aggregated.
    pub aggregation: Vec<AggMetric>,
    /// Leaf tasks: name → task_sha256.
    pub members: BTreeMap<String, String>,
    /// sha256 over the members' task hashes and the aggregation.
    pub group_sha256: String,
    /// Few-shot examples (of the first leaf task).
    pub num_fewshot: usize,
    /// Few-shot seed.
    pub fewshot_seed: u64,
    /// Document limit.
    pub limit: Option<usize>,
    /// Documents over all leaves.
    pub n: usize,
    /// Aggregated metrics.
    pub metrics: Vec<MetricValue>,
}

/// Aggregates every group (and nested group) with an `aggregate_metric_list` at every
/// checkpoint present in `results`, writing each result JSON atomically and recording
/// it in `metrics.sqlite`.
pub fn store_groups(
    run_dir: &Path,
    groups: &[GroupDef],
    results: &[TaskResult],
) -> Result<Vec<GroupResult>, EvalError> {
    let mut checkpoints: Vec<u32> = results.iter().map(|r| r.checkpoint).collect();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let mut metrics = Metrics::open(run_dir)?;
    let mut out = Vec::new();
    for ck in checkpoints {
        let at: Vec<&TaskResult> = results.iter().filter(|r| r.checkpoint == ck).collect();
        let mut done = std::collections::BTreeSet::new();
        for g in groups.iter().flat_map(GroupDef::all_groups) {
            if g.aggregate.is_empty() || !done.insert(g.name.clone()) {
                continue;
            }
            let mv = aggregate(g, &at)?;
            let leaves = g.leaf_tasks();
            let first = at
                .iter()
                .find(|r| leaves.contains(&r.task))
                .expect("aggregate found every leaf");
            let members: BTreeMap<String, String> = leaves
                .iter()
                .filter_map(|l| at.iter().find(|r| &r.task == l))
                .map(|r| (r.task.clone(), r.task_sha256.clone()))
                .collect();
            let mut h = Sha256::new();
            h.update(b"glass-eval group v1\n");
            h.update(serde_json::to_vec(&g.aggregate).expect("serializable"));
            for (k, v) in &members {
                h.update(format!("\n{k}:{v}").as_bytes());
            }
            let n = mv.iter().map(|m| m.n).max().unwrap_or(0);
            let r = GroupResult {
                checkpoint: ck,
                step: first.step,
                checkpoint_sha256: first.checkpoint_sha256.clone(),
                group: g.name.clone(),
                alias: g.alias.clone(),
                source: g.source.clone(),
                aggregation: g.aggregate.clone(),
                members,
                group_sha256: hex::encode(h.finalize()),
                num_fewshot: first.num_fewshot,
                fewshot_seed: first.fewshot_seed,
                limit: first.limit,
                n,
                metrics: mv,
            };
            let rel = result_path(ck, &r.group);
            let path = run_dir.join(&rel);
            glass_io::open::check_write_beneath(run_dir, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| EvalError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
            }
            let mut json = serde_json::to_vec_pretty(&r).expect("serializable");
            json.push(b'\n');
            write_atomic(&path, &json)?;
            let rows: Vec<EvalRow> = r
                .metrics
                .iter()
                .map(|m| EvalRow {
                    checkpoint: ck,
                    task: r.group.clone(),
                    metric: m.metric.clone(),
                    value: m.value,
                    stderr: m.stderr,
                    n: m.n as u64,
                })
                .collect();
            metrics.record_eval(
                &EvalRunRow {
                    checkpoint: ck,
                    task: r.group.clone(),
                    task_sha256: r.group_sha256.clone(),
                    num_fewshot: r.num_fewshot as u64,
                    fewshot_seed: r.fewshot_seed,
                    limit: r.limit.map(|l| l as u64),
                    n: r.n as u64,
                    result_path: rel,
                    result_sha256: sha256_hex(&json),
                    seconds: 0.0,
                    wall_time: glass_run::metrics::now(),
                },
                &rows,
            )?;
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_is_the_pooled_accuracy_and_unweighted_the_task_mean() {
        // 1/4 right of 4 docs and 3/4... of 12 docs.
        let v = [0.25, 0.75];
        let n = [4, 12];
        assert!((aggregate_subtask_metrics(&v, &n, true) - (1.0 + 9.0) / 16.0).abs() < 1e-15);
        assert!((aggregate_subtask_metrics(&v, &n, false) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn pooled_stderr_matches_the_harness_formula() {
        // Computed with the harness's pooled_sample_stderr([0.1, 0.2], [10, 30]).
        let want = ((9.0 * 0.01 * 10.0 + 29.0 * 0.04 * 30.0) / 38.0 / 40.0f64).sqrt();
        assert!((pooled_sample_stderr(&[0.1, 0.2], &[10, 30]) - want).abs() < 1e-15);
    }
}
