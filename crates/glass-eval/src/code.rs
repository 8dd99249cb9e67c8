//! pass@1 of generated code as lm-evaluation-harness scores HumanEval and MBPP with
//! Hugging Face `evaluate`'s `code_eval`: the program is the filtered prediction
//! (HumanEval: prompt + completion; MBPP: the completion) + `"\n"` + the reference
//! (HumanEval: `test + "\ncheck(entry_point)"`; MBPP: the three asserts), executed with
//! `exec(program, {})` under `code_eval`'s conditions — its `reliability_guard` (which
//! removes `os.fork`, `os.kill`, `os.remove`, `subprocess.Popen`, `exit`, … ), standard
//! streams swallowed (reading stdin raises `OSError`), a 3 s `ITIMER_REAL` alarm — and
//! passed when `exec` returns without an exception. Each program runs in
//! [`crate::sandbox::run_python`] (its own namespaces, read-only file system, memory,
//! process and time limits), so a program that loops, allocates without bound, forks,
//! writes outside its directory or opens a socket fails and the evaluation goes on.
//! With one completion per document, pass@1 is the share of documents that pass.

use std::path::PathBuf;
use std::time::Duration;

use rayon::prelude::*;

use crate::sandbox::{run_python, Limits, Outcome};
use crate::EvalError;

/// `code_eval`'s default `timeout` (seconds), the alarm inside the program's process.
pub const TIMEOUT_SECONDS: f64 = 3.0;

/// What one program's execution gave.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CodeResult {
    /// True when `exec` returned without an exception within the time limit.
    pub passed: bool,
    /// `code_eval`'s result text: `passed`, `failed: <exception>` or `timed out`.
    pub result: String,
}

/// `code_eval`'s program: the prediction, a newline, the reference tests.
pub fn program(prediction: &str, reference: &str) -> String {
    format!("{prediction}\n{reference}")
}

/// Marks the driver's verdict on stderr (the program's own output is swallowed).
const VERDICT: &str = "\n@@glass-code-eval@@ ";

/// A Python script that executes `program` the way `code_eval`'s `unsafe_execute` does
/// and writes the verdict (`passed`, `failed: …`, `timed out`) to stderr.
pub fn driver(program: &str) -> String {
    // A JSON string is a valid Python string literal (serde_json escapes only `"`,
    // `\` and control characters, all with escapes Python reads the same way).
    let literal = serde_json::to_string(program).expect("a string serializes");
    format!(
        r#"import builtins, contextlib, faulthandler, io, os, shutil, signal, subprocess, sys
PROGRAM = {literal}
TIMEOUT = {TIMEOUT_SECONDS:?}
VERDICT = {verdict}

class TimeoutException(Exception):
    pass

class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise OSError
    def readline(self, *args, **kwargs):
        raise OSError
    def readlines(self, *args, **kwargs):
        raise OSError
    def readable(self, *args, **kwargs):
        return False

class RedirectStdin(contextlib._RedirectStream):
    _stream = "stdin"

def on_alarm(signum, frame):
    raise TimeoutException("Timed out!")

report = sys.stderr.write
finish = os._exit
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

try:
    stream = WriteOnlyStringIO()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), RedirectStdin(stream):
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
        signal.signal(signal.SIGALRM, on_alarm)
        try:
            exec(PROGRAM, {{}})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    verdict = "passed"
except TimeoutException:
    verdict = "timed out"
except BaseException as e:
    try:
        verdict = f"failed: {{e}}"
    except BaseException:
        verdict = "failed: (unprintable exception)"
report(VERDICT + verdict)
sys.stderr.flush()
finish(0)
"#,
        verdict = serde_json::to_string(VERDICT).expect("a string serializes"),
    )
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

    /// Runs one program (see [`driver`]).
    pub fn run(&self, program: &str) -> Result<CodeResult, EvalError> {
        let ex = run_python(&self.python, &driver(program), &self.limits)?;
        let verdict = ex
            .stderr_tail
            .rfind(VERDICT)
            .map(|i| ex.stderr_tail[i + VERDICT.len()..].to_string());
        Ok(match (ex.outcome, verdict) {
            (Outcome::Passed, Some(v)) => CodeResult {
                passed: v == "passed",
                result: v,
            },
            // Killed at the wall clock, or the process died before the verdict (as when
            // `code_eval`'s worker dies: no result is "timed out").
            (Outcome::TimedOut, _) | (_, None) => CodeResult {
                passed: false,
                result: "timed out".into(),
            },
            (Outcome::Failed, Some(v)) => CodeResult {
                passed: false,
                result: v,
            },
        })
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
    }
}
