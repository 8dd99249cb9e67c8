use super::*;

/// Deterministic values in [-1, 1) with varied exponents and low bits, so that a change
/// of summation order shows up in the last bits.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * if s & 1 == 0 { 1.0 } else { 0.03 }
        })
        .collect()
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    ldc: usize,
    alpha: f32,
    accumulate: bool,
}

impl Case {
    fn operands(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let a = random(self.m * self.k, 1 + self.m as u64);
        let b = random(self.k * self.n, 2 + self.n as u64);
        let c = random((self.m - 1) * self.ldc + self.n, 3 + self.k as u64);
        (a, b, c)
    }
    fn a_at(&self, a: &[f32], i: usize, p: usize) -> f32 {
        if self.ta {
            a[p * self.m + i]
        } else {
            a[i * self.k + p]
        }
    }
    fn b_at(&self, b: &[f32], p: usize, j: usize) -> f32 {
        if self.tb {
            b[j * self.k + p]
        } else {
            b[p * self.n + j]
        }
    }
    /// The product with B packed beforehand ([`PackedB`], [`matmul_packed`]).
    fn run_packed(&self, kernel: Kernel, threads: usize) -> Vec<f32> {
        let (a, b, mut c) = self.operands();
        let (am, bm) = self.views(&a, &b);
        let packed = PackedB::new_with(kernel, self.k, self.n, bm);
        assert_eq!((packed.rows(), packed.cols()), (self.k, self.n));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            matmul_packed(
                Threads::Pool,
                self.m,
                am,
                &packed,
                &mut c,
                self.ldc,
                self.alpha,
                self.accumulate,
            )
        });
        c
    }

    /// The operands as the case stores them.
    fn views<'a>(&self, a: &'a [f32], b: &'a [f32]) -> (Mat<'a>, Mat<'a>) {
        let am = if self.ta {
            Mat::t(a, self.m)
        } else {
            Mat::n(a, self.k)
        };
        let bm = if self.tb {
            Mat::t(b, self.k)
        } else {
            Mat::n(b, self.n)
        };
        (am, bm)
    }

    fn run(&self, kernel: Kernel, threads: usize) -> Vec<f32> {
        let (a, b, mut c) = self.operands();
        let (am, bm) = self.views(&a, &b);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            matmul_with(
                kernel,
                Threads::Pool,
                self.m,
                self.n,
                self.k,
                am,
                bm,
                &mut c,
                self.ldc,
                self.alpha,
                self.accumulate,
            )
        });
        c
    }
    /// The module-doc formula, element by element, in plain scalar code.
    fn contract(&self) -> Vec<f32> {
        let (a, b, mut c) = self.operands();
        for i in 0..self.m {
            for j in 0..self.n {
                let mut t = 0.0f32;
                for (q, p0) in (0..self.k).step_by(KC).enumerate() {
                    let mut s = 0.0f32;
                    for p in p0..(p0 + KC).min(self.k) {
                        s = self.a_at(&a, i, p).mul_add(self.b_at(&b, p, j), s);
                    }
                    t = if q == 0 { s } else { t + s };
                }
                let cv = &mut c[i * self.ldc + j];
                *cv = if self.accumulate {
                    self.alpha.mul_add(t, *cv)
                } else {
                    self.alpha * t
                };
            }
        }
        c
    }
    /// f64 reference and its error bound scale (Σ|a·b| per element).
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let (a, b, c) = self.operands();
        let mut out = vec![0.0f64; self.m * self.n];
        let mut mag = vec![0.0f64; self.m * self.n];
        for i in 0..self.m {
            for j in 0..self.n {
                let (mut s, mut g) = (0.0f64, 0.0f64);
                for p in 0..self.k {
                    let x = self.a_at(&a, i, p) as f64 * self.b_at(&b, p, j) as f64;
                    s += x;
                    g += x.abs();
                }
                let old = if self.accumulate {
                    c[i * self.ldc + j] as f64
                } else {
                    0.0
                };
                out[i * self.n + j] = old + self.alpha as f64 * s;
                mag[i * self.n + j] = old.abs() + (self.alpha as f64 * g).abs();
            }
        }
        (out, mag)
    }
}

/// B rounded to 16 bits (round to nearest even), and the same values widened back.
fn half_b(b: &[f32], kind: Half) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = b
        .iter()
        .map(|&x| match kind {
            Half::Bf16 => half::bf16::from_f32(x).to_bits(),
            Half::F16 => half::f16::from_f32(x).to_bits(),
        })
        .collect();
    let wide = bits
        .iter()
        .map(|&h| match kind {
            Half::Bf16 => half::bf16::from_bits(h).to_f32(),
            Half::F16 => half::f16::from_bits(h).to_f32(),
        })
        .collect();
    (bits, wide)
}

