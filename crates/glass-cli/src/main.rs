//! `glass`: fully transparent LLM pretraining. A thin front end: every command parses
//! its arguments and calls into the library crates.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_dist;
mod demo;
mod eval;
mod generate;
mod hf;
mod run_cmds;
mod world;

/// Fully transparent LLM pretraining: every token, checkpoint and metric of a run,
/// recorded and verifiable.
#[derive(Parser)]
#[command(name = "glass", version, about, propagate_version = true)]
struct Cli {
    /// Worker threads (default: all cores). Results are bit-identical for any value.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on the embedded default data: init, prepare, train, report.
    Demo(demo::DemoArgs),
    /// Create a run directory with a complete, commented glass.toml.
    Init {
        /// Run directory to create.
        run: PathBuf,
        /// Model preset (tiny, small, amber-7b, crystalcoder-7b).
        #[arg(long, default_value = "tiny")]
        preset: String,
    },
    /// Prepare, inspect and verify a run's training data.
    #[command(subcommand)]
    Data(glass_data::cli::DataCommand),
    /// Train a run (resumes from its last checkpoint; --from branches from another run).
    Train(run_cmds::TrainArgs),
    /// List a run's checkpoints with step, tokens, validation loss and hashes.
    Info {
        /// Run directory.
        run: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every file against the manifests; --replay K recomputes checkpoint K.
    Verify {
        /// Run directory.
        run: PathBuf,
        /// Recompute the interval from checkpoint K-1 to K and prove it bit-identical.
        #[arg(long, value_name = "K")]
        replay: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's metrics (per step, per checkpoint, events).
    Metrics(run_cmds::MetricsArgs),
    /// Evaluate checkpoints on lm-evaluation-harness-compatible tasks; results go into the run.
    Eval(eval::EvalArgs),
    /// Continue a prompt from a checkpoint (KV cache; greedy or seeded sampling).
    Generate(generate::GenerateArgs),
    /// Write a checkpoint in another ecosystem's format (`export hf`).
    #[command(subcommand)]
    Export(hf::ExportCommand),
    /// Create a run from another ecosystem's model folder (`import hf`).
    #[command(subcommand)]
    Import(hf::ImportCommand),
    /// Measure engine and data-pipeline speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    // Die quietly on a closed pipe (`glass data show … | head`), like other Unix tools,
    // instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = real_main() {
        eprintln!("{}error: {e:#}", world::rank_label());
        world::abort_if_parallel();
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Init { run, preset } => {
            glass_run::init(&run, &preset)?;
            println!(
                "created {}/glass.toml; next: glass data prepare {0} && glass train {0}",
                run.display()
            );
            Ok(())
        }
        Command::Data(cmd) => glass_data::cli::run(cmd),
        Command::Train(a) => run_cmds::train(a),
        Command::Info { run, json } => run_cmds::info(&run, json),
        Command::Verify { run, replay, json } => run_cmds::verify(&run, replay, json),
        Command::Metrics(a) => run_cmds::metrics(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Export(cmd) => hf::export(cmd),
        Command::Import(cmd) => hf::import(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
