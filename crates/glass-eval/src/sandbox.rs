//! Running untrusted generated code (HumanEval / MBPP programs) in a sandbox built from
//! what Linux gives, with no helper binary (`bwrap` or `nsjail` would be one more system
//! package for every user; the handful of system calls below give the same isolation).
//!
//! **Shape.** The calling thread `clone`s a process *I* straight into new PID, mount,
//! network, IPC, UTS and cgroup namespaces (and a new user namespace when Glass is not
//! root). *I* is PID 1 of its namespace and runs only Glass's own code, never the
//! program: it waits for Glass to map its ids, builds the file system view, forks the
//! program *P* (which drops every privilege and `exec`s the interpreter), and waits for
//! it. Everything the program starts lives in that PID namespace, whatever session or
//! process group it moves to, and the kernel kills all of it when *I* exits. So:
//!
//! * **Nothing outlives a run.** Glass holds *I* as its own unreaped child (and a pidfd
//!   on it): at the wall-clock limit it sends *I* `SIGKILL`, which no process inside can
//!   block or escape, and `waitpid` on *I* returns only once the namespace is empty
//!   (`zap_pid_ns_processes`). *I* also dies with the thread that spawned it
//!   (`PR_SET_PDEATHSIG`), and ends itself one second after the limit even if Glass
//!   stopped watching. Glass never reads a pipe without a deadline: every pipe is read
//!   non-blocking from one `poll` loop bounded by the limit.
//! * **No scratch directory on the host.** The program's writable directory is a
//!   size-limited tmpfs mounted on `/tmp` inside the mount namespace; it disappears with
//!   the namespace. The script reaches the interpreter through a sealed memfd on stdin.
//! * **File system.** Every mount is read-only, `nosuid`, `nodev`; `/tmp` is the only
//!   writable place (`noexec`). `/proc` is a fresh procfs of the sandbox's PID
//!   namespace (`hidepid=invisible`, `subset=pid` where the kernel has them, else an empty
//!   tmpfs), so host processes are invisible. `/home`, `/root`, `/run`, `/var/tmp`,
//!   `/dev/shm`, `/mnt`, `/media` and `/srv` are covered by empty read-only tmpfs (unless
//!   the interpreter lives there): no home directories, no host sockets (`/run`), no
//!   other programs' temporary files.
//! * **Network.** The new network namespace has only a loopback interface that is down.
//! * **Identity and limits.** *P* sets `RLIMIT_AS`, `RLIMIT_CPU`, `RLIMIT_NPROC`,
//!   `RLIMIT_FSIZE`, `RLIMIT_NOFILE` and no core dumps, clears the capability bounding
//!   set, switches user and group, drops every capability and sets `no_new_privs`.
//!   `RLIMIT_NPROC` counts the processes of one user (in one user namespace), so every
//!   run gets a user of its own: as root, the uid [`ROOT_MODE_UID_BASE`] + *I*'s pid
//!   (unique among live processes, and no other process runs under it); without root, a
//!   user namespace of its own, in which the kernel (5.14 and later) counts processes
//!   separately. A fork bomb in one run cannot exhaust the process budget of another.
//!
//! **Modes.** As root ([`Mode::Root`]), no user namespace is needed. Otherwise
//! ([`Mode::UserNamespace`]) the program runs as `nobody` (65534) inside a user namespace
//! that maps it to the caller's own uid and gid (the only mapping an unprivileged process
//! may write); it keeps the caller's supplementary groups (the kernel requires
//! `setgroups` to be denied for that mapping), which is why home directories and `/run`
//! are hidden. Where neither works (no root and user namespaces disabled, or a container
//! that forbids namespaces), [`mode`] says why and nothing runs.
//!
//! Between `clone` and `exec` only async-signal-safe system calls run (no allocation, no
//! locks, no panics): the parent is multi-threaded and its copied locks may be held.
//! Everything the child needs is prepared before the `clone`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_long, c_ulong};

use crate::EvalError;

