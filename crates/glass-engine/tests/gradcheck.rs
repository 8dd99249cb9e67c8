//! Finite-difference gradient check: for every parameter tensor, the analytic
//! directional derivative along a random direction must match a central difference.

mod common;

use glass_engine::{AttentionScale, Model, ModelConfig, NormKind};

fn check(cfg: &ModelConfig) {
    let (batch, seq) = (2, 9);
    let mut model = Model::new(cfg, 7).unwrap();
    // Larger weights than the 0.02 init so every nonlinearity is exercised.
    for (i, p) in model.params.iter_mut().enumerate() {
        *p *= 1.0 + 8.0 * (((i * 7919) % 13) as f32 / 13.0);
    }
    // Biases start at zero: give them values, so their forward path is exercised too.
    for t in model.layout.clone().tensors() {
        if t.name.ends_with(".bias") {
            for (j, p) in model.params[t.range()].iter_mut().enumerate() {
                *p = 0.1 * (((j * 31 + t.offset) % 17) as f32 / 8.0 - 1.0);
            }
        }
    }
    let inputs = common::tokens(batch * seq, cfg.vocab_size, 1);
    let targets = common::tokens(batch * seq, cfg.vocab_size, 2);
    let scale = 1.0 / (batch * seq) as f32;
    model.zero_grads();
    model
        .forward_backward(&inputs, &targets, batch, seq, scale)
        .unwrap();
    let grads = model.grads.clone();
    let base = model.params.clone();
    let loss_at = |m: &mut Model, p: &[f32]| -> f64 {
        m.params.copy_from_slice(p);
        m.forward_losses(&inputs, &targets, batch, seq)
            .unwrap()
            .iter()
            .map(|&l| l as f64)
            .sum::<f64>()
            * scale as f64
    };
    let mut failures = Vec::new();
    for (ti, t) in model.layout.clone().tensors().iter().enumerate() {
        let dir: Vec<f32> = common::tokens(t.len(), 2001, ti as u64 + 11)
            .iter()
            .map(|&x| x as f32 / 1000.0 - 1.0)
            .collect();
        let analytic: f64 = grads[t.range()]
            .iter()
            .zip(&dir)
            .map(|(g, u)| *g as f64 * *u as f64)
            .sum();
        let eps = 1e-3f32 / (dir.iter().map(|u| u * u).sum::<f32>().sqrt());
        let shifted = |sign: f32| {
            let mut p = base.clone();
            for (x, u) in p[t.range()].iter_mut().zip(&dir) {
                *x += sign * eps * u;
            }
            p
        };
        let (plus, minus) = (shifted(1.0), shifted(-1.0));
        let numeric =
            (loss_at(&mut model, &plus) - loss_at(&mut model, &minus)) / (2.0 * eps as f64);
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-1);
        eprintln!(
            "{}: analytic {analytic:.6e} vs numeric {numeric:.6e} (rel {err:.2e})",
            t.name
        );
        if err > 2e-2 {
            failures.push(t.name.clone());
        }
    }
    assert!(failures.is_empty(), "gradient mismatch in {failures:?}");
}

#[test]
fn rmsnorm_gqa_gradients_match_finite_differences() {
    check(&common::small_cfg());
}

#[test]
fn layernorm_partial_rotary_mup_tied_gradients_match_finite_differences() {
    let mut cfg = common::small_cfg();
    cfg.norm = NormKind::LayerNorm;
    cfg.rotary_fraction = 0.5;
    cfg.tie_embeddings = true;
    cfg.mup.embedding_multiplier = 3.0;
    cfg.mup.output_logit_multiplier = 0.4;
    cfg.mup.attention_scale = AttentionScale::InvD;
    check(&cfg);
}

#[test]
fn crystalcoder_linear_biases_gradients_match_finite_differences() {
    // CrystalCoder's block: LayerNorm, a bias on every linear layer, partial rotary, muP.
    let mut cfg = common::small_cfg();
    cfg.norm = NormKind::LayerNorm;
    cfg.rotary_fraction = 0.5;
    cfg.tie_embeddings = true;
    cfg.arch.linear_bias = true;
    cfg.mup.embedding_multiplier = 3.0;
    cfg.mup.output_logit_multiplier = 0.4;
    cfg.mup.attention_scale = AttentionScale::InvD;
    check(&cfg);
}

#[test]
fn long_sequences_cross_attention_blocks() {
    // seq > the attention query block, so the blocked backward's accumulation is tested.
    let cfg = common::small_cfg();
    let (batch, seq) = (1, 70);
    let mut model = Model::new(&cfg, 3).unwrap();
    let inputs = common::tokens(batch * seq, cfg.vocab_size, 5);
    let targets = common::tokens(batch * seq, cfg.vocab_size, 6);
    model.zero_grads();
    model
        .forward_backward(&inputs, &targets, batch, seq, 1.0)
        .unwrap();
    let g = model.grads.clone();
    let t = model
        .layout
        .get("model.layers.0.self_attn.q_proj.weight")
        .unwrap()
        .clone();
    let base = model.params.clone();
    let total = |m: &mut Model, p: &[f32]| {
        m.params.copy_from_slice(p);
        m.forward_losses(&inputs, &targets, batch, seq)
            .unwrap()
            .iter()
            .map(|&l| l as f64)
            .sum::<f64>()
    };
    // The loss is summed from f32 values, so one central difference carries quantisation
    // noise of ~ulp(loss)/eps; the median over three step sizes rejects an unlucky one.
    for idx in [t.offset, t.offset + 5, t.offset + t.len() - 1] {
        let mut nums: Vec<f64> = [5e-3f32, 1e-2, 2e-2]
            .iter()
            .map(|&eps| {
                let mut p = base.clone();
                p[idx] += eps;
                let lp = total(&mut model, &p);
                p[idx] -= 2.0 * eps;
                let lm = total(&mut model, &p);
                (lp - lm) / (2.0 * eps as f64)
            })
            .collect();
        nums.sort_by(f64::total_cmp);
        let num = nums[1];
        assert!(
            (num - g[idx] as f64).abs() < 2e-2 * (g[idx].abs() as f64).max(1e-2),
            "param {idx}: {num} vs {}",
            g[idx]
        );
    }
}
