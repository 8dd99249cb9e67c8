//! The one place matrix products happen: Glass's own f32 GEMM with a fixed, documented
//! accumulation order, so a product has the same bits on every CPU.
//!
//! # The numerics contract
//!
//! For `C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] (+ C)`, every output element is computed
//! by exactly this sequence of IEEE-754 single-precision operations (`fma` rounds once):
//!
//! ```text
//! KC = 256                                   (a constant, never derived from caches)
//! for block q = 0, 1, …, ⌈k/KC⌉−1:            (k indices q·KC .. min((q+1)·KC, k))
//!     s_q = +0
//!     for p in the block, ascending:  s_q = fma(a[i,p], b[p,j], s_q)
//! t = s_0;  t = t + s_1;  t = t + s_2;  …      (block results added in block order)
//! C[i,j] = accumulate ? fma(alpha, t, C[i,j]) : alpha · t
//! ```
//!
//! `k == 0` leaves `C` untouched when accumulating and writes `+0` otherwise.
//!
//! Each output element is one vector lane from start to finish and no reduction crosses
//! lanes, so the bits depend neither on the vector width, nor on the micro-tile shape
//! (MR×NR), nor on packing, cache tiling (MC/NC) or how the product is split over
//! threads. The micro-kernels — AVX-512F and AVX2+FMA on x86-64 (chosen at run time),
//! NEON on aarch64 and a portable one built on `f32::mul_add` — differ only in how many
//! lanes they process at once. `GLASS_KERNEL=avx512|avx2|neon|portable` forces one
//! ([`init_from_env`]); tests check that they agree bit for bit.
//!
//! Written by hand because no GEMM crate fixes its reduction order independently of the
//! machine: the `gemm` crate and BLAS libraries pick k-blocking from cache sizes and
//! kernels from the instruction set, so their bits differ between CPUs.

mod kernels;
mod pack;
mod rows;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

pub use kernels::Kernel;

/// The fixed k-block of the contract (see the module docs). Changing it changes the
/// bits of every product and requires a new [`crate::NUMERICS_VERSION`].
pub const KC: usize = 256;

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
    fn strides(&self) -> (usize, usize) {
        match self.op {
            Op::N => (self.ld, 1),
            Op::T => (1, self.ld),
        }
    }
    /// Index one past the last element touched by a logical `[rows, cols]` operand.
    fn extent(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let (rs, cs) = self.strides();
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
    /// Element offset of logical position (row, col).
    fn offset(&self, row: usize, col: usize) -> usize {
        let (rs, cs) = self.strides();
        row * rs + col * cs
    }
}

/// How 16 bits encode a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// bfloat16 (the top half of an f32).
    Bf16,
    /// IEEE binary16.
    F16,
}

impl Half {
    /// The value `x` encodes, as f32 (exact: every bf16 and f16 value is an f32 value).
    /// The one widening every reader of 16-bit weights uses, the GEMM's packing included.
    #[inline(always)]
    pub fn widen(self, x: u16) -> f32 {
        match self {
            Half::Bf16 => pack::Widen::widen(pack::Bf16(x)),
            Half::F16 => pack::Widen::widen(pack::F16(x)),
        }
    }

    /// Whether `x` is finite (its exponent is not all ones).
    #[inline(always)]
    pub fn is_finite(self, x: u16) -> bool {
        match self {
            Half::Bf16 => x & 0x7f80 != 0x7f80,
            Half::F16 => x & 0x7c00 != 0x7c00,
        }
    }
}

/// A right-hand operand stored in 16 bits, as a model's weights are in a bf16 or f16
/// file: packing widens every value to f32 (exactly), so a product with it has the bits
/// of the same product with the widened operand, under the same contract.
#[derive(Debug, Clone, Copy)]
pub struct HalfMat<'a> {
    /// Backing storage: the raw 16-bit values.
    pub data: &'a [u16],
    /// Leading dimension (distance between stored rows).
    pub ld: usize,
    /// Whether to transpose.
    pub op: Op,
    /// The encoding.
    pub kind: Half,
}

impl<'a> HalfMat<'a> {
    /// Row-major operand used transposed (a `[out, in]` weight as `Wᵀ`).
    pub fn t(data: &'a [u16], ld: usize, kind: Half) -> Self {
        HalfMat {
            data,
            ld,
            op: Op::T,
            kind,
        }
    }
    /// The same shape as an f32 view (for strides and offsets only).
    fn shape(&self) -> Mat<'static> {
        Mat {
            data: &[],
            ld: self.ld,
            op: self.op,
        }
    }
    /// The operand from logical column `col` on.
    fn skip_cols(self, col: usize) -> Self {
        HalfMat {
            data: &self.data[self.shape().offset(0, col)..],
            ..self
        }
    }
    /// Value at logical (row, col), widened.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.kind.widen(self.data[self.shape().offset(row, col)])
    }
}

