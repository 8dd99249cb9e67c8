//! `glass demo`: the whole pipeline on the embedded default data, no downloads:
//! init → prepare (English, then English + code) → train a tiny model with checkpoints
//! → validation-loss curve → bundled evaluations on every checkpoint → where everything is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;

/// Documents of the bundled next-line cloze evaluated per checkpoint in the demo.
pub const DEMO_CLOZE_DOCS: usize = 120;
/// Passages of the bundled held-out perplexity task evaluated per checkpoint in the demo.
pub const DEMO_HELDOUT_DOCS: usize = 8;

/// Options of `glass demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Run directory (reused and resumed if it already holds the demo).
    #[arg(long, default_value = "runs/demo")]
    pub dir: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let run = a.dir.as_path();
    if !run.join("glass.toml").exists() {
        glass_run::init(run, "tiny")?;
        println!(
            "[1/5] created {}/glass.toml (tiny model, 2-stage curriculum on the embedded corpus)",
            run.display()
        );
    } else {
        println!("[1/5] reusing {}/glass.toml", run.display());
    }
    let opts = glass_data::PrepareOptions {
        progress: !a.quiet,
        ..Default::default()
    };
    let p = glass_data::prepare(run, &opts)?;
    println!(
        "[2/5] prepared data: {} chunks written, {} reused ({:.1}s)",
        p.chunks_written,
        p.chunks_reused,
        t0.elapsed().as_secs_f64()
    );
    let r = glass_run::train(
        run,
        &glass_run::TrainOptions {
            progress: !a.quiet,
            ..Default::default()
        },
    )?;
    println!(
        "[3/5] trained to step {}/{}: {} checkpoints ({:.1}s)",
        r.step,
        r.n_steps,
        glass_run::info(run)?.checkpoints.len(),
        t0.elapsed().as_secs_f64()
    );
    report(run)?;
    evaluate(run)?;
    crate::analysis::demo(run, a.quiet)?;
    next_steps(run);
    println!("demo finished in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Prints the validation-loss curve and where the artifacts are.
fn report(run: &Path) -> Result<()> {
    let info = glass_run::info(run)?;
    let pts: Vec<(u64, f64)> = info
        .checkpoints
        .iter()
        .filter_map(|c| c.val_loss.map(|v| (c.step, v)))
        .collect();
    println!("[4/5] held-out validation loss (nats/token) per checkpoint:");
    print!("{}", chart(&pts, 40));
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        println!(
            "validation loss {:.4} at step {} -> {:.4} at step {}",
            first.1, first.0, last.1, last.0
        );
    }
    Ok(())
}

/// Evaluates the bundled tasks on every checkpoint and prints the curves.
fn evaluate(run: &Path) -> Result<()> {
    let t0 = Instant::now();
    println!(
        "[5/5] evaluating every checkpoint on the held-out works: next-line cloze \
         ({DEMO_CLOZE_DOCS} questions, 4 choices) and bits per byte ({DEMO_HELDOUT_DOCS} passages)"
    );
    let mut results = Vec::new();
    for (task, limit) in [
        ("glass_cloze", DEMO_CLOZE_DOCS),
        ("glass_heldout", DEMO_HELDOUT_DOCS),
    ] {
        let opts = glass_eval::EvalOptions {
            checkpoints: glass_eval::CheckpointSel::All,
            tasks: vec![glass_eval::bundled::bundled(task).expect("bundled task")?],
            limit: Some(limit),
            num_fewshot: None,
            fewshot_seed: glass_eval::DEFAULT_FEWSHOT_SEED,
            force: false,
            log_samples: false,
            code: None,
        };
        // One line per (checkpoint, task) would drown the curve printed below.
        results.extend(crate::eval::evaluate(run, &opts, true)?);
    }
    println!("evaluated in {:.1}s", t0.elapsed().as_secs_f64());
    let metric = |k: u32, task: &str, m: &str| {
        results
            .iter()
            .find(|r| r.checkpoint == k && r.task == task)
            .and_then(|r| r.metrics.iter().find(|x| x.metric == m))
            .map(|x| x.value)
    };
    let mut ks: Vec<(u32, u64)> = results.iter().map(|r| (r.checkpoint, r.step)).collect();
    ks.sort();
    ks.dedup();
    let bpb: Vec<Option<f64>> = ks
        .iter()
        .map(|&(k, _)| metric(k, "glass_heldout", "bits_per_byte"))
        .collect();
    let (lo, hi) = bpb
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let span = (hi - lo).max(1e-9);
    println!(
        "  {:>11} {:>9} {:>9} {:>9}",
        "", "cloze acc", "acc_norm", "bits/byte"
    );
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    for (&(k, step), b) in ks.iter().zip(&bpb) {
        let bar = b.map_or(0, |v| 1 + ((v - lo) / span * 29.0).round() as usize);
        println!(
            "  step {step:>6} {:>9} {:>9} {:>9} {}",
            f(metric(k, "glass_cloze", "acc")),
            f(metric(k, "glass_cloze", "acc_norm")),
            f(*b),
            "#".repeat(bar)
        );
    }
    Ok(())
}

/// Where everything is and what to try next.
fn next_steps(run: &Path) {
    let Ok(info) = glass_run::info(run) else {
        return;
    };
    let d = run.display();
    println!("\nartifacts under {d}/:");
    println!("  glass.toml              the complete config");
    println!("  data/                   tokenizer, chunk files in training order, data manifest");
    println!(
        "  checkpoints/            {} checkpoints: weights, optimizer state, state.json",
        info.checkpoints.len()
    );
    println!("  manifest.json           sha256 of every checkpoint file");
    println!(
        "  metrics.sqlite          per-step loss/lr/grad-norm, validation loss, evals, events"
    );
    println!("  evals/                  per-checkpoint evaluation results (JSON)");
    println!("\nnext:");
    println!(
        "  glass data show {d} --step 100     exact rows (text, source, documents) of step 100"
    );
    println!("  glass info {d}                     checkpoints with hashes");
    println!(
        "  glass verify {d} --replay 5        recompute checkpoint 5 and prove it bit-identical"
    );
    println!("  glass metrics {d} --checkpoints    validation curve as CSV");
    println!("  glass metrics {d} --evals          evaluation curves per checkpoint");
    println!("  glass trace {d} --text \"...\"     which training steps held a text");
    println!("  glass eval {d} --tasks glass_cloze --num-fewshot 3 --checkpoints latest");
}

/// A horizontal bar per point, scaled between the minimum and maximum value.
fn chart(pts: &[(u64, f64)], width: usize) -> String {
    let (lo, hi) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let span = (hi - lo).max(1e-9);
    let mut s = String::new();
    for (step, v) in pts {
        let n = 1 + ((v - lo) / span * (width - 1) as f64).round() as usize;
        s.push_str(&format!("  step {step:>6} {v:>7.4} {}\n", "#".repeat(n)));
    }
    s
}
