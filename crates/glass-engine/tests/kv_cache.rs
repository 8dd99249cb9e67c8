//! KV-cache decoding must reproduce full-sequence logits; sampling must be seeded.

mod common;

use glass_engine::{KvCache, Model, NormKind, Sampler, SamplingConfig};

#[test]
fn cached_logits_equal_full_sequence_logits() {
    let mut cfg = common::small_cfg();
    cfg.norm = NormKind::LayerNorm;
    cfg.rotary_fraction = 0.5;
    let mut model = Model::new(&cfg, 11).unwrap();
    for p in model.params.iter_mut() {
        *p *= 10.0;
    }
    let seq = 75;
    let toks = common::tokens(seq, cfg.vocab_size, 3);
    let full = model.forward_logits(&toks, 1, seq).unwrap();
    let mut cache = KvCache::new(&model);
    let mut inc = model.forward_cached(&toks[..40], &mut cache).unwrap();
    for &t in &toks[40..] {
        inc.extend(model.forward_cached(&[t], &mut cache).unwrap());
    }
    assert_eq!(cache.len(), seq);
    let err = common::rel_err(&inc, &full);
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn sampling_is_seeded_and_greedy_is_argmax() {
    let cfg = common::small_cfg();
    let model = Model::new(&cfg, 2).unwrap();
    let prompt = [1u32, 2, 3];
    let run = |temperature, seed| {
        let mut s = Sampler::new(SamplingConfig {
            temperature,
            top_p: 0.9,
            seed,
        });
        model.generate(&prompt, 20, &mut s, |_| true).unwrap()
    };
    assert_eq!(run(1.0, 5), run(1.0, 5));
    assert_ne!(run(1.0, 5), run(1.0, 6));
    let greedy = run(0.0, 0);
    let mut cache = KvCache::new(&model);
    let logits = model.forward_cached(&prompt, &mut cache).unwrap();
    let last = &logits[2 * cfg.vocab_size..];
    let am = last
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    assert_eq!(greedy[0], am);
}
