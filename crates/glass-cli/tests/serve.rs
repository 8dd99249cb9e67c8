//! `glass serve` through the real binary on a tiny trained run (a parent, a branch of
//! it, an index): the JSON API answers with the run's own numbers, refuses traversal and
//! absurd parameters with a 4xx and never a file outside the runs, reads while a writer
//! holds the database, and writes nothing. The headless-Chromium tests are `#[ignore]`
//! (`cargo test --workspace` needs no browser); `.ci/run` installs Chromium and runs
//! them with `--ignored`. On failure they save screenshots under
//! `target/serve-screenshots/`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use glass_bench::http::{get, Reply};
use serde_json::Value;

mod common;
use common::{ok, p, small_run};

const SECRET: &str = "GLASS-SERVE-SECRET-7f3a";

/// runs/parent (trained with a configured skip and a guard rollback, indexed) and
/// runs/branch (continuing the parent from checkpoint 3), plus a secret file beside
/// them that must never be served.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // A static is never dropped: keep it under cargo's scratch directory, not /tmp.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        std::fs::write(tmp.path().join("secret.txt"), SECRET).unwrap();
        let runs = tmp.path().join("runs");
        let parent = runs.join("parent");
        small_run(&parent, &[10]);
        ok(&["train", &p(&parent), "--quiet", "--inject-nan-at-step", "6"]);
        ok(&["index", &p(&parent), "--quiet"]);
        let branch = runs.join("branch");
        ok(&[
            "init",
            &p(&branch),
            "--from",
            &p(&parent),
            "--checkpoint",
            "3",
        ]);
        ok(&[
            "train",
            &p(&branch),
            "--quiet",
            "--from",
            &p(&parent),
            "--checkpoint",
            "3",
            "--continue",
        ]);
        tmp
    })
    .path()
}

fn parent() -> PathBuf {
    fixture().join("runs/parent")
}

/// A running `glass serve` (killed on drop).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glass"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("glass serve starts");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            addr = Some(rest.split('/').next().unwrap().parse().unwrap());
            break;
        }
    }
    let Some(addr) = addr else {
        let mut e = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut e).unwrap();
        panic!("glass serve printed no URL: {e}");
    };
    Server { child, addr }
}

impl Server {
    fn get(&self, target: &str) -> Reply {
        get(self.addr, target).unwrap_or_else(|e| panic!("GET {target}: {e}"))
    }

