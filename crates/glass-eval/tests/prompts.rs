//! Few-shot prompts and request strings byte-identical to lm-evaluation-harness's own
//! (fixtures written by tools/fixtures/make_eval_fixtures.py with lm-eval 0.4.13), and
//! task definitions the harness accepts but Glass cannot run refused by name and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glass_eval::task::TaskDef;
use glass_eval::{prepare, Prepared};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn check_against(fixture: &str, mut task: TaskDef) {
    let f: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join(fixture)).unwrap()).unwrap();
    task.num_fewshot = f["num_fewshot"].as_u64().unwrap() as usize;
    let limit = f["limit"].as_u64().map(|l| l as usize);
    let data = task.load().unwrap();
    let prepared = prepare(&task, &data, limit, f["seed"].as_u64().unwrap()).unwrap();
    // `acc_mutual_info` adds each document's continuations after an empty context; the
    // harness lists them after the conditional ones.
    let mutual_info = task
        .metrics
        .contains(&glass_eval::task::Metric::AccMutualInfo);
    let unconditional = glass_eval::results::unconditional(&prepared);
    let docs = f["docs"].as_array().unwrap();
    assert_eq!(prepared.len(), docs.len());
    for (i, d) in docs.iter().enumerate() {
        let mut expected = vec![&prepared[i]];
        if mutual_info {
            expected.push(&unconditional[i]);
        }
        let mut built = Vec::new();
        for p in expected {
            let Prepared::MultipleChoice {
                context,
                continuations,
                ..
            } = p
            else {
                panic!("multiple choice expected")
            };
            built.extend(continuations.iter().map(|c| (context, c)));
        }
        let reqs = d["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), built.len(), "doc {}", d["doc"]);
        for (r, (context, cont)) in reqs.iter().zip(built) {
            assert_eq!(
                context,
                r[0].as_str().unwrap(),
                "context of doc {}",
                d["doc"]
            );
            assert_eq!(
                cont,
                r[1].as_str().unwrap(),
                "continuation of doc {}",
                d["doc"]
            );
        }
    }
}

#[test]
fn bundled_cloze_three_shot_prompts_match_the_harness() {
    check_against(
        "glass_cloze_3shot.json",
        glass_eval::bundled::bundled("glass_cloze")
            .unwrap()
            .unwrap(),
    );
}

#[test]
fn harness_arc_easy_yaml_with_local_data_matches_the_harness() {
    let arc = fixtures().join("arc");
    let mut files = BTreeMap::new();
    files.insert("train".to_string(), vec![arc.join("arc_train.jsonl")]);
    files.insert("test".to_string(), vec![arc.join("arc_test.jsonl")]);
    let task = TaskDef::from_file(&arc.join("arc_easy.yaml"), Some(&files)).unwrap();
    check_against("arc_easy_3shot.json", task);
}

#[test]
fn the_arc_gold_comes_from_label_index_of_answer_key() {
    let arc = fixtures().join("arc");
    let mut files = BTreeMap::new();
    files.insert("test".to_string(), vec![arc.join("arc_test.jsonl")]);
    let task = TaskDef::from_file(&arc.join("arc_easy.yaml"), Some(&files)).unwrap();
    let data = task.load().unwrap();
    let golds: Vec<Option<usize>> = prepare(&task, &data, None, 1234)
        .unwrap()
        .into_iter()
        .map(|p| match p {
            Prepared::MultipleChoice { gold, .. } => gold,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(golds, [1, 0, 2, 1, 3, 0, 1, 1].map(Some).to_vec());
}

fn parse_err(yaml: &str) -> String {
    TaskDef::parse(yaml, "t.yaml", Path::new("."), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn unsupported_features_are_named_with_their_line() {
    let base = "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: x.jsonl\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\ndoc_to_choice: c\n";
    let e = parse_err(&format!(
        "{base}process_docs: !function utils.process_docs\n"
    ));
    assert!(e.contains("t.yaml:11") && e.contains("!function"), "{e}");
    let e = parse_err(&format!("{base}filter_list:\n  - name: x\n"));
    assert!(e.contains("t.yaml:11") && e.contains("filter_list"), "{e}");
    let e = parse_err(&base.replace("multiple_choice", "loglikelihood"));
    assert!(
        e.contains("t.yaml:6") && e.contains("output_type `loglikelihood`"),
        "{e}"
    );
    // Generation: sampling, and code metrics outside their benchmark, are refused.
    let gen = base.replace("multiple_choice", "generate_until");
    let e = parse_err(&format!(
        "{gen}metric_list:\n  - metric: !function utils.pass_at_1\ngeneration_kwargs:\n  do_sample: true\n"
    ));
    assert!(
        e.contains("t.yaml:12") && e.contains("utils.pass_at_1"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{}metric_list:\n  - metric: !function utils.pass_at_1\ngeneration_kwargs:\n  do_sample: true\n",
        gen.replace("dataset_path: json", "dataset_path: google-research-datasets/mbpp")
    ));
    assert!(e.contains("t.yaml:14") && e.contains("do_sample"), "{e}");
    let e = parse_err(&gen);
    assert!(e.contains("generate_until needs a `metric_list`"), "{e}");
    let e = parse_err(&format!("{base}metric_list:\n  - metric: exact_match\n"));
    assert!(e.contains("t.yaml:12") && e.contains("exact_match"), "{e}");
    // A hub dataset parses; loading it without local files says where to put them.
    let mut t = TaskDef::parse(
        &base.replace("dataset_path: json", "dataset_path: allenai/ai2_arc"),
        "t.yaml",
        Path::new("."),
        None,
    )
    .unwrap();
    t.datasets_cache = Some(PathBuf::from("/nonexistent"));
    let e = t.load().unwrap_err().to_string();
    assert!(
        e.contains("allenai/ai2_arc") && e.contains("--data-files"),
        "{e}"
    );
}

#[test]
fn a_row_missing_a_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.jsonl"),
        "{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"a\": 0}\n\n{\"c\": [\"x\", \"y\"], \"a\": 1}\n",
    )
    .unwrap();
    let yaml = "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: d.jsonl\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: \"Q: {{q}}\"\ndoc_to_target: a\ndoc_to_choice: c\n";
    let p = dir.path().join("t.yaml");
    std::fs::write(&p, yaml).unwrap();
    let task = TaskDef::from_file(&p, None).unwrap();
    let data = task.load().unwrap();
    let e = prepare(&task, &data, None, 1234).unwrap_err().to_string();
    assert!(e.contains("d.jsonl:3") && e.contains("doc_to_text"), "{e}");
    // A malformed row is named too.
    std::fs::write(dir.path().join("d.jsonl"), "{\"q\": \"a\"}\n{oops\n").unwrap();
    let e = task.load().unwrap_err().to_string();
    assert!(e.contains("d.jsonl:2"), "{e}");
}
