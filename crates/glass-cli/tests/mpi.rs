//! The data-parallel checks through real `mpirun` processes. They need Open MPI and a
//! glass built with `--features mpi`, so they are ignored by default; CI runs them with
//! `cargo test --release -p glass-cli --features mpi --test mpi -- --ignored`.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::ok;
#[path = "support/dist_run.rs"]
mod dist_run;
use dist_run::{chain, copy_dir, eval_results, make_run, p};

/// `mpirun -n W glass ARGS` (oversubscribed: CI machines have few cores), one thread
/// per rank, with extra environment variables exported to every rank.
fn mpirun(w: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("mpirun");
    c.args([
        "--oversubscribe",
        "--allow-run-as-root",
        "-n",
        &w.to_string(),
    ]);
    for (k, v) in env {
        c.env(k, v);
        c.args(["-x", k]);
    }
    c.arg(env!("CARGO_BIN_EXE_glass"));
    c.args(["--threads", "1"]);
    c.args(args);
    c.output()
        .expect("mpirun runs (apt-get install openmpi-bin)")
}

fn must(o: Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn fails(o: Output, what: &str) -> String {
    assert!(!o.status.success(), "{what} should fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn mpirun_world_sizes_give_the_one_process_hash_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let one = make_run(&tmp.path().join("one"), 4, 0);
    ok(&["train", &p(&one), "--quiet"]);
    let reference = chain(&one);
    for w in [1, 2, 4] {
        let run = make_run(&tmp.path().join(format!("w{w}")), 4, 0);
        let out = must(mpirun(w, &["train", &p(&run), "--quiet"], &[]), "train");
        assert_eq!(chain(&run), reference, "mpirun -n {w}");
        if w > 1 {
            assert!(out.contains(&format!("{w} ranks (mpi)")), "{out}");
        }
    }
    // ZeRO stage 1: same bits, a quarter of the moments per rank.
    let run = make_run(&tmp.path().join("zero"), 4, 0);
    let out = must(
        mpirun(4, &["train", &p(&run), "--quiet", "--shard-optimizer"], &[]),
        "train --shard-optimizer",
    );
    assert!(out.contains("sharded:"), "{out}");
    assert_eq!(chain(&run), reference, "--shard-optimizer");
    // A world size that cannot reproduce the bits is refused, naming the valid ones.
    let run = make_run(&tmp.path().join("w3"), 4, 0);
    let e = fails(
        mpirun(3, &["train", &p(&run), "--quiet"], &[]),
        "mpirun -n 3",
    );
    assert!(e.contains("world sizes 1, 2, 4"), "{e}");
}

/// Every collective cut into MPI messages of at most 1000 values (GLASS_MPI_PIECE): the
/// test model's shards (≈ 131 072 values) and parameter broadcasts cross the piece
/// boundary over a hundred times per block, the all-gathers and the reduce-scatter's
/// all-to-all go rank pair by rank pair, and a sharded optimizer's checkpoints travel to
/// rank 0 (and back on a resume) in pieces. The hash chain is the one process's.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn collectives_in_small_pieces_keep_the_one_process_hash_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let one = make_run(&tmp.path().join("one"), 4, 0);
    ok(&["train", &p(&one), "--quiet"]);
    let reference = chain(&one);
    for (w, shard, piece) in [(2, false, "1000"), (4, true, "1000"), (4, false, "999")] {
        let run = make_run(&tmp.path().join(format!("w{w}-{shard}-{piece}")), 4, 0);
        let run_arg = p(&run);
        let mut args = vec!["train", run_arg.as_str(), "--quiet"];
        if shard {
            args.push("--shard-optimizer");
        }
        let out = must(
            mpirun(w, &args, &[("GLASS_MPI_PIECE", piece)]),
            "train in small pieces",
        );
        assert!(
            out.contains(&format!("messages of at most {piece} values")),
            "{out}"
        );
        // Rank 0 measured what streaming the sharded moments cost it.
        assert_eq!(
            out.contains("rank 0 wrote the sharded moments"),
            shard && cfg!(target_os = "linux"),
            "{out}"
        );
        assert_eq!(
            chain(&run),
            reference,
            "W = {w}, sharded {shard}, pieces of {piece}"
        );
    }

    // Stopped under W = 4 in pieces of 1000, resumed under W = 2 in pieces of 333 (both
    // sharded: rank 0 reads the moments back and scatters them piece by piece).
    let run = make_run(&tmp.path().join("resume"), 4, 0);
    let run_arg = p(&run);
    let train = |w, until: Option<&str>, piece| {
        let mut args = vec!["train", run_arg.as_str(), "--quiet", "--shard-optimizer"];
        if let Some(u) = until {
            args.extend(["--until-step", u]);
        }
        must(mpirun(w, &args, &[("GLASS_MPI_PIECE", piece)]), "train")
    };
    train(4, Some("5"), "1000");
    assert!(chain(&run).len() < reference.len());
    let out = train(2, None, "333");
    assert!(out.contains("resumed from checkpoint"), "{out}");
    assert_eq!(chain(&run), reference, "resumed in other pieces");
}

/// Ranks that would cut messages differently are refused before anything else: one
/// rank with GLASS_MPI_PIECE set, the other without; and an unusable value.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn ranks_disagreeing_on_the_piece_are_refused_before_any_step() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(&tmp.path().join("r"), 4, 0);
    let glass = env!("CARGO_BIN_EXE_glass");
    let o = Command::new("mpirun")
        .args(["--oversubscribe", "--allow-run-as-root"])
        .args([
            "-n",
            "1",
            glass,
            "--threads",
            "1",
            "train",
            &p(&run),
            "--quiet",
        ])
        .args([":", "-n", "1", "-x", "GLASS_MPI_PIECE=1000"])
        .args([glass, "--threads", "1", "train", &p(&run), "--quiet"])
        .output()
        .unwrap();
    let e = fails(o, "ranks with different pieces");
    assert!(
        e.contains("rank 1 splits MPI messages into pieces of 1000 values, rank 0 into pieces of 268435456")
            && e.contains("set GLASS_MPI_PIECE to the same value on every rank"),
        "{e}"
    );
    assert!(
        !run.join("manifest.json").exists(),
        "refused before any step"
    );

    let e = fails(
        mpirun(
            2,
            &["train", &p(&run), "--quiet"],
            &[("GLASS_MPI_PIECE", "0")],
        ),
        "a piece of 0",
    );
    assert!(e.contains("GLASS_MPI_PIECE=0: expected"), "{e}");
    assert!(!run.join("manifest.json").exists());
}