/// Resource limits of one execution.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall clock.
    pub wall: Duration,
    /// Address space (RLIMIT_AS) of each process, bytes.
    pub memory_bytes: u64,
    /// CPU seconds (RLIMIT_CPU) of each process.
    pub cpu_seconds: u64,
    /// Processes and threads of the run (RLIMIT_NPROC, counted for the run's own user).
    pub processes: u64,
    /// Largest file it may write (RLIMIT_FSIZE), bytes.
    pub file_bytes: u64,
    /// Size of its writable `/tmp` (tmpfs), bytes.
    pub scratch_bytes: u64,
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
            scratch_bytes: 64 << 20,
        }
    }
}

/// How the sandbox gets its privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Glass runs as root: namespaces without a user namespace; the program runs under
    /// a uid of its own, [`ROOT_MODE_UID_BASE`] + the pid of the namespace's init.
    Root,
    /// Glass is unprivileged: a user namespace per run, mapping the caller's uid and gid
    /// to `nobody` inside.
    UserNamespace,
}

/// How the sandboxed process ended (its exit status as the namespace's init saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0.
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
    /// The last bytes of its stderr (at most 4 KiB); written by the program, so only for
    /// diagnostics.
    pub stderr_tail: String,
    /// What was written on descriptor 4 (at most [`REPORT_BYTES`]), for
    /// [`run_python_reporting`]; empty otherwise.
    #[serde(skip)]
    pub report: Vec<u8>,
    /// Wall seconds.
    pub seconds: f64,
    /// How the sandbox was built.
    pub mode: Mode,
    /// The uid the program's processes had on the host.
    pub uid: u32,
    /// The inode of the run's PID namespace (as `/proc/PID/ns/pid` shows it), so that a
    /// check can confirm that nothing is left in it.
    pub pid_namespace: u64,
}

/// Root mode's first sandbox uid; a run uses this + the host pid of its namespace's init.
pub const ROOT_MODE_UID_BASE: u32 = 0x7000_0000;
/// Most bytes kept of descriptor 4 ([`Execution::report`]).
pub const REPORT_BYTES: usize = 64 << 10;
/// The program's uid and gid inside a user namespace ([`Mode::UserNamespace`]).
const INSIDE_ID: u32 = 65534;
const STDERR_BYTES: usize = 4096;
/// Directories covered by an empty read-only tmpfs inside the sandbox.
const HIDDEN: [&str; 8] = [
    "/home", "/root", "/run", "/var/tmp", "/dev/shm", "/mnt", "/media", "/srv",
];

/// Descriptors inside: 0 stdin (the script), 1 stdout (/dev/null), 2 stderr, 3 the
/// secret, 4 the report, 5 status of the setup (close-on-exec), 6 the id handshake.
const FD_STATUS: c_int = 5;
const FD_SYNC: c_int = 6;
const FDS: usize = 7;

/// Status messages on descriptor 5: (kind, value), 8 bytes each.
const ST_EXEC: u32 = 100;
const ST_EXITED: u32 = 200;
const ST_INIT_DEADLINE: u32 = 201;
const ST_READY: u32 = 300;

/// Setup stages, reported with `errno` when one fails (kind = index + 1).
const STAGES: [&str; 19] = [
    "arranging descriptors",
    "waiting for the id mapping",
    "making mounts private",
    "mounting the scratch tmpfs on /tmp",
    "hiding a host directory",
    "mounting /proc",
    "making the file system read-only",
    "making /tmp writable",
    "entering /tmp",
    "setting the host name",
    "forking the program",
    "resetting signals",
    "setting resource limits",
    "dropping the capability bounding set",
    "dropping supplementary groups",
    "switching group",
    "switching user",
    "dropping capabilities",
    "setting no_new_privs",
];
const S_FDS: u32 = 1;
const S_SYNC: u32 = 2;
const S_PRIVATE: u32 = 3;
const S_TMP: u32 = 4;
const S_HIDE: u32 = 5;
const S_PROC: u32 = 6;
const S_READONLY: u32 = 7;
const S_WRITABLE: u32 = 8;
const S_CHDIR: u32 = 9;
const S_HOSTNAME: u32 = 10;
const S_FORK: u32 = 11;
const S_SIGNALS: u32 = 12;
const S_RLIMIT: u32 = 13;
const S_BOUNDING: u32 = 14;
const S_GROUPS: u32 = 15;
const S_GID: u32 = 16;
const S_UID: u32 = 17;
const S_CAPS: u32 = 18;
const S_NNP: u32 = 19;

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
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
const PR_CAPBSET_DROP: c_int = 24;

