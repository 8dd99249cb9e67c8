//! Task files and data from strangers: templates that would run forever or grow without
//! bound, targets and choices that cannot be scored, includes of files that are not
//! tasks. Each ends in an error naming the task (file and line, or task and row) within
//! seconds — never a hang, never a score of 0 with success.

use std::sync::mpsc;
use std::time::Duration;

use glass_eval::task::TaskDef;
use glass_eval::{prepare, EvalError, Prepared};

/// Writes `yaml` (a multiple-choice task over `rows`) and loads and prepares it, in a
/// thread that must finish within a minute.
fn prepared(yaml: &str, rows: &[serde_json::Value]) -> Result<Vec<Prepared>, String> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let y = dir.path().join("t.yaml");
    let dataset = if yaml.contains("dataset_path") {
        ""
    } else {
        "dataset_path: json\n"
    };
    std::fs::write(
        &y,
        format!("task: hostile\n{dataset}test_split: test\n{yaml}"),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| -> Result<Vec<Prepared>, EvalError> {
            // As `--data-files test=d.jsonl`: any dataset_path reads the local rows.
            let files = std::collections::BTreeMap::from([("test".to_string(), vec![data])]);
            let task = TaskDef::from_file(&y, Some(&files))?;
            let data = task.load()?;
            prepare(&task, &data, None, 1234)
        })();
        let _ = tx.send(r.map_err(|e| e.to_string()));
        drop(dir);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("preparing the task hung (no result within 60 s)")
}

fn refused(yaml: &str, rows: &[serde_json::Value], words: &[&str]) {
    let e = match prepared(yaml, rows) {
        Ok(p) => panic!("accepted ({} documents prepared)", p.len()),
        Err(e) => e,
    };
    eprintln!("{e}");
    for w in words {
        assert!(e.contains(w), "missing `{w}` in: {e}");
    }
}

const MC: &str = "output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{label}}\"\nmetric_list:\n  - metric: acc\n";

fn row(q: &str) -> serde_json::Value {
    serde_json::json!({"q": q, "choices": ["a", "b"], "label": 0})
}

#[test]
fn endless_loops_and_huge_outputs_end_in_errors_naming_task_and_row() {
    // Nested loops of 10^10 iterations: out of fuel.
    refused(
        &format!("doc_to_text: \"{{% for i in range(100000) %}}{{% for j in range(100000) %}}{{% endfor %}}{{% endfor %}}{{{{q}}}}\"\n{MC}"),
        &[row("x")],
        &["hostile", "d.jsonl:1", "doc_to_text", "instructions"],
    );
    // 100 000 copies of a 1 KiB field: 100 MB of prompt.
    refused(
        &format!("doc_to_text: \"{{% for i in range(100000) %}}{{{{q}}}}{{% endfor %}}\"\n{MC}"),
        &[row(&"y".repeat(1024))],
        &["hostile", "d.jsonl:1", "doc_to_text", "renders more than"],
    );
    // Multiplying filters and methods draw from a bounded budget.
    refused(
        &format!("doc_to_text: \"{{{{q.replace('', q)}}}}\"\n{MC}"),
        &[row(&"z".repeat(8192))],
        &["hostile", "d.jsonl:1", "str.replace"],
    );
    refused(
        &format!("doc_to_text: \"{{{{range(100000)|join(q)}}}}\"\n{MC}"),
        &[row(&"z".repeat(1024))],
        &["hostile", "d.jsonl:1", "join"],
    );
    // A legitimate template renders as before.
    let p = prepared(
        &format!("doc_to_text: \"{{% for c in choices %}}{{{{c}}}} {{% endfor %}}{{{{q.strip()}}}}\"\n{MC}"),
        &[row(" why ")],
    )
    .unwrap();
    let Prepared::MultipleChoice { context, .. } = &p[0] else {
        panic!()
    };
    assert_eq!(context, "a b why");
}

#[test]
fn templates_that_grow_without_bound_are_refused_when_the_task_loads() {
    let cases: [(&str, &str); 6] = [
        // Doubling statement after statement: 2^40 bytes from a 40-line template.
        (
            "{% set a = q ~ q %}{% set b = a ~ a %}{% set c = b ~ b %}{{c}}",
            "binding a variable",
        ),
        (
            "{% for i in range(50) %}{% set q = q ~ q %}{% endfor %}{{q}}",
            "`set` inside a loop",
        ),
        ("{{ q * 100000000 }}", "repetition"),
        (
            "{% macro f(s, n) %}{{ f(s ~ s, n - 1) }}{% endmacro %}{{ f(q, 60) }}",
            "statement",
        ),
        ("{% set ns = namespace(s=q) %}{{ns.s}}", "namespace"),
        ("{{ q|indent(1000000000) }}", "indent"),
    ];
    for (template, why) in cases {
        refused(
            &format!(
                "doc_to_text: {}\n{MC}",
                serde_json::to_string(template).unwrap()
            ),
            &[row("x")],
            &["t.yaml:", "doc_to_text", why],
        );
    }
}

