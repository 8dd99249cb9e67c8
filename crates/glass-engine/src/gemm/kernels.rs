//! Micro-kernels: an MR×NR tile of `Σ_p a[i,p]·b[p,j]` over one k-block, each element
//! accumulated with one FMA per `p` in ascending order from `+0`, then the shared
//! [`epilogue`] (block sum, alpha, accumulate). The kernels differ only in how many
//! output elements they hold per register; per element the operations are identical.

/// Where one micro-tile's results go and what to do with them (see the module docs of
/// [`super`] for the formula).
pub(super) struct Dst {
    /// Running block total `t` (may equal `c` when C's old value is not needed).
    pub tot: *mut f32,
    pub tot_rs: usize,
    /// Output tile.
    pub c: *mut f32,
    pub c_rs: usize,
    /// Valid rows and columns of the tile (≤ MR, NR).
    pub rows: usize,
    pub cols: usize,
    /// First k-block (`t = s`), otherwise `t = t + s`.
    pub first: bool,
    /// Last k-block: write `alpha·t` or `fma(alpha, t, c)` into C; otherwise store `t`.
    pub last: bool,
    pub alpha: f32,
    pub accumulate: bool,
}

/// A micro-kernel implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// x86-64 AVX-512F: 12×32 tiles in 24 zmm accumulators.
    Avx512,
    /// x86-64 AVX2 + FMA: 6×16 tiles in 12 ymm accumulators.
    Avx2,
    /// aarch64 NEON (always present there): 8×8 tiles in 16 q accumulators.
    Neon,
    /// Any CPU: `f32::mul_add` (a hardware FMA where the target has one, otherwise the
    /// correctly rounded libm `fmaf`), 4×16 tiles left to the compiler.
    Portable,
}

impl Kernel {
    /// Every kernel, in order of preference.
    pub const ALL: [Kernel; 4] = [Kernel::Avx512, Kernel::Avx2, Kernel::Neon, Kernel::Portable];

    /// The name `GLASS_KERNEL` uses.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Neon => "neon",
            Kernel::Portable => "portable",
        }
    }

    /// Parses a `GLASS_KERNEL` value.
    pub fn parse(s: &str) -> Option<Kernel> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU (and build target) can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Kernel::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Kernel::Portable)
    }

    /// Micro-tile shape (MR, NR). Every MR divides `MC` and every NR divides `NC`.
    pub(super) fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Avx512 => (12, 32),
            Kernel::Avx2 => (6, 16),
            Kernel::Neon => (8, 8),
            Kernel::Portable => (4, 16),
        }
    }

    /// Runs one micro-tile.
    ///
    /// # Safety
    /// The kernel must be supported; `a` must hold `kc·MR` packed values and `b` `kc·NR`;
    /// `dst` must describe tiles valid for reads and writes of `rows × cols` elements
    /// with the given row strides, accessed by no one else during the call.
    #[inline]
    pub(super) unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, dst: &Dst) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: supported ⇒ avx512f detected; the caller upholds the rest.
            Kernel::Avx512 => unsafe { x86::avx512(kc, a, b, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: supported ⇒ avx2 and fma detected; the caller upholds the rest.
            Kernel::Avx2 => unsafe { x86::avx2(kc, a, b, dst) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: supported ⇒ neon detected; the caller upholds the rest.
            Kernel::Neon => unsafe { arm::neon(kc, a, b, dst) },
            // SAFETY: the caller upholds the buffer contract.
            Kernel::Portable => unsafe { portable(kc, a, b, dst) },
            #[allow(unreachable_patterns)]
            _ => unreachable!("kernel {self:?} is not built for this target"),
        }
    }
}

/// Applies the block sum, alpha and accumulate of the contract to a tile of finished
/// k-block sums `s`. Element-wise only, so any vectorisation gives the same bits; it is
/// inlined into every kernel so it runs with that kernel's instruction set (notably a
/// hardware FMA for the final `fma(alpha, t, c)`).
///
/// # Safety
/// As for [`Kernel::run`].
#[inline(always)]
unsafe fn epilogue<const MR: usize, const NR: usize>(s: &[[f32; NR]; MR], d: &Dst) {
    let (rows, cols) = (d.rows, d.cols);
    for (i, s_row) in s.iter().enumerate().take(rows) {
        let mut t = *s_row;
        // SAFETY: row i < rows and `cols` elements per row are valid (caller contract);
        // each slice is dropped before the next one to the same memory is made.
        unsafe {
            if !d.first {
                let tot = std::slice::from_raw_parts(d.tot.add(i * d.tot_rs), cols);
                for (x, &y) in t.iter_mut().zip(tot) {
                    *x += y; // t + s: IEEE addition is commutative, bit for bit
                }
            }
            if d.last {
                let c = std::slice::from_raw_parts_mut(d.c.add(i * d.c_rs), cols);
                if d.accumulate {
                    for (cv, &x) in c.iter_mut().zip(&t) {
                        *cv = d.alpha.mul_add(x, *cv);
                    }
                } else {
                    for (cv, &x) in c.iter_mut().zip(&t) {
                        *cv = d.alpha * x;
                    }
                }
            } else {
                let tot = std::slice::from_raw_parts_mut(d.tot.add(i * d.tot_rs), cols);
                tot.copy_from_slice(&t[..cols]);
            }
        }
    }
}

