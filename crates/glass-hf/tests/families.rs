//! The other suites' families against their references (folders and logits written by
//! tools/fixtures/make_family_fixtures.py: transformers' GPTNeoXForCausalLM,
//! OlmoForCausalLM and Olmo2ForCausalLM, and a PyTorch CrystalCoder reference written
//! from LLM360's modeling file): logits within 1e-4, identical greedy continuations
//! through the KV cache, weights-only imports computing the f32 import's bits, exports
//! that give back the source's tensors byte for byte, and training refused where Glass
//! has no backward pass. No Python needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

const FAMILIES: [&str; 4] = ["crystalcoder", "gpt_neox", "olmo", "olmo2"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

struct Reference {
    ids: Vec<u32>,
    logits: BTreeMap<String, Vec<f64>>,
    greedy: serde_json::Value,
}

fn reference() -> Reference {
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st
        .tensor("input_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let mut logits = BTreeMap::new();
    for (name, v) in st.tensors() {
        if let Some(f) = name.strip_prefix("logits.") {
            let vals = v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            logits.insert(f.to_string(), vals);
        }
    }
    let greedy =
        serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap();
    Reference {
        ids,
        logits,
        greedy,
    }
}

fn greedy(model: &glass_engine::Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = glass_engine::Sampler::new(glass_engine::SamplingConfig {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    });
    model.generate(prompt, n, &mut s, |_| true).unwrap()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn every_family_matches_its_reference_logits_and_greedy_tokens() {
    let r = reference();
    for fam in FAMILIES {
        let (mut model, _, info, _) = glass_hf::load_folder(&fixtures().join(fam)).unwrap();
        assert_eq!(info.family.model_type(), fam);
        let want = &r.logits[fam];
        let got = model.forward_logits(&r.ids, 2, 12).unwrap();
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0f64, f64::max);
        eprintln!("{fam}: max |Δ| {worst:.2e} (max |logit| {scale:.2})");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{fam}: logits differ from the reference by {worst:e}"
        );
        let g = &r.greedy[fam];
        let toks = greedy(&model, &u32s(&g["prompt"]), 8);
        assert_eq!(toks, u32s(&g["greedy"]), "{fam}: greedy continuation");
    }
}

#[test]
fn crystalcoder_config_maps_every_mup_knob() {
    let (_, _, info, _) = glass_hf::load_folder(&fixtures().join("crystalcoder")).unwrap();
    let c = info.cfg.unwrap();
    assert_eq!(c.norm, glass_engine::NormKind::LayerNorm);
    assert!(c.arch.linear_bias && c.tie_embeddings);
    assert_eq!(c.rotary_dim(), 4);
    assert_eq!(c.mup.embedding_multiplier, 3.5);
    assert_eq!(c.mup.output_logit_multiplier, (1.6f64 * 0.25) as f32);
    assert_eq!(c.mup.attention_scale, glass_engine::AttentionScale::InvD);
    assert_eq!(c.mup.lr_multipliers.hidden, 0.25);
    assert_eq!(c.mup.base_width, 8);
}

fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.shape().to_vec(), t.data().to_vec())))
        .collect()
}

#[test]
fn weights_only_imports_compute_the_same_bits_and_export_the_source_tensors_back() {
    let dir = tempfile::tempdir().unwrap();
    let wo = glass_hf::ImportOptions { weights_only: true };
    for fam in FAMILIES {
        let src = fixtures().join(fam);
        let (run_wo, run_full) = (dir.path().join(format!("{fam}-wo")), dir.path().join(fam));
        glass_hf::import_with(&src, &run_wo, &wo).unwrap();
        glass_hf::import(&src, &run_full).unwrap();
        let r = reference();
        let (mut a, _) = glass_run::load_model(&run_wo, None).unwrap();
        let (mut b, _) = glass_run::load_model(&run_full, None).unwrap();
        let la = a.forward_logits(&r.ids, 2, 12).unwrap();
        let lb = b.forward_logits(&r.ids, 2, 12).unwrap();
        assert!(
            la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{fam}: the weights-only run computes other bits than the f32 import"
        );
        // The run's glass.toml reads back as the imported config.
        let cfg = glass_run::config::RunConfig::load(&run_full).unwrap();
        assert_eq!(cfg.model, b.cfg, "{fam}: glass.toml");

        // Export gives back every source tensor, byte for byte, under its own name.
        let out = dir.path().join(format!("{fam}-export"));
        glass_hf::export(&run_wo, &out, &glass_hf::ExportOptions::default()).unwrap();
        let (want, got) = (
            tensors(&src.join("model.safetensors")),
            tensors(&out.join("model.safetensors")),
        );
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{fam}: tensor names"
        );
        for (name, t) in &want {
            assert!(
                got[name] == *t,
                "{fam}: {name} differs after the round trip"
            );
        }
        let cfg_out: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg_out["model_type"], fam);
        // The exported folder imports again to the same model.
        let (back, _, _, _) = glass_hf::load_folder(&out).unwrap();
        assert_eq!(back.cfg, b.cfg, "{fam}: config round trip");
        assert_eq!(back.params, b.params, "{fam}: weights round trip");
    }
}

