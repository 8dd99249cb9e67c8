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
use common::{
    assert_same_tree, copy_dir, glass, glass_env, glass_within, mkfifo, ok, ok_output,
    tree_snapshot,
};

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

/// The path of checkpoint `k`'s file `name`, as the run's manifest lists it.
fn ckpt_file(run: &Path, k: usize, name: &str) -> PathBuf {
    let m = read_json(&run.join("manifest.json"));
    let rel = m["checkpoints"][k]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .find(|p| p.ends_with(name))
        .unwrap();
    run.join(rel)
}

/// How long a command on the tiny run may take before it counts as hung (a loaded
/// machine included; each takes a second or two).
const DEADLINE: u64 = 120;

/// Asserts `o` is a clean refusal that names `file` (by its name) and says `what`.
fn refused_naming(o: &Output, file: &Path, what: &str) {
    let name = file.file_name().unwrap().to_str().unwrap();
    refused(o, &[name, what]);
}

/// A run's files replaced by what is not a regular file of the recorded length — a FIFO
/// (opening it for reading blocks), a link to `/dev/zero` (endless), a sparse file that
/// claims a terabyte — are named at once by every reader, never read: verify, data
/// verify, the loaders.
#[test]
fn special_files_and_lying_sizes_are_refused_without_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let rs = s(&r);
    let model = ckpt_file(&r, 1, "model.safetensors");
    let chunk = r.join("data/chunks/chunk-00000.tokens");
    let tok = r.join("data/tokenizer.json");
    let export = s(&tmp.path().join("export"));
    let verify: &[&str] = &["verify", &rs];
    let data_verify: &[&str] = &["data", "verify", &rs];
    let show: &[&str] = &["data", "show", &rs, "--step", "0"];
    let generate: &[&str] = &[
        "generate",
        &rs,
        "--checkpoint",
        "1",
        "--prompt",
        "To",
        "--max-tokens",
        "1",
    ];
    let export_hf: &[&str] = &["export", "hf", &rs, &export, "--checkpoint", "1"];
    type Swap = fn(&Path);
    let fifo: Swap = |p| mkfifo(p);
    let zero: Swap = |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    let huge: Swap = |p| std::fs::File::create(p).unwrap().set_len(1 << 40).unwrap();
    let cases: Vec<(&Path, Swap, &str, Vec<&[&str]>)> = vec![
        (&model, fifo, "FIFO", vec![verify, generate, export_hf]),
        (
            &model,
            zero,
            "symbolic link",
            vec![verify, generate, export_hf],
        ),
        (&model, huge, "bytes", vec![verify, generate, export_hf]),
        (&chunk, fifo, "FIFO", vec![data_verify, verify, show]),
        (
            &chunk,
            zero,
            "symbolic link",
            vec![data_verify, verify, show],
        ),
        (&chunk, huge, "bytes", vec![data_verify, verify, show]),
        (&tok, fifo, "FIFO", vec![data_verify, show]),
        (&tok, zero, "symbolic link", vec![data_verify, show]),
    ];
    let saved = tmp.path().join("saved");
    for (file, swap, what, commands) in cases {
        std::fs::rename(file, &saved).unwrap();
        swap(file);
        for args in commands {
            eprintln!("{} replaced ({what}): glass {args:?}", file.display());
            refused_naming(&glass_within(args, DEADLINE), file, what);
        }
        std::fs::remove_file(file).unwrap();
        std::fs::rename(&saved, file).unwrap();
    }
    ok(&["verify", &rs]);
    assert!(
        !Path::new(&export).exists(),
        "a refused export leaves nothing"
    );
}

