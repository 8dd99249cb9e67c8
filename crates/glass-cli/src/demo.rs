//! `glass demo`: the whole pipeline on the embedded default data, no downloads:
//! init → prepare (English, then English + code) → train a tiny model with checkpoints
//! → validation-loss curve → where everything is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;

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
            "[1/4] created {}/glass.toml (tiny model, 2-stage curriculum on the embedded corpus)",
            run.display()
        );
    } else {
        println!("[1/4] reusing {}/glass.toml", run.display());
    }
    let opts = glass_data::PrepareOptions {
        progress: !a.quiet,
        ..Default::default()
    };
    let p = glass_data::prepare(run, &opts)?;
    println!(
        "[2/4] prepared data: {} chunks written, {} reused ({:.1}s)",
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
        "[3/4] trained to step {}/{}: {} checkpoints ({:.1}s)",
        r.step,
        r.n_steps,
        glass_run::info(run)?.checkpoints.len(),
        t0.elapsed().as_secs_f64()
    );
    report(run)?;
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
    println!("[4/4] held-out validation loss (nats/token) per checkpoint:");
    print!("{}", chart(&pts, 40));
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        println!(
            "validation loss {:.4} at step {} -> {:.4} at step {}",
            first.1, first.0, last.1, last.0
        );
    }
    let d = run.display();
    println!("\nartifacts under {d}/:");
    println!("  glass.toml              the complete config");
    println!("  data/                   tokenizer, chunk files in training order, data manifest");
    println!(
        "  checkpoints/            {} checkpoints: weights, optimizer state, state.json",
        info.checkpoints.len()
    );
    println!("  manifest.json           sha256 of every checkpoint file");
    println!("  metrics.sqlite          per-step loss/lr/grad-norm, validation loss, events");
    println!("\nnext:");
    println!(
        "  glass data show {d} --step 100     exact rows (text, source, documents) of step 100"
    );
    println!("  glass info {d}                     checkpoints with hashes");
    println!(
        "  glass verify {d} --replay 5        recompute checkpoint 5 and prove it bit-identical"
    );
    println!("  glass metrics {d} --checkpoints    validation curve as CSV");
    Ok(())
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
