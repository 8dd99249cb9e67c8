//! A model over 16-bit weights (bf16 or f16, left in their buffer) computes exactly the
//! bits of the f32 model over the same weights widened, on every kernel this CPU runs:
//! full-sequence logits and losses, KV-cached batches, packed and per-product weights,
//! and greedy decoding.

use std::sync::Arc;

use glass_engine::gemm::{set_kernel, Half, Kernel};
use glass_engine::{decode, DecodeStep, HalfWeights, KvCache, Model, ModelConfig, NormKind};

mod common;
use common::tokens;

/// Two k-blocks in the down projection (ffn 272 > 256), GQA, a vocabulary wider than a
/// packing block of columns.
fn cfg(norm: NormKind, tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 300,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 272,
        max_seq_len: 64,
        norm,
        tie_embeddings: tie,
        ..ModelConfig::preset("tiny").unwrap()
    }
}

/// Each tensor's name and byte range.
type Ranges = Vec<(String, std::ops::Range<usize>)>;

/// The model's weights rounded to 16 bits: (an f32 model holding the widened values, the
/// 16-bit bytes laid out tensor after tensor, each tensor's byte range).
fn rounded(cfg: &ModelConfig, kind: Half) -> (Model, Vec<u8>, Ranges) {
    let mut m = Model::new(cfg, 7).unwrap();
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    for t in m.layout.tensors().to_vec() {
        let start = bytes.len();
        if t.name.ends_with(".bias") {
            // Biases start at zero: give them values.
            for (j, x) in m.params[t.range()].iter_mut().enumerate() {
                *x = 0.01 * ((j % 7) as f32 - 3.0);
            }
        }
        for x in &mut m.params[t.range()] {
            let (bits, wide) = match kind {
                Half::Bf16 => {
                    let h = half::bf16::from_f32(*x);
                    (h.to_bits(), h.to_f32())
                }
                Half::F16 => {
                    let h = half::f16::from_f32(*x);
                    (h.to_bits(), h.to_f32())
                }
            };
            *x = wide;
            bytes.extend_from_slice(&bits.to_le_bytes());
        }
        ranges.push((t.name.clone(), start..bytes.len()));
    }
    (m, bytes, ranges)
}

fn half_model(
    cfg: &ModelConfig,
    kind: Half,
    bytes: Vec<u8>,
    ranges: &[(String, std::ops::Range<usize>)],
) -> Model {
    let m = Model::zeros(cfg).unwrap();
    let w = HalfWeights::new(&m.layout, kind, Arc::new(bytes), ranges, "test weights").unwrap();
    Model::from_half(cfg, w).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect()
}

/// Greedy continuations of a few prompts, decoded together.
fn greedy(m: &Model, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let packed = m.packed();
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| KvCache::new(m)).collect();
    let views: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    decode(&packed, &views, &mut caches, |_, l, out| {
        let t = glass_engine::argmax_token(l);
        Ok::<_, glass_engine::EngineError>(if out.len() + 1 >= n {
            DecodeStep::Last(t)
        } else {
            DecodeStep::Next(t)
        })
    })
    .unwrap()
}

#[test]
fn sixteen_bit_weights_give_the_bits_of_their_widened_f32_model_on_every_kernel() {
    for (c, name) in common::family_variants(cfg(NormKind::RmsNorm, false))
        .into_iter()
        .chain([(cfg(NormKind::LayerNorm, true), "layernorm tied")])
    {
        let (norm, tie) = (name, c.tie_embeddings);
        for kind in [Half::Bf16, Half::F16] {
            let c = c.clone();
            let (mut wide, bytes, ranges) = rounded(&c, kind);
            let mut narrow = half_model(&c, kind, bytes, &ranges);
            assert!(narrow.params.is_empty() && narrow.grads.is_empty());
            assert_eq!(narrow.weight_bytes(), wide.weight_bytes() / 2);
            let (batch, seq) = (3, 40);
            let inp = tokens(batch * seq, c.vocab_size, 3);
            let tgt = tokens(batch * seq, c.vocab_size, 4);
            let prompts: Vec<Vec<u32>> = (0..4)
                .map(|i| tokens(5 + 3 * i, c.vocab_size, 9 + i as u64))
                .collect();
            for kernel in kernels() {
                set_kernel(kernel).unwrap();
                let what = format!("{norm} tie={tie} {kind:?} {kernel:?}");
                let lw = wide.forward_logits(&inp, batch, seq).unwrap();
                let ln = narrow.forward_logits(&inp, batch, seq).unwrap();
                assert_eq!(bits(&lw), bits(&ln), "logits, {what}");
                let sw = wide.forward_losses(&inp, &tgt, batch, seq).unwrap();
                let sn = narrow.forward_losses(&inp, &tgt, batch, seq).unwrap();
                assert_eq!(bits(&sw), bits(&sn), "losses, {what}");
                // KV-cached, weights packed once (small models) and per product.
                let (mut cw, mut cn) = (KvCache::new(&wide), KvCache::new(&narrow));
                let kw = wide.forward_cached(&inp[..seq], &mut cw).unwrap();
                let kn = narrow.forward_cached(&inp[..seq], &mut cn).unwrap();
                assert_eq!(bits(&kw), bits(&kn), "cached, {what}");
                let (pw, pn) = (wide.packed(), narrow.packed());
                assert!(pn.is_packed());
                let (mut cw, mut cn) = (KvCache::new(&wide), KvCache::new(&narrow));
                let kw = pw.forward_cached(&inp[..seq], &mut cw).unwrap();
                let kn = pn.forward_cached(&inp[..seq], &mut cn).unwrap();
                assert_eq!(bits(&kw), bits(&kn), "cached packed, {what}");
                assert_eq!(
                    greedy(&wide, &prompts, 12),
                    greedy(&narrow, &prompts, 12),
                    "greedy, {what}"
                );
            }
            // A 16-bit model does not train.
            let err = narrow
                .forward_backward(&inp, &tgt, batch, seq, 1.0)
                .unwrap_err();
            assert!(err.to_string().contains("inference only"), "{err}");
        }
    }
}

#[test]
fn bad_sixteen_bit_tensors_are_refused_naming_the_tensor() {
    let c = cfg(NormKind::RmsNorm, false);
    let (_, bytes, ranges) = rounded(&c, Half::Bf16);
    let layout = Model::zeros(&c).unwrap().layout;
    let refuse = |bytes: Vec<u8>, ranges: &[(String, std::ops::Range<usize>)]| {
        HalfWeights::new(
            &layout,
            Half::Bf16,
            Arc::new(bytes),
            ranges,
            "w.safetensors",
        )
        .unwrap_err()
        .to_string()
    };
    // An infinite value in the second tensor.
    let mut b = bytes.clone();
    let at = ranges[1].1.start + 6;
    b[at..at + 2].copy_from_slice(&half::bf16::INFINITY.to_bits().to_le_bytes());
    let e = refuse(b, &ranges);
    assert!(
        e.contains("w.safetensors") && e.contains(&ranges[1].0) && e.contains("NaN or infinite"),
        "{e}"
    );
    // A missing tensor, and one of the wrong length.
    let e = refuse(bytes.clone(), &ranges[1..]);
    assert!(e.contains("no tensor") && e.contains(&ranges[0].0), "{e}");
    let mut short = ranges.clone();
    short[2].1.end -= 2;
    let e = refuse(bytes.clone(), &short);
    assert!(e.contains(&ranges[2].0) && e.contains("needs"), "{e}");
}