fn sandbox_err(msg: impl Into<String>) -> EvalError {
    EvalError::Sandbox(msg.into())
}

fn os_err(what: &str) -> EvalError {
    sandbox_err(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn cstring(s: impl AsRef<[u8]>) -> Result<CString, EvalError> {
    CString::new(s.as_ref()).map_err(|_| sandbox_err("a path or option contains NUL"))
}

/// How this process can build the sandbox: probed once (a run that sets everything up,
/// down to the program's dropped privileges, and exits where it would exec); the error
/// says why it cannot.
pub fn mode() -> Result<Mode, EvalError> {
    static PROBE: std::sync::OnceLock<Result<Mode, String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let mode = preferred_mode();
            let limits = Limits {
                wall: Duration::from_secs(30),
                ..Limits::default()
            };
            run(None, b"", None, &limits, mode, true)
                .map(|_| mode)
                .map_err(|e| {
                    let how = match mode {
                        Mode::Root => "as root, with new mount, PID and network namespaces",
                        Mode::UserNamespace => {
                            "without root, in a user namespace (check sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces and AppArmor's kernel.apparmor_restrict_unprivileged_userns; or run as root)"
                        }
                    };
                    format!("the code sandbox cannot be built here {how}: {e}")
                })
        })
        .clone()
        .map_err(EvalError::Sandbox)
}

/// Whether programs can run here (see [`mode`] for why not).
pub fn available() -> bool {
    mode().is_ok()
}

fn preferred_mode() -> Mode {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Mode::Root
    } else {
        Mode::UserNamespace
    }
}

/// Runs `script` with `python` (e.g. `/usr/bin/python3 -I -B -`, the script on stdin).
pub fn run_python(python: &Path, script: &str, limits: &Limits) -> Result<Execution, EvalError> {
    let mode = mode()?;
    run(Some(python), script.as_bytes(), None, limits, mode, false)
}

/// As [`run_python`], with `secret` readable once on descriptor 3 and whatever the
/// process writes on descriptor 4 returned as [`Execution::report`].
pub fn run_python_reporting(
    python: &Path,
    script: &str,
    secret: &[u8],
    limits: &Limits,
) -> Result<Execution, EvalError> {
    let mode = mode()?;
    run(
        Some(python),
        script.as_bytes(),
        Some(secret),
        limits,
        mode,
        false,
    )
}

/// A pipe, both ends close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), EvalError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os_err("pipe"));
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), EvalError> {
    // SAFETY: fcntl on a descriptor we own.
    let ok = unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0
    };
    if ok {
        Ok(())
    } else {
        Err(os_err("fcntl"))
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), EvalError> {
    while !data.is_empty() {
        // SAFETY: data is a valid slice for its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("write"));
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// The script in a sealed memfd, at offset 0 (the interpreter's stdin).
fn script_fd(script: &[u8]) -> Result<OwnedFd, EvalError> {
    let name = c"glass-sandbox-script";
    // SAFETY: name is NUL-terminated; the flags are valid.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(os_err("memfd_create"));
    }
    // SAFETY: memfd_create returned a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(&fd, script)?;
    // SAFETY: lseek and fcntl on a descriptor we own.
    let ok = unsafe {
        libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) == 0
            && libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            ) == 0
    };
    if ok {
        Ok(fd)
    } else {
        Err(os_err("sealing the script"))
    }
}

