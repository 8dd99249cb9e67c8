//! `glass eval` end to end through the real binary: results in the run (JSON files and
//! metrics.sqlite), resumable (pairs already evaluated are skipped, a changed limit is
//! not "already evaluated"), deterministic under --force, `glass metrics --evals`, and a
//! checkpoint that fails its hash check refused.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{glass, metric, ok_output, results};

/// A small trained run: 1-layer model, 32-token context (so the bundled tasks exercise
/// left truncation and several rolling windows), a handful of checkpoints.
fn make_run(dir: &Path) -> PathBuf {
    let run = dir.join("r");
    let s = run.to_str().unwrap().to_string();
    ok_output(&["init", &s, "--preset", "tiny"]);
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    use toml::Value::Integer as I;
    common::shrink_tiny(&mut t, 128);
    let data = t.get_mut("data").unwrap().as_table_mut().unwrap();
    data["validation"]
        .as_table_mut()
        .unwrap()
        .insert("rows".into(), I(8));
    for (i, st) in data["stages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        st.as_table_mut()
            .unwrap()
            .insert("tokens".into(), I([640, 512][i.min(1)]));
    }
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok_output(&["data", "prepare", &s]);
    ok_output(&["train", &s, "--quiet"]);
    run
}

#[test]
fn eval_stores_results_resumes_and_refuses_tampered_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path());
    let r = run.to_str().unwrap();
    let n_ckpt = serde_json::from_str::<Value>(&ok_output(&["info", r, "--json"]).0).unwrap()
        ["checkpoints"]
        .as_array()
        .unwrap()
        .len();
    assert!(n_ckpt >= 3);
    let args = [
        "eval",
        r,
        "--checkpoints",
        "all",
        "--tasks",
        "glass_cloze,glass_heldout",
        "--limit",
        "4",
        "--json",
        "--log-samples",
    ];
    let (out, err) = ok_output(&args);
    let first = results(&out);
    assert_eq!(first.len(), 2 * n_ckpt);
    assert!(!err.contains("already evaluated"), "{err}");
    for x in &first {
        let k = x["checkpoint"].as_u64().unwrap();
        let task = x["task"].as_str().unwrap();
        let path = run.join(format!("evals/ckpt-{k:04}/{task}.json"));
        let stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(stored["task_sha256"], x["task_sha256"]);
        assert_eq!(stored["samples"].as_array().unwrap().len(), 4);
        assert_eq!(x["n"], 4);
    }
    let bpb = metric(&first[1], "bits_per_byte");
    assert!(bpb.is_finite() && bpb > 0.0);

    // Everything is stored: a second run recomputes nothing and reports the same values.
    let (out, err) = ok_output(&args);
    assert_eq!(
        err.matches("already evaluated").count(),
        2 * n_ckpt,
        "{err}"
    );
    let again = results(&out);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a["metrics"], b["metrics"]);
    }
    // A different limit is a different evaluation.
    let (_, err) = ok_output(&[
        "eval",
        r,
        "--checkpoints",
        "latest",
        "--tasks",
        "glass_cloze",
        "--limit",
        "5",
    ]);
    assert!(!err.contains("already evaluated"), "{err}");
    // --force recomputes, bit for bit.
    let (out, _) = ok_output(&[
        "eval",
        r,
        "--checkpoints",
        "0,1",
        "--tasks",
        "glass_cloze,glass_heldout",
        "--limit",
        "4",
        "--json",
        "--force",
        "--log-samples",
    ]);
    let forced = results(&out);
    assert_eq!(forced.len(), 4);
    for f in &forced {
        let orig = first
            .iter()
            .find(|x| x["checkpoint"] == f["checkpoint"] && x["task"] == f["task"])
            .unwrap();
        assert_eq!(orig["metrics"], f["metrics"]);
        assert_eq!(orig["samples"], f["samples"]);
    }

    // The curves, from metrics.sqlite.
    let (table, _) = ok_output(&["metrics", r, "--evals"]);
    assert!(
        table.contains("glass_cloze/acc_norm") && table.contains("glass_heldout/bits_per_byte"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 1 + n_ckpt, "{table}");
    let (csv, _) = ok_output(&["metrics", r, "--evals", "--csv"]);
    assert!(csv.starts_with("checkpoint,step,glass_cloze/acc,"), "{csv}");

    // A checkpoint whose weights changed is refused.
    let ckpt_dir = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ckpt-0001")
        })
        .unwrap();
    let model = ckpt_dir.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let o = glass(&[
        "eval",
        r,
        "--checkpoints",
        "1",
        "--tasks",
        "glass_cloze",
        "--limit",
        "2",
        "--force",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn bad_task_files_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("t.yaml");
    std::fs::write(
        &y,
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: d.jsonl\noutput_type: loglikelihood\n",
    )
    .unwrap();
    // The task is checked before the run is touched.
    let o = glass(&[
        "eval",
        dir.path().to_str().unwrap(),
        "--tasks",
        y.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("t.yaml:6") && e.contains("output_type `loglikelihood`"),
        "{e}"
    );
    let o = glass(&[
        "eval",
        dir.path().to_str().unwrap(),
        "--tasks",
        "no_such_task",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("glass_cloze"), "{e}");
}

/// The harness's shipped benchmark YAML (bundled) on hand-made data in each benchmark's
/// schema (JSON Lines, and MMLU's test split as the hub's Parquet file), a user-written
/// group over three MMLU subjects aggregated as the harness does (weighted by size), and
/// a suite whose data is missing refused with where to put it.
#[test]
fn benchmarks_groups_and_suites() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path());
    let r = run.to_str().unwrap();
    let hub = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-eval/tests/fixtures/hub");
    let group = dir.path().join("mini_mmlu.yaml");
    std::fs::write(
        &group,
        "group: mini_mmlu\ntask:\n  - mmlu_anatomy\n  - mmlu_world_religions\n  - mmlu_abstract_algebra\naggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n",
    )
    .unwrap();
    let no_cache = dir.path().join("no-cache");
    let env = [("HF_DATASETS_CACHE", no_cache.to_str().unwrap())];
    let tasks = format!("{},arc_challenge,hellaswag,truthfulqa_mc2", group.display());
    let o = common::glass_env(
        &[
            "eval",
            r,
            "--checkpoints",
            "latest",
            "--tasks",
            &tasks,
            "--data-dir",
            hub.to_str().unwrap(),
            "--num-fewshot",
            "1",
            "--limit",
            "3",
            "--json",
            "--quiet",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = results(&String::from_utf8_lossy(&o.stdout));
    let task = |n: &str| {
        all.iter()
            .find(|x| x["task"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    for t in [
        "arc_challenge",
        "hellaswag",
        "truthfulqa_mc2",
        "mmlu_anatomy",
    ] {
        assert_eq!(task(t)["n"], 3, "{t}");
    }
    // MC2 is a probability mass, not a 0/1 accuracy.
    let mc2 = metric(task("truthfulqa_mc2"), "acc");
    assert!(mc2 > 0.0 && mc2 < 1.0, "{mc2}");
    let g = all.iter().find(|x| x["group"] == "mini_mmlu").unwrap();
    let subjects = [
        "mmlu_anatomy",
        "mmlu_world_religions",
        "mmlu_abstract_algebra",
    ];
    let want = subjects
        .iter()
        .map(|s| metric(task(s), "acc") * 3.0)
        .sum::<f64>()
        / 9.0;
    assert!((metric(g, "acc") - want).abs() < 1e-12);
    assert!(run
        .join(format!(
            "evals/ckpt-{:04}/mini_mmlu.json",
            g["checkpoint"].as_u64().unwrap()
        ))
        .exists());
    let m = ok_output(&["metrics", r, "--evals", "--csv"]).0;
    assert!(m.contains("mini_mmlu"), "{m}");
    // A suite without its data says which files to place where.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = common::glass_env(
        &[
            "eval",
            r,
            "--suite",
            "leaderboard",
            "--data-dir",
            empty.to_str().unwrap(),
        ],
        &env,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("allenai/ai2_arc/ARC-Challenge")
            && e.contains("test.jsonl"),
        "{e}"
    );
}

/// Whether the code sandbox can run /usr/bin/python3 here. If not, the test prints
/// SKIPPED and fails, unless GLASS_ALLOW_SANDBOX_SKIP=1 (docs/threat-model.md).
fn sandbox_ready() -> bool {
    let why = match glass_eval::sandbox::mode() {
        Err(e) => e.to_string(),
        Ok(_) if !Path::new("/usr/bin/python3").exists() => {
            "/usr/bin/python3 does not exist".to_string()
        }
        Ok(_) => return true,
    };
    // Straight to the descriptor: the test harness does not capture it, so the skip is
    // seen even when the test is allowed to pass.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n********\nSKIPPED: {why}\n********\n");
    if std::env::var("GLASS_ALLOW_SANDBOX_SKIP").as_deref() == Ok("1") {
        return false;
    }
    panic!("SKIPPED counts as a failure: {why} (set GLASS_ALLOW_SANDBOX_SKIP=1 to allow it on a machine that cannot build the sandbox)");
}

/// The code path end to end (with the sandbox and /usr/bin/python3): the harness's MBPP
/// YAML, with a generation budget that fits the test model's 128 positions, on the
/// hand-made MBPP documents; every generated program and its verdict (one of the three
/// bounded forms) stored in the run, the metric in metrics.sqlite. HumanEval's
/// 1024-token budget does not fit this model and is refused, naming it. Fails after
/// 10 minutes rather than hang.
#[test]
fn code_tasks_generate_execute_and_store_their_programs() {
    if !sandbox_ready() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(code_tasks_end_to_end));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(600)) {
        Ok(Ok(())) => {}
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("the code path did not finish within 10 minutes"),
    }
}

fn code_tasks_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path());
    let r = run.to_str().unwrap();
    let hub = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-eval/tests/fixtures/hub");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-eval/tasks/lm_eval/mbpp/mbpp.yaml"),
    )
    .unwrap();
    let small = dir.path().join("mbpp_small.yaml");
    std::fs::write(
        &small,
        shipped.replace("task: mbpp", "task: mbpp_small").replace(
            "  do_sample: false",
            "  do_sample: false\n  max_gen_toks: 12",
        ),
    )
    .unwrap();
    let o = glass(&[
        "eval",
        r,
        "--checkpoints",
        "latest",
        "--tasks",
        small.to_str().unwrap(),
        "--data-dir",
        hub.to_str().unwrap(),
        "--num-fewshot",
        "0",
        "--limit",
        "4",
        "--json",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = results(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(all[0]["task"], "mbpp_small");
    assert_eq!(all[0]["metrics"][0]["metric"], "pass_at_1");
    let samples = all[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for s in samples {
        let program = s["program"].as_str().unwrap();
        assert!(program.starts_with(s["completion"].as_str().unwrap()));
        assert!(program.contains("\nassert "), "{program}");
        let result = s["result"].as_str().unwrap();
        assert!(
            result == "passed" || result == "timed out" || result.starts_with("failed: "),
            "{result}"
        );
        assert!(result.chars().count() <= glass_eval::code::RESULT_CHARS);
        assert_eq!(s["passed"].as_bool(), Some(result == "passed"));
    }
    // Stored in the run: the JSON file with the programs, and the metric.
    let stored: Value = serde_json::from_slice(
        &std::fs::read(run.join(format!(
            "evals/ckpt-{:04}/mbpp_small.json",
            all[0]["checkpoint"].as_u64().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["samples"], all[0]["samples"]);
    let (m, _) = ok_output(&["metrics", r, "--evals", "--json"]);
    assert!(m.contains("pass_at_1"), "{m}");
    // HumanEval asks for 1024 new tokens; this model has 128 positions.
    let o = glass(&[
        "eval",
        r,
        "--checkpoints",
        "latest",
        "--suite",
        "code",
        "--data-dir",
        hub.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("max_gen_toks 1024"), "{e}");
}
