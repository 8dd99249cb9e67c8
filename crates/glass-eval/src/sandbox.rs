//! Running untrusted generated code (HumanEval / MBPP programs) in a sandbox built from
//! what Linux gives, with no helper binary: the child process, between `fork` and
//! `exec`, enters new mount, network, IPC and UTS namespaces, makes every mount
//! read-only (`mount_setattr(AT_RECURSIVE)`) except a bind mount of its own scratch
//! directory, sets resource limits (address space, CPU seconds, processes, file size,
//! open files, no core dumps), drops to the unprivileged user `nobody` (so the process
//! limit applies and nothing owned by others is writable) with `no_new_privs`, and runs
//! as PID 1 of a new PID namespace in its own session: at the wall-clock limit the
//! session is killed, and with the namespace's first process everything it forked dies.
//! The new network namespace has only a loopback interface that is down: no socket can
//! reach anything. Why not `bwrap`/`nsjail`: they would be one more system package for
//! every user; the handful of system calls below give the same isolation.
//!
//! Setting up namespaces and dropping to `nobody` needs root (as in CI and the usual
//! evaluation container); elsewhere [`run_python`] refuses with an error saying so,
//! rather than run code unconfined.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::EvalError;

/// Resource limits of one execution.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall clock.
    pub wall: Duration,
    /// Address space (RLIMIT_AS), bytes.
    pub memory_bytes: u64,
    /// CPU seconds (RLIMIT_CPU).
    pub cpu_seconds: u64,
    /// Processes of the sandbox user (RLIMIT_NPROC).
    pub processes: u64,
    /// Largest file it may write (RLIMIT_FSIZE), bytes.
    pub file_bytes: u64,
}

impl Default for Limits {
    /// The harness's `code_eval` gives each program 3 s; memory 1 GiB.
    fn default() -> Limits {
        Limits {
            wall: Duration::from_secs(3),
            memory_bytes: 1 << 30,
            cpu_seconds: 10,
            processes: 64,
            file_bytes: 16 << 20,
        }
    }
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0: every test passed.
    Passed,
    /// Non-zero exit or killed by a signal (assertion, exception, memory limit).
    Failed,
    /// Killed at the wall-clock limit.
    TimedOut,
}

/// One execution.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Execution {
    /// Outcome.
    pub outcome: Outcome,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// The last bytes of its stderr (at most 4 KiB).
    pub stderr_tail: String,
    /// Wall seconds.
    pub seconds: f64,
}

/// The sandbox user and group (`nobody` / `nogroup`).
const NOBODY: u32 = 65534;
const CAPTURE: usize = 4096;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn cstr(p: &Path) -> Result<std::ffi::CString, EvalError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| EvalError::Invalid(format!("{}: path contains NUL", p.display())))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EvalError + '_ {
    move |e| EvalError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Whether this process can build the sandbox (it runs as root).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `program` with `python` (e.g. `/usr/bin/python3`) in a fresh scratch directory
/// created under `scratch_parent`, removed afterwards.
pub fn run_python(
    python: &Path,
    program: &str,
    scratch_parent: &Path,
    limits: &Limits,
) -> Result<Execution, EvalError> {
    if !available() {
        return Err(EvalError::Invalid(
            "executing generated code needs root: the sandbox uses mount/network namespaces, read-only mounts and drops to user nobody; run glass eval as root (e.g. in a container)".into(),
        ));
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch: PathBuf = scratch_parent.join(format!("glass-sandbox-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = run_in(python, program, &scratch, limits);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run_in(
    python: &Path,
    program: &str,
    scratch: &Path,
    limits: &Limits,
) -> Result<Execution, EvalError> {
    let prog = scratch.join("program.py");
    std::fs::write(&prog, program).map_err(io(&prog))?;
    for p in [scratch, prog.as_path()] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).map_err(io(p))?;
    }
    let scratch_c = cstr(scratch)?;
    let root_c = std::ffi::CString::new("/").expect("no NUL");
    let lim = limits.clone();
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-B", "program.py"])
        .current_dir(scratch)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", scratch)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe system calls on data prepared before the fork (no allocation,
    // no locks); every failure is returned as an io::Error, which makes spawn fail.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_long| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setsid() as libc::c_long)?;
            check(libc::unshare(
                libc::CLONE_NEWNS
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWPID,
            ) as libc::c_long)?;
            check(libc::mount(
                std::ptr::null(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as libc::c_long)?;
            check(libc::mount(
                scratch_c.as_ptr(),
                scratch_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) as libc::c_long)?;
            let ro = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                root_c.as_ptr(),
                AT_RECURSIVE,
                &ro as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ))?;
            let rw = MountAttr {
                attr_set: 0,
                attr_clr: MOUNT_ATTR_RDONLY,
                propagation: 0,
                userns_fd: 0,
            };
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                scratch_c.as_ptr(),
                0u32,
                &rw as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ))?;
            check(libc::chdir(scratch_c.as_ptr()) as libc::c_long)?;
            // The program becomes PID 1 of the new PID namespace: when it dies, the
            // kernel kills everything it started, whatever session or group those
            // joined. This process only waits for it and exits with its status.
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid > 0 {
                // Close the spawner's exec-status pipe (and every other inherited
                // descriptor but stdio) here, or `spawn` would wait for this process,
                // which never execs, to exit.
                libc::syscall(libc::SYS_close_range, 3u32, libc::c_uint::MAX, 0u32);
                let mut status: libc::c_int = 0;
                while libc::waitpid(pid, &mut status, 0) < 0 {}
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                libc::_exit(code);
            }
            for (res, v) in [
                (libc::RLIMIT_AS, lim.memory_bytes),
                (libc::RLIMIT_CPU, lim.cpu_seconds),
                (libc::RLIMIT_NPROC, lim.processes),
                (libc::RLIMIT_FSIZE, lim.file_bytes),
                (libc::RLIMIT_NOFILE, 64),
                (libc::RLIMIT_CORE, 0),
            ] {
                let r = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                check(libc::setrlimit(res, &r) as libc::c_long)?;
            }
            check(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
            check(libc::setgid(NOBODY) as libc::c_long)?;
            check(libc::setuid(NOBODY) as libc::c_long)?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        EvalError::Invalid(format!(
            "could not start the sandboxed program with {}: {e}",
            python.display()
        ))
    })?;
    let pid = child.id() as libc::pid_t;
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * CAPTURE {
                tail.drain(..tail.len() - CAPTURE);
            }
        }
        tail
    });
    let kill_group = || {
        // SAFETY: kill has no memory-safety preconditions; the child leads its own
        // session and process group (setsid), so -pid names only the sandboxed programs.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    };
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io(scratch))? {
            break s;
        }
        if t0.elapsed() >= limits.wall {
            timed_out = true;
            kill_group();
            break child.wait().map_err(io(scratch))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Whatever it forked dies with it.
    kill_group();
    let seconds = t0.elapsed().as_secs_f64();
    let tail = reader.join().unwrap_or_default();
    let start = tail.len().saturating_sub(CAPTURE);
    use std::os::unix::process::ExitStatusExt;
    let outcome = if timed_out {
        Outcome::TimedOut
    } else if status.code() == Some(0) {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    Ok(Execution {
        outcome,
        exit_code: status.code(),
        signal: status.signal(),
        stderr_tail: String::from_utf8_lossy(&tail[start..]).into_owned(),
        seconds,
    })
}
