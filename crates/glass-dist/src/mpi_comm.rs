//! The MPI transport (rsmpi over the system MPI library). Only data movement goes through
//! MPI (all-gather-v, all-to-all-v, broadcast); the float sums stay in the crate's fixed
//! tree order, so the bits are independent of the MPI library's algorithms.

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use crate::{Collective, DistError, Result};

/// Largest element count one MPI call moves (counts are C `int`); larger buffers go in
/// pieces.
const MAX_COUNT: usize = 1 << 30;

/// `MPI_COMM_WORLD` of an initialised MPI library; finalises MPI when dropped.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiComm {
    /// Initialises MPI (threads other than the caller never call MPI: "funneled").
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| DistError::Transport("MPI was already initialised".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm {
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// Ends the whole job (every rank) with `code`: what a rank does after an error that
    /// the others cannot know about, so that no rank waits forever in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Name of this processor (host), for error messages.
    pub fn host(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }
}

fn counts_displs(counts: &[usize]) -> Result<(Vec<Count>, Vec<Count>)> {
    let mut c = Vec::with_capacity(counts.len());
    let mut d = Vec::with_capacity(counts.len());
    let mut pos = 0usize;
    for &n in counts {
        if n > MAX_COUNT || pos > i32::MAX as usize {
            return Err(DistError::Invalid(format!(
                "{n} values at offset {pos} exceed one MPI message; use more ranks"
            )));
        }
        c.push(n as Count);
        d.push(pos as Count);
        pos += n;
    }
    Ok((c, d))
}

impl Collective for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn transport(&self) -> &'static str {
        "mpi"
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = mine.len() as u64;
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&n, &mut lens[..]);
        let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let (c, d) = counts_displs(&counts)?;
        let mut all = vec![0u8; counts.iter().sum()];
        {
            let mut part = PartitionMut::new(&mut all[..], c, d);
            self.world.all_gather_varcount_into(mine, &mut part);
        }
        let mut out = Vec::with_capacity(self.size);
        let mut pos = 0;
        for n in counts {
            out.push(all[pos..pos + n].to_vec());
            pos += n;
        }
        Ok(out)
    }
    fn all_gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) -> Result<()> {
        if mine.len() != counts[self.rank] || out.len() != counts.iter().sum::<usize>() {
            return Err(DistError::Invalid("all-gather sizes disagree".into()));
        }
        let (c, d) = counts_displs(counts)?;
        let mut part = PartitionMut::new(out, c, d);
        self.world.all_gather_varcount_into(mine, &mut part);
        Ok(())
    }
    fn all_to_all_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        if send.len() < send_counts.iter().sum::<usize>()
            || recv.len() < recv_counts.iter().sum::<usize>()
        {
            return Err(DistError::Invalid("all-to-all buffers too short".into()));
        }
        let (sc, sd) = counts_displs(send_counts)?;
        let (rc, rd) = counts_displs(recv_counts)?;
        let part = Partition::new(send, sc, sd);
        let mut rpart = PartitionMut::new(recv, rc, rd);
        self.world.all_to_all_varcount_into(&part, &mut rpart);
        Ok(())
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        let root = self.world.process_at_rank(root as i32);
        for piece in buf.chunks_mut(MAX_COUNT) {
            root.broadcast_into(piece);
        }
        Ok(())
    }
}

/// Ends the whole MPI job with `code` if this process initialised MPI (and is not alone);
/// returns otherwise. The error path of a command calls it so that one rank's failure
/// never leaves the others waiting in a collective.
pub fn abort_job_if_parallel(code: i32) {
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        let world = SimpleCommunicator::world();
        if world.size() > 1 {
            world.abort(code);
        }
    }
}
