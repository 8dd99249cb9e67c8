//! Products with a few rows of A, reading a row-major B in place.
//!
//! Decoding multiplies one query row by the keys and one probability row by the values
//! of a growing KV cache, once per head, layer and step. The tiled path would pack that
//! B first, which reads and writes it once more than the arithmetic reads it, and would
//! compute a whole MR-row tile for one row. Here each output row is computed straight
//! from B's rows: for a strip of adjacent columns, one vector accumulator per lane group
//! runs the contract's `fma` chain over each k-block, and the block sums are added in
//! block order. Every output element is still one lane from start to finish, so the bits
//! are exactly the contract's (module docs of [`super`]) and those of the tiled path.
//!
//! Strips: wide ones first, then the remainder. When the columns left are fewer than a
//! strip but the row has at least a strip's width, the last strip is moved back to end at
//! the last column; the overlapped columns are computed again (the same bits) and only
//! the new ones are written, so accumulation is never applied twice.

use super::{Kernel, Mat, Op, KC};

/// Rows of A up to which a product with a plain, row-major B takes this path.
pub(super) const MAX_ROWS: usize = 4;

/// Whether a product of `m` rows with operand `b` takes this path.
pub(super) fn applies(m: usize, b: &Mat<'_>) -> bool {
    m <= MAX_ROWS && b.op == Op::N
}

/// `C[m,n] = alpha · op(A)[m,k] · B[k,n] (+ C)` for a row-major `B` (leading dimension
/// `b.ld`) on the calling thread.
///
/// Callers have checked `kernel` is supported, `k > 0`, `b.op == Op::N` and every extent.
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    kernel: Kernel,
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
    debug_assert!(k > 0 && b.op == Op::N);
    // Every strip reads rows 0..k of B at columns below n.
    let ldb = b.ld;
    let b = &b.data[..(k - 1) * ldb + n];
    let (a_rs, a_cs) = a.strides();
    let mut gathered = Vec::new();
    for i in 0..m {
        let a_row: &[f32] = if a_cs == 1 {
            &a.data[i * a_rs..i * a_rs + k]
        } else {
            gathered.clear();
            gathered.extend((0..k).map(|p| a.data[i * a_rs + p * a_cs]));
            &gathered
        };
        let row = Row {
            a: a_row,
            b,
            ldb,
            alpha,
            accumulate,
        };
        let c_row = &mut c[i * ldc..i * ldc + n];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked the kernel is supported, so avx512f is present.
            Kernel::Avx512 => unsafe { x86::row_avx512(&row, c_row) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: supported ⇒ avx2 and fma are present.
            Kernel::Avx2 => unsafe { x86::row_avx2(&row, c_row) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: supported ⇒ neon is present.
            Kernel::Neon => unsafe { arm::row_neon(&row, c_row) },
            Kernel::Portable => row_generic::<16>(&row, c_row),
            #[allow(unreachable_patterns)]
            _ => unreachable!("kernel {kernel:?} is not built for this target"),
        }
    }
}

/// One output row's operands.
struct Row<'a> {
    /// The row of A, `k` values.
    a: &'a [f32],
    /// B, rows `0..k` of `n` columns at stride `ldb`.
    b: &'a [f32],
    ldb: usize,
    alpha: f32,
    accumulate: bool,
}

/// Covers columns `0..n` with strips of `wide`, then `narrow`, then single columns, moving
/// a last strip back when that avoids narrower ones (see the module docs). Calls
/// `f(first column, width, first column to write)`.
fn strips(n: usize, wide: usize, narrow: usize, mut f: impl FnMut(usize, usize, usize)) {
    let mut j = 0;
    while j + wide <= n {
        f(j, wide, j);
        j += wide;
    }
    if j == n {
        return;
    }
    if n >= wide {
        f(n - wide, wide, j);
        return;
    }
    while j + narrow <= n {
        f(j, narrow, j);
        j += narrow;
    }
    if j == n {
        return;
    }
    if n >= narrow {
        f(n - narrow, narrow, j);
        return;
    }
    for jj in j..n {
        f(jj, 1, jj);
    }
}

/// The contract's last step for the columns `from..j0 + t.len()` of a strip at `j0`.
#[inline(always)]
fn finish(t: &[f32], j0: usize, from: usize, alpha: f32, accumulate: bool, c: &mut [f32]) {
    let c = &mut c[from..j0 + t.len()];
    let t = &t[from - j0..];
    if accumulate {
        for (cv, &x) in c.iter_mut().zip(t) {
            *cv = alpha.mul_add(x, *cv);
        }
    } else {
        for (cv, &x) in c.iter_mut().zip(t) {
            *cv = alpha * x;
        }
    }
}

/// One strip of `W` columns from `j0`, in plain code (`f32::mul_add`): the reference the
/// vector strips reproduce, and the whole path for the portable kernel.
#[inline(always)]
fn strip_generic<const W: usize>(r: &Row<'_>, j0: usize) -> [f32; W] {
    let k = r.a.len();
    let mut t = [0.0f32; W];
    for (q, p0) in (0..k).step_by(KC).enumerate() {
        let mut s = [0.0f32; W];
        for p in p0..(p0 + KC).min(k) {
            let ap = r.a[p];
            let bp = &r.b[p * r.ldb + j0..p * r.ldb + j0 + W];
            for (x, &bv) in s.iter_mut().zip(bp) {
                *x = ap.mul_add(bv, *x);
            }
        }
        if q == 0 {
            t = s;
        } else {
            for (x, y) in t.iter_mut().zip(s) {
                *x += y;
            }
        }
    }
    t
}

