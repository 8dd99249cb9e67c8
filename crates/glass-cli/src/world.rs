//! Which data-parallel world this process is part of: alone, or one rank of an MPI job
//! started by `mpirun` / `srun`.

use std::sync::Arc;

use anyhow::Result;
use glass_dist::{launch, Collective, Solo};

/// The world of a `glass train` / `glass eval` process. Under an MPI launcher this
/// initialises MPI (builds with the `mpi` feature) or refuses (builds without it), so a
/// job never trains W independent copies of the run.
pub fn world(command: &str) -> Result<Arc<dyn Collective>> {
    let Some((w, var)) = launch::launched_world_size() else {
        return Ok(Arc::new(Solo));
    };
    connect(command, w, var)
}

#[cfg(feature = "mpi")]
// The trainer holds its communicator as `Arc<dyn Collective>` because the in-process
// implementation is shared across threads; the MPI one never leaves the main thread.
#[allow(clippy::arc_with_non_send_sync)]
fn connect(_command: &str, w: usize, var: &str) -> Result<Arc<dyn Collective>> {
    let c = glass_dist::mpi_comm::MpiComm::init_with_piece(piece()?)?;
    if c.size() != w {
        anyhow::bail!(
            "the launcher announced {w} ranks ({var}) but MPI reports {}; launch with the MPI library this glass was built against (`ldd $(which glass) | grep mpi`)",
            c.size()
        );
    }
    Ok(Arc::new(c))
}

/// Environment variable setting the most values one MPI message carries (default
/// [`glass_dist::DEFAULT_PIECE`]); every rank must have the same (they compare at start).
#[cfg(feature = "mpi")]
const PIECE_VAR: &str = "GLASS_MPI_PIECE";

/// The piece size from [`PIECE_VAR`], or the default.
#[cfg(feature = "mpi")]
fn piece() -> Result<usize> {
    let Ok(v) = std::env::var(PIECE_VAR) else {
        return Ok(glass_dist::DEFAULT_PIECE);
    };
    v.trim()
        .parse::<usize>()
        .ok()
        .and_then(|p| glass_dist::check_piece(p).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{PIECE_VAR}={v}: expected the most values one MPI message may carry, 1 to {} (unset: {})",
                glass_dist::MAX_PIECE,
                glass_dist::DEFAULT_PIECE
            )
        })
}

#[cfg(not(feature = "mpi"))]
fn connect(command: &str, w: usize, var: &str) -> Result<Arc<dyn Collective>> {
    anyhow::bail!(
        "`glass {command}` was started as one of {w} ranks ({var}={w}), but this glass was built without MPI, so every rank would do the whole job alone. Rebuild with MPI: `apt-get install openmpi-bin libopenmpi-dev libclang-dev` (or load your cluster's MPI module), then `cargo build --release -p glass-cli --features mpi`; or run a single process without mpirun/srun"
    )
}

/// Passes `r` through; on an error in a job of several ranks, prints it and ends the
/// whole job at once (while MPI is still initialised: finalising would wait for ranks
/// that are waiting for this one).
pub fn or_abort<T>(comm: &dyn Collective, r: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Err(e) = &r {
        if comm.size() > 1 {
            eprintln!("{}error: {e:#}", rank_label());
            abort_if_parallel();
        }
    }
    r
}

/// Error path of `main`: ends the whole MPI job so no other rank waits forever for this
/// one (a no-op without MPI or alone).
pub fn abort_if_parallel() {
    #[cfg(feature = "mpi")]
    glass_dist::mpi_comm::abort_job_if_parallel(1);
}

/// Rank prefix for messages printed by a rank other than 0 (empty when alone).
pub fn rank_label() -> String {
    std::env::var("OMPI_COMM_WORLD_RANK")
        .or_else(|_| std::env::var("PMI_RANK"))
        .or_else(|_| std::env::var("SLURM_PROCID"))
        .ok()
        .filter(|_| launch::launched_world_size().is_some())
        .map_or(String::new(), |r| format!("rank {r}: "))
}
