//! Glass under hostile input, through the real binary on copies of one trained tiny run:
//! forged manifests and states, replaced data, altered chunks, corrupt prepared files,
//! absurd numbers and sizes, abusive arguments. Every case must end in a clear error
//! (exit 1 or 2, naming the file or key) — never a panic (101), an abort (134), or a
//! success on garbage.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{glass, glass_env, ok, ok_output};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Sets `path` (a dotted key inside glass.toml) to `v`.
fn set_toml(run: &Path, path: &[&str], v: toml::Value) {
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let mut cur = &mut t;
    for k in &path[..path.len() - 1] {
        cur = cur.get_mut(*k).unwrap().as_table_mut().unwrap();
    }
    cur.insert(path[path.len() - 1].to_string(), v);
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
}

/// A small, fast run (1-layer model, 16-token rows, 4 rows a step, 4 steps a chunk),
/// prepared but not trained.
fn make_prepared(run: &Path) {
    ok(&["init", &s(run), "--preset", "tiny"]);
    use toml::Value::Integer as I;
    for (k, v) in [
        ("d_model", 32),
        ("n_layers", 1),
        ("n_heads", 2),
        ("n_kv_heads", 2),
        ("ffn_hidden", 48),
        ("max_seq_len", 32),
    ] {
        set_toml(run, &["model", k], I(v));
    }
    set_toml(run, &["train", "micro_batch_rows"], I(2));
    set_toml(run, &["data", "seq_len"], I(16));
    set_toml(run, &["data", "rows_per_step"], I(4));
    set_toml(run, &["data", "steps_per_chunk"], I(4));
    set_toml(run, &["data", "validation", "rows"], I(8));
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    for (i, st) in t["data"]["stages"]
        .clone()
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let mut st = st.as_table().unwrap().clone();
        st.insert("tokens".into(), I([1280, 1024][i.min(1)]));
        t.get_mut("data").unwrap()["stages"].as_array_mut().unwrap()[i] = st.into();
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", &s(run)]);
}