impl Case {
    /// The product over B stored in 16 bits (plain, and packed beforehand), and over the
    /// same B widened to f32 beforehand: the three must have the same bits.
    fn run_half(&self, kernel: Kernel, threads: usize, kind: Half) -> [Vec<f32>; 3] {
        let (a, b, c) = self.operands();
        let (bits, wide) = half_b(&b, kind);
        let (am, bm) = self.views(&a, &wide);
        let hm = HalfMat {
            data: &bits,
            ld: bm.ld,
            op: bm.op,
            kind,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut c1, mut c2, mut c3) = (c.clone(), c.clone(), c.clone());
            let args = (
                self.m,
                self.n,
                self.k,
                self.ldc,
                self.alpha,
                self.accumulate,
            );
            matmul_half_with(
                kernel,
                Threads::Pool,
                args.0,
                args.1,
                args.2,
                am,
                hm,
                &mut c1,
                args.3,
                args.4,
                args.5,
            );
            let packed = PackedB::new_half_with(kernel, self.k, self.n, hm);
            matmul_packed(
                Threads::Pool,
                args.0,
                am,
                &packed,
                &mut c2,
                args.3,
                args.4,
                args.5,
            );
            matmul_with(
                kernel,
                Threads::Pool,
                args.0,
                args.1,
                args.2,
                am,
                bm,
                &mut c3,
                args.3,
                args.4,
                args.5,
            );
            [c1, c2, c3]
        })
    }
}

fn same_bits(x: &[f32], y: &[f32]) -> usize {
    x.iter()
        .zip(y)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count()
}

fn supported() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect()
}

fn check(case: &Case) {
    let want = case.contract();
    let (r64, mag) = case.reference();
    for i in 0..case.m {
        for j in 0..case.n {
            let got = want[i * case.ldc + j] as f64;
            let (r, g) = (r64[i * case.n + j], mag[i * case.n + j]);
            assert!(
                (got - r).abs() <= 1e-6 * (case.k as f64).sqrt() * g + 1e-30,
                "contract vs f64 at ({i},{j}): {got} vs {r}"
            );
        }
    }
    for kernel in supported() {
        for threads in [1, 2, 4] {
            for (how, got) in [
                ("plain", case.run(kernel, threads)),
                ("packed B", case.run_packed(kernel, threads)),
            ] {
                let diff = same_bits(&got, &want);
                assert_eq!(
                    diff,
                    0,
                    "{kernel:?} ({how}), {threads} threads, m={} n={} k={} ta={} tb={} acc={}: {diff} elements differ from the contract",
                    case.m, case.n, case.k, case.ta, case.tb, case.accumulate
                );
            }
            for kind in [Half::Bf16, Half::F16] {
                let [plain, packed, widened] = case.run_half(kernel, threads, kind);
                for (how, got) in [("16-bit B", &plain), ("16-bit B packed", &packed)] {
                    let diff = same_bits(got, &widened);
                    assert_eq!(
                        diff,
                        0,
                        "{kernel:?} ({how}, {kind:?}), {threads} threads, m={} n={} k={} tb={}: {diff} elements differ from the widened f32 product",
                        case.m, case.n, case.k, case.tb
                    );
                }
            }
        }
    }
}

#[test]
fn every_kernel_and_thread_count_gives_the_contract_bits() {
    // Odd edges everywhere; k spans three k-blocks (the last one partial), m spans
    // several MC blocks, so packing, tiling, thread split and block sums all take part.
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for accumulate in [false, true] {
            check(&Case {
                m: 203,
                n: 157,
                k: 3 * KC - 37,
                ta,
                tb,
                ldc: 160,
                alpha: if accumulate { 0.75 } else { 1.0 },
                accumulate,
            });
        }
    }
}

#[test]
fn many_k_blocks_pack_b_one_block_at_a_time() {
    // More k-blocks than `B_ALL_BLOCKS`: the order that packs one k-block of B at a time
    // (the test above, with three k-blocks, takes the order that keeps C in cache).
    for (ta, tb) in [(false, false), (true, true)] {
        for accumulate in [false, true] {
            check(&Case {
                m: 101,
                n: 45,
                k: (B_ALL_BLOCKS + 1) * KC + 19,
                ta,
                tb,
                ldc: 47,
                alpha: if accumulate { 0.75 } else { 1.0 },
                accumulate,
            });
        }
    }
}

#[test]
fn wide_and_single_block_products() {
    // n beyond one NC block, k inside one k-block, alpha ≠ 1 without accumulate.
    check(&Case {
        m: 37,
        n: NC + 45,
        k: 129,
        ta: false,
        tb: true,
        ldc: NC + 45,
        alpha: -1.5,
        accumulate: false,
    });
    // Tiny shapes below every tile size and k exactly one block.
    check(&Case {
        m: 3,
        n: 5,
        k: KC,
        ta: true,
        tb: false,
        ldc: 7,
        alpha: 2.0,
        accumulate: true,
    });
}

