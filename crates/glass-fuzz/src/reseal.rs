//! Re-sealing hashes after an edit, as a forger who rewrites every hash consistently
//! would: the hash checks then pass and the validation of the fields behind them runs.
//! Best effort: whatever does not parse is left as it is.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha(p: &Path) -> Option<(String, u64)> {
    let b = std::fs::read(p).ok()?;
    Some((hex::encode(Sha256::digest(&b)), b.len() as u64))
}

fn read(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn write(p: &Path, v: &Value) {
    let _ = std::fs::write(p, serde_json::to_vec_pretty(v).expect("json"));
}

/// A relative path without `..` (the harness never writes outside the scratch run).
fn inside(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == ".." || c == ".")
}

/// Sets `v[key] = x` when `v` is an object (a mutated file may hold anything).
fn set(v: &mut Value, key: &str, x: impl Into<Value>) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), x.into());
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// `RUN/data`: every chunk and store header's file hashes, then the manifest's list.
pub fn data(data: &Path) {
    let mut all = Vec::new();
    files(data, &mut all);
    for h in all.iter().filter(|p| {
        p.extension().is_some_and(|e| e == "json")
            && !p.ends_with("manifest.json")
            && !p.ends_with("tokenizer.json")
    }) {
        let Some(mut v) = read(h) else { continue };
        for key in ["tokens", "segments", "docs", "meta"] {
            let Some(f) = v.get_mut(key).filter(|f| f.is_object()) else {
                continue;
            };
            let Some(name) = f.get("file").and_then(|n| n.as_str()) else {
                continue;
            };
            if name.contains('/') || name.contains("..") {
                continue;
            }
            if let Some((s, n)) = sha(&h.parent().expect("parent").join(name)) {
                set(f, "sha256", s);
                set(f, "bytes", n);
            }
        }
        write(h, &v);
    }
    let mp = data.join("manifest.json");
    let Some(mut m) = read(&mp) else { return };
    // The tokenizer's own pin.
    if let Some(t) = m.get_mut("tokenizer").filter(|t| t.is_object()) {
        if let Some((s, n)) = sha(&data.join("tokenizer.json")) {
            set(t, "sha256", s);
            if t.get("bytes").is_some() {
                set(t, "bytes", n);
            }
        }
    }
    if let Some(list) = m.get_mut("files").and_then(|f| f.as_array_mut()) {
        for f in list {
            let Some(rel) = f.get("path").and_then(|p| p.as_str()) else {
                continue;
            };
            if !inside(rel) {
                continue;
            }
            if let Some((s, n)) = sha(&data.join(rel)) {
                set(f, "sha256", s);
                set(f, "bytes", n);
            }
        }
    }
    write(&mp, &m);
}

/// A run: each state's tensor hashes, then each manifest entry's file hashes and
/// checkpoint hash.
pub fn run(run: &Path) {
    let mp = run.join("manifest.json");
    let Some(mut m) = read(&mp) else { return };
    let Some(list) = m.get_mut("checkpoints").and_then(|c| c.as_array_mut()) else {
        return;
    };
    for c in list {
        let Some(fs) = c.get("files").and_then(|f| f.as_array()).cloned() else {
            continue;
        };
        let path_of = |name: &str| {
            fs.iter()
                .filter_map(|f| f.get("path")?.as_str())
                .find(|p| p.ends_with(name) && inside(p))
                .map(|p| run.join(p))
        };
        if let Some(sp) = path_of("state.json") {
            if let Some(mut st) = read(&sp) {
                for (key, name) in [
                    ("model_sha256", "model.safetensors"),
                    ("optimizer_sha256", "optimizer.safetensors"),
                ] {
                    if let Some((s, _)) = path_of(name).and_then(|p| sha(&p)) {
                        set(&mut st, key, s);
                    }
                }
                write(&sp, &st);
            }
        }
        let mut new_files = fs.clone();
        for f in &mut new_files {
            let Some(rel) = f.get("path").and_then(|p| p.as_str()) else {
                continue;
            };
            if !inside(rel) {
                continue;
            }
            if let Some((s, n)) = sha(&run.join(rel)) {
                if rel.ends_with("state.json") {
                    set(c, "sha256", s.clone());
                }
                set(f, "sha256", s);
                set(f, "bytes", n);
            }
        }
        set(c, "files", Value::Array(new_files));
    }
    write(&mp, &m);
}

/// Every `{path, sha256, bytes}` object in `v` whose path stays inside `root`: re-hashed.
fn reseal_refs(v: &mut Value, root: &Path) {
    match v {
        Value::Object(o) => {
            let path = o.get("path").and_then(|p| p.as_str()).map(str::to_string);
            if let (Some(rel), true) = (path, o.contains_key("sha256")) {
                if inside(&rel) {
                    if let Some((s, n)) = sha(&root.join(&rel)) {
                        o.insert("sha256".into(), s.into());
                        if o.contains_key("bytes") {
                            o.insert("bytes".into(), n.into());
                        }
                    }
                }
            }
            for x in o.values_mut() {
                reseal_refs(x, root);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| reseal_refs(x, root)),
        _ => {}
    }
}

/// `RUN/index`: every file reference in the index manifest (paths relative to the run).
pub fn index(index_dir: &Path) {
    let mp = index_dir.join("manifest.json");
    let Some(mut m) = read(&mp) else { return };
    let run = index_dir.parent().expect("index dir has a parent");
    reseal_refs(&mut m, run);
    write(&mp, &m);
}

/// A release: every file reference in its manifest (paths relative to the release).
pub fn release(out: &Path) {
    let mp = out.join("manifest.json");
    let Some(mut m) = read(&mp) else { return };
    reseal_refs(&mut m, out);
    write(&mp, &m);
}
