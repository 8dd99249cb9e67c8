//! Shared by the tests that execute code in the sandbox: the skip convention, deadlines,
//! and the check that nothing of a run is left.
//!
//! **Skipping.** A test that cannot build the sandbox here (no root and no user
//! namespaces, or no /usr/bin/python3) prints `SKIPPED: <why>` and *fails*, unless
//! `GLASS_ALLOW_SANDBOX_SKIP=1` is set (see docs/threat-model.md). CI sets nothing, so
//! these tests run for real there.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glass_eval::sandbox::{Execution, Mode};

pub const PY: &str = "/usr/bin/python3";
pub const ALLOW_SKIP: &str = "GLASS_ALLOW_SANDBOX_SKIP";

/// Whether the sandbox can run Python here; otherwise SKIPPED, which fails unless
/// allowed.
pub fn ready() -> bool {
    let why = match glass_eval::sandbox::mode() {
        Err(e) => e.to_string(),
        Ok(_) if !Path::new(PY).exists() => format!("{PY} does not exist"),
        Ok(_) => return true,
    };
    skip(&why)
}

/// Reports a skip loudly; panics unless `GLASS_ALLOW_SANDBOX_SKIP=1`.
pub fn skip(why: &str) -> bool {
    // Straight to the descriptor: the test harness does not capture it, so the skip is
    // seen even when the test is allowed to pass.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n********\nSKIPPED: {why}\n********\n");
    if std::env::var(ALLOW_SKIP).as_deref() == Ok("1") {
        return false;
    }
    panic!("SKIPPED counts as a failure: {why} (set {ALLOW_SKIP}=1 to allow it on a machine that cannot build the sandbox)");
}

/// Runs `f` on its own thread and fails if it has not finished after `secs` seconds.
pub fn with_deadline<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("did not finish within {secs} s"),
    }
}

/// The boot clock in ticks (as /proc/PID/stat counts a process's start); take it right
/// after a run returns, for [`assert_nothing_left`].
pub fn ticks_now() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (secs * hz) as u64
}

/// When process `pid` started, in boot-clock ticks.
fn started(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Processes of this execution still alive: any in its PID namespace, and as root any
/// with its uid (unique to the run), that started before the run returned at `ended`
/// (a namespace's inode number and a pid, so that uid, are reused once free: later
/// runs of concurrent tests are not this one's).
pub fn leftovers(ex: &Execution, ended: u64) -> Vec<String> {
    let mut left = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return left;
    };
    for d in dir.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let status = std::fs::read_to_string(d.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        let in_ns = ex.pid_namespace != 0
            && std::fs::metadata(d.path().join("ns/pid"))
                .is_ok_and(|m| m.ino() == ex.pid_namespace);
        let by_uid = ex.mode == Mode::Root && uid == Some(ex.uid);
        let before = started(&name).is_some_and(|t| t + 1 < ended);
        if (in_ns || by_uid) && before {
            let cmd = std::fs::read(d.path().join("cmdline")).unwrap_or_default();
            left.push(format!(
                "pid {name} uid {uid:?}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    left
}

/// Asserts that nothing of `ex` is alive (checked at once: the sandbox returns only
/// after its PID namespace is empty); `ended` is [`ticks_now`] when it returned.
pub fn assert_nothing_left(ex: &Execution, ended: u64) {
    let left = leftovers(ex, ended);
    assert!(
        left.is_empty(),
        "processes of the run survived it: {left:?}"
    );
}

/// Pids whose command line is exactly `argv`.
pub fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                    (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs this test binary again as user `nobody` (uid and gid 65534), copied where that
/// user can execute it, with `args` for the test harness; returns (success, output).
/// Fails the calling test after `secs` seconds.
pub fn rerun_as_nobody(args: &[&str], secs: u64) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .uid(65534)
        .gid(65534);
    if let Ok(v) = std::env::var(ALLOW_SKIP) {
        cmd.env(ALLOW_SKIP, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the unprivileged run did not finish within {secs} s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}