/// (prepared, trained) runs shared by every test of this binary; tests work on copies.
fn base() -> &'static (PathBuf, PathBuf) {
    static BASE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BASE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-base");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let prepared = root.join("prepared");
        make_prepared(&prepared);
        let trained = root.join("trained");
        copy_dir(&prepared, &trained);
        ok(&["train", &s(&trained), "--quiet"]);
        (prepared, trained)
    })
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A private copy of the prepared (`trained = false`) or trained base run.
fn copy_of(tmp: &Path, trained: bool) -> PathBuf {
    let (p, t) = base();
    let dst = tmp.join("run");
    copy_dir(if trained { t } else { p }, &dst);
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

/// Re-seals `RUN/data` after a file was edited, as a forger would: every header's file
/// hashes, then the manifest's list. The edit then passes every hash check and only
/// the validation of the fields themselves can catch it.
fn reseal(run: &Path) {
    let data = run.join("data");
    let mut headers = vec![];
    collect(&data, &mut headers);
    for h in headers.iter().filter(|p| {
        p.extension().is_some_and(|e| e == "json")
            && !p.ends_with("manifest.json")
            && !p.ends_with("tokenizer.json")
    }) {
        let mut v = read_json(h);
        for key in ["tokens", "segments", "docs"] {
            if let Some(f) = v.get_mut(key).filter(|f| f.is_object()) {
                let file = h.parent().unwrap().join(f["file"].as_str().unwrap());
                let (sha, len) = sha(&file);
                f["sha256"] = sha.into();
                f["bytes"] = len.into();
            }
        }
        write_json(h, &v);
    }
    let mp = data.join("manifest.json");
    let mut m = read_json(&mp);
    for f in m["files"].as_array_mut().unwrap() {
        let (sha, len) = sha(&data.join(f["path"].as_str().unwrap()));
        f["sha256"] = sha.into();
        f["bytes"] = len.into();
    }
    write_json(&mp, &m);
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn verify_checks_the_pinned_data_and_prepare_refuses_to_replace_trained_data() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    set_toml(&r, &["data", "seed"], toml::Value::Integer(7));
    refused(
        &glass(&["data", "prepare", &s(&r)]),
        &["trained to checkpoint", "--from", "glass.toml"],
    );
    // Data prepared elsewhere from the new [data] table, swapped in by hand: every data
    // file matches its own manifest, but not the hash the run and its states pin.
    let other = tmp.path().join("other");
    copy_dir(&base().0, &other);
    set_toml(&other, &["data", "seed"], toml::Value::Integer(7));
    ok(&["data", "prepare", &s(&other)]);
    std::fs::remove_dir_all(r.join("data")).unwrap();
    copy_dir(&other.join("data"), &r.join("data"));
    ok(&["data", "verify", &s(&r)]);
    refused(&glass(&["verify", &s(&r)]), &["data/manifest.json", "pin"]);
    refused(
        &glass(&["train", &s(&r), "--quiet"]),
        &["data/manifest.json"],
    );
    // Generation reads the data's tokenizer, so it is held to the pinned hash too.
    refused(
        &glass(&["generate", &s(&r), "--prompt", "To be"]),
        &["data/manifest.json", "pin"],
    );
}

#[test]
fn forged_checkpoint_entries_are_refused_by_verify_and_every_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let mp = r.join("manifest.json");
    let orig = read_json(&mp);
    let last = orig["checkpoints"].as_array().unwrap().len() - 1;
    let k = last.to_string();
    type Forge = fn(&mut Value, usize);
    let forgeries: [(&str, Forge, &[&str]); 6] = [
        (
            "duplicate index",
            |m, l| m["checkpoints"][l]["index"] = (l - 1).into(),
            &["manifest.json", "duplicate"],
        ),
        (
            "forged step",
            |m, l| m["checkpoints"][l]["step"] = 999.into(),
            &["999", "step", "state.json"],
        ),
        (
            "forged tokens",
            |m, l| m["checkpoints"][l]["tokens"] = 12345.into(),
            &["tokens", "12345"],
        ),
        (
            "forged val_loss",
            |m, l| m["checkpoints"][l]["val_loss"] = 0.5.into(),
            &["val_loss", "0.5"],
        ),
        (
            "relative escape",
            |m, l| {
                m["checkpoints"][l]["files"][0]["path"] = "../elsewhere/model.safetensors".into()
            },
            &["outside the run", "../elsewhere"],
        ),
        (
            "absolute path",
            |m, l| m["checkpoints"][l]["files"][0]["path"] = "/etc/model.safetensors".into(),
            &["outside the run", "/etc/model.safetensors"],
        ),
    ];
    for (what, forge, words) in forgeries {
        let mut m = orig.clone();
        forge(&mut m, last);
        write_json(&mp, &m);
        eprintln!("forgery: {what}");
        refused(&glass(&["verify", &s(&r)]), words);
        let gen = ["generate", &s(&r), "--prompt", "To be", "--max-tokens", "2"];
        refused(&glass(&gen), &[]);
        refused(
            &glass(&[
                "eval",
                &s(&r),
                "--checkpoints",
                "latest",
                "--tasks",
                "glass_cloze",
                "--limit",
                "1",
                "--force",
                "--quiet",
            ]),
            &[],
        );
        let out = tmp.path().join("hf");
        refused(
            &glass(&["export", "hf", &s(&r), &s(&out), "--checkpoint", &k]),
            &[],
        );
    }
    // Resume reads the last checkpoint through the same checks.
    let mut m = orig.clone();
    m["checkpoints"][last]["tokens"] = 12345.into();
    write_json(&mp, &m);
    std::fs::remove_file(r.join("metrics.sqlite")).ok();
    refused(&glass(&["train", &s(&r), "--quiet"]), &["state.json"]);
    write_json(&mp, &orig);
    ok(&["verify", &s(&r)]);
    // A missing file is reported once, as missing (not "path: path: No such file").
    let model = r.join(orig["checkpoints"][1]["files"][0]["path"].as_str().unwrap());
    let bytes = std::fs::read(&model).unwrap();
    std::fs::remove_file(&model).unwrap();
    let text = refused(&glass(&["verify", &s(&r)]), &["missing"]);
    assert!(!text.contains("No such file"), "{text}");
    std::fs::write(&model, bytes).unwrap();
    // Replay of a checkpoint that does not exist names it, not its predecessor.
    refused(
        &glass(&["verify", &s(&r), "--replay", "99"]),
        &["checkpoint 99"],
    );
    // A missing run directory is not "no checkpoints yet".
    let gone = tmp.path().join("gone");
    for cmd in ["info", "verify"] {
        refused(&glass(&[cmd, &s(&gone)]), &["no such run directory"]);
    }
}

