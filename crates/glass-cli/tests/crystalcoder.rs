//! `glass import crystalcoder` on small data in the Cerebras modelzoo's HDF5 layout,
//! written with h5py by `tools/fixtures/make_crystalcoder_fixtures.py` (gzip row chunks as
//! the modelzoo writes them, a contiguous file, multi-row chunks behind the shuffle
//! filter) together with the rows of every step under the documented order:
//! `glass data show --step N --json` must give exactly those rows (one step crosses a
//! file boundary, one a stage's dropped tail), and bad input must be refused naming the
//! file.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{copy_dir, glass, llm360_tokenizer as tokenizer, ok, p, u64s};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suites/crystalcoder")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

fn import(data: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "import",
        "crystalcoder",
        "--data",
        data.to_str().unwrap(),
        "--rows-per-step",
        "4",
    ];
    args.extend_from_slice(extra);
    args.push(run.to_str().unwrap());
    glass(&args)
}

fn show(run: &Path, step: u64, extra: &[&str]) -> Value {
    let s = step.to_string();
    let mut args = vec!["data", "show", run.to_str().unwrap(), "--step", &s];
    args.extend_from_slice(extra);
    args.push("--json");
    serde_json::from_str(&ok(&args)).unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected a refusal");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Checks `got` (a `data show --json`) against expected step `want`, rows `lo..`.
fn check_step(got: &Value, want: &Value, lo: usize, what: &str) {
    let rows = got["rows"].as_array().unwrap();
    for (i, r) in rows.iter().enumerate() {
        let k = lo + i;
        assert_eq!(u64s(&r["ids"]), u64s(&want["ids"][k]), "{what} row {k}");
        let seg = &r["segments"][0];
        let meta = &seg["meta"];
        assert_eq!(meta["row"], want["rows"][k], "{what} row {k}");
        assert_eq!(seg["source"], want["stages"][k], "{what} row {k}");
        let file = meta["file"].as_str().unwrap();
        assert!(
            file.ends_with(&format!(
                "{}/{}",
                want["stages"][k].as_str().unwrap(),
                want["files"][k].as_str().unwrap()
            )),
            "{what} row {k}: {file}"
        );
    }
}

#[test]
fn crystalcoder_steps_are_the_reference_rows_across_files_and_stages() {
    let exp = expected();
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let o = import(
        &fixtures().join("data"),
        &run,
        &["--tokenizer", tokenizer().to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["suite"], "crystalcoder");
    assert_eq!(r["n_steps"], exp["n_steps"]);
    assert_eq!(r["row_len"], exp["seq_len"]);
    assert_eq!(r["files"], 5);
    let steps = exp["steps"].as_object().unwrap();
    assert_eq!(steps.len() as u64, exp["n_steps"].as_u64().unwrap());
    for (s, want) in steps {
        let got = show(&run, s.parse().unwrap(), &[]);
        assert_eq!(got["rows"].as_array().unwrap().len(), 4, "step {s}");
        assert_eq!(got["stage"], want["stages"][0], "step {s}");
        check_step(&got, want, 0, &format!("step {s}"));
        assert!(!got["rows"][0]["text"].as_str().unwrap().is_empty());
        // Rank 1 of 2 holds the second half of the global batch.
        let half = show(
            &run,
            s.parse().unwrap(),
            &["--rank", "1", "--world-size", "2"],
        );
        assert_eq!(half["rows"].as_array().unwrap().len(), 2);
        check_step(&half, want, 2, &format!("step {s} rank 1"));
    }
    // Step 1 crosses from data-00000.h5 into data-00001.h5; step 3 crosses a 4-row chunk
    // and a file; stage1's last 2 rows are dropped (step 2 starts stage2).
    assert_eq!(steps["1"]["files"][0], "data-00000.h5");
    assert_eq!(steps["1"]["files"][1], "data-00001.h5");
    assert_eq!(steps["2"]["stages"][0], "stage2");
    let e = stderr(&glass(&["data", "show", &p(&run), "--step", "4"]));
    assert!(e.contains("past the last step"), "{e}");
    let v = ok(&["data", "verify", &p(&run)]);
    assert!(v.contains("checked 6 files"), "{v}");
    // --stages picks and orders the stages: stage2 alone starts at expected step 2.
    let run2 = d.path().join("run2");
    let o = import(&fixtures().join("data"), &run2, &["--stages", "stage2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_step(&show(&run2, 0, &[]), &steps["2"], 0, "stage2 step 0");
    check_step(&show(&run2, 1, &[]), &steps["3"], 0, "stage2 step 1");
    // One folder of .h5 files is one stage.
    let run3 = d.path().join("run3");
    let o = import(&fixtures().join("data/stage1"), &run3, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_step(&show(&run3, 1, &[]), &steps["1"], 0, "flat step 1");
}

#[test]
fn bad_hdf5_input_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    // The modelzoo-shaped mistakes, each written by h5py.
    for (name, want) in [
        ("no_data.h5", "no dataset `data`"),
        ("wrong_shape.h5", "shape [2, 2, 6]"),
        ("floats.h5", "only integers"),
        ("count_mismatch.h5", "n_examples = 3"),
    ] {
        let dir = d.path().join(name.trim_end_matches(".h5"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("bad").join(name), dir.join(name)).unwrap();
        let run = d.path().join(format!("run-{name}"));
        let e = stderr(&import(&dir, &run, &[]));
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        assert!(!run.exists());
    }
    let data = d.path().join("data");
    copy_dir(&fixtures().join("data"), &data);
    let f = data.join("stage1/data-00000.h5");
    let good = std::fs::read(&f).unwrap();
    // Truncated, and not HDF5 at all.
    for (bytes, want) in [
        (good[..good.len() / 2].to_vec(), "data-00000.h5"),
        (b"not an hdf5 file".to_vec(), "no HDF5 signature"),
    ] {
        std::fs::write(&f, &bytes).unwrap();
        let e = stderr(&import(&data, &d.path().join("r1"), &[]));
        assert!(e.contains("data-00000.h5") && e.contains(want), "{e}");
    }
    std::fs::write(&f, &good).unwrap();
    // Rows of another length than --seq-len.
    let e = stderr(&import(&data, &d.path().join("r2"), &["--seq-len", "5"]));
    assert!(
        e.contains("data-00000.h5") && e.contains("--seq-len"),
        "{e}"
    );
    // A stage that is not there, and a folder without .h5 files.
    let e = stderr(&import(
        &data,
        &d.path().join("r3"),
        &["--stages", "stage9"],
    ));
    assert!(e.contains("stage9"), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = stderr(&import(&empty, &d.path().join("r4"), &[]));
    assert!(e.contains("no .h5 files"), "{e}");
    // Imported while good, then a compressed chunk changed (same length): show names the
    // file at the step that reads it, verify names it too.
    let run = d.path().join("r5");
    let o = import(&data, &run, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b = good.clone();
    // The last chunk of data-00000.h5 (row 4, read by step 1) is the file's tail.
    let n = b.len();
    for x in &mut b[n - 16..n - 4] {
        *x ^= 0x5a;
    }
    std::fs::write(&f, &b).unwrap();
    let e = stderr(&glass(&["data", "show", &p(&run), "--step", "1"]));
    assert!(e.contains("data-00000.h5"), "{e}");
    let o = glass(&["data", "verify", &p(&run)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(stderr(&o).contains("1 mismatch"), "{out}");
    assert!(
        out.contains("data-00000.h5") && out.contains("sha256"),
        "{out}"
    );
    // A changed length is caught before anything is read.
    std::fs::write(&f, &good[..n - 1]).unwrap();
    let e = stderr(&glass(&["data", "show", &p(&run), "--step", "0"]));
    assert!(e.contains("data-00000.h5") && e.contains("bytes"), "{e}");
}

/// `glass serve` on a folder holding an external-data run: it is listed (not its `data/`
/// folder, whose manifest is not a run's) and its batches are served as `data show` gives
/// them.
#[test]
fn serve_lists_an_external_data_run_and_serves_its_batches() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("runs/crystal");
    let o = import(&fixtures().join("data"), &run, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_glass"))
        .args(["serve", &p(&d.path().join("runs")), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.split("http://").nth(1)?.split('/').next()?.parse().ok())
        .expect("glass serve prints its URL");
    let get = |t: &str| -> (u16, Value) {
        let r = glass_bench::http::get(addr, t).unwrap();
        (r.status, serde_json::from_slice(&r.body).unwrap())
    };
    let (status, runs) = get("/api/runs");
    let (status1, batch) = get("/api/runs/crystal/data?step=3");
    let (status2, past) = get("/api/runs/crystal/data?step=4");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["id"], "crystal");
    assert!(runs[0]["error"].is_null(), "{runs}");
    assert_eq!(status1, 200, "{batch}");
    assert_eq!(batch["n_steps"], 4);
    check_step(
        &batch["batch"],
        &expected()["steps"]["3"],
        0,
        "served step 3",
    );
    assert_eq!(status2, 404, "{past}");
}
