//! The MPI transport (rsmpi over the system MPI library). Only data movement goes through
//! MPI (all-gather-v, all-to-all-v, broadcast); the float sums stay in the crate's fixed
//! tree order, so the bits are independent of the MPI library's algorithms.
//!
//! MPI counts and displacements are C `int`s, and several MPI transports mishandle single
//! messages of 2 GiB and more. So no call here moves more than the communicator's *piece*
//! ([`crate::DEFAULT_PIECE`] values unless set otherwise) per message, and none needs a
//! displacement of 2^31 or more: an operation whose counts all fit in one piece and whose
//! total fits an `int` is one MPI collective; any other goes rank pair by rank pair, each
//! block in messages of at most one piece, received straight into its place. Pieces change
//! how values travel, never which values arrive where, so the bits do not depend on them.
//! Every rank must split the same way: [`MpiComm::init_with_piece`] compares the piece and
//! the wire format over all ranks before anything else, and refuses a disagreement.

use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use crate::{check_piece, Collective, DistError, Result, DEFAULT_PIECE};

/// What every rank must agree on before its first collective, as `u64`s: a version of
/// this exchange, the piece, and the float wire format (element type, width, byte order).
fn wire_format(piece: usize) -> [u64; 5] {
    /// The float collectives move IEEE-754 binary32 values as they lie in memory.
    const DTYPE_F32: u64 = 1;
    [
        1,
        piece as u64,
        DTYPE_F32,
        std::mem::size_of::<f32>() as u64,
        // 1.0f32 as this machine stores it: another byte order reads differently.
        u32::from_ne_bytes(1.0f32.to_le_bytes()) as u64,
    ]
}

/// Why the ranks' wire formats differ, naming the fix; `None` when they all agree.
fn wire_mismatch(all: &[[u64; 5]]) -> Option<String> {
    let first = all.first()?;
    let mut bad = Vec::new();
    for (r, w) in all.iter().enumerate().skip(1) {
        if w[0] != first[0] || w[2..] != first[2..] {
            bad.push(format!(
                "rank {r} moves floats as {} (rank 0: {}): run the same glass build on machines of the same byte order on every rank",
                describe(w),
                describe(first)
            ));
        } else if w[1] != first[1] {
            bad.push(format!(
                "rank {r} splits MPI messages into pieces of {} values, rank 0 into pieces of {}: set GLASS_MPI_PIECE to the same value on every rank (`mpirun -x GLASS_MPI_PIECE`) or unset it everywhere",
                w[1], first[1]
            ));
        }
    }
    (!bad.is_empty()).then(|| {
        format!(
            "the ranks disagree on how collectives move data, so no step can start: {}",
            bad.join("; ")
        )
    })
}

fn describe(w: &[u64; 5]) -> String {
    let dtype = if w[2] == 1 { "f32" } else { "an unknown type" };
    let order = match w[4] {
        0x3f80_0000 => "little-endian",
        0x0000_803f => "big-endian",
        _ => "an unknown byte order",
    };
    format!("{dtype} ({} bytes, {order}, exchange v{})", w[3], w[0])
}

