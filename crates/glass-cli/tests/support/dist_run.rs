//! A small run for the data-parallel tests: big enough (≈0.5 M parameters) that every
//! rank of up to 4 owns a shard of the parameters, 8 rows a step in 4 gradient groups.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::ok;

/// Creates and prepares the run at `dir` (`seed` only changes the config text).
pub fn make_run(dir: &Path, grad_groups: i64, seed: i64) -> PathBuf {
    let run = dir.to_path_buf();
    ok(&["init", &p(&run), "--preset", "tiny"]);
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    use toml::Value::Integer as I;
    t["run"]
        .as_table_mut()
        .unwrap()
        .insert("name".into(), toml::Value::String("dist".into()));
    t["run"]
        .as_table_mut()
        .unwrap()
        .insert("seed".into(), I(seed));
    let model = t.get_mut("model").unwrap().as_table_mut().unwrap();
    for (k, v) in [
        ("d_model", 64),
        ("n_layers", 2),
        ("n_heads", 4),
        ("n_kv_heads", 2),
        ("ffn_hidden", 160),
        ("max_seq_len", 32),
    ] {
        model.insert(k.into(), I(v));
    }
    let train = t["train"].as_table_mut().unwrap();
    train.insert("micro_batch_rows".into(), I(1));
    train.insert("grad_groups".into(), I(grad_groups));
    let data = t.get_mut("data").unwrap().as_table_mut().unwrap();
    data.insert("seq_len".into(), I(16));
    data.insert("rows_per_step".into(), I(8));
    data.insert("steps_per_chunk".into(), I(4));
    data["validation"]
        .as_table_mut()
        .unwrap()
        .insert("rows".into(), I(8));
    for (i, st) in data["stages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        st.as_table_mut()
            .unwrap()
            .insert("tokens".into(), I([1024, 512][i.min(1)]));
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", &p(&run)]);
    run
}

/// The run directory as an argument.
pub fn p(run: &Path) -> String {
    run.to_str().unwrap().to_string()
}

/// (step, checkpoint sha256) of every published checkpoint: the run's hash chain.
pub fn chain(run: &Path) -> Vec<(u64, String)> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["step"].as_u64().unwrap(),
                c["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Copies a directory tree (a trained run, to evaluate it twice).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Every stored evaluation result of `run` (file name → JSON without the `seconds`
/// timing), which must not depend on how many ranks computed it.
pub fn eval_results(run: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let evals = run.join("evals");
    let mut dirs: Vec<_> = std::fs::read_dir(&evals)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let mut v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            out.push((f.strip_prefix(run).unwrap().display().to_string(), v));
        }
    }
    out
}
