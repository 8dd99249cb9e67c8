//! CPython's `random.Random`, as far as lm-evaluation-harness uses it: integer seeding,
//! `getrandbits`, `_randbelow` and `sample`. The harness draws few-shot examples with
//! `Random(seed).sample(...)`, so byte-identical prompts need the same generator and the
//! same sampling algorithm. `rand_mt` provides MT19937 and `init_by_array`; the seeding
//! of an integer and the `sample` algorithm are CPython's (Lib/random.py,
//! Modules/_randommodule.c) and exist in no crate, hence written here.

use rand_mt::Mt;

/// A `random.Random(seed)` for a non-negative integer seed.
pub struct PyRandom {
    mt: Mt,
}

impl PyRandom {
    /// `random.Random(seed)`: the seed's absolute value split into 32-bit words, least
    /// significant first, fed to `init_by_array` (`[0]` for zero), as CPython does.
    pub fn new(seed: u64) -> Self {
        let mut key = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        PyRandom {
            mt: Mt::new_with_key(key),
        }
    }

    /// `getrandbits(k)` for `1 <= k <= 32` (the harness never needs more: populations
    /// are far below 2³² documents).
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!((1..=32).contains(&k));
        self.mt.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)`: rejection sampling on `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: usize) -> usize {
        assert!(n > 0 && n <= u32::MAX as usize, "randbelow({n})");
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), k)`: indices of `k` distinct elements of a population of `n`,
    /// in the order CPython returns them (pool method for small populations, set method
    /// otherwise, chosen by the same size rule). `None` when `k > n` (Python raises).
    pub fn sample(&mut self, n: usize, k: usize) -> Option<Vec<usize>> {
        if k > n {
            return None;
        }
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(k * 3, 4)), computed in floating point as Python does.
            // The numerics contract's `ln` (docs/numerics.md: the ceiling is Python's for
            // every k below 2^40 whichever correctly rounded-ish `ln` computes it).
            use glass_engine::ops::fastmath::ln_f64;
            let e = ln_f64((k * 3) as f64) / ln_f64(4.0);
            setsize += 4usize.pow(e.ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::BTreeSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by CPython 3.11:
    /// `r = random.Random(1234); r.sample(range(100), 5); r.sample(range(10), 4);
    ///  r.sample(range(1000), 30)[:6]; r.getrandbits(32)`.
    #[test]
    fn matches_cpython_sample_sequence() {
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(100, 5).unwrap(), vec![99, 56, 14, 0, 11]);
        assert_eq!(r.sample(10, 4).unwrap(), vec![9, 0, 1, 8]);
        assert_eq!(
            r.sample(1000, 30).unwrap()[..6],
            [784, 363, 242, 17, 31, 807]
        );
        assert_eq!(r.getrandbits(32), 294502670);
    }

    /// `random.Random(0).sample(range(7), 3)` and `Random(2**40 + 5).sample(range(50), 3)`.
    #[test]
    fn matches_cpython_seeding_of_zero_and_wide_seeds() {
        assert_eq!(PyRandom::new(0).sample(7, 3).unwrap(), vec![6, 3, 5]);
        assert_eq!(
            PyRandom::new((1 << 40) + 5).sample(50, 3).unwrap(),
            vec![32, 33, 17]
        );
        assert!(PyRandom::new(1).sample(3, 4).is_none());
    }
}
