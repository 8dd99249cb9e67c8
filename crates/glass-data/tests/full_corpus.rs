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
    assert_eq!(data.vocab_size(), 2048);
    assert_eq!(data.row_len(), 129);
    let m = data.manifest();
    assert_eq!(m.stages.len(), 2);
    assert_eq!(
        m.stages[1]
            .sources
            .iter()
            .map(|s| s.source.as_str())
            .collect::<Vec<_>>(),
        ["english", "sonnets", "code"]
    );
    assert!(m.stages[1].sources[2].fim_docs > 0);
    // The sources' selections: English cut into pieces (many more documents than works),
    // the Sonnets' head alone, the code minus its held-out files.
    let source = |name: &str| m.sources.iter().find(|s| s.name == name).unwrap();
    let english = source("english");
    assert!(
        english.docs > 4 * english.units.len() as u64,
        "{}",
        english.docs
    );
    let sonnets = source("sonnets");
    assert_eq!((sonnets.docs, sonnets.units.len()), (1, 1));
    assert!(sonnets.tokens < 1000, "{}", sonnets.tokens);
    let code = source("code");
    for held in glass_data::HELD_OUT_CODE {
        assert!(code.units.iter().all(|u| !u.path.ends_with(held)), "{held}");
    }
    assert_eq!(
        code.units.len() + glass_data::HELD_OUT_CODE.len(),
        glass_data::embedded_code().len()
    );
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
