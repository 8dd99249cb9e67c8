//! `glass import hf` → generate → data prepare → train (continued pretraining) → verify →
//! replay → export hf, through the real binary on a folder written by transformers.

use std::path::Path;

mod common;
use common::{glass, ok};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../glass-hf/tests/fixtures/hf")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn imported_run_generates_trains_verifies_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    ok(&["import", "hf", &fixture("bin-sharded"), r]);
    // Generation and verification need no prepared data.
    let logits = dir.path().join("logits.json");
    ok(&[
        "generate",
        r,
        "--prompt",
        "When shall we",
        "--max-tokens",
        "4",
        "--logits-out",
        logits.to_str().unwrap(),
    ]);
    let l: serde_json::Value = serde_json::from_slice(&std::fs::read(&logits).unwrap()).unwrap();
    assert_eq!(l["logits"][0].as_array().unwrap().len(), 300);
    assert!(ok(&["verify", r]).contains("all files match"));
    // Continued pretraining on a small slice of the embedded corpus.
    let cfg = run.join("glass.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("tokens = 100000", "tokens = 4000")
        .replace("rows_per_step = 16", "rows_per_step = 4")
        .replace("steps_per_chunk = 20", "steps_per_chunk = 2")
        .replace("seq_len = 64", "seq_len = 32");
    std::fs::write(&cfg, text).unwrap();
    ok(&["data", "prepare", r]);
    let out = ok(&["train", r, "--quiet"]);
    assert!(out.contains("resumed from checkpoint 0"), "{out}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let ckpts = m["checkpoints"].as_array().unwrap();
    assert!(ckpts.len() >= 3, "{m}");
    assert!(!m["data_manifest_sha256"].as_str().unwrap().is_empty());
    assert!(m["import"]["source_dir"]
        .as_str()
        .unwrap()
        .ends_with("bin-sharded"));
    // The imported checkpoint 0 is untouched, and the trained weights moved away from it.
    assert_eq!(
        ckpts[0]["files"][0]["sha256"],
        "a552e91666a3ae76898cd83e4004f161b6e936e791fe42d319fd136fc7ced527"
    );
    assert_ne!(
        ckpts[1]["files"][0]["sha256"],
        ckpts[0]["files"][0]["sha256"]
    );
    assert!(ok(&["verify", r]).contains("all files match"));
    let replay = ok(&["verify", r, "--replay", "1", "--json"]);
    assert!(replay.contains("\"identical\": true"), "{replay}");
    // Adoption happens once: after training, changed data is refused like in any run.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("tokens = 4000", "tokens = 6000");
    std::fs::write(&cfg, text).unwrap();
    let o = glass(&["data", "prepare", r]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trained to checkpoint"),
        "{err}"
    );
    // A trained checkpoint exports with its provenance in the card.
    let out = dir.path().join("hf-out");
    ok(&[
        "export",
        "hf",
        r,
        out.to_str().unwrap(),
        "--checkpoint",
        "2",
    ]);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains(m["checkpoints"][2]["sha256"].as_str().unwrap()));
    assert!(card.contains(m["data_manifest_sha256"].as_str().unwrap()));
    assert!(card.contains("nats/token"), "{card}");
}

#[test]
fn a_gguf_file_imports_generates_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-hf/tests/fixtures/gguf/tiny.gguf");
    let out = ok(&[
        "import",
        "gguf",
        src.to_str().unwrap(),
        r,
        "--weights-only",
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["tensors"], 21, "{out}");
    assert_eq!(rep["weights_only"], true, "{out}");
    let gen = ok(&["generate", r, "--prompt", "the cat", "--max-tokens", "4"]);
    assert!(!gen.trim().is_empty());
    assert!(ok(&["verify", r]).contains("all files match"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert!(m["import"]["source_dir"]
        .as_str()
        .unwrap()
        .ends_with("tiny.gguf"));
    // A second import into the same run is refused before anything is converted.
    let o = glass(&["import", "gguf", src.to_str().unwrap(), r]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a run"));
}
