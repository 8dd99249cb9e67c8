//! `glass index`, `glass trace`, `glass analyze memorization` and the memorization
//! matrix of `glass metrics --memorization`: argument parsing and printing over
//! `glass_analysis`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use glass_analysis::memorization::{self, MemoEvent, MemoOptions, PairResult, Selection};
use glass_analysis::trace::{Rank, TraceOptions, TraceReport};
use glass_analysis::Index;
use glass_engine::{Sampler, SamplingConfig};

/// Options of `glass index`.
#[derive(Args)]
pub struct IndexArgs {
    /// Run directory (with prepared data).
    pub run: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

use glass_io::progress::bar;
use glass_run::Checkpoint;

/// Runs `glass index`.
pub fn index(a: IndexArgs) -> Result<()> {
    let b = bar(0, !a.quiet, "index [{bar:30}] {pos}/{len} shards {msg}");
    let r = glass_analysis::build_index(&a.run, &mut |name, done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
        b.set_message(name.to_string());
    })?;
    b.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "indexed {} training tokens and {} validation tokens of {}: {} shards built, {} reused; {:.2} MB of suffix arrays ({:.2} bytes/token) in {:.1}s",
        r.tokens,
        r.validation_tokens,
        a.run.display(),
        r.built.len(),
        r.reused.len(),
        r.bytes as f64 / 1e6,
        r.bytes as f64 / (r.tokens + r.validation_tokens).max(1) as f64,
        r.seconds
    );
    Ok(())
}

/// (index, step) of a checkpoint argument. A run over a suite's data numbers the
/// suite's imported checkpoints 0, 1, … in step order.
fn resolve(run: &Path, c: Checkpoint) -> Result<(u32, u64)> {
    if glass_data::external::is_external(run) {
        let k = match c {
            Checkpoint::Index(k) => Some(k),
            Checkpoint::Latest => None,
        };
        let e = glass_analysis::checkpoints::resolve_checkpoint(run, k)?;
        return Ok((e.index, e.step));
    }
    let m = glass_run::RunManifest::require(run)?;
    let e = c.resolve(&m)?;
    Ok((e.index, e.step))
}

/// Options of `glass trace`.
#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).args(["count", "text", "prompt"])))]
pub struct TraceArgs {
    /// Run directory (indexed with `glass index`).
    pub run: PathBuf,
    /// Count the exact occurrences of TEXT's tokens in the training stream.
    #[arg(long, value_name = "TEXT")]
    pub count: Option<String>,
    /// Find the maximal spans of TEXT that occur in training, with their steps and sources.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// Generate greedily from --checkpoint after PROMPT, then trace the output.
    #[arg(long, value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// Checkpoint (K or latest): counts occurrences before it; --prompt generates from it.
    #[arg(long)]
    pub checkpoint: Option<Checkpoint>,
    /// Shortest span, in tokens.
    #[arg(long, default_value_t = 8)]
    pub min_tokens: usize,
    /// Occurrences listed per span (all are counted).
    #[arg(long, default_value_t = 10)]
    pub max_occurrences: usize,
    /// Span order: length (longest first) or unigram (rarest first).
    #[arg(long, default_value = "length")]
    pub rank: Rank,
    /// Tokens generated with --prompt.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `glass trace`.
pub fn trace(a: TraceArgs) -> Result<()> {
    let tok = glass_analysis::trace::run_tokenizer(&a.run)?;
    let ckpt = match a.checkpoint {
        Some(c) => Some(resolve(&a.run, c)?),
        None if a.prompt.is_some() => Some(resolve(&a.run, Checkpoint::Latest)?),
        None => None,
    };
    if let Some(text) = &a.count {
        let ids = encode(&tok, text)?;
        let index = Index::open(&a.run)?;
        let count = index.count(&ids)?;
        let validation = index.count_validation(&ids)?;
        let before = match ckpt {
            Some((_, s)) => Some(index.count_before(&ids, s)?),
            None => None,
        };
        if a.json {
            let mut o = serde_json::json!({
                "text": text, "tokens": ids, "count": count, "validation_count": validation,
            });
            if let (Some((k, s)), Some(b)) = (ckpt, before) {
                o["checkpoint"] = k.into();
                o["checkpoint_step"] = s.into();
                o["count_before_checkpoint"] = b.into();
            }
            println!("{}", serde_json::to_string_pretty(&o)?);
        } else {
            println!("{} tokens {:?}", ids.len(), ids);
            print!("{count} occurrences in training, {validation} in validation rows");
            if let (Some((k, s)), Some(b)) = (ckpt, before) {
                print!("; {b} before checkpoint {k} (step {s})");
            }
            println!();
        }
        return Ok(());
    }
    // Open the index first: a missing or stale index is reported before any generation.
    let index = Index::open(&a.run)?;
    let (text, ids) = match (&a.text, &a.prompt) {
        (Some(t), _) => (t.clone(), encode(&tok, t)?),
        (None, Some(p)) => {
            let (k, _) = ckpt.expect("resolved above");
            let model = glass_analysis::checkpoints::resolve_checkpoint(&a.run, Some(k))?.load()?;
            let prompt = encode(&tok, p)?;
            let eos = tok.specials().eos;
            let mut sampler = Sampler::new(SamplingConfig {
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
            });
            let out = model.generate(&prompt, a.max_tokens, &mut sampler, |t| t != eos)?;
            let out: Vec<u32> = out.into_iter().filter(|&t| t != eos).collect();
            if out.is_empty() {
                bail!("checkpoint {k} generated nothing after the prompt (end of text at once)");
            }
            (tok.decode(&out)?, out)
        }
        _ => unreachable!("clap requires one of --count, --text, --prompt"),
    };
    let opts = TraceOptions {
        min_tokens: a.min_tokens,
        max_occurrences: a.max_occurrences,
        rank: a.rank,
        checkpoint: ckpt,
    };
    let r = glass_analysis::trace::trace(&a.run, &index, &tok, &text, &ids, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_trace(&r, a.prompt.as_deref());
    }
    Ok(())
}

fn encode(tok: &glass_data::GlassTokenizer, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        bail!("the text is empty");
    }
    let ids = tok.encode(text)?;
    if ids.is_empty() {
        bail!("{text:?} encodes to no tokens with the run's tokenizer");
    }
    Ok(ids)
}

