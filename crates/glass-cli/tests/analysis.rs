//! End-to-end checks of `glass index`, `glass trace` and `glass analyze memorization` on
//! a tiny run with a planted passage: a passage repeated in the second stage only, among
//! filler text that never repeats. Counts and occurrences are checked against a brute-
//! force scan of the chunk files; memorization against `Model::generate` (what
//! `glass generate --temperature 0` runs).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{copy_dir, glass, glass_within, mkfifo, ok};

const PASSAGE: &str = "Glass records the exact token at every step, so this planted passage can be traced back to every row that held it.";
const WORDS: &[&str] = &[
    "the", "king", "queen", "said", "and", "to", "of", "a", "in", "that", "is", "my", "lord",
    "thou", "art", "thee", "night", "day", "sword", "crown", "love", "death", "O", "river",
    "stone", "bright", "cold", "went", "home", "under", "over", "green",
];

/// Deterministic filler prose that never repeats a long span.
fn filler(seed: u64, words: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::new();
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i > 0 {
            out.push(if x >> 61 == 0 { '\n' } else { ' ' });
        }
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    out
}

const DATA: &str = r#"
[data]
seed = 3
seq_len = 32
rows_per_step = 8
steps_per_chunk = 10

[data.tokenizer]
vocab_size = 384

[[data.sources]]
name = "filler"
kind = "text"
paths = ["corpus/filler"]

[[data.sources]]
name = "planted"
kind = "text"
paths = ["corpus/planted"]

[[data.sources]]
name = "held"
kind = "text"
paths = ["corpus/held"]

[[data.stages]]
name = "plain"
tokens = 2640
weights = { filler = 1.0 }

[[data.stages]]
name = "planted"
tokens = 42240
weights = { filler = 0.25, planted = 0.75 }

[data.validation]
sources = ["held"]
rows = 4
"#;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Writes the corpus and config, prepares and trains: chunk 0 is filler only (steps
/// 0..10), chunks 1..16 three quarters planted (steps 10..170); checkpoints every 10 steps.
fn make_run(run: &Path) {
    ok(&["init", &s(run), "--preset", "tiny"]);
    let fdir = run.join("corpus/filler");
    std::fs::create_dir_all(&fdir).unwrap();
    for i in 0..40 {
        std::fs::write(fdir.join(format!("f{i:02}.txt")), filler(i + 1, 150)).unwrap();
    }
    std::fs::create_dir_all(run.join("corpus/planted")).unwrap();
    std::fs::write(run.join("corpus/planted/passage.txt"), PASSAGE).unwrap();
    std::fs::create_dir_all(run.join("corpus/held")).unwrap();
    std::fs::write(run.join("corpus/held/h.txt"), filler(999, 300)).unwrap();
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let d: toml::Table = toml::from_str(DATA).unwrap();
    t.insert("data".into(), d["data"].clone());
    let model = t.get_mut("model").unwrap().as_table_mut().unwrap();
    use toml::Value::Integer as I;
    for (k, v) in [
        ("vocab_size", 384),
        ("d_model", 64),
        ("n_layers", 2),
        ("n_heads", 4),
        ("n_kv_heads", 4),
        ("ffn_hidden", 128),
        ("max_seq_len", 64),
    ] {
        model.insert(k.into(), I(v));
    }
    let optim = t.get_mut("optim").unwrap().as_table_mut().unwrap();
    optim.insert("lr".into(), toml::Value::Float(4e-3));
    optim.insert("min_lr".into(), toml::Value::Float(1e-3));
    optim.insert("warmup_steps".into(), I(10));
    t.get_mut("train")
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("micro_batch_rows".into(), I(8));
    t.get_mut("checkpoints")
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("log_spaced_early".into(), toml::Value::Boolean(false));
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", &s(run)]);
    // The model's vocabulary is the trained tokenizer's size.
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("data/manifest.json")).unwrap()).unwrap();
    let v = m["tokenizer"]["vocab_size"].as_i64().unwrap();
    t.get_mut("model")
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("vocab_size".into(), I(v));
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["train", &s(run), "--quiet"]);
}

/// The trained run shared by the tests (read-only; tests that alter it copy it first).
fn run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        // A static is never dropped: keep the shared run under cargo's scratch directory
        // rather than leaving it in /tmp.
        let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let run = d.path().join("run");
        make_run(&run);
        ok(&["index", &s(&run), "--quiet"]);
        (d, run)
    })
    .1
}