/// A release whose files leave it — a manifest entry `../x`, a file that is a link to a
/// copy outside or to `/etc/passwd` (with the matching hash recorded), run records naming
/// checkpoint files outside the run — or whose files are FIFOs or links to `/dev/zero`:
/// `glass verify OUT` and `glass import release` name each and read none of them.
#[test]
fn release_files_leaving_the_release_or_special_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let out = tmp.path().join("rel");
    let os = s(&out);
    ok(&["release", &s(&r), &os, "--with-optimizer"]);
    ok(&["verify", &os]);
    let new_run = tmp.path().join("imported");
    let import: &[&str] = &["import", "release", &os, new_run.to_str().unwrap()];
    let mp = out.join("manifest.json");
    let original = std::fs::read(&mp).unwrap();
    let opt = out.join("checkpoints/ckpt_001/glass/optimizer.safetensors");
    let saved = tmp.path().join("saved");

    // Special files where a listed file belongs.
    type Swap = fn(&Path);
    let fifo: Swap = |p| mkfifo(p);
    let zero: Swap = |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    for (swap, what) in [(fifo, "FIFO"), (zero, "symbolic link")] {
        std::fs::rename(&opt, &saved).unwrap();
        swap(&opt);
        let o = glass_within(&["verify", &os], DEADLINE);
        refused(
            &o,
            &["REFUSED", "ckpt_001/glass/optimizer.safetensors", what],
        );
        refused_naming(&glass_within(import, DEADLINE), &opt, what);
        assert!(!new_run.exists());
        std::fs::remove_file(&opt).unwrap();
        std::fs::rename(&saved, &opt).unwrap();
    }

    // A listed file that is a link to an identical copy outside the release.
    let copy = tmp.path().join("outside-copy");
    std::fs::copy(&opt, &copy).unwrap();
    std::fs::rename(&opt, &saved).unwrap();
    std::os::unix::fs::symlink(&copy, &opt).unwrap();
    refused(
        &glass_within(&["verify", &os], DEADLINE),
        &["REFUSED", "optimizer.safetensors", "symbolic link"],
    );
    std::fs::remove_file(&opt).unwrap();
    std::fs::rename(&saved, &opt).unwrap();

    // Entries naming files outside the release, with their true hashes recorded.
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, b"not part of the release").unwrap();
    let passwd = Path::new("/etc/passwd");
    std::os::unix::fs::symlink(passwd, out.join("passwd")).unwrap();
    let mut m: Value = serde_json::from_slice(&original).unwrap();
    for (path, file) in [("../outside.txt", outside.as_path()), ("passwd", passwd)] {
        let (sha, bytes) = sha(file);
        m["files"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"path": path, "sha256": sha, "bytes": bytes}));
    }
    write_json(&mp, &m);
    let text = refused(
        &glass_within(&["verify", &os], DEADLINE),
        &[
            "REFUSED ../outside.txt",
            "REFUSED passwd",
            "outside the release",
            "symbolic link",
        ],
    );
    assert!(!text.contains("all files match"), "{text}");
    std::fs::remove_file(out.join("passwd")).unwrap();
    std::fs::write(&mp, &original).unwrap();
    ok(&["verify", &os]);

    // Run records that would restore a checkpoint file outside the new run (their hash
    // re-recorded in the release manifest, as a forger would).
    let rm = out.join("glass/run/manifest.json");
    let rm_original = std::fs::read(&rm).unwrap();
    let mut v: Value = serde_json::from_slice(&rm_original).unwrap();
    v["checkpoints"][0]["files"][0]["path"] = "../escaped/model.safetensors".into();
    write_json(&rm, &v);
    let (sha_rm, len_rm) = sha(&rm);
    let mut m: Value = serde_json::from_slice(&original).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == "glass/run/manifest.json" {
            f["sha256"] = sha_rm.clone().into();
            f["bytes"] = len_rm.into();
        }
    }
    write_json(&mp, &m);
    refused(
        &glass_within(&["verify", &os], DEADLINE),
        &[
            "INCONSISTENT",
            "../escaped/model.safetensors",
            "outside the run",
        ],
    );
    refused(&glass_within(import, DEADLINE), &["outside the run"]);
    assert!(!tmp.path().join("escaped").exists());
    assert!(!new_run.exists());
    std::fs::write(&rm, &rm_original).unwrap();
    std::fs::write(&mp, &original).unwrap();
    ok(&["verify", &os]);
}

