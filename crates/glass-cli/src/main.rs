//! `glass`: fully transparent LLM pretraining. A thin front end: every command parses
//! its arguments and calls into the library crates.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;

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
    /// Measure engine and data-pipeline speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
    }
}
