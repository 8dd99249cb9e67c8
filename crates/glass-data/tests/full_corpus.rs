//! The one test on the full embedded corpus: the default run prepares with no downloads,
//! and the fast encoder equals HF's on every embedded work and source file.

use glass_data::{default_demo_toml, prepare, PrepareOptions, PreparedData};

#[test]
fn default_demo_run_prepares_from_embedded_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("glass.toml"), default_demo_toml()).unwrap();
    let r = prepare(dir.path(), &PrepareOptions::default()).unwrap();
    assert!(r.complete);
    let data = PreparedData::open(dir.path()).unwrap();
    assert_eq!(data.vocab_size(), 4096);
    assert_eq!(data.row_len(), 129);
    let m = data.manifest();
    assert_eq!(m.stages.len(), 2);
    assert_eq!(
        m.stages[1]
            .sources
            .iter()
            .map(|s| s.source.as_str())
            .collect::<Vec<_>>(),
        ["english", "code"]
    );
    assert!(m.stages[1].sources[1].fim_docs > 0);
    assert_eq!(data.n_validation_rows(), 64);
    assert!(glass_data::verify(dir.path())
        .unwrap()
        .mismatches
        .is_empty());

    let fast = data.tokenizer().unwrap();
    assert!(fast.uses_fast_path());
    let mut slow = data.tokenizer().unwrap();
    slow.set_fast_path(false);
    for (name, text) in glass_data::embedded_works()
        .iter()
        .chain(glass_data::embedded_code())
    {
        assert_eq!(
            fast.encode(text).unwrap(),
            slow.encode(text).unwrap(),
            "{name}"
        );
    }
}
