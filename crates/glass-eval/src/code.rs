//! pass@1 of generated code as lm-evaluation-harness scores HumanEval and MBPP with
//! Hugging Face `evaluate`'s `code_eval`: the program is the filtered prediction
//! (HumanEval: prompt + completion; MBPP: the completion) + `"\n"` + the reference
//! (HumanEval: `test + "\ncheck(entry_point)"`; MBPP: the three asserts), executed with
//! `exec(program, {})` under `code_eval`'s conditions — its `reliability_guard` (which
//! removes `os.fork`, `os.kill`, `os.remove`, `subprocess.Popen`, `exit`, … ), standard
//! streams swallowed (reading stdin raises `OSError`), a 3 s `ITIMER_REAL` alarm — and
//! passed when `exec` returns without an exception. Each program runs in
//! [`crate::sandbox::run_python_reporting`] (its own namespaces, read-only file system,
//! memory, process and time limits), so a program that loops, allocates without bound,
//! forks, writes outside its directory or opens a socket fails and the evaluation goes
//! on. The verdict comes from an authenticated report of the driver, never from what the
//! program prints or its exit status (see [`CodeRunner::run`]), and is one of `passed`,
//! `timed out` or `failed: ` with the exception's text, at most [`RESULT_CHARS`]
//! characters in all. With one completion per document, pass@1 is the share of documents
//! that pass.

use std::path::PathBuf;
use std::time::Duration;

use rayon::prelude::*;

use crate::sandbox::{run_python_reporting, Execution, Limits};
use crate::EvalError;

/// `code_eval`'s default `timeout` (seconds), the alarm inside the program's process.
pub const TIMEOUT_SECONDS: f64 = 3.0;

/// What one program's execution gave.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CodeResult {
    /// True when `exec` returned without an exception within the time limit.
    pub passed: bool,
    /// `code_eval`'s result text: `passed`, `failed: <exception>` or `timed out`, at most
    /// [`RESULT_CHARS`] characters, no control characters.
    pub result: String,
}

/// `code_eval`'s program: the prediction, a newline, the reference tests.
pub fn program(prediction: &str, reference: &str) -> String {
    format!("{prediction}\n{reference}")
}

/// Starts the driver's report on descriptor 4: magic, HMAC-SHA256 tag (32 bytes), length
/// of the verdict (2 bytes, big-endian), the verdict (UTF-8).
const MAGIC: &[u8] = b"\0glass-verdict\0";

/// Most characters of a stored verdict (`failed: ` and the exception's text included).
pub const RESULT_CHARS: usize = 200;

/// A Python script that executes `program` the way `code_eval`'s `unsafe_execute` does
/// and reports the verdict (`passed`, `failed: …`, `timed out`) on descriptor 4,
/// authenticated with the key it reads from descriptor 3 (see [`CodeRunner::run`]).
pub fn driver(program: &str) -> String {
    // A JSON string is a valid Python string literal (serde_json escapes only `"`,
    // `\` and control characters, all with escapes Python reads the same way).
    let literal = serde_json::to_string(program).expect("a string serializes");
    // The program last, so that nothing inside it is substituted.
    DRIVER
        .replace("@TIMEOUT@", &format!("{TIMEOUT_SECONDS:?}"))
        .replace("@LIMIT@", &RESULT_CHARS.to_string())
        .replace("@PROGRAM@", &literal)
}

/// The driver. Everything the report needs after the program ran is bound, before it
/// runs, to locals of `main` (C functions and immutable values): never to globals,
/// closures or containers, which the program could reach through `gc` or rebind. The
/// program runs in a frame of its own under `exec`, as in `code_eval`; `passed` is
/// assigned only on the path where `exec` returned.
const DRIVER: &str = r#"import posix, sys


def main():
    read, write, close, finish = posix.read, posix.write, posix.close, posix._exit
    key = b""
    while len(key) < 32:
        chunk = read(3, 32 - len(key))
        if not chunk:
            finish(1)
        key += chunk
    close(3)
    import hashlib
    sha256 = hashlib.sha256
    block = key + bytes(32)
    inner_key = block.translate(bytes(b ^ 0x36 for b in range(256)))
    outer_key = block.translate(bytes(b ^ 0x5C for b in range(256)))
    del key, chunk, block

    import builtins, contextlib, faulthandler, io, os, shutil, signal, subprocess

    timer, real, alarm, install = signal.setitimer, signal.ITIMER_REAL, signal.SIGALRM, signal.signal
    timeout_type, anything, size, limit = TimeoutException, BaseException, len, @LIMIT@
    magic = b"\x00glass-verdict\x00"

    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ["kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
                 "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
                 "getcwd", "chdir"]:
        setattr(os, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ["ipdb", "joblib", "resource", "psutil", "tkinter"]:
        sys.modules[name] = None

    stream = WriteOnlyStringIO()
    sys.stdout = stream
    sys.stderr = stream
    sys.stdin = stream
    try:
        try:
            timer(real, @TIMEOUT@)
            install(alarm, on_alarm)
            try:
                exec(PROGRAM, {})
            finally:
                timer(real, 0)
            verdict = "passed"
        except timeout_type:
            verdict = "timed out"
        except anything as e:
            try:
                verdict = "failed: {}".format(e)
            except anything:
                verdict = "failed: (unprintable exception)"
        message = verdict[:limit].encode("utf-8", "backslashreplace")
        tag = sha256(outer_key + sha256(inner_key + message).digest()).digest()
        write(4, magic + tag + size(message).to_bytes(2, "big") + message)
    finally:
        finish(0)


class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(__import__("io").StringIO):
    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


def on_alarm(signum, frame):
    raise TimeoutException("Timed out!")


PROGRAM = @PROGRAM@
main()
"#;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key` (at most 64 bytes).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let h = Sha256::new()
        .chain_update(&inner)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&outer)
        .chain_update(h)
        .finalize()
        .into()
}

