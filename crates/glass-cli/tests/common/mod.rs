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

/// Runs `glass args` and returns what it did, failing the test if it has not finished
/// within `secs` seconds (it is killed then): for inputs that once made glass hang.
pub fn glass_within(args: &[&str], secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_glass"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("glass runs");
    // Drained on threads, so a chatty process never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if t0.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("glass {args:?} did not finish within {secs} s: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Every entry under `dir` (itself included) with its type, size, permissions,
/// modification time and, for files, sha256: equal snapshots mean nothing was created,
/// removed, written or touched (a file created and deleted again changes its directory's
/// modification time).
pub fn tree_snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        let md = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let t = md.file_type();
        let content = if t.is_file() {
            glass_io::sha256_hex(&std::fs::read(p).unwrap())
        } else if t.is_symlink() {
            std::fs::read_link(p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:?} len={} mode={:o} mtime={}.{:09} {content}",
            t,
            md.len(),
            md.mode(),
            md.mtime(),
            md.mtime_nsec()
        ));
        if t.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Makes a FIFO at `p` (a named pipe nothing writes to: opening it for reading blocks).
pub fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Asserts two [`tree_snapshot`]s are equal, naming only the entries that differ.
pub fn assert_same_tree(before: &[String], after: &[String], what: &str) {
    let gone: Vec<&String> = before.iter().filter(|e| !after.contains(e)).collect();
    let new: Vec<&String> = after.iter().filter(|e| !before.contains(e)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{what} changed the tree:\nbefore: {gone:#?}\nafter: {new:#?}"
    );
}

/// The result objects `glass eval --json` prints.
pub fn results(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of metric `name` in one `glass eval --json` result.
pub fn metric(r: &serde_json::Value, name: &str) -> f64 {
    r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("no {name} in {r}"))["value"]
        .as_f64()
        .unwrap()
}

/// The tokenizer of the LLM360-layout fixture (what the suites' imports are given).
pub fn llm360_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm360-mini/checkpoints/ckpt_000/tokenizer.json")
}

/// Copies the tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Shrinks the `tiny` preset of a `glass init` config to a one-layer, width-32 model
/// with 4 rows of 16 tokens per step and 4 steps per chunk, so training takes seconds.
pub fn shrink_tiny(t: &mut toml::Table, max_seq_len: i64) {
    use toml::Value::Integer as I;
    let model = t.get_mut("model").unwrap().as_table_mut().unwrap();
    for (k, v) in [
        ("d_model", 32),
        ("n_layers", 1),
        ("n_heads", 2),
        ("n_kv_heads", 2),
        ("ffn_hidden", 48),
        ("max_seq_len", max_seq_len),
    ] {
        model.insert(k.into(), I(v));
    }
    t["train"]
        .as_table_mut()
        .unwrap()
        .insert("micro_batch_rows".into(), I(2));
    let data = t.get_mut("data").unwrap().as_table_mut().unwrap();
    data.insert("seq_len".into(), I(16));
    data.insert("rows_per_step".into(), I(4));
    data.insert("steps_per_chunk".into(), I(4));
}

/// A JSON array of unsigned integers.
pub fn u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}