/// Everything the child needs, prepared before `clone` (the child must not allocate).
struct Plan {
    user_namespace: bool,
    probe: bool,
    python: CString,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    hidden: Vec<CString>,
    root: CString,
    tmp: CString,
    proc_dir: CString,
    tmpfs: CString,
    procfs: CString,
    scratch_opts: CString,
    hide_opts: CString,
    proc_opts: [CString; 3],
    hostname: CString,
    /// Parent descriptors for the child's 0..=6 (-1: none).
    sources: [c_int; FDS],
    rlimits: [(Resource, u64); 6],
    init_limit_ns: i64,
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = c_int;

/// The strings `Plan::argv` and `Plan::envp` point into; kept alive with the plan.
struct Strings {
    _argv: Vec<CString>,
    _envp: Vec<CString>,
}

/// A `clone`d namespace init, killed and reaped on drop unless already reaped.
struct Init {
    pid: libc::pid_t,
    reaped: bool,
}

impl Init {
    fn kill(&self) {
        // SAFETY: pid is our unreaped child, so the number cannot name another process.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
    }

    /// Waits for it (the kernel reports a PID namespace's init only once every process
    /// in the namespace has exited).
    fn reap(&mut self) {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
            if r == self.pid
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
        }
        self.reaped = true;
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            self.reap();
        }
    }
}