/// Every chunk as (first_row, [rows][row_len] tokens), read like numpy would.
fn chunks(run: &Path) -> Vec<(u64, Vec<Vec<u32>>)> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("data/manifest.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for c in m["chunks"].as_array().unwrap() {
        let k = c["index"].as_u64().unwrap();
        let dir = run.join("data/chunks");
        let h: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("chunk-{k:05}.json"))).unwrap())
                .unwrap();
        assert_eq!(h["dtype"], "u16");
        let l = h["row_len"].as_u64().unwrap() as usize;
        let b = std::fs::read(dir.join(h["tokens"]["file"].as_str().unwrap())).unwrap();
        let toks: Vec<u32> = b
            .chunks_exact(2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as u32)
            .collect();
        out.push((
            h["first_row"].as_u64().unwrap(),
            toks.chunks(l).map(|r| r.to_vec()).collect(),
        ));
    }
    out
}

/// Brute force: every (global row, offset) where `q` occurs inside one row.
fn scan(chunks: &[(u64, Vec<Vec<u32>>)], q: &[u32]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (first, rows) in chunks {
        for (r, row) in rows.iter().enumerate() {
            if q.len() > row.len() {
                continue;
            }
            for off in 0..=row.len() - q.len() {
                if row[off..off + q.len()] == *q {
                    out.push((first + r as u64, off as u64));
                }
            }
        }
    }
    out
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

fn err(args: &[&str]) -> String {
    let o = glass(args);
    assert!(!o.status.success(), "glass {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn planted_passage_is_traced_to_its_steps_and_memorized() {
    let run = run();
    let r = s(run);
    let ch = chunks(run);
    // Count: exact, and all in the planted stage (steps 10..50).
    let tok = glass_run::run_tokenizer(run).unwrap();
    let ids = tok.encode(PASSAGE).unwrap();
    assert!(ids.len() > 33, "the passage is longer than a row");
    let e = err(&["trace", &r, "--count", PASSAGE]);
    assert!(e.contains("longer than a training row"), "{e}");
    let probe = &ids[..12];
    let c12 = json(&["trace", &r, "--count", &tok_text(run, probe), "--json"]);
    let brute = scan(&ch, probe);
    assert!(
        brute.len() > 20,
        "the passage is planted many times: {}",
        brute.len()
    );
    assert_eq!(c12["count"].as_u64().unwrap(), brute.len() as u64);
    assert!(
        brute.iter().all(|(row, _)| row / 8 >= 10),
        "only in stage two"
    );
    // Trace: the passage's longest span, with its exact count and steps.
    let t = json(&[
        "trace",
        &r,
        "--text",
        PASSAGE,
        "--checkpoint",
        "2",
        "--max-occurrences",
        "3",
        "--json",
    ]);
    let spans = t["spans"].as_array().unwrap();
    assert!(!spans.is_empty());
    let top = &spans[0];
    let top_ids: Vec<u32> = top["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert!(top_ids.len() >= 8);
    let b = scan(&ch, &top_ids);
    assert_eq!(top["count"].as_u64().unwrap(), b.len() as u64);
    let steps: Vec<u64> = b.iter().map(|(row, _)| row / 8).collect();
    assert_eq!(
        top["first_step"].as_u64().unwrap(),
        *steps.iter().min().unwrap()
    );
    assert_eq!(
        top["last_step"].as_u64().unwrap(),
        *steps.iter().max().unwrap()
    );
    let before = steps.iter().filter(|&&st| st < 20).count() as u64;
    assert_eq!(top["count_before_checkpoint"].as_u64().unwrap(), before);
    let occ = top["occurrences"].as_array().unwrap();
    assert_eq!(occ.len(), 3);
    for (o, (row, off)) in occ.iter().zip(&b) {
        assert_eq!(o["row"].as_u64().unwrap(), *row);
        assert_eq!(o["offset"].as_u64().unwrap(), *off);
        assert_eq!(o["step"].as_u64().unwrap(), row / 8);
        assert_eq!(o["slot"].as_u64().unwrap(), row % 8);
        assert_eq!(o["source"], "planted");
        assert!(o["doc_id"].as_str().unwrap().ends_with("passage.txt"));
        let text = o["text"].as_str().unwrap();
        let [a, e] = [
            o["doc_bytes"][0].as_u64().unwrap(),
            o["doc_bytes"][1].as_u64().unwrap(),
        ];
        assert_eq!(
            &PASSAGE[a as usize..e as usize],
            text,
            "byte range maps into the source"
        );
    }
    // Memorization on the last chunk (planted stage): planted rows go from unknown to memorized,
    // filler rows stay low.
    let m = json(&[
        "analyze",
        "memorization",
        &r,
        "--chunks",
        "16",
        "--prompt-tokens",
        "8",
        "--continuation-tokens",
        "8",
        "--log-samples",
        "--json",
        "--quiet",
    ]);
    let sources = row_sources(run, 16);
    let mut by_ckpt = Vec::new();
    for p in m.as_array().unwrap() {
        let (mut planted, mut other) = ((0.0, 0), (0.0, 0));
        let mut tm = 0.0;
        for smp in p["samples"].as_array().unwrap() {
            let row = smp["row"].as_u64().unwrap() as usize;
            let full = (smp["matches"].as_u64().unwrap() == 8) as u64 as f64;
            let acc = if sources[row] == 1 {
                &mut planted
            } else {
                &mut other
            };
            acc.0 += full;
            acc.1 += 1;
            if sources[row] == 1 {
                tm += smp["matches"].as_f64().unwrap() / 8.0;
            }
        }
        assert!(planted.1 > 5 && other.1 > 5);
        by_ckpt.push((
            p["checkpoint"].as_u64().unwrap(),
            planted.0 / planted.1 as f64,
            other.0 / other.1 as f64,
            tm / planted.1 as f64,
        ));
    }
    let first = by_ckpt.iter().find(|x| x.0 == 1).unwrap();
    let last = by_ckpt.last().unwrap();
    // (checkpoint, planted full_match, filler full_match, planted token_match)
    assert!(
        first.1 == 0.0 && first.3 < 0.1,
        "not memorized before it was seen: {by_ckpt:?}"
    );
    assert!(
        last.1 >= 0.3 && last.3 >= 0.5,
        "memorized after the planted stage: {by_ckpt:?}"
    );
    assert!(
        by_ckpt.iter().all(|x| x.2 < 0.2),
        "filler rows stay low: {by_ckpt:?}"
    );
    // Stored: a second call reuses, and the matrix is in the metrics.
    let (_, e) = common::ok_output(&[
        "analyze",
        "memorization",
        &r,
        "--chunks",
        "16",
        "--prompt-tokens",
        "8",
        "--continuation-tokens",
        "8",
        "--log-samples",
        "--checkpoints",
        "latest",
    ]);
    assert!(e.contains("(stored)"), "{e}");
    let mt = ok(&["metrics", &r, "--memorization"]);
    assert!(mt.contains("full_match") && mt.contains("c16"), "{mt}");
}

/// Source index of each row of chunk `k` (from its first segment).
fn row_sources(run: &Path, k: u64) -> Vec<u32> {
    let b = std::fs::read(run.join(format!("data/chunks/chunk-{k:05}.segments"))).unwrap();
    let mut out: Vec<u32> = Vec::new();
    for rec in b.chunks_exact(40) {
        let row = u32::from_le_bytes(rec[0..4].try_into().unwrap()) as usize;
        let src = u32::from_le_bytes(rec[16..20].try_into().unwrap());
        if out.len() == row {
            out.push(src);
        }
    }
    out
}

/// Text that encodes to `ids` (decoded with the run's tokenizer through the library).
fn tok_text(run: &Path, ids: &[u32]) -> String {
    let tok = glass_run::run_tokenizer(run).unwrap();
    let t = tok.decode(ids).unwrap();
    assert_eq!(tok.encode(&t).unwrap(), ids, "probe must round-trip");
    t
}

#[test]
fn counts_and_occurrences_equal_a_brute_force_scan() {
    let run = run();
    let ch = chunks(run);
    let index = glass_analysis::Index::open(run).unwrap();
    let mut x = 12345u64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let row_len = ch[0].1[0].len();
    let mut crossing = 0;
    for i in 0..300 {
        let len = 1 + rnd(12) as usize;
        let (c, rows) = &ch[rnd(ch.len() as u64) as usize];
        let _ = c;
        let r = rnd(rows.len() as u64 - 1) as usize;
        let q: Vec<u32> = match i % 3 {
            // A window inside a row: present.
            0 => {
                let off = rnd((row_len - len + 1) as u64) as usize;
                rows[r][off..off + len].to_vec()
            }
            // A window across the boundary of rows r and r+1.
            1 => {
                let k = 1 + rnd(len.max(2) as u64 - 1) as usize;
                let k = k.min(len - 1).max(1);
                let mut q = rows[r][row_len - k..].to_vec();
                q.extend_from_slice(&rows[r + 1][..len.max(2) - k]);
                crossing += 1;
                q
            }
            // Random ids: mostly absent.
            _ => (0..len).map(|_| rnd(384) as u32).collect(),
        };
        let want = scan(&ch, &q);
        assert_eq!(index.count(&q).unwrap(), want.len() as u64, "query {q:?}");
        let got: Vec<(u64, u64)> = index
            .occurrences(&q)
            .unwrap()
            .into_iter()
            .map(|(k, p)| {
                let l = index.shards[k].locate(p, index.rows_per_step);
                (l.row, l.offset)
            })
            .collect();
        assert_eq!(got, want, "occurrences of {q:?}");
    }
    assert!(crossing > 50);
    // The wide (5-byte, 64-bit) build answers the same.
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("run");
    copy_dir(run, &copy);
    std::fs::remove_dir_all(copy.join("index")).unwrap();
    glass_analysis::index::build_index_with(&copy, 0, &mut |_, _, _| {}).unwrap();
    let wide = glass_analysis::Index::open(&copy).unwrap();
    assert!(wide.shards.iter().all(|s| s.rec.width == 5));
    for _ in 0..50 {
        let (_, rows) = &ch[rnd(ch.len() as u64) as usize];
        let r = rnd(rows.len() as u64) as usize;
        let off = rnd((row_len - 6) as u64) as usize;
        let q = &rows[r][off..off + 6];
        assert_eq!(wide.count(q).unwrap(), index.count(q).unwrap());
    }
}

#[test]
fn memorization_continuations_equal_greedy_generate_for_any_thread_count() {
    let run = run();
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("run");
    copy_dir(run, &copy);
    let c = s(&copy);
    let args = |t: &'static str| {
        vec![
            "--threads",
            t,
            "analyze",
            "memorization",
            &c,
            "--checkpoints",
            "latest",
            "--chunks",
            "2",
            "--samples",
            "40",
            "--prompt-tokens",
            "10",
            "--continuation-tokens",
            "12",
            "--log-samples",
            "--force",
            "--json",
            "--quiet",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let a1: Vec<String> = args("1");
    let a2: Vec<String> = args("2");
    let one = json(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    let two = json(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    let gen = |v: &Value| v[0]["samples"].clone();
    assert_eq!(gen(&one), gen(&two), "bit-identical for 1 and 2 threads");
    let (model, _) = glass_run::load_model(&copy, None).unwrap();
    let ch = chunks(&copy);
    let rows = &ch[2].1;
    let samples = one[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 40);
    for smp in samples.iter().step_by(7) {
        let row = &rows[smp["row"].as_u64().unwrap() as usize];
        let mut sampler = glass_engine::Sampler::new(glass_engine::SamplingConfig {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        });
        let want = model
            .generate(&row[..10], 12, &mut sampler, |_| true)
            .unwrap();
        let got: Vec<u32> = smp["generated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want);
        let matches = want
            .iter()
            .zip(&row[10..22])
            .filter(|(a, b)| a == b)
            .count();
        assert_eq!(smp["matches"].as_u64().unwrap() as usize, matches);
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let run = run();
    let r = s(run);
    assert!(err(&["trace", &r, "--count", ""]).contains("empty"));
    let long = filler(5, 200);
    assert!(err(&["trace", &r, "--count", &long]).contains("longer than a training row"));
    // No index yet.
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("run");
    copy_dir(run, &copy);
    let c = s(&copy);
    std::fs::remove_dir_all(copy.join("index")).unwrap();
    let e = err(&["trace", &c, "--count", "the king"]);
    assert!(e.contains("no index") && e.contains("glass index"), "{e}");
    // Stale: the index was built from other bytes of a chunk than the run holds now
    // (its record of chunk 2 names another token file; tampered data itself is refused
    // earlier, by the data manifest's hashes).
    ok(&["index", &c, "--quiet"]);
    let mp = copy.join("index/manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    for rec in m["shards"].as_array_mut().unwrap() {
        if rec["name"] == "chunk-00002" {
            rec["tokens"]["sha256"] = Value::String("0".repeat(64));
        }
    }
    std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let rp = copy.join("index/chunk-00002.json");
    let mut rv: Value = serde_json::from_slice(&std::fs::read(&rp).unwrap()).unwrap();
    rv["tokens"]["sha256"] = Value::String("0".repeat(64));
    std::fs::write(&rp, serde_json::to_vec_pretty(&rv).unwrap()).unwrap();
    let e = err(&["trace", &c, "--count", "the king"]);
    assert!(e.contains("stale") && e.contains("glass index"), "{e}");
    // Incremental: a rebuild touches only the changed chunk, then queries work again.
    let rep = json(&["index", &c, "--json", "--quiet"]);
    assert_eq!(rep["built"], serde_json::json!(["chunk-00002"]), "{rep}");
    assert!(rep["reused"].as_array().unwrap().len() > 10);
    ok(&["trace", &c, "--count", "the king"]);
    // An index file altered on disk: verify names it.
    let mut sa = std::fs::read(copy.join("index/chunk-00001.sa")).unwrap();
    sa.swap(0, 4);
    std::fs::write(copy.join("index/chunk-00001.sa"), &sa).unwrap();
    let o = glass(&["verify", &c]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains("index/chunk-00001.sa"),
        "{out}"
    );
    // A checkpoint that fails its hash is refused.
    let m: Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).unwrap()).unwrap();
    let model = m["checkpoints"][1]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("model.safetensors"))
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = std::fs::read(copy.join(&model)).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(copy.join(&model), &b).unwrap();
    let e = err(&[
        "analyze",
        "memorization",
        &c,
        "--checkpoints",
        "1",
        "--chunks",
        "0",
        "--samples",
        "4",
        "--prompt-tokens",
        "8",
        "--continuation-tokens",
        "8",
        "--quiet",
    ]);
    assert!(e.contains("sha256") || e.contains("hash"), "{e}");
    // Prompt + continuation longer than a row.
    let e = err(&[
        "analyze",
        "memorization",
        &r,
        "--prompt-tokens",
        "32",
        "--continuation-tokens",
        "32",
        "--quiet",
    ]);
    assert!(e.contains("more than a row holds"), "{e}");
}

/// A clean refusal (exit 1 or 2, no panic) whose output holds every word.
fn refused(args: &[&str], words: &[&str]) -> String {
    let o = glass_within(args, 120);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "glass {args:?}: expected a refusal, got {:?}:\n{text}",
        o.status.code()
    );
    assert!(!text.contains("panicked"), "{text}");
    for w in words {
        assert!(
            text.contains(w),
            "glass {args:?}: missing `{w}` in:\n{text}"
        );
    }
    text
}

/// A forged or damaged index is refused, never trusted: an array of the right length
/// with forged entries and its hashes rewritten to match (it panicked), a shard record
/// claiming another dtype (it panicked), a permuted array (a wrong count, exit 0), array
/// and token paths leading out of the run (opened), and an index file list naming a FIFO
/// outside the run (`glass verify` hung on it).
#[test]
fn forged_index_files_are_refused_not_trusted() {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("run");
    copy_dir(run(), &copy);
    let c = s(&copy);
    let count = |c: &str| json(&["trace", c, "--count", "the king", "--json"])["count"].clone();
    let want = count(&c);
    let trace: &[&str] = &["trace", &c, "--count", "the king"];
    let mp = copy.join("index/manifest.json");
    let original = std::fs::read(&mp).unwrap();
    let sa = copy.join("index/chunk-00001.sa");
    let sa_original = std::fs::read(&sa).unwrap();
    let manifest = || -> Value { serde_json::from_slice(&original).unwrap() };
    let write = |v: &Value| std::fs::write(&mp, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    // As a forger would: the array's hash rewritten wherever the manifest records it.
    let reseal = |bytes: &[u8]| {
        std::fs::write(&sa, bytes).unwrap();
        let sha = glass_io::sha256_hex(bytes);
        let mut m = manifest();
        for r in m["shards"].as_array_mut().unwrap() {
            if r["name"] == "chunk-00001" {
                r["sa"]["sha256"] = sha.clone().into();
            }
        }
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "index/chunk-00001.sa" {
                f["sha256"] = sha.clone().into();
            }
        }
        write(&m);
    };
    let restore = || {
        std::fs::write(&mp, &original).unwrap();
        std::fs::write(&sa, &sa_original).unwrap();
    };

    // Forged entries, hashes consistent: every read is bounds-checked.
    reseal(&vec![0xff; sa_original.len()]);
    refused(trace, &["chunk-00001", "outside its"]);
    restore();

    // A record that disagrees with its chunk header.
    for (key, v) in [
        ("dtype", Value::from("u32")),
        ("width", 5.into()),
        ("n_rows", 1.into()),
    ] {
        let mut m = manifest();
        m["shards"][1][key] = v;
        write(&m);
        refused(trace, &["chunk-00001", key]);
    }
    restore();

    // A permuted array (the entries reversed), hashes as recorded: the hash check.
    let mut rev: Vec<[u8; 4]> = sa_original
        .chunks_exact(4)
        .map(|c| c.try_into().unwrap())
        .collect();
    rev.reverse();
    std::fs::write(&sa, rev.concat()).unwrap();
    refused(trace, &["chunk-00001.sa", "sha256"]);
    restore();

    // Paths that lead out of the run are never opened, even to a faithful copy.
    let outside = d.path().join("outside.sa");
    std::fs::write(&outside, &sa_original).unwrap();
    for (key, v) in [
        ("sa", "../outside.sa"),
        ("sa", "/etc/passwd"),
        ("tokens", "/etc/passwd"),
        ("tokens", "../../etc/passwd"),
    ] {
        let mut m = manifest();
        m["shards"][1][key]["path"] = v.into();
        write(&m);
        refused(trace, &["chunk-00001", v]);
    }
    restore();

    // `glass verify` re-hashes the index's file list: an entry leading out of the run
    // (here to a FIFO, which blocks whoever opens it) is reported, not opened.
    mkfifo(&d.path().join("fifo"));
    let mut m = manifest();
    m["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": "../fifo", "sha256": "0".repeat(64), "bytes": 0}));
    write(&m);
    let text = refused(&["verify", &c], &["../fifo", "outside the run"]);
    assert!(text.contains("index/manifest.json"), "{text}");
    restore();
    ok(&["verify", &c]);
    assert_eq!(count(&c), want);
}

/// Reads a safetensors file's f32/u32 tensors as (shape, values as f64).
fn st_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| match t.dtype() {
                    safetensors::Dtype::U32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                    _ => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                })
                .collect();
            (n, (t.shape().to_vec(), v))
        })
        .collect()
}

