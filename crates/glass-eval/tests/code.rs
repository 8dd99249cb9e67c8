//! HumanEval and MBPP scoring as lm-evaluation-harness 0.4.13 + HF `evaluate`'s
//! `code_eval` do it: fixed completions (right, wrong, looping, exiting, forking,
//! deleting files, reading stdin, …) fed through Glass's path — the bundled YAML's
//! requests, the task's filter, `code_eval`'s concatenation — give the harness's programs
//! byte for byte, and, run in the sandbox, the harness's pass/fail for every one.
//! Hostile programs are stopped or refused and the evaluation goes on. Fixtures:
//! tools/fixtures/make_benchmark_fixtures.py (`code.json`). The tests that execute
//! programs need the sandbox (see tests/support/mod.rs for the SKIPPED convention).

use std::path::{Path, PathBuf};

use glass_eval::code::{program, CodeRunner};
use glass_eval::index::{Selection, TaskIndex};
use glass_eval::results::{aggregate, Sample};
use glass_eval::source::bundled_lm_eval_dir;
use glass_eval::task::{Metric, TaskDef};
use glass_eval::{prepare, Prepared};
use serde_json::Value;

mod support;
use support::PY;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn code_fixture() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("code.json")).unwrap()).unwrap()
}

fn task(name: &str) -> TaskDef {
    let ix = TaskIndex::build(&[bundled_lm_eval_dir()]).unwrap();
    let mut sel = Selection::default();
    ix.select(name, &mut sel).unwrap();
    let mut t = sel.tasks.pop().unwrap();
    t.data_dirs = vec![fixtures().join("hub")];
    t.datasets_cache = Some(fixtures().join("no_cache"));
    t
}

/// (program Glass builds, whether the harness passed it) for every fixture row.
fn programs(name: &str) -> Vec<(String, String, bool)> {
    let f = code_fixture();
    let t = task(name);
    let data = t.load().unwrap();
    let prepared = prepare(&t, &data, None, 1234).unwrap();
    f["tasks"][name]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let doc = row["doc"].as_u64().unwrap() as usize;
            let Prepared::Generate {
                reference,
                prediction_prefix,
                ..
            } = &prepared[doc]
            else {
                panic!("generate_until expected")
            };
            let completion = row["completion"].as_str().unwrap();
            let passed = row["metrics"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_f64()
                .unwrap()
                == 1.0;
            (
                program(&format!("{prediction_prefix}{completion}"), reference),
                row["program"].as_str().unwrap().to_string(),
                passed,
            )
        })
        .collect()
}

#[test]
fn programs_are_the_harness_programs_byte_for_byte() {
    for name in ["humaneval", "mbpp"] {
        let rows = programs(name);
        assert_eq!(rows.len(), 54, "{name}");
        for (glass, harness, _) in &rows {
            assert_eq!(glass, harness, "{name}");
        }
        // Right and wrong answers both occur: pass@1 is not trivially 0 or 1.
        assert!(rows.iter().any(|r| r.2) && rows.iter().any(|r| !r.2));
    }
}

#[test]
fn code_tasks_name_the_harness_metrics() {
    assert_eq!(task("humaneval").metrics, vec![Metric::PassAtK1]);
    assert_eq!(task("mbpp").metrics, vec![Metric::PassAt1]);
    assert_eq!(Metric::PassAtK1.name(), "pass@1");
    assert_eq!(Metric::PassAt1.name(), "pass_at_1");
    let g = task("humaneval").generation.unwrap();
    assert_eq!(g.max_gen_toks, 1024);
    assert_eq!(task("mbpp").generation.unwrap().max_gen_toks, 256);
}

fn runner() -> Option<CodeRunner> {
    support::ready().then(|| CodeRunner::new(PY.into()))
}

/// Runs `program`; fails the test after 20 s.
fn run(r: &CodeRunner, program: &str) -> glass_eval::code::CodeResult {
    let (r, program) = (r.clone(), program.to_string());
    support::with_deadline(20, move || r.run(&program).unwrap())
}

#[test]
fn sandboxed_pass_at_1_equals_the_harness_code_eval() {
    let Some(r) = runner() else { return };
    r.check().unwrap();
    for (name, metric) in [("humaneval", Metric::PassAtK1), ("mbpp", Metric::PassAt1)] {
        let rows = programs(name);
        let progs: Vec<String> = rows.iter().map(|x| x.0.clone()).collect();
        let runner = r.clone();
        let results = support::with_deadline(300, move || runner.run_all(&progs).unwrap());
        let mut samples = Vec::new();
        for (i, ((p, _, want), got)) in rows.iter().zip(&results).enumerate() {
            assert_eq!(got.passed, *want, "{name} row {i}: {}\n{p}", got.result);
            samples.push(Sample {
                doc: i,
                loglikelihoods: None,
                gold: None,
                pred: None,
                pred_norm: None,
                score: None,
                loglikelihood: None,
                words: None,
                bytes: None,
                tokens: None,
                completion: None,
                program: None,
                result: Some(got.result.clone()),
                passed: Some(got.passed),
            });
        }
        let m = aggregate(&[metric], &samples);
        let want = rows.iter().filter(|x| x.2).count() as f64 / rows.len() as f64;
        assert_eq!(m[0].value, want, "{name}");
    }
}

#[test]
fn hostile_programs_are_stopped_and_the_evaluation_goes_on() {
    let Some(r) = runner() else { return };
    let right = "def add(a, b):\n    return a + b\nassert add(2, 3) == 5";
    let hostile = [
        // Loops with the alarm ignored: killed at the wall clock.
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
        // The same, out of its process group and session, sleeping.
        "import os, signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nos.setsid()\ntime.sleep(60)",
        "import os, signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nos.setpgid(0, 0)\ntime.sleep(60)",
        // Unbounded allocation: the address-space limit.
        "x = bytearray(1 << 34)",
        "xs = []\nwhile True:\n    xs.append(' ' * (1 << 20))",
        // Forking past the guard (posix.fork is still there): the process limit, and
        // everything forked dies with the program.
        "import posix\nwhile True:\n    posix.fork()",
        // Writing outside its directory.
        "open('/etc/glass-hostile', 'w').write('x')",
        "open('/usr/glass-hostile', 'w').write('x')",
        // A socket to the internet and to the host's loopback.
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    ];
    for h in hostile {
        let got = run(&r, h);
        assert!(!got.passed, "{h}: {}", got.result);
        let next = run(&r, right);
        assert!(next.passed, "after {h}: {}", next.result);
    }
    assert!(!Path::new("/etc/glass-hostile").exists());
    assert!(!Path::new("/usr/glass-hostile").exists());
}
