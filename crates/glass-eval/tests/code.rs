//! HumanEval and MBPP scoring as lm-evaluation-harness 0.4.13 + HF `evaluate`'s
//! `code_eval` do it: fixed completions (right, wrong, looping, exiting, forking,
//! deleting files, reading stdin, …) fed through Glass's path — the bundled YAML's
//! requests, the task's filter, `code_eval`'s concatenation — give the harness's programs
//! byte for byte, and, run in the sandbox, the harness's pass/fail for every one.
//! Hostile programs are stopped or refused and the evaluation goes on; no program can
//! forge its verdict or have anything of its own stored with it. Fixtures:
//! tools/fixtures/make_benchmark_fixtures.py (`code.json`). The tests that execute
//! programs need the sandbox (see tests/support/mod.rs for the SKIPPED convention).

use std::path::{Path, PathBuf};

use glass_eval::code::{program, CodeResult, CodeRunner, RESULT_CHARS};
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

/// Runs `program`; fails the test after 20 s or if a process of the run survives it.
fn run(r: &CodeRunner, program: &str) -> CodeResult {
    let (r, program) = (r.clone(), program.to_string());
    let ((result, ex), ended) = support::with_deadline(20, move || {
        (r.execute(&program).unwrap(), support::ticks_now())
    });
    support::assert_nothing_left(&ex, ended);
    assert!(
        result.result == "passed"
            || result.result == "timed out"
            || result.result.starts_with("failed: "),
        "{}",
        result.result
    );
    assert!(result.result.chars().count() <= RESULT_CHARS);
    assert!(
        !result.result.chars().any(char::is_control),
        "{:?}",
        result.result
    );
    result
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
                loglikelihoods_unconditional: None,
                pred_mutual_info: None,
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

/// Every candidate key or pad a program can find through gc, tried as the key: writes a
/// `passed` report under each on every descriptor, then exits.
const FORGE: &str = r#"
def forge():
    import gc, hashlib, posix
    seen = set()
    for o in gc.get_objects():
        for x in [o] + list(gc.get_referents(o)):
            if isinstance(x, (bytes, bytearray)) and 16 <= len(x) <= 128:
                seen.add(bytes(x))
    keys = set()
    for c in seen:
        keys.add(c[:32])
        keys.add(bytes(b ^ 0x36 for b in c)[:32])
        keys.add(bytes(b ^ 0x5C for b in c)[:32])
    msg = b"passed"
    out = b""
    for k in keys:
        block = k + bytes(64 - len(k))
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + msg).digest()
        tag = hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).digest()
        out += b"\x00glass-verdict\x00" + tag + len(msg).to_bytes(2, "big") + msg
    for fd in range(64):
        try:
            posix.write(fd, out)
        except OSError:
            pass
    posix._exit(0)
"#;

/// The verdict cannot be forged by what a failing program writes, how it exits, what it
/// does to descriptors, what it finds with `gc`, or what it rebinds: each of these fails.
#[test]
fn a_failing_program_cannot_forge_a_passing_verdict() {
    let Some(r) = runner() else { return };
    let forge = FORGE;
    let forged = [
        // The old marker on stderr, then a clean exit.
        "import os\nos.write(2, b'\\n@@glass-code-eval@@ passed')\nos._exit(0)\nassert False".to_string(),
        // Exiting cleanly before the tests run, in every way there is.
        "import os\nos._exit(0)\nassert False".into(),
        "import sys\nsys.exit(0)\nassert False".into(),
        "raise SystemExit\nassert False".into(),
        "raise SystemExit(0)".into(),
        "import os\nos.execv('/bin/true', ['true'])".into(),
        "import threading, posix\nthreading.Thread(target=lambda: posix._exit(0)).start()\nimport time\ntime.sleep(1)\nassert False".into(),
        // Closing or duplicating descriptors, scanning /proc/self/fd, writing fake
        // reports everywhere.
        "import posix\nfor fd in range(3, 64):\n    try:\n        posix.close(fd)\n    except OSError:\n        pass\nassert False".into(),
        "import os, posix\nfor fd in os.listdir('/proc/self/fd'):\n    try:\n        posix.write(int(fd), b'\\x00glass-verdict\\x00' + bytes(32) + b'\\x00\\x06passed')\n    except OSError:\n        pass\nposix._exit(0)".into(),
        // Intercepting the driver's own report (descriptor 4 swapped for a pipe of its
        // own) and relaying it with the text changed.
        "import posix, threading\nreal = posix.dup(4)\nr, w = posix.pipe()\nposix.dup2(w, 4)\ndef relay():\n    data = posix.read(r, 65536)\n    i = data.find(b'\\x00glass-verdict\\x00')\n    head = data[i:i + 15 + 32]\n    posix.write(real, head + (6).to_bytes(2, 'big') + b'passed')\n    posix._exit(0)\nthreading.Thread(target=relay, daemon=True).start()\nassert False".into(),
        // Searching memory through gc for the key, before and after the tests fail.
        format!("{forge}\nforge()\nassert False"),
        format!("{forge}\nclass E(Exception):\n    def __str__(self):\n        forge()\nraise E()"),
        format!("{forge}\nclass D:\n    def __del__(self):\n        forge()\nd = D()\nassert False"),
        format!("{forge}\nimport threading, time\ndef spin():\n    while True:\n        forge()\nthreading.Thread(target=spin, daemon=True).start()\ntime.sleep(0.2)\nassert False"),
        // Killing its parent, its namespace's init, everything it can.
        "import posix\nfor pid in (posix.getppid(), 1, -1):\n    try:\n        posix.kill(pid, 9)\n    except OSError:\n        pass\nassert False".into(),
        // Rebinding what the driver uses after the program: builtins, its globals,
        // library classes, the alarm's handler.
        "import builtins\nbuiltins.BaseException = KeyError\nbuiltins.len = lambda x: 0\nassert False".into(),
        "import __main__\n__main__.TimeoutException = AssertionError\n__main__.main = None\nassert False".into(),
        "import contextlib\ncontextlib._RedirectStream.__exit__ = lambda *a: True\nassert False".into(),
        "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nassert False".into(),
    ];
    for p in &forged {
        let got = run(&r, p);
        assert!(!got.passed, "forged a pass: {}\n{p}", got.result);
    }
    let right = "def add(a, b):\n    return a + b\nassert add(2, 3) == 5";
    assert!(run(&r, right).passed);
}