/// Prints a trace for people.
pub fn print_trace(r: &TraceReport, prompt: Option<&str>) {
    if let Some(p) = prompt {
        // The generated part in bold on a terminal; plain text into files and pipes.
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            println!("{p}\x1b[1m{}\x1b[0m", r.text);
        } else {
            println!("{p}{}", r.text);
        }
        println!();
    }
    let at = match (r.checkpoint, r.checkpoint_step) {
        (Some(k), Some(s)) => format!(" (checkpoint {k}, step {s})"),
        _ => String::new(),
    };
    println!(
        "{} tokens traced{at}: {} maximal span(s) of at least {} tokens occur in training",
        r.tokens.len(),
        r.spans.len(),
        r.min_tokens
    );
    for (i, s) in r.spans.iter().enumerate() {
        let before = s
            .count_before_checkpoint
            .map_or(String::new(), |b| format!(", {b} before the checkpoint"));
        println!(
            "\n[{}] {} tokens, {} occurrence(s){before}, steps {}..={}, {} in validation rows, unigram log-prob {:.1}",
            i + 1,
            s.end - s.start,
            s.count,
            s.first_step,
            s.last_step,
            s.validation_count,
            s.unigram_logprob
        );
        println!("    {:?}", s.text);
        for o in &s.occurrences {
            println!(
                "    step {} slot {} (row {}, offset {}): {} doc {} {} bytes {}..{}",
                o.step,
                o.slot,
                o.row,
                o.offset,
                o.source,
                o.doc,
                o.doc_id,
                o.doc_bytes[0],
                o.doc_bytes[1]
            );
            println!(
                "        …{}[{}]{}…",
                o.before.replace('\n', " "),
                o.text.replace('\n', " "),
                o.after.replace('\n', " ")
            );
        }
        if (s.occurrences.len() as u64) < s.count {
            println!("    … {} more", s.count - s.occurrences.len() as u64);
        }
    }
}

/// What to analyse.
#[derive(Subcommand)]
pub enum AnalyzeCommand {
    /// How much of each data chunk every checkpoint reproduces verbatim (Analysis360).
    Memorization(MemoArgs),
    /// Inside the model across checkpoints: induction and previous-token scores per head,
    /// held-out loss per data source, weight and update norms per layer (stored in
    /// metrics.sqlite; under mpirun the checkpoints are split over the ranks).
    Dynamics(DynamicsArgs),
}

/// Options of `glass analyze dynamics`.
#[derive(Args)]
pub struct DynamicsArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoints: all, latest, or K,K2,...
    #[arg(long, default_value = "all")]
    pub checkpoints: Selection,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `glass analyze memorization`.
