//! Transports inside one process: [`Solo`] (world size 1, what a plain `glass train`
//! uses) and [`LocalGroup`] (W threads exchanging through shared memory), which runs the
//! exact multi-rank code path in tests without an MPI library.

use std::sync::{Arc, Barrier, Mutex};

use crate::{Collective, DistError, Result};

/// The world of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn transport(&self) -> &'static str {
        "single"
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn all_gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) -> Result<()> {
        check_len(mine.len(), counts[0])?;
        out.copy_from_slice(mine);
        Ok(())
    }
    fn all_to_all_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        check_len(send_counts[0], recv_counts[0])?;
        recv[..recv_counts[0]].copy_from_slice(&send[..send_counts[0]]);
        Ok(())
    }
    fn broadcast_f32(&self, _root: usize, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

fn check_len(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(DistError::Invalid(format!(
            "sent {a} values where {b} are expected"
        )))
    }
}

#[derive(Debug, Default)]
struct Slots {
    bytes: Vec<Vec<u8>>,
    floats: Vec<(Vec<f32>, Vec<usize>)>,
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    slots: Mutex<Slots>,
}

/// One rank of `W` threads in this process (see [`local_group`]). Each operation publishes
/// this rank's contribution, waits for every rank, reads, and waits again so slots are
/// not overwritten while a slower rank still reads them.
#[derive(Debug, Clone)]
pub struct LocalGroup {
    rank: usize,
    size: usize,
    piece: usize,
    shared: Arc<Shared>,
}

/// `w` connected ranks; hand one to each thread.
pub fn local_group(w: usize) -> Vec<LocalGroup> {
    local_group_with_piece(w, usize::MAX)
}

/// [`local_group`] whose [`Collective::piece`] is `piece`: memory still moves at once, but
/// callers that stream through collectives in pieces (sharded checkpoints) cut their work
/// as they would over an MPI transport with that piece.
pub fn local_group_with_piece(w: usize, piece: usize) -> Vec<LocalGroup> {
    let shared = Arc::new(Shared {
        barrier: Barrier::new(w),
        slots: Mutex::new(Slots {
            bytes: vec![Vec::new(); w],
            floats: vec![(Vec::new(), Vec::new()); w],
        }),
    });
    (0..w)
        .map(|rank| LocalGroup {
            rank,
            size: w,
            piece: piece.max(1),
            shared: shared.clone(),
        })
        .collect()
}

impl LocalGroup {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panicking rank poisons the lock; the others then fail loudly too.
        self.shared.slots.lock().expect("a rank thread panicked")
    }

    /// Publishes `send` (with per-destination counts), then hands every rank's
    /// publication to `read`.
    fn exchange<T>(
        &self,
        send: &[f32],
        counts: &[usize],
        read: impl FnOnce(&[(Vec<f32>, Vec<usize>)]) -> T,
    ) -> T {
        self.slots().floats[self.rank] = (send.to_vec(), counts.to_vec());
        self.shared.barrier.wait();
        let out = read(&self.slots().floats);
        self.shared.barrier.wait();
        out
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn transport(&self) -> &'static str {
        "threads"
    }
    fn piece(&self) -> usize {
        self.piece
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.slots().bytes[self.rank] = mine.to_vec();
        self.shared.barrier.wait();
        let all = self.slots().bytes.clone();
        self.shared.barrier.wait();
        Ok(all)
    }
    fn all_gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) -> Result<()> {
        check_len(mine.len(), counts[self.rank])?;
        self.exchange(mine, &[], |all| {
            let mut pos = 0;
            for (r, (v, _)) in all.iter().enumerate() {
                check_len(v.len(), counts[r])?;
                out[pos..pos + v.len()].copy_from_slice(v);
                pos += v.len();
            }
            Ok(())
        })
    }
    fn all_to_all_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        let me = self.rank;
        self.exchange(send, send_counts, |all| {
            let mut pos = 0;
            for (r, (v, counts)) in all.iter().enumerate() {
                let start: usize = counts[..me].iter().sum();
                check_len(counts[me], recv_counts[r])?;
                recv[pos..pos + counts[me]].copy_from_slice(&v[start..start + counts[me]]);
                pos += counts[me];
            }
            Ok(())
        })
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        let mine: &[f32] = if self.rank == root { buf } else { &[] };
        let data = self.exchange(mine, &[], |all| all[root].0.clone());
        check_len(data.len(), buf.len())?;
        buf.copy_from_slice(&data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards;

    #[test]
    fn threaded_collectives_match_solo_sums() {
        let n = 3 * glass_engine::parallel::REDUCE_CHUNK + 17;
        let leaf = |r: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 31 + r * 7) % 97) as f32 * 10f32.powi((i + r) as i32 % 7 - 3))
                .collect()
        };
        // Reference: the engine's tree over the four leaves in one process.
        let mut leaves: Vec<Vec<f32>> = (0..4).map(leaf).collect();
        let mut refs: Vec<&mut [f32]> = leaves.iter_mut().map(|v| v.as_mut_slice()).collect();
        glass_engine::grad_tree::tree_reduce(&mut refs);
        let want = leaves[0].clone();
        // One window; then windows of 1000 values: 66 rounds, the last one short, over
        // shards of unequal length (the last rank's is 17).
        for win in [crate::reduce_window(4), 1000] {
            let rounds = shards(n, 4).iter().map(|s| s.len().div_ceil(win)).max();
            assert_eq!(rounds, Some(if win == 1000 { 66 } else { 1 }));
            for g in all_reduce_on_threads(n, win, &leaf) {
                assert!(
                    g == want,
                    "all-reduce differs from the single-process tree (window {win})"
                );
            }
        }
    }

    fn all_reduce_on_threads(
        n: usize,
        win: usize,
        leaf: &(impl Fn(usize) -> Vec<f32> + Sync),
    ) -> Vec<Vec<f32>> {
        std::thread::scope(|s| {
            let hs: Vec<_> = local_group(4)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut buf = leaf(c.rank());
                        let sh = shards(n, 4);
                        if win == crate::reduce_window(4) {
                            c.all_reduce_tree(&mut buf, &sh, &mut Vec::new()).unwrap();
                        } else {
                            let mut part = vec![0.0; sh[c.rank()].len()];
                            c.reduce_scatter_windows(&buf, &sh, &mut part, &mut Vec::new(), win)
                                .unwrap();
                            let counts: Vec<usize> = sh.iter().map(|s| s.len()).collect();
                            c.all_gather_f32(&part, &counts, &mut buf).unwrap();
                        }
                        // Gather/scatter round trip of this rank's shard.
                        let mine = buf[sh[c.rank()].clone()].to_vec();
                        let mut full = if c.rank() == 1 { vec![0.0; n] } else { vec![] };
                        c.gather_f32(1, &mine, &sh, &mut full).unwrap();
                        if c.rank() == 1 {
                            assert_eq!(full, buf);
                        }
                        let mut back = vec![0.0; mine.len()];
                        c.scatter_f32(1, &full, &sh, &mut back).unwrap();
                        assert_eq!(back, mine);
                        let s = c.tree_sum_f64(c.rank() as f64 * 0.1).unwrap();
                        assert_eq!(s, (0.0 + 0.1) + (0.2 + 0.30000000000000004));
                        buf
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}
