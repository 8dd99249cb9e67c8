//! Same seed ⇒ same bits; 1 thread vs 2 threads ⇒ same bits.

mod common;

use glass_engine::{AdamW, AdamWConfig, Model};

fn train(threads: usize, seed: u64) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut cfg = common::small_cfg();
        cfg.vocab_size = 300;
        let seq = 70;
        let mut model = Model::new(&cfg, seed).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), model.params.len());
        for step in 0..3 {
            let rows = common::tokens(4 * (seq + 1), cfg.vocab_size, step);
            model.train_step(&mut opt, &rows, seq, 2, 1e-3).unwrap();
        }
        model.params
    })
}

#[test]
fn same_seed_same_bits() {
    let a = train(2, 42);
    let b = train(2, 42);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let c = train(2, 43);
    assert!(
        a.iter().zip(&c).any(|(x, y)| x.to_bits() != y.to_bits()),
        "seed must matter"
    );
}

#[test]
fn thread_count_does_not_change_bits() {
    let one = train(1, 5);
    let two = train(2, 5);
    let four = train(4, 5);
    let diff = one
        .iter()
        .zip(&two)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(diff, 0, "{diff} parameters differ between 1 and 2 threads");
    assert!(
        one.iter()
            .zip(&four)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "1 vs 4 threads differ"
    );
}

#[test]
fn gradient_accumulation_equals_full_batch() {
    let cfg = common::small_cfg();
    let seq = 12;
    let rows = common::tokens(4 * (seq + 1), cfg.vocab_size, 9);
    let run = |micro| {
        let mut m = Model::new(&cfg, 1).unwrap();
        let mut opt = AdamW::new(
            AdamWConfig {
                grad_clip: 0.0,
                ..AdamWConfig::default()
            },
            m.params.len(),
        );
        let s = m.train_step(&mut opt, &rows, seq, micro, 1e-3).unwrap();
        (m.grads, s.loss)
    };
    let (g4, l4) = run(4);
    let (g1, l1) = run(1);
    assert!((l4 - l1).abs() < 1e-6, "{l4} vs {l1}");
    assert!(common::rel_err(&g1, &g4) < 1e-5);
}

#[test]
fn every_block_variant_computes_the_same_bits_on_any_thread_count() {
    for (cfg, name) in common::family_variants(common::small_cfg()) {
        let logits = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut m = Model::new(&cfg, 3).unwrap();
                // Non-zero biases, so their path counts too.
                for t in m.layout.clone().tensors() {
                    if t.name.ends_with(".bias") {
                        m.params[t.range()].iter_mut().for_each(|p| *p = 0.01);
                    }
                }
                let x = common::tokens(2 * 70, cfg.vocab_size, 4);
                m.forward_logits(&x, 2, 70).unwrap()
            })
        };
        let one = logits(1);
        for t in [2, 4] {
            let other = logits(t);
            assert!(
                one.iter()
                    .zip(&other)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: 1 vs {t} threads differ"
            );
        }
    }
}

#[test]
fn profiling_changes_no_bit() {
    let plain = train(2, 9);
    glass_engine::profile::enable(true);
    let profiled = train(2, 9);
    let totals = glass_engine::profile::totals();
    glass_engine::profile::enable(false);
    assert!(plain
        .iter()
        .zip(&profiled)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // Every phase of a plain LLaMA step was seen.
    for (p, _, calls) in totals {
        if !matches!(
            p,
            glass_engine::profile::Phase::Elementwise | glass_engine::profile::Phase::GradReduce
        ) {
            assert!(calls > 0, "{} never timed", p.name());
        }
    }
}
