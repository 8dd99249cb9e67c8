//! Property: for every target, any mutation of a real seed file gives a value or an
//! error — never a panic, an allocation beyond 1 GiB, more than 4 GiB allocated at once
//! in all, or more than 10 s. A watchdog thread enforces the time bound while the call
//! runs: a hang aborts the process (naming the target and where its input was saved)
//! instead of stalling CI.
//!
//! Why proptest on stable rather than cargo-fuzz: the targets run Glass's real readers
//! end to end (files in a run directory, hashes re-sealed), which link tokenizers,
//! SQLite and the engine; rebuilding all of that with sanitizer instrumentation on
//! nightly costs CI far more than the run itself, and the structure-aware mutations
//! (JSON nodes, TOML/YAML values, extreme little-endian integers) reach the field checks
//! that coverage feedback would need many hours of byte flips to find. Proptest shrinks
//! a failure to its fewest edits and replays recorded failures first.
//!
//! `GLASS_FUZZ_CASES` sets the cases per target (default 24, a few seconds in all);
//! `.ci/fuzz.sh` runs thousands. The input being run is written to
//! `target/fuzz-current/<target>` first, so an abort (which no test can catch) leaves
//! the input that caused it. Inputs that once failed live in `regressions/` and are
//! replayed by `regressions_stay_fixed`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glass_fuzz::{mutate, workspace, Scratch, Target, TARGETS};
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

/// Refuses any single allocation over 1 GiB, and any allocation that would take the
/// bytes allocated at once (by the whole process) past 4 GiB: the process aborts with
/// "memory allocation of N bytes failed", which fails the run. Seeds are kilobytes;
/// nothing legitimate needs that much, and many small allocations that add up to an
/// unbounded total are caught as surely as one huge one.
struct Bounded;

const MAX_ALLOC: usize = 1 << 30;
const MAX_LIVE: usize = 4 << 30;

/// Bytes currently allocated through [`Bounded`].
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Reserves `n` more live bytes, or says no (nothing reserved) past the bounds.
fn reserve(n: usize) -> bool {
    if n > MAX_ALLOC {
        return false;
    }
    let before = LIVE.fetch_add(n, Ordering::Relaxed);
    if before + n > MAX_LIVE {
        LIVE.fetch_sub(n, Ordering::Relaxed);
        return false;
    }
    true
}

fn release(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged, except that it reports failure
// (null) for requests past the bounds, which the GlobalAlloc contract allows; the live
// count is only bookkeeping (released exactly what was reserved, also on failure).
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !reserve(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout contract as our caller's.
        let p = unsafe { System.alloc(l) };
        if p.is_null() {
            release(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from System.alloc with `l`.
        unsafe { System.dealloc(p, l) };
        release(l.size());
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !reserve(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(l) };
        if p.is_null() {
            release(l.size());
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let old = l.size();
        if new > old && !reserve(new - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: `p` came from System with `l`; `new` is nonzero per the contract.
        let q = unsafe { System.realloc(p, l, new) };
        if q.is_null() {
            if new > old {
                release(new - old);
            }
        } else if new < old {
            release(old - new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Bounded = Bounded;

/// Time one input may take (`GLASS_FUZZ_MAX_SECONDS`, default 10).
fn max_time() -> Duration {
    let s = std::env::var("GLASS_FUZZ_MAX_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(s)
}

fn cases() -> u32 {
    std::env::var("GLASS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).expect("target")
}

/// Runs one input under the time bound; the input is saved first (see above). A
/// watchdog thread waits for the call to finish; if it does not within twice the bound
/// (a hang: the call would never return to be timed), it aborts the process, naming the
/// target and the saved input.
fn run_one(t: &Target, scratch: &Scratch, input: &[u8]) {
    let cur = workspace().join("target/fuzz-current");
    let _ = std::fs::create_dir_all(&cur);
    let saved = cur.join(t.name);
    let _ = std::fs::write(&saved, input);
    let (done, wait) = mpsc::channel::<()>();
    let name = t.name;
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(2 * max_time()) {
            eprintln!(
                "fuzz {name}: an input has run for more than {:?} (a hang); it is saved at {}",
                2 * max_time(),
                saved.display()
            );
            std::process::abort();
        }
    });
    let t0 = Instant::now();
    (t.run)(scratch, input);
    let dt = t0.elapsed();
    let _ = done.send(());
    let _ = watchdog.join();
    assert!(dt < max_time(), "{}: one input took {dt:?}", t.name);
}

fn fuzz(name: &str) {
    let t = target(name);
    let root = workspace();
    let seeds: Vec<Vec<u8>> = t
        .seeds
        .iter()
        .map(|s| std::fs::read(root.join(s)).unwrap_or_else(|e| panic!("seed {s}: {e}")))
        .collect();
    let scratch = Scratch::new();
    // Every seed as it is must pass first (and be accepted: a seed is a valid file).
    for s in &seeds {
        run_one(t, &scratch, s);
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/regressions/proptest-seeds.txt"
        )))),
        ..Config::default()
    });
    let n = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&mutate::case(seeds.len()), |(i, edits)| {
        let input = mutate::apply(&seeds[i], t.kind, &edits);
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_one(t, &scratch, &input);
        Ok(())
    });
    eprintln!(
        "fuzz {name}: {} executions",
        n.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Err(e) = result {
        // Keep the shrunk input as a regression file (commit it once fixed).
        if let proptest::test_runner::TestError::Fail(_, (i, edits)) = &e {
            let input = mutate::apply(&seeds[*i], t.kind, edits);
            let id = &glass_io::atomic::sha256_hex(&input)[..8];
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("regressions/{name}-{id}.bin"));
            let _ = std::fs::write(&p, &input);
            eprintln!("{name}: failing input saved as {}", p.display());
        }
        panic!("{name}: {e}");
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(tested.contains(&t.name), "no test for target {}", t.name);
            }
        }
    };
}

