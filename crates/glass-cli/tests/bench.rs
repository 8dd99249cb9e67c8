//! `glass bench checkpoint` reports warm and cold loads with the page-cache share it
//! measured before each; `glass bench serve` and `glass bench model` measure what they
//! say on small inputs; `glass bench data --corpus` prepares its generated shards.

mod common;

#[test]
fn checkpoint_bench_reports_warm_and_cold_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::ok(&[
        "bench",
        "checkpoint",
        "--preset",
        "tiny",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(v["write_gb_s"].as_f64().unwrap() > 0.0);
    for load in ["warm_load", "cold_load"] {
        let share = v[load]["resident_before"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{load}: {share}");
        assert!(v[load]["gb_s"].as_f64().unwrap() > 0.0);
    }
    // Read just before: the pages are in the page cache.
    assert!(v["warm_load"]["resident_before"].as_f64().unwrap() > 0.5);
    // The scratch directory is removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn serve_bench_downsamples_a_synthetic_run_to_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::ok(&[
        "bench",
        "serve",
        "--steps",
        "20000",
        "--requests",
        "5",
        "--width",
        "100",
        "--loads",
        "0",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["steps"], 20000);
    let points = v["points"].as_u64().unwrap();
    // At most first, min, max, last and one non-finite point per bucket.
    assert!(points > 100 && points <= 500, "{points}");
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
    assert!(v["first_chart_ms"].is_null());
}

/// `glass bench model` on a run (f32 weights) and on its bf16 transformers export (16-bit
/// weights mapped in place): what it loaded, the same greedy tokens at every thread count,
/// and half the bytes of weights in bf16.
#[test]
fn model_bench_measures_a_run_and_a_bf16_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = common::small_run(&tmp.path().join("run"), &[]);
    common::ok(&["train", &common::p(&run), "--quiet"]);
    let folder = tmp.path().join("hf");
    common::ok(&[
        "export",
        "hf",
        &common::p(&run),
        &common::p(&folder),
        "--dtype",
        "bf16",
    ]);
    let bench = |src: &std::path::Path| -> serde_json::Value {
        let out = common::ok(&[
            "bench",
            "model",
            &common::p(src),
            "--thread-counts",
            "1,2",
            "--rows",
            "3",
            "--prompt",
            "5",
            "--new-tokens",
            "4",
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let f32_run = bench(&run);
    let bf16 = bench(&folder);
    assert_eq!(f32_run["kind"], "run");
    assert_eq!(f32_run["dtype"], "f32");
    assert_eq!(bf16["kind"], "folder");
    assert_eq!(bf16["dtype"], "bf16");
    assert_eq!(f32_run["params"], bf16["params"]);
    assert_eq!(
        f32_run["weight_bytes"].as_u64().unwrap(),
        2 * bf16["weight_bytes"].as_u64().unwrap()
    );
    for r in [&f32_run, &bf16] {
        let res = r["results"].as_array().unwrap();
        assert_eq!(res.len(), 2, "{r}");
        assert_eq!(res[0]["threads"], 1);
        assert_eq!(res[1]["threads"], 2);
        assert_eq!(res[0]["tokens_sha256"], res[1]["tokens_sha256"], "{r}");
        for t in res {
            assert!(t["prefill_tokens_per_s"].as_f64().unwrap() > 0.0, "{t}");
            assert!(t["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{t}");
        }
        assert!(r["peak_rss_mib"].as_f64().unwrap() >= r["rss_after_load_mib"].as_f64().unwrap());
    }
}

/// The real-format corpus benchmark without Python: the shards are read by `glass data
/// prepare`, every planted exact copy is removed and nothing beyond the planted copies.
#[test]
fn corpus_bench_prepares_parquet_and_zstd_shards_and_finds_the_planted_copies() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::ok(&[
        "bench",
        "data",
        "--corpus",
        "--corpus-mb",
        "1",
        "--iters",
        "1",
        "--threads",
        "2",
        "--json",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let docs = v["docs"].as_u64().unwrap();
    let (exact, near) = (
        v["planted"][0].as_u64().unwrap(),
        v["planted"][1].as_u64().unwrap(),
    );
    assert!(exact > 0 && near > 0, "{v}");
    let kept = v["glass"]["docs_kept"].as_u64().unwrap();
    assert!(kept <= docs - exact, "{v}");
    assert!(kept >= docs - exact - near, "{v}");
    assert!(v["tokens"].as_u64().unwrap() > 0);
    assert!(v["python"].is_null() && v["speedup"].is_null());
    for run in ["run-plain", "run-dedup"] {
        let shards = std::fs::read_dir(dir.path().join(run).join("corpus/web"))
            .unwrap()
            .count();
        assert_eq!(shards, 4);
        assert!(dir.path().join(run).join("data/manifest.json").is_file());
    }
}
