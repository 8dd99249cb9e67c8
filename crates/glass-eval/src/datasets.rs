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

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Value};

use crate::task::{parse_rows, Doc};
use crate::EvalError;

/// Reads the rows of a data file, by extension: `.parquet`, `.arrow` (IPC stream or
/// file), anything else JSON Lines / a JSON array.
pub fn read_rows(path: &Path, bytes: &[u8]) -> Result<Vec<Doc>, EvalError> {
    let name = path.display().to_string();
    match path.extension().and_then(|e| e.to_str()) {
        // The Parquet and Arrow readers panic on some malformed files (a slice past a
        // buffer's end): such a panic is this file's error.
        Some(ext @ ("parquet" | "arrow")) => {
            glass_io::contain::contained(|| read_columnar(path, bytes, ext, &name)).unwrap_or_else(
                |why| {
                    Err(EvalError::Data(format!(
                        "{name}: malformed {} data ({why})",
                        if ext == "arrow" {
                            "Arrow IPC"
                        } else {
                            "Parquet"
                        }
                    )))
                },
            )
        }
        _ => {
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

/// Rows of a Parquet or Arrow IPC file.
fn read_columnar(path: &Path, bytes: &[u8], ext: &str, name: &str) -> Result<Vec<Doc>, EvalError> {
    match ext {
        "parquet" => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let file = glass_io::open::open_regular(path)?.into_file();
            let bad = |e: &dyn std::fmt::Display| {
                EvalError::Data(format!("{name}: unreadable Parquet: {e}"))
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| bad(&e))?
                .build()
                .map_err(|e| bad(&e))?;
            let mut batches = Vec::new();
            for b in reader {
                batches.push(b.map_err(|e| bad(&e))?);
            }
            batches_to_rows(&batches, name)
        }
        _ => {
            let bad = |e: &dyn std::fmt::Display| {
                EvalError::Data(format!("{name}: unreadable Arrow IPC data: {e}"))
            };
            let mut batches = Vec::new();
            if bytes.starts_with(b"ARROW1") {
                let r = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
                    .map_err(|e| bad(&e))?;
                for b in r {
                    batches.push(b.map_err(|e| bad(&e))?);
                }
            } else {
                let r =
                    arrow_ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| bad(&e))?;
                for b in r {
                    batches.push(b.map_err(|e| bad(&e))?);
                }
            }
            batches_to_rows(&batches, name)
        }
    }
}

fn batches_to_rows(batches: &[RecordBatch], name: &str) -> Result<Vec<Doc>, EvalError> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let origin = format!("{name}[{}]", out.len());
            let mut row = Map::new();
            for (f, col) in schema.fields().iter().zip(b.columns()) {
                let v = value_at(col.as_ref(), i).map_err(|e| {
                    EvalError::Data(format!("{origin}: column `{}`: {e}", f.name()))
                })?;
                row.insert(f.name().clone(), v);
            }
            out.push(Doc {
                value: Value::Object(row),
                origin,
            });
        }
    }
    Ok(out)
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One cell as JSON (what `datasets` hands the harness as Python values).
fn value_at(arr: &dyn Array, i: usize) -> Result<Value, String> {
    if arr.is_null(i) {
        return Ok(Value::Null);
    }
    let list = |v: std::sync::Arc<dyn Array>| -> Result<Value, String> {
        (0..v.len())
            .map(|j| value_at(v.as_ref(), j))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    };
    Ok(match arr.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(arr.as_boolean().value(i)),
        DataType::Int8 => Value::from(arr.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(arr.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(arr.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(arr.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(arr.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(arr.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(arr.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(arr.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => float(f64::from(arr.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(arr.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(arr.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(arr.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(arr.as_string_view().value(i).to_string()),
        DataType::List(_) => list(arr.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => list(arr.as_list::<i64>().value(i))?,
        DataType::FixedSizeList(_, _) => list(arr.as_fixed_size_list().value(i))?,
        DataType::Struct(_) => {
            let s = arr.as_struct();
            let mut m = Map::new();
            for (name, col) in s.column_names().into_iter().zip(s.columns()) {
                m.insert(name.to_string(), value_at(col.as_ref(), i)?);
            }
            Value::Object(m)
        }
        other => return Err(format!("Arrow type {other} is not supported")),
    })
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