/// Writers never follow a link out of the run: `evals/`, `metrics.sqlite`, `index/`,
/// `analysis/`, `checkpoints/` or `data/chunks/` replaced by a link to a directory or
/// file outside are refused by the command that would write there (and by readers), and
/// nothing outside changes.
#[test]
fn writes_into_a_run_never_follow_a_link_out_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let rs = s(&r);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link = |name: &str| {
        let target = outside.join(name.replace('/', "-"));
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, r.join(name)).unwrap();
    };
    let eval: &[&str] = &[
        "eval",
        &rs,
        "--checkpoints",
        "latest",
        "--tasks",
        "glass_cloze",
        "--limit",
        "2",
    ];
    let memo: &[&str] = &[
        "analyze",
        "memorization",
        &rs,
        "--checkpoints",
        "1",
        "--chunks",
        "0",
        "--samples",
        "2",
        "--prompt-tokens",
        "4",
        "--continuation-tokens",
        "4",
        "--quiet",
    ];
    for (name, args) in [
        ("evals", eval),
        ("index", &["index", &rs, "--quiet"][..]),
        ("analysis", memo),
    ] {
        link(name);
        let before = tree_snapshot(&outside);
        refused(&glass(args), &[name, "symbolic link"]);
        assert_same_tree(
            &before,
            &tree_snapshot(&outside),
            &format!("glass {args:?}"),
        );
        std::fs::remove_file(r.join(name)).unwrap();
    }
    // The metrics database as a link to a database outside: neither written nor read.
    let db = r.join("metrics.sqlite");
    let target = outside.join("metrics.sqlite");
    std::fs::rename(&db, &target).unwrap();
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let before = tree_snapshot(&outside);
    refused(&glass(eval), &["metrics.sqlite", "symbolic link"]);
    refused(
        &glass(&["metrics", &rs]),
        &["metrics.sqlite", "symbolic link"],
    );
    assert_eq!(tree_snapshot(&outside), before);
    std::fs::remove_file(&db).unwrap();
    std::fs::rename(&target, &db).unwrap();
    ok(eval);

    // Training into a linked `checkpoints/`; preparing into, or reading, linked chunks.
    let p = copy_of(&tmp.path().join("prepared"), false);
    let ps = s(&p);
    let target = outside.join("checkpoints");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, p.join("checkpoints")).unwrap();
    refused(
        &glass(&["train", &ps, "--quiet"]),
        &["checkpoints", "symbolic link"],
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    std::fs::remove_file(p.join("checkpoints")).unwrap();
    let chunks = p.join("data/chunks");
    let target = outside.join("chunks");
    std::fs::rename(&chunks, &target).unwrap();
    std::os::unix::fs::symlink(&target, &chunks).unwrap();
    let before = tree_snapshot(&outside);
    refused(
        &glass(&["data", "show", &ps, "--step", "0"]),
        &["chunk-00000", "symbolic link"],
    );
    refused(
        &glass(&["data", "prepare", &ps]),
        &["chunks", "symbolic link"],
    );
    assert_eq!(tree_snapshot(&outside), before);
}

/// A GET through a plain TCP connection: (status, body).
fn http_get(addr: &str, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut b = Vec::new();
    c.read_to_end(&mut b).unwrap();
    let text = String::from_utf8_lossy(&b).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// The read-only commands leave the run exactly as they found it: no file or directory
/// created, removed, written or touched (every entry's type, size, mode, mtime and
/// content compared before and after) — `verify --replay` included, and the dashboard
/// answering every endpoint.
#[test]
fn read_only_commands_change_nothing_in_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let r = copy_of(tmp.path(), true);
    let rs = s(&r);
    ok(&["index", &rs, "--quiet"]);
    ok(&[
        "eval",
        &rs,
        "--checkpoints",
        "latest",
        "--tasks",
        "glass_cloze",
        "--limit",
        "2",
    ]);
    ok(&[
        "analyze",
        "memorization",
        &rs,
        "--checkpoints",
        "1",
        "--chunks",
        "0",
        "--samples",
        "2",
        "--prompt-tokens",
        "4",
        "--continuation-tokens",
        "4",
        "--quiet",
    ]);
    let before = tree_snapshot(&r);
    let commands: Vec<Vec<&str>> = vec![
        vec!["info", &rs],
        vec!["info", &rs, "--json"],
        vec!["verify", &rs],
        vec!["verify", &rs, "--replay", "1"],
        vec!["data", "show", &rs, "--step", "3"],
        vec!["data", "show", &rs, "--step", "3", "--json"],
        vec!["data", "stats", &rs],
        vec!["data", "verify", &rs],
        vec!["diff", &rs, &rs],
        vec!["trace", &rs, "--count", "To be"],
        vec![
            "trace",
            &rs,
            "--text",
            "To be, or not to be, that is the question",
        ],
        vec!["metrics", &rs],
        vec!["metrics", &rs, "--checkpoints", "--events"],
        vec!["metrics", &rs, "--evals"],
        vec!["metrics", &rs, "--memorization"],
    ];
    for args in &commands {
        ok(args);
        assert_same_tree(&before, &tree_snapshot(&r), &format!("glass {args:?}"));
    }
    // The dashboard, every endpoint of the run (checkpoint verification included).
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glass"))
        .args(["serve", &rs, "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("glass serve prints its URL").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let (_, runs) = http_get(&addr, "/api/runs");
    let id = serde_json::from_str::<Value>(&runs).unwrap()[0]["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no run served: {runs}"));
    for target in [
        format!("/runs/{id}"),
        format!("/api/runs/{id}"),
        format!("/api/runs/{id}/series/loss"),
        format!("/api/runs/{id}/events"),
        format!("/api/runs/{id}/checkpoints"),
        format!("/api/runs/{id}/checkpoints/1/verify"),
        format!("/api/runs/{id}/evals"),
        format!("/api/runs/{id}/memorization"),
        format!("/api/runs/{id}/data?step=3"),
        format!("/api/runs/{id}/trace?text=To%20be%2C%20or%20not%20to%20be"),
    ] {
        let (status, body) = http_get(&addr, &target);
        assert_eq!(status, 200, "GET {target}: {body}");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_same_tree(&before, &tree_snapshot(&r), "glass serve");
}
