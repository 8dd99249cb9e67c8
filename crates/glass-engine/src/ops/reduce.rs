//! Row reductions in the order of a plain loop, run at the speed of independent work.
//!
//! A sum `Σ row[j]` in source order is one chain of dependent additions: each waits for
//! the one before (four cycles on current x86 cores), so a single row cannot use the
//! vector units, and reordering it would change its bits. [`sums`] adds several rows side
//! by side instead: every row keeps its own left-to-right order (the bits of
//! `row.iter().sum::<f32>()`) while the core overlaps the independent chains. Softmax
//! rows (attention and the LM head) are the reason: their sums were a third of the
//! softmax time.
//!
//! A maximum does not depend on the order of its operands, so [`max`] runs sixteen lanes
//! wide. Only the sign of a zero maximum could differ from a left-to-right fold, and
//! every use of a softmax maximum (`x − m`, then `exp`; `m + ln Σ`, with `Σ ≥ 1`) gives
//! the same bits for `+0` and `−0`.

/// Rows summed side by side: enough independent chains to cover the add latency with
/// two add units, few enough to stay in registers.
const ROWS: usize = 8;

/// `out[i] = rows[i].iter().sum::<f32>()`, bit for bit, for rows of any lengths.
pub fn sums(rows: &[&[f32]], out: &mut [f32]) {
    // The starting value of `Iterator::sum`, taken from the standard library itself.
    let start: f32 = std::iter::empty::<f32>().sum();
    sums_by(rows, out, start, |x| x);
}

/// `out[i] = rows[i].iter().map(|&x| x as f64 * x as f64).sum::<f64>()`, bit for bit:
/// the squared norm of each row, in f64 (the gradient norm's per-chunk partials).
pub fn sums_of_squares(rows: &[&[f32]], out: &mut [f64]) {
    let start: f64 = std::iter::empty::<f64>().sum();
    sums_by(rows, out, start, |x| x as f64 * x as f64);
}

/// `out[i] = start + f(rows[i][0]) + f(rows[i][1]) + …`, left to right, groups of rows
/// side by side.
#[inline(always)]
fn sums_by<S: Copy + std::ops::AddAssign>(
    rows: &[&[f32]],
    out: &mut [S],
    start: S,
    f: impl Fn(f32) -> S + Copy,
) {
    assert_eq!(rows.len(), out.len(), "one output per row");
    let mut rows = rows;
    let mut out = out;
    while !rows.is_empty() {
        let n = match rows.len() {
            r if r >= ROWS => ROWS,
            r if r >= 4 => 4,
            r if r >= 2 => 2,
            _ => 1,
        };
        let (group, rest) = rows.split_at(n);
        let (o, orest) = std::mem::take(&mut out).split_at_mut(n);
        match n {
            ROWS => side_by_side::<ROWS, S>(group, o, start, f),
            4 => side_by_side::<4, S>(group, o, start, f),
            2 => side_by_side::<2, S>(group, o, start, f),
            _ => side_by_side::<1, S>(group, o, start, f),
        }
        rows = rest;
        out = orest;
    }
}

/// [`sums_by`] of exactly `N` rows: the common prefix with the `N` chains interleaved,
/// then each row's tail on its own.
// Indices, not iterators: `j` walks N rows at once, which is the point.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn side_by_side<const N: usize, S: Copy + std::ops::AddAssign>(
    rows: &[&[f32]],
    out: &mut [S],
    start: S,
    f: impl Fn(f32) -> S,
) {
    let common = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let heads: [&[f32]; N] = std::array::from_fn(|i| &rows[i][..common]);
    let mut acc = [start; N];
    for j in 0..common {
        for i in 0..N {
            acc[i] += f(heads[i][j]);
        }
    }
    for i in 0..N {
        for &x in &rows[i][common..] {
            acc[i] += f(x);
        }
        out[i] = acc[i];
    }
}

/// Lanes of [`max`].
const LANES: usize = 16;

/// The largest element of `row` ignoring NaNs (`−∞` for an empty or all-NaN row): the
/// value of `row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))` (see the module docs
/// on the sign of zero).
#[inline(always)]
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut blocks = row.chunks_exact(LANES);
    for block in &mut blocks {
        for (l, &x) in lanes.iter_mut().zip(block) {
            *l = l.max(x);
        }
    }
    let m = blocks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    lanes.iter().fold(m, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values with zeros of both signs, tiny and huge magnitudes, so that
    /// rounding differs between summation orders.
    fn row(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match s % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => (s >> 40) as f32 * 1e-30,
                    3 => (s >> 40) as f32 * 1e12,
                    _ => ((s >> 32) as f32 / u32::MAX as f32 - 0.5) * 3.0,
                }
            })
            .collect()
    }

    #[test]
    fn sums_are_the_bits_of_a_plain_sum_for_every_group_shape() {
        for n_rows in 0..20 {
            let rows: Vec<Vec<f32>> = (0..n_rows)
                .map(|i| row(i as u64 + 7 * n_rows as u64, (i * 37 + 5) % 300))
                .collect();
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let mut out = vec![f32::NAN; n_rows];
            sums(&refs, &mut out);
            for (r, got) in rows.iter().zip(&out) {
                let want: f32 = r.iter().sum();
                assert_eq!(got.to_bits(), want.to_bits(), "row of {} elements", r.len());
            }
        }
        // On such rows the order of a sum shows in its bits, so the comparison above can
        // fail: summed backwards, most rows give other bits.
        let differ = (0..20)
            .map(|i| row(i, 200))
            .filter(|r| r.iter().sum::<f32>().to_bits() != r.iter().rev().sum::<f32>().to_bits())
            .count();
        assert!(differ >= 10, "only {differ} of 20 rows depend on the order");
        // All negative zeros, empty rows and special values keep their plain-sum bits.
        let specials: [&[f32]; 5] = [
            &[-0.0, -0.0],
            &[],
            &[f32::INFINITY, 1.0],
            &[f32::NAN],
            &[-0.0],
        ];
        let mut out = [0.0; 5];
        sums(&specials, &mut out);
        for (r, got) in specials.iter().zip(out) {
            assert_eq!(got.to_bits(), r.iter().sum::<f32>().to_bits());
        }
    }

    #[test]
    fn sums_of_squares_are_the_bits_of_a_plain_f64_sum() {
        let rows: Vec<Vec<f32>> = (0..13)
            .map(|i| row(i + 40, 1000 + 37 * i as usize))
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut out = vec![f64::NAN; rows.len()];
        sums_of_squares(&refs, &mut out);
        for (r, got) in rows.iter().zip(&out) {
            let want: f64 = r.iter().map(|&x| x as f64 * x as f64).sum();
            assert_eq!(got.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn max_is_the_fold_maximum() {
        for len in 0..100 {
            let mut r = row(len as u64, len);
            if len % 3 == 0 && len > 0 {
                r[len / 2] = f32::NAN;
            }
            let want = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(max(&r), want, "length {len}");
        }
        assert_eq!(max(&[f32::NAN; 20]), f32::NEG_INFINITY);
    }
}
