//! The one place matrix products happen, so the GEMM backend stays swappable.
//!
//! Backend: the `gemm` crate's single-threaded kernel. Measured on the 2-core reference machine it reaches
//! ~80% of PyTorch's MKL/oneDNN sgemm and, unlike BLAS libraries whose threading splits
//! the reduction dimension, gives bit-identical results for every thread count
//! (checked by this crate's determinism tests).

use rayon::prelude::*;

/// How the operand is stored: row-major as given, or row-major of its transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Use the matrix as stored (`[rows, cols]` row-major with leading dimension `ld`).
    N,
    /// Use the transpose of the stored matrix.
    T,
}

/// A strided view of a row-major matrix operand.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Leading dimension (distance between stored rows).
    pub ld: usize,
    /// Whether to transpose.
    pub op: Op,
}

impl<'a> Mat<'a> {
    /// Row-major operand used as stored.
    pub fn n(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            ld,
            op: Op::N,
        }
    }
    /// Row-major operand used transposed.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            ld,
            op: Op::T,
        }
    }
    /// (row stride, column stride) of the logical operand.
    fn strides(&self) -> (isize, isize) {
        match self.op {
            Op::N => (self.ld as isize, 1),
            Op::T => (1, self.ld as isize),
        }
    }
    /// Index one past the last element touched by a logical `[rows, cols]` operand.
    fn extent(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let (rs, cs) = self.strides();
        (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
    }
}

/// Whether a product may use the rayon pool or must stay on the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Split over the current rayon pool.
    Pool,
    /// Single-threaded (used inside already-parallel loops).
    Single,
}

/// `C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] (+ C when accumulate)`, C row-major with
/// leading dimension `ldc`.
///
/// Panics only on slice extents that are too short, which is a bug in the caller.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    threads: Threads,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.data.len() >= a.extent(m, k), "gemm: A too short");
    assert!(b.data.len() >= b.extent(k, n), "gemm: B too short");
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let threads = match threads {
        Threads::Pool => rayon::current_num_threads(),
        Threads::Single => 1,
    };
    // Parallel products are cut into tiles whose size depends only on the shape, never
    // on the thread count, and each tile is one single-threaded kernel call: the bits of
    // every output element are therefore the same for any number of threads.
    let flops = m * n * k;
    if threads > 1 && flops >= PAR_MIN_FLOPS {
        let split_rows = m >= n;
        let dim = if split_rows { m } else { n };
        let tile = dim.div_ceil(MAX_TILES).next_multiple_of(16).max(MIN_TILE);
        let c_ptr = SendPtr(c.as_mut_ptr());
        (0..dim.div_ceil(tile)).into_par_iter().for_each(|t| {
            let lo = t * tile;
            let len = tile.min(dim - lo);
            let c_ptr = &c_ptr;
            // SAFETY: tile `t` writes only rows (or columns) lo..lo+len of C; tiles are
            // disjoint and in bounds by the asserts above.
            unsafe {
                if split_rows {
                    let a_t = Mat {
                        data: &a.data[a.offset(lo, 0)..],
                        ..a
                    };
                    kernel(
                        len,
                        n,
                        k,
                        c_ptr.0.add(lo * ldc),
                        ldc,
                        a_t,
                        b,
                        alpha,
                        accumulate,
                    );
                } else {
                    let b_t = Mat {
                        data: &b.data[b.offset(0, lo)..],
                        ..b
                    };
                    kernel(m, len, k, c_ptr.0.add(lo), ldc, a, b_t, alpha, accumulate);
                }
            }
        });
    } else {
        // SAFETY: bounds asserted above; `c` is uniquely borrowed.
        unsafe { kernel(m, n, k, c.as_mut_ptr(), ldc, a, b, alpha, accumulate) };
    }
}

/// Products below this many multiply-adds run on one thread.
const PAR_MIN_FLOPS: usize = 1 << 18;
/// Upper bound on the tiles one product is cut into.
const MAX_TILES: usize = 8;
/// Smallest tile edge.
const MIN_TILE: usize = 32;

struct SendPtr(*mut f32);
// SAFETY: used only for disjoint tile writes, see `matmul`.
unsafe impl Sync for SendPtr {}

impl Mat<'_> {
    /// Element offset of logical position (row, col).
    fn offset(&self, row: usize, col: usize) -> usize {
        let (rs, cs) = self.strides();
        row * rs as usize + col * cs as usize
    }
}

/// One single-threaded call into the backend.
///
/// # Safety
/// `c` must be valid for a `[m, n]` matrix with row stride `ldc`, not aliasing a or b.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
) {
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a.data.as_ptr(),
        a_cs,
        a_rs,
        b.data.as_ptr(),
        b_cs,
        b_rs,
        1.0,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn all_transpose_combinations_match_naive() {
        let (m, n, k) = (13, 7, 29);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if ta { Mat::t(&a, m) } else { Mat::n(&a, k) };
            let bm = if tb { Mat::t(&b, k) } else { Mat::n(&b, n) };
            let mut c = vec![1.0f32; m * n];
            matmul(Threads::Pool, m, n, k, am, bm, &mut c, n, 2.0, true);
            let want = naive(m, n, k, &a, ta, &b, tb);
            for (got, w) in c.iter().zip(&want) {
                assert!(
                    (got - (1.0 + 2.0 * w)).abs() < 1e-4,
                    "ta={ta} tb={tb}: {got} vs {w}"
                );
            }
        }
    }
}
