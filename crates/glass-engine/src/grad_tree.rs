//! The step gradient as a fixed pairwise tree over gradient groups.
//!
//! Floating-point addition is not associative, so "the gradient of the step" has bits
//! only once the order of its sums is fixed. Glass fixes it independently of how many
//! processes compute it: the step's rows are cut into `G` equal, contiguous *gradient
//! groups* (`G` a power of two). Each group's gradient is accumulated into its own zeroed
//! buffer, micro-batch after micro-batch in row order; the `G` group gradients are then
//! combined by the balanced binary tree `node(l+1, k) = node(l, 2k) + node(l, 2k+1)`,
//! element by element. A process holding an aligned block of `G/W` consecutive groups
//! computes an exact subtree; `W` processes finish the top `log2 W` levels in the same
//! shape (see `glass-dist`). One process walks the same tree with a stack of at most
//! `log2 G` partial sums, so every world size that divides `G` gives the same bits.
//! The per-group loss sums (f64) are combined by the same tree.

use rayon::prelude::*;

use crate::model::{split_rows, Model};
use crate::parallel::REDUCE_CHUNK;
use crate::EngineError;

/// Adds `src` into `dst` element by element (one tree node from its two children).
/// Element-wise, so the bits do not depend on the thread count.
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "tree nodes have equal length");
    dst.par_chunks_mut(REDUCE_CHUNK)
        .zip(src.par_chunks(REDUCE_CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += *s));
}

/// Combines `2^k` equal-length leaves, given in order, by the balanced pairwise tree; the
/// result is left in `leaves[0]`. `f64` loss partials follow [`tree_sum_f64`].
pub fn tree_reduce(leaves: &mut [&mut [f32]]) {
    assert!(leaves.len().is_power_of_two(), "the tree needs 2^k leaves");
    let mut stride = 1;
    while stride < leaves.len() {
        let mut i = 0;
        while i < leaves.len() {
            let (l, r) = leaves.split_at_mut(i + stride);
            add_into(l[i], r[0]);
            i += 2 * stride;
        }
        stride *= 2;
    }
}

/// The pairwise tree sum of `2^k` f64 values (loss sums, norm partials of groups).
pub fn tree_sum_f64(xs: &[f64]) -> f64 {
    assert!(xs.len().is_power_of_two(), "the tree needs 2^k leaves");
    let mut v = xs.to_vec();
    while v.len() > 1 {
        v = v.chunks(2).map(|p| p[0] + p[1]).collect();
    }
    v[0]
}

/// Scratch for walking the tree left to right: completed subtrees by level, and spare
/// buffers kept between steps so a step allocates nothing once warm.
#[derive(Debug, Default)]
pub struct GradTree {
    stack: Vec<(u32, Vec<f32>, f64)>,
    spare: Vec<Vec<f32>>,
}

impl GradTree {
    /// Empty scratch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gradient-sized buffers this scratch holds (memory reporting).
    pub fn buffers(&self) -> usize {
        self.stack.len() + self.spare.len()
    }

    fn take_buffer(&mut self, n: usize) -> Vec<f32> {
        match self.spare.pop() {
            Some(b) if b.len() == n => b,
            _ => vec![0.0; n],
        }
    }

    /// Pushes a leaf (level 0) and merges every completed pair above it.
    fn push_leaf(&mut self, mut buf: Vec<f32>, mut loss: f64) {
        let mut level = 0;
        while matches!(self.stack.last(), Some((l, _, _)) if *l == level) {
            let (_, mut left, left_loss) = self.stack.pop().expect("checked");
            add_into(&mut left, &buf);
            self.spare.push(buf);
            buf = left;
            loss += left_loss; // commutative: the same bits as left + right
            level += 1;
        }
        self.stack.push((level, buf, loss));
    }
}