#[test]
fn crystalcoder_trains_and_the_forward_only_families_refuse_clearly() {
    let r = reference();
    let (mut m, _, _, _) = glass_hf::load_folder(&fixtures().join("crystalcoder")).unwrap();
    let t: Vec<u32> = r.ids.iter().map(|x| (x + 1) % 300).collect();
    m.zero_grads();
    m.forward_backward(&r.ids, &t, 2, 12, 1.0 / 24.0).unwrap();
    let lay = m.layout.clone();
    let bias = lay
        .get("model.layers.0.self_attn.q_proj.bias")
        .expect("q bias");
    assert!(m.grads[bias.range()].iter().any(|g| *g != 0.0));
    for fam in ["gpt_neox", "olmo", "olmo2"] {
        let (mut m, _, _, _) = glass_hf::load_folder(&fixtures().join(fam)).unwrap();
        let e = m
            .forward_backward(&r.ids, &t, 2, 12, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("forward only"), "{fam}: {e}");
    }
}

#[test]
fn family_configs_that_glass_cannot_honour_are_refused_by_name() {
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("gpt_neox/config.json")).unwrap())
            .unwrap();
    for (key, val, needle) in [
        ("hidden_act", serde_json::json!("relu"), "hidden_act"),
        (
            "tie_word_embeddings",
            serde_json::json!(true),
            "tie_word_embeddings",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "linear", "factor": 2.0}),
            "rope_type",
        ),
    ] {
        let mut v = base.clone();
        v[key] = val;
        let e = glass_hf::hf_config::from_hf(&v, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
    let crystal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("crystalcoder/config.json")).unwrap(),
    )
    .unwrap();
    for (key, val, needle) in [
        (
            "position_embedding_type",
            serde_json::json!("alibi"),
            "position_embedding_type",
        ),
        (
            "activation_function",
            serde_json::json!("gelu_new"),
            "activation_function",
        ),
        ("rotary_dim", serde_json::json!(3), "rotary_dim"),
    ] {
        let mut v = crystal.clone();
        v[key] = val;
        let e = glass_hf::hf_config::from_hf(&v, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
}

/// `src` with its weights rounded to bf16 (config `torch_dtype` to match), in `dst`.
fn bf16_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["torch_dtype"] = "bfloat16".into();
    cfg["dtype"] = "bfloat16".into();
    std::fs::write(dst.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let t = tensors(&src.join("model.safetensors"));
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .into_iter()
        .map(|(n, (shape, b))| {
            let v: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|c| {
                    half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap()))
                        .to_bits()
                        .to_le_bytes()
                })
                .collect();
            (n, shape, v)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dst.join("model.safetensors")).unwrap();
}

#[test]
fn bf16_folders_of_every_family_import_in_place_with_the_widened_bits() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference();
    for fam in FAMILIES {
        let src = dir.path().join(format!("{fam}-bf16"));
        bf16_copy(&fixtures().join(fam), &src);
        let (wo, full) = (dir.path().join(format!("{fam}-wo")), dir.path().join(fam));
        let rep = glass_hf::import_with(&src, &wo, &glass_hf::ImportOptions { weights_only: true })
            .unwrap();
        assert_eq!(rep.checkpoint_dtype, "bf16", "{fam}");
        glass_hf::import(&src, &full).unwrap();
        let (mut a, _) = glass_run::load_model(&wo, None).unwrap();
        assert!(a.half_weights().is_some(), "{fam}: kept in bf16");
        let (mut b, _) = glass_run::load_model(&full, None).unwrap();
        let la = a.forward_logits(&r.ids, 2, 12).unwrap();
        let lb = b.forward_logits(&r.ids, 2, 12).unwrap();
        assert!(
            la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{fam}: bf16 in place computes other bits than the widened f32 import"
        );
        // And bf16 exports back to the same bytes.
        let out = dir.path().join(format!("{fam}-out"));
        glass_hf::export(&wo, &out, &glass_hf::ExportOptions::default()).unwrap();
        assert!(
            tensors(&out.join("model.safetensors")) == tensors(&src.join("model.safetensors")),
            "{fam}: bf16 round trip"
        );
    }
}

fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    st.tensor(name)
        .unwrap_or_else(|_| panic!("reference lacks {name}"))
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn inspection_matches_the_references_hidden_states_and_attentions() {
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let r = reference();
    let seq = &r.ids[..12];
    for fam in FAMILIES {
        let (model, _, _, _) = glass_hf::load_folder(&fixtures().join(fam)).unwrap();
        let (h, n) = (model.cfg.n_heads, seq.len());
        let mut worst = (0.0f64, 0.0f64);
        let mut last = Vec::new();
        let pm = model.packed();
        let logits = pm
            .forward_probed(seq, &mut |b| {
                if b.layer == 0 {
                    let d = max_abs_diff(b.input, &f64s(&st, &format!("embed.{fam}")));
                    worst.0 = worst.0.max(d);
                }
                let want = f64s(&st, &format!("layer_out.{fam}.{}", b.layer));
                worst.0 = worst.0.max(max_abs_diff(b.output, &want));
                let att = f64s(&st, &format!("attn.{fam}.{}", b.layer));
                for head in 0..h {
                    let p = model.attention_probs(b.qkv, head);
                    worst.1 = worst
                        .1
                        .max(max_abs_diff(&p, &att[head * n * n..(head + 1) * n * n]));
                }
                last = b.output.to_vec();
            })
            .unwrap();
        eprintln!(
            "{fam}: hidden states max |Δ| {:.2e}, attention {:.2e}",
            worst.0, worst.1
        );
        assert!(
            worst.0 <= 1e-4,
            "{fam}: hidden states differ by {:e}",
            worst.0
        );
        assert!(
            worst.1 <= 1e-5,
            "{fam}: attention probabilities differ by {:e}",
            worst.1
        );
        // The logit lens of the last layer is the model's output, bit for bit; the
        // probed forward computes the plain forward's bits.
        let lens = pm.lens_logits(&last);
        assert!(
            lens.iter()
                .zip(&logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{fam}: lens"
        );
        let mut plain = model_clone(fam);
        let full = plain.forward_logits(seq, 1, n).unwrap();
        assert!(
            full.iter()
                .zip(&logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{fam}: probed"
        );
    }
}

fn model_clone(fam: &str) -> glass_engine::Model {
    glass_hf::load_folder(&fixtures().join(fam)).unwrap().0
}

#[test]
fn induction_and_previous_token_scores_match_the_references_attentions() {
    let r = reference();
    for fam in FAMILIES {
        let (model, _, _, _) = glass_hf::load_folder(&fixtures().join(fam)).unwrap();
        let s = glass_analysis::dynamics::DynamicsSettings::for_model(&model.cfg);
        assert_eq!(
            (s.batch, s.half_len, s.seed),
            (4, 32, 1234),
            "the fixture's batch"
        );
        let seqs = glass_analysis::dynamics::repeated_batch(model.cfg.vocab_size, &s);
        let got = glass_analysis::dynamics::head_scores(&model, &seqs).unwrap();
        let want = &r.greedy[fam]["head_scores"];
        let heads = model.cfg.n_heads;
        let mut worst = 0.0f64;
        for (kind, vals) in [
            ("induction", &got.induction),
            ("prev_token", &got.prev_token),
        ] {
            for (i, v) in vals.iter().enumerate() {
                let w = want[kind][i / heads][i % heads].as_f64().unwrap();
                worst = worst.max((v - w).abs());
            }
        }
        eprintln!("{fam}: head scores max |Δ| {worst:.2e}");
        assert!(worst <= 1e-5, "{fam}: head scores differ by {worst:e}");
    }
}

#[test]
fn crystalcoder_as_published_in_pytorch_bin_with_its_buffers_imports_to_the_same_model() {
    // pytorch_model.bin with each layer's bool causal mask, masked_bias and a copy of
    // the tied head, as LLM360 publishes CrystalCoder's checkpoints.
    let r = reference();
    let (mut a, stats, _, _) = glass_hf::load_folder(&fixtures().join("crystalcoder-bin")).unwrap();
    let (mut b, _, _, _) = glass_hf::load_folder(&fixtures().join("crystalcoder")).unwrap();
    assert_eq!(a.params, b.params);
    let la = a.forward_logits(&r.ids, 2, 12).unwrap();
    let lb = b.forward_logits(&r.ids, 2, 12).unwrap();
    assert!(la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(
        stats.skipped.iter().any(|s| s.contains("masked_bias")),
        "{:?}",
        stats.skipped
    );
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("wo");
    glass_hf::import_with(
        &fixtures().join("crystalcoder-bin"),
        &run,
        &glass_hf::ImportOptions { weights_only: true },
    )
    .unwrap();
}
