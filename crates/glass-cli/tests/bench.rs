//! `glass bench checkpoint` reports warm and cold loads with the page-cache share it
//! measured before each.

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
