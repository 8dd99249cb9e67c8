//! Data-parallel training and evaluation with the ranks as threads of one process
//! (`glass_dist::local_group`): the exact multi-rank code path (rank slices, the
//! deterministic reduce-scatter and all-gather, ZeRO-1 shards, rank-0-only writes,
//! refusals) without an MPI library. `tests/mpi.rs` runs the same checks through
//! `mpirun` in CI.

use std::path::Path;
use std::sync::Arc;

use glass_dist::{local_group, local_group_with_piece, Collective};
use glass_run::train::{train_on, TrainOptions, TrainReport};

mod common;
use common::ok;
#[path = "support/dist_run.rs"]
mod dist_run;
use dist_run::{chain, copy_dir, eval_results, make_run, p};

/// Trains `runs[r]` as rank `r` of `runs.len()` threads.
fn train_threads(
    runs: &[&Path],
    shard_optimizer: bool,
    until_step: Option<u64>,
) -> Vec<glass_run::Result<TrainReport>> {
    let opts = TrainOptions {
        until_step,
        shard_optimizer,
        ..Default::default()
    };
    train_threads_with(runs, &opts, usize::MAX)
}

/// [`train_threads`] with any options, over a transport whose piece is `piece`.
fn train_threads_with(
    runs: &[&Path],
    opts: &TrainOptions,
    piece: usize,
) -> Vec<glass_run::Result<TrainReport>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = local_group_with_piece(runs.len(), piece)
            .into_iter()
            .zip(runs)
            .map(|(c, run)| {
                let opts = opts.clone();
                s.spawn(move || train_on(run, &opts, Arc::new(c) as Arc<dyn Collective>))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn all_ok(rs: Vec<glass_run::Result<TrainReport>>) -> Vec<TrainReport> {
    rs.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn any_world_size_and_resume_across_sizes_give_one_process_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let one = make_run(&tmp.path().join("one"), 4, 0);
    ok(&["train", &p(&one), "--quiet"]);
    let reference = chain(&one);
    assert!(reference.len() >= 5, "{reference:?}");

    for (w, shard) in [(2, false), (4, false), (4, true)] {
        let run = make_run(&tmp.path().join(format!("w{w}-{shard}")), 4, 0);
        let reports = all_ok(train_threads(&vec![run.as_path(); w], shard, None));
        assert_eq!(chain(&run), reference, "W = {w}, shard_optimizer = {shard}");
        let r = &reports[0];
        assert_eq!((r.world_size, r.grad_groups), (w, 4));
        assert!(r.bytes_sent_per_step > 0);
        if shard {
            // Every rank holds a quarter (up to chunk rounding) of the moments.
            for r in &reports {
                assert!(
                    r.optimizer_bytes_per_rank < r.optimizer_bytes_unsharded / 2,
                    "{r:?}"
                );
            }
            let total: u64 = reports.iter().map(|r| r.optimizer_bytes_per_rank).sum();
            assert_eq!(total, reports[0].optimizer_bytes_unsharded);
        }
    }

    // Stop under W = 4 (sharded), resume under W = 2, then finish in one process.
    let run = make_run(&tmp.path().join("resume"), 4, 0);
    all_ok(train_threads(&[run.as_path(); 4], true, Some(5)));
    let mid = chain(&run);
    assert!(mid.len() < reference.len() && mid.last().unwrap().0 <= 5);
    all_ok(train_threads(&[run.as_path(); 2], false, Some(9)));
    let out = ok(&["train", &p(&run), "--quiet"]);
    assert!(out.contains("resumed from checkpoint"), "{out}");
    assert_eq!(chain(&run), reference, "resumed across world sizes");
    let out = ok(&[
        "verify",
        &p(&run),
        "--replay",
        &(reference.len() - 1).to_string(),
    ]);
    assert!(out.contains("bit-identical"), "{out}");
}

/// (step, sha256 of optimizer.safetensors) of every published checkpoint.
fn optimizer_hashes(run: &Path) -> Vec<(u64, String)> {
    file_hashes(run, "optimizer.safetensors")
}

/// ZeRO-1 with checkpoints cut into pieces of 1000 values (each written to rank 0's file,
/// and read back from it on a resume or a rollback, across tensor and shard boundaries,
/// one piece at a time) keeps the one-process hash chain: a fresh run under W = 4, a
/// resume under W = 2 with pieces of 333, and a guard rollback under W = 4.
#[test]
fn sharded_checkpoints_in_small_pieces_keep_the_one_process_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let one = make_run(&tmp.path().join("one"), 4, 0);
    ok(&["train", &p(&one), "--quiet"]);
    let reference = chain(&one);
    let sharded = |until_step| TrainOptions {
        until_step,
        shard_optimizer: true,
        ..Default::default()
    };

    let run = make_run(&tmp.path().join("fresh"), 4, 0);
    let reports = all_ok(train_threads_with(
        &[run.as_path(); 4],
        &sharded(None),
        1000,
    ));
    assert!(reports.iter().all(|r| r.shard_optimizer));
    assert_eq!(chain(&run), reference, "W = 4, pieces of 1000");

    let run = make_run(&tmp.path().join("resume"), 4, 0);
    all_ok(train_threads_with(
        &[run.as_path(); 4],
        &sharded(Some(5)),
        1000,
    ));
    let r = all_ok(train_threads_with(&[run.as_path(); 2], &sharded(None), 333));
    assert!(r[0].resumed_from.is_some());
    assert_eq!(chain(&run), reference, "resumed under W = 2, pieces of 333");

    // The guard rolls back to the last checkpoint: rank 0 reads its moments back in
    // pieces and sends each rank its shard. Same files as one process doing the same.
    let nan = |run: &Path| {
        ok(&["train", &p(run), "--quiet", "--inject-nan-at-step", "6"]);
    };
    let one_nan = make_run(&tmp.path().join("one-nan"), 4, 0);
    nan(&one_nan);
    let run = make_run(&tmp.path().join("nan"), 4, 0);
    let opts = TrainOptions {
        inject_nan_at: vec![6],
        ..sharded(None)
    };
    let r = all_ok(train_threads_with(&[run.as_path(); 4], &opts, 1000));
    assert_eq!(r[0].guard_skips, vec![6]);
    assert_eq!(chain(&run), chain(&one_nan));
    assert_eq!(optimizer_hashes(&run), optimizer_hashes(&one_nan));
    assert_eq!(model_hashes(&run), model_hashes(&one_nan));
}

#[test]
fn world_sizes_that_cannot_reproduce_the_bits_and_mismatched_ranks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(&tmp.path().join("r"), 2, 0);
    for w in [3, 4] {
        for r in train_threads(&vec![run.as_path(); w], false, None) {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains(&format!("world size {w}")) && e.contains("world sizes 1, 2"),
                "{e}"
            );
        }
    }
    assert!(!run.join("manifest.json").exists(), "nothing was written");

    // Rank 1 reads a config that differs from rank 0's (another seed).
    let other = make_run(&tmp.path().join("other"), 2, 1);
    for r in train_threads(&[run.as_path(), other.as_path()], false, None) {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("glass.toml (sha256) differs between ranks"),
            "{e}"
        );
        assert!(e.contains("rank 1 has"), "{e}");
    }
    assert!(
        !run.join("manifest.json").exists(),
        "refused before the first step"
    );
}

