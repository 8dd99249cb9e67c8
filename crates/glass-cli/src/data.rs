//! `glass data …`: prepare, show, stats and verify over the `glass-data` library.

use std::path::PathBuf;

use anyhow::{bail, Context};

use glass_data::inspect::{show, stats};
use glass_data::manifest::verify;
use glass_data::prepare::{prepare, PrepareOptions, Shard};

/// `glass data …` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// Tokenize the sources and write the training-order chunks and manifest to RUN/data/.
    Prepare {
        /// Run directory holding glass.toml.
        run: PathBuf,
        /// Only tokenize shard i of N (a cluster job); a later plain `prepare` combines.
        #[arg(long, value_name = "i/N")]
        shard: Option<Shard>,
        /// Only train or load the tokenizer (run once before shard jobs).
        #[arg(long)]
        tokenizer_only: bool,
        /// Worker threads (default: all cores); never changes the output.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Print every row of a step's batch: decoded text, source, documents, token counts.
    Show {
        /// Run directory.
        run: PathBuf,
        /// Training step.
        #[arg(long)]
        step: u64,
        /// Data-parallel rank.
        #[arg(long, default_value_t = 0)]
        rank: usize,
        /// Data-parallel world size.
        #[arg(long, default_value_t = 1)]
        world_size: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per source and stage: documents, tokens, epochs, share; what deduplication removed.
    Stats {
        /// Run directory.
        run: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which benchmark items occur in the training rows (13-token overlap), per task,
    /// with the steps and documents that hold them; stored in RUN/analysis/.
    Contamination(crate::contamination::ContaminationArgs),
    /// Re-hash every data file and report any mismatch by file.
    Verify {
        /// Run directory.
        run: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `glass data` command, printing to stdout.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Prepare {
            run,
            shard,
            tokenizer_only,
            threads,
        } => {
            let benchmark = if shard.is_none() && !tokenizer_only {
                crate::contamination::decontaminate_items(&run)?
            } else {
                None
            };
            let opts = PrepareOptions {
                shard,
                tokenizer_only,
                threads,
                progress: true,
                benchmark,
            };
            let r = prepare(&run, &opts).with_context(|| format!("preparing {}", run.display()))?;
            if r.tokens_tokenized > 0 {
                println!(
                    "tokenized {} tokens from {:.1} MB in {:.1} s ({:.2} M tok/s, {:.1} MB/s)",
                    r.tokens_tokenized,
                    r.bytes_tokenized as f64 / 1e6,
                    r.tokenize_seconds,
                    r.tokens_tokenized as f64 / r.tokenize_seconds.max(1e-9) / 1e6,
                    r.bytes_tokenized as f64 / r.tokenize_seconds.max(1e-9) / 1e6
                );
            }
            if tokenizer_only {
                println!(
                    "tokenizer ready: {}",
                    run.join("data/tokenizer.json").display()
                );
            } else if let Some(s) = shard {
                println!(
                    "shard {}/{} tokenized; run `glass data prepare {}` to combine",
                    s.index,
                    s.count,
                    run.display()
                );
            } else {
                println!(
                    "{} steps in {} chunks ({} written, {} unchanged) from {} shard store(s); manifest: {}",
                    r.n_steps,
                    r.chunks_written + r.chunks_reused,
                    r.chunks_written,
                    r.chunks_reused,
                    r.n_shards,
                    run.join("data/manifest.json").display()
                );
            }
        }
        DataCommand::Show {
            run,
            step,
            rank,
            world_size,
            json,
        } => {
            let v = show(&run, step, rank, world_size)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "step {} (stage {}), rank {}/{}: {} rows",
                v.step,
                v.stage,
                v.rank,
                v.world_size,
                v.rows.len()
            );
            for r in &v.rows {
                println!(
                    "=== row {} (slot {}) source {}: {} tokens, {} document tokens, {} documents",
                    r.row, r.slot, r.source, r.tokens, r.doc_tokens, r.docs
                );
                for s in &r.segments {
                    if s.kind == "text" {
                        println!(
                            "  [{:>5}..{:>5}) {} doc {} {} tokens {}..{} (epoch {})",
                            s.pos,
                            s.pos + s.len,
                            s.source,
                            s.doc,
                            s.doc_id,
                            s.doc_tok,
                            s.doc_tok + s.len as u64,
                            s.epoch
                        );
                    } else {
                        println!(
                            "  [{:>5}]        <{}> of {} doc {} {}",
                            s.pos, s.kind, s.source, s.doc, s.doc_id
                        );
                    }
                }
                if r.text.is_empty() && !r.ids.is_empty() {
                    println!("--- ids ---\n{:?}\n", r.ids);
                } else {
                    println!("--- text ---\n{}\n", r.text);
                }
            }
        }
        DataCommand::Stats { run, json } => {
            let (m, rows) = stats(&run)?;
            let heldout = glass_data::heldout::load(&run, &m)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "sources": m.sources.iter().map(|s| serde_json::json!({
                    "name": s.name, "role": s.role, "docs": s.docs, "tokens": s.tokens, "bad_lines": s.bad_lines,
                    "invalid_utf8": s.invalid_utf8, "blank_lines": s.blank_lines, "empty_docs": s.empty_docs, "files": s.units.len()
                })).collect::<Vec<_>>(), "stages": rows, "dedup": m.dedup,
                    "heldout": heldout.as_ref().map(|h| h.summary()) })
                    )?
                );
                return Ok(());
            }
            println!(
                "{} steps × {} rows × {} tokens; tokenizer {} ids ({:?})",
                m.n_steps,
                m.config.rows_per_step,
                m.row_len,
                m.tokenizer.vocab_size,
                m.tokenizer.dtype
            );
            println!(
                "{:<12} {:<10} {:>6} {:>12} {:>10} {:>8} {:>8}",
                "source", "role", "files", "docs", "tokens", "skipped", "empty"
            );
            for s in &m.sources {
                println!(
                    "{:<12} {:<10} {:>6} {:>12} {:>10} {:>8} {:>8}",
                    s.name,
                    s.role,
                    s.units.len(),
                    s.docs,
                    s.tokens,
                    s.bad_lines + s.invalid_utf8 + s.blank_lines,
                    s.empty_docs
                );
            }
            if let Some(d) = &m.dedup {
                print_dedup(d, &run);
            }
            if let Some(h) = &heldout {
                print_heldout(h, &run);
            }
            println!();
            println!(
                "{:<12} {:<12} {:>8} {:>12} {:>8} {:>8} {:>7}",
                "stage", "source", "docs", "tokens", "fim", "epochs", "share"
            );
            for r in &rows {
                println!(
                    "{:<12} {:<12} {:>8} {:>12} {:>8} {:>8.3} {:>6.1}%",
                    r.stage,
                    r.source,
                    r.docs,
                    r.tokens,
                    r.fim_docs,
                    r.epochs,
                    r.share * 100.0
                );
            }
        }
        DataCommand::Contamination(a) => crate::contamination::run(a)?,
        DataCommand::Verify { run, json } => {
            let r = if glass_data::external::is_external(&run) {
                glass_data::external::verify(&run, &mut crate::suites::progress_bars())?
            } else {
                verify(&run)?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.mismatches {
                    println!("MISMATCH {}: {}", m.path, m.problem);
                }
                println!(
                    "checked {} files ({:.1} MB); manifest sha256 {}",
                    r.checked,
                    r.bytes as f64 / 1e6,
                    r.manifest_sha256
                );
            }
            if !r.mismatches.is_empty() {
                bail!("{} mismatch(es)", r.mismatches.len());
            }
            if !json {
                println!("OK");
            }
        }
    }
    Ok(())
}