#[test]
fn inspect_reports_the_lens_attention_and_saved_tensors_of_the_forward_pass() {
    let run = run();
    let dir = tempfile::tempdir().unwrap();
    let logits_file = dir.path().join("logits.json");
    ok(&[
        "generate",
        &s(run),
        "--prompt",
        PASSAGE,
        "--max-tokens",
        "0",
        "--logits-out",
        &s(&logits_file),
    ]);
    let want: Value = serde_json::from_slice(&std::fs::read(&logits_file).unwrap()).unwrap();
    let ids: Vec<u64> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let n = ids.len();
    let save = dir.path().join("inside.safetensors");
    let v = json(&[
        "inspect",
        &s(run),
        "--prompt",
        PASSAGE,
        "--layer",
        "1",
        "--top-k",
        "3",
        "--save",
        &s(&save),
        "--json",
    ]);
    let layers = v["layers"].as_u64().unwrap() as usize;
    let lens = v["lens"].as_array().unwrap();
    assert_eq!(lens.len(), layers + 1, "one lens per residual stream");
    let rows = want["logits"].as_array().unwrap();
    for (p, cell) in lens[layers].as_array().unwrap().iter().enumerate() {
        assert_eq!(cell["top"].as_array().unwrap().len(), 3);
        // The last stream's lens is the model's output: its top token is the argmax of
        // the logits `glass generate` computes.
        let row: Vec<f64> = rows[p]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let arg = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(
            cell["top"][0]["token"].as_u64().unwrap() as usize,
            arg,
            "position {p}"
        );
        match ids.get(p + 1) {
            Some(&t) => {
                assert_eq!(cell["next"].as_u64(), Some(t));
                let rank = row.iter().filter(|&&x| x > row[t as usize]).count() + 1;
                assert_eq!(
                    cell["next_rank"].as_u64(),
                    Some(rank as u64),
                    "position {p}"
                );
            }
            None => assert!(cell["next"].is_null()),
        }
    }
    // Attention of every head of layer 1: causal rows that sum to one.
    let maps = v["attention"].as_array().unwrap();
    assert!(!maps.is_empty());
    for m in maps {
        assert_eq!(m["layer"], 1);
        for (q, row) in m["probs"].as_array().unwrap().iter().enumerate() {
            let r: Vec<f64> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert!(r[q + 1..].iter().all(|&x| x == 0.0), "causal");
            assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        }
    }
    // The saved tensors: names and shapes as documented, logits those of the model.
    let t = st_tensors(&save);
    assert_eq!(
        t["tokens"].1,
        ids.iter().map(|&x| x as f64).collect::<Vec<_>>()
    );
    for l in 0..=layers {
        assert_eq!(t[&format!("resid.{l}")].0[0], n);
    }
    for l in 0..layers {
        assert_eq!(t[&format!("attn.{l}")].0.len(), 3);
        assert_eq!(t[&format!("mlp.{l}")].0[0], n);
    }
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let worst = t["logits"]
        .1
        .iter()
        .zip(&flat)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-5,
        "saved logits differ from the model's by {worst}"
    );
    // Several checkpoints in one call.
    let all = json(&[
        "inspect",
        &s(run),
        "--checkpoints",
        "all",
        "--prompt",
        "the king",
        "--json",
    ]);
    let m = glass_run::RunManifest::require(run).unwrap();
    assert_eq!(all.as_array().unwrap().len(), m.checkpoints.len());
    // Clear errors.
    for (args, needle) in [
        (
            vec!["--prompt", "x", "--layer", "99"],
            "layer 99 is out of range",
        ),
        (
            vec!["--prompt", "x", "--layer", "0", "--head", "99"],
            "head 99 is out of range",
        ),
        (
            vec!["--prompt", "x", "--save", "/nonexistent-dir/x.safetensors"],
            "writable directory",
        ),
        (
            vec!["--prompt", &"the king ".repeat(200)],
            "exceed the model's context",
        ),
        (
            vec!["--prompt", "x", "--checkpoint", "999"],
            "no published checkpoint 999",
        ),
    ] {
        let run_s = s(run);
        let mut a = vec!["inspect", run_s.as_str()];
        a.extend(args.iter().copied());
        let out = glass(&a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn dynamics_are_stored_per_checkpoint_and_match_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    // A copy: the analysis writes into metrics.sqlite.
    let shared = run();
    let run = dir.path().join("run");
    copy_dir(shared, &run);
    let r = s(&run);
    let v = json(&["analyze", "dynamics", &r, "--json", "--quiet"]);
    let m = glass_run::RunManifest::require(&run).unwrap();
    assert_eq!(v.as_array().unwrap().len(), m.checkpoints.len());
    let stored = json(&["metrics", &r, "--dynamics", "--json"]);
    let rows = stored.as_array().unwrap();
    let get = |k: u64, kind: &str, name: &str| -> f64 {
        rows.iter()
            .find(|x| x["checkpoint"] == k && x["kind"] == kind && x["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} at {k}"))["value"]
            .as_f64()
            .unwrap()
    };
    // Norms recomputed from the checkpoints' weights.
    let last = m.checkpoints.last().unwrap().index;
    let prev = m.checkpoints[m.checkpoints.len() - 2].index;
    let (a, _) = glass_run::load_model(&run, Some(last)).unwrap();
    let (b, _) = glass_run::load_model(&run, Some(prev)).unwrap();
    let t = a.layout.get("model.embed_tokens.weight").unwrap().range();
    let norm: f64 = a.params[t.clone()]
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt();
    let upd: f64 = a.params[t.clone()]
        .iter()
        .zip(&b.params[t])
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((get(last as u64, "weight_norm", "embed") - norm).abs() < 1e-9 * norm);
    assert!((get(last as u64, "update_norm", "embed") - upd).abs() < 1e-9 * upd.max(1.0));
    // Every head has both scores, in [0, 1].
    let heads = a.cfg.n_layers * a.cfg.n_heads;
    for kind in ["induction", "prev_token"] {
        let n = rows
            .iter()
            .filter(|x| x["checkpoint"] == last as u64 && x["kind"] == kind)
            .inspect(|x| assert!((0.0..=1.0).contains(&x["value"].as_f64().unwrap())))
            .count();
        assert_eq!(n, heads, "{kind}");
    }
    // The first checkpoint has no update against a predecessor.
    assert!(!rows
        .iter()
        .any(|x| x["checkpoint"] == m.checkpoints[0].index as u64 && x["kind"] == "update_norm"));
}

/// The per-source held-out loss of `glass analyze dynamics` is `glass eval`'s rolling
/// perplexity on the same documents, bit for bit: the validation source's held-out
/// documents written as a local `loglikelihood_rolling` task give the same bits per byte,
/// and their logged log-likelihoods and token counts the same nats per token.
#[test]
fn dynamics_source_loss_equals_glass_eval_on_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let shared = run();
    let run = dir.path().join("run");
    copy_dir(shared, &run);
    let r = s(&run);
    ok(&[
        "analyze",
        "dynamics",
        &r,
        "--checkpoints",
        "0,latest",
        "--quiet",
    ]);
    let stored = json(&["metrics", &r, "--dynamics", "--json"]);
    let rows = stored.as_array().unwrap();
    let m = glass_run::RunManifest::require(&run).unwrap();
    let last = m.checkpoints.last().unwrap().index as u64;
    let get = |k: u64, kind: &str| -> f64 {
        rows.iter()
            .find(|x| x["checkpoint"] == k && x["kind"] == kind && x["name"] == "held")
            .unwrap_or_else(|| panic!("no {kind} held at {k}"))["value"]
            .as_f64()
            .unwrap()
    };
    // Training lowers the held-out loss of the validation source.
    assert!(get(last, "source_bits_per_byte") < get(0, "source_bits_per_byte"));

    let h = glass_data::heldout::for_run(&run).unwrap();
    assert_eq!(h.sources.len(), 1);
    let docs = &h.sources[0].docs;
    assert!(!docs.is_empty());
    let tasks = dir.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    let mut jsonl = String::new();
    for d in docs {
        jsonl.push_str(&serde_json::json!({ "text": d.text }).to_string());
        jsonl.push('\n');
    }
    std::fs::write(tasks.join("held_docs.jsonl"), jsonl).unwrap();
    std::fs::write(
        tasks.join("held_docs.yaml"),
        "task: held_docs\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: held_docs.jsonl\noutput_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: bits_per_byte\n",
    )
    .unwrap();
    let out = ok(&[
        "eval",
        &r,
        "--checkpoints",
        "latest",
        "--tasks",
        &s(&tasks.join("held_docs.yaml")),
        "--log-samples",
        "--json",
    ]);
    let res = common::results(&out);
    assert_eq!(res.len(), 1);
    assert_eq!(
        common::metric(&res[0], "bits_per_byte"),
        get(last, "source_bits_per_byte")
    );
    let stored: Value = serde_json::from_slice(
        &std::fs::read(run.join(format!("evals/ckpt-{last:04}/held_docs.json"))).unwrap(),
    )
    .unwrap();
    let samples = stored["samples"].as_array().unwrap();
    let ll: f64 = samples
        .iter()
        .map(|x| x["loglikelihood"].as_f64().unwrap())
        .sum();
    let tokens: u64 = samples.iter().map(|x| x["tokens"].as_u64().unwrap()).sum();
    assert_eq!(
        tokens,
        docs.iter().map(|d| d.tokens.len() as u64).sum::<u64>()
    );
    assert_eq!(-ll / tokens as f64, get(last, "source_nats_per_token"));
    // People see it too.
    let text = ok(&["metrics", &r, "--dynamics"]);
    assert!(text.contains("held-out held"), "{text}");
}

