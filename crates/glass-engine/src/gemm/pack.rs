//! Packing: copies a cache block of an operand into the order the micro-kernel streams
//! it, zero-padding partial strips. Packing only moves values; it never touches the
//! arithmetic, so its layout is free to change.

/// Packs the logical `[mc, kc]` block of A starting at `src[off]` (row stride `rs`,
/// column stride `cs`) into strips of `mr` rows: strip `s` holds, for each `p` in
/// `0..kc`, the `mr` values of rows `s·mr ..` at column `p` (zeros past `mc`).
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a(
    dst: &mut [f32],
    src: &[f32],
    off: usize,
    rs: usize,
    cs: usize,
    mc: usize,
    kc: usize,
    mr: usize,
) {
    for (s, strip) in dst[..mc.next_multiple_of(mr) * kc]
        .chunks_exact_mut(mr * kc)
        .enumerate()
    {
        let r0 = s * mr;
        let rows = mr.min(mc - r0);
        if rows < mr {
            strip.fill(0.0);
        }
        // Walk the source along its contiguous dimension.
        if cs == 1 && rows == mr && pack_whole_strip(strip, src, off + r0 * rs, rs, kc, mr) {
            continue;
        }
        if cs == 1 {
            for r in 0..rows {
                let row = &src[off + (r0 + r) * rs..][..kc];
                for (p, &v) in row.iter().enumerate() {
                    strip[p * mr + r] = v;
                }
            }
        } else {
            for p in 0..kc {
                let col = off + p * cs + r0 * rs;
                let out = &mut strip[p * mr..p * mr + rows];
                if rs == 1 {
                    out.copy_from_slice(&src[col..col + rows]);
                } else {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = src[col + r * rs];
                    }
                }
            }
        }
    }
}

/// A whole strip of `mr` rows stored row-major (each row contiguous from `src[base]`, row
/// stride `rs`), for the tile heights of the kernels: written in order, `p` by `p`, from
/// `mr` row streams read side by side. Writing one row at a time instead scatters every
/// value `mr` floats from the last, which made packing a tenth of a batched forward
/// pass. Returns false for any other height.
fn pack_whole_strip(
    strip: &mut [f32],
    src: &[f32],
    base: usize,
    rs: usize,
    kc: usize,
    mr: usize,
) -> bool {
    match mr {
        4 => pack_rows::<4>(strip, src, base, rs, kc),
        6 => pack_rows::<6>(strip, src, base, rs, kc),
        8 => pack_rows::<8>(strip, src, base, rs, kc),
        12 => pack_rows::<12>(strip, src, base, rs, kc),
        _ => return false,
    }
    true
}

/// [`pack_whole_strip`] for a height known at compile time.
#[inline(always)]
fn pack_rows<const MR: usize>(strip: &mut [f32], src: &[f32], base: usize, rs: usize, kc: usize) {
    let rows: [&[f32]; MR] = std::array::from_fn(|r| &src[base + r * rs..][..kc]);
    for (p, out) in strip[..MR * kc].chunks_exact_mut(MR).enumerate() {
        let out: &mut [f32; MR] = out.try_into().expect("chunks of MR");
        for (o, row) in out.iter_mut().zip(&rows) {
            *o = row[p];
        }
    }
}

/// An element B may be stored as: packing widens it to f32, exactly (every bf16 and f16
/// value is an f32 value), so a product over 16-bit weights has the bits of the same
/// product over the weights widened beforehand.
pub(super) trait Widen: Copy {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

/// A bfloat16 value: the top half of an f32.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct Bf16(pub u16);

impl Widen for Bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

/// An IEEE binary16 value.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct F16(pub u16);

impl Widen for F16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        half::f16::from_bits(self.0).to_f32()
    }
}

/// Packs the logical `[kc, nc]` block of B starting at `src[off]` into strips of `nr`
/// columns: strip `s` holds, for each `p` in `0..kc`, the `nr` values of row `p` at
/// columns `s·nr ..` (zeros past `nc`), widened to f32.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b<T: Widen>(
    dst: &mut [f32],
    src: &[T],
    off: usize,
    rs: usize,
    cs: usize,
    kc: usize,
    nc: usize,
    nr: usize,
) {
    for (s, strip) in dst[..nc.next_multiple_of(nr) * kc]
        .chunks_exact_mut(nr * kc)
        .enumerate()
    {
        let c0 = s * nr;
        let cols = nr.min(nc - c0);
        if cols < nr {
            strip.fill(0.0);
        }
        if rs == 1
            && cs != 1
            && cols == nr
            && pack_whole_b_strip(strip, src, off + c0 * cs, cs, kc, nr)
        {
            continue;
        }
        if rs == 1 && cs != 1 {
            for c in 0..cols {
                let col = &src[off + (c0 + c) * cs..][..kc];
                for (p, &v) in col.iter().enumerate() {
                    strip[p * nr + c] = v.widen();
                }
            }
        } else {
            for p in 0..kc {
                let row = off + p * rs + c0 * cs;
                let out = &mut strip[p * nr..p * nr + cols];
                if cs == 1 {
                    for (o, &v) in out.iter_mut().zip(&src[row..row + cols]) {
                        *o = v.widen();
                    }
                } else {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o = src[row + c * cs].widen();
                    }
                }
            }
        }
    }
}

/// A whole strip of `nr` columns of a transposed B (column `c` contiguous from
/// `src[base + c·cs]`), for the strip widths of the kernels: written row by row from `nr`
/// column streams read side by side, as [`pack_whole_strip`] does for A (writing one
/// column at a time scatters every value `nr` floats from the last). Returns false for
/// any other width.
fn pack_whole_b_strip<T: Widen>(
    strip: &mut [f32],
    src: &[T],
    base: usize,
    cs: usize,
    kc: usize,
    nr: usize,
) -> bool {
    match nr {
        8 => pack_cols::<T, 8>(strip, src, base, cs, kc),
        16 => pack_cols::<T, 16>(strip, src, base, cs, kc),
        32 => pack_cols::<T, 32>(strip, src, base, cs, kc),
        _ => return false,
    }
    true
}

/// [`pack_whole_b_strip`] for a width known at compile time.
#[inline(always)]
fn pack_cols<T: Widen, const NR: usize>(
    strip: &mut [f32],
    src: &[T],
    base: usize,
    cs: usize,
    kc: usize,
) {
    let cols: [&[T]; NR] = std::array::from_fn(|c| &src[base + c * cs..][..kc]);
    for (p, out) in strip[..NR * kc].chunks_exact_mut(NR).enumerate() {
        let out: &mut [f32; NR] = out.try_into().expect("chunks of NR");
        for (o, col) in out.iter_mut().zip(&cols) {
            *o = col[p].widen();
        }
    }
}