/// The reference kernel: the contract written out with `f32::mul_add`.
///
/// # Safety
/// As for [`Kernel::run`] with MR = 4, NR = 16.
unsafe fn portable(kc: usize, a: *const f32, b: *const f32, d: &Dst) {
    const MR: usize = 4;
    const NR: usize = 16;
    // SAFETY: the caller guarantees kc·MR packed A values and kc·NR packed B values.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * MR),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    let mut s = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &ai) in s.iter_mut().zip(ap) {
            for (x, &bj) in row.iter_mut().zip(bp) {
                *x = ai.mul_add(bj, *x);
            }
        }
    }
    // SAFETY: forwarded caller contract.
    unsafe { epilogue::<MR, NR>(&s, d) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{epilogue, Dst};
    use std::arch::x86_64::*;

    /// 12×32 AVX-512F tile: per k, two 16-lane loads of B and twelve broadcasts of A,
    /// 24 independent `vfmadd231ps` chains (one per 16 output elements).
    ///
    /// # Safety
    /// The CPU must support avx512f; otherwise as for `Kernel::run` with MR=12, NR=32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(kc: usize, a: *const f32, b: *const f32, d: &Dst) {
        const MR: usize = 12;
        const NR: usize = 32;
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        for p in 0..kc {
            // SAFETY: p < kc, so b[p·NR .. p·NR+32] and a[p·MR .. p·MR+12] are inside
            // the packed buffers the caller guarantees; unaligned loads need no alignment.
            unsafe {
                let bp = b.add(p * NR);
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                let ap = a.add(p * MR);
                for i in 0..MR {
                    let ai = _mm512_set1_ps(*ap.add(i));
                    acc[2 * i] = _mm512_fmadd_ps(ai, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm512_fmadd_ps(ai, b1, acc[2 * i + 1]);
                }
            }
        }
        let mut s = [[0.0f32; NR]; MR];
        for (i, row) in s.iter_mut().enumerate() {
            // SAFETY: each row is 32 contiguous f32, room for two 16-lane stores.
            unsafe {
                _mm512_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[2 * i + 1]);
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { epilogue::<MR, NR>(&s, d) };
    }

    /// 6×16 AVX2+FMA tile: per k, two 8-lane loads of B and six broadcasts of A,
    /// 12 independent `vfmadd231ps` chains.
    ///
    /// # Safety
    /// The CPU must support avx2 and fma; otherwise as for `Kernel::run` with MR=6,
    /// NR=16.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(kc: usize, a: *const f32, b: *const f32, d: &Dst) {
        const MR: usize = 6;
        const NR: usize = 16;
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        for p in 0..kc {
            // SAFETY: p < kc keeps every load inside the packed buffers (caller contract).
            unsafe {
                let bp = b.add(p * NR);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                let ap = a.add(p * MR);
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*ap.add(i));
                    acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
                }
            }
        }
        let mut s = [[0.0f32; NR]; MR];
        for (i, row) in s.iter_mut().enumerate() {
            // SAFETY: each row is 16 contiguous f32, room for two 8-lane stores.
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[2 * i + 1]);
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { epilogue::<MR, NR>(&s, d) };
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{epilogue, Dst};
    use std::arch::aarch64::*;

    /// 8×8 NEON tile: per k, two 4-lane loads of B and of A, 16 independent
    /// `fmla` chains (lane-indexed A).
    ///
    /// # Safety
    /// The CPU must support neon; otherwise as for `Kernel::run` with MR=8, NR=8.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn neon(kc: usize, a: *const f32, b: *const f32, d: &Dst) {
        const MR: usize = 8;
        const NR: usize = 8;
        let mut acc = [vdupq_n_f32(0.0); 2 * MR];
        for p in 0..kc {
            // SAFETY: p < kc keeps every load inside the packed buffers (caller contract).
            unsafe {
                let bp = b.add(p * NR);
                let b0 = vld1q_f32(bp);
                let b1 = vld1q_f32(bp.add(4));
                let ap = a.add(p * MR);
                let a0 = vld1q_f32(ap);
                let a1 = vld1q_f32(ap.add(4));
                macro_rules! row {
                    ($i:expr, $av:expr, $lane:expr) => {
                        acc[2 * $i] = vfmaq_laneq_f32::<$lane>(acc[2 * $i], b0, $av);
                        acc[2 * $i + 1] = vfmaq_laneq_f32::<$lane>(acc[2 * $i + 1], b1, $av);
                    };
                }
                row!(0, a0, 0);
                row!(1, a0, 1);
                row!(2, a0, 2);
                row!(3, a0, 3);
                row!(4, a1, 0);
                row!(5, a1, 1);
                row!(6, a1, 2);
                row!(7, a1, 3);
            }
        }
        let mut s = [[0.0f32; NR]; MR];
        for (i, row) in s.iter_mut().enumerate() {
            // SAFETY: each row is 8 contiguous f32, room for two 4-lane stores.
            unsafe {
                vst1q_f32(row.as_mut_ptr(), acc[2 * i]);
                vst1q_f32(row.as_mut_ptr().add(4), acc[2 * i + 1]);
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { epilogue::<MR, NR>(&s, d) };
    }
}