fn run(
    python: Option<&Path>,
    script: &[u8],
    secret: Option<&[u8]>,
    limits: &Limits,
    mode: Mode,
    probe: bool,
) -> Result<Execution, EvalError> {
    let python: PathBuf = match python {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => std::env::current_dir()
            .map_err(|e| sandbox_err(format!("current directory: {e}")))?
            .join(p),
        None => PathBuf::from("/"),
    };
    let python_real = std::fs::canonicalize(&python).unwrap_or_else(|_| python.clone());
    let hidden: Vec<CString> = HIDDEN
        .iter()
        .map(Path::new)
        .filter(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .filter(|d| probe || (!python.starts_with(d) && !python_real.starts_with(d)))
        .map(|d| cstring(d.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()?;

    let python_c = cstring(python.as_os_str().as_bytes())?;
    let argv_s: Vec<CString> = vec![
        python_c.clone(),
        cstring("-I")?,
        cstring("-B")?,
        cstring("-")?,
    ];
    let envp_s: Vec<CString> = vec![
        cstring("PATH=/usr/local/bin:/usr/bin:/bin")?,
        cstring("HOME=/tmp")?,
        cstring("LANG=C.UTF-8")?,
    ];
    let mut argv: Vec<*const c_char> = argv_s.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = envp_s.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let _strings = Strings {
        _argv: argv_s,
        _envp: envp_s,
    };

    // Descriptors: the child side of each is handed over, ours kept.
    let stdin = script_fd(script)?;
    // SAFETY: the path is NUL-terminated; open returns a fresh descriptor or -1.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if devnull < 0 {
        return Err(os_err("/dev/null"));
    }
    // SAFETY: a fresh descriptor.
    let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let secret_pipe = match secret {
        Some(s) => {
            let (r, w) = pipe()?;
            write_all(&w, s)?;
            drop(w);
            Some(r)
        }
        None => None,
    };
    let report_pipe = match secret {
        Some(_) => Some(pipe()?),
        None => None,
    };
    for fd in [&err_r, &status_r] {
        set_nonblocking(fd)?;
    }
    if let Some((r, _)) = &report_pipe {
        set_nonblocking(r)?;
    }
    let sources: [c_int; FDS] = [
        stdin.as_raw_fd(),
        devnull.as_raw_fd(),
        err_w.as_raw_fd(),
        secret_pipe.as_ref().map_or(-1, |r| r.as_raw_fd()),
        report_pipe.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
        status_w.as_raw_fd(),
        sync_r.as_raw_fd(),
    ];

    let user_namespace = mode == Mode::UserNamespace;
    let plan = Plan {
        user_namespace,
        probe,
        python: python_c,
        argv,
        envp,
        hidden,
        root: cstring("/")?,
        tmp: cstring("/tmp")?,
        proc_dir: cstring("/proc")?,
        tmpfs: cstring("tmpfs")?,
        procfs: cstring("proc")?,
        scratch_opts: cstring(format!(
            "size={},nr_inodes=4096,mode=0777",
            limits.scratch_bytes.max(4096)
        ))?,
        hide_opts: cstring("size=4k,nr_inodes=8,mode=0755")?,
        proc_opts: [
            cstring("hidepid=invisible,subset=pid")?,
            cstring("hidepid=2")?,
            cstring("")?,
        ],
        hostname: cstring("sandbox")?,
        sources,
        rlimits: [
            (libc::RLIMIT_AS, limits.memory_bytes),
            (libc::RLIMIT_CPU, limits.cpu_seconds),
            (libc::RLIMIT_NPROC, limits.processes),
            (libc::RLIMIT_FSIZE, limits.file_bytes),
            (libc::RLIMIT_NOFILE, 64),
            (libc::RLIMIT_CORE, 0),
        ],
        init_limit_ns: i64::try_from((limits.wall + Duration::from_secs(1)).as_nanos())
            .unwrap_or(i64::MAX),
    };

    let mut flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: a fork-like clone: besides the namespace flags only the exit signal, so no
    // CLONE_VM, CLONE_FILES or CLONE_THREAD, and no new stack. The child gets a private
    // copy of the address space and of the descriptor table, with this thread only; the
    // parent's other threads may have held locks (the allocator's) at that moment, which
    // is why the child runs `init_main`, which makes only async-signal-safe system calls
    // on the plan prepared above (no allocation, no locks, no panics) and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe { init_main(&plan) }
    }
    if pid < 0 {
        return Err(os_err("clone with new namespaces"));
    }
    let pid = pid as libc::pid_t;
    let mut init = Init { pid, reaped: false };
    // The child's ends are its own now.
    drop((stdin, devnull, err_w, status_w, sync_r, secret_pipe));
    let report_r = report_pipe.map(|(r, w)| {
        drop(w);
        r
    });

    use std::os::unix::fs::MetadataExt;
    let pid_namespace = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .map(|m| m.ino())
        .unwrap_or(0);
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, ids) = match mode {
        Mode::Root => {
            let id = ROOT_MODE_UID_BASE + pid as u32;
            (id, (id, id))
        }
        Mode::UserNamespace => {
            for (file, text) in [
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("{INSIDE_ID} {euid} 1")),
                ("gid_map", format!("{INSIDE_ID} {egid} 1")),
            ] {
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, text)
                    .map_err(|e| sandbox_err(format!("writing {path}: {e}")))?;
            }
            (euid, (INSIDE_ID, INSIDE_ID))
        }
    };
    let mut handshake = [0u8; 8];
    handshake[..4].copy_from_slice(&ids.0.to_le_bytes());
    handshake[4..].copy_from_slice(&ids.1.to_le_bytes());
    write_all(&sync_w, &handshake)?;
    drop(sync_w);
    let t0 = Instant::now();
    let deadline = t0 + limits.wall;

    // SAFETY: pidfd_open on our unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(os_err("pidfd_open"));
    }
    // SAFETY: a fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };

    let mut err = Capture::new(STDERR_BYTES, true);
    let mut status = Capture::new(4096, false);
    let mut report = Capture::new(REPORT_BYTES, false);
    let mut streams: Vec<(Option<&OwnedFd>, &mut Capture)> = vec![
        (Some(&err_r), &mut err),
        (Some(&status_r), &mut status),
        (report_r.as_ref(), &mut report),
    ];
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            init.kill();
            break;
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, 1000) as c_int;
        let mut pfds = vec![libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for (fd, _) in &streams {
            pfds.push(libc::pollfd {
                fd: fd.map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("poll"));
        }
        for (p, (fd, cap)) in pfds[1..].iter().zip(streams.iter_mut()) {
            if p.revents != 0 {
                if let Some(f) = *fd {
                    if !cap.pump(f, 64) {
                        *fd = None;
                    }
                }
            }
        }
        if pfds[0].revents != 0 {
            break;
        }
    }
    init.reap();
    // Every process that could write is gone; take what is left, a bounded amount.
    for (fd, cap) in streams.iter_mut() {
        if let Some(f) = *fd {
            cap.pump(f, 64);
        }
    }
    drop(streams);
    let seconds = t0.elapsed().as_secs_f64();

    let mut exit_code = None;
    let mut signal = None;
    let mut ready = false;
    for m in status.data.chunks_exact(8) {
        let kind = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        let value = i32::from_le_bytes([m[4], m[5], m[6], m[7]]);
        match kind {
            ST_EXITED => {
                if libc::WIFEXITED(value) {
                    exit_code = Some(libc::WEXITSTATUS(value));
                } else if libc::WIFSIGNALED(value) {
                    signal = Some(libc::WTERMSIG(value));
                }
            }
            ST_READY => ready = true,
            ST_INIT_DEADLINE => timed_out = true,
            ST_EXEC => {
                return Err(sandbox_err(format!(
                    "could not start {}: {}",
                    python.display(),
                    std::io::Error::from_raw_os_error(value)
                )))
            }
            k if (1..=STAGES.len() as u32).contains(&k) => {
                return Err(sandbox_err(format!(
                    "setting up the sandbox failed {}: {}",
                    STAGES[k as usize - 1],
                    std::io::Error::from_raw_os_error(value)
                )))
            }
            _ => {}
        }
    }
    if probe && !ready {
        return Err(sandbox_err(if timed_out {
            "setting up the sandbox did not finish in time".to_string()
        } else {
            "the sandbox's init ended before it was ready".to_string()
        }));
    }
    let outcome = if timed_out {
        Outcome::TimedOut
    } else if exit_code == Some(0) {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    let start = err.data.len().saturating_sub(STDERR_BYTES);
    Ok(Execution {
        outcome,
        exit_code,
        signal,
        stderr_tail: String::from_utf8_lossy(&err.data[start..]).into_owned(),
        report: report.data,
        seconds,
        mode,
        uid,
        pid_namespace,
    })
}

/// Bytes read from a non-blocking pipe: the first `cap` (or, with `tail`, the last).
struct Capture {
    data: Vec<u8>,
    cap: usize,
    tail: bool,
}

impl Capture {
    fn new(cap: usize, tail: bool) -> Capture {
        Capture {
            data: Vec::new(),
            cap,
            tail,
        }
    }

    /// Reads what is there, at most `reads` times; false at end of file or error.
    fn pump(&mut self, fd: &OwnedFd, reads: usize) -> bool {
        let mut buf = [0u8; 8192];
        for _ in 0..reads {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return false;
            }
            if n < 0 {
                return match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::WouldBlock => true,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => false,
                };
            }
            let got = &buf[..n as usize];
            if self.tail {
                self.data.extend_from_slice(got);
                if self.data.len() > 2 * self.cap {
                    self.data.drain(..self.data.len() - self.cap);
                }
            } else {
                let room = self.cap.saturating_sub(self.data.len());
                self.data.extend_from_slice(&got[..got.len().min(room)]);
            }
        }
        true
    }
}

