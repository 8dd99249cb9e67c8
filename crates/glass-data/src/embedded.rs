//! The default data compiled into the binary: the public-domain English corpus
//! (Shakespeare and Milton) and a fixed snapshot of Glass's own Rust sources, so the
//! default run needs no downloads and gives the same bytes on every machine and in every
//! Glass version (until the corpus itself is changed on purpose; see
//! `corpus/README.md` and [`EMBEDDED_CORPUS_SHA256`]).

use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// sha256 of every embedded document (see [`embedded_corpus_sha256`]). A test pins it, so
/// the demo's data can only change by a deliberate edit of the corpus and this constant.
pub const EMBEDDED_CORPUS_SHA256: &str =
    "9023b5056ce06fe99541210e15fc49bf771fd9b180ec79aff530107145d64ec3";

/// Splits the code snapshot (`=== FILE <path> <n_bytes> ===\n` + bytes + `\n` per file,
/// written by `tools/corpus/make_code_snapshot.py`) into `(path, text)` documents.
fn parse_snapshot(s: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (header, body) = rest.split_once('\n').expect("snapshot header line");
        let inner = header
            .strip_prefix("=== FILE ")
            .and_then(|h| h.strip_suffix(" ==="))
            .expect("snapshot header");
        let (path, len) = inner.rsplit_once(' ').expect("snapshot header length");
        let len: usize = len.parse().expect("snapshot length");
        out.push((path, &body[..len]));
        rest = body[len..].strip_prefix('\n').expect("snapshot separator");
    }
    out
}

fn code() -> &'static [(&'static str, &'static str)] {
    static CODE: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    CODE.get_or_init(|| parse_snapshot(CODE_SNAPSHOT))
}

/// Works kept out of the default training sources, for held-out perplexity and cloze
/// evaluation: a model must never have seen them. Three plays of the training
/// distribution (a tragedy, a comedy, a romance), so held-out figures measure what the
/// model learned of it. (`milton/comus.txt` is not a candidate: four fifths of that file
/// are an editor's notes and index, text of a kind the corpus barely has.)
pub const HELD_OUT_WORKS: &[&str] = &[
    "shakespeare/macbeth.txt",
    "shakespeare/twelfth_night.txt",
    "shakespeare/tempest.txt",
];

/// Files of the code snapshot kept out of the default training sources (the default
/// `code` source lists them in `exclude`), for the held-out code evaluation
/// (`glass_code_heldout`): the curriculum's code stage is judged on code it never saw.
pub const HELD_OUT_CODE: &[&str] = &[
    "crates/glass-data/src/tokenizer.rs",
    "crates/glass-engine/src/model.rs",
    "crates/glass-hf/src/import.rs",
    "crates/glass-run/src/metrics.rs",
];

/// Which embedded collection a source of kind `embedded` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddedSet {
    /// Every English work except [`HELD_OUT_WORKS`]: the default training text.
    English,
    /// Only [`HELD_OUT_WORKS`]: validation and evaluation text.
    EnglishHeldOut,
    /// Every English work, held-out ones included (benchmarks, never training).
    EnglishAll,
    /// The committed snapshot of the project's Rust sources, sorted by path.
    Code,
}

/// The attribution that must travel with any copy of the English corpus.
pub fn corpus_readme() -> &'static str {
    CORPUS_README
}

/// Every embedded English work as `(name, text)`, sorted by name (e.g. `milton/comus.txt`).
pub fn embedded_works() -> &'static [(&'static str, &'static str)] {
    CORPUS
}

/// The text of one embedded work by name (e.g. `shakespeare/macbeth.txt`), so evaluation
/// code can read held-out works without a copy on disk.
pub fn embedded_work(name: &str) -> Option<&'static str> {
    CORPUS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The embedded Rust sources as `(path, text)`, sorted by path (e.g.
/// `crates/glass-data/src/lib.rs`): a fixed snapshot, not the sources of this build.
pub fn embedded_code() -> &'static [(&'static str, &'static str)] {
    code()
}

/// sha256 over every embedded document (English works, then code), each as its name, a
/// NUL byte, its length as 8 little-endian bytes and its text: the identity of the
/// default corpus.
pub fn embedded_corpus_sha256() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, text) in CORPUS.iter().chain(code()) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The `(name, text)` files of one embedded set, in their fixed order.
pub fn embedded_set(set: EmbeddedSet) -> Vec<(&'static str, &'static str)> {
    let held = |n: &str| HELD_OUT_WORKS.contains(&n);
    match set {
        EmbeddedSet::English => CORPUS.iter().copied().filter(|(n, _)| !held(n)).collect(),
        EmbeddedSet::EnglishHeldOut => CORPUS.iter().copied().filter(|(n, _)| held(n)).collect(),
        EmbeddedSet::EnglishAll => CORPUS.to_vec(),
        EmbeddedSet::Code => code().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_works_exist_and_are_excluded() {
        for w in HELD_OUT_WORKS {
            assert!(embedded_work(w).is_some_and(|t| !t.is_empty()), "{w}");
        }
        let train = embedded_set(EmbeddedSet::English);
        assert_eq!(train.len() + HELD_OUT_WORKS.len(), embedded_works().len());
        assert!(train.iter().all(|(n, _)| !HELD_OUT_WORKS.contains(n)));
        assert!(corpus_readme().contains("CC BY 2.5"));
    }

    #[test]
    fn held_out_code_exists() {
        for f in HELD_OUT_CODE {
            assert!(
                embedded_code().iter().any(|(p, t)| p == f && !t.is_empty()),
                "{f}"
            );
        }
    }

    #[test]
    fn code_is_sorted_and_includes_this_crate() {
        let code = embedded_code();
        assert!(code.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(code.len() > 50);
        assert!(code
            .iter()
            .any(|(p, t)| *p == "crates/glass-data/src/embedded.rs" && t.contains("HELD_OUT")));
    }

    /// The default corpus is pinned: changing it (English works or the code snapshot)
    /// changes every default run's data, so it must be deliberate — regenerate with
    /// `tools/corpus/make_code_snapshot.py` and update [`EMBEDDED_CORPUS_SHA256`].
    #[test]
    fn embedded_corpus_is_pinned() {
        assert_eq!(embedded_corpus_sha256(), EMBEDDED_CORPUS_SHA256);
    }

    #[test]
    fn snapshot_format_is_length_prefixed() {
        let s = "=== FILE a.rs 3 ===\nx\ny\n=== FILE b c.rs 0 ===\n\n";
        assert_eq!(parse_snapshot(s), vec![("a.rs", "x\ny"), ("b c.rs", "")]);
    }
}
