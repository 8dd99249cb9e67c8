//! End-to-end tests of releases through the real `glass` binary, on one small trained run:
//! release → verify → import → replay and continue bit for bit; every changed, missing or
//! extra file named by `glass verify`; JSONL rows equal `glass data show`; an interrupted
//! release resumes to the same bytes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{glass, glass_env, ok, ok_output};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A small trained run shared by the tests: 1-layer model, 16-token rows, 4 rows a step,
/// 4 steps a chunk (8 chunks, 35 steps), trained once.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        ok(&["init", &s(&run), "--preset", "tiny"]);
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
        set(&mut t, &["run", "name"], toml::Value::String("rel".into()));
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
        ok(&["data", "prepare", &s(&run)]);
        ok(&["train", &s(&run), "--quiet"]);
        (tmp, run)
    })
    .1
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// (step, model sha, optimizer sha, state sha) of every checkpoint of a run.
fn checkpoint_bits(run: &Path) -> Vec<(u64, Vec<String>)> {
    json(&run.join("manifest.json"))["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["step"].as_u64().unwrap(),
                c["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["sha256"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn release_verifies_imports_replays_and_continues_bit_for_bit() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rel");
    let (stdout, stderr) = ok_output(&["release", &s(run), &s(&out), "--with-optimizer"]);
    assert!(stdout.contains("released"), "{stdout}");
    assert!(
        stderr.contains("checkpoint 0 (1/"),
        "progress on stderr: {stderr}"
    );
    let v = ok(&["verify", &s(&out)]);
    assert!(v.contains("the release matches its manifest"), "{v}");
    let m = json(&out.join("manifest.json"));
    let n_ckpt = m["checkpoints"].as_array().unwrap().len();
    assert_eq!(
        n_ckpt,
        json(&run.join("manifest.json"))["checkpoints"]
            .as_array()
            .unwrap()
            .len()
    );
    for f in [
        "README.md",
        "tokenizer.json",
        "metrics/steps.csv",
        "metrics/evals.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    for want in [
        "## Curriculum",
        "text+code",
        "## Checkpoints",
        "from_pretrained",
        "step N",
    ] {
        assert!(card.contains(want), "card lacks {want}");
    }
    // f32 folders carry the exact weights, so glass/ holds only the state and moments.
    let g = out.join("checkpoints/ckpt_001/glass");
    assert!(g.join("state.json").exists() && g.join("optimizer.safetensors").exists());
    assert!(!g.join("model.safetensors").exists());

    // Back into a run: every checkpoint restored bit for bit, data rebuilt and checked.
    let back = tmp.path().join("back");
    let o = ok(&["import", "release", &s(&out), &s(&back)]);
    assert!(o.contains("restored bit for bit"), "{o}");
    assert_eq!(checkpoint_bits(&back), checkpoint_bits(run));
    assert!(ok(&["verify", &s(&back)]).contains("all files match"));
    let last = (n_ckpt - 1).to_string();
    let r = ok(&["verify", &s(&back), "--replay", &last]);
    assert!(r.contains("bit-identical"), "{r}");

    // A release of the first checkpoints imports into a run that trains on to the same
    // bits as the original run.
    let early = tmp.path().join("early");
    ok(&[
        "release",
        &s(run),
        &s(&early),
        "--with-optimizer",
        "--checkpoints",
        "0,1,2,3",
    ]);
    let cont = tmp.path().join("cont");
    ok(&["import", "release", &s(&early), &s(&cont)]);
    assert_eq!(checkpoint_bits(&cont).len(), 4);
    ok(&["train", &s(&cont), "--quiet"]);
    assert_eq!(checkpoint_bits(&cont), checkpoint_bits(run));

    // Import refuses releases without optimizer state, naming the flag.
    let plain = tmp.path().join("plain");
    ok(&[
        "release",
        &s(run),
        &s(&plain),
        "--checkpoints",
        "latest",
        "--dtype",
        "bf16",
    ]);
    let e = glass(&["import", "release", &s(&plain), &s(&tmp.path().join("x"))]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("--with-optimizer"));
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn every_changed_missing_or_extra_file_is_named() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rel");
    ok(&[
        "release",
        &s(run),
        &s(&out),
        "--checkpoints",
        "0,2,latest",
        "--with-optimizer",
    ]);
    let m = json(&out.join("manifest.json"));
    let released: Vec<u64> = m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    let last = json(&run.join("manifest.json"))["checkpoints"]
        .as_array()
        .unwrap()
        .len() as u64
        - 1;
    assert_eq!(released, [0, 2, last]);
    let files: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(files.len() > 30, "{}", files.len());
    for f in &files {
        let p = out.join(f);
        let orig = std::fs::read(&p).unwrap();
        let mut bad = orig.clone();
        let i = bad.len() / 2;
        bad[i] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let o = glass(&["verify", &s(&out)]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "changed {f} not detected");
        assert!(text.contains(&format!("CHANGED {f}:")), "{f}: {text}");
        std::fs::write(&p, &orig).unwrap();
    }
    // Missing and extra files.
    let victim = out.join(&files[0]);
    let orig = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(out.join("data/stray.txt"), b"x").unwrap();
    let o = glass(&["verify", &s(&out), "--json"]);
    assert!(!o.status.success());
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<(String, String)> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().into(),
                p["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("missing".into(), files[0].clone())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("extra".into(), "data/stray.txt".into())),
        "{kinds:?}"
    );
    std::fs::write(&victim, orig).unwrap();
    std::fs::remove_file(out.join("data/stray.txt")).unwrap();
    // An edited fact in manifest.json itself is caught against the run's records.
    let mp = out.join("manifest.json");
    let orig = std::fs::read_to_string(&mp).unwrap();
    let step = m["checkpoints"][1]["step"].as_u64().unwrap();
    let edited = orig.replacen(
        &format!("\"step\": {step},"),
        &format!("\"step\": {},", step + 1),
        1,
    );
    assert_ne!(edited, orig);
    std::fs::write(&mp, edited).unwrap();
    let o = glass(&["verify", &s(&out)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("INCONSISTENT manifest.json"));
    std::fs::write(&mp, orig).unwrap();
    ok(&["verify", &s(&out)]);
}

#[test]
fn jsonl_rows_and_segments_equal_data_show() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rel");
    ok(&["release", &s(run), &s(&out), "--checkpoints", "latest"]);
    let m = json(&out.join("manifest.json"));
    let b = m["rows_per_step"].as_u64().unwrap();
    let mut steps = 0;
    for c in m["chunks"].as_array().unwrap() {
        let rows: Vec<Value> = std::fs::read_to_string(out.join(c["file"].as_str().unwrap()))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let segs: Vec<Value> = std::fs::read_to_string(out.join(c["segments"].as_str().unwrap()))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len() as u64, c["n_rows"].as_u64().unwrap());
        assert_eq!(segs.len(), rows.len());
        let first = c["first_step"].as_u64().unwrap();
        for step in first..first + c["n_steps"].as_u64().unwrap() {
            let shown: Value = serde_json::from_str(&ok(&[
                "data",
                "show",
                &s(run),
                "--step",
                &step.to_string(),
                "--json",
            ]))
            .unwrap();
            for (slot, want) in shown["rows"].as_array().unwrap().iter().enumerate() {
                let i = ((step - first) * b) as usize + slot;
                assert_eq!(rows[i]["token_ids"], want["ids"], "step {step} slot {slot}");
                assert_eq!(rows[i]["source"], want["source"], "step {step} slot {slot}");
                assert_eq!(segs[i]["step"].as_u64().unwrap(), step);
                let got: Vec<(Value, Value, Value)> = segs[i]["segments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| (x["pos"].clone(), x["len"].clone(), x["doc_id"].clone()))
                    .collect();
                let exp: Vec<(Value, Value, Value)> = want["segments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| (x["pos"].clone(), x["len"].clone(), x["doc_id"].clone()))
                    .collect();
                assert_eq!(got, exp, "step {step} slot {slot}");
            }
            steps += 1;
        }
    }
    assert!(steps >= 30, "{steps}");
}

#[test]
fn interrupted_release_resumes_to_the_same_bytes() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    ok(&["release", &s(run), &s(&whole), "--with-optimizer"]);
    let out = tmp.path().join("rel");
    let o = glass_env(
        &["release", &s(run), &s(&out), "--with-optimizer"],
        &[("GLASS_FAULT", "release-after-part:6")],
    );
    assert!(!o.status.success());
    assert!(!out.join("manifest.json").exists());
    // A part damaged after the interruption is redone, not trusted.
    let damaged = out.join("data/train_000.jsonl");
    let mut b = std::fs::read(&damaged).unwrap();
    b[10] ^= 1;
    std::fs::write(&damaged, b).unwrap();
    // What a crash at any instant leaves half-written (a temp file, a checkpoint folder
    // being assembled, an export folder) is cleared on resume, not published.
    let leftovers = [
        out.join("data/.train_000.jsonl.99999.tmp"),
        out.join("checkpoints/.ckpt_001.partial/model.safetensors"),
        out.join("checkpoints/..ckpt_002.partial.export-Ab12Cd/config.json"),
    ];
    for p in &leftovers {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"half").unwrap();
    }
    // Other options are refused rather than mixed in.
    let e = glass(&[
        "release",
        &s(run),
        &s(&out),
        "--dtype",
        "bf16",
        "--with-optimizer",
    ]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("same options"));
    let r: Value = serde_json::from_str(&ok(&[
        "release",
        &s(run),
        &s(&out),
        "--with-optimizer",
        "--json",
    ]))
    .unwrap();
    let kept = r["skipped_parts"].as_array().unwrap().len();
    assert!((3..6).contains(&kept), "{r}");
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        std::fs::read(whole.join("manifest.json")).unwrap()
    );
    ok(&["verify", &s(&out)]);
    assert!(!out.join(".release-partial").exists());
    for p in &leftovers {
        assert!(!p.exists(), "{} was left", p.display());
    }
    let e = glass(&["release", &s(run), &s(&out), "--with-optimizer"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("complete release"));
}
