//! Branches as controlled experiments, through the real `glass` binary: a branch that
//! continues its parent's stream reproduces the parent bit for bit when unchanged, a
//! changed branch differs exactly where its change says, and `glass diff` shows it.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{glass, ok, p, small_run};

fn manifest(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

/// (step, model sha, optimizer sha) of every checkpoint.
fn tensor_hashes(run: &Path) -> Vec<(u64, String, String)> {
    let m = manifest(run);
    m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let file = |name: &str| {
                c["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["path"].as_str().unwrap().ends_with(name))
                    .unwrap()["sha256"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            (
                c["step"].as_u64().unwrap(),
                file("model.safetensors"),
                file("optimizer.safetensors"),
            )
        })
        .collect()
}

/// `glass init NEW --from PARENT --checkpoint K`, optionally edited, then the branch.
fn branch(parent: &Path, new: &Path, k: &str, edit: impl Fn(String) -> String) {
    ok(&["init", &p(new), "--from", &p(parent), "--checkpoint", k]);
    let cfg = new.join("glass.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.starts_with("# Branch of"), "{text}");
    std::fs::write(&cfg, edit(text)).unwrap();
    ok(&[
        "train",
        &p(new),
        "--quiet",
        "--from",
        &p(parent),
        "--checkpoint",
        k,
        "--continue",
    ]);
}

#[test]
fn unchanged_continuing_branches_reproduce_the_parent_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    // Skipped steps 10 and 22 and the stage boundary at step 19 lie after both branch
    // points (steps 4 and 16).
    let parent = small_run(&tmp.path().join("parent"), &[10, 22]);
    ok(&["train", &p(&parent), "--quiet"]);
    let reference = tensor_hashes(&parent);
    assert_eq!(reference[3].0, 4);
    assert_eq!(reference[6].0, 16);

    for (k, step) in [(3usize, 4u64), (6, 16)] {
        let b = tmp.path().join(format!("branch{k}"));
        branch(&parent, &b, &k.to_string(), |t| t);
        assert_eq!(
            tensor_hashes(&b),
            reference[k..].to_vec(),
            "an unchanged branch at checkpoint {k} must publish the parent's later checkpoints bit for bit"
        );
        // The rows are read from the parent by hash, not copied.
        assert!(!b.join("data/chunks").exists());
        let info: Value = serde_json::from_str(&ok(&["info", &p(&b), "--json"])).unwrap();
        assert_eq!(info["parent"]["mode"], "continue");
        assert_eq!(info["parent"]["checkpoint"], k);
        assert_eq!(info["parent"]["step"], step);
        assert_eq!(
            info["parent"]["checkpoint_sha256"],
            manifest(&parent)["checkpoints"][k]["sha256"]
        );
        let text = ok(&["info", &p(&b)]);
        assert!(text.contains("branched (continue)"), "{text}");
        // Every checkpoint of the branch replays, its first included.
        ok(&["verify", &p(&b)]);
        for r in ["0", "1"] {
            let out = ok(&["verify", &p(&b), "--replay", r]);
            assert!(out.contains("bit-identical"), "{out}");
        }
        let d: Value = serde_json::from_str(&ok(&["diff", &p(&parent), &p(&b), "--json"])).unwrap();
        assert_eq!(d["common"]["a_checkpoint"], k);
        assert_eq!(d["data"]["differing_steps"], 0);
        assert_eq!(d["data"]["steps_compared"], 35 - step);
        for row in d["checkpoints"].as_array().unwrap() {
            assert_eq!(row["same_model"], true, "{row}");
            assert_eq!(row["same_optimizer"], true, "{row}");
        }
    }
    // A branch of the first branch (at its checkpoint 3, step 16) reads the original
    // parent's rows and reproduces it too.
    let b3 = tmp.path().join("branch3");
    let bb = tmp.path().join("branch3-3");
    branch(&b3, &bb, "3", |t| {
        assert_eq!(t.matches("# Branch of").count(), 1, "{t}");
        t
    });
    assert_eq!(tensor_hashes(&bb), reference[6..].to_vec());
    let dm: Value =
        serde_json::from_slice(&std::fs::read(bb.join("data/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        dm["base"]["run_dir"].as_str().unwrap(),
        std::fs::canonicalize(&parent).unwrap().to_str().unwrap()
    );
    assert_eq!(dm["base"]["from_step"], 16);
    // The branch's later checkpoint replays across the skipped step and stage boundary.
    let out = ok(&["verify", &p(&tmp.path().join("branch6")), "--replay", "2"]);
    assert!(out.contains("bit-identical"), "{out}");
    // `latest` names the parent's last checkpoint.
    let l = tmp.path().join("latest");
    let out = ok(&[
        "init",
        &p(&l),
        "--from",
        &p(&parent),
        "--checkpoint",
        "latest",
    ]);
    assert!(out.contains("at checkpoint 11, step 35"), "{out}");
    // Re-running the branch command resumes (nothing left to do) instead of refusing.
    ok(&[
        "train",
        &p(&b3),
        "--quiet",
        "--from",
        &p(&parent),
        "--checkpoint",
        "3",
        "--continue",
    ]);
    // A continued-pretraining branch of the same checkpoint is another run.
    let o = glass(&[
        "train",
        &p(&b3),
        "--quiet",
        "--from",
        &p(&parent),
        "--checkpoint",
        "3",
    ]);
    assert!(!o.status.success());
}

#[test]
fn a_branch_that_skips_a_chunk_differs_from_it_on_and_only_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = small_run(&tmp.path().join("parent"), &[]);
    ok(&["train", &p(&parent), "--quiet"]);
    let reference = tensor_hashes(&parent);
    let b = tmp.path().join("skip3");
    // Chunk 3 holds steps 12..16; the branch starts at checkpoint 3 (step 4).
    branch(&parent, &b, "3", |t| {
        t.replacen("[guard]\n", "[guard]\nskip_chunks = [3]\n", 1)
    });
    let got = tensor_hashes(&b);
    assert_eq!(got.len(), reference.len() - 3);
    for (g, r) in got.iter().zip(&reference[3..]) {
        assert_eq!(g.0, r.0);
        assert_eq!(
            g.1 == r.1,
            g.0 < 16,
            "step {}: same weights exactly before chunk 3 ends",
            g.0
        );
    }
    let d: Value = serde_json::from_str(&ok(&["diff", &p(&parent), &p(&b), "--json"])).unwrap();
    // Offsets from step 4: chunk 3 is offsets 8..12.
    assert_eq!(d["data"]["differing"], serde_json::json!([[8, 12]]), "{d}");
    assert_eq!(d["data"]["b_only_skipped"], 4);
    let a_tokens: u64 = d["data"]["a_tokens"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        a_tokens,
        4 * 4 * 17,
        "chunk 3's rows: 4 steps of 4 rows of 17 tokens"
    );
    assert!(d["data"]["b_tokens"].as_object().unwrap().is_empty());
    assert_eq!(d["config_tables"], serde_json::json!(["guard"]));
    // Evaluation scores and memorization, where present, sit side by side.
    for run in [&parent, &b] {
        ok(&[
            "eval",
            &p(run),
            "--checkpoints",
            "latest",
            "--tasks",
            "glass_heldout",
            "--limit",
            "2",
        ]);
        ok(&[
            "analyze",
            "memorization",
            &p(run),
            "--checkpoints",
            "latest",
            "--chunks",
            "0",
            "--samples",
            "4",
            "--prompt-tokens",
            "8",
            "--continuation-tokens",
            "8",
        ]);
    }
    let d: Value = serde_json::from_str(&ok(&["diff", &p(&parent), &p(&b), "--json"])).unwrap();
    let last = d["checkpoints"].as_array().unwrap().last().unwrap().clone();
    for side in ["a", "b"] {
        assert!(
            last[side]["evals"]["glass_heldout/bits_per_byte"].is_f64(),
            "{last}"
        );
        assert!(last[side]["memorization_token_match"].is_f64(), "{last}");
    }
    assert_ne!(
        last["a"]["evals"]["glass_heldout/bits_per_byte"],
        last["b"]["evals"]["glass_heldout/bits_per_byte"]
    );
    let text = ok(&["diff", &p(&parent), &p(&b)]);
    assert!(
        text.contains("4 of 31 steps differ") && text.contains("A steps 12..15"),
        "{text}"
    );
    assert!(text.contains("A glass_heldout/bits_per_byte"), "{text}");
    assert!(
        text.contains("identical") && text.contains("differ"),
        "{text}"
    );

    // An earlier decay: the cosine ends at step 24 instead of 35 (warm-up ends at 20).
    let lr = tmp.path().join("lr");
    branch(&parent, &lr, "7", |t| {
        t.replacen("[optim]\n", "[optim]\ndecay_end_step = 24\n", 1)
    });
    let steps: Value = serde_json::from_str(&ok(&["metrics", &p(&lr), "--json"])).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps[0]["step"], 20, "the branch trains from step 20 on");
    // The tiny preset's schedule: peak 3e-3, floor 3e-4.
    assert!((steps[0]["lr"].as_f64().unwrap() - 3e-3).abs() < 1e-9);
    for s in &steps[4..] {
        assert!((s["lr"].as_f64().unwrap() - 3e-4).abs() < 1e-9, "{s}");
    }
    let parent_lr: Value = serde_json::from_str(&ok(&["metrics", &p(&parent), "--json"])).unwrap();
    assert!(parent_lr[24]["lr"].as_f64().unwrap() > 4.5e-4);
    assert_eq!(tensor_hashes(&lr)[0], reference[7]);
    assert_ne!(tensor_hashes(&lr)[1].1, reference[8].1);

    // Bad branch configs are refused with the key at fault named.
    let refused = |name: &str, k: &str, edit: &dyn Fn(String) -> String, words: &[&str]| {
        let bad = tmp.path().join(name);
        ok(&["init", &p(&bad), "--from", &p(&parent), "--checkpoint", k]);
        let cfg = bad.join("glass.toml");
        std::fs::write(&cfg, edit(std::fs::read_to_string(&cfg).unwrap())).unwrap();
        let o = glass(&[
            "train",
            &p(&bad),
            "--quiet",
            "--from",
            &p(&parent),
            "--checkpoint",
            k,
            "--continue",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        for w in words {
            assert!(err.contains(w), "missing `{w}` in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    refused(
        "seed",
        "3",
        &|t| t.replacen("seed = 1234", "seed = 99", 1),
        &["[data] differs", "seed"],
    );
    refused(
        "chunk99",
        "3",
        &|t| t.replacen("[guard]\n", "[guard]\nskip_chunks = [99]\n", 1),
        &["skip_chunks", "99"],
    );
    refused(
        "midchunk",
        "2",
        &|t| {
            // The first stage's mix changed: its rows differ from step 0 on.
            let mut t: toml::Table = toml::from_str(&t).unwrap();
            let stage = t.get_mut("data").unwrap()["stages"].as_array_mut().unwrap()[0]
                .as_table_mut()
                .unwrap();
            let mut w = toml::Table::new();
            w.insert("english".into(), toml::Value::Float(0.5));
            w.insert("code".into(), toml::Value::Float(0.5));
            stage.insert("weights".into(), toml::Value::Table(w));
            toml::to_string(&t).unwrap()
        },
        &["chunk boundary", "step 2"],
    );
    // A linked branch has nothing to prepare.
    let o = glass(&["data", "prepare", &p(&b)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("nothing to prepare"),
        "{err}"
    );

    // The parent's rows are read by hash: a moved parent is named, not a panic.
    std::fs::rename(&parent, tmp.path().join("moved")).unwrap();
    let o = glass(&["verify", &p(&b), "--replay", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("moved"), "{err}");
}

#[test]
fn a_branch_that_drops_a_source_changes_only_the_remaining_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = small_run(&tmp.path().join("parent"), &[]);
    ok(&["train", &p(&parent), "--quiet"]);
    let reference = tensor_hashes(&parent);
    // From checkpoint 3 (step 4), the second stage (steps 19..35) trains on English
    // only instead of 70% English and 30% code.
    let b = tmp.path().join("nocode");
    branch(&parent, &b, "3", |t| {
        let mut t: toml::Table = toml::from_str(&t).unwrap();
        let stage = t.get_mut("data").unwrap()["stages"].as_array_mut().unwrap()[1]
            .as_table_mut()
            .unwrap();
        let mut w = toml::Table::new();
        w.insert("english".into(), toml::Value::Float(1.0));
        stage.insert("weights".into(), toml::Value::Table(w));
        stage.remove("fim_rate");
        toml::to_string(&t).unwrap()
    });
    let got = tensor_hashes(&b);
    for (g, r) in got.iter().zip(&reference[3..]) {
        assert_eq!(g.0, r.0);
        assert_eq!(g.1 == r.1, g.0 <= 16, "step {}", g.0);
    }
    // Only the chunks from the branch point on are the branch's own.
    assert!(b.join("data/chunks/chunk-00001.tokens").exists());
    assert!(!b.join("data/chunks/chunk-00000.tokens").exists());
    let d: Value = serde_json::from_str(&ok(&["diff", &p(&parent), &p(&b), "--json"])).unwrap();
    assert_eq!(d["data"]["differing"], serde_json::json!([[15, 31]]), "{d}");
    assert!(d["data"]["a_tokens"]["code"].as_u64().unwrap() > 0, "{d}");
    assert!(d["data"]["b_tokens"].get("code").is_none(), "{d}");
    assert_eq!(d["data"]["b_tokens"]["english"], 16 * 4 * 17);
    // The new order is again a pure function of the config: the same edit in another
    // directory gives the same data.
    let b2 = tmp.path().join("nocode2");
    ok(&["init", &p(&b2), "--from", &p(&parent), "--checkpoint", "3"]);
    std::fs::copy(b.join("glass.toml"), b2.join("glass.toml")).unwrap();
    ok(&[
        "train",
        &p(&b2),
        "--quiet",
        "--from",
        &p(&parent),
        "--checkpoint",
        "3",
        "--continue",
        "--until-step",
        "4",
    ]);
    assert_eq!(
        std::fs::read(b.join("data/manifest.json")).unwrap(),
        std::fs::read(b2.join("data/manifest.json")).unwrap()
    );
    ok(&["data", "verify", &p(&b)]);
    let out = ok(&["verify", &p(&b), "--replay", "5"]);
    assert!(out.contains("bit-identical"), "{out}");
}
