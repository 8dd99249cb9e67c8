//! The fast byte-level encoder gives exactly HF's ids; training is deterministic.

use glass_data::config::TokenizerConfig;
use glass_data::tokenizer::{train_bpe, GlassTokenizer};

fn cfg() -> TokenizerConfig {
    let mut c = glass_data::DataConfig::default_demo().tokenizer;
    c.vocab_size = Some(600);
    c
}

fn trained() -> (Vec<u8>, GlassTokenizer) {
    let texts = ["shakespeare/sonnets.txt", "milton/areopagitica.txt"]
        .map(|n| glass_data::embedded_work(n).unwrap().to_string());
    let json = train_bpe(&cfg(), texts.into_iter()).unwrap();
    let tok = GlassTokenizer::from_json(&json, &cfg()).unwrap();
    (json, tok)
}

#[test]
fn training_is_deterministic() {
    let (a, _) = trained();
    let (b, _) = trained();
    assert_eq!(a, b);
}

#[test]
fn fast_path_matches_hf_on_tricky_text() {
    let (json, fast) = trained();
    assert!(fast.uses_fast_path());
    let mut slow = GlassTokenizer::from_json(&json, &cfg()).unwrap();
    slow.set_fast_path(false);
    let alphabet: Vec<char> =
        " \t\n\r\x0b\x0c\x1c\x1f'sStTrReVvlLdDmMaZ09!.,-_\"(é—🦀\u{a0}\u{85}\u{2028}\u{3000}ǅ٣"
            .chars()
            .collect();
    let mut x = 12345u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut cases: Vec<String> = vec![
        String::new(),
        "it's we'll they're I'VE don't 'tis ''s".into(),
        "a  b   c\n\n  d \t\ne  ".into(),
        (0u8..128).map(|b| b as char).collect(),
        "<|endoftext|> <|fim_prefix|>".into(),
    ];
    for _ in 0..3000 {
        let n = (next() % 40) as usize;
        cases.push(
            (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect(),
        );
    }
    // Long mixed text crossing safe-segment boundaries, partly non-ASCII.
    let mut long =
        glass_data::embedded_work("shakespeare/tempest.txt").unwrap()[..60_000].to_string();
    long.insert_str(30_000, "naïve — “quoted”\n");
    cases.push(long);
    for c in &cases {
        assert_eq!(fast.encode(c).unwrap(), slow.encode(c).unwrap(), "{c:?}");
    }
    let eos = fast.specials().eos;
    assert!(
        !fast.encode("<|endoftext|>").unwrap().contains(&eos),
        "special strings in text stay text"
    );
    assert_eq!(
        fast.decode(&fast.encode(&cases[cases.len() - 1]).unwrap())
            .unwrap(),
        cases[cases.len() - 1]
    );
}