/// A weights file damaged inside its tensor data (so it still parses) is caught by its
/// hash when an exact f32 export or a release streams its tensors straight from the mapped
/// file: both refuse, naming the file, and leave no folder and no manifest behind.
#[test]
fn damaged_weights_are_never_published() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let m = read_json(&r.join("manifest.json"));
    let entry = m["checkpoints"].as_array().unwrap().last().unwrap().clone();
    let rel = entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.ends_with("model.safetensors"))
        .unwrap()
        .to_string();
    let model = r.join(&rel);
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes.len() - 5; // inside the last tensor's values
    bytes[at] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    let out = tmp.path().join("hf");
    refused(
        &glass(&["export", "hf", &s(&r), &s(&out), "--dtype", "f32"]),
        &[&rel, "does not match the manifest"],
    );
    assert!(!out.exists(), "a folder was left at {}", out.display());
    let rel_out = tmp.path().join("release");
    refused(
        &glass(&["release", &s(&r), &s(&rel_out)]),
        &[&rel, "does not match the manifest"],
    );
    assert!(!rel_out.join("manifest.json").exists());
    let last = entry["index"].as_u64().unwrap();
    assert!(
        !rel_out.join(format!("checkpoints/ckpt_{last:03}")).exists(),
        "the damaged checkpoint was published"
    );
}

#[test]
fn training_hash_checks_each_chunk_before_its_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), false);
    ok(&["train", &s(&r), "--quiet", "--until-step", "2"]);
    // One token of a later chunk (steps 8..12) changes.
    let chunk = r.join("data/chunks/chunk-00002.tokens");
    let mut b = std::fs::read(&chunk).unwrap();
    b[10] ^= 1;
    std::fs::write(&chunk, b).unwrap();
    refused(
        &glass(&["train", &s(&r), "--quiet"]),
        &["chunk-00002.tokens", "sha256"],
    );
    let m = read_json(&r.join("manifest.json"));
    let last = m["checkpoints"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["step"].as_u64().unwrap() <= 8,
        "no step of the altered chunk may be trained: {last}"
    );
}

