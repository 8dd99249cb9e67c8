//! Collectives for data-parallel Glass runs, with a fixed combination order.
//!
//! A plain MPI all-reduce sums in an order that depends on the world size and on the MPI
//! library's algorithm, so its bits are not reproducible. Here the only primitives asked
//! of a transport are data movement (all-gather, all-to-all, broadcast); every float sum
//! is done by this crate, in the order of the engine's gradient tree
//! ([`glass_engine::grad_tree`]). A transport (single process, threads in one process,
//! MPI, later NCCL) implements [`Collective`]'s few required methods; reduce-scatter and
//! all-reduce come with it.

use std::ops::Range;

use glass_engine::grad_tree::{tree_reduce, tree_sum_f64};
use glass_engine::parallel::REDUCE_CHUNK;

pub mod launch;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi_comm;

pub use local::{local_group, local_group_with_piece, LocalGroup, Solo};

/// Default most values one transport message carries: 2^28 `f32`s (1 GiB), well inside
/// MPI's C `int` counts and below the 2 GiB at which several MPI transports fail.
pub const DEFAULT_PIECE: usize = 1 << 28;

/// Largest piece MPI can express (a C `int` count).
pub const MAX_PIECE: usize = i32::MAX as usize;

/// Values a reduce-scatter exchanges per round, over all ranks together (2^23 `f32`s,
/// 32 MiB, received, and as many staged to send): its scratch stays this size however
/// large the model is.
pub const REDUCE_WINDOW_TOTAL: usize = 1 << 23;

/// Checks a piece size (values per transport message): `1..=`[`MAX_PIECE`].
pub fn check_piece(piece: usize) -> Result<usize> {
    if (1..=MAX_PIECE).contains(&piece) {
        Ok(piece)
    } else {
        Err(DistError::Invalid(format!(
            "a piece of {piece} values per message: use 1 to {MAX_PIECE} (default {DEFAULT_PIECE})"
        )))
    }
}

/// What a collective can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Buffers of the wrong size or a world size the operation cannot serve.
    #[error("collective: {0}")]
    Invalid(String),
    /// The transport failed (a peer disappeared, the library refused).
    #[error("communication failed: {0}")]
    Transport(String),
}

/// Result of a collective.
pub type Result<T> = std::result::Result<T, DistError>;

/// A group of `size()` processes (ranks) that call every operation together, in the same
/// order. Implementors provide data movement only; the provided methods add the
/// fixed-order float reductions on top.
pub trait Collective {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Short name of the transport (`single`, `threads`, `mpi`), for logs and reports.
    fn transport(&self) -> &'static str;
    /// Most values one message of this transport carries (larger transfers go in pieces
    /// of this size); callers that stream large state (checkpoints) through collectives
    /// keep their pieces at most this long. Unlimited by default.
    fn piece(&self) -> usize {
        usize::MAX
    }

