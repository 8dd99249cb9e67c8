//! Document fingerprints for deduplication: the exact-text key and the MinHash signature.
//!
//! Written here rather than taken from a crate because the fingerprints are part of the
//! data's definition: every hash must be fixed and documented (a run prepared elsewhere
//! must remove the same documents), seeded from the config, and independent of
//! `RandomState` or a crate's changing defaults — no maintained crate offers MinHash + LSH
//! with seeded, documented hash functions. The method and defaults follow FineWeb's
//! (datatrove's `MinhashDedup*`): word 5-gram shingles, 14 bands × 8 rows.
//!
//! Definitions (docs/data-format.md, "Deduplication"):
//! - exact key: xxh3-128 of the text lowercased (Unicode `to_lowercase`) with every run of
//!   whitespace replaced by one space and the ends trimmed;
//! - words: maximal runs of alphanumeric characters (Unicode) of the lowercased text;
//!   shingle `i` is words `i..i+n` joined by single spaces (a document of fewer than `n`
//!   words is one shingle of all its words; one without words has no signature);
//! - shingle hash `x = xxh3_64(shingle)`; hash function `k` is Dietzfelbinger's
//!   multiply-add-shift `h_k(x) = ((a_k·x + b_k) mod 2^64) >> 32` with `a_k =
//!   splitmix(seed, k, 0) | 1` (odd) and `b_k = splitmix(seed, k, 1)` — a 2-universal
//!   family like datatrove's `(a·x + b) mod (2^61 − 1)`, at one multiplication and no
//!   division per function (four times faster here); the signature holds `min h_k` over
//!   the shingles for every `k`;
//! - band `j`'s key is xxh3_64 of `j` (u32 LE) and signature entries `j·r..(j+1)·r` (u32 LE).

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::order::hash_words;

/// Tags the MinHash coefficients apart from the order's other uses of the seed.
const MINHASH_TAG: u64 = 0x004d_494e_4841_5348;

/// The exact-dedup key: xxh3-128 of the text lowercased with whitespace runs collapsed.
pub fn exact_key(text: &str) -> u128 {
    let mut norm = String::with_capacity(text.len());
    for w in text.split_whitespace() {
        if !norm.is_empty() {
            norm.push(' ');
        }
        for c in w.chars() {
            norm.extend(c.to_lowercase());
        }
    }
    xxh3_128(norm.as_bytes())
}

/// The lowercased words of `text` joined by single spaces, and each word's start offset.
fn words(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut starts = Vec::new();
    let mut in_word = false;
    for c in text.chars() {
        let alnum = if c.is_ascii() {
            c.is_ascii_alphanumeric()
        } else {
            c.is_alphanumeric()
        };
        if alnum {
            if !in_word {
                if !out.is_empty() {
                    out.push(' ');
                }
                starts.push(out.len());
                in_word = true;
            }
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            in_word = false;
        }
    }
    (out, starts)
}

/// Seeded MinHash hash functions over word shingles.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    shingle_words: usize,
}

impl MinHasher {
    /// `n_hashes` hash functions seeded by `seed`, over shingles of `shingle_words` words.
    pub fn new(seed: u64, n_hashes: usize, shingle_words: usize) -> Self {
        let (a, b) = (0..n_hashes as u64)
            .map(|k| {
                (
                    hash_words(&[seed, MINHASH_TAG, k, 0]) | 1,
                    hash_words(&[seed, MINHASH_TAG, k, 1]),
                )
            })
            .unzip();
        Self {
            a,
            b,
            shingle_words: shingle_words.max(1),
        }
    }

    /// Number of hash functions (signature length).
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Whether there are no hash functions.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// The signature of `text`, or `None` when it has no words.
    pub fn signature(&self, text: &str) -> Option<Vec<u32>> {
        let (norm, starts) = words(text);
        if starts.is_empty() {
            return None;
        }
        let n = self.shingle_words;
        let mut sig = vec![u32::MAX; self.a.len()];
        let count = starts.len().saturating_sub(n) + 1;
        for i in 0..count {
            let end = match starts.get(i + n) {
                Some(&next) => next - 1,
                None => norm.len(),
            };
            let x = xxh3_64(&norm.as_bytes()[starts[i]..end]);
            for ((s, a), b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let h = (a.wrapping_mul(x).wrapping_add(*b) >> 32) as u32;
                *s = (*s).min(h);
            }
        }
        Some(sig)
    }
}

/// The LSH key of band `j` of `rows` entries of `sig`.
pub fn band_key(sig: &[u32], j: usize, rows: usize) -> u64 {
    let mut buf = Vec::with_capacity(4 + 4 * rows);
    buf.extend_from_slice(&(j as u32).to_le_bytes());
    for v in &sig[j * rows..(j + 1) * rows] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    xxh3_64(&buf)
}

/// The share of equal entries of two signatures: MinHash's estimate of the Jaccard
/// similarity of the two shingle sets.
pub fn jaccard_estimate(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_key_ignores_case_and_whitespace_only() {
        assert_eq!(exact_key("Hello  World\n"), exact_key("hello world"));
        assert_ne!(exact_key("hello world"), exact_key("hello, world"));
    }

    #[test]
    fn words_and_shingles() {
        let (w, s) = words("The cat, the HAT!");
        assert_eq!(w, "the cat the hat");
        assert_eq!(s, vec![0, 4, 8, 12]);
        let m = MinHasher::new(1, 16, 5);
        assert!(m.signature("...").is_none());
        // Fewer words than a shingle: one shingle of all of them.
        assert_eq!(m.signature("a b"), m.signature("A, b"));
    }

    #[test]
    fn similar_texts_have_close_signatures() {
        let m = MinHasher::new(7, 112, 5);
        let a: String = (0..200).map(|i| format!("word{i} ")).collect();
        let b = a.replace("word100 ", "other ");
        let c: String = (0..200).map(|i| format!("thing{i} ")).collect();
        let (sa, sb, sc) = (
            m.signature(&a).unwrap(),
            m.signature(&b).unwrap(),
            m.signature(&c).unwrap(),
        );
        assert!(jaccard_estimate(&sa, &sb) > 0.8);
        assert!(jaccard_estimate(&sa, &sc) < 0.1);
        assert_eq!(m.signature(&a).unwrap(), sa);
        assert_ne!(MinHasher::new(8, 112, 5).signature(&a).unwrap(), sa);
    }
}