#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn killed_job_resumes_under_another_world_size() {
    let tmp = tempfile::tempdir().unwrap();
    let one = make_run(&tmp.path().join("one"), 4, 0);
    ok(&["train", &p(&one), "--quiet"]);
    let reference = chain(&one);
    let run = make_run(&tmp.path().join("r"), 4, 0);
    // Every rank aborts (like kill -9) after its 6th step; mpirun ends the job.
    fails(
        mpirun(
            4,
            &["train", &p(&run), "--quiet", "--shard-optimizer"],
            &[("GLASS_FAULT", "after-step:6")],
        ),
        "faulted job",
    );
    let partial = chain(&run);
    assert!(partial.len() < reference.len(), "{partial:?}");
    let out = must(mpirun(2, &["train", &p(&run), "--quiet"], &[]), "resume");
    assert!(out.contains("resumed from checkpoint"), "{out}");
    assert_eq!(chain(&run), reference);

    // Only rank 1 dies (abort, like kill -9) while rank 0 waits for it in a collective:
    // MPI ends the whole job; one process then resumes from the last publication.
    let run = make_run(&tmp.path().join("k"), 4, 0);
    let glass = env!("CARGO_BIN_EXE_glass");
    let o = Command::new("mpirun")
        .args(["--oversubscribe", "--allow-run-as-root"])
        .args([
            "-n",
            "1",
            glass,
            "--threads",
            "1",
            "train",
            &p(&run),
            "--quiet",
        ])
        .args([":", "-n", "1", "-x", "GLASS_FAULT=after-step:7"])
        .args([glass, "--threads", "1", "train", &p(&run), "--quiet"])
        .output()
        .unwrap();
    fails(o, "job with a dying rank");
    assert!(chain(&run).len() < reference.len());
    let out = ok(&["train", &p(&run), "--quiet"]);
    assert!(out.contains("resumed from checkpoint"), "{out}");
    assert_eq!(chain(&run), reference);
}