targets!(
    chunk_header,
    chunk_segments,
    chunk_tokens,
    validation_header,
    store_header,
    store_docs,
    data_manifest,
    run_manifest,
    state,
    checkpoint_safetensors,
    glass_toml,
    hf_safetensors,
    hf_family_weights,
    gguf,
    pickle,
    hf_config,
    task_yaml,
    index_manifest,
    index_suffix_array,
    release_manifest,
    release_rows,
    llm360_rows,
    megatron_idx,
    megatron_bin_piece,
    npy_index,
    hdf5_file,
    olmo_config,
    eval_jsonl,
    eval_parquet,
    eval_arrow,
    corpus_jsonl_gz,
    corpus_jsonl_zst,
    corpus_parquet,
    corpus_arrow,
    tokenizer_json,
    optimizer_safetensors,
    metrics_sqlite,
    http_request,
);

/// Inputs that once crashed a target, kept as `regressions/<target>-<n>.bin`.
#[test]
fn regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let scratch = Scratch::new();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("regressions dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some((t, _)) = name.rsplit_once('-') else {
            continue;
        };
        if !name.ends_with(".bin") {
            continue;
        }
        run_one(target(t), &scratch, &std::fs::read(&p).unwrap());
        n += 1;
    }
    eprintln!("{n} regression inputs replayed");
}

/// Not a target: an input that never returns, run only when the watchdog test below
/// starts this binary with `GLASS_FUZZ_HANG_PROBE=1`.
#[test]
fn hang_probe() {
    if std::env::var_os("GLASS_FUZZ_HANG_PROBE").is_none() {
        return;
    }
    let hang = Target {
        name: "hang_probe",
        kind: glass_fuzz::mutate::Kind::Bytes,
        seeds: &[],
        run: |_, _| loop {
            std::thread::sleep(Duration::from_secs(1));
        },
    };
    run_one(&hang, &Scratch::new(), b"x");
}

/// A hang is caught while it runs: the watchdog aborts the process and names it.
#[test]
fn the_watchdog_aborts_a_hanging_input() {
    let t0 = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hang_probe",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("GLASS_FUZZ_HANG_PROBE", "1")
        .env("GLASS_FUZZ_MAX_SECONDS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a hanging input passed: {err}");
    assert!(
        err.contains("fuzz hang_probe") && err.contains("a hang"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}
