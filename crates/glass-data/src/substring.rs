//! Exact-substring deduplication (`[data.dedup] substring = K`): the spans of K or more
//! tokens that already occurred earlier in the recorded order are cut out of the later
//! documents (Lee et al. 2022, "Deduplicating Training Data Makes Language Models
//! Better", ExactSubstr), keeping the first occurrence.
//!
//! The rule, exactly: the deduplicated documents are concatenated in recorded order. A
//! *window* is K consecutive tokens of one document. A window is *repeated* when the same
//! K tokens form a window at an earlier position of the concatenation (in the same or an
//! earlier document). Every token covered by a repeated window is cut; the cut tokens of
//! a document form maximal *spans* (each at least K tokens long). Each span names where
//! its first window occurred first. Every window's first occurrence stays, so each repeated
//! text keeps one copy.
//!
//! How: one suffix array (libsais) over the concatenation with a 0 after every document
//! (tokens are stored as id + 1), so equal K-token prefixes of suffixes are adjacent in
//! suffix order; a run of adjacent suffixes whose first K tokens agree (and hold no
//! separator) is the set of positions of one window text, and every position of a run but
//! its smallest is a repeated window. Suffixes are compared directly (K tokens at most),
//! in parallel over fixed blocks of the array; the runs and spans are then walked in
//! order, so the result is a pure function of the documents and K, for any thread count.

use rayon::prelude::*;

use crate::error::{DataError, Result};

/// Smallest span length accepted (shorter spans cut common phrases, not duplicates).
pub const MIN_SPAN: u32 = 8;
/// Largest span length accepted.
pub const MAX_SPAN: u32 = 1 << 16;

/// One span cut from a document: tokens `[start, end)` of document `doc` (an index into
/// the documents given), whose first window occurred first at token `kept_at` of document
/// `kept_doc` (`kept_doc <= doc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The document the span is cut from.
    pub doc: usize,
    /// First token of the span.
    pub start: u32,
    /// One past the last token of the span.
    pub end: u32,
    /// The document holding the first occurrence of the span's first window.
    pub kept_doc: usize,
    /// Where in `kept_doc` that window starts.
    pub kept_at: u32,
}

/// The documents substring deduplication reads, in recorded order: their lengths, and a
/// reader appending document `i`'s token ids to a buffer (so the tokens are held once, in
/// the array being sorted).
pub struct Docs<'a> {
    /// Token count of each document.
    pub lens: &'a [u32],
    /// Appends document `i`'s ids.
    pub read: &'a dyn Fn(usize, &mut Vec<u32>),
}

/// The spans to cut from `docs` at span length `k`, sorted by `(doc, start)`. `tick` is
/// called with the amount of work done (3 units per token and document in all:
/// gathering, sorting, scanning) for a progress bar.
pub fn repeated_spans(docs: &Docs, k: u32, tick: &(dyn Fn(u64) + Sync)) -> Result<Vec<Cut>> {
    repeated_spans_with(docs, k, tick, i32::MAX as usize, BLOCK)
}

/// Memory [`repeated_spans`] takes, in bytes, for `tokens` tokens in `docs` documents:
/// the text and suffix array (4 bytes each per position below 2^31 positions, 8 above)
/// and two flags per position.
pub fn memory_bytes(tokens: u64, docs: u64) -> u64 {
    let n = tokens + docs;
    let w = if n < i32::MAX as u64 { 8 } else { 16 };
    n * (w + 2)
}

