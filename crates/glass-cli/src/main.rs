//! `glass`: fully transparent LLM pretraining. A thin front end: every command parses
//! its arguments and calls into the library crates.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod analysis;
mod bench;
mod contamination;
mod data;
mod demo;
mod eval;
mod generate;
mod hf;
mod inspect;
mod release;
mod run_cmds;
mod serve;
mod suites;
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
    /// Create a run directory with a complete, commented glass.toml (--from: a branch's,
    /// the parent's config with a comment saying what an experiment may change).
    Init {
        /// Run directory to create.
        run: PathBuf,
        /// Model preset (tiny, small, amber-7b, crystalcoder-7b).
        #[arg(long, default_value = "tiny", conflicts_with = "from")]
        preset: String,
        /// Branch: copy the config of this run.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Checkpoint of --from to branch at: an index or `latest` (default).
        #[arg(long, requires = "from")]
        checkpoint: Option<glass_run::Checkpoint>,
    },
    /// Prepare, inspect and verify a run's training data.
    #[command(subcommand)]
    Data(data::DataCommand),
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
    /// Compare two runs from their common checkpoint: losses, evals, memorization, data.
    Diff(run_cmds::DiffArgs),
    /// Re-hash every file against the manifests; --replay K recomputes checkpoint K.
    Verify {
        /// Run directory.
        run: PathBuf,
        /// Recompute the interval from checkpoint K-1 to K and prove it bit-identical
        /// (K: an index or `latest`).
        #[arg(long, value_name = "K")]
        replay: Option<glass_run::Checkpoint>,
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
    /// Look inside checkpoints on one sequence: logit lens, attention, saved activations.
    Inspect(inspect::InspectArgs),
    /// Write a checkpoint in another ecosystem's format (`export hf`).
    #[command(subcommand)]
    Export(hf::ExportCommand),
    /// Create a run from another ecosystem's model folder (`import hf`).
    #[command(subcommand)]
    Import(hf::ImportCommand),
    /// Build the suffix-array index of a run's training tokens (for `glass trace`).
    Index(analysis::IndexArgs),
    /// Count a text in the training stream, or trace its spans to the steps that held them.
    Trace(analysis::TraceArgs),
    /// Analyse checkpoints against the training data (`analyze memorization`).
    #[command(subcommand)]
    Analyze(analysis::AnalyzeCommand),
    /// Publish a run as a release: transformers checkpoints, JSONL training rows, metrics, card, manifest.
    Release(release::ReleaseArgs),
    /// A read-only web dashboard over runs: curves, evaluations, checkpoints, data, trace.
    Serve(serve::ServeArgs),
    /// Measure engine and data-pipeline speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Lets every subcommand's options take values that start with `-` and a digit.
fn allow_negative_numbers(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.iter().fold(cmd.allow_negative_numbers(true), |c, n| {
        c.mut_subcommand(n, allow_negative_numbers)
    })
}

/// A negative number given to an option that counts something gets one plain line
/// instead of the integer parser's "invalid digit found in string".
fn plain_negative(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation {
        if let (Some(ContextValue::String(arg)), Some(ContextValue::String(val))) = (
            e.get(ContextKind::InvalidArg),
            e.get(ContextKind::InvalidValue),
        ) {
            if val.starts_with('-') && val[1..].parse::<f64>().is_ok() {
                let arg = arg.split_whitespace().next().unwrap_or(arg);
                if arg.contains("checkpoint") || arg == "--replay" {
                    eprintln!(
                        "error: {arg} takes a checkpoint index K >= 0 or `latest`, not {val}"
                    );
                } else {
                    eprintln!("error: {arg} takes a number >= 0, not {val}");
                }
                std::process::exit(2);
            }
        }
    }
    e.exit()
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
    use clap::{CommandFactory, FromArgMatches};
    // Negative numbers reach the value parsers (a plain "must be >= 0" message) instead
    // of clap's "unexpected argument '-1'" with its `-- -1` tip.
    let cmd = allow_negative_numbers(Cli::command());
    let matches = cmd.try_get_matches().unwrap_or_else(|e| plain_negative(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Refuse a bad GLASS_KERNEL before any work starts (all kernels give the same bits).
    glass_engine::gemm::init_from_env()?;
    if let Some(t) = cli.threads {
        let cap = glass_io::disk::max_threads();
        if t > cap {
            eprintln!("--threads {t}: using {cap} (4 per core); more only costs memory");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.clamp(1, cap))
            .build_global()?;
    }
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Init {
            run,
            from: Some(parent),
            checkpoint,
            ..
        } => {
            let k = checkpoint.map(|c| c.index_in(&parent)).transpose()?;
            let (k, step) = glass_run::init_branch(&run, &parent, k)?;
            println!(
                "created {}/glass.toml (the config of {} at checkpoint {k}, step {step}); edit what the experiment changes, then: glass train {0} --from {1} --checkpoint {k} --continue",
                run.display(),
                parent.display()
            );
            Ok(())
        }
        Command::Init { run, preset, .. } => {
            glass_run::init(&run, &preset)?;
            println!(
                "created {}/glass.toml; next: glass data prepare {0} && glass train {0}",
                run.display()
            );
            Ok(())
        }
        Command::Data(cmd) => data::run(cmd),
        Command::Train(a) => run_cmds::train(a),
        Command::Info { run, json } => run_cmds::info(&run, json),
        Command::Diff(a) => run_cmds::diff(a),
        Command::Verify { run, replay, json } if glass_release::is_release(&run) => {
            release::verify(&run, replay, json)
        }
        Command::Verify { run, replay, json } => run_cmds::verify(&run, replay, json),
        Command::Metrics(a) => run_cmds::metrics(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Export(cmd) => hf::export(cmd),
        Command::Import(cmd) => hf::import(cmd),
        Command::Release(a) => release::release(a),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(a) => serve::run(a),
        Command::Index(a) => analysis::index(a),
        Command::Trace(a) => analysis::trace(a),
        Command::Analyze(cmd) => analysis::analyze(cmd),
    }
}