/// The first report on descriptor 4 whose tag is right under `key`, as a bounded verdict:
/// `passed`, `timed out` or `failed: ` and at most [`RESULT_CHARS`] characters in all,
/// control characters replaced by spaces. Anything else the process wrote is ignored.
pub fn verdict(report: &[u8], key: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(i) = report[from..].windows(MAGIC.len()).position(|w| w == MAGIC) {
        let body = &report[from + i + MAGIC.len()..];
        if let Some(v) = framed(body, key) {
            return Some(v);
        }
        from += i + 1;
    }
    None
}

fn framed(body: &[u8], key: &[u8]) -> Option<String> {
    let tag = body.get(..32)?;
    let len = u16::from_be_bytes([*body.get(32)?, *body.get(33)?]) as usize;
    let message = body.get(34..34 + len)?;
    if hmac_sha256(key, message) != tag {
        return None;
    }
    let text = std::str::from_utf8(message).ok()?;
    if text == "passed" || text == "timed out" {
        return Some(text.to_string());
    }
    let rest = text.strip_prefix("failed: ")?;
    let mut out = String::from("failed: ");
    out.extend(rest.chars().take(RESULT_CHARS - out.len()).map(|c| {
        if c.is_control() {
            ' '
        } else {
            c
        }
    }));
    Some(out)
}

