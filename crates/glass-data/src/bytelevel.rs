//! A faster, exact encoder for GPT-2-style byte-level BPE tokenizers.
//!
//! The HF pipeline spends most of its time in the pre-tokenizer regex and in building
//! offset tables that pretraining never reads. This module splits ASCII text with a
//! hand-written scanner that follows the GPT-2 pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! alternative by alternative, and caches the BPE result of each piece per thread. Text
//! that is not ASCII goes through the HF tokenizer itself, one "safe segment" at a time
//! (see [`safe_segments`]), so the output is identical to HF's on any input; the tests
//! check that.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use tokenizers::models::bpe::BPE;
use tokenizers::Model;

/// GPT-2's byte → char table: printable bytes map to themselves, the rest above 255.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("valid")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    table
}

/// `\s` as Oniguruma's Unicode White_Space sees ASCII.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// The ASCII character class a pre-token run is made of.
fn class(b: u8) -> u8 {
    if b.is_ascii_alphabetic() {
        1
    } else if b.is_ascii_digit() {
        2
    } else if is_space(b) {
        0
    } else {
        3
    }
}

/// End of the pre-token starting at `i` in ASCII text `s`, per the GPT-2 pattern.
fn next_piece(s: &[u8], i: usize) -> usize {
    let n = s.len();
    let c = s[i];
    // 's|'t|'re|'ve|'m|'ll|'d
    if c == b'\'' && i + 1 < n {
        let r = &s[i + 1..];
        if r.starts_with(b"re") || r.starts_with(b"ve") || r.starts_with(b"ll") {
            return i + 3;
        }
        if matches!(r[0], b's' | b't' | b'm' | b'd') {
            return i + 2;
        }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
    let start = if c == b' ' && i + 1 < n { i + 1 } else { i };
    let k = class(s[start]);
    if k != 0 {
        let mut e = start + 1;
        while e < n && class(s[e]) == k {
            e += 1;
        }
        return e;
    }
    // \s+(?!\S) | \s+
    let mut e = i;
    while e < n && is_space(s[e]) {
        e += 1;
    }
    if e == n || e - i == 1 {
        e
    } else {
        e - 1
    }
}

/// Splits text into pieces that the byte-level regex tokenizes independently: a cut is
/// made after a `\n` that has a non-space ASCII byte on both sides, where no pre-token can
/// cross and no look-ahead can see across.
pub(crate) fn safe_segments(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let mut start = 0;
    let mut i = 1;
    std::iter::from_fn(move || {
        if start >= b.len() {
            return None;
        }
        while i + 1 < b.len() {
            let cut = b[i] == b'\n'
                && b[i - 1].is_ascii()
                && !is_space(b[i - 1])
                && b[i + 1].is_ascii()
                && !is_space(b[i + 1]);
            i += 1;
            if cut && i - start >= 4096 {
                let seg = &text[start..i];
                start = i;
                return Some(seg);
            }
        }
        let seg = &text[start..];
        start = b.len();
        Some(seg)
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Piece bytes → ids.
type PieceCache = FxHashMap<Box<[u8]>, Box<[u32]>>;

thread_local! {
    /// Per-thread piece cache: (encoder id, piece bytes → ids). Output never depends on it.
    static CACHE: RefCell<(u64, PieceCache)> = RefCell::new((0, FxHashMap::default()));
}

const CACHE_LIMIT: usize = 1 << 18;

/// The fast path of one byte-level BPE tokenizer.
#[derive(Debug)]
pub(crate) struct FastByteLevel {
    id: u64,
    chars: [char; 256],
}

impl FastByteLevel {
    /// A new encoder; its id keeps per-thread caches of different tokenizers apart.
    pub(crate) fn new() -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            chars: byte_chars(),
        }
    }

    /// Appends the ids of ASCII `text` to `out`, using `bpe` for pieces not yet cached.
    pub(crate) fn encode_ascii(
        &self,
        bpe: &BPE,
        text: &[u8],
        out: &mut Vec<u32>,
    ) -> tokenizers::Result<()> {
        CACHE.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (owner, cache) = &mut *guard;
            if *owner != self.id || cache.len() > CACHE_LIMIT {
                cache.clear();
                *owner = self.id;
            }
            let mut i = 0;
            let mut mapped = String::new();
            while i < text.len() {
                let e = next_piece(text, i);
                let piece = &text[i..e];
                if let Some(ids) = cache.get(piece) {
                    out.extend_from_slice(ids);
                } else {
                    mapped.clear();
                    mapped.extend(piece.iter().map(|&b| self.chars[b as usize]));
                    let ids: Box<[u32]> =
                        bpe.tokenize(&mapped)?.into_iter().map(|t| t.id).collect();
                    out.extend_from_slice(&ids);
                    cache.insert(piece.into(), ids);
                }
                i = e;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<&str> {
        let b = s.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < b.len() {
            let e = next_piece(b, i);
            out.push(&s[i..e]);
            i = e;
        }
        out
    }

    #[test]
    fn follows_the_gpt2_pattern() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(
            pieces("it's   here!!\n\nx"),
            ["it", "'s", "  ", " here", "!!", "\n", "\n", "x"]
        );
        assert_eq!(pieces("a  \n"), ["a", "  \n"]);
        assert_eq!(pieces("x.'S 12ab"), ["x", ".'", "S", " 12", "ab"]);
        assert_eq!(pieces("\t!"), ["\t", "!"]);
    }

    #[test]
    fn segments_cover_text() {
        let text = "line one\nline two\n\n  indented\n".repeat(500);
        let segs: Vec<&str> = safe_segments(&text).collect();
        assert!(segs.len() > 1);
        assert_eq!(segs.concat(), text);
    }
}