impl Model {
    /// Computes the gradient groups held in `rows` (`groups` consecutive groups of
    /// `rows / groups` packed rows of `seq + 1` tokens each) and leaves their pairwise-tree
    /// sum in [`Model::grads`]. Each group is accumulated from micro-batches of at most
    /// `micro_batch` rows in row order. Every row's loss gradient is scaled by
    /// `1 / step_tokens` (the target tokens of the whole step, over all processes), so the
    /// complete tree is the gradient of the step's mean loss. Returns the tree sum of the
    /// groups' loss sums (nats, not yet divided).
    pub fn accumulate_grouped(
        &mut self,
        tree: &mut GradTree,
        rows: &[u32],
        seq: usize,
        micro_batch: usize,
        groups: usize,
        step_tokens: usize,
    ) -> Result<f64, EngineError> {
        let row_len = seq + 1;
        if rows.is_empty() || !rows.len().is_multiple_of(row_len) || micro_batch == 0 {
            return Err(EngineError::Input(format!(
                "{} tokens do not form rows of {row_len}",
                rows.len()
            )));
        }
        let n_rows = rows.len() / row_len;
        if !groups.is_power_of_two() || !n_rows.is_multiple_of(groups) {
            return Err(EngineError::Input(format!(
                "{n_rows} rows cannot form {groups} equal gradient groups (need a power of two dividing the rows)"
            )));
        }
        if step_tokens == 0 {
            return Err(EngineError::Input("a step needs at least one token".into()));
        }
        let scale = 1.0 / step_tokens as f32;
        let group_len = rows.len() / groups;
        let micro = micro_batch.min(n_rows / groups) * row_len;
        let leaf_loss = |m: &mut Model, group: &[u32]| -> Result<f64, EngineError> {
            m.zero_grads();
            let mut loss = 0.0f64;
            for mb in group.chunks(micro) {
                let (inputs, targets) = split_rows(mb, seq);
                loss += m.forward_backward(&inputs, &targets, mb.len() / row_len, seq, scale)?;
            }
            Ok(loss)
        };
        if groups == 1 {
            return leaf_loss(self, rows);
        }
        tree.stack.clear();
        let n = self.grads.len();
        for group in rows.chunks(group_len) {
            let loss = leaf_loss(self, group)?;
            let fresh = tree.take_buffer(n);
            let leaf = std::mem::replace(&mut self.grads, fresh);
            let _t = crate::profile::span(crate::profile::Phase::GradReduce);
            tree.push_leaf(leaf, loss);
        }
        let (_, root, loss) = tree.stack.pop().expect("a power-of-two tree has one root");
        debug_assert!(tree.stack.is_empty());
        let old = std::mem::replace(&mut self.grads, root);
        tree.spare.push(old);
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_walk_equals_explicit_tree() {
        // Values whose sums round differently in different orders.
        let leaves: Vec<Vec<f32>> = (0..8)
            .map(|i| {
                (0..5)
                    .map(|j| (1.0 + i as f32 * 1e-7) * 10f32.powi((i * 3 + j) % 9 - 4))
                    .collect()
            })
            .collect();
        let mut t = GradTree::new();
        for (i, l) in leaves.iter().enumerate() {
            t.push_leaf(l.clone(), i as f64 * 0.1);
        }
        assert_eq!(t.stack.len(), 1);
        let (_, root, loss) = t.stack.pop().unwrap();
        let mut copies = leaves.clone();
        let mut refs: Vec<&mut [f32]> = copies.iter_mut().map(|v| v.as_mut_slice()).collect();
        tree_reduce(&mut refs);
        assert_eq!(root, copies[0]);
        let ls: Vec<f64> = (0..8).map(|i| i as f64 * 0.1).collect();
        assert_eq!(loss.to_bits(), tree_sum_f64(&ls).to_bits());
        // Two halves reduced separately, then combined: the same bits (what W = 2 does).
        let mut a = leaves[..4].to_vec();
        let mut b = leaves[4..].to_vec();
        let mut ra: Vec<&mut [f32]> = a.iter_mut().map(|v| v.as_mut_slice()).collect();
        tree_reduce(&mut ra);
        let mut rb: Vec<&mut [f32]> = b.iter_mut().map(|v| v.as_mut_slice()).collect();
        tree_reduce(&mut rb);
        add_into(&mut a[0], &b[0]);
        assert_eq!(a[0], root);
        // And a sequential sum differs for these values, so the test can fail.
        let mut seq = leaves[0].clone();
        for l in &leaves[1..] {
            for (s, x) in seq.iter_mut().zip(l) {
                *s += *x;
            }
        }
        assert_ne!(seq, root, "inputs too benign to distinguish the orders");
    }
}
