//! One command-line convention everywhere: every option that names checkpoints takes
//! `latest` (and every `--checkpoints` list takes `all`, `latest` and indices), and
//! every output file may be given as a bare relative name.
//!
//! The test walks `glass --help` and every subcommand's `--help`, collects each option
//! whose name says it selects checkpoints, and runs that command with `latest` on a small
//! trained run. A command whose checkpoint option has no invocation below fails the test,
//! so a new command cannot skip the convention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{ok, p, small_run};

/// The subcommands listed in a `--help` text's "Commands:" section (`help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The long options of a `--help` text that take a value selecting checkpoints (flags
/// such as `glass metrics --checkpoints`, which takes none, are not selections).
fn checkpoint_options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let (opt, rest) = l.trim_start().strip_prefix("--")?.split_once(' ')?;
            let takes_value = rest.starts_with('<');
            (takes_value && (opt.contains("checkpoint") || opt == "replay"))
                .then(|| format!("--{opt}"))
        })
        .collect()
}

fn help_of(path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    ok(&args)
}

/// Every leaf command path with the checkpoint options it has.
fn walk() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let help = help_of(&path);
        let subs = subcommands(&help);
        if !path.is_empty() {
            let opts = checkpoint_options(&help);
            if !opts.is_empty() {
                out.insert(path.join(" "), opts);
            }
        }
        for s in subs {
            let mut next = path.clone();
            next.push(s);
            todo.push(next);
        }
    }
    out
}

/// Runs glass in `cwd`; it must succeed. Returns (stdout, stderr).
fn run_in(cwd: &Path, args: &[String]) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_glass"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "glass {args:?} failed:\n{out}\n{err}");
    (out, err)
}

#[test]
fn every_checkpoint_option_takes_latest_and_outputs_take_relative_names() {
    let dir = tempfile::tempdir().unwrap();
    let run = small_run(&dir.path().join("run"), &[]);
    ok(&["train", &p(&run), "--quiet"]);
    ok(&["index", &p(&run), "--quiet"]);
    let r = p(&run);
    let llm360 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm360-mini");
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };

    // One invocation per (command, option), with `latest` where the option goes; run in
    // `dir`, so bare names below are relative output paths.
    let mut cases: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let branch = p(&at("branch"));
    cases.insert(
        ("init", "--checkpoint"),
        s(&["init", &branch, "--from", &r, "--checkpoint", "latest"]),
    );
    cases.insert(
        ("train", "--checkpoint"),
        s(&[
            "train",
            &branch,
            "--from",
            &r,
            "--checkpoint",
            "latest",
            "--continue",
            "--quiet",
        ]),
    );
    cases.insert(
        ("bench model", "--checkpoint"),
        s(&[
            "bench",
            "model",
            &r,
            "--checkpoint",
            "latest",
            "--rows",
            "1",
            "--prompt",
            "2",
            "--new-tokens",
            "1",
            "--thread-counts",
            "1",
        ]),
    );
    cases.insert(
        ("verify", "--replay"),
        s(&["verify", &r, "--replay", "latest"]),
    );
    cases.insert(
        ("inspect", "--checkpoint"),
        s(&["inspect", &r, "--checkpoint", "latest", "--prompt", "the"]),
    );
    cases.insert(
        ("inspect", "--checkpoints"),
        s(&[
            "inspect",
            &r,
            "--checkpoints",
            "latest",
            "--prompt",
            "the",
            "--json",
        ]),
    );
    cases.insert(
        ("analyze dynamics", "--checkpoints"),
        s(&[
            "analyze",
            "dynamics",
            &r,
            "--checkpoints",
            "latest",
            "--quiet",
        ]),
    );
    cases.insert(
        ("eval", "--checkpoints"),
        s(&[
            "eval",
            &r,
            "--checkpoints",
            "latest",
            "--tasks",
            "glass_heldout",
            "--limit",
            "1",
            "--quiet",
        ]),
    );
    cases.insert(
        ("generate", "--checkpoint"),
        s(&[
            "generate",
            &r,
            "--checkpoint",
            "latest",
            "--prompt",
            "To be",
            "--max-tokens",
            "2",
            "--logits-out",
            "logits.json",
        ]),
    );
    cases.insert(
        ("export hf", "--checkpoint"),
        s(&["export", "hf", &r, "exported", "--checkpoint", "latest"]),
    );
    cases.insert(
        ("trace", "--checkpoint"),
        s(&["trace", &r, "--count", "the", "--checkpoint", "latest"]),
    );
    for opt in ["--checkpoints", "--chunks"] {
        cases.insert(
            ("analyze memorization", opt),
            s(&[
                "analyze",
                "memorization",
                &r,
                opt,
                "latest",
                "--samples",
                "2",
                "--prompt-tokens",
                "4",
                "--continuation-tokens",
                "4",
                "--quiet",
            ]),
        );
    }
    cases.insert(
        ("release", "--checkpoints"),
        s(&["release", &r, "released", "--checkpoints", "latest"]),
    );
    cases.insert(
        ("import llm360", "--select-checkpoints"),
        s(&[
            "import",
            "llm360",
            "--data",
            &p(&llm360.join("data")),
            "--checkpoints",
            &p(&llm360.join("checkpoints")),
            "--rows-per-step",
            "4",
            "--select-checkpoints",
            "latest",
            "imported",
        ]),
    );

    let found = walk();
    // The walk must see the commands the convention is about (a broken help parser would
    // otherwise make this test vacuous).
    for must in [
        "eval",
        "generate",
        "export hf",
        "trace",
        "analyze memorization",
        "release",
    ] {
        assert!(
            found.contains_key(must),
            "no checkpoint option found for `{must}`: {found:?}"
        );
    }
    let mut tried = 0;
    for (cmd, opts) in &found {
        for opt in opts {
            if ["import llm360", "import pythia", "import olmo"].contains(&cmd.as_str())
                && opt == "--checkpoints"
            {
                continue; // a folder of the release's checkpoints, not a selection
            }
            let args = cases
                .get(&(cmd.as_str(), opt.as_str()))
                .unwrap_or_else(|| panic!("`glass {cmd} {opt}` has no invocation in this test; add one that passes `latest`"));
            assert!(args.iter().any(|a| a == "latest"), "{cmd} {opt}");
            let (_, err) = run_in(dir.path(), args);
            assert!(!err.contains("invalid digit"), "{cmd} {opt}: {err}");
            tried += 1;
        }
    }
    assert!(tried >= 10, "only {tried} checkpoint options tried");

    // Relative outputs landed where the user was, complete.
    let logits: serde_json::Value =
        serde_json::from_slice(&std::fs::read(at("logits.json")).unwrap()).unwrap();
    assert!(logits["logits"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(at("exported/config.json").is_file());
    assert!(at("released/manifest.json").is_file());
    assert!(at("imported/manifest.json").is_file());
}

/// A checkpoint option given something else says what it takes, on every command.
#[test]
fn a_bad_checkpoint_value_names_what_is_accepted() {
    for args in [
        vec!["generate", "r", "--prompt", "x", "--checkpoint", "newest"],
        vec!["export", "hf", "r", "o", "--checkpoint", "-1"],
        vec!["trace", "r", "--count", "x", "--checkpoint", "1.5"],
        vec!["eval", "r", "--checkpoints", "1,x"],
        vec!["release", "r", "o", "--checkpoints", "first"],
        vec!["verify", "r", "--replay", "last"],
    ] {
        let o = common::glass(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("latest"), "{args:?}: {err}");
        assert!(!err.contains("invalid digit"), "{args:?}: {err}");
    }
}
