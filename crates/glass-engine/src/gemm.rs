//! The one place matrix products happen, so the GEMM backend stays swappable.
//!
//! Backend: the `gemm` crate. Measured on the 2-core reference machine it reaches
//! ~80% of PyTorch's MKL/oneDNN sgemm and, unlike BLAS libraries whose threading splits
//! the reduction dimension, gives bit-identical results for every thread count
//! (checked by this crate's determinism tests).

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
        Mat { data, ld, op: Op::N }
    }
    /// Row-major operand used transposed.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Mat { data, ld, op: Op::T }
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
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the asserts above bound every index the kernel touches by the slices'
    // lengths; `c` is uniquely borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
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
            par,
        );
    }
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
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if ta { Mat::t(&a, m) } else { Mat::n(&a, k) };
            let bm = if tb { Mat::t(&b, k) } else { Mat::n(&b, n) };
            let mut c = vec![1.0f32; m * n];
            matmul(Threads::Pool, m, n, k, am, bm, &mut c, n, 2.0, true);
            let want = naive(m, n, k, &a, ta, &b, tb);
            for (got, w) in c.iter().zip(&want) {
                assert!((got - (1.0 + 2.0 * w)).abs() < 1e-4, "ta={ta} tb={tb}: {got} vs {w}");
            }
        }
    }
}