#[test]
fn targets_outside_the_choices_and_empty_choices_are_refused_by_row() {
    let mc = "output_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\nmetric_list:\n  - metric: acc\n";
    let doc = |label: serde_json::Value, choices: serde_json::Value| serde_json::json!({"q": "Q", "choices": choices, "label": label});
    let good = doc(0.into(), serde_json::json!(["a", "b"]));
    // An index past the choices (row 2).
    refused(
        &format!("{mc}doc_to_target: \"{{{{label}}}}\"\n"),
        &[good.clone(), doc(7.into(), serde_json::json!(["a", "b"]))],
        &[
            "hostile",
            "d.jsonl:2",
            "doc_to_target",
            "index 7",
            "2 choices",
        ],
    );
    // A text target that is not a choice.
    refused(
        &format!("{mc}doc_to_target: \"{{{{choices[label]}}}}x\"\n"),
        std::slice::from_ref(&good),
        &["hostile", "d.jsonl:1", "doc_to_target", "`ax`"],
    );
    // No choices at all.
    refused(
        &format!("{mc}doc_to_target: \"{{{{label}}}}\"\n"),
        &[good, doc(0.into(), serde_json::json!([]))],
        &["hostile", "d.jsonl:2", "doc_to_choice", "no choices"],
    );
}

#[test]
fn mc2_labels_must_mark_true_and_false_answers() {
    let mc2 = "output_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{mc2_targets.choices}}\"\ndoc_to_target: 0\nprocess_results: !function utils.process_results_mc2\nmetric_list:\n  - metric: acc\n";
    let doc = |labels: serde_json::Value| serde_json::json!({"q": "Q", "mc2_targets": {"choices": ["a", "b", "c"], "labels": labels}});
    for labels in [
        serde_json::json!([0, 0, 0]),
        serde_json::json!([1, 1, 1]),
        serde_json::json!([1, 2, 0]),
        serde_json::json!([1, -1, 0]),
    ] {
        refused(
            &format!("dataset_path: truthfulqa/truthful_qa\n{mc2}"),
            &[doc(labels)],
            &[
                "hostile",
                "d.jsonl:1",
                "mc2_targets.labels",
                "at least one of each",
            ],
        );
    }
    // True answers need not come first: every answer labelled 1 counts, as in the harness.
    let p = prepared(
        &format!("dataset_path: truthfulqa/truthful_qa\n{mc2}"),
        &[doc(serde_json::json!([0, 1, 0]))],
    )
    .unwrap();
    assert!(
        matches!(&p[0], Prepared::MultipleChoice { mc2_labels: Some(l), .. } if l == &[0, 1, 0])
    );
}

/// An `include:` of a file that is not a task names the file and the problem, and never
/// repeats what the file holds.
#[test]
fn include_errors_name_the_file_not_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2 SECRET VALUE";
    let cases = [
        format!("password: {secret}\n"),
        format!("task: {secret}\n"),
        format!("{secret}\n"),
        format!("- {secret}\n"),
        format!("task: t\noutput_type: {secret}\n"),
        format!("key: [unclosed {secret}\n"),
        format!("key: !{} x\n", secret.replace(' ', "_")),
        format!("\"{secret}\": 1\n"),
        format!(
            "task: t\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n  {}: 1\n",
            secret.replace(' ', "_")
        ),
    ];
    for (i, content) in cases.iter().enumerate() {
        let inc = dir.path().join(format!("inc{i}.txt"));
        std::fs::write(&inc, content).unwrap();
        let y = dir.path().join(format!("t{i}.yaml"));
        std::fs::write(&y, format!("include: inc{i}.txt\n")).unwrap();
        let e = TaskDef::from_file(&y, None).unwrap_err().to_string();
        eprintln!("{e}");
        for word in ["hunter2", "SECRET", "VALUE"] {
            assert!(
                !e.contains(word),
                "the error repeats the included file: {e}"
            );
        }
        assert!(
            e.contains(&format!("inc{i}.txt:")),
            "the included file is not named: {e}"
        );
    }
}

/// The template check refuses nothing the bundled harness tasks use: every `doc_to_*`
/// template and `description` of every bundled task file (includes merged) passes it.
#[test]
fn every_bundled_task_template_passes_the_check() {
    let dir = glass_eval::source::bundled_lm_eval_dir();
    let mut tasks = 0;
    for f in glass_eval::source::yaml_files(&dir).unwrap() {
        let m = glass_eval::include::load(&f).unwrap();
        if m.root.get("task").and_then(|t| t.as_str()).is_none() {
            continue;
        }
        glass_eval::template::check_task(&m.root, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        tasks += 1;
    }
    // ARC (2), HellaSwag, TruthfulQA (2), MMLU's 57 subjects and the code tasks.
    assert!(tasks > 60, "only {tasks} bundled tasks found");
    // The check does refuse: one refused construct in a copy of a bundled template.
    let arc = glass_eval::include::load(&dir.join("arc/arc_easy.yaml")).unwrap();
    let t = arc
        .root
        .get("doc_to_text")
        .and_then(|t| t.as_str())
        .unwrap();
    assert!(glass_eval::template::check(t).is_ok());
    assert!(glass_eval::template::check(&format!("{t}{{{{ question|indent(9) }}}}")).is_err());
}