/// Packs the `[kc, nc]` block of a 16-bit operand at logical (pc, jc).
#[allow(clippy::too_many_arguments)]
fn pack_half_b(
    dst: &mut [f32],
    b: &HalfMat<'_>,
    pc: usize,
    jc: usize,
    kc: usize,
    nc: usize,
    nr: usize,
) {
    let sh = b.shape();
    let (rs, cs) = sh.strides();
    let off = sh.offset(pc, jc);
    // SAFETY: `Bf16` and `F16` are `repr(transparent)` over `u16`, so a `[u16]` is a
    // valid `[Bf16]` / `[F16]` of the same length and alignment.
    match b.kind {
        Half::Bf16 => {
            let src = unsafe {
                std::slice::from_raw_parts(b.data.as_ptr().cast::<pack::Bf16>(), b.data.len())
            };
            pack::pack_b(dst, src, off, rs, cs, kc, nc, nr)
        }
        Half::F16 => {
            let src = unsafe {
                std::slice::from_raw_parts(b.data.as_ptr().cast::<pack::F16>(), b.data.len())
            };
            pack::pack_b(dst, src, off, rs, cs, kc, nc, nr)
        }
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

/// `GLASS_KERNEL` named a kernel this build or CPU cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// Not one of the known names.
    #[error("GLASS_KERNEL={0:?} is not a kernel; use one of avx512, avx2, neon, portable (or unset it to pick the fastest)")]
    Unknown(String),
    /// Known, but this CPU lacks the instructions.
    #[error("GLASS_KERNEL={0}: this CPU (or build target) lacks the instructions it needs; supported here: {1}")]
    Unsupported(&'static str, String),
}

/// 0 = not chosen yet, otherwise `Kernel as u8 + 1`.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Reads `GLASS_KERNEL` (if set) and makes that kernel, or else the fastest one this CPU
/// supports, the process-wide choice. Returns the chosen kernel, or an error naming the
/// bad value. Call it at program start to report a bad value cleanly; otherwise the first
/// product calls it and panics on a bad value.
pub fn init_from_env() -> Result<Kernel, KernelError> {
    let k = match std::env::var("GLASS_KERNEL") {
        Ok(v) if !v.is_empty() => {
            let k = Kernel::parse(&v).ok_or_else(|| KernelError::Unknown(v.clone()))?;
            if !k.is_supported() {
                return Err(KernelError::Unsupported(k.name(), supported_names()));
            }
            k
        }
        _ => Kernel::detect(),
    };
    ACTIVE.store(k as u8 + 1, Ordering::Relaxed);
    Ok(k)
}

fn supported_names() -> String {
    Kernel::ALL
        .iter()
        .filter(|k| k.is_supported())
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forces the kernel every later product uses (all kernels give the same bits; this
/// exists for tests and benchmarks). Refuses a kernel this CPU lacks.
pub fn set_kernel(k: Kernel) -> Result<(), KernelError> {
    if !k.is_supported() {
        return Err(KernelError::Unsupported(k.name(), supported_names()));
    }
    ACTIVE.store(k as u8 + 1, Ordering::Relaxed);
    Ok(())
}

/// The kernel products use now (resolving `GLASS_KERNEL` on first use).
pub fn active_kernel() -> Kernel {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => init_from_env().unwrap_or_else(|e| panic!("{e}")),
        v => Kernel::ALL[(v - 1) as usize],
    }
}

/// `C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] (+ C when accumulate)`, C row-major with
/// leading dimension `ldc`, in the order fixed by the module docs, with the active kernel.
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
    matmul_with(
        active_kernel(),
        threads,
        m,
        n,
        k,
        a,
        b,
        c,
        ldc,
        alpha,
        accumulate,
    );
}

/// [`matmul`] with an explicit kernel (tests and benchmarks compare kernels with it).
///
/// Panics if the CPU lacks `kernel` or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    kernel: Kernel,
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
    assert!(b.data.len() >= b.extent(k, n), "gemm: B too short");
    product(
        kernel,
        threads,
        m,
        n,
        k,
        a,
        BSrc::Plain(b),
        c,
        ldc,
        alpha,
        accumulate,
    );
}

/// [`matmul`] with a 16-bit right-hand operand, widened as it is packed: the bits of
/// [`matmul`] on the widened operand, for every kernel.
///
/// Panics only on slice extents that are too short, which is a bug in the caller.
#[allow(clippy::too_many_arguments)]
pub fn matmul_half(
    threads: Threads,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: HalfMat<'_>,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    matmul_half_with(
        active_kernel(),
        threads,
        m,
        n,
        k,
        a,
        b,
        c,
        ldc,
        alpha,
        accumulate,
    );
}