    fn json(&self, target: &str) -> Value {
        let r = self.get(target);
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

fn json_out(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

#[test]
fn api_answers_with_the_runs_own_numbers() {
    let dir = fixture();
    let s = serve(&[&p(&dir.join("runs"))]);
    let runs = s.json("/api/runs");
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["branch", "parent"]);
    // Lineage: the branch names its parent's served id and checkpoint.
    let b = &runs[0];
    assert_eq!(b["parent"]["served_id"], "parent");
    assert_eq!(b["parent"]["checkpoint"], 3);
    let sum = s.json("/api/runs/parent");
    assert_eq!(sum["branches"][0]["id"], "branch");
    assert_eq!(sum["has_index"], true);

    // Every per-step column equals `glass metrics --json`.
    let steps = json_out(&["metrics", &p(&parent()), "--json"]);
    let steps = steps.as_array().unwrap();
    assert!(steps.len() > 20);
    for col in ["loss", "lr", "grad_norm", "tokens_per_s"] {
        let c = s.json(&format!("/api/runs/parent/series/{col}"));
        assert_eq!(c["downsampled"], false);
        let want: Vec<&Value> = steps.iter().map(|r| &r[col]).collect();
        let got: Vec<&Value> = c["values"].as_array().unwrap().iter().collect();
        assert_eq!(got, want, "{col}");
        let st: Vec<&Value> = steps.iter().map(|r| &r["step"]).collect();
        assert_eq!(
            c["steps"].as_array().unwrap().iter().collect::<Vec<_>>(),
            st
        );
    }
    let ck = json_out(&["metrics", &p(&parent()), "--checkpoints", "--json"]);
    let v = s.json("/api/runs/parent/series/val_loss");
    let want: Vec<&Value> = ck
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["val_loss"])
        .collect();
    assert_eq!(
        v["values"].as_array().unwrap().iter().collect::<Vec<_>>(),
        want
    );

    // Downsampled: at most 5 points per bucket, first and last kept, the extremes kept.
    let d = s.json("/api/runs/parent/series/loss?width=2");
    assert_eq!(d["downsampled"], true);
    let dv = d["values"].as_array().unwrap();
    assert!(dv.len() <= 10 && dv.len() >= 4, "{d}");
    let all: Vec<f64> = steps.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    let max = all.iter().cloned().fold(f64::MIN, f64::max);
    assert!(dv.iter().any(|v| v.as_f64() == Some(max)));

    // CSV download: every step.
    let csv = s.get("/api/runs/parent/series/loss?format=csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    assert_eq!(text.lines().next(), Some("step,tokens,loss"));
    assert_eq!(text.lines().count(), steps.len() + 1);

    // Events: the configured skip and the guard's rollback, with their steps.
    let ev = s.json("/api/runs/parent/events");
    let kinds: Vec<(&str, u64)> = ev
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["step"].is_u64())
        .map(|e| (e["kind"].as_str().unwrap(), e["step"].as_u64().unwrap()))
        .collect();
    assert!(kinds.contains(&("rollback", 6)), "{kinds:?}");
    assert!(kinds.contains(&("skip", 10)), "{kinds:?}");

    // Checkpoints: the manifest's hashes, state checked, commands, the branch listed.
    let info = json_out(&["info", &p(&parent()), "--json"]);
    let cks = s.json("/api/runs/parent/checkpoints");
    let cks = cks.as_array().unwrap();
    assert_eq!(cks.len(), info["checkpoints"].as_array().unwrap().len());
    for (c, i) in cks.iter().zip(info["checkpoints"].as_array().unwrap()) {
        assert_eq!(c["sha256"], i["sha256"]);
        assert_eq!(c["step"], i["step"]);
        assert_eq!(c["state_ok"], true);
    }
    assert_eq!(cks[3]["branches"][0], "branch");
    assert!(cks[2]["commands"]["replay"]
        .as_str()
        .unwrap()
        .ends_with("--replay 2"));
    let v = s.json("/api/runs/parent/checkpoints/2/verify");
    assert_eq!(v["ok"], true, "{v}");

    // Data: exactly `glass data show --json`, plus each segment's text.
    for step in [0u64, 7] {
        let want = json_out(&[
            "data",
            "show",
            &p(&parent()),
            "--step",
            &step.to_string(),
            "--json",
        ]);
        let got = s.json(&format!("/api/runs/parent/data?step={step}"));
        assert_eq!(got["batch"], want, "step {step}");
        assert_eq!(
            got["segment_text"].as_array().unwrap().len(),
            want["rows"].as_array().unwrap().len()
        );
    }
    // The branch's rows are read where its data manifest says (the parent's).
    let want = json_out(&[
        "data",
        "show",
        &p(&dir.join("runs/branch")),
        "--step",
        "13",
        "--json",
    ]);
    assert_eq!(s.json("/api/runs/branch/data?step=13")["batch"], want);

    // Trace: what `glass trace --text` reports.
    let row = &json_out(&["data", "show", &p(&parent()), "--step", "3", "--json"])["rows"][0];
    let text: String = row["text"].as_str().unwrap().chars().take(40).collect();
    let want = json_out(&[
        "trace",
        &p(&parent()),
        "--text",
        &text,
        "--json",
        "--min-tokens",
        "4",
    ]);
    let q: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
    let got = s.json(&format!("/api/runs/parent/trace?text={q}&min_tokens=4"));
    assert_eq!(got, want);
    assert!(!got["spans"].as_array().unwrap().is_empty());
    // The branch has no index of its own: a clear 404.
    let r = s.get(&format!("/api/runs/branch/trace?text={q}"));
    assert_eq!(r.status, 404);
    assert!(r.text().contains("glass index"), "{}", r.text());

    // Evaluations and memorization: none yet, empty lists rather than errors.
    assert_eq!(
        s.json("/api/runs/parent/evals")["rows"],
        Value::Array(vec![])
    );
    assert_eq!(
        s.json("/api/runs/parent/memorization")["rows"],
        Value::Array(vec![])
    );
    drop(s);
}

#[test]
fn a_single_run_opens_on_its_page_and_pages_are_embedded() {
    let s = serve(&[&p(&parent())]);
    let r = s.get("/");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/runs/parent"));
    let page = s.get("/runs/parent");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/assets/uPlot.iife.min.js"));
    assert!(page.header("content-security-policy").is_some());
    let js = s.get("/assets/uPlot.iife.min.js");
    assert_eq!(js.status, 200);
    assert!(js
        .text()
        .starts_with("/*! https://github.com/leeoniya/uPlot (v1.6.32) */"));
    assert_eq!(s.get("/assets/uPlot.LICENSE").status, 200);
    // On loopback, only loopback host names (no DNS rebinding from another site).
    for (host, status) in [
        ("evil.example", 403),
        ("evil.example:8360", 403),
        ("127.0.0.1.evil.example", 403),
        ("localhost", 200),
        ("[::1]:8360", 200),
    ] {
        let r = glass_bench::http::get_as(s.addr, "/api/runs", host).unwrap();
        assert_eq!(r.status, status, "Host: {host}");
    }
}

/// Targets that try to leave the run table: plain, percent-encoded, double-encoded.
const TRAVERSALS: &[&str] = &[
    "/../secret.txt",
    "/../../../../etc/passwd",
    "/assets/../../secret.txt",
    "/assets/..%2f..%2fsecret.txt",
    "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/assets/%252e%252e%252fsecret.txt",
    "/assets/..%252f..%252fsecret.txt",
    "/assets/%2fetc%2fpasswd",
    "/assets/app.js%00.txt",
    "/assets/",
    "/runs/..%2fsecret.txt",
    "/runs/%2e%2e",
    "/runs/parent/../../secret.txt",
    "/runs/parent%2f..%2f..%2fsecret.txt",
    "/api/runs/..",
    "/api/runs/%2e%2e/series/loss",
    "/api/runs/..%2f..%2fsecret.txt/events",
    "/api/runs/parent%2f..%2f..%2fsecret.txt/events",
    "/api/runs/parent/series/..%2f..%2f..%2fsecret.txt",
    "/api/runs/parent/series/%252e%252e%252fsecret.txt",
    "/api/runs/parent/checkpoints/..%2f..%2fsecret.txt/verify",
    "/api/runs/parent/checkpoints/0%2f..%2f..%2f/verify",
    "/api/runs/parent/data/../../../secret.txt",
    "//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/secret.txt",
    "/runs/parent/secret.txt",
    "/runs/parent/glass.toml",
    "/runs/parent/metrics.sqlite",
    "/api/runs/parent/glass.toml",
];

fn assert_refused(s: &Server, target: &str) {
    let r = get(s.addr, target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
    assert!(
        (400..500).contains(&r.status),
        "GET {target}: {} {}",
        r.status,
        r.text()
    );
    let body = r.text();
    assert!(
        !body.contains(SECRET) && !body.contains("root:"),
        "GET {target} leaked: {body}"
    );
    assert!(!body.contains("[model]"), "GET {target} served a run file");
}

#[test]
fn traversal_unknown_ids_and_absurd_parameters_get_4xx() {
    let s = serve(&[&p(&fixture().join("runs"))]);
    for t in TRAVERSALS {
        assert_refused(&s, t);
    }
    for route in [
        "",
        "/series/loss",
        "/events",
        "/checkpoints",
        "/checkpoints/0/verify",
        "/evals",
        "/memorization",
        "/data?step=0",
        "/trace?text=abc",
    ] {
        for id in [
            "nope",
            "parent2",
            "PARENT",
            "parent%00",
            "%00",
            "parent.",
            "runs",
        ] {
            let t = format!("/api/runs/{id}{route}");
            let r = s.get(&t);
            assert_eq!(r.status, 404, "GET {t}: {}", r.text());
            assert!(r.text().contains("error"));
        }
    }
    let absurd = [
        "/api/runs/parent/data",
        "/api/runs/parent/data?step=",
        "/api/runs/parent/data?step=-1",
        "/api/runs/parent/data?step=NaN",
        "/api/runs/parent/data?step=nan",
        "/api/runs/parent/data?step=inf",
        "/api/runs/parent/data?step=1e309",
        "/api/runs/parent/data?step=3.5",
        "/api/runs/parent/data?step=18446744073709551615",
        "/api/runs/parent/data?step=18446744073709551616",
        "/api/runs/parent/data?step=99999999999",
        "/api/runs/parent/data?step=0&world_size=0",
        "/api/runs/parent/data?step=0&rank=2&world_size=2",
        "/api/runs/parent/data?step=0&rank=-1",
        "/api/runs/parent/data?step=0&world_size=5",
        "/api/runs/parent/data?step=0&rank=7&world_size=1048576",
        "/api/runs/parent/data?step=0&world_size=99999999999999999999",
        "/api/runs/parent/series/loss?width=-1",
        "/api/runs/parent/series/loss?width=NaN",
        "/api/runs/parent/series/loss?width=1e9",
        "/api/runs/parent/series/loss?width=99999999999999999999999",
        "/api/runs/parent/series/loss?from=-5",
        "/api/runs/parent/series/loss?from=10&to=2",
        "/api/runs/parent/series/loss?to=NaN",
        "/api/runs/parent/series/loss?to=18446744073709551615",
        "/api/runs/parent/series/loss?scale=cubic",
        "/api/runs/parent/series/loss?format=xml",
        "/api/runs/parent/series/loss?format=csv&width=-3",
        "/api/runs/parent/series/nope",
        "/api/runs/parent/series/loss%3BDROP%20TABLE%20steps",
        "/api/runs/parent/series/val_loss?width=NaN",
        "/api/runs/parent/checkpoints/-1/verify",
        "/api/runs/parent/checkpoints/NaN/verify",
        "/api/runs/parent/checkpoints/99999/verify",
        "/api/runs/parent/checkpoints/4294967296/verify",
        "/api/runs/parent/trace",
        "/api/runs/parent/trace?text=",
        "/api/runs/parent/trace?text=%20%20",
        "/api/runs/parent/trace?text=abc&min_tokens=NaN",
        "/api/runs/parent/trace?text=abc&min_tokens=-4",
        "/api/runs/parent/trace?text=abc&max_occurrences=1e12",
        "/api/runs/parent/trace?text=abc&checkpoint=99",
        "/api/runs/parent/trace?text=abc&checkpoint=-1",
        "/api/runs/parent/trace?text=abc&checkpoint=latest%00",
    ];
    for t in absurd {
        assert_refused(&s, t);
    }
    let long = format!("/api/runs/parent/trace?text={}", "a".repeat(20_000));
    assert_refused(&s, &long);
    // Still serving after all of that.
    assert_eq!(s.get("/api/runs").status, 200);
    assert_eq!(
        s.get("/api/runs/parent/series/loss?to=9223372036854775807")
            .status,
        200
    );
}

#[test]
fn a_malformed_run_is_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("manifest.json"), "{ not json").unwrap();
    std::fs::write(bad.join("metrics.sqlite"), "not a database at all").unwrap();
    let s = serve(&[&p(&bad)]);
    // The summary names each unreadable part.
    let sum = s.json("/api/runs/bad");
    assert!(
        sum["run"]["error"]
            .as_str()
            .unwrap()
            .contains("manifest.json"),
        "{sum}"
    );
    assert!(
        sum["metrics_error"]
            .as_str()
            .unwrap()
            .contains("metrics.sqlite"),
        "{sum}"
    );
    for t in [
        "/api/runs/bad/series/loss",
        "/api/runs/bad/events",
        "/api/runs/bad/checkpoints",
        "/api/runs/bad/checkpoints/0/verify",
        "/api/runs/bad/evals",
        "/api/runs/bad/memorization",
        "/api/runs/bad/data?step=0",
    ] {
        let r = s.get(t);
        assert!(r.status >= 400, "GET {t}: {}", r.text());
        let v: Value =
            serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{t}: {}", r.text()));
        assert!(v["error"].is_string(), "{t}: {v}");
    }
    assert_eq!(s.get("/runs/bad").status, 200);
    assert_eq!(s.get("/api/runs").status, 200);
    // A path that is not a run is refused at start with the fix.
    let o = common::glass(&["serve", &p(&tmp.path().join("nothing")), "--port", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a run"));
}

/// sha256 and size of every file under `dir` (the reader's -shm file aside).
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().ends_with("-shm") {
                let h = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                out.push((path, h));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn serving_writes_nothing_and_reads_while_a_writer_holds_the_database() {
    // A copy, so the writer below does not disturb the other tests.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("live");
    let st = Command::new("cp")
        .args(["-r", &p(&parent()), &p(&run)])
        .status()
        .unwrap();
    assert!(st.success());
    let before = snapshot(&run);
    let s = serve(&[&p(&run)]);
    for t in [
        "/",
        "/runs/live",
        "/api/runs",
        "/api/runs/live",
        "/api/runs/live/series/loss?width=3",
        "/api/runs/live/events",
        "/api/runs/live/checkpoints",
        "/api/runs/live/checkpoints/1/verify",
        "/api/runs/live/evals",
        "/api/runs/live/memorization",
        "/api/runs/live/data?step=1",
        "/api/runs/live/trace?text=the%20king",
        "/api/runs/live/dynamics",
        "/api/runs/live/inspect?prompt=the%20king&checkpoint=2",
        "/api/runs/live/contamination",
    ] {
        assert!(s.get(t).status < 500, "{t}");
    }
    assert_eq!(snapshot(&run), before, "serving changed the run's files");

    // The trainer's database is in WAL mode: a reader never waits for a writer.
    let db = rusqlite::Connection::open(run.join("metrics.sqlite")).unwrap();
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let n0 = s.json("/api/runs/live/series/loss")["steps"]
        .as_array()
        .unwrap()
        .len();
    db.execute_batch(
        "BEGIN IMMEDIATE; INSERT INTO steps VALUES (1000000, 1.5, 0.001, 1.0, 4000000, 10.0, 0.0);",
    )
    .unwrap();
    // Mid-transaction: the reader answers at once with the last committed state.
    let mid = s.json("/api/runs/live/series/loss");
    assert_eq!(mid["steps"].as_array().unwrap().len(), n0);
    db.execute_batch("COMMIT;").unwrap();
    let after = s.json("/api/runs/live/series/loss");
    assert_eq!(after["steps"].as_array().unwrap().len(), n0 + 1);
    assert_eq!(
        after["steps"].as_array().unwrap().last().unwrap(),
        1_000_000
    );
}

#[test]
fn binding_beyond_loopback_prints_a_warning() {
    let s = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_glass"))
            .args(["serve", &p(&parent()), "--port", "0", "--bind", "0.0.0.0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line
    };
    assert!(s.contains("warning") && s.contains("0.0.0.0"), "{s}");
}

// ---------- headless Chromium ----------

/// The browser to drive; a clear failure when it is missing.
fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(c);
        }
    }
    panic!(
        "these tests drive headless Chromium and none was found on PATH (chromium, chromium-browser, google-chrome); install it: apt-get install -y chromium"
    );
}

fn browser_args(extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1200,1600",
        "--virtual-time-budget=8000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend_from_slice(extra);
    a
}

/// The page's DOM after its scripts ran.
fn dump_dom(url: &str) -> String {
    let o = Command::new(chromium())
        .args(browser_args(&["--dump-dom".into(), url.into()]))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Saves a screenshot of `url` as target/serve-screenshots/NAME.png (for failures).
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/serve-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = Command::new(chromium())
        .args(browser_args(&[
            format!("--screenshot={}", file.display()),
            url.into(),
        ]))
        .output();
    file
}

/// Runs `check` on the page's DOM; on failure saves a screenshot and fails naming it.
fn check_page(url: &str, name: &str, check: impl Fn(&str) -> Result<(), String>) {
    let dom = dump_dom(url);
    if let Err(e) = check(&dom) {
        let shot = screenshot(url, name);
        panic!("{url}: {e}\nscreenshot: {}\nDOM:\n{dom}", shot.display());
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// What the page's scripts recorded as plotted (`<pre id="plotted">`).
fn plotted(dom: &str) -> Result<Value, String> {
    let start = dom.find("id=\"plotted\"").ok_or("no #plotted element")?;
    let open = start + dom[start..].find('>').ok_or("bad #plotted")? + 1;
    let close = open + dom[open..].find("</pre>").ok_or("bad #plotted")?;
    serde_json::from_str(&unescape(&dom[open..close]))
        .map_err(|e| format!("#plotted is not JSON ({e}): {}", &dom[open..close]))
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_run_page_plots_the_databases_values() {
    let s = serve(&[&p(&fixture().join("runs"))]);
    let steps = json_out(&["metrics", &p(&parent()), "--json"]);
    let steps = steps.as_array().unwrap();
    let cks = json_out(&["metrics", &p(&parent()), "--checkpoints", "--json"]);
    let url = format!("http://{}/runs/parent?live=0&smooth=0.6", s.addr);
    check_page(&url, "run-page", |dom| {
        if !dom.contains("data-charts-drawn=\"6\"") {
            return Err("the page did not draw its 6 charts".into());
        }
        let v = plotted(dom)?;
        for col in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            let c = &v["curves"]["charts"][col];
            let xs: Vec<&Value> = steps.iter().map(|r| &r["step"]).collect();
            let ys: Vec<&Value> = steps.iter().map(|r| &r[col]).collect();
            if c["x"].as_array().map(|a| a.iter().collect::<Vec<_>>()) != Some(xs) {
                return Err(format!("{col}: x is not the steps: {}", c["x"]));
            }
            // Series 0: the raw points as stored; series 1: their EMA.
            if c["series"][0]
                .as_array()
                .map(|a| a.iter().collect::<Vec<_>>())
                != Some(ys)
            {
                return Err(format!("{col}: plotted {} != SQLite", c["series"][0]));
            }
            let raw: Vec<f64> = steps.iter().map(|r| r[col].as_f64().unwrap()).collect();
            let sm: Vec<f64> = c["series"][1]
                .as_array()
                .ok_or("no smoothed series")?
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            if raw.iter().all(|&r| r == raw[0]) {
                continue;
            }
            // TensorBoard's debiased EMA with weight 0.6.
            let (mut last, mut n) = (0.0f64, 0i32);
            for (i, &r) in raw.iter().enumerate() {
                last = last * 0.6 + 0.4 * r;
                n += 1;
                let want = last / (1.0 - 0.6f64.powi(n));
                if (sm[i] - want).abs() > 1e-9 * want.abs().max(1.0) {
                    return Err(format!("{col}: smoothed[{i}] {} != {want}", sm[i]));
                }
            }
        }
        let vl = &v["curves"]["charts"]["val_loss"]["series"][0];
        let want: Vec<&Value> = cks
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["val_loss"])
            .collect();
        if vl.as_array().map(|a| a.iter().collect::<Vec<_>>()) != Some(want) {
            return Err(format!("val_loss plotted {vl}"));
        }
        // The guard's rollback at step 6 and the configured skip at 10 are marked.
        let marks = v["curves"]["marks"].as_array().ok_or("no marks")?;
        for (kind, step) in [("rollback", 6), ("skip", 10), ("checkpoint", 4)] {
            if !marks.iter().any(|m| m["kind"] == kind && m["step"] == step) {
                return Err(format!("no {kind} mark at step {step}"));
            }
        }
        Ok(())
    });
    // Clicking the highest loss opens the batch of its step.
    let (top, _) = steps
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    let url = format!("http://{}/runs/parent?live=0&click=loss:{top}", s.addr);
    check_page(&url, "click", |dom| {
        if !dom.contains(&format!("data-data-shown=\"{top}\"")) {
            return Err(format!("clicking step {top} did not open its batch"));
        }
        Ok(())
    });
    // Overlaid with the branch, by tokens: both runs' raw points on one x axis.
    let url = format!(
        "http://{}/runs/parent?live=0&overlay=branch&x=tokens",
        s.addr
    );
    check_page(&url, "overlay", |dom| {
        let v = plotted(dom)?;
        let c = &v["curves"]["charts"]["loss"];
        if c["labels"].as_array().map(|a| a.len()) != Some(4) {
            return Err(format!(
                "expected 4 series (2 runs × raw, smoothed): {}",
                c["labels"]
            ));
        }
        let tokens: Vec<&Value> = steps.iter().map(|r| &r["tokens"]).collect();
        let xs: Vec<&Value> = c["x"].as_array().ok_or("no x")?.iter().collect();
        if !tokens.iter().all(|t| xs.contains(t)) {
            return Err("the parent's token positions are not all on the x axis".into());
        }
        Ok(())
    });
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_data_page_shows_the_rows_of_data_show() {
    let s = serve(&[&p(&fixture().join("runs"))]);
    let want = json_out(&["data", "show", &p(&parent()), "--step", "5", "--json"]);
    let url = format!("http://{}/runs/parent?tab=data&step=5&live=0", s.addr);
    check_page(&url, "data-page", |dom| {
        if !dom.contains("data-data-shown=\"5\"") {
            return Err("the data page did not show step 5".into());
        }
        let v = plotted(dom)?;
        if v["data"] != want {
            return Err(format!("rows differ from glass data show: {}", v["data"]));
        }
        for r in want["rows"].as_array().unwrap() {
            let head = format!(
                "row {} (slot {}) source {}:",
                r["row"],
                r["slot"],
                r["source"].as_str().unwrap()
            );
            if !dom.contains(&head) {
                return Err(format!("no `{head}` on the page"));
            }
            for seg in r["segments"].as_array().unwrap() {
                let id = seg["doc_id"].as_str().unwrap();
                if !unescape(dom).contains(id) {
                    return Err(format!("document id {id} not on the page"));
                }
            }
        }
        Ok(())
    });
    // The index lists the branch under the parent's checkpoint 3.
    let url = format!("http://{}/", s.addr);
    check_page(&url, "index", |dom| {
        let at = dom
            .find("checkpoint 3")
            .ok_or("no `checkpoint 3` heading")?;
        let parent = dom.find(">parent</a>").ok_or("no parent link")?;
        let branch = dom.find(">branch</a>").ok_or("no branch link")?;
        if !(parent < at && at < branch) {
            return Err("the branch is not listed under the parent's checkpoint 3".into());
        }
        Ok(())
    });
}

/// A copy of the parent with evaluation results and a memorization matrix written into
/// its database the way `glass eval` and `glass analyze memorization` store them (both
/// take minutes on a real model; the pages only read the tables).
fn copy_with_evals(dst: &Path) {
    let st = Command::new("cp")
        .args(["-r", &p(&parent()), &p(dst)])
        .status()
        .unwrap();
    assert!(st.success());
    let db = rusqlite::Connection::open(dst.join("metrics.sqlite")).unwrap();
    let cks: Vec<(u32, u64)> = {
        let mut q = db
            .prepare("SELECT checkpoint, step FROM checkpoints ORDER BY checkpoint")
            .unwrap();
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS memorization(
           checkpoint INTEGER NOT NULL, chunk INTEGER NOT NULL, step INTEGER NOT NULL,
           samples INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
           continuation_tokens INTEGER NOT NULL, n INTEGER NOT NULL,
           token_match REAL NOT NULL, full_match REAL NOT NULL,
           settings_sha256 TEXT NOT NULL, result_path TEXT NOT NULL,
           result_sha256 TEXT NOT NULL, seconds REAL, wall_time REAL,
           PRIMARY KEY (checkpoint, chunk));",
    )
    .unwrap();
    for &(k, step) in &cks {
        let kf = k as f64;
        db.execute(
            "INSERT INTO evals VALUES (?1, 'cloze', 'acc', ?2, ?3, 300)",
            rusqlite::params![k, 0.25 + 0.01 * kf, 0.02 + 0.001 * kf],
        )
        .unwrap();
        db.execute(
            "INSERT INTO evals VALUES (?1, 'heldout', 'bits_per_byte', ?2, NULL, 40)",
            rusqlite::params![k, 4.5 - 0.05 * kf],
        )
        .unwrap();
        for c in 0..3u64 {
            db.execute(
                "INSERT INTO memorization VALUES (?1, ?2, ?3, 16, 8, 8, 16, ?4, ?5, 'x', 'r.json', 'y', 0, 0)",
                rusqlite::params![k, c as i64, step as i64, 0.1 * kf / 11.0 + 0.01 * c as f64, 0.05 * kf / 11.0],
            )
            .unwrap();
        }
    }
}

#[test]
fn evaluations_and_memorization_are_the_stored_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ev");
    copy_with_evals(&run);
    let s = serve(&[&p(&run)]);
    let want = json_out(&["metrics", &p(&run), "--evals", "--json"]);
    assert_eq!(s.json("/api/runs/ev/evals")["rows"], want);
    let want = json_out(&["metrics", &p(&run), "--memorization", "--json"]);
    assert_eq!(s.json("/api/runs/ev/memorization")["rows"], want);
    assert!(!want.as_array().unwrap().is_empty());
    let cks = s.json("/api/runs/ev/checkpoints");
    assert_eq!(cks[2]["evals"].as_array().unwrap().len(), 2);
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_evals_tab_plots_each_metric_with_its_stderr_band() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ev");
    copy_with_evals(&run);
    let s = serve(&[&p(&run)]);
    let rows = json_out(&["metrics", &p(&run), "--evals", "--json"]);
    let cks = json_out(&["metrics", &p(&run), "--checkpoints", "--json"]);
    let step_of = |k: &Value| {
        cks.as_array()
            .unwrap()
            .iter()
            .find(|c| &c["checkpoint"] == k)
            .unwrap()["step"]
            .clone()
    };
    let url = format!("http://{}/runs/ev?tab=evals&live=0", s.addr);
    check_page(&url, "evals", |dom| {
        let v = plotted(dom)?;
        for (key, task, metric) in [
            ("cloze / acc", "cloze", "acc"),
            ("heldout / bits_per_byte", "heldout", "bits_per_byte"),
        ] {
            let want: Vec<&Value> = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["task"] == task && r["metric"] == metric)
                .collect();
            let e = &v["evals"][key];
            let xs: Vec<Value> = want.iter().map(|r| step_of(&r["checkpoint"])).collect();
            if e["x"].as_array() != Some(&xs) {
                return Err(format!("{key}: x {} is not the checkpoints' steps", e["x"]));
            }
            for (i, r) in want.iter().enumerate() {
                let (val, se) = (
                    r["value"].as_f64().unwrap(),
                    r["stderr"].as_f64().unwrap_or(0.0),
                );
                let got = |f: &str| e[f][i].as_f64().unwrap_or(f64::NAN);
                if got("y") != val
                    || (got("hi") - (val + se)).abs() > 1e-12
                    || (got("lo") - (val - se)).abs() > 1e-12
                {
                    return Err(format!("{key}[{i}]: {} vs {r}", e));
                }
            }
        }
        let memo = v["memorization"]
            .as_array()
            .ok_or("no memorization matrix")?;
        if memo.len() != cks.as_array().unwrap().len() * 3 {
            return Err(format!("{} memorization cells", memo.len()));
        }
        for f in ["full_match", "token_match"] {
            if !dom.contains(&format!("data-field=\"{f}\"")) {
                return Err(format!("no {f} heatmap"));
            }
        }
        Ok(())
    });
}

/// One request on its own connection, with a read deadline: (status, body).
fn get_within(addr: SocketAddr, target: &str, secs: u64) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(secs)))
        .unwrap();
    write!(
        c,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut b = Vec::new();
    if let Err(e) = c.read_to_end(&mut b) {
        panic!("GET {target}: no answer within {secs} s ({e}): the server hangs");
    }
    let text = String::from_utf8_lossy(&b).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5): utime and stime, in clock ticks (fields 3.. here).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The dashboard's checkpoint verification is bounded: a checkpoint file replaced by a
