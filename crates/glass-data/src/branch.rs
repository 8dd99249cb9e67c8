//! A branch's data: a branch that continues another run's stream from a checkpoint
//! (`glass train NEW --from RUN --checkpoint K --continue`) reads the parent's rows, by
//! hash, from the parent's data directory instead of copying them. Its
//! `data/manifest.json` is the parent's, plus a [`BaseData`] record naming where the
//! files are, the parent manifest's sha256 and the step the branch starts at.

use std::path::Path;

use crate::atomic::{sha256_file, write_atomic};
use crate::config::DataConfig;
use crate::error::{DataError, Result};
use crate::manifest::{BaseData, Manifest, MANIFEST_FILE};

/// What [`link`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// The branch's data manifest was written.
    Created,
    /// It already linked the same base at the same step (a re-run after a crash).
    Existing,
}

/// Makes `run_dir`'s data the rows of `parent_dir`'s data, read from there by hash, for a
/// branch that starts training at `from_step`. `run_dir`'s `[data]` must be the
/// parent's: the branch's rows are the parent's rows.
pub fn link(run_dir: &Path, parent_dir: &Path, from_step: u64) -> Result<Linked> {
    let cfg = DataConfig::load(run_dir)?;
    let parent = Manifest::load(parent_dir)?;
    parent.check_base(parent_dir)?;
    let parent_manifest = parent_dir.join("data").join(MANIFEST_FILE);
    if from_step > parent.n_steps {
        return Err(DataError::Range(format!(
            "step {from_step} is past the end of {}'s data ({} steps)",
            parent_dir.display(),
            parent.n_steps
        )));
    }
    let base = match &parent.base {
        // A branch of a branch reads from the same place as its parent.
        Some(b) if b.local.is_empty() => BaseData {
            from_step,
            ..b.clone()
        },
        Some(_) => {
            return Err(DataError::Config(format!(
                "{}: the parent holds rows of its own after its branch point; branching it again with --continue is not supported — branch from its parent instead",
                parent_manifest.display()
            )))
        }
        None => BaseData {
            run_dir: std::fs::canonicalize(parent_dir)
                .map_err(|e| DataError::Io {
                    path: parent_dir.to_path_buf(),
                    source: e,
                })?
                .display()
                .to_string(),
            manifest_sha256: sha256_file(&parent_manifest)?.0,
            from_step,
            local: vec![],
        },
    };
    let diffs = differences(&parent.config, &cfg);
    if !diffs.is_empty() {
        return Err(DataError::Config(format!(
            "{}: [data] differs from the parent's ({}): a --continue branch trains on the parent's rows, so its [data] table must stay as {} has it — restore those keys (to change the remaining stream, use [guard] skip_steps or skip_chunks)",
            run_dir.join(crate::config::RUN_CONFIG_FILE).display(),
            diffs.join(", "),
            parent_dir.join(crate::config::RUN_CONFIG_FILE).display()
        )));
    }
    let mine = run_dir.join("data").join(MANIFEST_FILE);
    if mine.exists() {
        let existing = Manifest::load(run_dir)?;
        return match &existing.base {
            Some(b) if *b == base => Ok(Linked::Existing),
            Some(b) => Err(DataError::Config(format!(
                "{}: already reads the data of {} from step {}, not {} from step {from_step}; start the branch in a new directory",
                mine.display(),
                b.run_dir,
                b.from_step,
                base.run_dir
            ))),
            None => Err(DataError::Config(format!(
                "{}: this directory holds data prepared for itself, but a --continue branch reads its parent's rows; remove {} and run the branch command again",
                mine.display(),
                run_dir.join("data").display()
            ))),
        };
    }
    let m = Manifest {
        base: Some(base),
        ..parent
    };
    let dir = run_dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| DataError::Io {
        path: dir.clone(),
        source: e,
    })?;
    write_atomic(
        &mine,
        &serde_json::to_vec_pretty(&m).expect("manifest serialises"),
    )?;
    Ok(Linked::Created)
}

/// The `[data]` keys in which `b` differs from `a` (empty when they give the same rows).
pub fn differences(a: &DataConfig, b: &DataConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut key = |name: &str, differ: bool| {
        if differ {
            out.push(name.to_string());
        }
    };
    key("seed", a.seed != b.seed);
    key("seq_len", a.seq_len != b.seq_len);
    key("rows_per_step", a.rows_per_step != b.rows_per_step);
    key("steps_per_chunk", a.steps_per_chunk != b.steps_per_chunk);
    key("token_dtype", a.token_dtype != b.token_dtype);
    key("[data.tokenizer]", a.tokenizer != b.tokenizer);
    key("[[data.sources]]", a.sources != b.sources);
    key("[data.validation]", a.validation != b.validation);
    if a.stages.len() != b.stages.len() {
        key("[[data.stages]] (count)", true);
    } else {
        for (x, y) in a.stages.iter().zip(&b.stages) {
            key(&format!("stage `{}`", y.name), x != y);
        }
    }
    out
}