#[test]
fn empty_reduction_zeroes_or_keeps_c() {
    let mut c = vec![5.0f32; 6];
    matmul(
        Threads::Single,
        2,
        3,
        0,
        Mat::n(&[], 0),
        Mat::n(&[], 3),
        &mut c,
        3,
        1.0,
        true,
    );
    assert_eq!(c, vec![5.0; 6]);
    matmul(
        Threads::Single,
        2,
        3,
        0,
        Mat::n(&[], 0),
        Mat::n(&[], 3),
        &mut c,
        3,
        1.0,
        false,
    );
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn kernel_names_round_trip_and_unsupported_is_refused() {
    for k in Kernel::ALL {
        assert_eq!(Kernel::parse(k.name()), Some(k));
    }
    assert_eq!(Kernel::parse("sse9"), None);
    assert!(Kernel::Portable.is_supported());
    for k in Kernel::ALL {
        assert_eq!(set_kernel(k).is_ok(), k.is_supported());
    }
    set_kernel(Kernel::detect()).unwrap();
    #[cfg(target_arch = "x86_64")]
    assert!(!Kernel::Neon.is_supported());
}

/// Decode-shaped products (a few rows, a wide weight): the threads split the columns, so
/// a packed operand is addressed from each tile's first column; two column blocks (NC)
/// and three k-blocks.
#[test]
fn few_rows_wide_operand_split_by_columns() {
    for (m, tb, accumulate) in [(7, true, false), (32, true, true), (1, false, false)] {
        check(&Case {
            m,
            n: 1100,
            k: 600,
            ta: false,
            tb,
            ldc: 1103,
            alpha: 1.0,
            accumulate,
        });
    }
}

/// Products of one to four rows with a row-major B (decoding's attention against the
/// KV cache) read B in place, strip by strip: every strip width, the moved-back last
/// strip (with and without accumulation), single columns below the narrow strip, and
/// k within one block, at a block edge and over three blocks.
#[test]
fn few_rows_read_a_row_major_operand_in_place() {
    for m in [1, 2, MAX_ROWS_TESTED] {
        for n in [1, 7, 8, 15, 16, 17, 33, 63, 64, 65, 100, 130] {
            for k in [1, 64, KC + 1, 2 * KC + 37] {
                for (ta, accumulate) in [(false, false), (true, true), (false, true)] {
                    let case = Case {
                        m,
                        n,
                        k,
                        ta,
                        tb: false,
                        ldc: n + 3,
                        alpha: if accumulate { 0.75 } else { -1.25 },
                        accumulate,
                    };
                    let (a, b, _) = case.operands();
                    let (_, bm) = case.views(&a, &b);
                    assert!(rows::applies(m, &bm), "m={m} must take the row path");
                    check(&case);
                }
            }
        }
    }
}

const MAX_ROWS_TESTED: usize = rows::MAX_ROWS;

#[test]
fn packed_strips_are_laid_out_alike_for_every_kernel_height() {
    // The in-order path for whole strips of a row-major operand against the layout's
    // definition, for every kernel's MR (also those this CPU cannot run), with a partial
    // last strip that takes the general path.
    let (m, k, ld, off) = (29, 300, 311, 5);
    let src = random(m * ld, 3);
    for mr in [4, 6, 8, 12] {
        let mut got = vec![f32::NAN; m.next_multiple_of(mr) * k];
        pack::pack_a(&mut got, &src, off, ld, 1, m, k, mr);
        for s in 0..m.div_ceil(mr) {
            for p in 0..k {
                for r in 0..mr {
                    let row = s * mr + r;
                    let want = if row < m {
                        src[off + row * ld + p]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        got[s * mr * k + p * mr + r].to_bits(),
                        want.to_bits(),
                        "mr {mr}, strip {s}, p {p}, r {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_leading_part_of_a_packed_operand_gives_the_bits_of_that_part() {
    // Causal attention packs its keys once and multiplies each query block by a growing
    // prefix: parts that cut inside a k-block and inside a strip must match the plain
    // product of the same part, and repacking must reuse storage without leftovers.
    let (k_full, n_full, m) = (2 * KC + 50, 150, 29);
    for kernel in supported() {
        for tb in [false, true] {
            let b = random(k_full * n_full, 11 + tb as u64);
            let a = random(m * k_full, 12);
            let bm = if tb {
                Mat::t(&b, k_full)
            } else {
                Mat::n(&b, n_full)
            };
            let mut packed = PackedB::empty();
            // A larger, different operand first: the repack below must overwrite it.
            let other = random(3 * KC * 200, 13);
            packed.repack_with(kernel, 3 * KC, 200, Mat::n(&other, 200));
            packed.repack_with(kernel, k_full, n_full, bm);
            for (k, n) in [
                (1, 1),
                (KC + 13, 37),
                (KC, n_full),
                (2 * KC, 64),
                (k_full, n_full),
            ] {
                for accumulate in [false, true] {
                    let c0 = random(m * n_full, 14);
                    let (mut want, mut got) = (c0.clone(), c0);
                    let am = Mat::n(&a, k_full);
                    matmul_with(
                        kernel,
                        Threads::Single,
                        m,
                        n,
                        k,
                        am,
                        bm,
                        &mut want,
                        n_full,
                        0.5,
                        accumulate,
                    );
                    matmul_packed_part(
                        Threads::Single,
                        m,
                        n,
                        k,
                        am,
                        &packed,
                        &mut got,
                        n_full,
                        0.5,
                        accumulate,
                    );
                    assert_eq!(
                        same_bits(&got, &want),
                        0,
                        "{kernel:?} tb={tb} part k={k} n={n} acc={accumulate}"
                    );
                }
            }
        }
    }
}