    /// Every rank's `mine`, in rank order (lengths may differ).
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Concatenation of every rank's `mine` (rank `r` contributes `counts[r]` values) into
    /// `out`, on every rank.
    fn all_gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) -> Result<()>;
    /// Personalised exchange: `send` holds `send_counts[r]` values for each rank `r` in
    /// rank order; `recv` receives `recv_counts[r]` values from each rank `r`, in rank
    /// order.
    fn all_to_all_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()>;
    /// Copies `root`'s `buf` into every rank's `buf` (equal lengths on every rank).
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()>;

    /// `root`'s bytes on every rank.
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        let mine = if self.rank() == root {
            buf.as_slice()
        } else {
            &[]
        };
        let mut all = self.all_gather_bytes(mine)?;
        *buf = std::mem::take(&mut all[root]);
        Ok(())
    }

    /// Every rank's `f64` values, concatenated in rank order.
    fn all_gather_f64(&self, mine: &[f64]) -> Result<Vec<Vec<f64>>> {
        let bytes: Vec<u8> = mine.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(self
            .all_gather_bytes(&bytes)?
            .iter()
            .map(|b| {
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            })
            .collect())
    }

    /// The pairwise-tree sum over ranks of one `f64` per rank (rank order = leaf order).
    fn tree_sum_f64(&self, mine: f64) -> Result<f64> {
        let all = self.all_gather_f64(&[mine])?;
        let leaves: Vec<f64> = all.iter().map(|v| v[0]).collect();
        check_pow2(leaves.len())?;
        Ok(tree_sum_f64(&leaves))
    }

    /// Deterministic reduce-scatter: `buf` is this rank's leaf (the same length on every
    /// rank); afterwards `out` (length `shards[rank].len()`) holds, for this rank's shard,
    /// the pairwise-tree sum of every rank's `buf` with rank `r` as leaf `r`. The partial
    /// vectors for a shard travel to its owner (all-to-all) and are summed there, so the
    /// bits depend on neither the transport nor its algorithms.
    ///
    /// The shards go in windows of [`reduce_window`] values (see
    /// [`Collective::reduce_scatter_windows`]), so `scratch` holds two windows per rank,
    /// not a gradient.
    fn reduce_scatter_tree(
        &self,
        buf: &[f32],
        shards: &[Range<usize>],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let win = reduce_window(self.size());
        self.reduce_scatter_windows(buf, shards, out, scratch, win)
    }

    /// [`Collective::reduce_scatter_tree`] in windows of `win` values: round `k` sends
    /// every owner window `k` of its shard and sums window `k` of this rank's. The sums
    /// are element-wise, so the windows do not change the bits.
    fn reduce_scatter_windows(
        &self,
        buf: &[f32],
        shards: &[Range<usize>],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
        win: usize,
    ) -> Result<()> {
        let (w, me) = (self.size(), self.rank());
        let win = win.max(1);
        check_pow2(w)?;
        check_shards(shards, w, buf.len())?;
        let mine = shards[me].clone();
        if out.len() != mine.len() {
            return Err(DistError::Invalid(format!(
                "reduce-scatter output holds {} values, the shard {}",
                out.len(),
                mine.len()
            )));
        }
        if w == 1 {
            out.copy_from_slice(&buf[mine]);
            return Ok(());
        }
        let rounds = shards
            .iter()
            .map(|s| s.len().div_ceil(win))
            .max()
            .unwrap_or(0);
        let window = |s: &Range<usize>, k: usize| {
            let a = (s.start + k * win).min(s.end);
            a..(a + win).min(s.end)
        };
        let send_len = (w * win).min(buf.len());
        scratch.clear();
        scratch.resize(send_len + w * win.min(mine.len()), 0.0);
        let (send, recv) = scratch.split_at_mut(send_len);
        for k in 0..rounds {
            let mut send_counts = Vec::with_capacity(w);
            let mut at = 0;
            for s in shards {
                let part = &buf[window(s, k)];
                send[at..at + part.len()].copy_from_slice(part);
                at += part.len();
                send_counts.push(part.len());
            }
            let own = window(&mine, k);
            let n = own.len();
            self.all_to_all_f32(&send[..at], &send_counts, &mut recv[..w * n], &vec![n; w])?;
            if n > 0 {
                let mut leaves: Vec<&mut [f32]> = recv[..w * n].chunks_mut(n).collect();
                tree_reduce(&mut leaves);
                out[own.start - mine.start..own.end - mine.start].copy_from_slice(&recv[..n]);
            }
        }
        Ok(())
    }

    /// Deterministic all-reduce: every rank's `buf` becomes the pairwise-tree sum over
    /// ranks ([`Collective::reduce_scatter_tree`] then an all-gather).
    fn all_reduce_tree(
        &self,
        buf: &mut [f32],
        shards: &[Range<usize>],
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mine = shards[self.rank()].clone();
        let mut part = vec![0.0f32; mine.len()];
        self.reduce_scatter_tree(buf, shards, &mut part, scratch)?;
        let counts: Vec<usize> = shards.iter().map(|s| s.len()).collect();
        self.all_gather_f32(&part, &counts, buf)
    }

    /// Gathers every rank's shard into `out` on `root` only (other ranks pass an empty
    /// `out`), expressed as a personalised exchange so no rank but `root` holds the whole.
    fn gather_f32(
        &self,
        root: usize,
        mine: &[f32],
        shards: &[Range<usize>],
        out: &mut [f32],
    ) -> Result<()> {
        let w = self.size();
        let mut send_counts = vec![0; w];
        send_counts[root] = mine.len();
        let recv_counts: Vec<usize> = if self.rank() == root {
            shards.iter().map(|s| s.len()).collect()
        } else {
            vec![0; w]
        };
        self.all_to_all_f32(mine, &send_counts, out, &recv_counts)
    }

    /// Sends shard `r` of `root`'s `full` to rank `r` (`full` is ignored elsewhere).
    fn scatter_f32(
        &self,
        root: usize,
        full: &[f32],
        shards: &[Range<usize>],
        mine: &mut [f32],
    ) -> Result<()> {
        let w = self.size();
        let (send, send_counts): (&[f32], Vec<usize>) = if self.rank() == root {
            (full, shards.iter().map(|s| s.len()).collect())
        } else {
            (&[], vec![0; w])
        };
        let mut recv_counts = vec![0; w];
        recv_counts[root] = mine.len();
        self.all_to_all_f32(send, &send_counts, mine, &recv_counts)
    }
}

