//! End-to-end checks of `[data.dedup]` through `glass data stats` and of `glass data
//! contamination`: benchmark items planted in the training documents are found, absent
//! ones are not, and the counts and places agree with a brute-force scan of every row.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{glass, ok, p};

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

#[test]
fn a_typo_in_the_dedup_table_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run(&run);
    let cfg = run.join("glass.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[data.dedup]", "[data.dedup]\nnera = false"),
    )
    .unwrap();
    let o = glass(&["data", "prepare", &p(&run)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nera"), "{err}");
}
