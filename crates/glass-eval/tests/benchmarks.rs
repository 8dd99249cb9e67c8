//! The leaderboard benchmarks as lm-evaluation-harness 0.4.13 ships them (its YAML,
//! bundled in Glass): requests byte-identical to the harness's own, on small hand-made
//! datasets in each benchmark's schema read from JSON Lines, the hub's Parquet and the
//! `datasets` cache's Arrow files; the native `process_docs` / `process_results` hooks
//! equal to the harness's Python output; MMLU's group structure. Fixtures:
//! tools/fixtures/make_benchmark_fixtures.py.

use std::path::{Path, PathBuf};

use glass_eval::index::{Selection, TaskIndex};
use glass_eval::process::{truthfulqa_mc2, DocsFn};
use glass_eval::source::bundled_lm_eval_dir;
use glass_eval::task::TaskDef;
use glass_eval::{prepare, Prepared};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

fn bundled_task(name: &str) -> TaskDef {
    let ix = TaskIndex::build(&[bundled_lm_eval_dir()]).unwrap();
    let mut sel = Selection::default();
    ix.select(name, &mut sel).unwrap();
    assert_eq!(sel.tasks.len(), 1, "{name}");
    sel.tasks.pop().unwrap()
}

fn check_requests(mut task: TaskDef, expected: &Value) {
    task.num_fewshot = expected["num_fewshot"].as_u64().unwrap() as usize;
    let data = task.load().unwrap();
    let prepared = prepare(&task, &data, None, 1234).unwrap();
    let docs = expected["docs"].as_array().unwrap();
    assert_eq!(prepared.len(), docs.len(), "{}", task.name);
    for (p, d) in prepared.iter().zip(docs) {
        if let Prepared::Generate {
            context,
            until,
            max_gen_toks,
            ..
        } = p
        {
            // generate_until: one request, (context, generation_kwargs).
            let r = &d["requests"][0];
            assert_eq!(
                context,
                r[0].as_str().unwrap(),
                "{} doc {}",
                task.name,
                d["doc"]
            );
            let want: Vec<&str> = r[1]["until"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap())
                .collect();
            assert_eq!(until, &want, "{}", task.name);
            let max = r[1]["max_gen_toks"].as_u64().unwrap_or(256) as usize;
            assert_eq!(*max_gen_toks, max, "{}", task.name);
            assert_eq!(r[1]["do_sample"], Value::Bool(false));
            continue;
        }
        let Prepared::MultipleChoice {
            context,
            continuations,
            ..
        } = p
        else {
            panic!("multiple choice expected")
        };
        let reqs = d["requests"].as_array().unwrap();
        assert_eq!(
            reqs.len(),
            continuations.len(),
            "{} doc {}",
            task.name,
            d["doc"]
        );
        for (r, cont) in reqs.iter().zip(continuations) {
            assert_eq!(
                context,
                r[0].as_str().unwrap(),
                "{} doc {}",
                task.name,
                d["doc"]
            );
            assert_eq!(
                cont,
                r[1].as_str().unwrap(),
                "{} doc {}",
                task.name,
                d["doc"]
            );
        }
    }
}

#[test]
fn shipped_benchmark_yaml_builds_the_harness_requests() {
    let f = json("benchmarks.json");
    let tasks = f["tasks"].as_object().unwrap();
    assert_eq!(tasks.len(), 9);
    for (name, expected) in tasks {
        let mut task = bundled_task(name);
        // JSON Lines, and for MMLU's test split the hub's Parquet file.
        task.data_dirs = vec![fixtures().join("hub")];
        task.datasets_cache = Some(fixtures().join("no_cache"));
        check_requests(task, expected);
    }
}

#[test]
fn truthfulqa_reads_the_datasets_cache_arrow_file() {
    let f = json("benchmarks.json");
    for name in ["truthfulqa_mc1", "truthfulqa_mc2"] {
        let mut task = bundled_task(name);
        task.datasets_cache = Some(fixtures().join("hf_cache"));
        let data = task.load().unwrap();
        let files = &data.file_sha256["validation"];
        assert_eq!(files.len(), 1);
        check_requests(task, &f["tasks"][name]);
    }
}