fn check_pow2(w: usize) -> Result<()> {
    if w.is_power_of_two() {
        Ok(())
    } else {
        Err(DistError::Invalid(format!(
            "a fixed-order tree over ranks needs a power-of-two world size, not {w}"
        )))
    }
}

fn check_shards(shards: &[Range<usize>], w: usize, n: usize) -> Result<()> {
    let tiles = shards.len() == w
        && shards.first().is_some_and(|s| s.start == 0)
        && shards.last().is_some_and(|s| s.end == n)
        && shards.windows(2).all(|p| p[0].end == p[1].start);
    if tiles {
        Ok(())
    } else {
        Err(DistError::Invalid(format!(
            "shards {shards:?} do not tile {n} values over {w} ranks"
        )))
    }
}

/// The window of a reduce-scatter over `w` ranks: [`REDUCE_WINDOW_TOTAL`]` / w` values,
/// at least 65 536. (Independent of the transport's piece: a window longer than a piece
/// travels in several messages.)
pub fn reduce_window(w: usize) -> usize {
    (REDUCE_WINDOW_TOTAL / w.max(1)).max(REDUCE_CHUNK)
}

/// Splits `n` values into `w` contiguous shards whose boundaries fall on multiples of
/// [`REDUCE_CHUNK`], so that per-chunk partial sums of squares concatenated over ranks are
/// exactly the engine's single-process partials (the gradient norm keeps its bits).
pub fn shards(n: usize, w: usize) -> Vec<Range<usize>> {
    let chunks = n.div_ceil(REDUCE_CHUNK);
    (0..w)
        .map(|r| {
            let a = (r * chunks / w * REDUCE_CHUNK).min(n);
            let b = ((r + 1) * chunks / w * REDUCE_CHUNK).min(n);
            a..b
        })
        .collect()
}

/// The world sizes that reproduce a run's bits with `groups` gradient groups: the powers
/// of two dividing `groups`.
pub fn valid_world_sizes(groups: usize) -> Vec<usize> {
    (0..usize::BITS)
        .map(|k| 1usize << k)
        .take_while(|&w| w <= groups)
        .filter(|w| groups.is_multiple_of(*w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_and_align() {
        for n in [0, 1, REDUCE_CHUNK, 3 * REDUCE_CHUNK + 5, 10 * REDUCE_CHUNK] {
            for w in [1, 2, 4, 8] {
                let s = shards(n, w);
                check_shards(&s, w, n).unwrap();
                for r in &s {
                    assert!(r.start % REDUCE_CHUNK == 0 || r.start == n);
                }
            }
        }
        assert_eq!(valid_world_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(valid_world_sizes(1), vec![1]);
    }
}
