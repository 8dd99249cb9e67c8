//! LLM360 CrystalCoder's training data: the Cerebras modelzoo's HDF5 files, one folder
//! per training stage, each file's root dataset `data` of shape `[n, 3, seq]` (input ids,
//! attention mask, labels per row; read with [`crate::hdf5`]).
//!
//! The order Glass assigns (docs/suites.md, "CrystalCoder") is a documented assumption,
//! not a published fact: stages in order, a stage's files in natural name order, rows in
//! file order; stage `k` holds `⌊rows_k / B⌋` steps (its tail is dropped) and the step count
//! runs on across stages. The row a step slot maps to is reported as (stage, file, row),
//! so any other order can be checked against the files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, IoContext, Result};
use crate::hdf5::{Dataset, H5File};

/// The dataset name the modelzoo writes.
pub const DATASET: &str = "data";

/// What one file holds, as checked on import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileShape {
    /// Rows (`n_examples`).
    pub rows: u64,
    /// Tokens per row (`max_seq_length`).
    pub seq_len: u64,
}

/// Opens `path`'s `data` dataset and checks it is `[n, 3, seq]` integers whose
/// `n_examples` attribute (when present) is `n`.
pub fn open_file(path: &Path) -> Result<(H5File, Dataset, FileShape)> {
    let f = H5File::open(path)?;
    let ds = f.dataset(DATASET)?;
    let shape = ds.shape();
    if shape.len() != 3 || shape[1] != 3 || shape[2] == 0 {
        return Err(DataError::layout(
            path,
            None,
            format!(
                "dataset `data` has shape {shape:?}, expected [n_examples, 3, max_seq_length] \
                 (input ids, attention mask, labels: the modelzoo's LMData layout)"
            ),
        ));
    }
    if let Some(n) = f.root_attr_int("n_examples")? {
        if n < 0 || n as u64 != shape[0] {
            return Err(DataError::layout(
                path,
                None,
                format!(
                    "attribute n_examples = {n}, but dataset `data` holds {} rows",
                    shape[0]
                ),
            ));
        }
    }
    let s = FileShape {
        rows: shape[0],
        seq_len: shape[2],
    };
    Ok((f, ds, s))
}

/// Row `row`'s input ids (the first of its three vectors), as token ids.
pub fn row_ids(f: &H5File, ds: &Dataset, row: u64) -> Result<Vec<u32>> {
    let v = f.read_row(ds, row)?;
    let seq = ds.shape()[2] as usize;
    v[..seq]
        .iter()
        .map(|&t| {
            u32::try_from(t).map_err(|_| {
                DataError::layout(
                    f.path(),
                    None,
                    format!("row {row} holds token id {t}, outside 0..2^32"),
                )
            })
        })
        .collect()
}

/// Orders names as people number files: runs of digits compare as numbers
/// (`examples_2_0.h5` before `examples_10_0.h5`).
pub fn natural_key(name: &str) -> Vec<(String, u128)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = c.to_digit(10).unwrap_or(0) as u128;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d as u128);
                chars.next();
            }
            out.push((std::mem::take(&mut text), n));
        } else {
            text.push(c);
        }
    }
    out.push((text, 0));
    out
}

/// A stage's `.h5` files in natural name order.
fn h5_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "h5" || x == "hdf5") {
            out.push(p);
        }
    }
    out.sort_by_key(|p| natural_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    Ok(out)
}

/// The stages under `data`: the named sub-folders in the given order, else every
/// sub-folder holding `.h5` files in natural name order, else `data` itself as one stage.
pub fn stage_files(data: &Path, stages: &[String]) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    if !stages.is_empty() {
        for s in stages {
            let dir = data.join(s);
            if !dir.is_dir() {
                return Err(DataError::layout(
                    &dir,
                    None,
                    format!("stage folder `{s}` (from --stages) is not here"),
                ));
            }
            let files = h5_files(&dir)?;
            if files.is_empty() {
                return Err(DataError::layout(&dir, None, "no .h5 files in this stage"));
            }
            out.push((s.clone(), files));
        }
        return Ok(out);
    }
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(data).at(data)? {
        let p = e.at(data)?.path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    dirs.sort_by_key(|p| natural_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    for d in dirs {
        let files = h5_files(&d)?;
        if !files.is_empty() {
            let name = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((name, files));
        }
    }
    if out.is_empty() {
        let files = h5_files(data)?;
        if files.is_empty() {
            return Err(DataError::layout(
                data,
                None,
                "no .h5 files here, nor in any sub-folder (one folder per stage)",
            ));
        }
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        out.push((name, files));
    }
    Ok(out)
}

/// A stage as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRows {
    /// The stage's name (its folder).
    pub name: String,
    /// Rows of each file, in order.
    pub rows: Vec<u64>,
}

/// Where step slot `(step, slot)` lies: (stage index, file index within the stage, row).
pub fn locate(stages: &[StageRows], b: u64, step: u64, slot: u64) -> Option<(usize, usize, u64)> {
    let mut first = 0u64;
    for (si, s) in stages.iter().enumerate() {
        let total: u64 = s.rows.iter().sum();
        let steps = total / b;
        if step < first + steps {
            let mut g = (step - first) * b + slot;
            for (fi, &n) in s.rows.iter().enumerate() {
                if g < n {
                    return Some((si, fi, g));
                }
                g -= n;
            }
            return None;
        }
        first += steps;
    }
    None
}

/// Complete steps over all stages.
pub fn n_steps(stages: &[StageRows], b: u64) -> u64 {
    stages.iter().map(|s| s.rows.iter().sum::<u64>() / b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers() {
        let mut v = vec![
            "examples_10_0.h5",
            "examples_2_0.h5",
            "data-00001.h5",
            "data-00000.h5",
        ];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(
            v,
            [
                "data-00000.h5",
                "data-00001.h5",
                "examples_2_0.h5",
                "examples_10_0.h5"
            ]
        );
    }

    #[test]
    fn steps_stay_within_a_stage() {
        let st = vec![
            StageRows {
                name: "a".into(),
                rows: vec![5, 3, 2],
            },
            StageRows {
                name: "b".into(),
                rows: vec![6, 4],
            },
        ];
        assert_eq!(n_steps(&st, 4), 4);
        assert_eq!(locate(&st, 4, 1, 0), Some((0, 0, 4)));
        assert_eq!(locate(&st, 4, 1, 1), Some((0, 1, 0)));
        // Stage a's last 2 rows are dropped: step 2 starts stage b.
        assert_eq!(locate(&st, 4, 2, 0), Some((1, 0, 0)));
        assert_eq!(locate(&st, 4, 3, 3), Some((1, 1, 1)));
        assert_eq!(locate(&st, 4, 4, 0), None);
    }
}
