//! Values that load but are wrong: checkpoints whose tensors hold non-finite numbers or
//! negative second moments, and a tokenizer whose vocabulary is not the model's — each
//! with every hash rewritten consistently, as a forger would, so that only a check of
//! the values themselves can catch it. Every loader refuses them, naming the file and
//! the tensor; none trains on, replays, evaluates or republishes them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{copy_dir, glass, ok, p, small_run};

/// A trained small run shared by the tests of this file (tests work on copies).
fn trained() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("values-base");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let run = small_run(&root.join("run"), &[]);
        ok(&["train", &p(&run), "--quiet"]);
        run
    })
}

fn copy_of(tmp: &Path) -> PathBuf {
    let dst = tmp.join("run");
    copy_dir(trained(), &dst);
    dst
}

/// Asserts `o` is a clean refusal (exit 1 or 2) whose output mentions every word.
fn refused(o: &Output, words: &[&str]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let code = o.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "expected exit 1 or 2, got {code:?}:\n{text}"
    );
    for w in words {
        assert!(text.contains(w), "missing `{w}` in:\n{text}");
    }
    assert!(!text.contains("panicked"), "{text}");
    eprintln!("refused: {}", text.trim_end());
    text
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn sha(p: &Path) -> (String, u64) {
    glass_io::atomic::sha256_file(p).unwrap()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Rewrites every hash of the run after an edit, as a forger would: `data/` (the
/// tokenizer's hash wherever it is recorded, every header's file hashes, the data
/// manifest's list), then the run manifest's data hash, and checkpoint by checkpoint
/// the state's tensor hashes, data hash and predecessor, and the entry's hashes.
fn reseal(run: &Path) {
    let data = run.join("data");
    let dm = data.join("manifest.json");
    let old_tok = read_json(&dm)["tokenizer"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let (new_tok, _) = sha(&data.join("tokenizer.json"));
    let mut all = Vec::new();
    files_under(&data, &mut all);
    let headers: Vec<&PathBuf> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("tokenizer.json"))
        .collect();
    for h in &headers {
        let text = std::fs::read_to_string(h)
            .unwrap()
            .replace(&old_tok, &new_tok);
        std::fs::write(h, text).unwrap();
    }
    for h in headers.iter().filter(|p| !p.ends_with("manifest.json")) {
        let mut v = read_json(h);
        for key in ["tokens", "segments", "docs"] {
            if let Some(f) = v.get_mut(key).filter(|f| f.is_object()) {
                let (s, n) = sha(&h.parent().unwrap().join(f["file"].as_str().unwrap()));
                f["sha256"] = s.into();
                f["bytes"] = n.into();
            }
        }
        write_json(h, &v);
    }
    let mut m = read_json(&dm);
    for f in m["files"].as_array_mut().unwrap() {
        let (s, n) = sha(&data.join(f["path"].as_str().unwrap()));
        f["sha256"] = s.into();
        f["bytes"] = n.into();
    }
    write_json(&dm, &m);
    let (data_sha, _) = sha(&dm);

    let rp = run.join("manifest.json");
    let mut rm = read_json(&rp);
    rm["data_manifest_sha256"] = data_sha.clone().into();
    let mut prev: Option<String> = None;
    for c in rm["checkpoints"].as_array_mut().unwrap() {
        let path_of = |name: &str| {
            let rel = c["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap())
                .find(|p| p.ends_with(name))
                .unwrap();
            run.join(rel)
        };
        let sp = path_of("state.json");
        let mut st = read_json(&sp);
        st["model_sha256"] = sha(&path_of("model.safetensors")).0.into();
        st["optimizer_sha256"] = sha(&path_of("optimizer.safetensors")).0.into();
        st["data_manifest_sha256"] = data_sha.clone().into();
        if let Some(prev) = &prev {
            st["parent_checkpoint_sha256"] = prev.clone().into();
        }
        write_json(&sp, &st);
        for f in c["files"].as_array_mut().unwrap() {
            let (s, n) = sha(&run.join(f["path"].as_str().unwrap()));
            f["sha256"] = s.into();
            f["bytes"] = n.into();
        }
        let (state_sha, _) = sha(&sp);
        c["sha256"] = state_sha.clone().into();
        prev = Some(state_sha);
    }
    write_json(&rp, &rm);
}

/// Checkpoint `k`'s file ending in `name`.
fn checkpoint_file(run: &Path, k: usize, name: &str) -> PathBuf {
    let m = read_json(&run.join("manifest.json"));
    let rel = m["checkpoints"][k]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.ends_with(name))
        .unwrap()
        .to_string();
    run.join(rel)
}

/// Sets element 0 of the last tensor (in file order) whose name starts with `prefix` to
/// `value`; returns the tensor's name.
fn poke(file: &Path, prefix: &str, value: f32) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, at) = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["data_offsets"][0].as_u64().unwrap() as usize))
        .max_by_key(|(_, at)| *at)
        .unwrap();
    let at = 8 + n + at;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
    name
}