/// [`repeated_spans`] with 64-bit suffix-array entries from `narrow_limit` positions on
/// (2^31 − 1 in use) and suffixes compared in parallel blocks of `block` entries
/// ([`BLOCK`]); tests lower both to reach the 64-bit and the many-block paths.
fn repeated_spans_with(
    docs: &Docs,
    k: u32,
    tick: &(dyn Fn(u64) + Sync),
    narrow_limit: usize,
    block: usize,
) -> Result<Vec<Cut>> {
    if !(MIN_SPAN..=MAX_SPAN).contains(&k) {
        return Err(DataError::Config(format!(
            "[data.dedup] substring = {k}: spans of {MIN_SPAN} to {MAX_SPAN} tokens are supported (50 is the published choice)"
        )));
    }
    let len: usize = docs.lens.iter().map(|&l| l as usize + 1).sum();
    let err = |e| DataError::Format(format!("suffix array: {e:?}"));
    if len < narrow_limit {
        sorted_spans(
            docs,
            (k, block),
            tick,
            len,
            |t| t as i32 + 1,
            |text| {
                let sa = libsais::SuffixArrayConstruction::for_text_mut(text)
                    .in_owned_buffer32()
                    .single_threaded()
                    .run()
                    .map_err(err)?;
                Ok(sa.into_vec())
            },
        )
    } else {
        sorted_spans(
            docs,
            (k, block),
            tick,
            len,
            |t| t as i64 + 1,
            |text| {
                let sa = libsais::SuffixArrayConstruction::for_text_mut(text)
                    .in_owned_buffer64()
                    .single_threaded()
                    .run()
                    .map_err(err)?;
                Ok(sa.into_vec())
            },
        )
    }
}

/// Concatenates the documents as `T` (`map`ped ids, a 0 after each), sorts their
/// suffixes with `sort` and finds the spans: the one path of both widths.
fn sorted_spans<T, P>(
    docs: &Docs,
    (k, block): (u32, usize),
    tick: &(dyn Fn(u64) + Sync),
    len: usize,
    map: impl Fn(u32) -> T,
    sort: impl FnOnce(&mut [T]) -> Result<Vec<P>>,
) -> Result<Vec<Cut>>
where
    T: Copy + PartialEq + Default + Send + Sync,
    P: Pos,
{
    let mut text: Vec<T> = Vec::with_capacity(len);
    let starts = concat(docs, &mut text, map, tick)?;
    let sa = sort(&mut text)?;
    tick(len as u64);
    Ok(spans(&text, &sa, &starts, k as usize, block, tick))
}

/// Largest id accepted: libsais sorts an integer text in memory linear in its largest
/// value, and ids are vocabulary indices, far below this.
const MAX_ID: u32 = (1 << 30) - 1;

