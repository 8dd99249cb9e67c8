//! The code-execution sandbox: generated programs that loop forever, leave their process
//! group, allocate without bound, fork without end, write outside their directory, look
//! at the host or open a socket are stopped or refused; nothing of a run outlives it (or
//! Glass); a fork bomb does not fail the programs running beside it; the next program
//! runs normally. As root the tests also run themselves again as `nobody`, so that both
//! modes (root, user namespace) are exercised. Needs /usr/bin/python3 and either root or
//! unprivileged user namespaces; elsewhere each test prints SKIPPED and fails unless
//! GLASS_ALLOW_SANDBOX_SKIP=1 (see docs/threat-model.md).

use std::path::Path;
use std::time::Duration;

use glass_eval::sandbox::{run_python, Execution, Limits, Mode, Outcome};

mod support;
use support::{assert_nothing_left, ready, ticks_now, with_deadline, PY};

/// A generous wall clock, so that a loaded machine does not turn a verdict into a
/// timeout; the tests about the wall clock set theirs.
fn limits() -> Limits {
    Limits {
        wall: Duration::from_secs(10),
        memory_bytes: 512 << 20,
        ..Limits::default()
    }
}

fn three_seconds() -> Limits {
    Limits {
        wall: Duration::from_secs(3),
        ..limits()
    }
}

/// Runs `program`; fails the test if that takes more than 20 s or leaves a process.
fn run_with(program: &str, limits: Limits) -> Execution {
    let program = program.to_string();
    let (ex, ended) = with_deadline(20, move || {
        let ex = run_python(Path::new(PY), &program, &limits).unwrap();
        (ex, ticks_now())
    });
    assert_nothing_left(&ex, ended);
    ex
}

fn run(program: &str) -> Execution {
    run_with(program, limits())
}

/// The check every test runs after a run does see live processes: pointed at this test's
/// own PID namespace and uid, it finds this test.
#[test]
fn the_leftover_check_sees_live_processes() {
    use std::os::unix::fs::MetadataExt;
    let me = Execution {
        outcome: Outcome::Passed,
        exit_code: Some(0),
        signal: None,
        stderr_tail: String::new(),
        report: Vec::new(),
        seconds: 0.0,
        mode: Mode::Root,
        // SAFETY: getuid has no preconditions.
        uid: unsafe { libc::getuid() },
        pid_namespace: std::fs::metadata("/proc/self/ns/pid").unwrap().ino(),
    };
    std::thread::sleep(Duration::from_millis(50));
    let left = support::leftovers(&me, ticks_now());
    let pid = format!("pid {} ", std::process::id());
    assert!(left.iter().any(|l| l.starts_with(&pid)), "{left:?}");
}

#[test]
fn passing_and_failing_programs() {
    if !ready() {
        return;
    }
    assert_eq!(
        run("def f(x):\n    return x + 1\nassert f(1) == 2\n").outcome,
        Outcome::Passed
    );
    let e = run("assert 1 == 2, 'nope'\n");
    assert_eq!(e.outcome, Outcome::Failed);
    assert!(e.stderr_tail.contains("nope"), "{}", e.stderr_tail);
}

#[test]
fn an_infinite_loop_is_killed_at_the_wall_clock_limit() {
    if !ready() {
        return;
    }
    let e = run_with("while True:\n    pass\n", three_seconds());
    assert_eq!(e.outcome, Outcome::TimedOut);
    assert!(e.seconds < 6.0, "{}", e.seconds);
    assert_eq!(run("assert True\n").outcome, Outcome::Passed);
}

/// A program that leaves its process group or session, ignores the signals it can and
/// sleeps is killed at the limit with everything it started; one that leaves a daemon
/// behind ends when it exits, and the daemon with it.
#[test]
fn a_program_that_leaves_its_process_group_is_killed_with_everything_it_started() {
    if !ready() {
        return;
    }
    for escape in ["os.setsid()", "os.setpgid(0, 0)"] {
        let program = format!(
            "import os, signal, time\nfor s in (signal.SIGALRM, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n    signal.signal(s, signal.SIG_IGN)\n{escape}\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ntime.sleep(60)\n"
        );
        let e = run_with(&program, three_seconds());
        assert_eq!(e.outcome, Outcome::TimedOut, "{escape}: {e:?}");
        assert!(e.seconds < 6.0, "{escape}: {}", e.seconds);
    }
    let daemon = "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n";
    let e = run(daemon);
    assert_eq!(e.outcome, Outcome::Passed, "{e:?}");
    assert!(e.seconds < 5.0, "{}", e.seconds);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    if !ready() {
        return;
    }
    let e = run("x = []\nwhile True:\n    x.append(bytearray(64 << 20))\n");
    assert_eq!(e.outcome, Outcome::Failed, "{e:?}");
    assert!(e.stderr_tail.contains("MemoryError"), "{}", e.stderr_tail);
}

#[test]
fn a_fork_bomb_is_contained_and_cleaned_up() {
    if !ready() {
        return;
    }
    let e = run_with(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        three_seconds(),
    );
    assert_ne!(e.outcome, Outcome::Passed);
    assert_eq!(run("assert True\n").outcome, Outcome::Passed);
}

