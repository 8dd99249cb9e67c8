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

const TOL: f64 = 1e-4;

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
    let e = common::rel_err(&logits, &f32s(&st, "logits"));
    assert!(e <= TOL, "{name}: logits rel err {e:.2e}");

    let scale = 1.0 / (b * s) as f32;
    model.zero_grads();
    let loss = model
        .forward_backward(&inputs, &targets, b, s, scale)
        .unwrap()
        * scale as f64;
    let want = f32s(&st, "loss")[0] as f64;
    assert!(
        (loss - want).abs() / want <= TOL,
        "{name}: loss {loss} vs {want}"
    );
    for t in layout.tensors() {
        let e = common::rel_err(
            &model.grads[t.range()],
            &f32s(&st, &format!("grad.{}", t.name)),
        );
        assert!(e <= TOL, "{name}: grad of {} rel err {e:.2e}", t.name);
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
            (loss - losses[step] as f64).abs() / losses[step] as f64 <= TOL,
            "{name}: step {step} loss"
        );
        let norm = opt.step(&mut model.params, &mut model.grads, &layout, o.lr, &mult);
        assert!(
            (norm - norms[step] as f64).abs() / norms[step] as f64 <= TOL,
            "{name}: step {step} grad norm {norm} vs {}",
            norms[step]
        );
    }
    for t in layout.tensors() {
        let want = f32s(&st, &format!("step3.{}", t.name));
        let e = common::rel_err(&model.params[t.range()], &want);
        assert!(
            e <= TOL,
            "{name}: weights of {} after {} AdamW steps, rel err {e:.2e}",
            t.name,
            meta.steps
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