/// [`matmul_half`] with an explicit kernel.
///
/// Panics if the CPU lacks `kernel` or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub fn matmul_half_with(
    kernel: Kernel,
    threads: Threads,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: HalfMat<'_>,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(b.data.len() >= b.shape().extent(k, n), "gemm: B too short");
    product(
        kernel,
        threads,
        m,
        n,
        k,
        a,
        BSrc::Half(b),
        c,
        ldc,
        alpha,
        accumulate,
    );
}

/// A right-hand operand packed once, for many products with it (a weight matrix during
/// generation: at a few rows per product, packing the weight costs about as much as the
/// arithmetic). Packing only moves values, so a product with a `PackedB` has exactly the
/// bits of the same product with the unpacked operand.
pub struct PackedB {
    kernel: Kernel,
    k: usize,
    n: usize,
    /// One packed `[kc, n]` block per k-block of [`KC`] (strips of NR columns).
    blocks: Vec<Vec<f32>>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("kernel", &self.kernel)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Packs the logical `[k, n]` operand `b` for the active kernel.
    pub fn new(k: usize, n: usize, b: Mat<'_>) -> PackedB {
        Self::new_with(active_kernel(), k, n, b)
    }

    /// Packs `b` for `kernel`.
    ///
    /// Panics if the CPU lacks `kernel` or `b` is too short.
    pub fn new_with(kernel: Kernel, k: usize, n: usize, b: Mat<'_>) -> PackedB {
        assert!(kernel.is_supported(), "gemm: kernel {kernel:?} unsupported");
        assert!(b.data.len() >= b.extent(k, n), "gemm: B too short");
        let (_, nr) = kernel.tile();
        let (rs, cs) = b.strides();
        let blocks = (0..k)
            .step_by(KC)
            .map(|pc| {
                let kc = KC.min(k - pc);
                let mut buf = vec![0.0f32; n.next_multiple_of(nr) * kc];
                pack::pack_b(&mut buf, b.data, b.offset(pc, 0), rs, cs, kc, n, nr);
                buf
            })
            .collect();
        PackedB {
            kernel,
            k,
            n,
            blocks,
        }
    }

    /// Packs a 16-bit operand, widened to f32, for the active kernel (the same packed
    /// values as [`PackedB::new`] on the widened operand).
    pub fn new_half(k: usize, n: usize, b: HalfMat<'_>) -> PackedB {
        Self::new_half_with(active_kernel(), k, n, b)
    }

    /// [`PackedB::new_half`] for `kernel`.
    ///
    /// Panics if the CPU lacks `kernel` or `b` is too short.
    pub fn new_half_with(kernel: Kernel, k: usize, n: usize, b: HalfMat<'_>) -> PackedB {
        assert!(kernel.is_supported(), "gemm: kernel {kernel:?} unsupported");
        assert!(b.data.len() >= b.shape().extent(k, n), "gemm: B too short");
        let (_, nr) = kernel.tile();
        let blocks = (0..k)
            .step_by(KC)
            .map(|pc| {
                let kc = KC.min(k - pc);
                let mut buf = vec![0.0f32; n.next_multiple_of(nr) * kc];
                pack_half_b(&mut buf, &b, pc, 0, kc, n, nr);
                buf
            })
            .collect();
        PackedB {
            kernel,
            k,
            n,
            blocks,
        }
    }

    /// An operand of no rows or columns, to be filled by [`PackedB::repack`].
    pub fn empty() -> PackedB {
        PackedB {
            kernel: active_kernel(),
            k: 0,
            n: 0,
            blocks: Vec::new(),
        }
    }

    /// Packs `b` (logical `[k, n]`) for the active kernel into this operand, keeping its
    /// allocations: for an operand packed anew for every call of a loop.
    pub fn repack(&mut self, k: usize, n: usize, b: Mat<'_>) {
        self.repack_with(active_kernel(), k, n, b)
    }