#[test]
fn distributed_eval_stores_what_one_process_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(&tmp.path().join("r"), 2, 0);
    ok(&["train", &p(&run), "--quiet"]);
    let solo = tmp.path().join("solo");
    let dist = tmp.path().join("dist");
    copy_dir(&run, &solo);
    copy_dir(&run, &dist);
    ok(&[
        "eval",
        &p(&solo),
        "--checkpoints",
        "all",
        "--limit",
        "6",
        "--quiet",
    ]);
    let tasks: Vec<glass_eval::TaskDef> = ["glass_cloze", "glass_heldout"]
        .iter()
        .map(|t| glass_eval::bundled::bundled(t).unwrap().unwrap())
        .collect();
    let opts = glass_eval::EvalOptions {
        checkpoints: glass_eval::CheckpointSel::All,
        tasks,
        limit: Some(6),
        num_fewshot: None,
        fewshot_seed: glass_eval::DEFAULT_FEWSHOT_SEED,
        force: false,
        log_samples: false,
        code: None,
    };
    let counts: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = local_group(3)
            .into_iter()
            .map(|c| {
                let (opts, dist) = (&opts, &dist);
                s.spawn(move || {
                    glass_eval::evaluate_run_on(dist, opts, &|_| {}, &c)
                        .unwrap()
                        .len()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = eval_results(&solo);
    assert_eq!(counts[0], stored.len(), "rank 0 returns every pair");
    assert!(
        counts[1] < stored.len(),
        "rank 1 scored only its share: {counts:?}"
    );
    assert_eq!(eval_results(&dist), stored);
    let metrics = |r: &Path| ok(&["metrics", &p(r), "--evals", "--json"]);
    assert_eq!(metrics(&dist), metrics(&solo));
}

/// A glass built without MPI refuses to run as one of several ranks.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_under_a_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    ok(&["init", &p(&run), "--preset", "tiny"]);
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"] {
        let o = common::glass_env(&["train", &p(&run)], &[(var, "2")]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("built without MPI") && e.contains("--features mpi"),
            "{e}"
        );
    }
}

/// (step, sha256 of model.safetensors) of every published checkpoint.
fn model_hashes(run: &Path) -> Vec<(u64, String)> {
    file_hashes(run, "model.safetensors")
}

/// (step, sha256 of the file named `name`) of every published checkpoint.
fn file_hashes(run: &Path, name: &str) -> Vec<(u64, String)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = c["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"].as_str().unwrap().ends_with(name))
                .unwrap();
            (
                c["step"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_continuing_branch_trained_on_two_ranks_reproduces_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = make_run(&tmp.path().join("parent"), 4, 0);
    ok(&["train", &p(&parent), "--quiet"]);
    let b = tmp.path().join("branch");
    ok(&["init", &p(&b), "--from", &p(&parent), "--checkpoint", "3"]);
    let opts = TrainOptions {
        from: Some((parent.clone(), 3)),
        mode: glass_run::BranchMode::Continue,
        ..Default::default()
    };
    // Rank 0 links the parent's data; both ranks then read their slices of its rows.
    let reports: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = local_group(2)
            .into_iter()
            .map(|c| {
                let (b, opts) = (&b, opts.clone());
                s.spawn(move || train_on(b, &opts, Arc::new(c) as Arc<dyn Collective>))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    all_ok(reports);
    assert_eq!(model_hashes(&b), model_hashes(&parent)[3..].to_vec());

    // The same branch with a sharded optimizer in pieces of 1000: rank 0 sends the
    // parent's moments out piece by piece, and checkpoint 0 (the parent's moments) is
    // written back from the shards: the parent's optimizer files, byte for byte.
    let b = tmp.path().join("sharded-branch");
    ok(&["init", &p(&b), "--from", &p(&parent), "--checkpoint", "3"]);
    let opts = TrainOptions {
        shard_optimizer: true,
        ..opts
    };
    all_ok(train_threads_with(&[b.as_path(); 2], &opts, 1000));
    assert_eq!(model_hashes(&b), model_hashes(&parent)[3..].to_vec());
    assert_eq!(
        optimizer_hashes(&b),
        optimizer_hashes(&parent)[3..].to_vec()
    );
}
