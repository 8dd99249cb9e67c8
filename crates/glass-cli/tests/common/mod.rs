//! Running the real `glass` binary from the end-to-end tests.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `glass args` with extra environment variables and returns what it did.
pub fn glass_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glass"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("glass runs")
}

/// Runs `glass args` and returns what it did.
pub fn glass(args: &[&str]) -> Output {
    glass_env(args, &[])
}

/// Runs `glass args`, which must succeed; returns (stdout, stderr).
pub fn ok_output(args: &[&str]) -> (String, String) {
    let o = glass(args);
    assert!(
        o.status.success(),
        "glass {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `glass args`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    ok_output(args).0
}

/// A path as a command-line argument.
pub fn p(run: &Path) -> String {
    run.to_str().unwrap().to_string()
}

/// A small, fast run, prepared (not trained): 1-layer model, 16-token rows, 4 rows a
/// step, 4 steps a chunk; stages of 19 and 16 steps (boundary at step 19, inside chunk
/// 4); `skip_steps` go to `[guard] skip_steps`.
pub fn small_run(run: &Path, skip_steps: &[i64]) -> PathBuf {
    ok(&["init", &p(run), "--preset", "tiny"]);
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let set = |t: &mut toml::Table, path: &[&str], v: toml::Value| {
        let mut cur = t;
        for k in &path[..path.len() - 1] {
            cur = cur.get_mut(*k).unwrap().as_table_mut().unwrap();
        }
        cur.insert(path[path.len() - 1].to_string(), v);
    };
    use toml::Value::Integer as I;
    for (k, v) in [
        ("d_model", 32),
        ("n_layers", 1),
        ("n_heads", 2),
        ("n_kv_heads", 2),
        ("ffn_hidden", 48),
        ("max_seq_len", 32),
    ] {
        set(&mut t, &["model", k], I(v));
    }
    set(&mut t, &["train", "micro_batch_rows"], I(2));
    let skips = skip_steps.iter().map(|&s| I(s)).collect();
    set(&mut t, &["guard", "skip_steps"], toml::Value::Array(skips));
    set(&mut t, &["data", "seq_len"], I(16));
    set(&mut t, &["data", "rows_per_step"], I(4));
    set(&mut t, &["data", "steps_per_chunk"], I(4));
    set(&mut t, &["data", "validation", "rows"], I(8));
    for (i, tokens) in [1280, 1024].into_iter().enumerate() {
        t.get_mut("data").unwrap()["stages"].as_array_mut().unwrap()[i]
            .as_table_mut()
            .unwrap()
            .insert("tokens".into(), I(tokens));
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", &p(run)]);
    run.to_path_buf()
}