    /// [`PackedB::repack`] for `kernel`.
    ///
    /// Panics if the CPU lacks `kernel` or `b` is too short.
    pub fn repack_with(&mut self, kernel: Kernel, k: usize, n: usize, b: Mat<'_>) {
        assert!(kernel.is_supported(), "gemm: kernel {kernel:?} unsupported");
        assert!(b.data.len() >= b.extent(k, n), "gemm: B too short");
        let (_, nr) = kernel.tile();
        let (rs, cs) = b.strides();
        let n_blocks = k.div_ceil(KC);
        self.blocks.resize_with(n_blocks, Vec::new);
        for (q, buf) in self.blocks.iter_mut().enumerate() {
            let pc = q * KC;
            let kc = KC.min(k - pc);
            grow(buf, n.next_multiple_of(nr) * kc);
            pack::pack_b(buf, b.data, b.offset(pc, 0), rs, cs, kc, n, nr);
        }
        self.kernel = kernel;
        self.k = k;
        self.n = n;
    }

    /// Bytes the packed operand holds.
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.len() * 4).sum()
    }

    /// Logical rows (`k`).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Logical columns (`n`).
    pub fn cols(&self) -> usize {
        self.n
    }
}

/// `C[m,n] = alpha · op(A)[m,k] · B (+ C)` with `B` packed beforehand: the same bits as
/// [`matmul`] with the unpacked operand (and any kernel).
///
/// Panics only on slice extents that are too short, which is a bug in the caller.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(
    threads: Threads,
    m: usize,
    a: Mat<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    matmul_packed_part(threads, m, b.n, b.k, a, b, c, ldc, alpha, accumulate);
}

/// [`matmul_packed`] over the leading `[k, n]` part of the packed operand (`k <= rows`,
/// `n <= cols`): the bits of [`matmul`] with that part unpacked. Lets a loop whose
/// products use growing prefixes of one operand (causal attention over its keys) pack it
/// once.
///
/// Panics if the part exceeds the operand, or on slice extents that are too short.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed_part(
    threads: Threads,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    assert!(
        n <= b.n && k <= b.k,
        "gemm: part outside the packed operand"
    );
    if m == 0 || n == 0 {
        return;
    }
    product(
        b.kernel,
        threads,
        m,
        n,
        k,
        a,
        BSrc::Packed(b),
        c,
        ldc,
        alpha,
        accumulate,
    );
}

