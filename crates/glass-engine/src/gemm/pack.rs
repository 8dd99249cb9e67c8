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

/// Packs the logical `[kc, nc]` block of B starting at `src[off]` into strips of `nr`
/// columns: strip `s` holds, for each `p` in `0..kc`, the `nr` values of row `p` at
/// columns `s·nr ..` (zeros past `nc`).
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b(
    dst: &mut [f32],
    src: &[f32],
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
        if rs == 1 && cs != 1 {
            for c in 0..cols {
                let col = &src[off + (c0 + c) * cs..][..kc];
                for (p, &v) in col.iter().enumerate() {
                    strip[p * nr + c] = v;
                }
            }
        } else {
            for p in 0..kc {
                let row = off + p * rs + c0 * cs;
                let out = &mut strip[p * nr..p * nr + cols];
                if cs == 1 {
                    out.copy_from_slice(&src[row..row + cols]);
                } else {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o = src[row + c * cs];
                    }
                }
            }
        }
    }
}
