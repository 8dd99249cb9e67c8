//! `glass import pythia` / `glass import olmo` on small data in each suite's published
//! layout, written by `tools/fixtures/make_suite_fixtures.py` together with the batches
//! the suites' own batch logic (Pythia's `batch_viewer.py`, OLMo's `MemMapDataset` and
//! `global_indices`) reads at several steps: `glass data show --step N --json` must give
//! exactly those rows, read in place (across `.bin` pieces and file tails), and bad
//! input must be refused naming the file.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{copy_dir, glass, llm360_tokenizer as tokenizer, ok, p};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suites")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

fn show(run: &Path, step: u64, extra: &[&str]) -> Value {
    let mut args = vec!["data", "show", run.to_str().unwrap(), "--step"];
    let s = step.to_string();
    args.push(&s);
    args.extend_from_slice(extra);
    args.push("--json");
    serde_json::from_str(&ok(&args)).unwrap()
}

fn ids(row: &Value) -> Vec<u64> {
    row["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

fn want_rows(step: &Value) -> Vec<Vec<u64>> {
    step["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        })
        .collect()
}

fn file_name(s: &str) -> String {
    Path::new(s)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn import_pythia(data: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "import",
        "pythia",
        "--data",
        data.to_str().unwrap(),
        "--rows-per-step",
        "4",
        "--seq-len",
        "7",
    ];
    args.extend_from_slice(extra);
    args.push(run.to_str().unwrap());
    glass(&args)
}

fn stderr(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected a refusal");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pythia_steps_are_batch_viewers_rows_across_pieces() {
    let d = tempfile::tempdir().unwrap();
    let exp = &expected()["pythia"];
    let run = d.path().join("pythia");
    let o = import_pythia(
        &fixtures().join("pythia"),
        &run,
        &["--tokenizer", tokenizer().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("data/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["format"], "glass-external-data-v1");
    assert_eq!(m["layout"]["kind"], "megatron");
    assert_eq!(m["layout"]["pieces"].as_array().unwrap().len(), 2);
    assert_eq!(m["row_len"], 8);
    assert_eq!(m["n_steps"], exp["n_steps"]);
    assert!(m["layout"]["pieces"][1]["sha256"].as_str().unwrap().len() == 64);
    let tok =
        glass_data::tokenizer::parse_tokenizer_json(&std::fs::read(tokenizer()).unwrap()).unwrap();
    for (s, step) in exp["steps"].as_object().unwrap() {
        let s: u64 = s.parse().unwrap();
        let v = show(&run, s, &[]);
        let rows = v["rows"].as_array().unwrap();
        let want = want_rows(step);
        assert_eq!(rows.len(), want.len());
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(ids(r), want[i], "step {s} row {i}");
            let seg = &r["segments"][0];
            assert_eq!(seg["doc"], step["sequences"][i]);
            assert_eq!(
                file_name(seg["meta"]["file"].as_str().unwrap()),
                step["files"][i].as_str().unwrap()
            );
            let want_ids: Vec<u32> = want[i].iter().map(|&x| x as u32).collect();
            assert_eq!(r["text"], tok.decode(&want_ids, false).unwrap());
        }
        // Ranks: contiguous slices whose concatenation is the global batch.
        let r1 = show(&run, s, &["--rank", "1", "--world-size", "2"]);
        assert_eq!(ids(&r1["rows"][0]), want[2]);
    }
    // The same data unsharded gives the same rows.
    let whole = d.path().join("whole");
    let o = import_pythia(&fixtures().join("pythia-whole"), &whole, &["--defer-hash"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for s in [0u64, 1, 4] {
        let a: Vec<Vec<u64>> = show(&run, s, &[])["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        let b: Vec<Vec<u64>> = show(&whole, s, &[])["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        assert_eq!(a, b);
    }
    // Text output without a tokenizer prints the ids; past the end is refused.
    let text = ok(&["data", "show", &p(&whole), "--step", "1"]);
    assert!(text.contains("--- ids ---"), "{text}");
    assert!(!glass(&["data", "show", &p(&whole), "--step", "5"])
        .status
        .success());
    // verify: deferred hashes are recorded on the first pass, then compared.
    ok(&["data", "verify", &p(&whole)]);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("data/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["layout"]["index"]["sha256"].as_str().unwrap().len(), 64);
    ok(&["data", "verify", &p(&run)]);
    // Prepared-data commands refuse, naming the external layout.
    let e = stderr(&glass(&["data", "stats", &p(&run)]));
    assert!(e.contains("external layout"), "{e}");
}

#[test]
fn pythia_changed_data_is_caught() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    copy_dir(&fixtures().join("pythia-whole"), &data);
    let run = d.path().join("run");
    let o = import_pythia(&data, &run, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Same length, one byte changed: verify names the file.
    let bin = data.join("document.bin");
    let mut b = std::fs::read(&bin).unwrap();
    b[3] ^= 1;
    std::fs::write(&bin, &b).unwrap();
    let o = glass(&["data", "verify", &p(&run)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && out.contains("document.bin"), "{out}");
    // Another length: every read refuses, naming it.
    b.push(0);
    std::fs::write(&bin, &b).unwrap();
    let e = stderr(&glass(&["data", "show", &p(&run), "--step", "0"]));
    assert!(e.contains("document.bin") && e.contains("recorded"), "{e}");
}

/// Writes a Megatron `.idx` with the given header fields and arrays.
fn write_idx(path: &Path, code: u8, sizes: &[i32], pointers: &[i64], docs: &[i64]) {
    let mut b = b"MMIDIDX\x00\x00".to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(code);
    b.extend_from_slice(&(sizes.len() as u64).to_le_bytes());
    b.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    for s in sizes {
        b.extend_from_slice(&s.to_le_bytes());
    }
    for p in pointers {
        b.extend_from_slice(&p.to_le_bytes());
    }
    for d in docs {
        b.extend_from_slice(&d.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_megatron_input_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("document.bin"), vec![0u8; 4 * 8 * 2]).unwrap();
    let idx = data.join("document.idx");
    let ptrs: Vec<i64> = (0..4).map(|i| i * 16).collect();
    // (dtype code, sizes, pointers, doc_idx, bytes cut off the end, expected message)
    type Case<'a> = (u8, Vec<i32>, Vec<i64>, Vec<i64>, usize, &'a str);
    let cases: Vec<Case> = vec![
        (8, vec![8; 3], ptrs[..3].to_vec(), vec![0, 3], 0, "the .bin"),
        (
            42,
            vec![8; 4],
            ptrs.clone(),
            vec![0, 4],
            0,
            "unknown dtype code 42",
        ),
        (
            8,
            vec![8; 4],
            vec![0, 16, 32, 4096],
            vec![0, 4],
            0,
            "runs past",
        ),
        (8, vec![8; 4], ptrs.clone(), vec![0, 3, 2, 4], 0, "doc_idx"),
        (8, vec![8; 4], ptrs.clone(), vec![0, 4], 1, "need"),
    ];
    for (k, (code, sizes, pointers, docs, cut, want)) in cases.iter().enumerate() {
        write_idx(&idx, *code, sizes, pointers, docs);
        let mut b = std::fs::read(&idx).unwrap();
        b.truncate(b.len() - cut);
        std::fs::write(&idx, b).unwrap();
        let run = d.path().join(format!("run{k}"));
        let e = stderr(&glass(&[
            "import",
            "pythia",
            "--data",
            &p(&data),
            "--rows-per-step",
            "2",
            "--seq-len",
            "7",
            &p(&run),
        ]));
        assert!(
            e.contains("document.idx") && e.contains(want),
            "case {k}: {e}"
        );
        assert!(!run.exists());
    }
    // A wrong --seq-len is caught on the first step.
    write_idx(&idx, 8, &[8; 4], &ptrs, &[0, 4]);
    let e = stderr(&glass(&[
        "import",
        "pythia",
        "--data",
        &p(&data),
        "--rows-per-step",
        "2",
        "--seq-len",
        "9",
        &p(&d.path().join("r")),
    ]));
    assert!(e.contains("--seq-len"), "{e}");
    // A missing piece is named.
    let pieces = d.path().join("pieces");
    copy_dir(&fixtures().join("pythia"), &pieces);
    std::fs::remove_file(pieces.join("document-00001-of-00001.bin")).unwrap();
    let e = stderr(&import_pythia(&pieces, &d.path().join("r2"), &[]));
    assert!(e.contains("document-00001-of-00001.bin"), "{e}");
}

fn import_olmo(dir: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let cfg = dir.join("config.yaml");
    let data = dir.join("data");
    let mut args = vec![
        "import",
        "olmo",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(run.to_str().unwrap());
    glass(&args)
}

#[test]
fn olmo_steps_follow_global_indices_over_per_file_instances() {
    let d = tempfile::tempdir().unwrap();
    let exp = &expected()["olmo"];
    let dir = fixtures().join("olmo");
    for (name, extra) in [
        ("raw", vec![]),
        (
            "npy",
            vec![
                "--global-indices".to_string(),
                dir.join("global_indices_u8.npy").display().to_string(),
            ],
        ),
    ] {
        let run = d.path().join(name);
        let mut extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let tok = tokenizer();
        extra.extend(["--tokenizer", tok.to_str().unwrap()]);
        let o = import_olmo(&dir, &run, &extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("data/manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["layout"]["kind"], "olmo");
        assert_eq!(m["n_steps"], exp["n_steps"]);
        assert_eq!(
            m["layout"]["global_indices_format"],
            if name == "raw" { "raw-u32" } else { "npy" }
        );
        for (s, step) in exp["steps"].as_object().unwrap() {
            let v = show(&run, s.parse().unwrap(), &[]);
            let rows = v["rows"].as_array().unwrap();
            let want = want_rows(step);
            assert_eq!(rows.len(), want.len());
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(ids(r), want[i], "{name} step {s} row {i}");
                let meta = &r["segments"][0]["meta"];
                assert_eq!(meta["sequence"], step["instances"][i]);
                assert_eq!(meta["chunk"], step["chunks"][i]);
                assert_eq!(
                    file_name(meta["file"].as_str().unwrap()),
                    step["files"][i].as_str().unwrap()
                );
                assert!(!r["text"].as_str().unwrap().is_empty());
            }
        }
        ok(&["data", "verify", &p(&run)]);
    }
}

#[test]
fn bad_olmo_input_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("olmo");
    copy_dir(&fixtures().join("olmo"), &dir);
    // An index past the data: the order file and the entry's offset are named.
    let gi = dir.join("data/global_indices.npy");
    let good = std::fs::read(&gi).unwrap();
    let mut b = good.clone();
    b[4..8].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&gi, &b).unwrap();
    let e = stderr(&import_olmo(&dir, &d.path().join("r1"), &[]));
    assert!(
        e.contains("global_indices.npy") && e.contains("byte 4") && e.contains("past"),
        "{e}"
    );
    // Imported while good, changed later (same length): show names it at that step.
    std::fs::write(&gi, &good).unwrap();
    let run = d.path().join("r2");
    let o = import_olmo(&dir, &run, &["--defer-hash"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b = good.clone();
    b[3 * 4..3 * 4 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&gi, &b).unwrap();
    let e = stderr(&glass(&["data", "show", &p(&run), "--step", "1"]));
    assert!(e.contains("global_indices.npy"), "{e}");
    std::fs::write(&gi, &good).unwrap();
    // A data file the config names but the folder lacks.
    std::fs::remove_file(dir.join("data/part-2.npy")).unwrap();
    let e = stderr(&import_olmo(&dir, &d.path().join("r3"), &[]));
    assert!(e.contains("part-2.npy"), "{e}");
    // A config without the batch size.
    let cfg = dir.join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("global_train_batch_size", "x")).unwrap();
    let e = stderr(&import_olmo(&dir, &d.path().join("r4"), &[]));
    assert!(
        e.contains("config.yaml") && e.contains("global_train_batch_size"),
        "{e}"
    );
}

#[test]
fn checkpoint_folders_are_imported_with_the_hf_import() {
    // A tiny GPT-NeoX (Pythia's architecture) and a LLaMA transformers folder stand in
    // for the stepN checkpoints.
    let d = tempfile::tempdir().unwrap();
    let fixtures_hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-hf/tests/fixtures");
    let hf = fixtures_hf.join("hf/st");
    let ckpts = d.path().join("ckpts");
    copy_dir(&fixtures_hf.join("families/gpt_neox"), &ckpts.join("step0"));
    copy_dir(&hf, &ckpts.join("step4"));
    std::fs::create_dir_all(ckpts.join("not-a-checkpoint")).unwrap();
    let run = d.path().join("run");
    let o = import_pythia(
        &fixtures().join("pythia"),
        &run,
        &[
            "--checkpoints",
            ckpts.to_str().unwrap(),
            "--weights-only",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = r["checkpoints"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["step"].as_u64(), list[1]["step"].as_u64()),
        (Some(0), Some(4))
    );
    let listed: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("models/checkpoints.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(listed, r["checkpoints"]);
    ok(&["verify", &p(&run.join("models/step4"))]);
    ok(&["data", "show", &p(&run), "--step", "4"]);
    // A folder that is not a transformers checkpoint: refused, nothing left behind.
    std::fs::remove_file(ckpts.join("step4/config.json")).unwrap();
    let run2 = d.path().join("run2");
    let e = stderr(&import_pythia(
        &fixtures().join("pythia"),
        &run2,
        &["--checkpoints", ckpts.to_str().unwrap()],
    ));
    assert!(e.contains("step4"), "{e}");
    assert!(!run2.exists());
}

#[test]
fn olmo_checkpoint_folders_are_named_by_step_and_tokens() {
    let d = tempfile::tempdir().unwrap();
    let olmo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-hf/tests/fixtures/families/olmo");
    let ckpts = d.path().join("ckpts");
    copy_dir(&olmo, &ckpts.join("step2-tokens1K"));
    copy_dir(&olmo, &ckpts.join("step0-tokens0"));
    let run = d.path().join("run");
    let o = import_olmo(
        &fixtures().join("olmo"),
        &run,
        &[
            "--checkpoints",
            ckpts.to_str().unwrap(),
            "--weights-only",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = r["checkpoints"].as_array().unwrap();
    assert_eq!(list[0]["name"], "step0-tokens0");
    assert_eq!(
        (list[1]["step"].as_u64(), list[1]["tokens"].as_str()),
        (Some(2), Some("1K"))
    );
    ok(&["verify", &p(&run.join("models/step2-tokens1K"))]);
    // Two folders for one step are refused before anything is written.
    copy_dir(&olmo, &ckpts.join("step2"));
    let run2 = d.path().join("run2");
    let e = stderr(&import_olmo(
        &fixtures().join("olmo"),
        &run2,
        &["--checkpoints", ckpts.to_str().unwrap()],
    ));
    assert!(e.contains("step 2"), "{e}");
    assert!(!run2.exists());
}