#[test]
fn bad_optimizer_state_and_weights_are_refused_by_replay_branch_and_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let n = read_json(&trained().join("manifest.json"))["checkpoints"]
        .as_array()
        .unwrap()
        .len();
    let k = n - 1; // replay proves checkpoint k from the forged k - 1
    let cases: [(&str, &str, f32, &str); 4] = [
        ("optimizer.safetensors", "exp_avg_sq.", f32::INFINITY, "inf"),
        ("optimizer.safetensors", "exp_avg_sq.", -1.0, "-1"),
        ("optimizer.safetensors", "exp_avg.", f32::NAN, "NaN"),
        ("model.safetensors", "", f32::NEG_INFINITY, "-inf"),
    ];
    for (i, (file, prefix, value, shown)) in cases.into_iter().enumerate() {
        let run = copy_of(&tmp.path().join(format!("case{i}")));
        let target = checkpoint_file(&run, k - 1, file);
        let tensor = poke(&target, prefix, value);
        reseal(&run);
        eprintln!("case {i}: {tensor} = {value}");
        // Every hash agrees: only the values are wrong, and `glass verify` checks them.
        let words = [file, tensor.as_str(), shown, "element 0"];
        refused(&glass(&["verify", &p(&run)]), &words);
        refused(
            &glass(&["verify", &p(&run), "--replay", &k.to_string()]),
            &words,
        );
        let branch = tmp.path().join(format!("branch{i}"));
        let from = (k - 1).to_string();
        ok(&[
            "init",
            &p(&branch),
            "--from",
            &p(&run),
            "--checkpoint",
            &from,
        ]);
        refused(
            &glass(&[
                "train",
                &p(&branch),
                "--quiet",
                "--from",
                &p(&run),
                "--checkpoint",
                &from,
                "--continue",
            ]),
            &words,
        );
        let mp = branch.join("manifest.json");
        if mp.exists() {
            let published = read_json(&mp);
            assert!(
                published["checkpoints"]
                    .as_array()
                    .is_none_or(|c| c.is_empty()),
                "the branch published checkpoints: {published}"
            );
        }
        if file == "model.safetensors" {
            // Readers of the weights alone refuse them too.
            refused(
                &glass(&[
                    "generate",
                    &p(&run),
                    "--checkpoint",
                    &from,
                    "--prompt",
                    "To be",
                    "--max-tokens",
                    "2",
                ]),
                &words,
            );
            refused(
                &glass(&[
                    "eval",
                    &p(&run),
                    "--checkpoints",
                    &from,
                    "--tasks",
                    "glass_cloze",
                    "--limit",
                    "1",
                    "--quiet",
                ]),
                &words,
            );
        }
    }
}

/// A `tokenizer.json` replaced by one with more or fewer ids than the model's embedding
/// rows (hashes rewritten): `data show` and `generate` refuse it instead of decoding
/// rows and samples with ids silently dropped.
#[test]
fn a_tokenizer_that_is_not_the_models_is_refused_where_they_meet() {
    let tmp = tempfile::tempdir().unwrap();
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 2] = [
        ("more ids", |t| {
            let n = t["model"]["vocab"]
                .as_object()
                .unwrap()
                .values()
                .chain(
                    t["added_tokens"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| &a["id"]),
                )
                .map(|v| v.as_u64().unwrap())
                .max()
                .unwrap();
            t["added_tokens"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "id": n + 1, "content": "<|extra|>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                }));
        }),
        ("fewer ids", |t| {
            // Drop the last merge and the token it makes (the highest id).
            let vocab = t["model"]["vocab"].as_object_mut().unwrap();
            let top = vocab
                .iter()
                .max_by_key(|(_, v)| v.as_u64().unwrap())
                .map(|(k, _)| k.clone())
                .unwrap();
            vocab.remove(&top);
            t["model"]["merges"].as_array_mut().unwrap().pop();
        }),
    ];
    for (i, (what, edit)) in edits.into_iter().enumerate() {
        eprintln!("tokenizer with {what}");
        let run = copy_of(&tmp.path().join(format!("case{i}")));
        let tp = run.join("data/tokenizer.json");
        let mut t = read_json(&tp);
        edit(&mut t);
        std::fs::write(&tp, serde_json::to_vec(&t).unwrap()).unwrap();
        reseal(&run);
        ok(&["verify", &p(&run)]);
        refused(
            &glass(&["data", "show", &p(&run), "--step", "0"]),
            &["tokenizer.json", "ids"],
        );
        refused(
            &glass(&[
                "generate",
                &p(&run),
                "--prompt",
                "To be",
                "--max-tokens",
                "2",
            ]),
            &["tokenizer.json", "ids"],
        );
    }
}