// ---- The child side: async-signal-safe only (no allocation, no locks, no panics). ----
//
// Every `unsafe fn` below may only run in the children of the `clone` in `run`, where it
// makes raw system calls on memory the plan owns; none allocates, locks or panics.

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Writes a status message on descriptor 5 (ignored if it cannot be written).
///
/// # Safety
/// Child side only (see above).
unsafe fn status(kind: u32, value: i32) {
    let k = kind.to_le_bytes();
    let v = value.to_le_bytes();
    let m = [k[0], k[1], k[2], k[3], v[0], v[1], v[2], v[3]];
    libc::write(FD_STATUS, m.as_ptr().cast(), m.len());
}

/// Reports the failed stage with errno and exits.
///
/// # Safety
/// Child side only (see above).
unsafe fn fail(stage: u32) -> ! {
    status(stage, errno());
    libc::_exit(121)
}

/// Fails `stage` if a system call returned an error.
///
/// # Safety
/// Child side only (see above).
unsafe fn check(r: c_long, stage: u32) {
    if r < 0 {
        fail(stage);
    }
}

/// mount(2) with `data` (none when empty).
///
/// # Safety
/// Child side only (see above).
unsafe fn mount(
    src: &CString,
    dst: &CString,
    fs: &CString,
    flags: c_ulong,
    data: &CString,
) -> c_long {
    libc::mount(
        src.as_ptr(),
        dst.as_ptr(),
        fs.as_ptr(),
        flags,
        if data.as_bytes().is_empty() {
            std::ptr::null()
        } else {
            data.as_ptr().cast()
        },
    ) as c_long
}

