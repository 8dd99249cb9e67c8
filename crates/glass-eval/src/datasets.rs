//! Datasets from where users keep them: JSON / JSON Lines, Parquet (the hub's own
//! format), and the Hugging Face `datasets` cache (Arrow IPC stream files), read into
//! JSON rows; and, for a task whose `dataset_path` names a hub dataset, where to find
//! each split on disk.
//!
//! Lookup order for split `S` of `dataset_path` `P` with `dataset_name` `N`:
//! 1. each `--data-dir D`: files under `D/P/N/` (or `D/P/` without a name), searched
//!    recursively, named `S.jsonl`, `S.json`, `S.parquet`, `S.arrow`, `S-*.parquet` (the
//!    hub's `S-00000-of-00001.parquet`) or `*-S.arrow` / `*-S-*.arrow` (the cache's);
//! 2. the `datasets` cache (`$HF_DATASETS_CACHE`, else `$HF_HOME/datasets`, else
//!    `~/.cache/huggingface/datasets`): `P` with `/` → `___`, then `N` (or `default`),
//!    then its version and fingerprint directories, `*-S.arrow` / `*-S-NNNNN-of-NNNNN.arrow`.

use std::path::{Path, PathBuf};

use glass_data::columnar::{self, Columnar};
use serde_json::Value;

use crate::task::{parse_rows, Doc};
use crate::EvalError;

/// Reads the rows of a data file, by extension: `.parquet`, `.arrow` (IPC stream or
/// file), anything else JSON Lines / a JSON array.
pub fn read_rows(path: &Path, bytes: &[u8]) -> Result<Vec<Doc>, EvalError> {
    let name = path.display().to_string();
    match Columnar::of(path) {
        Some(format) => {
            let mut out = Vec::new();
            columnar::for_each_row(path, format, None, &mut |i, row| {
                out.push(Doc {
                    value: Value::Object(row),
                    origin: format!("{name}[{i}]"),
                });
                Ok(())
            })
            .map_err(|e| match e {
                glass_data::DataError::Columnar(m) => EvalError::Data(m),
                other => other.into(),
            })?;
            Ok(out)
        }
        None => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                let at = e.valid_up_to();
                let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
                EvalError::Data(format!(
                    "{name}:{line}: invalid UTF-8 (at byte {at}); data files must be UTF-8"
                ))
            })?;
            parse_rows(text, &name)
        }
    }
}

/// The `datasets` cache directory.
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_DATASETS_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(h) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(h).join("datasets"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/datasets"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `*-S-00000-of-00002.arrow`-style shard suffix.
fn is_shard_suffix(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts[1] == "of"
        && [parts[0], parts[2]]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn matches_split(file: &Path, split: &str) -> bool {
    let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !matches!(ext, "jsonl" | "json" | "parquet" | "arrow") {
        return false;
    }
    if stem == split {
        return true;
    }
    if let Some(rest) = stem.strip_prefix(&format!("{split}-")) {
        if ext == "parquet" || ext == "arrow" {
            return is_shard_suffix(rest) || ext == "parquet";
        }
    }
    if ext == "arrow" {
        if stem.ends_with(&format!("-{split}")) {
            return true;
        }
        if let Some(pos) = stem.rfind(&format!("-{split}-")) {
            return is_shard_suffix(&stem[pos + split.len() + 2..]);
        }
    }
    false
}

/// Finds the files of `split` for a hub dataset, or says which files to place where.
pub fn locate(
    task: &str,
    dataset_path: &str,
    dataset_name: Option<&str>,
    split: &str,
    data_dirs: &[PathBuf],
    cache: Option<PathBuf>,
) -> Result<Vec<PathBuf>, EvalError> {
    let mut searched = Vec::new();
    for d in data_dirs {
        let mut base = d.join(dataset_path);
        if let Some(n) = dataset_name {
            base = base.join(n);
        }
        searched.push(base.display().to_string());
        let found: Vec<PathBuf> = files_under(&base)
            .into_iter()
            .filter(|f| matches_split(f, split))
            .collect();
        if !found.is_empty() {
            return one_directory(task, split, found);
        }
    }
    if let Some(c) = &cache {
        let base = c
            .join(dataset_path.replace('/', "___"))
            .join(dataset_name.unwrap_or("default"));
        searched.push(base.display().to_string());
        let found: Vec<PathBuf> = files_under(&base)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "arrow") && matches_split(f, split))
            .collect();
        if !found.is_empty() {
            return one_directory(task, split, found);
        }
    }
    let sub = match dataset_name {
        Some(n) => format!("{dataset_path}/{n}"),
        None => dataset_path.to_string(),
    };
    let load = match dataset_name {
        Some(n) => format!("datasets.load_dataset(\"{dataset_path}\", \"{n}\")"),
        None => format!("datasets.load_dataset(\"{dataset_path}\")"),
    };
    Err(EvalError::Data(format!(
        "{task}: split `{split}` of dataset `{sub}` not found. Place `{split}.jsonl` (or `{split}.json`, `{split}.parquet`, or the hub's `{split}-00000-of-00001.parquet`) in DIR/{sub}/ and pass --data-dir DIR; or fill the datasets cache once with Python `{load}`{}; or pass --data-files {split}=FILE. Searched: {}",
        cache.map(|c| format!(" ({})", c.display())).unwrap_or_default(),
        if searched.is_empty() { "(nothing)".to_string() } else { searched.join(", ") }
    )))
}

/// The files of one split must come from one directory (one cache fingerprint).
fn one_directory(task: &str, split: &str, found: Vec<PathBuf>) -> Result<Vec<PathBuf>, EvalError> {
    let mut dirs: Vec<&Path> = found.iter().filter_map(|f| f.parent()).collect();
    dirs.dedup();
    if dirs.len() > 1 {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(EvalError::Data(format!(
            "{task}: split `{split}` found in several directories ({}); keep one or pass --data-files {split}=FILE",
            names.join(", ")
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_file_names() {
        for (f, s, want) in [
            ("test.jsonl", "test", true),
            ("test-00000-of-00001.parquet", "test", true),
            ("mmlu-test.arrow", "test", true),
            ("hellaswag-train-00000-of-00002.arrow", "train", true),
            ("mmlu-dev.arrow", "test", false),
            ("contest.jsonl", "test", false),
            ("test.txt", "test", false),
            ("validation-00000-of-00001.parquet", "validation", true),
        ] {
            assert_eq!(matches_split(Path::new(f), s), want, "{f}");
        }
    }

    #[test]
    fn a_missing_dataset_says_where_to_put_it() {
        let d = tempfile::tempdir().unwrap();
        let e = locate(
            "arc_challenge",
            "allenai/ai2_arc",
            Some("ARC-Challenge"),
            "test",
            &[d.path().to_path_buf()],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("allenai/ai2_arc/ARC-Challenge/")
                && e.contains("test.jsonl")
                && e.contains("--data-dir"),
            "{e}"
        );
        let dir = d.path().join("allenai/ai2_arc/ARC-Challenge");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("test-00000-of-00001.parquet"), b"").unwrap();
        let f = locate(
            "arc_challenge",
            "allenai/ai2_arc",
            Some("ARC-Challenge"),
            "test",
            &[d.path().to_path_buf()],
            None,
        )
        .unwrap();
        assert_eq!(f, vec![dir.join("test-00000-of-00001.parquet")]);
    }
}
