//! `glass import llm360` on a miniature release in LLM360's published layout, written by
//! `tools/llm360/make_mini_release.py` (transformers checkpoints as sharded `.bin` and
//! safetensors, JSONL chunks): the imported run's batches are the JSONL rows in order with
//! their sources, its checkpoints compute transformers' logits, it verifies, and bad
//! releases are refused with the file and line named.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{glass, ok};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm360-mini")
}

fn import(data: &Path, ckpts: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "import",
        "llm360",
        "--data",
        data.to_str().unwrap(),
        "--checkpoints",
        ckpts.to_str().unwrap(),
    ];
    if !extra.contains(&"--rows-per-step") {
        args.extend_from_slice(&["--rows-per-step", "4"]);
    }
    args.extend_from_slice(extra);
    args.push(run.to_str().unwrap());
    glass(&args)
}

/// The fixture's JSONL rows in training order: (file name, line, token ids, source).
fn jsonl_rows(data: &Path) -> Vec<(String, usize, Vec<u64>, String)> {
    let mut out = Vec::new();
    for c in 0..2 {
        let name = format!("train_{c:03}.jsonl");
        let text = std::fs::read_to_string(data.join(&name)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            let ids = v["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            out.push((
                name.clone(),
                i + 1,
                ids,
                v["source"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn imported_llm360_release_shows_its_rows_computes_its_logits_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("amber-mini");
    let r = run.to_str().unwrap();
    let f = fixture();
    let o = import(&f.join("data"), &f.join("checkpoints"), &run, &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["n_steps"], 4);
    assert_eq!(rep["steps_per_chunk"], 2);
    assert_eq!(rep["row_len"], 17);

    // Every step's batch is the JSONL rows in order, with their sources and origins.
    let rows = jsonl_rows(&f.join("data"));
    assert_eq!(rows.len(), 16);
    let mut seen = 0;
    for step in 0..4 {
        let s: Value = serde_json::from_str(&ok(&[
            "data",
            "show",
            r,
            "--step",
            &step.to_string(),
            "--json",
        ]))
        .unwrap();
        for row in s["rows"].as_array().unwrap() {
            let (file, line, ids, source) = &rows[seen];
            let got: Vec<u64> = row["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            assert_eq!(&got, ids, "step {step} row {seen}");
            assert_eq!(row["source"], source.as_str(), "step {step} row {seen}");
            assert_eq!(
                row["segments"][0]["doc_id"],
                format!("{file}:{line}"),
                "step {step} row {seen}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, rows.len());
    let past = glass(&["data", "show", r, "--step", "4"]);
    assert!(!past.status.success());

    // Checkpoint NNN is the model of ckpt_NNN (sharded .bin and sharded safetensors): the
    // logits transformers computed, within 1e-4.
    let reference: Value =
        serde_json::from_slice(&std::fs::read(f.join("reference.json")).unwrap()).unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    for (k, want) in reference["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(m["checkpoints"][k]["step"], 2 * (k as u64 + 1));
        let out = dir.path().join(format!("logits-{k}.json"));
        ok(&[
            "generate",
            r,
            "--checkpoint",
            &k.to_string(),
            "--prompt",
            reference["prompt"].as_str().unwrap(),
            "--max-tokens",
            "0",
            "--logits-out",
            out.to_str().unwrap(),
        ]);
        let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got["ids"], want["ids"]);
        let (g, w) = (
            got["logits"].as_array().unwrap(),
            want["logits"].as_array().unwrap(),
        );
        assert_eq!(g.len(), w.len());
        let mut worst = 0f64;
        for (a, b) in g.iter().zip(w) {
            for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
                worst = worst.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
            }
        }
        assert!(worst < 1e-4, "checkpoint {k}: max |Δlogit| = {worst}");
    }

    assert!(ok(&["verify", r]).contains("all files match"));
    // The data came from the release: prepare refuses to rebuild it.
    let p = glass(&["data", "prepare", r]);
    let err = String::from_utf8_lossy(&p.stderr);
    assert!(
        !p.status.success() && err.contains("kind = \"release\""),
        "{err}"
    );
    // It is for study: training refuses and says how to continue pretraining instead.
    let t = glass(&["train", r, "--quiet"]);
    let err = String::from_utf8_lossy(&t.stderr);
    assert!(
        !t.status.success() && err.contains("glass import hf"),
        "{err}"
    );
    // A changed data byte is named.
    let chunk = run.join("data/chunks/chunk-00001.tokens");
    let mut b = std::fs::read(&chunk).unwrap();
    b[0] ^= 1;
    std::fs::write(&chunk, b).unwrap();
    let v = glass(&["verify", r]);
    let out = String::from_utf8_lossy(&v.stdout).into_owned() + &String::from_utf8_lossy(&v.stderr);
    assert!(
        !v.status.success() && out.contains("chunk-00001.tokens"),
        "{out}"
    );
}

/// Copies the fixture, lets `edit` break it, and returns the import's stderr (the import
/// must fail and leave no run behind).
fn refused(edit: impl FnOnce(&Path), extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("rel");
    for sub in ["data", "checkpoints/ckpt_000", "checkpoints/ckpt_001"] {
        std::fs::create_dir_all(rel.join(sub)).unwrap();
        for e in std::fs::read_dir(fixture().join(sub)).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), rel.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    edit(&rel);
    let run = dir.path().join("run");
    let o = import(&rel.join("data"), &rel.join("checkpoints"), &run, extra);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "accepted a bad release");
    assert!(!run.exists(), "left a run behind: {err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "left temporary files: {leftovers:?}");
    err
}

fn edit_line(rel: &Path, file: &str, line: usize, f: impl Fn(&str) -> Vec<u8>) {
    let p = rel.join("data").join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 == line {
            out.extend(f(l));
        } else {
            out.extend_from_slice(l.as_bytes());
        }
        out.push(b'\n');
    }
    std::fs::write(p, out).unwrap();
}

#[test]
fn bad_llm360_releases_are_refused_naming_file_and_line() {
    let e = refused(
        |rel| {
            edit_line(rel, "train_001.jsonl", 3, |l| {
                l.replacen("[", "[7, ", 1).into()
            })
        },
        &[],
    );
    assert!(
        e.contains("train_001.jsonl:3") && e.contains("18 token ids"),
        "{e}"
    );

    let e = refused(
        |rel| {
            edit_line(rel, "train_000.jsonl", 2, |l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v["token_ids"][4] = 300.into();
                serde_json::to_vec(&v).unwrap()
            })
        },
        &[],
    );
    assert!(
        e.contains("train_000.jsonl:2") && e.contains("token id 300"),
        "{e}"
    );

    let e = refused(
        |rel| edit_line(rel, "train_001.jsonl", 5, |l| l[..l.len() - 3].into()),
        &[],
    );
    assert!(
        e.contains("train_001.jsonl:5") && e.contains("not a row object"),
        "{e}"
    );

    let e = refused(
        |rel| {
            edit_line(rel, "train_000.jsonl", 4, |l| {
                l.replacen("\"c4\"", "\"c\u{0}4\"", 1)
                    .replacen("\"arxiv\"", "\"arx\u{0}iv\"", 1)
                    .replacen("\"starcoder\"", "\"star\u{0}coder\"", 1)
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == 0 { 0xff } else { b })
                    .collect()
            })
        },
        &[],
    );
    assert!(
        e.contains("train_000.jsonl:4") && e.contains("UTF-8"),
        "{e}"
    );

    let e = refused(
        |rel| std::fs::remove_dir_all(rel.join("checkpoints/ckpt_001")).unwrap(),
        &[],
    );
    assert!(
        e.contains("train_001.jsonl") && e.contains("ckpt_001"),
        "{e}"
    );

    let e = refused(|_| {}, &["--rows-per-step", "3"]);
    assert!(e.contains("train_000.jsonl") && e.contains("8 rows"), "{e}");
}

#[test]
fn chosen_checkpoints_only_need_their_folders() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    // ckpt_000 is not needed when only checkpoint 1 is imported (all data still is).
    let ckpts = dir.path().join("checkpoints");
    std::fs::create_dir_all(ckpts.join("ckpt_001")).unwrap();
    for e in std::fs::read_dir(f.join("checkpoints/ckpt_001")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), ckpts.join("ckpt_001").join(e.file_name())).unwrap();
    }
    let run = dir.path().join("run");
    let o = import(
        &f.join("data"),
        &ckpts,
        &run,
        &["--select-checkpoints", "latest"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let c = m["checkpoints"].as_array().unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0]["index"].as_u64(), c[0]["step"].as_u64()),
        (Some(1), Some(4))
    );
    let r = run.to_str().unwrap();
    assert!(ok(&["verify", r]).contains("all files match"));
    let s: Value =
        serde_json::from_str(&ok(&["data", "show", r, "--step", "0", "--json"])).unwrap();
    assert_eq!(s["rows"][0]["segments"][0]["doc_id"], "train_000.jsonl:1");
    let o = import(
        &f.join("data"),
        &ckpts,
        &dir.path().join("run2"),
        &["--select-checkpoints", "2"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("chunks 0..=1"), "{err}");
}

/// The default, one row per step (and any other step size), imports: the run's
/// micro-batch is the largest of 4, 3, 2, 1 that divides the step.
#[test]
fn any_rows_per_step_imports_with_a_micro_batch_that_divides_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    for (rows, micro) in [("1", 1), ("2", 2), ("8", 4)] {
        let run = dir.path().join(format!("run{rows}"));
        let o = import(
            &f.join("data"),
            &f.join("checkpoints"),
            &run,
            &["--rows-per-step", rows, "--weights-only"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cfg = std::fs::read_to_string(run.join("glass.toml")).unwrap();
        assert!(
            cfg.contains(&format!("\nmicro_batch_rows = {micro}\n")),
            "{cfg}"
        );
        let s: Value = serde_json::from_str(&ok(&[
            "data",
            "show",
            run.to_str().unwrap(),
            "--step",
            "1",
            "--json",
        ]))
        .unwrap();
        assert_eq!(
            s["rows"].as_array().unwrap().len(),
            rows.parse::<usize>().unwrap()
        );
    }
}