/// Each run has a process budget of its own: a bomb that holds all of its budget does
/// not stop programs running beside it from starting or forking.
#[test]
fn a_fork_bomb_does_not_fail_programs_running_beside_it() {
    if !ready() {
        return;
    }
    let bomb = std::thread::spawn(|| {
        run_with(
            "import posix, time\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        time.sleep(5)\n",
            Limits {
                wall: Duration::from_secs(12),
                ..limits()
            },
        )
    });
    // Let it reach its limit.
    std::thread::sleep(Duration::from_millis(2000));
    let neighbour = "import posix\nkids = []\nfor _ in range(8):\n    pid = posix.fork()\n    if pid == 0:\n        posix._exit(0)\n    kids.append(pid)\nfor pid in kids:\n    posix.waitpid(pid, 0)\n";
    let others: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || run(neighbour)))
        .collect();
    for o in others {
        let e = o.join().unwrap();
        assert_eq!(e.outcome, Outcome::Passed, "{e:?}");
    }
    let b = bomb.join().unwrap();
    assert_eq!(b.outcome, Outcome::TimedOut, "{b:?}");
}

/// The program sees a PID namespace of its own (no host process), an empty `/tmp` of its
/// own, empty home directories and `/run`, and its own host name.
#[test]
fn host_processes_and_directories_are_hidden() {
    if !ready() {
        return;
    }
    let e = run("import os, socket\nme = str(os.getpid())\nseen = sorted(p for p in os.listdir('/proc') if p.isdigit())\nassert seen in ([], [me]), seen\nfor d in ['/home', '/root', '/run', '/tmp', '/var/tmp', '/dev/shm']:\n    if os.path.isdir(d):\n        assert os.listdir(d) == [], (d, os.listdir(d)[:5])\nassert socket.gethostname() == 'sandbox', socket.gethostname()\n");
    assert_eq!(e.outcome, Outcome::Passed, "{}", e.stderr_tail);
}

#[test]
fn writing_outside_the_scratch_directory_is_refused() {
    if !ready() {
        return;
    }
    let outside = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("glass-sandbox-escape-{}", std::process::id()));
    let marker = format!("glass-sandbox-inside-{}", std::process::id());
    let program = format!(
        "open('inside.txt', 'w').write('ok')\nopen('/tmp/{marker}', 'w').write('ok')\nfor p in [{:?}, '/etc/x', '/root/x', '/home/x', '/usr/x', '/var/x', '/dev/shm/x']:\n    try:\n        open(p, 'w').write('escaped')\n    except OSError:\n        pass\n    else:\n        raise SystemExit('wrote ' + p)\n",
        outside.display().to_string()
    );
    let e = run(&program);
    assert_eq!(e.outcome, Outcome::Passed, "{}", e.stderr_tail);
    assert!(!outside.exists());
    // Its /tmp was its own.
    assert!(!std::env::temp_dir().join(&marker).exists());
    assert!(!Path::new("/tmp").join(&marker).exists());
}

#[test]
fn sockets_reach_nothing() {
    if !ready() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let program = format!(
        "import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 80)]:\n    s = socket.socket()\n    s.settimeout(1)\n    try:\n        s.connect(addr)\n    except OSError:\n        pass\n    else:\n        raise SystemExit('connected to %s' % (addr,))\n"
    );
    let e = run(&program);
    assert_eq!(e.outcome, Outcome::Passed, "{}", e.stderr_tail);
}

const ORPHAN: &str = "GLASS_SANDBOX_TEST_ORPHAN";

/// When Glass is killed mid-run (SIGKILL: no cleanup of its own runs), the sandbox dies
/// with it: no process of the program survives, no scratch directory is left.
#[test]
fn a_sandbox_dies_with_glass() {
    if let Ok(tag) = std::env::var(ORPHAN) {
        // The role of the Glass that gets killed: a program that turns into a process
        // easy to find, and sleeps past any limit the test waits for.
        let program = format!("import os\nos.execv('/bin/sleep', ['sleep', '{tag}'])\n");
        let _ = run_python(
            Path::new(PY),
            &program,
            &Limits {
                wall: Duration::from_secs(60),
                ..limits()
            },
        );
        return;
    }
    if !ready() {
        return;
    }
    let tag = format!("3141.{}", std::process::id());
    let mut glass = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_sandbox_dies_with_glass", "--nocapture"])
        .env(ORPHAN, &tag)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let glass_pid = glass.id();
    let started = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !support::processes_running(&["sleep", &tag]).is_empty()
    });
    glass.kill().unwrap();
    glass.wait().unwrap();
    assert!(started, "the sandboxed program did not start");
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        support::processes_running(&["sleep", &tag]).is_empty()
    });
    let left = support::processes_running(&["sleep", &tag]);
    for pid in &left {
        // SAFETY: kill has no memory-safety preconditions; cleaning up after a failure.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(gone, "the program outlived Glass: {left:?}");
    let scratch: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(&format!("glass-sandbox-{glass_pid}-"))
        })
        .map(|d| d.path())
        .collect();
    assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
}

/// As root, everything above again as `nobody`, where the sandbox is built in a user
/// namespace; run unprivileged, the tests above already are in that mode.
#[test]
fn the_sandbox_works_unprivileged() {
    if !ready() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert_eq!(glass_eval::sandbox::mode().unwrap(), Mode::UserNamespace);
        return;
    }
    assert_eq!(glass_eval::sandbox::mode().unwrap(), Mode::Root);
    let (ok, out) = support::rerun_as_nobody(
        &[
            "--skip",
            "the_sandbox_works_unprivileged",
            "--test-threads",
            "2",
        ],
        240,
    );
    assert!(ok, "{out}");
    assert!(!out.contains("SKIPPED"), "{out}");
    assert!(out.contains("test result: ok. 11 passed"), "{out}");
}