#[inline(always)]
fn row_generic<const W: usize>(r: &Row<'_>, c: &mut [f32]) {
    strips(c.len(), W, W, |j0, w, from| {
        let (wide, single);
        let t: &[f32] = if w == W {
            wide = strip_generic::<W>(r, j0);
            &wide
        } else {
            single = strip_generic::<1>(r, j0);
            &single
        };
        finish(t, j0, from, r.alpha, r.accumulate, c);
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{finish, strip_generic, strips, Row, KC};
    use std::arch::x86_64::*;

    /// `V` vectors of 16 lanes: columns `j0..j0 + 16·V`.
    ///
    /// # Safety
    /// avx512f must be present; the strip must lie inside `r.b` (the caller's bounds).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn strip512<const V: usize>(r: &Row<'_>, j0: usize) -> [[f32; 16]; V] {
        let k = r.a.len();
        // Bounds once for the whole strip: row k-1 at columns up to j0 + 16·V.
        assert!(k >= 1 && (k - 1) * r.ldb + j0 + 16 * V <= r.b.len());
        let b = r.b.as_ptr();
        let mut t = [_mm512_setzero_ps(); V];
        for (q, p0) in (0..k).step_by(KC).enumerate() {
            let mut s = [_mm512_setzero_ps(); V];
            for p in p0..(p0 + KC).min(k) {
                let ap = _mm512_set1_ps(r.a[p]);
                // SAFETY: p < k and the assert above bound every load of the strip.
                let bp = unsafe { b.add(p * r.ldb + j0) };
                for (v, sv) in s.iter_mut().enumerate() {
                    // SAFETY: as above; unaligned loads need no alignment.
                    *sv = _mm512_fmadd_ps(ap, unsafe { _mm512_loadu_ps(bp.add(16 * v)) }, *sv);
                }
            }
            if q == 0 {
                t = s;
            } else {
                for (tv, sv) in t.iter_mut().zip(s) {
                    *tv = _mm512_add_ps(*tv, sv);
                }
            }
        }
        let mut out = [[0.0f32; 16]; V];
        for (o, tv) in out.iter_mut().zip(t) {
            // SAFETY: each row of `out` holds 16 f32.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), tv) };
        }
        out
    }

    /// One row with AVX-512F: strips of 64 columns (four accumulators), then 16, then 1.
    ///
    /// # Safety
    /// avx512f must be present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(r: &Row<'_>, c: &mut [f32]) {
        strips(c.len(), 64, 16, |j0, w, from| {
            // SAFETY: the CPU has the instructions (this function's contract); `strips`
            // keeps every strip inside columns 0..n, which the caller bounded in `r.b`.
            let (wide, narrow, single);
            let t: &[f32] = match w {
                64 => {
                    wide = unsafe { strip512::<4>(r, j0) };
                    wide.as_flattened()
                }
                16 => {
                    narrow = unsafe { strip512::<1>(r, j0) };
                    narrow.as_flattened()
                }
                _ => {
                    single = strip_generic::<1>(r, j0);
                    &single
                }
            };
            finish(t, j0, from, r.alpha, r.accumulate, c);
        });
    }

    /// `V` vectors of 8 lanes: columns `j0..j0 + 8·V`.
    ///
    /// # Safety
    /// avx2 and fma must be present; the strip must lie inside `r.b`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn strip256<const V: usize>(r: &Row<'_>, j0: usize) -> [[f32; 8]; V] {
        let k = r.a.len();
        assert!(k >= 1 && (k - 1) * r.ldb + j0 + 8 * V <= r.b.len());
        let b = r.b.as_ptr();
        let mut t = [_mm256_setzero_ps(); V];
        for (q, p0) in (0..k).step_by(KC).enumerate() {
            let mut s = [_mm256_setzero_ps(); V];
            for p in p0..(p0 + KC).min(k) {
                let ap = _mm256_set1_ps(r.a[p]);
                // SAFETY: p < k and the assert above bound every load of the strip.
                let bp = unsafe { b.add(p * r.ldb + j0) };
                for (v, sv) in s.iter_mut().enumerate() {
                    // SAFETY: as above; unaligned loads need no alignment.
                    *sv = _mm256_fmadd_ps(ap, unsafe { _mm256_loadu_ps(bp.add(8 * v)) }, *sv);
                }
            }
            if q == 0 {
                t = s;
            } else {
                for (tv, sv) in t.iter_mut().zip(s) {
                    *tv = _mm256_add_ps(*tv, sv);
                }
            }
        }
        let mut out = [[0.0f32; 8]; V];
        for (o, tv) in out.iter_mut().zip(t) {
            // SAFETY: each row of `out` holds 8 f32.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), tv) };
        }
        out
    }

    /// One row with AVX2+FMA: strips of 32 columns (four accumulators), then 8, then 1.
    ///
    /// # Safety
    /// avx2 and fma must be present.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(r: &Row<'_>, c: &mut [f32]) {
        strips(c.len(), 32, 8, |j0, w, from| {
            // SAFETY: the CPU has the instructions (this function's contract); `strips`
            // keeps every strip inside columns 0..n, which the caller bounded in `r.b`.
            let (wide, narrow, single);
            let t: &[f32] = match w {
                32 => {
                    wide = unsafe { strip256::<4>(r, j0) };
                    wide.as_flattened()
                }
                8 => {
                    narrow = unsafe { strip256::<1>(r, j0) };
                    narrow.as_flattened()
                }
                _ => {
                    single = strip_generic::<1>(r, j0);
                    &single
                }
            };
            finish(t, j0, from, r.alpha, r.accumulate, c);
        });
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{row_generic, Row};

    /// One row with NEON: the plain strips, compiled with NEON (FMA is part of it).
    ///
    /// # Safety
    /// neon must be present.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn row_neon(r: &Row<'_>, c: &mut [f32]) {
        row_generic::<16>(r, c);
    }
}