/// `MPI_COMM_WORLD` of an initialised MPI library; finalises MPI when dropped.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Most values one MPI message carries.
    piece: usize,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiComm {
    /// Initialises MPI (threads other than the caller never call MPI: "funneled") with
    /// the default piece ([`DEFAULT_PIECE`]).
    pub fn init() -> Result<Self> {
        Self::init_with_piece(DEFAULT_PIECE)
    }

    /// Initialises MPI with messages of at most `piece` values (`1..=`[`crate::MAX_PIECE`]),
    /// then compares `piece` and the float wire format over every rank. Every rank sees
    /// every rank's values, so on a disagreement all of them return the same error (and
    /// MPI is finalised) before any other communication.
    pub fn init_with_piece(piece: usize) -> Result<Self> {
        let piece = check_piece(piece)?;
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| DistError::Transport("MPI was already initialised".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let mine = wire_format(piece);
        let mut all = vec![0u64; 5 * size];
        world.all_gather_into(&mine[..], &mut all[..]);
        let all: Vec<[u64; 5]> = all
            .chunks_exact(5)
            .map(|c| c.try_into().expect("5 values"))
            .collect();
        if let Some(msg) = wire_mismatch(&all) {
            return Err(DistError::Invalid(msg));
        }
        Ok(MpiComm {
            world,
            rank,
            size,
            piece,
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

    /// Whether one MPI collective can move blocks of `counts` values: each within a
    /// piece, every displacement and the total within a C `int`.
    fn one_call(&self, counts: &[usize]) -> bool {
        counts.iter().all(|&c| c <= self.piece)
            && counts.iter().try_fold(0usize, |a, &c| a.checked_add(c)) <= Some(i32::MAX as usize)
    }

    /// Rank `r`'s MPI process.
    fn at(&self, r: usize) -> mpi::topology::Process<'_> {
        self.world.process_at_rank(r as i32)
    }

    /// Rank pair by rank pair: this rank's block for rank `d` is `block_for(d)`, and rank
    /// `r`'s block for this rank lands in `recv` at `r`'s place (`recv_counts` in rank
    /// order). The own block is copied; then for `s = 1..W` this rank sends its block to
    /// rank `me + s` and receives rank `me − s`'s, each block in messages of at most one
    /// piece (the receiver splits the same count the same way), all posted together and
    /// waited for before the next pair.
    fn pairwise<'s, T: Equivalence + Copy + 's>(
        &self,
        block_for: impl Fn(usize) -> &'s [T],
        recv: &mut [T],
        recv_counts: &[usize],
    ) {
        let (w, me) = (self.size, self.rank);
        let at = offsets(recv_counts);
        recv[at[me]..at[me] + recv_counts[me]].copy_from_slice(block_for(me));
        for s in 1..w {
            let (dst, src) = ((me + s) % w, (me + w - s) % w);
            let out = block_for(dst);
            let into = &mut recv[at[src]..at[src] + recv_counts[src]];
            mpi::request::scope(|scope| {
                let (to, from) = (self.at(dst), self.at(src));
                let mut pending = Vec::new();
                for piece in into.chunks_mut(self.piece) {
                    pending.push(from.immediate_receive_into(scope, piece));
                }
                for piece in out.chunks(self.piece) {
                    pending.push(to.immediate_send(scope, piece));
                }
                for r in pending {
                    r.wait();
                }
            });
        }
    }

    /// All-gather of `counts[r]` values from each rank `r` into `out` (rank order).
    fn gather_v<T: Equivalence + Copy>(&self, mine: &[T], counts: &[usize], out: &mut [T]) {
        if self.one_call(counts) {
            let (c, d) = counts_displs(counts);
            let mut part = PartitionMut::new(out, c, d);
            self.world.all_gather_varcount_into(mine, &mut part);
        } else {
            self.pairwise(|_| mine, out, counts);
        }
    }
}

/// Where each of blocks of `counts` values laid end to end starts.
fn offsets(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |pos, &n| {
            let at = *pos;
            *pos += n;
            Some(at)
        })
        .collect()
}

/// MPI counts and displacements of blocks of `counts` values laid end to end (the caller
/// checked that they fit: [`MpiComm::one_call`]).
fn counts_displs(counts: &[usize]) -> (Vec<Count>, Vec<Count>) {
    let mut c = Vec::with_capacity(counts.len());
    let mut d = Vec::with_capacity(counts.len());
    let mut pos = 0usize;
    for &n in counts {
        c.push(n as Count);
        d.push(pos as Count);
        pos += n;
    }
    (c, d)
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
    fn piece(&self) -> usize {
        self.piece
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = mine.len() as u64;
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&n, &mut lens[..]);
        let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let mut all = vec![0u8; counts.iter().sum()];
        self.gather_v(mine, &counts, &mut all);
        let mut out = Vec::with_capacity(self.size);
        let mut pos = 0;
        for n in counts {
            out.push(all[pos..pos + n].to_vec());
            pos += n;
        }
        Ok(out)
    }
    fn all_gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) -> Result<()> {
        if counts.len() != self.size
            || mine.len() != counts[self.rank]
            || out.len() != counts.iter().sum::<usize>()
        {
            return Err(DistError::Invalid("all-gather sizes disagree".into()));
        }
        self.gather_v(mine, counts, out);
        Ok(())
    }
    fn all_to_all_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        let (ns, nr) = (
            send_counts.iter().sum::<usize>(),
            recv_counts.iter().sum::<usize>(),
        );
        if send_counts.len() != self.size
            || recv_counts.len() != self.size
            || send.len() < ns
            || recv.len() < nr
        {
            return Err(DistError::Invalid("all-to-all buffers too short".into()));
        }
        let (send, recv) = (&send[..ns], &mut recv[..nr]);
        if self.one_call(send_counts) && self.one_call(recv_counts) {
            let (sc, sd) = counts_displs(send_counts);
            let (rc, rd) = counts_displs(recv_counts);
            let part = Partition::new(send, sc, sd);
            let mut rpart = PartitionMut::new(recv, rc, rd);
            self.world.all_to_all_varcount_into(&part, &mut rpart);
        } else {
            let at = offsets(send_counts);
            self.pairwise(|d| &send[at[d]..at[d] + send_counts[d]], recv, recv_counts);
        }
        Ok(())
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        let root = self.at(root);
        for piece in buf.chunks_mut(self.piece) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_disagreements_are_named_with_their_fix() {
        let a = wire_format(1 << 28);
        assert_eq!(wire_mismatch(&[a, a, a]), None);
        let e = wire_mismatch(&[a, a, wire_format(1000)]).unwrap();
        assert!(
            e.contains("rank 2 splits MPI messages into pieces of 1000 values")
                && e.contains("GLASS_MPI_PIECE"),
            "{e}"
        );
        let mut other = a;
        other[4] = 0x0000_803f;
        let e = wire_mismatch(&[a, other]).unwrap();
        assert!(
            e.contains("rank 1 moves floats as f32 (4 bytes, big-endian")
                && e.contains("same glass build"),
            "{e}"
        );
    }
}
