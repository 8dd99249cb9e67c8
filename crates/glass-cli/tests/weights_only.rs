//! Weights-only runs through the real binary: `glass import llm360 --weights-only` of a
//! release whose checkpoints are a sharded `.bin` (f64, kept as f32) and a sharded bf16
//! safetensors folder (kept as bf16), against the f32 import of the same folders:
//! generate, eval and memorization give the same bits; train and replay are refused;
//! verify, info and export work. And `glass import hf --weights-only` of the bf16 folder
//! alone: info shows the dtype and bytes, generate gives the f32 import's bits, verify
//! catches a changed byte, train refuses naming the flag.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{glass, ok};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm360-mini")
}

/// Rounds f32 to bf16, to nearest even (the values are finite).
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The fixture's checkpoints with ckpt_001's f64 safetensors shards rewritten in bf16
/// (and its config saying so); ckpt_000 (sharded f64 `.bin`) as it is.
fn checkpoints(dst: &Path) -> PathBuf {
    let src = fixture().join("checkpoints");
    let out = dst.join("checkpoints");
    for k in ["ckpt_000", "ckpt_001"] {
        std::fs::create_dir_all(out.join(k)).unwrap();
        for e in std::fs::read_dir(src.join(k)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let to = out.join(k).join(&name);
            if k == "ckpt_001" && name.ends_with(".safetensors") {
                let bytes = std::fs::read(&p).unwrap();
                let tensors = glass_hf::weights::read_safetensors(&bytes, &p).unwrap();
                let halves: Vec<Vec<u8>> = tensors
                    .iter()
                    .map(|t| {
                        let mut v = vec![0.0f32; t.numel()];
                        t.convert_into(&mut v);
                        v.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect()
                    })
                    .collect();
                let views: Vec<glass_io::safetensors::TensorBytes> = tensors
                    .iter()
                    .zip(&halves)
                    .map(|(t, h)| glass_io::safetensors::TensorBytes {
                        name: t.name.clone(),
                        dtype: glass_io::safetensors::Dtype::BF16,
                        shape: t.shape.clone(),
                        data: h,
                    })
                    .collect();
                let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
                glass_io::safetensors::write_safetensors(&to, &views, &meta).unwrap();
            } else if k == "ckpt_001" && name == "config.json" {
                let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                v["dtype"] = "bfloat16".into();
                std::fs::write(&to, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
    out
}

fn import(ckpts: &Path, run: &Path, extra: &[&str]) {
    let data = fixture().join("data");
    let mut args = vec![
        "import",
        "llm360",
        "--data",
        data.to_str().unwrap(),
        "--checkpoints",
        ckpts.to_str().unwrap(),
        "--rows-per-step",
        "4",
    ];
    args.extend_from_slice(extra);
    args.push(run.to_str().unwrap());
    ok(&args);
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

fn files(run: &Path, k: usize) -> Vec<(String, u64)> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    m["checkpoints"][k]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p = f["path"].as_str().unwrap();
            (
                p.rsplit('/').next().unwrap().to_string(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn weights_only_llm360_run_computes_the_f32_runs_bits_and_refuses_to_train() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = checkpoints(dir.path());
    let (wo, full) = (dir.path().join("wo"), dir.path().join("full"));
    import(&ckpts, &wo, &["--weights-only"]);
    import(&ckpts, &full, &[]);
    let (w, f) = (wo.to_str().unwrap(), full.to_str().unwrap());

    // Checkpoint 1 is bf16: half the f32 weights file, and no optimizer file.
    let (wf, ff) = (files(&wo, 1), files(&full, 1));
    assert!(
        wf.iter().all(|(n, _)| n != "optimizer.safetensors"),
        "{wf:?}"
    );
    assert!(ff.iter().any(|(n, _)| n == "optimizer.safetensors"));
    let size = |v: &[(String, u64)]| v.iter().find(|x| x.0 == "model.safetensors").unwrap().1;
    let ratio = size(&wf) as f64 / size(&ff) as f64;
    assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
    let info = json(&["info", w, "--json"]);
    assert_eq!(info["weights_only"], true);
    assert_eq!(info["checkpoints"][0]["weights_dtype"], "f32");
    assert_eq!(info["checkpoints"][1]["weights_dtype"], "bf16");
    let text = ok(&["info", w]);
    assert!(
        text.contains("weights only") && text.contains("bf16"),
        "{text}"
    );
    assert!(ok(&["verify", w]).contains("all files match"));

    // Generation: the same logits and tokens, bit for bit, at every checkpoint.
    for k in ["0", "1"] {
        assert_eq!(
            generate(dir.path(), &wo, "wo", k),
            generate(dir.path(), &full, "full", k),
            "checkpoint {k}"
        );
    }

    // Evaluation and memorization: the same numbers.
    for run in [w, f] {
        ok(&[
            "eval",
            run,
            "--checkpoints",
            "all",
            "--tasks",
            "glass_heldout",
            "--limit",
            "2",
        ]);
        ok(&[
            "analyze",
            "memorization",
            run,
            "--checkpoints",
            "all",
            "--samples",
            "4",
            "--prompt-tokens",
            "8",
            "--continuation-tokens",
            "8",
            "--log-samples",
        ]);
    }
    // The measured values, and every row's generated tokens; not the timings, nor the
    // settings hashes (they pin each run's own checkpoint hash).
    let keep = |v: Value, keys: &[&str]| -> Vec<Value> {
        let rows = v.as_array().expect("rows").clone();
        assert!(!rows.is_empty());
        rows.into_iter()
            .map(|r| Value::Array(keys.iter().map(|k| r[*k].clone()).collect()))
            .collect()
    };
    let evals = |run: &str| {
        keep(
            json(&["metrics", run, "--evals", "--json"]),
            &["checkpoint", "task", "metric", "value"],
        )
    };
    assert_eq!(evals(w), evals(f));
    let memo = |run: &str| {
        let rows = json(&["metrics", run, "--memorization", "--json"]);
        let samples: Vec<Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let p = Path::new(run).join(r["result_path"].as_str().unwrap());
                let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                v["samples"].clone()
            })
            .collect();
        assert!(samples.iter().all(|s| !s.as_array().unwrap().is_empty()));
        let keys = [
            "checkpoint",
            "chunk",
            "step",
            "n",
            "token_match",
            "full_match",
        ];
        (keep(rows, &keys), samples)
    };
    assert_eq!(memo(w), memo(f));

    // Training and replay refuse, naming the flag; the run is untouched.
    for args in [
        vec!["train", w],
        vec!["verify", w, "--replay", "1"],
        vec!["init", dir.path().join("b").to_str().unwrap(), "--from", w],
    ] {
        let o = glass(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(e.contains("--weights-only"), "{args:?}: {e}");
    }
    assert!(ok(&["verify", w]).contains("all files match"));

    // A release of its weights: checkpoints of two dtypes are published in f32 (exact
    // for both) and verify; the optimizer state it does not hold is refused by name.
    let rel = dir.path().join("release");
    ok(&["release", w, rel.to_str().unwrap()]);
    let v = ok(&["verify", rel.to_str().unwrap()]);
    assert!(v.contains("the release matches its manifest"), "{v}");
    let m: Value =
        serde_json::from_slice(&std::fs::read(rel.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["dtype"], "float32");
    let o = glass(&[
        "release",
        w,
        dir.path().join("rel2").to_str().unwrap(),
        "--with-optimizer",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--weights-only"), "{e}");

    // Export writes the stored bf16 tensors.
    let out = dir.path().join("export");
    ok(&[
        "export",
        "hf",
        w,
        out.to_str().unwrap(),
        "--checkpoint",
        "1",
    ]);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
}

/// `glass generate RUN` (checkpoint `k`, greedy): its text and logits.
fn generate(dir: &Path, run: &Path, name: &str, k: &str) -> (String, Value) {
    let l = dir.join(format!("{name}-{k}.json"));
    let text = ok(&[
        "generate",
        run.to_str().unwrap(),
        "--checkpoint",
        k,
        "--prompt",
        "the",
        "--max-tokens",
        "5",
        "--logits-out",
        l.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&std::fs::read(&l).unwrap()).unwrap();
    (text, v["logits"].clone())
}

#[test]
fn import_hf_weights_only_keeps_bf16_and_refuses_to_train() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoints(dir.path()).join("ckpt_001"); // sharded bf16 safetensors
    let (wo, full) = (dir.path().join("wo"), dir.path().join("full"));
    let (w, f) = (wo.to_str().unwrap(), full.to_str().unwrap());
    let text = ok(&["import", "hf", src.to_str().unwrap(), w, "--weights-only"]);
    assert!(
        text.contains("bf16 weights") && text.contains("weights only"),
        "{text}"
    );
    ok(&["import", "hf", src.to_str().unwrap(), f]);

    // One bf16 weights file, half the f32 import's, no optimizer state; info says so.
    let (wf, ff) = (files(&wo, 0), files(&full, 0));
    let names: Vec<&str> = wf.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"optimizer.safetensors"), "{names:?}");
    let size = |v: &[(String, u64)]| v.iter().find(|x| x.0 == "model.safetensors").unwrap().1;
    let info = json(&["info", w, "--json"]);
    assert_eq!(info["weights_only"], true);
    let c = &info["checkpoints"][0];
    assert_eq!(c["weights_dtype"], "bf16");
    assert_eq!(c["weights_bytes"].as_u64(), Some(size(&wf)));
    let ratio = size(&wf) as f64 / size(&ff) as f64;
    assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
    let full_info = json(&["info", f, "--json"]);
    assert_eq!(full_info["weights_only"], false);
    assert_eq!(full_info["checkpoints"][0]["weights_dtype"], "f32");
    let text = ok(&["info", w]);
    let shown = format!("{:.3} GB", size(&wf) as f64 / 1e9);
    assert!(
        text.contains("weights only") && text.contains("bf16") && text.contains(&shown),
        "{text}"
    );

    // The bf16 run generates the f32 import's logits and tokens, bit for bit.
    assert_eq!(
        generate(dir.path(), &wo, "wo", "0"),
        generate(dir.path(), &full, "full", "0")
    );

    // Every file hashed: verify passes, then names the weights file after one changed byte.
    assert!(ok(&["verify", w]).contains("all files match"));
    let m: Value =
        serde_json::from_slice(&std::fs::read(wo.join("manifest.json")).unwrap()).unwrap();
    for e in m["checkpoints"][0]["files"].as_array().unwrap() {
        assert_eq!(e["sha256"].as_str().unwrap().len(), 64, "{e}");
    }
    let model = wo.join(
        m["checkpoints"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .find(|p| p.ends_with("model.safetensors"))
            .unwrap(),
    );
    let good = std::fs::read(&model).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&model, &bad).unwrap();
    let o = glass(&["verify", w]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success() && said.contains("model.safetensors"),
        "{said}"
    );
    std::fs::write(&model, &good).unwrap();
    assert!(ok(&["verify", w]).contains("all files match"));

    // Training and replay refuse, naming the flag.
    for args in [vec!["train", w], vec!["verify", w, "--replay", "0"]] {
        let o = glass(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(e.contains("--weights-only"), "{args:?}: {e}");
    }
}