/// Appends every document (`map`ped ids) and a 0 after each to `text`; returns each
/// document's first position.
fn concat<T>(
    docs: &Docs,
    text: &mut Vec<T>,
    map: impl Fn(u32) -> T,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Vec<usize>>
where
    T: Default,
{
    let mut starts = Vec::with_capacity(docs.lens.len());
    let mut buf = Vec::new();
    for (i, &l) in docs.lens.iter().enumerate() {
        buf.clear();
        (docs.read)(i, &mut buf);
        debug_assert_eq!(buf.len(), l as usize);
        if let Some(t) = buf.iter().find(|&&t| t > MAX_ID) {
            return Err(DataError::Format(format!(
                "token id {t} is too large for substring deduplication (ids up to {MAX_ID} are supported)"
            )));
        }
        starts.push(text.len());
        text.extend(buf.iter().map(|&t| map(t)));
        text.push(T::default());
        tick(l as u64 + 1);
    }
    Ok(starts)
}

/// A suffix-array entry as a position.
trait Pos: Copy + Send + Sync {
    fn at(self) -> usize;
}
impl Pos for i32 {
    fn at(self) -> usize {
        self as usize
    }
}
impl Pos for i64 {
    fn at(self) -> usize {
        self as usize
    }
}

/// Suffix-array entries compared per parallel block.
const BLOCK: usize = 1 << 16;

fn spans<T, P>(
    text: &[T],
    sa: &[P],
    starts: &[usize],
    k: usize,
    block: usize,
    tick: &(dyn Fn(u64) + Sync),
) -> Vec<Cut>
where
    T: Copy + PartialEq + Default + Send + Sync,
    P: Pos,
{
    let n = text.len();
    let sep = T::default();
    let window = |p: usize| -> Option<&[T]> {
        let w = text.get(p..p + k)?;
        (!w.contains(&sep)).then_some(w)
    };
    // same[i]: the suffixes at sa[i - 1] and sa[i] start with the same window.
    let same: Vec<bool> = sa
        .par_chunks(block)
        .enumerate()
        .flat_map_iter(|(b, chunk)| {
            let base = b * block;
            let out: Vec<bool> = chunk
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let i = base + j;
                    i > 0 && {
                        let (a, c) = (sa[i - 1].at(), p.at());
                        text.get(a..a + k) == text.get(c..c + k) && window(c).is_some()
                    }
                })
                .collect();
            tick(chunk.len() as u64);
            out
        })
        .collect();
    // The runs of adjacent suffixes sharing a window: every position of a run but its
    // smallest is a repeated window, whose first occurrence is that smallest.
    let same = same.as_slice();
    let runs = || {
        let mut i = 1;
        std::iter::from_fn(move || {
            while i < n && !same[i] {
                i += 1;
            }
            if i >= n {
                return None;
            }
            let a = i - 1;
            while i < n && same[i] {
                i += 1;
            }
            let run = &sa[a..i];
            let m = run
                .iter()
                .map(|p| p.at())
                .min()
                .expect("a run has two entries");
            Some((run, m))
        })
    };
    let mut repeated = vec![false; n];
    for (run, m) in runs() {
        for p in run.iter().map(|p| p.at()).filter(|&p| p != m) {
            repeated[p] = true;
        }
    }
    // Spans: the union of the repeated windows, walked in text order.
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut p = 0;
    while p < n {
        if !repeated[p] {
            p += 1;
            continue;
        }
        let start = p;
        let mut end = p + k;
        p += 1;
        // Windows overlapping or touching the span extend it.
        while p < end || (p == end && p < n && repeated[p]) {
            if repeated[p] {
                end = p + k;
            }
            p += 1;
        }
        found.push((start, end));
    }
    drop(repeated);
    // The first occurrence of each span's first window (a second walk over the runs, so
    // that only one position per span is kept in memory).
    let mut first = vec![usize::MAX; found.len()];
    for (run, m) in runs() {
        for p in run.iter().map(|p| p.at()).filter(|&p| p != m) {
            if let Ok(j) = found.binary_search_by_key(&p, |s| s.0) {
                first[j] = m;
            }
        }
    }
    let doc_of = |p: usize| starts.partition_point(|&s| s <= p) - 1;
    found
        .iter()
        .zip(first)
        .map(|(&(start, end), f)| {
            let (doc, kept_doc) = (doc_of(start), doc_of(f));
            Cut {
                doc,
                start: (start - starts[doc]) as u32,
                end: (end - starts[doc]) as u32,
                kept_doc,
                kept_at: (f - starts[kept_doc]) as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule by brute force: token `t` of document `d` is cut when some window covering
    /// it occurs at an earlier position of the concatenation.
    fn brute(docs: &[Vec<u32>], k: usize) -> Vec<Vec<bool>> {
        let mut seen: Vec<&[u32]> = Vec::new();
        let mut out = Vec::new();
        for d in docs {
            let mut cut = vec![false; d.len()];
            for p in 0..d.len().saturating_sub(k - 1) {
                let w = &d[p..p + k];
                if seen.contains(&w) {
                    cut[p..p + k].iter_mut().for_each(|c| *c = true);
                }
                seen.push(w);
            }
            out.push(cut);
        }
        out
    }

    fn lcg(x: &mut u64) -> u64 {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *x >> 33
    }

    /// Random documents over a small alphabet with planted copies of earlier text (inside
    /// a document, across documents, overlapping, at document ends), checked against the
    /// brute force: the cut tokens, the spans' first occurrences, and that every span is at
    /// least `k` long.
    #[test]
    fn cuts_equal_brute_force_on_planted_repeats() {
        for (seed, k) in [(1u64, 8u32), (2, 9), (3, 12), (4, 8)] {
            let mut x = seed;
            let mut docs: Vec<Vec<u32>> = Vec::new();
            for _ in 0..40 {
                let len = 5 + lcg(&mut x) as usize % 120;
                let mut d: Vec<u32> = (0..len)
                    .map(|_| (lcg(&mut x) % 5) as u32 + 40_000 * (seed as u32 % 2))
                    .collect();
                if !docs.is_empty() && lcg(&mut x).is_multiple_of(2) {
                    let src = &docs[lcg(&mut x) as usize % docs.len()];
                    let a = lcg(&mut x) as usize % src.len();
                    let b = (a + k as usize + lcg(&mut x) as usize % 30).min(src.len());
                    let at = lcg(&mut x) as usize % d.len();
                    d.splice(at..at, src[a..b].iter().copied());
                }
                if lcg(&mut x).is_multiple_of(4) {
                    let l = d.len();
                    let copy = d[..l / 2].to_vec();
                    d.extend(copy);
                }
                docs.push(d);
            }
            let lens: Vec<u32> = docs.iter().map(|d| d.len() as u32).collect();
            let read = |i: usize, out: &mut Vec<u32>| out.extend_from_slice(&docs[i]);
            let input = Docs {
                lens: &lens,
                read: &read,
            };
            // Odd seeds sort with 64-bit entries, even ones with 32-bit entries; blocks of
            // 64 entries put every run boundary case across many parallel blocks.
            let limit = if seed % 2 == 1 { 0 } else { i32::MAX as usize };
            let cuts = repeated_spans_with(&input, k, &|_| {}, limit, 64).unwrap();
            let one_block = repeated_spans_with(&input, k, &|_| {}, limit, BLOCK).unwrap();
            assert_eq!(cuts, one_block, "block size changes nothing");
            let want = brute(&docs, k as usize);
            let mut got: Vec<Vec<bool>> = docs.iter().map(|d| vec![false; d.len()]).collect();
            for c in &cuts {
                assert!(c.end - c.start >= k, "{c:?}");
                for t in c.start..c.end {
                    assert!(!got[c.doc][t as usize], "spans overlap: {c:?}");
                    got[c.doc][t as usize] = true;
                }
                let w = &docs[c.doc][c.start as usize..(c.start + k) as usize];
                let f = &docs[c.kept_doc][c.kept_at as usize..(c.kept_at + k) as usize];
                assert_eq!(w, f, "{c:?}");
                assert!((c.kept_doc, c.kept_at) < (c.doc, c.start), "{c:?}");
                // The named occurrence is the first one.
                let first = docs
                    .iter()
                    .enumerate()
                    .flat_map(|(i, d)| {
                        (0..d.len().saturating_sub(k as usize - 1)).map(move |p| (i, p))
                    })
                    .find(|&(i, p)| &docs[i][p..p + k as usize] == w)
                    .unwrap();
                assert_eq!(first, (c.kept_doc, c.kept_at as usize));
            }
            for w in cuts.windows(2) {
                assert!(
                    w[0].doc < w[1].doc || w[0].end < w[1].start,
                    "spans not maximal: {w:?}"
                );
            }
            let planted: usize = want.iter().flatten().filter(|&&b| b).count();
            assert!(planted > 200, "the fixture must plant repeats ({planted})");
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn span_length_and_ids_are_bounded() {
        let read = |_: usize, out: &mut Vec<u32>| out.extend_from_slice(&[1, 2, 3]);
        let d = Docs {
            lens: &[3],
            read: &read,
        };
        for k in [0, 7, MAX_SPAN + 1] {
            let e = repeated_spans(&d, k, &|_| {}).unwrap_err().to_string();
            assert!(e.contains("substring"), "{e}");
        }
        let read = |_: usize, out: &mut Vec<u32>| out.extend_from_slice(&[5, u32::MAX]);
        let d = Docs {
            lens: &[2],
            read: &read,
        };
        let e = repeated_spans(&d, 8, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
