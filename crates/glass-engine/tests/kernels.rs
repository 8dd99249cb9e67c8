//! Every GEMM kernel this CPU supports trains to the same bits (the numerics contract of
//! `glass_engine::gemm`): a plain LLaMA config and a GQA + LayerNorm + partial-rotary +
//! muP config, a few AdamW steps each, on 1 and 3 threads.
//!
//! Shapes are chosen so products take the packed, tiled and threaded paths: widths over
//! the micro-tile sizes, reductions over one k-block (KC = 256: the MLP down projection
//! has k = 272, weight gradients k = batch·seq = 280).
//!
//! Its own test binary, because the kernel choice is process-wide.

mod common;

use glass_engine::gemm::{set_kernel, Kernel};
use glass_engine::{AdamW, AdamWConfig, AttentionScale, Model, ModelConfig, NormKind};

fn llama() -> ModelConfig {
    ModelConfig {
        vocab_size: 300,
        d_model: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        ffn_hidden: 272,
        max_seq_len: 80,
        ..ModelConfig::preset("tiny").unwrap()
    }
}

fn crystal() -> ModelConfig {
    let mut cfg = ModelConfig {
        n_kv_heads: 2,
        norm: NormKind::LayerNorm,
        rotary_fraction: 0.25,
        tie_embeddings: true,
        ..llama()
    };
    cfg.mup.embedding_multiplier = 3.0;
    cfg.mup.output_logit_multiplier = 0.4;
    cfg.mup.attention_scale = AttentionScale::InvD;
    cfg.mup.lr_multipliers.hidden = 0.5;
    cfg
}

/// Trains 2 steps; returns the losses' and parameters' bits.
fn train(cfg: &ModelConfig, kernel: Kernel, threads: usize) -> (Vec<u32>, Vec<u32>) {
    set_kernel(kernel).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        cfg.validate().unwrap();
        let (batch, seq) = (4, 70);
        let mut model = Model::new(cfg, 11).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), model.params.len());
        let mut losses = Vec::new();
        for step in 0..2 {
            let rows = common::tokens(batch * (seq + 1), cfg.vocab_size, step);
            let s = model.train_step(&mut opt, &rows, seq, batch, 1e-3).unwrap();
            losses.push((s.loss as f32).to_bits());
        }
        (losses, model.params.iter().map(|x| x.to_bits()).collect())
    })
}

#[test]
fn every_kernel_trains_to_the_same_bits() {
    let kernels: Vec<Kernel> = Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect();
    eprintln!("kernels supported here: {kernels:?}");
    for (name, cfg) in [
        ("llama", llama()),
        ("gqa+layernorm+partial-rotary+mup", crystal()),
    ] {
        // The portable kernel (slow without hardware FMA) is the reference, once.
        let reference = train(&cfg, Kernel::Portable, 3);
        for &k in kernels.iter().filter(|&&k| k != Kernel::Portable) {
            for threads in [1, 3] {
                let (losses, params) = train(&cfg, k, threads);
                assert_eq!(
                    losses, reference.0,
                    "{name}: {k:?} × {threads} threads: losses differ"
                );
                let diff = params
                    .iter()
                    .zip(&reference.1)
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(diff, 0, "{name}: {k:?} × {threads} threads: {diff} parameters differ from the portable kernel");
            }
        }
    }
    set_kernel(Kernel::detect()).unwrap();
}

/// Prints an FNV-1a digest of the losses and parameters after training both configs with
/// the fastest kernel here. `.ci/cross-arch.sh` runs it natively and for aarch64 under
/// qemu and requires the same digest (the contract spans architectures).
#[test]
#[ignore = "run by .ci/cross-arch.sh"]
fn print_training_digest() {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for cfg in [llama(), crystal()] {
        let (losses, params) = train(&cfg, Kernel::detect(), 2);
        for x in losses.iter().chain(&params) {
            for byte in x.to_le_bytes() {
                h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    println!("TRAINING_DIGEST {h:016x} ({:?} kernel)", Kernel::detect());
}
