//! Parity with PyTorch / transformers: golden fixtures written by
//! `tools/fixtures/make_fixtures.py` (float64 reference, stored as f32) hold weights,
//! inputs, logits, loss, every gradient and the weights after 3 AdamW steps.

mod common;

use std::path::PathBuf;

use glass_engine::{AdamW, AdamWConfig, Model, ModelConfig};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

#[derive(Deserialize)]
struct Optim {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_clip: f32,
}

#[derive(Deserialize)]
struct Meta {
    model: ModelConfig,
    optim: Optim,
    batch: usize,
    seq_len: usize,
    steps: usize,
}

/// Relative tolerance per element (float32 engine against a float64 reference).
const RTOL: f64 = 1e-4;
/// Absolute floor per element, as a fraction of the tensor's largest |value|: elements that
/// cancel to nearly zero carry the rounding of the terms that cancelled, not of their own
/// magnitude.
const FLOOR: f64 = 1e-5;
/// Gradients pass through one more chain of products than the forward pass.
const GRAD_RTOL: f64 = 5e-4;
const GRAD_FLOOR: f64 = 1e-5;

/// Every element within `rtol·|want| + floor·max|want|`; on failure names the worst one.
/// Returns the worst ratio |Δ| / bound (≤ 1 passes).
fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64, floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    let atol = floor * scale.max(1e-30);
    let (mut worst, mut at) = (0.0f64, 0usize);
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        let (x, y) = (*x as f64, *y as f64);
        let ratio = (x - y).abs() / (rtol * y.abs() + atol);
        // A NaN ratio (NaN output) must win, so it is reported.
        if ratio.is_nan() || ratio > worst {
            (worst, at) = (ratio, i);
        }
    }
    assert!(
        worst <= 1.0 && !worst.is_nan(),
        "{what}: element {at} is {} but the reference is {} (|Δ| is {worst:.2} × the \
         allowed {rtol:e}·|ref| + {atol:.2e})",
        got[at],
        want[at]
    );
    worst
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture lacks {name}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn ids(st: &SafeTensors, name: &str) -> Vec<u32> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

fn check(name: &str) {
    // Four threads whatever the machine, so products above the single-thread threshold
    // take the tiled parallel GEMM path.
    rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(|| check_in_pool(name));
}