/// A run prepared with `[data.heldout]`: dynamics scores every listed training source on
/// the documents `data/heldout.json` records (and the validation source), and
/// `glass data stats` names them.
#[test]
fn dynamics_scores_the_documents_data_heldout_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let r = s(&run);
    ok(&["init", &r, "--preset", "tiny"]);
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    use toml::Value::Integer as I;
    common::shrink_tiny(&mut t, 32);
    let data = t.get_mut("data").unwrap().as_table_mut().unwrap();
    for (i, st) in data["stages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        st.as_table_mut()
            .unwrap()
            .insert("tokens".into(), I([340, 272][i.min(1)]));
    }
    data.insert(
        "heldout".into(),
        toml::from_str(
            "docs_per_source = 2\nmax_doc_tokens = 48\nsources = [\"english\", \"code\"]",
        )
        .unwrap(),
    );
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", &r]);
    ok(&["train", &r, "--quiet"]);
    let stats = ok(&["data", "stats", &r]);
    assert!(
        stats.contains("held out ([data.heldout] docs_per_source = 2"),
        "{stats}"
    );
    let h: Value = json(&["data", "stats", &r, "--json"]);
    let srcs = h["heldout"]["sources"].as_array().unwrap();
    let names: Vec<&str> = srcs.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["english", "code", "heldout"]);
    for x in srcs {
        assert_eq!(x["docs"].as_array().unwrap().len(), 2, "{x}");
    }

    ok(&[
        "analyze",
        "dynamics",
        &r,
        "--checkpoints",
        "latest",
        "--quiet",
    ]);
    let rows = json(&["metrics", &r, "--dynamics", "--json"]);
    for kind in ["source_nats_per_token", "source_bits_per_byte"] {
        let mut got: Vec<(String, f64)> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == kind)
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_string(),
                    x["value"].as_f64().unwrap(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(names, ["code", "english", "heldout"], "{kind}");
        assert!(got.iter().all(|g| g.1.is_finite() && g.1 > 0.0), "{got:?}");
    }
}