/// mount_setattr(2) on `path`.
///
/// # Safety
/// Child side only (see above).
unsafe fn mount_setattr(path: &CString, flags: libc::c_uint, set: u64, clr: u64) -> c_long {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        path.as_ptr(),
        flags,
        &attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    )
}

// time_t and c_long are i64 here, narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as i64)
}

/// The namespace's init (PID 1). Never returns.
///
/// # Safety
/// Only in the child of the `clone` in [`run`], before anything else runs there.
unsafe fn init_main(p: &Plan) -> ! {
    // Die with the thread that spawned us.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0);
    // The parent's descriptors to 0..=6: first above every target, then into place.
    let mut high: [c_int; FDS] = [-1; FDS];
    for (h, &src) in high.iter_mut().zip(p.sources.iter()) {
        if src >= 0 {
            *h = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 16 as c_int);
            if *h < 0 {
                libc::_exit(121);
            }
        }
    }
    for (target, &h) in high.iter().enumerate() {
        let target = target as c_int;
        if h >= 0 {
            if libc::dup2(h, target) < 0 {
                libc::_exit(121);
            }
        } else {
            libc::close(target);
        }
    }
    // Everything else this copy of the parent holds (other runs' pipes included).
    if libc::syscall(
        libc::SYS_close_range,
        FDS as libc::c_uint,
        libc::c_uint::MAX,
        0,
    ) < 0
    {
        libc::_exit(121);
    }
    // The status pipe must not survive exec (the program must not write setup status).
    check(
        libc::fcntl(FD_STATUS, libc::F_SETFD, libc::FD_CLOEXEC) as c_long,
        S_FDS,
    );

    // Wait until the parent has mapped our ids; it sends the program's uid and gid.
    let mut ids = [0u8; 8];
    let mut got = 0usize;
    while got < ids.len() {
        let r = libc::read(FD_SYNC, ids.as_mut_ptr().add(got).cast(), ids.len() - got);
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r <= 0 {
            fail(S_SYNC);
        }
        got += r as usize;
    }
    libc::close(FD_SYNC);
    // No process inside may ptrace us (not before: the parent, unprivileged, could not
    // have written the id maps of a non-dumpable process).
    libc::prctl(libc::PR_SET_DUMPABLE, 0 as c_ulong, 0, 0, 0);
    let uid = u32::from_le_bytes([ids[0], ids[1], ids[2], ids[3]]);
    let gid = u32::from_le_bytes([ids[4], ids[5], ids[6], ids[7]]);

    check(
        libc::mount(
            std::ptr::null(),
            p.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) as c_long,
        S_PRIVATE,
    );
    check(
        mount(
            &p.tmpfs,
            &p.tmp,
            &p.tmpfs,
            libc::MS_NOSUID | libc::MS_NODEV,
            &p.scratch_opts,
        ),
        S_TMP,
    );
    for dir in &p.hidden {
        check(
            mount(
                &p.tmpfs,
                dir,
                &p.tmpfs,
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                &p.hide_opts,
            ),
            S_HIDE,
        );
    }
    // A procfs of this PID namespace; where the kernel refuses one, none at all.
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut proc_ok = false;
    for opts in &p.proc_opts {
        if mount(&p.procfs, &p.proc_dir, &p.procfs, proc_flags, opts) == 0 {
            proc_ok = true;
            break;
        }
    }
    if !proc_ok {
        check(
            mount(
                &p.tmpfs,
                &p.proc_dir,
                &p.tmpfs,
                proc_flags | libc::MS_RDONLY,
                &p.hide_opts,
            ),
            S_PROC,
        );
    }
    check(
        mount_setattr(
            &p.root,
            AT_RECURSIVE,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            0,
        ),
        S_READONLY,
    );
    check(
        mount_setattr(&p.tmp, 0, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_RDONLY),
        S_WRITABLE,
    );
    check(libc::chdir(p.tmp.as_ptr()) as c_long, S_CHDIR);
    check(
        libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len()) as c_long,
        S_HOSTNAME,
    );
    // SIGCHLD is waited for, not handled: block it before the program can exit.
    let mut chld: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut chld);
    libc::sigaddset(&mut chld, libc::SIGCHLD);
    libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
    // A plain fork as a system call: the C library's fork would take its locks.
    let child = libc::syscall(
        libc::SYS_clone,
        libc::SIGCHLD as c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    );
    if child < 0 {
        fail(S_FORK);
    }
    if child == 0 {
        program_main(p, uid, gid);
    }
    let child = child as libc::pid_t;
    for fd in 0..FD_STATUS {
        libc::close(fd);
    }
    // Wait for the program, reaping whatever is orphaned to us meanwhile; end at our
    // own deadline even if Glass no longer watches. Our exit kills the namespace.
    let start = monotonic_ns();
    loop {
        let mut st: c_int = 0;
        let r = libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL);
        if r == child {
            status(ST_EXITED, st);
            libc::_exit(0);
        }
        if r > 0 {
            continue;
        }
        if r < 0 && errno() != libc::EINTR {
            libc::_exit(121);
        }
        let elapsed = monotonic_ns().saturating_sub(start);
        if elapsed >= p.init_limit_ns {
            status(ST_INIT_DEADLINE, 0);
            libc::_exit(0);
        }
        let left = p.init_limit_ns.saturating_sub(elapsed).min(1_000_000_000);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: left as _,
        };
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &chld as *const libc::sigset_t,
            std::ptr::null_mut::<libc::siginfo_t>(),
            &ts as *const libc::timespec,
            8usize,
        );
    }
}