/// The right-hand operand of a product: to be packed block by block (f32 or 16-bit), or
/// packed already.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    Plain(Mat<'a>),
    Half(HalfMat<'a>),
    Packed(&'a PackedB),
}

/// The body of every product; `b` is checked by the caller.
#[allow(clippy::too_many_arguments)]
fn product(
    kernel: Kernel,
    threads: Threads,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: BSrc<'_>,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    assert!(kernel.is_supported(), "gemm: kernel {kernel:?} unsupported");
    assert!(a.data.len() >= a.extent(m, k), "gemm: A too short");
    assert!(ldc >= n, "gemm: ldc < n");
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
    let (mr, nr) = kernel.tile();
    // The split only balances work: by the contract it cannot change any bit.
    let flops = m * n * k;
    // A few rows against a row-major B on one thread: read B in place (same bits).
    if let BSrc::Plain(bm) = b {
        if rows::applies(m, &bm) && (threads == 1 || flops < PAR_MIN_FLOPS) {
            rows::product(kernel, m, n, k, a, bm, c, ldc, alpha, accumulate);
            return;
        }
    }
    if threads > 1 && flops >= PAR_MIN_FLOPS {
        let split_rows = m >= n;
        let (dim, unit) = if split_rows { (m, mr) } else { (n, nr) };
        let tiles = (2 * threads).min(dim.div_ceil(unit)).max(1);
        let tile = dim.div_ceil(tiles).next_multiple_of(unit);
        let c_ptr = SendPtr(c.as_mut_ptr());
        (0..dim.div_ceil(tile)).into_par_iter().for_each(|t| {
            let lo = t * tile;
            let len = tile.min(dim - lo);
            let c_ptr = &c_ptr;
            if split_rows {
                let a_t = Mat {
                    data: &a.data[a.offset(lo, 0)..],
                    ..a
                };
                // SAFETY: tile `t` writes only rows lo..lo+len of C, which are disjoint
                // from every other tile's rows and in bounds by the asserts above
                // (lo + len <= m, so row lo + r < m for r < len).
                unsafe {
                    region(
                        kernel,
                        len,
                        n,
                        k,
                        a_t,
                        b,
                        0,
                        c_ptr.0.add(lo * ldc),
                        ldc,
                        alpha,
                        accumulate,
                    )
                };
            } else {
                // A packed operand is addressed by the tile's first column (a multiple
                // of NR); a plain one is cut at it.
                let (b_t, col0) = match b {
                    BSrc::Plain(b) => (
                        BSrc::Plain(Mat {
                            data: &b.data[b.offset(0, lo)..],
                            ..b
                        }),
                        0,
                    ),
                    BSrc::Half(h) => (BSrc::Half(h.skip_cols(lo)), 0),
                    BSrc::Packed(_) => (b, lo),
                };
                // SAFETY: tile `t` writes only columns lo..lo+len of C, disjoint from
                // every other tile's columns and in bounds (lo + len <= n <= ldc).
                unsafe {
                    region(
                        kernel,
                        m,
                        len,
                        k,
                        a,
                        b_t,
                        col0,
                        c_ptr.0.add(lo),
                        ldc,
                        alpha,
                        accumulate,
                    )
                };
            }
        });
    } else {
        // SAFETY: bounds asserted above; `c` is uniquely borrowed for the call.
        unsafe {
            region(
                kernel,
                m,
                n,
                k,
                a,
                b,
                0,
                c.as_mut_ptr(),
                ldc,
                alpha,
                accumulate,
            )
        };
    }
}

/// Products below this many multiply-adds run on one thread.
const PAR_MIN_FLOPS: usize = 1 << 18;

struct SendPtr(*mut f32);
// SAFETY: the pointer is only used for disjoint tile writes, see `matmul_with`.
unsafe impl Sync for SendPtr {}

/// Per-thread packing buffers, reused across products so small products do not allocate.
#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    tot: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Rows of A packed per cache block (a multiple of every MR): adapts nothing about the
/// arithmetic, only how long a packed A block stays in L2.
const MC: usize = 96;
/// Columns of B packed per cache block (a multiple of every NR).
const NC: usize = 1024;

/// Products with at most this many k-blocks keep each block of C in cache across all of
/// them (loop order jc, ic, pc): every k-block of B for the column block is packed at
/// once (at most `B_ALL_BLOCKS · KC · NC` floats, 4 MiB). With more k-blocks the BLIS
/// order (jc, pc, ic) packs one k-block of B at a time. Like MC and NC, this changes
/// only which values are in cache when, never the arithmetic.
const B_ALL_BLOCKS: usize = 4;

/// One single-threaded product over a region of C (loop order: jc, then pc and ic in the
/// order [`B_ALL_BLOCKS`] picks, then jr, ir).
///
/// Why two orders: with pc outside ic, every k-block after the first reads and writes
/// the whole region of C again; for a wide C (the LM head's logits, tens of MB) that is
/// a round trip through memory per k-block. With ic outside pc, a block of C stays in
/// L2 while its k-blocks run, at the price of holding all of B's k-blocks packed.
///
/// # Safety
/// `c` must be valid for reads and writes of a `[m, n]` matrix with row stride `ldc`,
/// not aliasing `a` or `b`, and not accessed by anyone else during the call; `a` and `b`
/// must cover logical `[m, k]` and `[k, n]` operands; `kernel` must be supported.
#[allow(clippy::too_many_arguments)]
unsafe fn region(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: BSrc<'_>,
    col0: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    accumulate: bool,
) {
    let (mr, nr) = kernel.tile();
    debug_assert!(MC.is_multiple_of(mr) && NC.is_multiple_of(nr));
    let (a_rs, a_cs) = a.strides();
    BUFFERS.with(|cell| {
        // A product never calls another product, so the borrow cannot be re-entered;
        // fall back to fresh buffers rather than panic if it ever were.
        let mut fresh;
        let mut guard = cell.try_borrow_mut();
        let bufs: &mut Buffers = match guard {
            Ok(ref mut g) => g,
            Err(_) => {
                fresh = Buffers::default();
                &mut fresh
            }
        };
        let mc_max = MC.min(m.next_multiple_of(mr));
        let nc_max = NC.min(n.next_multiple_of(nr));
        let kc_max = KC.min(k);
        let k_blocks = k.div_ceil(KC);
        // C-resident order: B pre-packed, or few enough k-blocks to pack them all.
        let c_resident = matches!(b, BSrc::Packed(_)) || k_blocks <= B_ALL_BLOCKS;
        grow(&mut bufs.a, mc_max * kc_max);
        if let BSrc::Plain(_) | BSrc::Half(_) = b {
            let held = if c_resident { k_blocks } else { 1 };
            grow(&mut bufs.b, held * nc_max * kc_max);
        }
        // Running block totals live in C itself unless C's old value is still needed.
        let use_scratch = accumulate && k > KC;
        if use_scratch {
            grow(&mut bufs.tot, m * nc_max);
        }
        let tot_base = bufs.tot.as_mut_ptr();
        let a_buf = &mut bufs.a;
        // B's packed k-blocks: disjoint slots of `slot_len` floats, all addressed from one
        // base pointer so that the pointers to earlier slots stay valid while later ones
        // are written.
        let slot_len = nc_max * kc_max;
        let b_slots = bufs.b.len() / slot_len.max(1);
        let b_base = bufs.b.as_mut_ptr();
        // Packs the k-block at `pc` of B's columns `jc..jc + nc` into slot `slot` (unless
        // B is packed already) and returns where its strips start and their stride.
        let b_block = |slot: usize, pc: usize, jc: usize, nc: usize| -> (*const f32, usize) {
            let kc = KC.min(k - pc);
            let dst = if let BSrc::Packed(_) = b {
                &mut [][..]
            } else {
                assert!(slot < b_slots, "gemm: B slot outside the packing buffer");
                // SAFETY: slot `slot` is `slot_len` floats inside `bufs.b` (grown above
                // to hold every slot used), disjoint from every other slot, and nothing
                // else refers to it while it is packed.
                std::slice::from_raw_parts_mut(b_base.add(slot * slot_len), slot_len)
            };
            match b {
                BSrc::Plain(b) => {
                    let (b_rs, b_cs) = b.strides();
                    pack::pack_b(dst, b.data, b.offset(pc, jc), b_rs, b_cs, kc, nc, nr);
                    (dst.as_ptr(), kc)
                }
                BSrc::Half(h) => {
                    pack_half_b(dst, &h, pc, jc, kc, nc, nr);
                    (dst.as_ptr(), kc)
                }
                // Strip (col0 + jc) / NR of the k-block holds this block's columns;
                // col0 and jc are multiples of NR. A strip holds the block's packed
                // rows, of which a product over a leading part reads the first kc.
                BSrc::Packed(pb) => {
                    let stride = KC.min(pb.k - pc);
                    (
                        pb.blocks[pc / KC].as_ptr().add((col0 + jc) * stride),
                        stride,
                    )
                }
            }
        };
        // Runs the block of C at rows ic.., columns jc.. for the k-block at pc, whose
        // packed B strips start at `bp` with stride `b_strip`.
        let mut c_block = |ic: usize, pc: usize, jc: usize, nc: usize, bp: *const f32, b_strip| {
            let kc = KC.min(k - pc);
            let mc = MC.min(m - ic);
            let (first, last) = (pc == 0, pc + kc == k);
            pack::pack_a(a_buf, a.data, a.offset(ic, pc), a_rs, a_cs, mc, kc, mr);
            for jr in (0..nc).step_by(nr) {
                let cols = nr.min(nc - jr);
                for ir in (0..mc).step_by(mr) {
                    let rows = mr.min(mc - ir);
                    let c_tile = c.add((ic + ir) * ldc + jc + jr);
                    let (tot, tot_rs) = if use_scratch {
                        (tot_base.add((ic + ir) * nc_max + jr), nc_max)
                    } else {
                        (c_tile, ldc)
                    };
                    let dst = kernels::Dst {
                        tot,
                        tot_rs,
                        c: c_tile,
                        c_rs: ldc,
                        rows,
                        cols,
                        first,
                        last,
                        alpha,
                        accumulate,
                    };
                    kernel.run(kc, a_buf.as_ptr().add(ir * kc), bp.add(jr * b_strip), &dst);
                }
            }
        };
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            if c_resident {
                let blocks: Vec<(*const f32, usize)> =
                    (0..k_blocks).map(|q| b_block(q, q * KC, jc, nc)).collect();
                for ic in (0..m).step_by(MC) {
                    for (q, &(bp, stride)) in blocks.iter().enumerate() {
                        c_block(ic, q * KC, jc, nc, bp, stride);
                    }
                }
            } else {
                for pc in (0..k).step_by(KC) {
                    let (bp, stride) = b_block(0, pc, jc, nc);
                    for ic in (0..m).step_by(MC) {
                        c_block(ic, pc, jc, nc, bp, stride);
                    }
                }
            }
        }
    });
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

#[cfg(test)]
mod tests;