/// FIFO or a link to `/dev/zero` is named at once (it hung, and kept a CPU busy), and a
/// long verification stops when its client goes away instead of hashing on.
#[test]
fn checkpoint_verification_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let st = Command::new("cp")
        .args(["-r", &p(&parent()), &p(&run)])
        .status()
        .unwrap();
    assert!(st.success());
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let file = |k: usize, name: &str| {
        run.join(
            m["checkpoints"][k]["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap())
                .find(|p| p.ends_with(name))
                .unwrap(),
        )
    };
    let s = serve(&[&p(&run)]);
    let model = file(1, "model.safetensors");
    let saved = tmp.path().join("saved");
    std::fs::rename(&model, &saved).unwrap();
    common::mkfifo(&model);
    let (status, body) = get_within(s.addr, "/api/runs/run/checkpoints/1/verify", 60);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"ok\":false") && body.contains("FIFO"),
        "{body}"
    );
    std::fs::remove_file(&model).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &model).unwrap();
    let (_, body) = get_within(s.addr, "/api/runs/run/checkpoints/1/verify", 60);
    assert!(
        body.contains("\"ok\":false") && body.contains("symbolic link"),
        "{body}"
    );
    std::fs::remove_file(&model).unwrap();
    std::fs::rename(&saved, &model).unwrap();
    let (_, body) = get_within(s.addr, "/api/runs/run/checkpoints/1/verify", 60);
    assert!(body.contains("\"ok\":true"), "{body}");

    // A long verification: checkpoint 2's optimizer file recorded (forged) as 64 GiB and
    // made a sparse file of that size, so hashing it takes tens of seconds.
    let opt = file(2, "optimizer.safetensors");
    let mut forged = m.clone();
    for f in forged["checkpoints"][2]["files"].as_array_mut().unwrap() {
        if f["path"]
            .as_str()
            .unwrap()
            .ends_with("optimizer.safetensors")
        {
            f["bytes"] = (64u64 << 30).into();
        }
    }
    std::fs::write(
        run.join("manifest.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&opt)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let pid = s.child.id();
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    std::io::Write::write_all(
        &mut c,
        format!(
            "GET /api/runs/run/checkpoints/2/verify HTTP/1.1\r\nHost: {}\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let window = std::time::Duration::from_secs(3);
    let c0 = cpu_seconds(pid);
    std::thread::sleep(window);
    let busy = cpu_seconds(pid) - c0;
    drop(c); // the client goes away
    std::thread::sleep(std::time::Duration::from_secs(1));
    let c1 = cpu_seconds(pid);
    std::thread::sleep(window);
    let after = cpu_seconds(pid) - c1;
    assert!(busy > 0.2, "the verification did not run ({busy} CPU s)");
    assert!(
        after < busy / 4.0,
        "the server kept hashing after its client left: {after} CPU s in {window:?} after, {busy} before"
    );
    // And it answers at once afterwards.
    let (status, _) = get_within(s.addr, "/api/runs/run/checkpoints/1/verify", 60);
    assert_eq!(status, 200);
}

// ---------- model internals: dynamics, inspect, contamination ----------

/// Per-source held-out losses as the dynamics table stores them (kind `source_*`, name
/// the source or `stage/source`): a known value per (kind, source, checkpoint).
const SOURCES: [&str; 3] = ["books", "code", "s1/web"];
fn source_value(kind: &str, source: usize, k: u32) -> f64 {
    let base = if kind == "source_bits_per_byte" {
        2.0
    } else {
        5.0
    };
    base + 0.5 * source as f64 - 0.125 * k as f64
}

/// runs/dyn: a copy of the parent with `glass analyze dynamics` run on every checkpoint,
/// per-source losses added to its dynamics table, `glass data contamination` run with the
/// bundled tasks, and evaluation rows for those tasks.
fn internals_run() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let run = tmp.path().join("dyn");
        let st = Command::new("cp")
            .args(["-r", &p(&parent()), &p(&run)])
            .status()
            .unwrap();
        assert!(st.success());
        ok(&["analyze", "dynamics", &p(&run), "--quiet"]);
        ok(&["data", "contamination", &p(&run)]);
        let db = rusqlite::Connection::open(run.join("metrics.sqlite")).unwrap();
        let cks: Vec<u32> = {
            let mut q = db
                .prepare("SELECT DISTINCT checkpoint FROM dynamics ORDER BY checkpoint")
                .unwrap();
            let rows = q.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert!(cks.len() > 3, "{cks:?}");
        // The analysis scored the run's one validation source; three sources with known
        // values replace it, so the chart can be checked line by line and value by value.
        let real = db
            .execute("DELETE FROM dynamics WHERE kind LIKE 'source_%'", [])
            .unwrap();
        assert!(real > 0, "glass analyze dynamics stored no per-source loss");
        for &k in &cks {
            for kind in ["source_nats_per_token", "source_bits_per_byte"] {
                for (i, s) in SOURCES.iter().enumerate() {
                    db.execute(
                        "INSERT INTO dynamics VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![k, kind, s, source_value(kind, i, k)],
                    )
                    .unwrap();
                }
            }
            for (task, metric, v) in [
                ("glass_cloze", "acc", 0.25 + 0.01 * k as f64),
                ("glass_heldout", "bits_per_byte", 4.5 - 0.05 * k as f64),
            ] {
                db.execute(
                    "INSERT INTO evals VALUES (?1, ?2, ?3, ?4, NULL, 40)",
                    rusqlite::params![k, task, metric, v],
                )
                .unwrap();
            }
        }
        tmp
    })
    .path()
}

fn dyn_run() -> PathBuf {
    internals_run().join("dyn")
}

/// `glass inspect --json` of `prompt` at checkpoint `k` with attention `layer`, `head`.
fn cli_inspect(prompt: &str, k: &str, layer: usize, head: usize) -> Value {
    json_out(&[
        "inspect",
        &p(&dyn_run()),
        "--prompt",
        prompt,
        "--checkpoint",
        k,
        "--layer",
        &layer.to_string(),
        "--head",
        &head.to_string(),
        "--json",
    ])
}

fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

const PROMPT: &str = "ROMEO.\nBut soft, what light";

#[test]
fn internals_api_answers_with_the_stored_rows_and_glass_inspect() {
    let run = dyn_run();
    let s = serve(&[&p(&run)]);

    // Dynamics: every row `glass metrics --dynamics --json` lists, steps from the manifest.
    let want = json_out(&["metrics", &p(&run), "--dynamics", "--json"]);
    let d = s.json("/api/runs/dyn/dynamics");
    assert_eq!(d["rows"], want);
    let kinds = d["kinds"].as_object().unwrap();
    for k in [
        "induction",
        "prev_token",
        "weight_norm",
        "source_nats_per_token",
    ] {
        assert!(kinds[k].as_u64().unwrap() > 0, "{k}: {kinds:?}");
    }
    let info = json_out(&["info", &p(&run), "--json"]);
    for (c, i) in d["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .zip(info["checkpoints"].as_array().unwrap())
    {
        assert_eq!(c["step"], i["step"]);
    }
    let only = s.json("/api/runs/dyn/dynamics?kind=source_*,induction");
    let rows = only["rows"].as_array().unwrap();
    assert!(rows
        .iter()
        .all(|r| r["kind"] == "induction" || r["kind"].as_str().unwrap().starts_with("source_")));
    let n_src = want
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"].as_str().unwrap().starts_with("source_"))
        .count();
    assert_eq!(
        rows.len(),
        n_src + kinds["induction"].as_u64().unwrap() as usize
    );
    assert_eq!(only["kinds"], d["kinds"]);

    // Inspect: exactly what `glass inspect --json` prints, for an index and for latest.
    let last = info["checkpoints"].as_array().unwrap().len() - 1;
    for (k, kq) in [("2".to_string(), "2"), (last.to_string(), "latest")] {
        let want = cli_inspect(PROMPT, &k, 0, 1);
        let got = s.json(&format!(
            "/api/runs/dyn/inspect?prompt={}&checkpoint={kq}&layer=0&head=1",
            pct(PROMPT)
        ));
        for f in [
            "tokens",
            "layers",
            "lens",
            "attention",
            "checkpoint",
            "step",
            "token_text",
        ] {
            assert_eq!(got[f], want[f], "checkpoint {kq}: {f}");
        }
        assert_eq!(got["heads"], 2);
        assert_eq!(got["max_seq_len"], 32);
        // Every token id in the reply has its text.
        for c in got["lens"][0].as_array().unwrap() {
            let t = c["top"][0]["token"].to_string();
            assert!(got["strings"][&t].is_string(), "no text for token {t}");
        }
    }
    let top = s.json(&format!(
        "/api/runs/dyn/inspect?prompt={}&top_k=3",
        pct("To be")
    ));
    assert_eq!(top["lens"][1][0]["top"].as_array().unwrap().len(), 3);

    // Contamination: the per-task counts of analysis/contamination.json.
    let report: Value =
        serde_json::from_slice(&std::fs::read(run.join("analysis/contamination.json")).unwrap())
            .unwrap();
    let c = s.json("/api/runs/dyn/contamination");
    assert_eq!(c["present"], true);
    assert_eq!(c["ngram"], report["ngram"]);
    let tasks = c["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), report["tasks"].as_array().unwrap().len());
    for (a, b) in tasks.iter().zip(report["tasks"].as_array().unwrap()) {
        for f in ["task", "items", "too_short", "contaminated"] {
            assert_eq!(a[f], b[f], "{f}");
        }
    }
    assert!(tasks.iter().any(|t| t["task"] == "glass_cloze"));
    // A run without the report: absent, not an error.
    let s2 = serve(&[&p(&parent())]);
    assert_eq!(s2.json("/api/runs/parent/contamination")["present"], false);
    assert_eq!(
        s2.json("/api/runs/parent/dynamics")["rows"],
        Value::Array(vec![])
    );
}

#[test]
fn internals_refuse_bad_input_with_a_clear_4xx() {
    let s = serve(&[&p(&dyn_run())]);
    let q = pct(PROMPT);
    // (target, status, words the error must contain)
    let long_bytes = "a".repeat(9000);
    let long_tokens = "the king is dead, long live the king. ".repeat(20);
    let cases: Vec<(String, u16, &str)> = vec![
        ("/api/runs/dyn/inspect".into(), 400, "prompt"),
        ("/api/runs/dyn/inspect?prompt=".into(), 400, "prompt"),
        (
            format!("/api/runs/dyn/inspect?prompt={long_bytes}"),
            400,
            "bytes",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={}", pct(&long_tokens)),
            400,
            "context (max_seq_len 32)",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&layer=1"),
            400,
            "layer 1 is out of range",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&head=2"),
            400,
            "head 2 is out of range",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&layer=-1"),
            400,
            "layer",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&layer=NaN"),
            400,
            "layer",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&head=99999999999999999999"),
            400,
            "head",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&top_k=21"),
            400,
            "top_k",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&top_k=1e3"),
            400,
            "top_k",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&checkpoint=99"),
            404,
            "no checkpoint 99",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&checkpoint=-1"),
            400,
            "checkpoint",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&checkpoint=latest%00"),
            400,
            "checkpoint",
        ),
        (
            format!("/api/runs/dyn/inspect?prompt={q}&checkpoint=4294967296"),
            400,
            "checkpoint",
        ),
        ("/api/runs/dyn/dynamics?kind=".into(), 400, "kind"),
        ("/api/runs/dyn/dynamics?kind=a*b".into(), 400, "kind"),
        (
            "/api/runs/dyn/dynamics?kind=x%3BDROP%20TABLE".into(),
            400,
            "kind",
        ),
        (
            format!("/api/runs/dyn/dynamics?kind={}", "a,".repeat(40)),
            400,
            "kind",
        ),
    ];
    for (t, status, words) in &cases {
        let (got, body) = get_within(s.addr, t, 60);
        assert_eq!(got, *status, "GET {t}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{t}: {body}"));
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{t}: {body}"));
        assert!(msg.contains(words), "GET {t}: `{msg}` lacks `{words}`");
    }
    for route in ["/dynamics", "/inspect?prompt=a", "/contamination"] {
        for id in ["nope", "dyn%00", "..", "dyn2"] {
            let t = format!("/api/runs/{id}{route}");
            let r = s.get(&t);
            assert_eq!(r.status, 404, "GET {t}: {}", r.text());
        }
    }
    // Requests at once (more checkpoints than the model cache holds) queue for the one
    // inspection slot and all get their own checkpoint's answer.
    let addr = s.addr;
    let threads: Vec<_> = (0..8u32)
        .map(|k| {
            let q = q.clone();
            std::thread::spawn(move || {
                let t = format!("/api/runs/dyn/inspect?prompt={q}&checkpoint={k}&head=1");
                (k, get_within(addr, &t, 120))
            })
        })
        .collect();
    for t in threads {
        let (k, (status, body)) = t.join().unwrap();
        assert_eq!(status, 200, "checkpoint {k}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["checkpoint"], k);
        assert_eq!(
            v["attention"],
            cli_inspect(PROMPT, &k.to_string(), 0, 1)["attention"]
        );
    }
    // Still serving, and still right.
    assert_eq!(
        s.get(&format!("/api/runs/dyn/inspect?prompt={q}")).status,
        200
    );
}

#[test]
fn internals_of_a_damaged_or_partial_run_are_errors_not_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("dmg");
    let st = Command::new("cp")
        .args(["-r", &p(&dyn_run()), &p(&run)])
        .status()
        .unwrap();
    assert!(st.success());
    let s = serve(&[&p(&run)]);
    let q = format!("/api/runs/dmg/inspect?prompt={}&checkpoint=2", pct(PROMPT));
    assert_eq!(s.get(&q).status, 200);
    // The cached model is not used once its file changed: the forged weights are refused.
    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let model = m["checkpoints"][2]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.ends_with("model.safetensors"))
        .unwrap();
    let path = run.join(model);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, &bytes).unwrap();
    let r = s.get(&q);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("sha256"), "{}", r.text());
    // A malformed contamination report names its file and the command that rewrites it.
    std::fs::write(run.join("analysis/contamination.json"), "{ not json").unwrap();
    let r = s.get("/api/runs/dmg/contamination");
    assert_eq!(r.status, 500);
    let t = r.text();
    assert!(
        t.contains("contamination.json") && t.contains("glass data contamination"),
        "{t}"
    );
    // The dashboard's own bound, below a long context: a config claiming 1,024 positions
    // (checked from the config, before any model is loaded).
    let cfg = run.join("glass.toml");
    let t = std::fs::read_to_string(&cfg).unwrap();
    assert!(t.contains("max_seq_len = 32"), "{t}");
    std::fs::write(&cfg, t.replace("max_seq_len = 32", "max_seq_len = 1024")).unwrap();
    let long = "the king is dead, long live the king. ".repeat(60);
    let (status, body) = get_within(
        s.addr,
        &format!("/api/runs/dmg/inspect?prompt={}&checkpoint=1", pct(&long)),
        60,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 512"), "{body}");
    // A run with no checkpoint yet.
    let fresh = tmp.path().join("fresh");
    small_run(&fresh, &[]);
    let s = serve(&[&p(&fresh)]);
    let r = s.get("/api/runs/fresh/inspect?prompt=abc");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no checkpoint"));
    assert_eq!(s.get("/api/runs/fresh/dynamics").status, 200);
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_dynamics_tab_draws_sources_and_marks_first_crossings() {
    let run = dyn_run();
    let s = serve(&[&p(&run)]);
    let rows = json_out(&["metrics", &p(&run), "--dynamics", "--json"]);
    let rows = rows.as_array().unwrap();
    let info = json_out(&["info", &p(&run), "--json"]);
    let step_of = |k: u64| {
        info["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["index"] == k)
            .unwrap()["step"]
            .as_u64()
            .unwrap()
    };
    // A threshold inside the scores' range, so some heads cross it and maybe some not.
    let mut ind: Vec<f64> = rows
        .iter()
        .filter(|r| r["kind"] == "induction")
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    ind.sort_by(f64::total_cmp);
    let thr = (ind[ind.len() / 2] * 1000.0).round() / 1000.0;
    let url = format!(
        "http://{}/runs/dyn?tab=dynamics&live=0&threshold={thr}",
        s.addr
    );
    check_page(&url, "dynamics", |dom| {
        if !dom.contains(&format!("data-dynamics-shown=\"{}\"", rows.len())) {
            return Err("the dynamics tab did not load every row".into());
        }
        let v = plotted(dom)?;
        // Heads: one row per L.H, the first checkpoint above the threshold as computed here.
        let h = &v["heads"];
        if h["threshold"].as_f64() != Some(thr) || h["kind"] != "induction" {
            return Err(format!("threshold/kind {}", h));
        }
        let mut crossings = 0;
        for name in ["L0.H0", "L0.H1"] {
            let mut mine: Vec<(u64, f64)> = rows
                .iter()
                .filter(|r| r["kind"] == "induction" && r["name"] == name)
                .map(|r| {
                    (
                        r["checkpoint"].as_u64().unwrap(),
                        r["value"].as_f64().unwrap(),
                    )
                })
                .collect();
            mine.sort_by_key(|x| x.0);
            let first = mine.iter().find(|x| x.1 > thr).map(|x| x.0);
            let got = h["heads"]
                .as_array()
                .ok_or("no heads")?
                .iter()
                .find(|x| x["name"] == name)
                .ok_or(format!("no row for {name}"))?;
            let vals: Vec<f64> = mine.iter().map(|x| x.1).collect();
            let gv: Vec<f64> = got["values"]
                .as_array()
                .ok_or("no values")?
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect();
            if gv != vals {
                return Err(format!("{name}: values {gv:?} != stored {vals:?}"));
            }
            if got["first_checkpoint"].as_u64() != first
                || got["first_step"].as_u64() != first.map(step_of)
            {
                return Err(format!(
                    "{name}: first crossing {got} != checkpoint {first:?}"
                ));
            }
            crossings += usize::from(first.is_some());
            let row_at = dom
                .find(&format!("data-head=\"{name}\""))
                .ok_or(format!("no table row for {name}"))?;
            let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").unwrap()];
            let want = match first {
                Some(k) => format!("step {} (checkpoint {k})", step_of(k)),
                None => "—".into(),
            };
            if !row.contains(&want) {
                return Err(format!("{name}'s row lacks `{want}`: {row}"));
            }
        }
        if crossings == 0 {
            return Err(format!("no head crosses {thr}: the test checks nothing"));
        }
        if dom.matches("class=\"first\"").count() != crossings {
            return Err("outlined cells != heads that cross the threshold".into());
        }
        // Sources: every kind, one line per source, the inserted values at each step > 0.
        for kind in ["source_nats_per_token", "source_bits_per_byte"] {
            let c = &v["sources"]["kinds"][kind];
            if c["names"] != serde_json::json!(SOURCES) {
                return Err(format!("{kind}: sources {}", c["names"]));
            }
            let xs: Vec<u64> = c["x"]
                .as_array()
                .ok_or("no x")?
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let cks: Vec<u64> = info["checkpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["index"].as_u64().unwrap())
                .filter(|&k| step_of(k) > 0)
                .collect();
            if xs != cks.iter().map(|&k| step_of(k)).collect::<Vec<_>>() {
                return Err(format!(
                    "{kind}: x {xs:?} (log x: every checkpoint step > 0)"
                ));
            }
            for (i, _) in SOURCES.iter().enumerate() {
                for (j, &k) in cks.iter().enumerate() {
                    let want = source_value(kind, i, k as u32);
                    if c["series"][i][j].as_f64() != Some(want) {
                        return Err(format!(
                            "{kind}[{i}][{j}] = {} != {want}",
                            c["series"][i][j]
                        ));
                    }
                }
            }
            let at = dom
                .find(&format!("data-kind=\"{kind}\""))
                .ok_or(format!("no chart for {kind}"))?;
            if !dom[at..].contains("<canvas") {
                return Err(format!("{kind}: no canvas drawn"));
            }
        }
        // Weights: each group's stored norms at each checkpoint's step (> 0, log x).
        for kind in ["weight_norm", "update_norm", "update_cosine"] {
            let mine: Vec<&Value> = rows.iter().filter(|r| r["kind"] == kind).collect();
            let mut groups: Vec<&str> = mine.iter().map(|r| r["name"].as_str().unwrap()).collect();
            groups.sort();
            groups.dedup();
            let mut cks: Vec<u64> = mine
                .iter()
                .map(|r| r["checkpoint"].as_u64().unwrap())
                .collect();
            cks.sort();
            cks.dedup();
            cks.retain(|&k| step_of(k) > 0);
            let c = &v["weights"]["kinds"][kind];
            if c["names"] != serde_json::json!(groups) {
                return Err(format!("{kind}: groups {} != {groups:?}", c["names"]));
            }
            for (i, g) in groups.iter().enumerate() {
                for (j, &k) in cks.iter().enumerate() {
                    let want = &mine
                        .iter()
                        .find(|r| r["name"] == *g && r["checkpoint"] == k)
                        .unwrap()["value"];
                    if &c["series"][i][j] != want || c["x"][j].as_u64() != Some(step_of(k)) {
                        return Err(format!(
                            "{kind} {g} at checkpoint {k}: {} != {want}",
                            c["series"][i][j]
                        ));
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_inspect_tab_draws_the_attention_and_the_lens_of_glass_inspect() {
    let s = serve(&[&p(&dyn_run())]);
    let want = cli_inspect(PROMPT, "3", 0, 1);
    let n = want["tokens"].as_array().unwrap().len();
    let layers = want["layers"].as_u64().unwrap() as usize;
    let url = format!(
        "http://{}/runs/dyn?tab=inspect&live=0&prompt={}&checkpoint=3&layer=0&head=1",
        s.addr,
        pct(PROMPT)
    );
    check_page(&url, "inspect", |dom| {
        if !dom.contains("data-inspect-shown=\"3\"") {
            return Err("the inspect tab did not show checkpoint 3".into());
        }
        let v = plotted(dom)?;
        let r = &v["inspect"];
        if r["lens"] != want["lens"] || r["tokens"] != want["tokens"] {
            return Err("the lens shown is not glass inspect's".into());
        }
        // The canvas, read back pixel by pixel, holds glass inspect's probabilities.
        let probs = &want["attention"][0]["probs"];
        for i in 0..n {
            for j in 0..n {
                let d = &r["drawn"][i][j];
                if j > i {
                    if !d.is_null() {
                        return Err(format!("drawn above the diagonal at {i},{j}"));
                    }
                    continue;
                }
                let (got, p) = (
                    d.as_f64().ok_or("not drawn")?,
                    probs[i][j].as_f64().unwrap(),
                );
                if (got - p).abs() > 0.006 {
                    return Err(format!("attention pixel {i},{j}: {got} vs {p}"));
                }
            }
        }
        // The table: one cell per (stream, position) with the top-1 probability and the
        // rank of the next token.
        if dom.matches("data-cell=\"").count() != (layers + 1) * n {
            return Err("the lens table does not have (layers + 1) × tokens cells".into());
        }
        for l in 0..=layers {
            for pos in 0..n {
                let c = &want["lens"][l][pos];
                let at = dom
                    .find(&format!("data-cell=\"{l}.{pos}\""))
                    .ok_or(format!("no cell {l}.{pos}"))?;
                let cell = &dom[at..at + dom[at..].find("</td>").unwrap()];
                let prob = format!("{:.2}", c["top"][0]["prob"].as_f64().unwrap());
                if !cell.contains(&format!("<small>{prob}</small>")) {
                    return Err(format!("cell {l}.{pos} lacks probability {prob}: {cell}"));
                }
                let rank = match c["next_rank"].as_u64() {
                    Some(k) => format!("#{k}"),
                    None => String::new(),
                };
                if pos + 1 < n && !cell.contains(&rank) {
                    return Err(format!("cell {l}.{pos} lacks rank {rank}: {cell}"));
                }
            }
        }
        Ok(())
    });
    // A prompt beyond the context: the page shows the server's reason.
    let long = "the king is dead, long live the king. ".repeat(20);
    let url = format!(
        "http://{}/runs/dyn?tab=inspect&live=0&prompt={}",
        s.addr,
        pct(&long)
    );
    check_page(&url, "inspect-too-long", |dom| {
        if !dom.contains("context (max_seq_len 32)") {
            return Err("no error naming the context".into());
        }
        Ok(())
    });
}

/// `1172` → `1,172`, as the page writes counts.
fn commas(v: &Value) -> String {
    let d = v.as_u64().unwrap().to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
#[ignore = "needs headless Chromium; .ci/run runs it with --ignored"]
fn browser_evals_tab_shows_each_tasks_contamination_beside_its_curve() {
    // The bundled tasks do not occur in the tiny corpus (0 of each): a copy whose report
    // has other, distinct counts shows that each figure is the right field of the right task.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ct");
    let st = Command::new("cp")
        .args(["-r", &p(&dyn_run()), &p(&run)])
        .status()
        .unwrap();
    assert!(st.success());
    let file = run.join("analysis/contamination.json");
    let mut report: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for (t, (c, n, short)) in report["tasks"].as_array_mut().unwrap().iter_mut().zip([
        (3u64, 1172u64, 5u64),
        (1, 158, 0),
        (2, 29, 1),
    ]) {
        t["contaminated"] = c.into();
        t["items"] = n.into();
        t["too_short"] = short.into();
    }
    std::fs::write(&file, serde_json::to_vec(&report).unwrap()).unwrap();
    let s = serve(&[&p(&run)]);
    assert_eq!(
        s.json("/api/runs/ct/contamination")["tasks"][0]["items"],
        1172
    );
    let url = format!("http://{}/runs/ct?tab=evals&live=0", s.addr);
    check_page(&url, "evals-contamination", |dom| {
        let v = plotted(dom)?;
        let ng = report["ngram"].as_u64().unwrap();
        for (key, task) in [
            ("glass_cloze / acc", "glass_cloze"),
            ("glass_heldout / bits_per_byte", "glass_heldout"),
        ] {
            let t = report["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["task"] == task)
                .unwrap();
            let mut want = format!(
                "{ng}-gram overlap: {}/{} items",
                commas(&t["contaminated"]),
                commas(&t["items"])
            );
            if t["too_short"] != 0 {
                want += &format!(" ({} too short to check)", t["too_short"]);
            }
            let chart = dom
                .find(&format!("data-eval=\"{key}\""))
                .ok_or(format!("no chart for {key}"))?;
            let head = &dom[chart..chart + dom[chart..].find("</h3>").unwrap()];
            if !head.contains(&want) {
                return Err(format!("{key}: `{want}` not beside its curve: {head}"));
            }
            if v["contamination"]["shown"][key]
                .as_str()
                .map(|s| s.starts_with(&want))
                != Some(true)
            {
                return Err(format!("{key}: recorded {}", v["contamination"]["shown"]));
            }
        }
        if !dom.contains("13-gram overlap: 3/1,172 items (5 too short to check)") {
            return Err("glass_cloze's figure is not `3/1,172 items (5 too short …)`".into());
        }
        for t in report["tasks"].as_array().unwrap() {
            if !dom.contains(&format!("data-task=\"{}\"", t["task"].as_str().unwrap())) {
                return Err(format!("{} not in the contamination table", t["task"]));
            }
        }
        Ok(())
    });
}