/// The `[data.heldout]` documents of `glass data stats`: which documents of each source
/// were kept out of training, and how much of each is scored.
fn print_heldout(h: &glass_data::heldout::HeldoutFile, run: &std::path::Path) {
    println!();
    println!(
        "held out ([data.heldout] docs_per_source = {}, max_doc_tokens = {}; texts and tokens in {}):",
        h.settings.docs_per_source,
        h.settings
            .max_doc_tokens
            .map_or("none".to_string(), |c| c.to_string()),
        run.join("data")
            .join(glass_data::heldout::HELDOUT_FILE)
            .display()
    );
    println!(
        "{:<12} {:<10} {:>8} {:>10} {:>10} {:>10}  document",
        "source", "role", "doc", "doc tok", "scored", "bytes"
    );
    for s in &h.sources {
        for d in &s.docs {
            let p = &d.place;
            println!(
                "{:<12} {:<10} {:>8} {:>10} {:>10} {:>10}  {} line {} bytes {}..{}",
                s.name,
                s.role,
                p.doc,
                d.doc_tokens,
                d.tokens.len(),
                d.bytes,
                p.file,
                p.line,
                p.byte_start,
                p.byte_start + p.byte_len
            );
        }
    }
}

/// The `[data.dedup]` table of `glass data stats`: what each filter removed per source.
fn print_dedup(d: &glass_data::dedup::DedupRecord, run: &std::path::Path) {
    println!();
    println!(
        "dedup (MinHash seed {}; every removed document with the one it duplicates or the benchmark item it matched: {})",
        d.seed,
        run.join("data").join(&d.file).display()
    );
    if let Some(c) = &d.decontaminate {
        let tasks: Vec<String> = c
            .tasks
            .iter()
            .map(|t| format!("{} ({} items, {} too short)", t.task, t.items, t.too_short))
            .collect();
        println!(
            "decontaminate: {}-token windows of {}",
            c.ngram,
            tasks.join(", ")
        );
    }
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "source",
        "docs",
        "decon",
        "decon tok",
        "exact",
        "exact tok",
        "near",
        "near tok",
        "kept",
        "kept tok"
    );
    for s in &d.sources {
        println!(
            "{:<12} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
            s.name,
            s.docs_before,
            s.decontaminate.docs,
            s.decontaminate.tokens,
            s.exact.docs,
            s.exact.tokens,
            s.near.docs,
            s.near.tokens,
            s.docs_after,
            s.tokens_after
        );
    }
    if d.sources.iter().any(|s| s.substring.is_some()) {
        println!(
            "{:<12} {:>10} {:>12} {:>10} {:>12}",
            "substring", "spans", "tokens cut", "docs cut", "docs emptied"
        );
        for s in &d.sources {
            if let Some(x) = &s.substring {
                println!(
                    "{:<12} {:>10} {:>12} {:>10} {:>12}",
                    s.name, x.spans, x.tokens, x.docs_cut, x.docs_emptied
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DataCommand,
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let c = Cli::try_parse_from([
            "data",
            "prepare",
            "runs/a",
            "--shard",
            "1/4",
            "--threads",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            DataCommand::Prepare {
                shard: Some(Shard { index: 1, count: 4 }),
                threads: Some(2),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["data", "prepare", "r", "--shard", "4/4"]).is_err());
        let c = Cli::try_parse_from([
            "data",
            "show",
            "r",
            "--step",
            "3",
            "--rank",
            "1",
            "--world-size",
            "2",
            "--json",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            DataCommand::Show {
                step: 3,
                rank: 1,
                world_size: 2,
                json: true,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["data", "stats", "r", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["data", "verify", "r"]).is_ok());
        assert!(Cli::try_parse_from([
            "data",
            "contamination",
            "r",
            "--tasks",
            "glass_cloze,arc_easy.yaml",
            "--data-files",
            "test=a.jsonl",
            "--ngram",
            "8",
            "--json"
        ])
        .is_ok());
    }
}