#[test]
fn corrupt_prepared_files_give_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), false);
    let backup = tmp.path().join("data-backup");
    copy_dir(&r.join("data"), &backup);
    // The store of the source step 0 reads.
    let store = r.join("data/tokens/english");
    let docs = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "docs"))
        .unwrap();
    let seg = r.join("data/chunks/chunk-00000.segments");
    let header = r.join("data/chunks/chunk-00000.json");
    type Edit = Box<dyn Fn()>;
    let patch = |p: PathBuf, at: usize, bytes: Vec<u8>| -> Edit {
        Box::new(move || {
            let mut b = std::fs::read(&p).unwrap();
            b[at..at + bytes.len()].copy_from_slice(&bytes);
            std::fs::write(&p, b).unwrap();
        })
    };
    let set_header = |key: &'static str, v: Value| -> Edit {
        let h = header.clone();
        Box::new(move || {
            let mut j = read_json(&h);
            j[key] = v.clone();
            write_json(&h, &j);
        })
    };
    let docs2 = docs.clone();
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "segment source",
            patch(seg.clone(), 16, 999u32.to_le_bytes().to_vec()),
            &["chunk-00000.segments", "source 999"],
        ),
        (
            "segment doc",
            patch(seg.clone(), 24, (1u64 << 40).to_le_bytes().to_vec()),
            &["document 1099511627776"],
        ),
        (
            "header row_len",
            set_header("row_len", 100_000.into()),
            &["chunk-00000.json", "row_len"],
        ),
        (
            "header n_rows",
            set_header("n_rows", (1u64 << 60).into()),
            &["chunk-00000.json"],
        ),
        (
            "truncated .docs",
            Box::new(move || {
                let b = std::fs::read(&docs2).unwrap();
                std::fs::write(&docs2, &b[..b.len() - 7]).unwrap();
            }),
            &[".docs"],
        ),
    ];
    for (what, edit, words) in cases {
        eprintln!("corruption: {what}");
        edit();
        reseal(&r);
        refused(
            &glass(&["data", "show", &s(&r), "--step", "0", "--json"]),
            words,
        );
        std::fs::remove_dir_all(r.join("data")).unwrap();
        copy_dir(&backup, &r.join("data"));
    }
    ok(&["data", "show", &s(&r), "--step", "0"]);
    // A tokenizer that does not parse is named by its path.
    std::fs::write(r.join("data/tokenizer.json"), b"{ not json").unwrap();
    reseal(&r);
    refused(
        &glass(&["data", "show", &s(&r), "--step", "0"]),
        &["tokenizer.json"],
    );
}

#[test]
fn absurd_numbers_and_sizes_are_refused_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), false);
    let good = std::fs::read_to_string(r.join("glass.toml")).unwrap();
    use toml::Value::{Float as F, Integer as I};
    let cases: Vec<(&[&str], toml::Value, &str)> = vec![
        (&["model", "rope_theta"], F(f64::NAN), "rope_theta"),
        (&["model", "rope_theta"], F(-1.0), "rope_theta"),
        (&["model", "norm_eps"], F(0.0), "norm_eps"),
        (&["optim", "beta1"], F(1.0), "beta1"),
        (&["optim", "beta2"], F(-0.5), "beta2"),
        (&["optim", "eps"], F(0.0), "eps"),
        (&["optim", "grad_clip"], F(f64::NAN), "grad_clip"),
        (&["optim", "weight_decay"], F(1e9), "weight_decay"),
        (&["model", "d_model"], I(1 << 40), "d_model"),
        (&["model", "d_model"], I(1 << 24), "parameter count"),
    ];
    for (key, v, word) in cases {
        std::fs::write(r.join("glass.toml"), &good).unwrap();
        set_toml(&r, key, v);
        refused(&glass(&["train", &s(&r), "--quiet"]), &["glass.toml", word]);
    }
    // A stage of 2^63 tokens is refused by the config; one within bounds but larger than
    // the disk is refused before a chunk is written.
    for (tokens, word) in [(i64::MAX, "more than glass supports"), (1 << 49, "free")] {
        std::fs::write(r.join("glass.toml"), &good).unwrap();
        let cfg = r.join("glass.toml");
        let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        t.get_mut("data").unwrap()["stages"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap()
            .insert("tokens".into(), I(tokens));
        std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
        refused(&glass(&["data", "prepare", &s(&r)]), &[word]);
    }
    // HF config.json: bad numbers by key; shapes that disagree with the tensor headers
    // are refused before anything is allocated.
    let t = copy_of(&tmp.path().join("t"), true);
    let hf = tmp.path().join("hf");
    ok(&["export", "hf", &s(&t), &s(&hf), "--checkpoint", "1"]);
    let cp = hf.join("config.json");
    let orig = read_json(&cp);
    for (key, v, word) in [
        ("rope_theta", Value::from(-1.0), "rope_theta"),
        ("rms_norm_eps", Value::from(0.0), "norm_eps"),
        ("vocab_size", Value::from(1u64 << 31), "config.json implies"),
    ] {
        let mut c = orig.clone();
        c[key] = v;
        if key == "rope_theta" {
            c["rope_parameters"]["rope_theta"] = (-1.0).into();
        }
        write_json(&cp, &c);
        let dst = tmp.path().join(format!("imp-{key}"));
        refused(
            &glass(&["import", "hf", &s(&hf), &s(&dst)]),
            &["config.json", word],
        );
        assert!(!dst.exists(), "a refused import leaves nothing");
    }
}

