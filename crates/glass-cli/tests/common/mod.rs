//! Running the real `glass` binary from the end-to-end tests.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `glass args` with extra environment variables and returns what it did.
pub fn glass_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glass"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("glass runs")
}

/// Runs `glass args` and returns what it did.
pub fn glass(args: &[&str]) -> Output {
    glass_env(args, &[])
}

/// Runs `glass args`, which must succeed; returns (stdout, stderr).
pub fn ok_output(args: &[&str]) -> (String, String) {
    let o = glass(args);
    assert!(
        o.status.success(),
        "glass {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `glass args`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    ok_output(args).0
}
