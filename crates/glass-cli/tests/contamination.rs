//! End-to-end checks of `[data.dedup]` through `glass data stats` and of `glass data
//! contamination`: benchmark items planted in the training documents are found, absent
//! ones are not, and the counts and places agree with a brute-force scan of every row.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{glass, ok, ok_output, p, results};

/// Text of `n` words from a large vocabulary (no long span repeats by chance).
fn filler(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("v{}", x % 3000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The benchmark: questions whose context + " " + gold answer is the checked text.
fn items() -> Vec<(String, String)> {
    (0..6)
        .map(|i| {
            if i == 5 {
                ("Short?".to_string(), "Yes.".to_string())
            } else {
                (
                    format!("Question {i}: {}", filler(100 + i, 25)),
                    filler(200 + i, 8),
                )
            }
        })
        .collect()
}

const DATA: &str = r#"
[data]
seed = 5
seq_len = 63
rows_per_step = 4
steps_per_chunk = 8

[data.tokenizer]
vocab_size = 320

[[data.sources]]
name = "web"
kind = "jsonl"
paths = ["corpus/web.jsonl"]
text_field = "text"

[[data.stages]]
name = "one"
tokens = 20480
weights = { web = 1.0 }

[data.dedup]
"#;

/// A run whose documents are filler, three of which quote items 0, 2 and 4 (item 4 only
/// in part: its last 20 words), plus an exact copy of document 0.
fn make_run(run: &Path) {
    ok(&["init", &p(run), "--preset", "tiny"]);
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let d: toml::Table = toml::from_str(DATA).unwrap();
    t.insert("data".into(), d["data"].clone());
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let its = items();
    let mut docs: Vec<String> = (0..12).map(|i| filler(i, 120)).collect();
    docs[3] = format!("{} {} {}", filler(50, 30), its[0].0, its[0].1);
    docs[6] = format!("{} {} {}", its[2].0, its[2].1, filler(51, 40));
    let tail: Vec<&str> = its[4].0.split(' ').collect();
    docs[9] = format!("{} {}", filler(52, 30), tail[tail.len() - 20..].join(" "));
    docs.push(docs[0].to_uppercase());
    let mut s = String::new();
    for d in &docs {
        s.push_str(&serde_json::json!({ "text": d }).to_string());
        s.push('\n');
    }
    std::fs::create_dir_all(run.join("corpus")).unwrap();
    std::fs::write(run.join("corpus/web.jsonl"), s).unwrap();
}

/// [`make_run`] with `line` added to its `[data.dedup]` table.
fn make_run_with(run: &Path, line: &str) {
    make_run(run);
    let cfg = run.join("glass.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[data.dedup]", &format!("[data.dedup]\n{line}")),
    )
    .unwrap();
}

fn write_task(dir: &Path) -> std::path::PathBuf {
    let mut rows = String::new();
    for (q, a) in items() {
        rows.push_str(
            &serde_json::json!({ "question": q, "choices": [a, "wrong answer"], "label": 0 })
                .to_string(),
        );
        rows.push('\n');
    }
    std::fs::write(dir.join("bench.jsonl"), rows).unwrap();
    let yaml = "task: bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: bench.jsonl\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{label}}\"\nmetric_list:\n  - metric: acc\n";
    let path = dir.join("bench.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Items (by index) with a 13-token window inside some training row, found by comparing
/// every window of every item with every window of every row.
fn brute_force(run: &Path, n: usize) -> (BTreeSet<usize>, usize) {
    let data = glass_data::PreparedData::open(run).unwrap();
    let tok = data.tokenizer().unwrap();
    let toks: Vec<Vec<u32>> = items()
        .iter()
        .map(|(q, a)| tok.encode(&format!("{q} {a}")).unwrap())
        .collect();
    let short = toks.iter().filter(|t| t.len() < n).count();
    let mut found = BTreeSet::new();
    let mut rows = Vec::new();
    for step in 0..data.n_steps() {
        data.batch(step, &mut rows).unwrap();
        for row in rows.chunks(data.row_len()) {
            for (i, t) in toks.iter().enumerate() {
                if t.len() >= n && t.windows(n).any(|g| row.windows(n).any(|w| w == g)) {
                    found.insert(i);
                }
            }
        }
    }
    (found, short)
}

#[test]
fn contamination_matches_a_brute_force_scan_and_dedup_shows_in_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run(&run);
    ok(&["data", "prepare", &p(&run)]);

    // The planted exact duplicate (document 12, line 13, of document 0) is removed.
    let stats: Value = serde_json::from_str(&ok(&["data", "stats", &p(&run), "--json"])).unwrap();
    let web = &stats["dedup"]["sources"][0];
    assert_eq!(web["exact"]["docs"], 1, "{stats}");
    assert_eq!(web["docs_after"], 12);
    let text = ok(&["data", "stats", &p(&run)]);
    assert!(text.contains("dedup_removed.jsonl"), "{text}");
    let removed = std::fs::read_to_string(run.join("data/dedup_removed.jsonl")).unwrap();
    let line: Value = serde_json::from_str(removed.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["line"].as_u64(), line["kept"]["line"].as_u64()),
        (Some(13), Some(1))
    );

    let task = write_task(tmp.path());
    let out = ok(&[
        "data",
        "contamination",
        &p(&run),
        "--tasks",
        &p(&task),
        "--json",
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    let t = &r["tasks"][0];
    assert_eq!(t["task"], "bench");
    assert_eq!(t["items"], 6);
    let (want, short) = brute_force(&run, 13);
    assert_eq!(t["too_short"], short as u64);
    assert_eq!(short, 1);
    let got: BTreeSet<usize> = t["contaminated_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let id = i["id"].as_str().unwrap();
            id.rsplit(':').next().unwrap().parse::<usize>().unwrap() - 1
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(want, BTreeSet::from([0, 2, 4]));
    assert_eq!(t["contaminated"], 3);

    // Every listed place holds a window of the item, in the document that quotes it.
    let data = glass_data::PreparedData::open(&run).unwrap();
    let tok = data.tokenizer().unwrap();
    let its = items();
    let mut rows = Vec::new();
    for it in t["contaminated_items"].as_array().unwrap() {
        let k = it["id"].as_str().unwrap().rsplit(':').next().unwrap();
        let k: usize = k.parse::<usize>().unwrap() - 1;
        let toks = tok.encode(&format!("{} {}", its[k].0, its[k].1)).unwrap();
        let hits = it["hits"].as_array().unwrap();
        assert!(!hits.is_empty());
        for h in hits {
            data.batch(h["step"].as_u64().unwrap(), &mut rows).unwrap();
            let (slot, pos) = (
                h["slot"].as_u64().unwrap() as usize,
                h["pos"].as_u64().unwrap() as usize,
            );
            let row = &rows[slot * data.row_len()..(slot + 1) * data.row_len()];
            assert!(toks.windows(13).any(|g| g == &row[pos..pos + 13]));
            let line = [4, 0, 7, 0, 10][k];
            assert_eq!(h["doc_id"], format!("corpus/web.jsonl:{line}"), "{h}");
        }
    }
    // Stored in the run, and the text form names the file.
    let stored: Value =
        serde_json::from_slice(&std::fs::read(run.join("analysis/contamination.json")).unwrap())
            .unwrap();
    assert_eq!(stored, r);
    let text = ok(&["data", "contamination", &p(&run), "--tasks", &p(&task)]);
    assert!(
        text.contains("bench") && text.contains("contamination.json"),
        "{text}"
    );

    // The suffix-array index finds exactly the same.
    assert_eq!(r["method"], "scan");
    ok(&["index", &p(&run)]);
    let out = ok(&[
        "data",
        "contamination",
        &p(&run),
        "--tasks",
        &p(&task),
        "--method",
        "index",
        "--json",
    ]);
    let mut by_index: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(by_index["method"], "index");
    by_index["method"] = "scan".into();
    assert_eq!(by_index, r);

    // The bundled tasks run by default; none of them is in this corpus.
    let out = ok(&["data", "contamination", &p(&run), "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["tasks"].as_array().unwrap().len(), 3);
    for t in r["tasks"].as_array().unwrap() {
        assert_eq!(t["contaminated"], 0, "{t}");
        assert!(t["items"].as_u64().unwrap() > 0);
    }
}

/// Shrinks the model of `run` so that training its 80 steps takes seconds.
fn shrink_model(run: &Path) {
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let model = t.get_mut("model").unwrap().as_table_mut().unwrap();
    for (k, v) in [
        ("d_model", 32),
        ("n_layers", 1),
        ("n_heads", 2),
        ("n_kv_heads", 2),
        ("ffn_hidden", 48),
        ("max_seq_len", 128),
        ("vocab_size", 320),
    ] {
        model.insert(k.into(), toml::Value::Integer(v));
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
}

#[test]
fn eval_results_carry_the_current_contamination_figure_only() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run(&run);
    shrink_model(&run);
    let r = p(&run);
    ok(&["data", "prepare", &r]);
    ok(&["train", &r, "--quiet"]);
    let task = write_task(tmp.path());
    let eval = ["eval", &r, "--checkpoints", "latest", "--tasks", &p(&task)];
    let eval_json = [&eval[..], &["--json"]].concat();
    let stored = |res: &Value| -> Value {
        let k = res["checkpoint"].as_u64().unwrap();
        let path = run.join(format!("evals/ckpt-{k:04}/bench.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };

    // Not computed: no figure, in the output or the stored result.
    let before = results(&ok(&eval_json));
    assert_eq!(before.len(), 1);
    assert!(before[0].get("contamination").is_none(), "{}", before[0]);
    assert!(stored(&before[0]).get("contamination").is_none());
    let text = ok(&eval);
    assert!(
        text.contains("contaminated") && text.contains(" -"),
        "{text}"
    );

    // Computed: the pair already evaluated is not rescored, but its stored result now
    // carries the figure (3 of the 5 items long enough to check), the metrics unchanged.
    ok(&["data", "contamination", &r, "--tasks", &p(&task)]);
    let (out, err) = ok_output(&eval_json);
    assert!(err.contains("already evaluated"), "{err}");
    let after = results(&out);
    let c = &after[0]["contamination"];
    assert_eq!(
        (
            &c["ngram"],
            &c["documents"],
            &c["checked"],
            &c["contaminated"]
        ),
        (&13.into(), &6.into(), &5.into(), &3.into()),
        "{c}"
    );
    assert_eq!(c["fraction"], 0.6);
    assert_eq!(after[0]["metrics"], before[0]["metrics"]);
    let s = stored(&after[0]);
    assert_eq!(&s["contamination"], c);
    assert_eq!(s["metrics"], before[0]["metrics"]);
    // The rewritten file is the one the metrics database vouches for: a third run
    // still skips it.
    let (_, err) = ok_output(&eval_json);
    assert!(err.contains("already evaluated"), "{err}");
    let text = ok(&eval);
    assert!(text.contains("3/5 60.0% @13"), "{text}");
    // A fresh evaluation stores it too.
    let forced = results(&ok(&[&eval_json[..], &["--force"]].concat()));
    assert_eq!(&forced[0]["contamination"], c);

    // Computed for another training stream: not shown, and the warning says why.
    let report_path = run.join("analysis/contamination.json");
    let good = std::fs::read(&report_path).unwrap();
    let mut rep: Value = serde_json::from_slice(&good).unwrap();
    rep["data_manifest_sha256"] = "0".repeat(64).into();
    std::fs::write(&report_path, serde_json::to_vec(&rep).unwrap()).unwrap();
    let (out, err) = ok_output(&eval_json);
    assert!(results(&out)[0].get("contamination").is_none(), "{out}");
    assert!(stored(&results(&out)[0]).get("contamination").is_none());
    assert!(
        err.contains("contamination not shown") && err.contains("training stream"),
        "{err}"
    );

    // A report that does not say which definition of the task it checked: not shown.
    let mut rep: Value = serde_json::from_slice(&good).unwrap();
    rep["tasks"][0]
        .as_object_mut()
        .unwrap()
        .remove("task_sha256");
    std::fs::write(&report_path, serde_json::to_vec(&rep).unwrap()).unwrap();
    let (out, err) = ok_output(&eval_json);
    assert!(results(&out)[0].get("contamination").is_none(), "{out}");
    assert!(err.contains("does not record"), "{err}");

    // Computed for another version of the task: not shown either.
    std::fs::write(&report_path, &good).unwrap();
    let data = tmp.path().join("bench.jsonl");
    let rows = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, rows.replace("wrong answer", "another answer")).unwrap();
    let (out, err) = ok_output(&eval_json);
    assert!(!err.contains("already evaluated"), "{err}");
    assert!(results(&out)[0].get("contamination").is_none(), "{out}");
    assert!(
        err.contains("contamination not shown") && err.contains("another definition"),
        "{err}"
    );
}

#[test]
fn a_typo_in_the_dedup_table_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run_with(&run, "nera = false");
    let o = glass(&["data", "prepare", &p(&run)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nera"), "{err}");
}

/// `--suite` checks the tasks `glass eval --suite` evaluates: the code suite on the
/// hand-made hub files finds the MBPP item quoted in one training document, and a suite
/// whose data is missing is refused with where to put it.
#[test]
fn contamination_checks_a_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run(&run);
    let quoted = "check whether a string is a palindrome";
    let mut corpus = std::fs::read_to_string(run.join("corpus/web.jsonl")).unwrap();
    corpus.push_str(
        &serde_json::json!({ "text": format!("{} {quoted} {}", filler(60, 30), filler(61, 30)) })
            .to_string(),
    );
    corpus.push('\n');
    std::fs::write(run.join("corpus/web.jsonl"), corpus).unwrap();
    ok(&["data", "prepare", &p(&run)]);
    let hub = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-eval/tests/fixtures/hub");
    let no_cache = tmp.path().join("no-cache");
    let env = [("HF_DATASETS_CACHE", no_cache.to_str().unwrap())];
    let o = common::glass_env(
        &[
            "data",
            "contamination",
            &p(&run),
            "--suite",
            "code",
            "--data-dir",
            &p(&hub),
            "--json",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tasks = r["tasks"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(names, ["humaneval", "mbpp"]);
    assert_eq!(tasks[0]["contaminated"], 0, "{}", tasks[0]);
    let mbpp = &tasks[1];
    assert_eq!(mbpp["contaminated"], 1, "{mbpp}");
    let it = &mbpp["contaminated_items"][0];
    assert!(it["id"].as_str().unwrap().ends_with("test.jsonl:2"), "{it}");
    assert_eq!(it["hits"][0]["doc_id"], "corpus/web.jsonl:14", "{it}");

    // The leaderboard suite without its data names the file it needs.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = common::glass_env(
        &[
            "data",
            "contamination",
            &p(&run),
            "--suite",
            "leaderboard",
            "--data-dir",
            &p(&empty),
        ],
        &env,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("allenai/ai2_arc/ARC-Challenge"),
        "{e}"
    );
    // --suite and --tasks exclude each other; an unknown suite lists the known ones.
    let o = glass(&[
        "data",
        "contamination",
        &p(&run),
        "--suite",
        "code",
        "--tasks",
        "glass_cloze",
    ]);
    assert!(!o.status.success());
    let o = glass(&["data", "contamination", &p(&run), "--suite", "nope"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("leaderboard, code"),
        "{e}"
    );
}

/// Sets `[data] decontaminate` (and any other `[data]` keys) in the run's config.
fn set_data_keys(run: &Path, keys: &[(&str, toml::Value)]) {
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let d = t.get_mut("data").unwrap().as_table_mut().unwrap();
    for (k, v) in keys {
        d.insert(k.to_string(), v.clone());
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
}

/// A run decontaminated against the benchmark of `write_task` (placed in the run).
fn decontaminated_run(run: &Path) {
    make_run(run);
    write_task(run);
    set_data_keys(
        run,
        &[(
            "decontaminate",
            toml::Value::Array(vec!["bench.yaml".into()]),
        )],
    );
}

#[test]
fn decontaminate_removes_the_documents_quoting_benchmark_items() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    decontaminated_run(&run);
    ok(&["data", "prepare", &p(&run), "--threads", "1"]);

    // Documents 3, 6 and 9 quote items 0, 2 and 4; document 12 duplicates document 0.
    let stats: Value = serde_json::from_str(&ok(&["data", "stats", &p(&run), "--json"])).unwrap();
    let d = &stats["dedup"];
    let web = &d["sources"][0];
    assert_eq!(web["decontaminate"]["docs"], 3, "{stats}");
    assert_eq!(web["exact"]["docs"], 1, "{stats}");
    assert_eq!(web["docs_after"], 9);
    assert_eq!(d["decontaminate"]["ngram"], 13);
    assert_eq!(d["decontaminate"]["tasks"][0]["task"], "bench");
    assert_eq!(d["decontaminate"]["tasks"][0]["items"], 6);
    assert_eq!(d["decontaminate"]["tasks"][0]["too_short"], 1);
    let text = ok(&["data", "stats", &p(&run)]);
    assert!(
        text.contains("decontaminate") && text.contains("bench"),
        "{text}"
    );

    let removed = std::fs::read_to_string(run.join("data/dedup_removed.jsonl")).unwrap();
    let lines: Vec<Value> = removed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, u64, String)> = lines
        .iter()
        .map(|l| {
            let what = match l["filter"].as_str().unwrap() {
                "decontaminate" => {
                    assert!(l.get("kept").is_none(), "{l}");
                    assert_eq!(l["benchmark"]["task"], "bench");
                    l["benchmark"]["item"].as_str().unwrap().to_string()
                }
                _ => format!("kept line {}", l["kept"]["line"]),
            };
            (
                l["filter"].as_str().unwrap().to_string(),
                l["line"].as_u64().unwrap(),
                what,
            )
        })
        .collect();
    // Items under the run are named relative to it.
    let item = |k: usize| format!("bench.jsonl:{k}");
    assert_eq!(
        got,
        vec![
            ("decontaminate".into(), 4, item(1)),
            ("decontaminate".into(), 7, item(3)),
            ("decontaminate".into(), 10, item(5)),
            ("exact".into(), 13, "kept line 1".into()),
        ]
    );

    // Nothing of the benchmark is left in the training rows.
    let out = ok(&[
        "data",
        "contamination",
        &p(&run),
        "--tasks",
        &p(&run.join("bench.yaml")),
        "--json",
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["tasks"][0]["contaminated"], 0, "{r}");

    // The same decisions and rows with two threads.
    let run2 = tmp.path().join("run2");
    decontaminated_run(&run2);
    ok(&["data", "prepare", &p(&run2), "--threads", "2"]);
    let m = |r: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(r.join("data/manifest.json")).unwrap()).unwrap()
    };
    let (m1, m2) = (m(&run), m(&run2));
    assert_eq!(m1["files"], m2["files"]);
    assert_eq!(m1["dedup"]["sources"], m2["dedup"]["sources"]);
    assert_eq!(m1["dedup"]["decontaminate"], m2["dedup"]["decontaminate"]);
}

#[test]
fn decontamination_errors_name_the_key_and_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    // A misspelt key.
    let run = tmp.path().join("typo");
    make_run(&run);
    set_data_keys(
        &run,
        &[(
            "decontaminte",
            toml::Value::Array(vec!["glass_cloze".into()]),
        )],
    );
    let o = glass(&["data", "prepare", &p(&run)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("decontaminte"), "{err}");

    // An unknown task is named.
    let run = tmp.path().join("unknown");
    make_run(&run);
    set_data_keys(
        &run,
        &[(
            "decontaminate",
            toml::Value::Array(vec!["no_such_task".into()]),
        )],
    );
    let o = glass(&["data", "prepare", &p(&run)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no_such_task"), "{err}");

    // Every document quoting the benchmark: the source is decontaminated away.
    let run = tmp.path().join("away");
    make_run(&run);
    write_task(&run);
    let its = items();
    let mut s = String::new();
    for (q, a) in its.iter().take(5) {
        s.push_str(&serde_json::json!({ "text": format!("{q} {a}") }).to_string());
        s.push('\n');
    }
    std::fs::write(run.join("corpus/web.jsonl"), s).unwrap();
    set_data_keys(
        &run,
        &[(
            "decontaminate",
            toml::Value::Array(vec!["bench.yaml".into()]),
        )],
    );
    let o = glass(&["data", "prepare", &p(&run)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("web")
            && err.contains("removed every one of its 5 documents"),
        "{err}"
    );
}

/// `[data.dedup] substring`: a document quoting 60 words of an earlier one has that span
/// cut, and `glass data stats` shows the spans in text and JSON.
#[test]
fn substring_dedup_shows_in_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run_with(&run, "substring = 50");
    let quote: Vec<String> = filler(1, 120).split(' ').map(str::to_string).collect();
    let doc = format!("{} {}", quote[20..80].join(" "), filler(77, 40));
    let mut corpus = std::fs::read_to_string(run.join("corpus/web.jsonl")).unwrap();
    corpus.push_str(&serde_json::json!({ "text": doc }).to_string());
    corpus.push('\n');
    std::fs::write(run.join("corpus/web.jsonl"), corpus).unwrap();
    ok(&["data", "prepare", &p(&run)]);

    let stats: Value = serde_json::from_str(&ok(&["data", "stats", &p(&run), "--json"])).unwrap();
    let sub = &stats["dedup"]["sources"][0]["substring"];
    assert_eq!(
        (sub["spans"].as_u64(), sub["docs_cut"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    assert!(sub["tokens"].as_u64().unwrap() >= 50, "{stats}");
    let text = ok(&["data", "stats", &p(&run)]);
    assert!(
        text.contains("substring") && text.contains("docs emptied"),
        "{text}"
    );
    let removed = std::fs::read_to_string(run.join("data/dedup_removed.jsonl")).unwrap();
    let line: Value = removed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["filter"] == "substring")
        .unwrap();
    assert_eq!(
        (line["line"].as_u64(), line["kept"]["line"].as_u64()),
        (Some(14), Some(2))
    );
    assert!(
        line["span"].is_array() && line["kept_at"].is_u64(),
        "{line}"
    );
}
