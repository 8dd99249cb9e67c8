//! KV-cache decoding must reproduce full-sequence logits; sampling must be seeded.

mod common;

use glass_engine::{CachedInput, KvCache, Model, NormKind, PackedModel, Sampler, SamplingConfig};

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

/// Several sequences fed together, each after its own (differently long) cache, give
/// each sequence's own full-sequence logits; a rewound cache reproduces them too.
#[test]
fn batched_cached_sequences_equal_their_full_logits() {
    let cfg = common::small_cfg();
    let mut model = Model::new(&cfg, 5).unwrap();
    let a = common::tokens(30, cfg.vocab_size, 1);
    let b = common::tokens(17, cfg.vocab_size, 2);
    let v = cfg.vocab_size;
    let full_a = model.forward_logits(&a, 1, a.len()).unwrap();
    let full_b = model.forward_logits(&b, 1, b.len()).unwrap();
    let (mut ca, mut cb) = (KvCache::new(&model), KvCache::new(&model));
    // Prefixes of different lengths, one batched call for both.
    model.forward_cached(&a[..20], &mut ca).unwrap();
    model.forward_cached(&b[..5], &mut cb).unwrap();
    let out = model
        .forward_cached_batch(&mut [
            CachedInput {
                tokens: &a[20..],
                cache: &mut ca,
                keep: 10,
            },
            CachedInput {
                tokens: &b[5..],
                cache: &mut cb,
                keep: 3,
            },
        ])
        .unwrap();
    assert!(common::rel_err(&out[0], &full_a[20 * v..]) < 1e-5);
    assert!(common::rel_err(&out[1], &full_b[14 * v..]) < 1e-5);
    assert_eq!((ca.len(), cb.len()), (30, 17));
    // Rewind and feed a different continuation of the same prefix.
    ca.truncate(20);
    let again = model.forward_cached_tail(&a[20..], &mut ca, 10).unwrap();
    assert!(common::rel_err(&again, &full_a[20 * v..]) < 1e-5);
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

/// Caches hold memory for the positions fed, not for `max_seq_len`, and decoding past
/// several attention blocks with one KV head (MQA) still gives the full-sequence logits.
#[test]
fn caches_grow_as_used_and_match_across_blocks() {
    let mut cfg = common::small_cfg();
    cfg.n_kv_heads = 1;
    cfg.max_seq_len = 4096;
    let model_full = Model::new(&cfg, 9).unwrap();
    let mut model = Model::new(&cfg, 9).unwrap();
    let kv_bytes_per_pos = 2 * cfg.n_layers * cfg.kv_dim() * 4;
    let mut cache = KvCache::new(&model_full);
    assert_eq!(cache.allocated_bytes(), 0);
    let seq = 150;
    let toks = common::tokens(seq, cfg.vocab_size, 4);
    let mut inc = model_full.forward_cached(&toks[..70], &mut cache).unwrap();
    for &t in &toks[70..] {
        inc.extend(model_full.forward_cached(&[t], &mut cache).unwrap());
    }
    assert_eq!(cache.len(), seq);
    // Amortised doubling: at most twice what the positions need, far below max_seq_len.
    assert!(cache.allocated_bytes() <= 2 * seq * kv_bytes_per_pos);
    assert!(cache.allocated_bytes() < cfg.max_seq_len * kv_bytes_per_pos / 10);
    let full = model.forward_logits(&toks, 1, seq).unwrap();
    let err = common::rel_err(&inc, &full);
    assert!(err < 1e-5, "relative error {err}");
}

/// Decodes `group` together (a prefill of `steps[0]`, then the other spans), with the
/// weights packed when `packed` is given; returns each sequence's logits as bits, in
/// feeding order.
fn decode_bits(
    model: &Model,
    packed: Option<&PackedModel<'_>>,
    group: &[Vec<u32>],
    steps: &[(usize, usize)],
) -> Vec<Vec<u32>> {
    let mut caches: Vec<KvCache> = group.iter().map(|_| KvCache::new(model)).collect();
    let mut per_seq: Vec<Vec<u32>> = vec![Vec::new(); group.len()];
    for &(lo, hi) in steps {
        let mut items: Vec<CachedInput<'_>> = group
            .iter()
            .zip(caches.iter_mut())
            .map(|(s, cache)| CachedInput {
                tokens: &s[lo..hi],
                cache,
                keep: 1,
            })
            .collect();
        let out = match packed {
            Some(p) => p.forward_cached_batch(&mut items).unwrap(),
            None => model.forward_cached_batch(&mut items).unwrap(),
        };
        for (bits, logits) in per_seq.iter_mut().zip(out) {
            bits.extend(logits.into_iter().map(f32::to_bits));
        }
    }
    per_seq
}

/// Weights packed once ([`Model::packed`]) give the bits of per-product packing, at
/// shapes that reach every path of the packed GEMM: two k-blocks (d_model and ffn over
/// 256), a head wider than one column block (vocab over 1024), decode-sized products
/// split by columns over three threads, and MQA.
#[test]
fn packed_weights_give_the_same_bits() {
    let cfg = glass_engine::ModelConfig {
        vocab_size: 1100,
        d_model: 288,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 1,
        ffn_hidden: 600,
        max_seq_len: 64,
        ..glass_engine::ModelConfig::preset("tiny").unwrap()
    };
    let model = Model::new(&cfg, 7).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        let packed = model.packed();
        assert!(packed.is_packed());
        let seqs: Vec<Vec<u32>> = (0..32)
            .map(|i| common::tokens(12, cfg.vocab_size, 100 + i))
            .collect();
        // A prefill of 8 tokens, then four one-token steps, 32 sequences together.
        let steps = [(0, 8), (8, 9), (9, 10), (10, 11), (11, 12)];
        let plain = decode_bits(&model, None, &seqs, &steps);
        let with_packed = decode_bits(&model, Some(&packed), &seqs, &steps);
        assert_eq!(plain.concat().len(), 5 * 32 * cfg.vocab_size);
        assert!(plain == with_packed, "packed weights changed the logits");
    });
}

/// A sequence's logits do not depend on which sequences share its batch, nor on how
/// many: every product computes each output element on its own (the GEMM contract) and
/// attention runs per sequence. Batches of 1, 5, 13 and 40 sequences (below, at and
/// across the micro-tile heights) through prefill and one-token steps, with weights
/// packed and not, on two threads.
#[test]
fn a_sequence_gets_the_same_bits_in_any_batch() {
    let cfg = common::small_cfg();
    let model = Model::new(&cfg, 21).unwrap();
    let seqs: Vec<Vec<u32>> = (0..40)
        .map(|i| common::tokens(10, cfg.vocab_size, 300 + i))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let packed = model.packed();
        // Logits bits of every sequence, decoded in batches of `batch`.
        let steps = [(0, 6), (6, 7), (7, 8), (8, 9), (9, 10)];
        let run = |batch: usize, use_packed: bool| -> Vec<Vec<u32>> {
            let p = use_packed.then_some(&packed);
            seqs.chunks(batch)
                .flat_map(|group| decode_bits(&model, p, group, &steps))
                .collect()
        };
        let alone = run(1, false);
        for batch in [5, 13, 40] {
            for use_packed in [false, true] {
                assert!(
                    run(batch, use_packed) == alone,
                    "batch {batch} (packed: {use_packed}) changed a sequence's logits"
                );
            }
        }
    });
}