#[test]
fn guard_checks_the_weights_after_each_update() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), false);
    let o = glass_env(
        &["train", &s(&r), "--quiet"],
        &[("GLASS_FAULT", "nan-weights:6")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("guard skipped steps [5]"), "{out}");
    let events = ok(&["metrics", &s(&r), "--events"]);
    assert!(events.contains("non-finite parameters"), "{events}");
    ok(&["verify", &s(&r)]);
}

#[test]
fn arguments_and_messages_are_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let text = refused(
        &glass(&["data", "show", &s(&r), "--step", "-1"]),
        &["--step takes a number >= 0, not -1"],
    );
    assert!(!text.contains("-- -1"), "{text}");
    for (flag, v) in [
        ("--temperature", "nan"),
        ("--top-p", "NaN"),
        ("--top-p", "2"),
    ] {
        refused(
            &glass(&["generate", &s(&r), "--prompt", "x", flag, v]),
            &[flag.trim_start_matches('-')],
        );
    }
    let (_, err) = ok_output(&[
        "generate",
        &s(&r),
        "--prompt",
        "To be",
        "--max-tokens",
        "100",
    ]);
    assert!(err.contains("context is full"), "{err}");
    let nope = tmp.path().join("nope");
    refused(&glass(&["init", &s(&nope), "--preset", "nope"]), &["nope"]);
    assert!(!nope.exists(), "a refused init leaves no directory");
    let (_, err) = ok_output(&["--threads", "100000", "info", &s(&r)]);
    assert!(err.contains("--threads 100000: using"), "{err}");
    // The plan-changed refusal shows a step, not `Some(…)`.
    set_toml(
        &r,
        &["checkpoints", "log_spaced_early"],
        toml::Value::Boolean(false),
    );
    let text = refused(&glass(&["train", &s(&r), "--quiet"]), &["plan changed"]);
    assert!(!text.contains("Some("), "{text}");
    // Evaluation data: a label outside the choices is refused, naming the task and the
    // row (it would score 0 whatever the model did); invalid UTF-8 names its line.
    let t = copy_of(&tmp.path().join("e"), true);
    let y = tmp.path().join("lab.yaml");
    std::fs::write(
        &y,
        "task: lab\ndataset_path: json\noutput_type: multiple_choice\ntest_split: test\n\
         doc_to_text: \"{{q}}\"\ndoc_to_target: \"{{label}}\"\ndoc_to_choice: \"{{choices}}\"\n\
         metric_list:\n  - metric: acc\n",
    )
    .unwrap();
    let d = tmp.path().join("d.jsonl");
    std::fs::write(
        &d,
        "{\"q\":\"To be\",\"choices\":[\"a\",\"b\"],\"label\":7}\n",
    )
    .unwrap();
    let df = format!("test={}", s(&d));
    let (ts, ys) = (s(&t), s(&y));
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", &ts, "--checkpoints", "latest", "--tasks", &ys];
        a.extend(["--data-files", &df]);
        a.extend(extra);
        glass(&a)
    };
    refused(
        &eval(&[]),
        &["lab", "d.jsonl:1", "doc_to_target", "index 7"],
    );
    std::fs::write(
        &d,
        b"{\"q\":\"a\",\"choices\":[\"a\"],\"label\":0}\n{\"q\":\"\xff\"}\n",
    )
    .unwrap();
    refused(&eval(&["--force"]), &["d.jsonl:2", "UTF-8"]);
}
