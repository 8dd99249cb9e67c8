//! Element-wise loops compiled for the vector instructions of the active GEMM kernel.
//!
//! The baseline x86-64 target vectorises an element-wise loop four lanes wide (SSE2).
//! [`wide`] runs a closure inside a function compiled for AVX-512F or AVX2 when the
//! active kernel ([`crate::gemm::active_kernel`]) is one of those, so the same loop runs
//! eight or sixteen lanes wide. Each element still goes through the same IEEE operations
//! in the same order (Rust never contracts `a * b + c` into an FMA, and lanes never
//! combine), so the bits are those of the plain loop; `GLASS_KERNEL=portable` runs the
//! plain loop itself.

#[cfg(target_arch = "x86_64")]
use crate::gemm::Kernel;

/// Runs `f`, compiled for the active kernel's instruction set (see the module docs).
/// `f` should be a short loop; what it calls must be `#[inline]` to be widened too.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match crate::gemm::active_kernel() {
        // SAFETY: the active kernel is always one this CPU supports, so avx512f is present.
        Kernel::Avx512 => return unsafe { avx512(f) },
        // SAFETY: as above; avx2 and fma are present.
        Kernel::Avx2 => return unsafe { avx2(f) },
        _ => {}
    }
    f()
}

/// # Safety
/// The CPU must support avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// # Safety
/// The CPU must support avx2 and fma.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