/// The program's process: drops everything and execs the interpreter. Never returns.
///
/// # Safety
/// Only in the child forked by [`init_main`].
unsafe fn program_main(p: &Plan, uid: u32, gid: u32) -> ! {
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    check(
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) as c_long,
        S_SIGNALS,
    );
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    for &(res, v) in &p.rlimits {
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        check(libc::setrlimit(res, &r) as c_long, S_RLIMIT);
    }
    // No capability can come back through exec.
    for cap in 0..64 as c_ulong {
        if libc::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno() != libc::EINVAL {
            fail(S_BOUNDING);
        }
    }
    if !p.user_namespace {
        check(
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
            S_GROUPS,
        );
    }
    // Raw system calls: the C library's setuid/setgid signal every thread it thinks the
    // process has, and this copy has only one.
    check(libc::syscall(libc::SYS_setresgid, gid, gid, gid), S_GID);
    check(libc::syscall(libc::SYS_setresuid, uid, uid, uid), S_UID);
    libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    check(
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ),
        S_CAPS,
    );
    check(
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) as c_long,
        S_NNP,
    );
    if p.probe {
        // Everything up to exec worked.
        status(ST_READY, 0);
        libc::_exit(0);
    }
    libc::execve(p.python.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    status(ST_EXEC, errno());
    libc::_exit(127)
}