fn check_in_pool(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut model = Model::zeros(&meta.model).unwrap();
    let layout = model.layout.clone();
    for t in layout.tensors() {
        let view = st
            .tensor(&t.name)
            .unwrap_or_else(|_| panic!("{name}: fixture lacks {}", t.name));
        assert_eq!(
            view.shape(),
            t.shape.as_slice(),
            "{name}: shape of {}",
            t.name
        );
        model.params[t.range()].copy_from_slice(&f32s(&st, &t.name));
    }
    let (b, s) = (meta.batch, meta.seq_len);
    let inputs = ids(&st, "input_ids");
    let targets = ids(&st, "targets");

    let logits = model.forward_logits(&inputs, b, s).unwrap();
    let mut worst = assert_close(
        &format!("{name}: logits"),
        &logits,
        &f32s(&st, "logits"),
        RTOL,
        FLOOR,
    );

    let scale = 1.0 / (b * s) as f32;
    model.zero_grads();
    let loss = model
        .forward_backward(&inputs, &targets, b, s, scale)
        .unwrap()
        * scale as f64;
    let want = f32s(&st, "loss")[0] as f64;
    assert!(
        (loss - want).abs() / want <= RTOL,
        "{name}: loss {loss} vs {want}"
    );
    for t in layout.tensors() {
        worst = worst.max(assert_close(
            &format!("{name}: grad of {}", t.name),
            &model.grads[t.range()],
            &f32s(&st, &format!("grad.{}", t.name)),
            GRAD_RTOL,
            GRAD_FLOOR,
        ));
    }
    eprintln!("{name}: worst element at {worst:.3} of its tolerance");
    if meta.steps == 0 {
        return;
    }

    let o = &meta.optim;
    let cfg = AdamWConfig {
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        grad_clip: o.grad_clip,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(cfg, model.params.len());
    let norms = f32s(&st, "grad_norm");
    let losses = f32s(&st, "loss_per_step");
    let mult = meta.model.mup.lr_multipliers;
    for step in 0..meta.steps {
        model.zero_grads();
        let loss = model
            .forward_backward(&inputs, &targets, b, s, scale)
            .unwrap()
            * scale as f64;
        assert!(
            (loss - losses[step] as f64).abs() / losses[step] as f64 <= RTOL,
            "{name}: step {step} loss"
        );
        let norm = opt.step(&mut model.params, &mut model.grads, &layout, o.lr, &mult);
        assert!(
            (norm - norms[step] as f64).abs() / norms[step] as f64 <= RTOL,
            "{name}: step {step} grad norm {norm} vs {}",
            norms[step]
        );
    }
    for t in layout.tensors() {
        // An Adam step moves a weight by about lr·multiplier whatever its size, so the
        // weights after the steps are compared with an absolute floor of 1e-5.
        let want = f32s(&st, &format!("step{}.{}", meta.steps, t.name));
        let got = &model.params[t.range()];
        let (i, d) = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .enumerate()
            .fold((0, 0.0f64), |b, (i, d)| if d > b.1 { (i, d) } else { b });
        assert!(
            d <= 1e-5 + RTOL * (want[i] as f64).abs(),
            "{name}: weight {i} of {} after {} AdamW steps is {} vs {}",
            t.name,
            meta.steps,
            got[i],
            want[i]
        );
    }
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn grouped_query_attention_matches_transformers() {
    check("gqa");
}

#[test]
fn tied_embeddings_match_transformers() {
    check("tied");
}

#[test]
fn crystalcoder_layernorm_partial_rotary_mup_matches_pytorch() {
    check("crystal");
}

#[test]
fn mup_scales_match_pytorch() {
    check("mup");
}

/// MQA (one KV head) at batch 1 over 300 positions: five 64-query attention blocks, the
/// last one partial; every projection is large enough for the tiled GEMM path.
#[test]
fn long_multi_query_attention_matches_transformers() {
    check("long_mqa");
}

/// GQA with LayerNorm, partial rotary and muP multipliers, batch 2 × 256 positions.
#[test]
fn long_grouped_query_crystal_matches_pytorch() {
    check("long_gqa");
}

#[derive(Deserialize)]
struct InitStat {
    std: f64,
    mean: f64,
    numel: usize,
}

#[derive(Deserialize)]
struct InitFixture {
    model: ModelConfig,
    seed: u64,
    tensors: std::collections::BTreeMap<String, InitStat>,
}

/// muP initialisation against CrystalCoder's initialiser run by PyTorch. The two draw from
/// different generators (ChaCha8 and torch's), so the bits differ and the check is
/// statistical: each tensor's sample std and mean must agree within 6 standard errors of
/// the difference of two independent samples.
#[test]
fn mup_initialisation_matches_crystalcoder_std_per_tensor() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fx: InitFixture =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mup_init.json")).unwrap()).unwrap();
    let model = Model::new(&fx.model, fx.seed).unwrap();
    let mut seen = 0;
    for t in model.layout.tensors() {
        let Some(want) = fx.tensors.get(&t.name) else {
            assert!(t.name.contains("norm"), "fixture lacks {}", t.name);
            continue;
        };
        seen += 1;
        let x = &model.params[t.range()];
        assert_eq!(x.len(), want.numel, "{}", t.name);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let rel = (std - want.std).abs() / want.std;
        assert!(
            rel <= 6.0 / n.sqrt(),
            "{}: std {std:.6} vs CrystalCoder's {:.6}",
            t.name,
            want.std
        );
        assert!(
            (mean - want.mean).abs() <= 6.0 * want.std * (2.0 / n).sqrt(),
            "{}: mean {mean:.2e} vs {:.2e}",
            t.name,
            want.mean
        );
    }
    assert_eq!(seen, fx.tensors.len());
}