#[derive(Args)]
pub struct MemoArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoints: all, latest, or K,K2,...
    #[arg(long, default_value = "all")]
    pub checkpoints: Selection,
    /// Chunks: all, latest, or C,C2,...
    #[arg(long, default_value = "all")]
    pub chunks: Selection,
    /// Rows per chunk (evenly spaced: rows ⌊j·n/samples⌋).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Prompt tokens (the row's first tokens).
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    /// Continuation tokens generated and compared.
    #[arg(long, default_value_t = 32)]
    pub continuation_tokens: usize,
    /// Keep per-row results (row, matching tokens, 0/1 vector) in the result JSON.
    #[arg(long)]
    pub log_samples: bool,
    /// Recompute pairs already stored with the same settings.
    #[arg(long)]
    pub force: bool,
    /// Join each row with the index: occurrences of its continuation before the checkpoint.
    #[arg(long)]
    pub with_exposure: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `glass analyze ...`.
pub fn analyze(cmd: AnalyzeCommand) -> Result<()> {
    match cmd {
        AnalyzeCommand::Memorization(a) => {
            let opts = MemoOptions {
                checkpoints: a.checkpoints,
                chunks: a.chunks,
                samples: a.samples,
                prompt_tokens: a.prompt_tokens,
                continuation_tokens: a.continuation_tokens,
                log_samples: a.log_samples,
                force: a.force,
                with_exposure: a.with_exposure,
            };
            // Under mpirun/srun the (checkpoint, chunk) pairs are split over the ranks;
            // rank 0 stores and prints the results, identical to one process's.
            let comm = crate::world::world("analyze memorization")?;
            let quiet = a.quiet || comm.rank() != 0;
            let r = crate::world::or_abort(
                &*comm,
                memorize_on(&a.run, &opts, !quiet && !a.json, !quiet, &*comm),
            )?;
            if comm.rank() != 0 {
                return Ok(());
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_matrix(&a.run, &r);
            }
            Ok(())
        }
        AnalyzeCommand::Dynamics(a) => {
            // Under mpirun/srun the checkpoints are split over the ranks; rank 0 stores
            // and prints the results, identical to one process's.
            let comm = crate::world::world("analyze dynamics")?;
            let quiet = a.quiet || comm.rank() != 0;
            let r = crate::world::or_abort(
                &*comm,
                glass_analysis::dynamics::analyze_dynamics_on(
                    &a.run,
                    &a.checkpoints,
                    &mut |m| {
                        if !quiet {
                            eprintln!("{m}");
                        }
                    },
                    &*comm,
                )
                .map_err(anyhow::Error::from),
            )?;
            if comm.rank() != 0 {
                return Ok(());
            }
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let rows: Vec<_> = r.iter().flat_map(|c| c.rows.clone()).collect();
                print_dynamics(&rows);
            }
            Ok(())
        }
    }
}

/// Prints dynamics rows: per checkpoint, the strongest induction and previous-token
/// heads, each source's held-out loss, and the per-layer weight norm, update norm and
/// cosine.
pub fn print_dynamics(rows: &[glass_run::metrics::DynamicsRow]) {
    let mut ks: Vec<u32> = rows.iter().map(|r| r.checkpoint).collect();
    ks.dedup();
    for k in ks {
        let of = |kind: &str| -> Vec<&glass_run::metrics::DynamicsRow> {
            rows.iter()
                .filter(|r| r.checkpoint == k && r.kind == kind)
                .collect()
        };
        let best = |kind: &str| {
            of(kind)
                .into_iter()
                .max_by(|a, b| a.value.total_cmp(&b.value))
                .map_or("—".to_string(), |r| format!("{} {:.3}", r.name, r.value))
        };
        println!(
            "checkpoint {k}: top induction head {}, top previous-token head {}",
            best("induction"),
            best("prev_token")
        );
        let nats = of("source_nats_per_token");
        let bpb = of("source_bits_per_byte");
        for n in &nats {
            let b = bpb.iter().find(|r| r.name == n.name);
            println!(
                "  held-out {:<14} {:>8.4} nats/token  {:>8} bits/byte",
                n.name,
                n.value,
                b.map_or("—".into(), |r| format!("{:.4}", r.value))
            );
        }
        let norms = of("weight_norm");
        let upd = of("update_norm");
        let cos = of("update_cosine");
        for n in norms {
            let u = upd.iter().find(|r| r.name == n.name);
            let c = cos.iter().find(|r| r.name == n.name);
            println!(
                "  {:<12} |W| {:>10.4}  |ΔW| {:>10}  cos(W, W_prev) {:>8}",
                n.name,
                n.value,
                u.map_or("—".into(), |r| format!("{:.4}", r.value)),
                c.map_or("—".into(), |r| format!("{:.5}", r.value))
            );
        }
    }
}