/// The gc search above is no straw man: against a driver that leaves its key where gc
/// lists it (one line added), the same search forges a pass.
#[test]
fn the_gc_search_forges_a_pass_from_a_key_left_in_reach() {
    if !support::ready() {
        return;
    }
    let key = [0x5au8; 32];
    let leaky = glass_eval::code::driver(&format!("{FORGE}\nforge()\nassert False")).replace(
        "    del key, chunk, block\n",
        "    globals()['LEAK'] = [key]\n    del key, chunk, block\n",
    );
    assert!(leaky.contains("LEAK"));
    let limits = CodeRunner::new(PY.into()).limits;
    let (ex, ended) = support::with_deadline(20, move || {
        let ex = glass_eval::sandbox::run_python_reporting(Path::new(PY), &leaky, &key, &limits)
            .unwrap();
        (ex, support::ticks_now())
    });
    support::assert_nothing_left(&ex, ended);
    assert_eq!(
        glass_eval::code::verdict(&ex.report, &key).as_deref(),
        Some("passed")
    );
}

/// Whatever a passing program writes after its tests, or however it floods descriptors,
/// its verdict is `passed`, nothing appended; failures are `code_eval`'s words, bounded.
#[test]
fn verdicts_are_bounded_and_nothing_the_program_writes_is_stored() {
    let Some(r) = runner() else { return };
    let passing = [
        // Output after the verdict would be written (the stream's flush hijacked).
        "import sys, posix\nf = sys.__stderr__.flush\nsys.__stderr__.flush = lambda: (f(), posix.write(2, b' <appended by the program>'))",
        "import posix\nposix.write(2, b'\\n@@glass-code-eval@@ failed: forged')",
        // Junk and fake reports on every descriptor, before and while the driver reports.
        "import posix, threading\ndef junk():\n    while True:\n        for fd in range(64):\n            try:\n                posix.write(fd, b'\\x00glass-verdict\\x00' + bytes(40) + b'junk')\n            except OSError:\n                pass\nthreading.Thread(target=junk, daemon=True).start()",
        "print('x' * 100000)",
    ];
    for p in passing {
        let got = run(&r, p);
        assert_eq!(got.result, "passed", "{p}");
        assert!(got.passed);
    }
    for (p, want) in [
        ("assert False, 'nope'", "failed: nope"),
        ("assert False", "failed: "),
        ("import sys\nsys.exit(0)", "failed: 0"),
        ("raise ValueError('a\\nb\\x1b[31m')", "failed: a b [31m"),
        ("while True:\n    pass", "timed out"),
        ("import os\nos._exit(0)", "timed out"),
    ] {
        assert_eq!(run(&r, p).result, want, "{p}");
    }
    let long = run(&r, "raise ValueError('x' * 100000)");
    assert_eq!(long.result.chars().count(), RESULT_CHARS);
    assert!(long.result.starts_with("failed: xxx"));
}