#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn mismatched_rank_is_refused_and_eval_matches_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_run(&tmp.path().join("a"), 2, 0);
    let b = make_run(&tmp.path().join("b"), 2, 1);
    // MPMD launch: rank 0 reads run a, rank 1 run b (another seed in glass.toml).
    let o = Command::new("mpirun")
        .args(["--oversubscribe", "--allow-run-as-root"])
        .args([
            "-n",
            "1",
            env!("CARGO_BIN_EXE_glass"),
            "train",
            &p(&a),
            "--quiet",
        ])
        .arg(":")
        .args([
            "-n",
            "1",
            env!("CARGO_BIN_EXE_glass"),
            "train",
            &p(&b),
            "--quiet",
        ])
        .output()
        .unwrap();
    let e = fails(o, "mismatched ranks");
    assert!(
        e.contains("glass.toml (sha256) differs between ranks"),
        "{e}"
    );
    assert!(!a.join("manifest.json").exists());

    ok(&["train", &p(&a), "--quiet"]);
    let (solo, dist) = (tmp.path().join("solo"), tmp.path().join("dist"));
    copy_dir(&a, &solo);
    copy_dir(&a, &dist);
    let args = |r: &Path| {
        vec![
            "eval".to_string(),
            p(r),
            "--checkpoints".into(),
            "all".into(),
            "--limit".into(),
            "6".into(),
            "--quiet".into(),
        ]
    };
    let sargs = args(&solo);
    ok(&sargs.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let dargs = args(&dist);
    must(
        mpirun(
            3,
            &dargs.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            &[],
        ),
        "distributed eval",
    );
    assert_eq!(eval_results(&dist), eval_results(&solo));
    let metrics = |r: &Path| ok(&["metrics", &p(r), "--evals", "--json"]);
    assert_eq!(metrics(&dist), metrics(&solo));

    // Memorization: (checkpoint, chunk) pairs split over 3 ranks store what one process
    // stores (the per-pair `seconds` aside).
    let memo = |r: &Path| {
        vec![
            "analyze".to_string(),
            "memorization".into(),
            p(r),
            "--samples".into(),
            "4".into(),
            "--prompt-tokens".into(),
            "4".into(),
            "--continuation-tokens".into(),
            "4".into(),
            "--log-samples".into(),
            "--quiet".into(),
        ]
    };
    let sargs = memo(&solo);
    ok(&sargs.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let dargs = memo(&dist);
    must(
        mpirun(
            3,
            &dargs.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            &[],
        ),
        "distributed memorization",
    );
    let matrix = |r: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&ok(&["metrics", &p(r), "--memorization", "--json"])).unwrap();
        // Timings, and the hash of the result file that records one, differ by run; the
        // files themselves are compared below without their `seconds`.
        for row in v.as_array_mut().unwrap() {
            row.as_object_mut()
                .unwrap()
                .retain(|k, _| !["seconds", "wall_time", "result_sha256"].contains(&k.as_str()));
        }
        v
    };
    let (m_solo, m_dist) = (matrix(&solo), matrix(&dist));
    assert!(m_solo.as_array().unwrap().len() >= 3, "{m_solo}");
    assert_eq!(m_dist, m_solo);
    let files = |r: &Path| {
        let mut out = Vec::new();
        let root = r.join("analysis/memorization");
        for d in std::fs::read_dir(&root).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let f = f.unwrap().path();
                let mut v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                out.push((f.strip_prefix(r).unwrap().to_path_buf(), v));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    assert_eq!(files(&dist), files(&solo));
}

#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn dynamics_split_over_ranks_store_what_one_process_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_run(&tmp.path().join("a"), 2, 0);
    ok(&["train", &p(&a), "--quiet"]);
    let (solo, dist) = (tmp.path().join("solo"), tmp.path().join("dist"));
    copy_dir(&a, &solo);
    copy_dir(&a, &dist);
    ok(&["analyze", "dynamics", &p(&solo), "--quiet"]);
    must(
        mpirun(3, &["analyze", "dynamics", &p(&dist), "--quiet"], &[]),
        "distributed dynamics",
    );
    let rows = |r: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(&["metrics", &p(r), "--dynamics", "--json"])).unwrap()
    };
    let (r_solo, r_dist) = (rows(&solo), rows(&dist));
    let n_ckpt = glass_run::RunManifest::require(&solo)
        .unwrap()
        .checkpoints
        .len();
    assert!(n_ckpt >= 3);
    let per_source = r_solo
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "source_bits_per_byte")
        .count();
    assert_eq!(per_source, n_ckpt, "one validation source per checkpoint");
    assert_eq!(r_dist, r_solo);
    // The settings stored with each checkpoint (head-score sequences, held-out
    // documents) too.
    let settings = |r: &Path| -> Vec<(u32, String)> {
        let db = rusqlite::Connection::open(r.join("metrics.sqlite")).unwrap();
        let mut st = db
            .prepare("SELECT checkpoint, settings FROM dynamics_runs ORDER BY checkpoint")
            .unwrap();
        st.query_map([], |x| Ok((x.get(0)?, x.get(1)?)))
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    assert_eq!(settings(&dist), settings(&solo));
    assert_eq!(settings(&solo).len(), n_ckpt);
}
