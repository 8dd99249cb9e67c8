//! `glass analyze memorization`, `glass index` and `glass trace` on runs over a suite's
//! data read in place (`glass import pythia` / `glass import olmo`), on the small fixtures
//! of `tests/suites.rs`. Every row an analysis reports is compared with the rows the
//! suites' own batch logic reads (`tests/fixtures/suites/expected.json`, written by
//! `tools/fixtures/make_suite_fixtures.py`), the ones `glass data show --step N` must give.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{copy_dir, glass, llm360_tokenizer as tokenizer, ok, p, u64s};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suites")
}

fn hf_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-hf/tests/fixtures/families")
}

fn file_name(s: &str) -> String {
    Path::new(s.split(['@', ':']).next().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The reference rows of one suite: step → rows, and each row's file and document.
struct Reference {
    rows_per_step: u64,
    n_steps: u64,
    steps: BTreeMap<u64, Vec<Vec<u64>>>,
    files: BTreeMap<u64, Vec<String>>,
    docs: BTreeMap<u64, Vec<u64>>,
}

impl Reference {
    fn load(suite: &str) -> Self {
        let e: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("expected.json")).unwrap(),
        )
        .unwrap();
        let e = &e[suite];
        let doc_key = if suite == "pythia" {
            "sequences"
        } else {
            "instances"
        };
        let mut r = Reference {
            rows_per_step: 0,
            n_steps: e["n_steps"].as_u64().unwrap(),
            steps: BTreeMap::new(),
            files: BTreeMap::new(),
            docs: BTreeMap::new(),
        };
        for (s, step) in e["steps"].as_object().unwrap() {
            let s: u64 = s.parse().unwrap();
            let rows: Vec<Vec<u64>> = step["rows"].as_array().unwrap().iter().map(u64s).collect();
            r.rows_per_step = rows.len() as u64;
            r.steps.insert(s, rows);
            r.files.insert(
                s,
                step["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
            );
            r.docs.insert(s, u64s(&step[doc_key]));
        }
        r
    }

    fn row(&self, step: u64, slot: u64) -> Option<&Vec<u64>> {
        self.steps.get(&step).map(|rows| &rows[slot as usize])
    }

    /// Whether every step before `step` is known.
    fn knows_before(&self, step: u64) -> bool {
        (0..step).all(|s| self.steps.contains_key(&s))
    }

    /// Occurrences of `q` inside single rows of the known steps before `step`.
    fn count_before(&self, q: &[u64], step: u64) -> u64 {
        let mut n = 0;
        for (_, rows) in self.steps.range(..step) {
            for r in rows {
                n += r.windows(q.len()).filter(|w| *w == q).count() as u64;
            }
        }
        n
    }
}

/// Imports a fixture run with a tokenizer and two checkpoints (steps 0 and 2).
fn import(suite: &str, d: &Path, with_checkpoints: bool) -> PathBuf {
    let run = d.join(format!("{suite}-run-{with_checkpoints}"));
    let ckpts = d.join(format!("{suite}-ckpts"));
    let tok = tokenizer();
    let mut args: Vec<String> = vec!["import".into(), suite.into()];
    let (family, names) = match suite {
        "pythia" => {
            args.extend(
                [
                    "--data",
                    &p(&fixtures().join("pythia")),
                    "--rows-per-step",
                    "4",
                    "--seq-len",
                    "7",
                ]
                .map(String::from),
            );
            ("gpt_neox", ["step0", "step2"])
        }
        _ => {
            args.extend(
                [
                    "--config",
                    &p(&fixtures().join("olmo/config.yaml")),
                    "--data",
                    &p(&fixtures().join("olmo/data")),
                ]
                .map(String::from),
            );
            ("olmo", ["step0-tokens0", "step2-tokens1K"])
        }
    };
    if with_checkpoints {
        for n in names {
            if !ckpts.join(n).exists() {
                copy_dir(&hf_fixtures().join(family), &ckpts.join(n));
            }
        }
        args.extend(["--checkpoints".into(), p(&ckpts), "--weights-only".into()]);
    }
    args.extend(["--tokenizer".into(), p(&tok), p(&run)]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a);
    run
}

/// Memorization, the index and tracing on one suite's fixture run.
fn analyses_read_the_suites_rows(suite: &str, k: usize) {
    let d = tempfile::tempdir().unwrap();
    let refs = Reference::load(suite);
    let run = import(suite, d.path(), true);
    assert!(
        !run.join("data/chunks").exists(),
        "the data is read in place"
    );

    // The index: every row of every step, copied through the suite's reader.
    let r: Value = serde_json::from_str(&ok(&["index", &p(&run), "--json", "--quiet"])).unwrap();
    let row_len = refs.steps[&0][0].len() as u64;
    assert_eq!(
        r["tokens"].as_u64().unwrap(),
        refs.n_steps * refs.rows_per_step * row_len
    );
    // Unchanged data: the copy and the suffix array are reused.
    let again: Value =
        serde_json::from_str(&ok(&["index", &p(&run), "--json", "--quiet"])).unwrap();
    assert_eq!(again["built"].as_array().unwrap().len(), 0, "{again}");

    // Memorization with the first k tokens as the prompt and the next k compared.
    let kk = k.to_string();
    let out = ok(&[
        "analyze",
        "memorization",
        &p(&run),
        "--prompt-tokens",
        &kk,
        "--continuation-tokens",
        &kk,
        "--log-samples",
        "--with-exposure",
        "--json",
        "--quiet",
    ]);
    let pairs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(pairs.len(), 2, "two checkpoints × one chunk");
    let mut checked_exposure = 0;
    for pair in &pairs {
        let ckpt_step = pair["step"].as_u64().unwrap();
        let samples = pair["samples"].as_array().unwrap();
        assert_eq!(
            samples.len() as u64,
            refs.n_steps * refs.rows_per_step,
            "every row is sampled"
        );
        let mut compared = 0;
        for s in samples {
            let row = s["row"].as_u64().unwrap();
            let o = &s["origin"];
            let (step, slot) = (o["step"].as_u64().unwrap(), o["slot"].as_u64().unwrap());
            assert_eq!(
                (step, slot),
                (row / refs.rows_per_step, row % refs.rows_per_step)
            );
            let Some(want) = refs.row(step, slot) else {
                continue;
            };
            compared += 1;
            assert_eq!(o["doc"].as_u64().unwrap(), refs.docs[&step][slot as usize]);
            assert_eq!(
                file_name(o["file"].as_str().unwrap()),
                refs.files[&step][slot as usize]
            );
            // Each compared position: 1 exactly where the model produced the row's token.
            let generated = u64s(&s["generated"]);
            let matched = u64s(&s["matched"]);
            assert_eq!(generated.len(), k);
            for i in 0..k {
                assert_eq!(
                    matched[i],
                    (generated[i] == want[k + i]) as u64,
                    "step {step} slot {slot} position {i}"
                );
            }
            // The exposure joins the row's true continuation with the index.
            if refs.knows_before(ckpt_step) {
                assert_eq!(
                    s["exposure"].as_u64().unwrap(),
                    refs.count_before(&want[k..2 * k], ckpt_step),
                    "step {step} slot {slot} before step {ckpt_step}"
                );
                checked_exposure += 1;
            }
        }
        assert!(compared >= 3 * refs.rows_per_step as usize);
    }
    assert!(checked_exposure > 0);
    // The rows at steps before checkpoint 1 (step 2) are exposed at least once.
    let late = &pairs[1];
    assert_eq!(late["step"], 2);
    assert!(late["samples"].as_array().unwrap()[0]["exposure"]
        .as_u64()
        .is_some_and(|e| e >= 1));

    // The index through the library: every occurrence of a row's middle is that row's.
    let index = glass_analysis::Index::open(&run).unwrap();
    let (s0, slot0) = (*refs.steps.keys().last().unwrap(), 1u64);
    let want = refs.row(s0, slot0).unwrap();
    let q: Vec<u32> = want[1..want.len() - 1].iter().map(|&x| x as u32).collect();
    let occ = index.occurrences(&q).unwrap();
    let mut found = false;
    for (shard, pos) in &occ {
        let loc = index.shards[*shard].locate(*pos, index.rows_per_step);
        found |= (loc.step, loc.slot, loc.offset) == (s0, slot0, 1);
        if let Some(r) = refs.row(loc.step, loc.slot) {
            let got: Vec<u32> = r[loc.offset as usize..loc.offset as usize + q.len()]
                .iter()
                .map(|&x| x as u32)
                .collect();
            assert_eq!(got, q);
        }
    }
    assert!(found, "the row's own place is found");
    let wide: Vec<u64> = q.iter().map(|&x| x as u64).collect();
    if refs.knows_before(refs.n_steps) {
        assert_eq!(occ.len() as u64, refs.count_before(&wide, refs.n_steps));
    }

    // Tracing the row's ids: every occurrence's step, slot and offset hold the span, with
    // the row's file and document.
    let tok = glass_analysis::trace::run_tokenizer(&run).unwrap();
    let ids: Vec<u32> = want.iter().map(|&x| x as u32).collect();
    let opts = glass_analysis::trace::TraceOptions {
        min_tokens: 2,
        max_occurrences: 100,
        rank: glass_analysis::trace::Rank::Length,
        checkpoint: Some((1, 2)),
    };
    let text = tok.decode(&ids).unwrap();
    let t = glass_analysis::trace::trace(&run, &index, &tok, &text, &ids, &opts).unwrap();
    let t = serde_json::to_value(&t).unwrap();
    let n = check_trace(&refs, &t);
    assert!(n > 0, "{t}");
    assert!(t["spans"][0]["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| (o["step"].as_u64(), o["slot"].as_u64()) == (Some(s0), Some(slot0))));

    // `glass trace --text` on text that encodes back to a piece of a row: the same
    // provenance, in JSON and printed.
    let (text, step, slot) = round_trip_text(&refs, &tok);
    let t: Value = serde_json::from_str(&ok(&[
        "trace",
        &p(&run),
        "--text",
        &text,
        "--min-tokens",
        "1",
        "--checkpoint",
        "latest",
        "--json",
    ]))
    .unwrap();
    assert_eq!(t["checkpoint"], 1);
    assert!(check_trace(&refs, &t) > 0, "{t}");
    let human = ok(&["trace", &p(&run), "--text", &text, "--min-tokens", "1"]);
    assert!(
        human.contains(&format!("step {step} slot {slot}")),
        "{human}"
    );
    let count = ok(&["trace", &p(&run), "--count", &text]);
    assert!(count.contains("occurrences in training"), "{count}");
}

/// The longest piece of a reference row that decodes to text encoding back to it: the
/// text, and the row's step and slot.
fn round_trip_text(refs: &Reference, tok: &glass_data::GlassTokenizer) -> (String, u64, u64) {
    let mut best: Option<(String, u64, u64)> = None;
    for (&step, rows) in &refs.steps {
        for (slot, r) in rows.iter().enumerate() {
            let r: Vec<u32> = r.iter().map(|&x| x as u32).collect();
            for a in 0..r.len() {
                for b in a + 2..=r.len() {
                    let text = tok.decode(&r[a..b]).unwrap();
                    if text.contains('\u{fffd}')
                        || text.trim() != text
                        || tok.encode(&text).unwrap() != r[a..b]
                    {
                        continue;
                    }
                    if best.as_ref().is_none_or(|x| x.0.len() < text.len()) {
                        best = Some((text, step, slot as u64));
                    }
                }
            }
        }
    }
    best.expect("some piece of a row encodes back to itself")
}

/// Checks every occurrence of a trace whose step is known against the reference rows;
/// returns how many were checked.
fn check_trace(refs: &Reference, t: &Value) -> usize {
    let mut occurrences = 0;
    for span in t["spans"].as_array().unwrap() {
        let toks = u64s(&span["tokens"]);
        for o in span["occurrences"].as_array().unwrap() {
            let (step, slot, off) = (
                o["step"].as_u64().unwrap(),
                o["slot"].as_u64().unwrap(),
                o["offset"].as_u64().unwrap() as usize,
            );
            assert_eq!(o["row"].as_u64().unwrap(), step * refs.rows_per_step + slot);
            let Some(r) = refs.row(step, slot) else {
                continue;
            };
            occurrences += 1;
            assert_eq!(r[off..off + toks.len()], toks[..], "{o}");
            assert_eq!(o["doc"].as_u64().unwrap(), refs.docs[&step][slot as usize]);
            assert_eq!(
                file_name(o["doc_id"].as_str().unwrap()),
                refs.files[&step][slot as usize]
            );
            assert_eq!(
                u64s(&o["doc_tokens"]),
                vec![off as u64, (off + toks.len()) as u64]
            );
            assert!(!o["source"].as_str().unwrap().is_empty());
        }
    }
    occurrences
}

#[test]
fn pythia_memorization_index_and_trace_read_the_megatron_rows() {
    analyses_read_the_suites_rows("pythia", 4);
}

#[test]
fn olmo_memorization_index_and_trace_read_the_memmap_rows() {
    analyses_read_the_suites_rows("olmo", 3);
}

/// `(checkpoint, step)` of each object of a JSON array.
fn checkpoint_steps(v: &Value) -> Vec<(u64, u64)> {
    let pair = |c: &Value| {
        (
            c["checkpoint"].as_u64().unwrap(),
            c["step"].as_u64().unwrap(),
        )
    };
    v.as_array().unwrap().iter().map(pair).collect()
}

fn refused(args: &[&str]) -> String {
    let o = glass(args);
    assert!(!o.status.success(), "expected a refusal of {args:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_pieces_of_an_external_run_are_named_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let run = import("pythia", d.path(), false);
    // No checkpoints imported: memorization names the list and the option.
    let e = refused(&[
        "analyze",
        "memorization",
        &p(&run),
        "--prompt-tokens",
        "4",
        "--continuation-tokens",
        "4",
    ]);
    assert!(
        e.contains("models/checkpoints.json") && e.contains("--checkpoints"),
        "{e}"
    );
    // No index yet: trace names the command that builds it.
    let e = refused(&["trace", &p(&run), "--count", "the"]);
    assert!(e.contains("glass index"), "{e}");
    // A row shorter than prompt + continuation is refused, naming the row length.
    let e = refused(&[
        "analyze",
        "memorization",
        &p(&import("pythia", d.path(), true)),
    ]);
    assert!(e.contains("8 tokens"), "{e}");
    // Imported without a tokenizer: trace says how to add one.
    let bare = d.path().join("bare");
    ok(&[
        "import",
        "pythia",
        "--data",
        &p(&fixtures().join("pythia")),
        "--rows-per-step",
        "4",
        "--seq-len",
        "7",
        &p(&bare),
    ]);
    ok(&["index", &p(&bare), "--quiet"]);
    let e = refused(&["trace", &p(&bare), "--count", "the"]);
    assert!(
        e.contains("--tokenizer") && e.contains("tokenizer.json"),
        "{e}"
    );
    // The data changed after indexing: the row copy is refused as stale.
    let data = d.path().join("moved");
    copy_dir(&fixtures().join("pythia-whole"), &data);
    let run2 = d.path().join("changing");
    ok(&[
        "import",
        "pythia",
        "--data",
        &p(&data),
        "--rows-per-step",
        "4",
        "--seq-len",
        "7",
        "--tokenizer",
        &p(&tokenizer()),
        &p(&run2),
    ]);
    ok(&["index", &p(&run2), "--quiet"]);
    ok(&["trace", &p(&run2), "--count", "the"]);
    let m = run2.join("data/manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["rows_per_step"] = 2.into();
    v["n_steps"] = 10.into();
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let e = refused(&["trace", &p(&run2), "--count", "the"]);
    assert!(
        e.contains("glass index") && e.contains("chunk-00000"),
        "{e}"
    );
}

/// `glass serve` on a run over Pythia-style data: the stored memorization and a trace
/// through the API, with the suite's steps and rows.
#[test]
fn serve_shows_memorization_and_trace_of_an_external_run() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let d = tempfile::tempdir().unwrap();
    let refs = Reference::load("pythia");
    let run = import("pythia", d.path(), true);
    ok(&["index", &p(&run), "--quiet"]);
    ok(&[
        "analyze",
        "memorization",
        &p(&run),
        "--prompt-tokens",
        "4",
        "--continuation-tokens",
        "4",
        "--quiet",
    ]);
    let evals: Value = serde_json::from_str(&ok(&[
        "eval",
        &p(&run),
        "--tasks",
        "glass_cloze",
        "--limit",
        "3",
        "--json",
        "--quiet",
    ]))
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_glass"))
        .args(["serve", &p(&run), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = BufReader::new(child.stdout.take().unwrap());
    let child = Kill(child);
    let mut addr: Option<std::net::SocketAddr> = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            addr = Some(rest.split('/').next().unwrap().parse().unwrap());
            break;
        }
    }
    let addr = addr.expect("glass serve prints its URL");
    let get = |target: &str| -> Value {
        let r = glass_bench::http::get(addr, target).unwrap();
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    };
    let runs = get("/api/runs");
    let id = runs[0]["id"]
        .as_str()
        .or_else(|| runs["runs"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("{runs}"))
        .to_string();
    // The eval curve over the suite's checkpoints: steps from the checkpoint list, each
    // value the one `glass eval RUN` printed.
    let ev = get(&format!("/api/runs/{id}/evals"));
    assert_eq!(
        checkpoint_steps(&ev["checkpoints"]),
        vec![(0, 0), (1, 2)],
        "{ev}"
    );
    for r in evals.as_array().unwrap() {
        for m in r["metrics"].as_array().unwrap() {
            let row = ev["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["checkpoint"] == r["checkpoint"] && x["metric"] == m["metric"])
                .unwrap_or_else(|| panic!("{ev}"));
            assert_eq!(row["value"], m["value"], "{ev}");
        }
    }
    let memo = get(&format!("/api/runs/{id}/memorization"));
    assert!(memo.to_string().contains("token_match"), "{memo}");
    let tok = glass_analysis::trace::run_tokenizer(&run).unwrap();
    let (text, step, slot) = round_trip_text(&refs, &tok);
    let q: String = text
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let t = get(&format!(
        "/api/runs/{id}/trace?text={q}&min_tokens=1&checkpoint=latest"
    ));
    assert_eq!(t["checkpoint"], 1, "{t}");
    assert!(check_trace(&refs, &t) > 0, "{t}");
    assert!(t.to_string().contains(&format!("\"slot\":{slot}")));
    let _ = step;
    drop(child);
}

/// A CrystalCoder-style run (HDF5 read in place): checkpoints imported by hand as the
/// documentation says, then memorization, the index and a trace give the rows the
/// reference (`crystalcoder/expected.json`) holds, with stage, file and row in the file.
#[test]
fn crystalcoder_memorization_index_and_trace_read_the_hdf5_rows() {
    let d = tempfile::tempdir().unwrap();
    let cc = fixtures().join("crystalcoder");
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(cc.join("expected.json")).unwrap()).unwrap();
    let b = e["rows_per_step"].as_u64().unwrap();
    let row = |step: u64, slot: u64| -> Vec<u64> {
        u64s(&e["steps"][step.to_string()]["ids"][slot as usize])
    };
    let run = d.path().join("cc");
    ok(&[
        "import",
        "crystalcoder",
        "--data",
        &p(&cc.join("data")),
        "--rows-per-step",
        &b.to_string(),
        "--tokenizer",
        &p(&tokenizer()),
        &p(&run),
    ]);
    // No checkpoints: the refusal says how to add them.
    let e2 = refused(&["analyze", "memorization", &p(&run)]);
    assert!(
        e2.contains("glass import hf") && e2.contains("models/checkpoints.json"),
        "{e2}"
    );
    let mut list = Vec::new();
    for step in [0u64, 2] {
        let name = format!("step{step}");
        let r: Value = serde_json::from_str(&ok(&[
            "import",
            "hf",
            &p(&hf_fixtures().join("gpt_neox")),
            &p(&run.join("models").join(&name)),
            "--weights-only",
            "--json",
        ]))
        .unwrap();
        list.push(serde_json::json!({
            "name": name, "step": step, "run": format!("models/{name}"),
            "checkpoint_sha256": r["checkpoint_sha256"],
        }));
    }
    std::fs::write(
        run.join("models/checkpoints.json"),
        serde_json::to_vec_pretty(&list).unwrap(),
    )
    .unwrap();
    ok(&["index", &p(&run), "--quiet"]);
    let pairs: Vec<Value> = serde_json::from_str(&ok(&[
        "analyze",
        "memorization",
        &p(&run),
        "--prompt-tokens",
        "3",
        "--continuation-tokens",
        "3",
        "--log-samples",
        "--with-exposure",
        "--json",
        "--quiet",
    ]))
    .unwrap();
    assert_eq!(pairs.len(), 2);
    for pair in &pairs {
        let ck = pair["step"].as_u64().unwrap();
        for s in pair["samples"].as_array().unwrap() {
            let o = &s["origin"];
            let (step, slot) = (o["step"].as_u64().unwrap(), o["slot"].as_u64().unwrap());
            let want = row(step, slot);
            let at = &e["steps"][step.to_string()];
            assert_eq!(o["source"], at["stages"][slot as usize]);
            assert_eq!(
                file_name(o["file"].as_str().unwrap()),
                at["files"][slot as usize].as_str().unwrap()
            );
            assert_eq!(o["within_file"], at["rows"][slot as usize]);
            let (g, m) = (u64s(&s["generated"]), u64s(&s["matched"]));
            for i in 0..3 {
                assert_eq!(m[i], (g[i] == want[3 + i]) as u64);
            }
            let mut n = 0;
            for st in 0..ck {
                for sl in 0..b {
                    n += row(st, sl).windows(3).filter(|w| *w == &want[3..6]).count() as u64;
                }
            }
            assert_eq!(
                s["exposure"].as_u64().unwrap(),
                n,
                "step {step} slot {slot}"
            );
        }
    }
    let index = glass_analysis::Index::open(&run).unwrap();
    let tok = glass_analysis::trace::run_tokenizer(&run).unwrap();
    let ids: Vec<u32> = row(1, 2).iter().map(|&x| x as u32).collect();
    let opts = glass_analysis::trace::TraceOptions {
        min_tokens: 2,
        max_occurrences: 100,
        rank: glass_analysis::trace::Rank::Length,
        checkpoint: None,
    };
    let text = tok.decode(&ids).unwrap();
    let t = glass_analysis::trace::trace(&run, &index, &tok, &text, &ids, &opts).unwrap();
    let mut found = false;
    for span in &t.spans {
        for o in &span.occurrences {
            let r = row(o.step, o.slot);
            let off = o.offset as usize;
            let got: Vec<u32> = r[off..off + span.tokens.len()]
                .iter()
                .map(|&x| x as u32)
                .collect();
            assert_eq!(got, span.tokens);
            let at = &e["steps"][o.step.to_string()];
            assert_eq!(o.source, at["stages"][o.slot as usize].as_str().unwrap());
            assert_eq!(
                o.doc_id.rsplit_once(':').unwrap().1,
                at["rows"][o.slot as usize].to_string()
            );
            found |= (o.step, o.slot, o.offset) == (1, 2, 0);
        }
    }
    assert!(found);
}

/// `glass eval` on a run over Pythia-style data evaluates each imported checkpoint in its
/// own run and reports it under the suite's checkpoint number and step, with the scores
/// a direct `glass eval` of that checkpoint's run computes.
#[test]
fn eval_of_an_external_run_evaluates_each_imported_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let run = import("pythia", d.path(), true);
    let args = [
        "--tasks",
        "glass_cloze",
        "--limit",
        "3",
        "--json",
        "--quiet",
    ];
    let all: Value =
        serde_json::from_str(&ok(&[&["eval", &p(&run)][..], &args[..]].concat())).unwrap();
    assert_eq!(checkpoint_steps(&all), vec![(0, 0), (1, 2)], "{all}");
    let all = all.as_array().unwrap();
    for (r, name) in all.iter().zip(["step0", "step2"]) {
        let own = run.join("models").join(name);
        let direct: Value =
            serde_json::from_str(&ok(
                &[&["eval", &p(&own), "--force"][..], &args[..]].concat()
            ))
            .unwrap();
        assert_eq!(r["metrics"], direct[0]["metrics"], "{name}");
        assert_eq!(
            r["checkpoint_sha256"], direct[0]["checkpoint_sha256"],
            "{name}"
        );
    }
    let latest: Value = serde_json::from_str(&ok(&[
        &["eval", &p(&run), "--checkpoints", "latest"][..],
        &args[..],
    ]
    .concat()))
    .unwrap();
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_eq!(latest[0]["step"], 2);
    // Without checkpoints, eval says how to import them.
    let bare = import("pythia", d.path(), false);
    let e = refused(&[&["eval", &p(&bare)][..], &args[..]].concat());
    assert!(e.contains("--checkpoints"), "{e}");
}

/// `glass verify` on a run over Pythia-style data checks the data read in place and each
/// imported checkpoint's run, and catches a checkpoint list that no longer matches.
#[test]
fn verify_of_an_external_run_checks_the_data_and_each_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let run = import("pythia", d.path(), true);
    let out = ok(&["verify", &p(&run)]);
    assert!(out.contains("2 imported checkpoint(s)"), "{out}");
    let v: Value = serde_json::from_str(&ok(&["verify", &p(&run), "--json"])).unwrap();
    assert_eq!(v["checkpoints"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["checkpoints"][1]["step"], 2);
    let e = refused(&["verify", &p(&run), "--replay", "1"]);
    assert!(e.contains("no training history"), "{e}");
    // A list that names another checkpoint than the one imported is refused.
    let list = run.join("models/checkpoints.json");
    let mut l: Value = serde_json::from_str(&std::fs::read_to_string(&list).unwrap()).unwrap();
    l[1]["checkpoint_sha256"] = "0".repeat(64).into();
    std::fs::write(&list, serde_json::to_vec_pretty(&l).unwrap()).unwrap();
    let e = refused(&["verify", &p(&run)]);
    assert!(e.contains("do not match"), "{e}");
    let out = glass(&["verify", &p(&run)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MISMATCH") && text.contains("records"),
        "{text}"
    );
}