#[test]
fn hellaswag_process_docs_equals_the_harness_python() {
    let f = json("process.json");
    for split in ["train", "validation"] {
        let path = fixtures().join(format!("hub/Rowan/hellaswag/{split}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap();
        let want = f["hellaswag_process_docs"][split].as_array().unwrap();
        let rows: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), want.len());
        for (row, w) in rows.iter().zip(want) {
            let got = DocsFn::HellaswagProcessDocs.apply(row, "x").unwrap();
            assert_eq!(got["query"], w["query"]);
            assert_eq!(got["choices"], w["choices"]);
            assert_eq!(got["gold"], w["gold"]);
        }
    }
}

/// Equal to the last bits: numpy's vectorised `exp` is not always correctly rounded
/// (1 ulp off glibc's on one of these values), so agreement is to 1e-15 relative, the
/// summation order being numpy's.
#[test]
fn truthfulqa_mc2_equals_the_harness_python() {
    let f = json("process.json");
    for d in f["truthfulqa_mc2"].as_array().unwrap() {
        let ll: Vec<f64> = d["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let labels: Vec<i64> = d["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let want = d["acc"].as_f64().unwrap();
        let got = truthfulqa_mc2(&ll, &labels);
        assert!((got - want).abs() <= 1e-15 * want.abs(), "{got} vs {want}");
    }
}

#[test]
fn mmlu_is_a_group_of_four_categories_over_57_subjects() {
    let ix = TaskIndex::build(&[bundled_lm_eval_dir()]).unwrap();
    let mut sel = Selection::default();
    ix.select("mmlu", &mut sel).unwrap();
    assert_eq!(sel.tasks.len(), 57);
    assert_eq!(sel.groups.len(), 1);
    let g = &sel.groups[0];
    assert_eq!(g.leaf_tasks().len(), 57);
    let cats: Vec<(String, usize)> = g
        .all_groups()
        .iter()
        .skip(1)
        .map(|c| (c.name.clone(), c.leaf_tasks().len()))
        .collect();
    assert_eq!(
        cats,
        [
            ("mmlu_stem", 19),
            ("mmlu_other", 13),
            ("mmlu_social_sciences", 12),
            ("mmlu_humanities", 13)
        ]
        .map(|(a, b)| (a.to_string(), b))
    );
    assert!(g
        .aggregate
        .iter()
        .all(|a| a.metric == "acc" && a.weight_by_size));
    // Every subject: 5-shot-ready, first_n from dev, the shipped description.
    let anatomy = sel.tasks.iter().find(|t| t.name == "mmlu_anatomy").unwrap();
    assert_eq!(anatomy.fewshot_split.as_deref(), Some("dev"));
    assert_eq!(anatomy.dataset_name.as_deref(), Some("anatomy"));
}

#[test]
fn arc_challenge_runs_as_shipped_through_its_include() {
    let t =
        TaskDef::from_file(&bundled_lm_eval_dir().join("arc/arc_challenge.yaml"), None).unwrap();
    assert_eq!(t.name, "arc_challenge");
    assert_eq!(t.dataset_path.as_deref(), Some("allenai/ai2_arc"));
    assert_eq!(t.dataset_name.as_deref(), Some("ARC-Challenge"));
    assert_eq!(t.doc_to_text, bundled_task("arc_easy").doc_to_text);
}

#[test]
fn a_missing_benchmark_dataset_names_the_files_and_places() {
    let mut t = bundled_task("hellaswag");
    let d = tempfile::tempdir().unwrap();
    t.data_dirs = vec![d.path().to_path_buf()];
    t.datasets_cache = Some(d.path().join("cache"));
    let e = t.load().unwrap_err().to_string();
    assert!(
        e.contains("Rowan/hellaswag") && e.contains("validation.jsonl") && e.contains("--data-dir"),
        "{e}"
    );
}

#[test]
fn other_python_functions_are_refused_by_name() {
    let base = "task: t\ndataset_path: some/dataset\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\ndoc_to_choice: c\n";
    let e = TaskDef::parse(
        &format!("{base}process_docs: !function utils.process_docs\n"),
        "t.yaml",
        Path::new("."),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.yaml:8") && e.contains("utils.process_docs") && e.contains("some/dataset"),
        "{e}"
    );
    let e = TaskDef::parse(
        &base.replace("doc_to_text: q", "doc_to_text: !function utils.doc_to_text"),
        "t.yaml",
        Path::new("."),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.yaml:5") && e.contains("utils.doc_to_text"),
        "{e}"
    );
}
