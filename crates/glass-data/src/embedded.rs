//! The default data compiled into the binary: the public-domain English corpus
//! (Shakespeare and Milton) and the project's own Rust sources, so the default run needs
//! no downloads and gives the same bytes on every machine that builds the same tree.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Works kept out of the default training sources, for held-out perplexity and cloze
/// evaluation: a model must never have seen them.
pub const HELD_OUT_WORKS: &[&str] = &[
    "shakespeare/macbeth.txt",
    "shakespeare/twelfth_night.txt",
    "milton/comus.txt",
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
    /// The project's own Rust sources, sorted by path.
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

/// The embedded Rust sources as `(path, text)`, sorted by path (e.g. `crates/glass-data/src/lib.rs`).
pub fn embedded_code() -> &'static [(&'static str, &'static str)] {
    CODE
}

/// The `(name, text)` files of one embedded set, in their fixed order.
pub fn embedded_set(set: EmbeddedSet) -> Vec<(&'static str, &'static str)> {
    let held = |n: &str| HELD_OUT_WORKS.contains(&n);
    match set {
        EmbeddedSet::English => CORPUS.iter().copied().filter(|(n, _)| !held(n)).collect(),
        EmbeddedSet::EnglishHeldOut => CORPUS.iter().copied().filter(|(n, _)| held(n)).collect(),
        EmbeddedSet::EnglishAll => CORPUS.to_vec(),
        EmbeddedSet::Code => CODE.to_vec(),
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
    fn code_is_sorted_and_includes_this_crate() {
        let code = embedded_code();
        assert!(code.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(code
            .iter()
            .any(|(p, _)| *p == "crates/glass-data/src/embedded.rs"));
    }
}