/// Runs the memorization analysis with a progress bar and one line per pair.
pub fn memorize(
    run: &Path,
    opts: &MemoOptions,
    lines: bool,
    progress: bool,
) -> Result<Vec<PairResult>> {
    memorize_on(run, opts, lines, progress, &glass_dist::Solo)
}

/// [`memorize`] as one rank of `comm` (`glass analyze memorization` under mpirun).
pub fn memorize_on(
    run: &Path,
    opts: &MemoOptions,
    lines: bool,
    progress: bool,
    comm: &dyn glass_dist::Collective,
) -> Result<Vec<PairResult>> {
    let b = bar(
        0,
        progress,
        "memorization ckpt {prefix} [{bar:30}] {pos}/{len} rows {per_sec} ETA {eta}",
    );
    let r = memorization::analyze_on(
        run,
        opts,
        &mut |e| match e {
            MemoEvent::Start {
                checkpoint,
                chunk,
                rows,
            } => {
                b.reset();
                b.set_length(rows as u64);
                b.set_prefix(format!("{checkpoint} chunk {chunk}"));
            }
            MemoEvent::Rows(n) => b.set_position(n as u64),
            MemoEvent::Done(p, reused) => {
                if lines {
                    b.suspend(|| {
                    eprintln!(
                        "checkpoint {} (step {}) chunk {}: token_match {:.4} full_match {:.4} over {} rows{}",
                        p.checkpoint,
                        p.step,
                        p.chunk,
                        p.token_match,
                        p.full_match,
                        p.n,
                        if reused {
                            " (stored)".to_string()
                        } else {
                            format!(" ({:.1}s)", p.seconds)
                        }
                    )
                });
                }
            }
        },
        comm,
    )?;
    b.finish_and_clear();
    Ok(r)
}

/// Prints checkpoint × chunk matrices of full_match and token_match (fractions).
pub fn print_matrix(run: &Path, results: &[PairResult]) {
    let rows: Vec<(u32, u64, u64, f64, f64)> = results
        .iter()
        .map(|p| (p.checkpoint, p.step, p.chunk, p.token_match, p.full_match))
        .collect();
    matrix(run, &rows);
}

fn matrix(run: &Path, rows: &[(u32, u64, u64, f64, f64)]) {
    let mut cks: Vec<(u32, u64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    cks.sort();
    cks.dedup();
    let mut chs: Vec<u64> = rows.iter().map(|r| r.2).collect();
    chs.sort();
    chs.dedup();
    for (title, pick) in [
        ("full_match (fraction of rows reproduced exactly)", 4usize),
        ("token_match (mean fraction of positions reproduced)", 3),
    ] {
        println!("{title}; rows: checkpoint (step), columns: chunk");
        print!("{:>14}", "");
        for c in &chs {
            print!(" {:>6}", format!("c{c}"));
        }
        println!();
        for (k, s) in &cks {
            print!("{:>14}", format!("{k} ({s})"));
            for c in &chs {
                let v = rows.iter().find(|r| r.0 == *k && r.2 == *c).map(|r| {
                    if pick == 4 {
                        r.4
                    } else {
                        r.3
                    }
                });
                print!(" {:>6}", v.map_or("-".into(), |v| format!("{v:.3}")));
            }
            println!();
        }
    }
    println!(
        "(chunk C is trained on between checkpoints of steps C·steps_per_chunk and (C+1)·steps_per_chunk; results in {}/analysis/memorization/)",
        run.display()
    );
}

/// `glass metrics RUN --memorization`: the stored matrix.
pub fn metrics_matrix(run: &Path, json: bool) -> Result<()> {
    let rows = memorization::stored(run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no memorization results yet; run `glass analyze memorization {}`",
            run.display()
        );
        return Ok(());
    }
    let r: Vec<_> = rows
        .iter()
        .map(|r| (r.checkpoint, r.step, r.chunk, r.token_match, r.full_match))
        .collect();
    matrix(run, &r);
    Ok(())
}