/// 32 random bytes from the kernel.
fn random_key() -> Result<[u8; 32], EvalError> {
    let mut key = [0u8; 32];
    let mut got = 0;
    while got < key.len() {
        // SAFETY: the pointer and length describe the unfilled rest of `key`.
        let n = unsafe { libc::getrandom(key[got..].as_mut_ptr().cast(), key.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(EvalError::Sandbox(format!("getrandom: {e}")));
        }
        got += n as usize;
    }
    Ok(key)
}

/// Where and how programs run.
#[derive(Debug, Clone)]
pub struct CodeRunner {
    /// The Python interpreter (an absolute path).
    pub python: PathBuf,
    /// Limits of one program; the wall clock is `code_eval`'s (alarm + 1 s, the time it
    /// waits for the process).
    pub limits: Limits,
}

impl CodeRunner {
    /// A runner with the sandbox's default limits and `code_eval`'s wall clock.
    pub fn new(python: PathBuf) -> CodeRunner {
        CodeRunner {
            python,
            limits: Limits {
                wall: Duration::from_secs_f64(TIMEOUT_SECONDS + 1.0),
                ..Limits::default()
            },
        }
    }

    /// Checks that programs can run here (the sandbox, an interpreter), before any model
    /// time is spent.
    pub fn check(&self) -> Result<(), EvalError> {
        crate::sandbox::mode()?;
        if !self.python.is_file() {
            return Err(EvalError::Invalid(format!(
                "{}: no Python interpreter there (pass --python PATH)",
                self.python.display()
            )));
        }
        // As the harness's code tasks do on import: one passing and one failing program.
        let ok = self.run("def add(a, b):\n    return a + b")?;
        let bad = self.run("assert 1 + 1 == 3")?;
        if !ok.passed || bad.passed {
            return Err(EvalError::Invalid(format!(
                "{}: the sandbox cannot run Python programs ({}); pass --python PATH with an interpreter every user can execute (e.g. /usr/bin/python3)",
                self.python.display(),
                ok.result
            )));
        }
        Ok(())
    }

    /// Runs one program (see [`driver`]) and returns its verdict.
    ///
    /// **Why the program cannot forge it.** The program runs inside the driver's Python
    /// process (`exec`, as in `code_eval`), so it can write to any descriptor, exit with
    /// any status and print anything; none of that is read. The verdict is the first
    /// report on descriptor 4 that carries HMAC-SHA256 of its text under a key drawn
    /// fresh for this run, which the driver reads from descriptor 3 and closes before
    /// the program starts: the key is in no file, descriptor, argument or environment
    /// variable, and the derived pads live only in locals of the driver's running frame,
    /// which `gc.get_objects()` does not list and the driver never exposes. A report the
    /// program makes up, replays or redirects (by swapping descriptor 4, the driver's
    /// own report on a failure gives away only the tag of that failure) does not verify,
    /// and a process that ends without a valid report is `timed out`, as `code_eval`
    /// scores a worker that dies without a result. `passed` is assigned only on the path
    /// where `exec` returned.
    ///
    /// **Where that ends.** A program that walks up into the driver's frame
    /// (`sys._getframe`, a traceback's `tb_frame.f_back`, a trace function) or reads the
    /// process's memory (`ctypes`) can compute a tag. The same power lets it make `exec`
    /// return with failing tests — jump over the asserts with a trace function, or
    /// simply return objects that compare equal to anything — which `code_eval` itself
    /// scores as passed; no channel inside the interpreter that runs the tests can be
    /// stronger than those semantics, and this one adds no weaker path.
    pub fn run(&self, program: &str) -> Result<CodeResult, EvalError> {
        self.execute(program).map(|(r, _)| r)
    }

    /// [`CodeRunner::run`], with the execution the verdict came from (its process
    /// outcome, the host uid and PID namespace it ran in).
    pub fn execute(&self, program: &str) -> Result<(CodeResult, Execution), EvalError> {
        let key = random_key()?;
        let ex = run_python_reporting(&self.python, &driver(program), &key, &self.limits)?;
        // Killed at the wall clock, or ended without a valid report (as when
        // `code_eval`'s worker dies: no result is "timed out").
        let result = verdict(&ex.report, &key).unwrap_or_else(|| "timed out".to_string());
        Ok((
            CodeResult {
                passed: result == "passed",
                result,
            },
            ex,
        ))
    }

    /// Runs every program, in parallel; results in order.
    pub fn run_all(&self, programs: &[String]) -> Result<Vec<CodeResult>, EvalError> {
        programs.par_iter().map(|p| self.run(p)).collect()
    }
}

/// The default `--python`: the system's `/usr/bin/python3` (an interpreter outside any
/// home directory, so the sandbox's user can run it), else `python3` on `PATH`.
pub fn find_python() -> Option<PathBuf> {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        return Some(system);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_prediction_newline_reference() {
        assert_eq!(
            program("def f():\n    return 1", "assert f() == 1"),
            "def f():\n    return 1\nassert f() == 1"
        );
    }

    #[test]
    fn driver_embeds_the_program_as_a_python_literal() {
        let d = driver("print(\"a\\b\")\n\u{1}é");
        assert!(d.contains(r#"PROGRAM = "print(\"a\\b\")\n\u0001é""#));
        assert!(d.contains("exec(PROGRAM, {})"));
        // Placeholders inside the program are left alone.
        assert!(
            driver("x = '@LIMIT@ @TIMEOUT@'").contains(r#"PROGRAM = "x = '@LIMIT@ @TIMEOUT@'""#)
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let tag = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex::encode(tag),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    fn frame(key: &[u8], text: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&hmac_sha256(key, text));
        f.extend_from_slice(&(text.len() as u16).to_be_bytes());
        f.extend_from_slice(text);
        f
    }

    #[test]
    fn only_a_report_tagged_with_the_key_counts() {
        let key = [7u8; 32];
        let other = [8u8; 32];
        assert_eq!(verdict(b"", &key), None);
        assert_eq!(verdict(&frame(&other, b"passed"), &key), None);
        // Junk and forgeries before the real report are skipped; the first valid wins.
        let mut r = b"\0glass-verdict\0passed".to_vec();
        r.extend(frame(&other, b"passed"));
        r.extend(frame(&key, b"failed: boom"));
        r.extend(frame(&key, b"passed"));
        assert_eq!(verdict(&r, &key).as_deref(), Some("failed: boom"));
        // A tampered text does not verify.
        let mut t = frame(&key, b"failed: x");
        let n = t.len();
        t[n - 9..].copy_from_slice(b"passed!!!");
        assert_eq!(verdict(&t, &key), None);
        // Only the three forms, bounded, without control characters.
        assert_eq!(verdict(&frame(&key, b"passed, really"), &key), None);
        let long = format!("failed: {}\n\x1b[31m", "x".repeat(1000));
        let v = verdict(&frame(&key, long.as_bytes()), &key).unwrap();
        assert_eq!(v.chars().count(), RESULT_CHARS);
        let v = verdict(&frame(&key, b"failed: a\nb\x1bc"), &key).unwrap();
        assert_eq!(v, "failed: a b c");
        assert_eq!(
            verdict(&frame(&key, b"timed out"), &key).as_deref(),
            Some("timed out")
        );
    }
}
