//! `glass demo`: the whole pipeline on the embedded default data, no downloads, about
//! three minutes on 2 cores: init → prepare (English, then English + code) → train a
//! small model with checkpoints → validation curve → every checkpoint evaluated on text
//! it never saw (beside general-purpose compressors) → what it reproduces: greedy
//! continuations, memorization of the one text it saw a hundred times, and a trace of
//! its output back to the steps that held it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use glass_analysis::memorization::{MemoOptions, PairResult, Selection};
use glass_analysis::trace::{Rank, TraceOptions};
use glass_engine::{Sampler, SamplingConfig};
use glass_eval::{CheckpointSel, EvalOptions, TaskResult};

/// Passages of each held-out evaluation (English, code) scored at every checkpoint.
pub const DEMO_PASSAGES: usize = 8;
/// Rows sampled per (checkpoint, chunk) in the demo's memorization matrix.
pub const DEMO_MEMO_ROWS: usize = 64;
/// The prompt whose greedy continuation the demo prints.
const VERSE_PROMPT: &str = "KING.\nWhat";
/// The first line of Sonnet II: the demo traces its continuation back to training.
const SONNET_PROMPT: &str = "When forty winters shall besiege thy brow,\n";

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
        println!("[1/6] created {}/glass.toml", run.display());
    } else {
        println!("[1/6] reusing {}/glass.toml", run.display());
    }
    describe_config(run)?;
    let opts = glass_data::PrepareOptions {
        progress: !a.quiet,
        ..Default::default()
    };
    let p = glass_data::prepare(run, &opts)?;
    let plan = stage_plan(run)?;
    println!(
        "[2/6] prepared data: {} chunks written, {} reused ({:.1}s); {}",
        p.chunks_written,
        p.chunks_reused,
        t0.elapsed().as_secs_f64(),
        plan.iter()
            .map(|(name, a, b)| format!("stage `{name}` is steps {a}-{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t_train = Instant::now();
    let r = glass_run::train(
        run,
        &glass_run::TrainOptions {
            progress: !a.quiet,
            ..Default::default()
        },
    )?;
    println!(
        "[3/6] trained to step {}/{}: {} checkpoints ({:.1}s of training)",
        r.step,
        r.n_steps,
        glass_run::info(run)?.checkpoints.len(),
        t_train.elapsed().as_secs_f64()
    );
    report_validation(run)?;
    let english_end = plan.first().map_or(0, |s| s.2);
    evaluate(run, english_end)?;
    reproduce(run, english_end, a.quiet)?;
    next_steps(run);
    println!("demo finished in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// One line on the model and the data.
fn describe_config(run: &Path) -> Result<()> {
    let cfg = glass_run::RunConfig::load(run)?;
    let m = &cfg.model;
    let data = glass_data::DataConfig::from_run_toml(&std::fs::read_to_string(
        run.join(glass_run::config::CONFIG_FILE),
    )?)?;
    println!(
        "      model: a {:.1} M-parameter LLaMA (width {}, {} layers, {} heads, {}-token vocabulary{}); data: {}",
        m.n_params() as f64 / 1e6,
        m.d_model,
        m.n_layers,
        m.n_heads,
        m.vocab_size,
        if m.tie_embeddings { ", tied embeddings" } else { "" },
        data.stages
            .iter()
            .map(|s| format!(
                "`{}` ({})",
                s.name,
                s.weights
                    .iter()
                    .map(|(k, v)| format!("{k} {:.0}%", 100.0 * v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join(" then ")
    );
    Ok(())
}

/// (name, first step, end step) of every stage.
fn stage_plan(run: &Path) -> Result<Vec<(String, u64, u64)>> {
    let m = glass_data::Manifest::load(run)?;
    let plan = glass_data::order::Plan::new(&m.config);
    Ok(plan
        .stages
        .iter()
        .map(|s| (s.name.clone(), s.first_step, s.first_step + s.n_steps))
        .collect())
}

/// Prints the validation-loss curve.
fn report_validation(run: &Path) -> Result<()> {
    let info = glass_run::info(run)?;
    let pts: Vec<(u64, f64)> = info
        .checkpoints
        .iter()
        .filter_map(|c| c.val_loss.map(|v| (c.step, v)))
        .collect();
    println!("[4/6] held-out validation loss (nats/token) per checkpoint:");
    print!("{}", chart(&pts, 40));
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        println!(
            "validation loss {:.4} at step {} -> {:.4} at step {}",
            first.1, first.0, last.1, last.0
        );
    }
    Ok(())
}

fn bundled(name: &str) -> Result<glass_eval::TaskDef> {
    Ok(glass_eval::bundled::bundled(name).expect("bundled task")?)
}

/// Evaluates `tasks` on `checkpoints` (quietly: the demo prints the curves itself).
fn eval(
    run: &Path,
    tasks: Vec<glass_eval::TaskDef>,
    checkpoints: CheckpointSel,
    limit: Option<usize>,
    log_samples: bool,
) -> Result<Vec<TaskResult>> {
    let opts = EvalOptions {
        checkpoints,
        tasks,
        limit,
        num_fewshot: None,
        fewshot_seed: glass_eval::DEFAULT_FEWSHOT_SEED,
        force: false,
        log_samples,
        code: None,
    };
    crate::eval::evaluate(run, &opts, true)
}

fn metric(results: &[TaskResult], k: u32, task: &str, m: &str) -> Option<f64> {
    results
        .iter()
        .find(|r| r.checkpoint == k && r.task == task)
        .and_then(|r| r.metrics.iter().find(|x| x.metric == m))
        .map(|x| x.value)
}

/// Every checkpoint on held-out text: bits per byte of English and code passages, and
/// the cloze at the chunk checkpoints; then the whole held-out English at the end of
/// the English stage and at the end, beside compressors on the same works.
fn evaluate(run: &Path, english_end: u64) -> Result<()> {
    let t0 = Instant::now();
    println!(
        "[5/6] every checkpoint on text it never trained on: held-out English works (Macbeth, Twelfth Night, The Tempest) and Rust files ({DEMO_PASSAGES} passages each, bits per byte), and the next-line cloze (300 questions of 4 choices)"
    );
    let mut results = eval(
        run,
        vec![bundled("glass_heldout")?, bundled("glass_code_heldout")?],
        CheckpointSel::All,
        Some(DEMO_PASSAGES),
        false,
    )?;
    let info = glass_run::info(run)?;
    let spc = glass_data::Manifest::load(run)?.config.steps_per_chunk;
    let cloze_at: Vec<u64> = info
        .checkpoints
        .iter()
        .filter(|c| c.step % spc == 0)
        .map(|c| c.index as u64)
        .collect();
    results.extend(eval(
        run,
        vec![bundled("glass_cloze")?],
        Selection::list(cloze_at),
        None,
        false,
    )?);
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    println!(
        "  {:>11} {:>8} {:>8} {:>7} {:>6} {:>8} {:>11}",
        "", "tokens", "English", "code", "cloze", "acc_norm", "mutual_info"
    );
    for c in &info.checkpoints {
        let k = c.index;
        println!(
            "  step {:>6} {:>8} {:>8} {:>7} {:>6} {:>8} {:>11}{}",
            c.step,
            c.tokens,
            f(metric(&results, k, "glass_heldout", "bits_per_byte")),
            f(metric(&results, k, "glass_code_heldout", "bits_per_byte")),
            f(metric(&results, k, "glass_cloze", "acc")),
            f(metric(&results, k, "glass_cloze", "acc_norm")),
            f(metric(&results, k, "glass_cloze", "acc_mutual_info")),
            if c.step == english_end {
                "  <- end of the English stage"
            } else {
                ""
            }
        );
    }
    println!(
        "  (bits per byte: lower is better; cloze: chance is 0.250; mutual_info ranks each line by how much the context raises its likelihood)"
    );
    // The whole held-out English, per work, beside compressors on each work whole.
    let ends: Vec<u32> = checkpoint_at(&info, english_end)
        .into_iter()
        .chain(info.checkpoints.last().map(|c| c.index))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let full = eval(
        run,
        vec![bundled("glass_heldout")?],
        Selection::list(ends.iter().map(|&k| k as u64)),
        None,
        true,
    )?;
    print_against_compressors(&info, &full)?;
    println!("evaluated in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The index of the checkpoint at `step`, if one was written there.
fn checkpoint_at(info: &glass_run::RunInfo, step: u64) -> Option<u32> {
    info.checkpoints
        .iter()
        .find(|c| c.step == step)
        .map(|c| c.index)
}

/// Bits per byte of the model on each held-out work (all its passages) and of DEFLATE
/// level 9 (`gzip -9`) and bzip2 level 9 (`bzip2 -9`) on the same work compressed whole.
fn print_against_compressors(info: &glass_run::RunInfo, full: &[TaskResult]) -> Result<()> {
    let ids: Vec<String> = glass_eval::bundled::generate_heldout()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("bundled JSON");
            v["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let work_of = |doc: usize| {
        ids.get(doc)
            .and_then(|id| id.rsplit_once('-'))
            .map_or(String::new(), |(w, _)| w.to_string())
    };
    // Per checkpoint column: work -> (sum of log-likelihoods, bytes).
    type PerWork = std::collections::BTreeMap<String, (f64, usize)>;
    let mut cols: Vec<(String, PerWork)> = Vec::new();
    for r in full {
        let step = info
            .checkpoints
            .iter()
            .find(|c| c.index == r.checkpoint)
            .map_or(0, |c| c.step);
        let mut per = PerWork::new();
        for s in r.samples.iter().flatten() {
            let e = per.entry(work_of(s.doc)).or_default();
            e.0 += s.loglikelihood.unwrap_or(0.0);
            e.1 += s.bytes.unwrap_or(0);
        }
        cols.push((format!("step {step}"), per));
    }
    println!(
        "  all held-out English (every passage), bits per byte, beside compressors on each work whole:"
    );
    print!("  {:>15}", "");
    for (name, _) in &cols {
        print!(" {name:>10}");
    }
    println!(" {:>8} {:>8}", "gzip -9", "bzip2 -9");
    let mut totals = vec![(0.0f64, 0usize); cols.len()];
    let (mut gz, mut bz, mut raw) = (0usize, 0usize, 0usize);
    for (work, text) in held_out_texts() {
        print!("  {work:>15}");
        for (i, (_, per)) in cols.iter().enumerate() {
            let (ll, bytes) = per.get(&work).copied().unwrap_or_default();
            totals[i].0 += ll;
            totals[i].1 += bytes;
            print!(" {:>10.3}", bpb(ll, bytes));
        }
        let (g, b) = compressed_sizes(text.as_bytes())?;
        gz += g;
        bz += b;
        raw += text.len();
        println!(
            " {:>8.3} {:>8.3}",
            8.0 * g as f64 / text.len() as f64,
            8.0 * b as f64 / text.len() as f64
        );
    }
    print!("  {:>15}", "all");
    for (ll, bytes) in &totals {
        print!(" {:>10.3}", bpb(*ll, *bytes));
    }
    println!(
        " {:>8.3} {:>8.3}",
        8.0 * gz as f64 / raw as f64,
        8.0 * bz as f64 / raw as f64
    );
    Ok(())
}

fn bpb(loglikelihood: f64, bytes: usize) -> f64 {
    if bytes == 0 {
        return f64::NAN;
    }
    -loglikelihood / bytes as f64 / std::f64::consts::LN_2
}

/// The held-out works as the bundled tasks name them (`macbeth`, ...), with their text.
fn held_out_texts() -> Vec<(String, &'static str)> {
    glass_data::HELD_OUT_WORKS
        .iter()
        .map(|w| {
            let short = w.rsplit('/').next().unwrap_or(w).trim_end_matches(".txt");
            (
                short.to_string(),
                glass_data::embedded_work(w).expect("held-out work is embedded"),
            )
        })
        .collect()
}

/// Bytes of `data` compressed by DEFLATE at level 9 in a gzip stream (`gzip -9`) and by
/// bzip2 at level 9 (`bzip2 -9`, 900 KB blocks).
pub fn compressed_sizes(data: &[u8]) -> Result<(usize, usize)> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(data)?;
    let mut b = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    b.write_all(data)?;
    Ok((g.finish()?.len(), b.finish()?.len()))
}

/// What the model reproduces: greedy continuations at the end of the English stage and
/// at the end, memorization per checkpoint and chunk (and by source), and a trace.
fn reproduce(run: &Path, english_end: u64, quiet: bool) -> Result<()> {
    let t0 = Instant::now();
    let info = glass_run::info(run)?;
    let last = info
        .checkpoints
        .last()
        .context("the run has no checkpoint")?;
    let tok = glass_run::run_tokenizer(run)?;
    println!(
        "[6/6] what the model reproduces; greedy continuation of {VERSE_PROMPT:?} at the end of the English stage and at the end:"
    );
    for k in checkpoint_at(&info, english_end)
        .into_iter()
        .chain([last.index])
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (model, _) = glass_run::load_model(run, Some(k))?;
        let out = greedy(&model, &tok, VERSE_PROMPT, 64)?;
        let step = info
            .checkpoints
            .iter()
            .find(|c| c.index == k)
            .map_or(0, |c| c.step);
        println!("  --- checkpoint {k} (step {step}) ---");
        // Runs of blank lines (a model this small loves them) shown as one.
        let mut blank = false;
        for line in format!("{VERSE_PROMPT}{}", tok.decode(&out)?).lines() {
            if line.trim().is_empty() && std::mem::replace(&mut blank, true) {
                continue;
            }
            blank = line.trim().is_empty();
            println!("  | {line}");
        }
    }
    let r = glass_analysis::build_index(run, &mut |_, _, _| {})?;
    let m = glass_run::RunManifest::require(run)?;
    let cks: Vec<u64> = m.checkpoints.iter().map(|c| c.index as u64).collect();
    let data = glass_data::Manifest::load(run)?;
    let chs: Vec<u64> = (0..data.n_chunks).collect();
    let pick = |v: &[u64], extra: Option<u64>| {
        let mut p = vec![v[0], v[v.len() / 2], v[v.len() - 1]];
        p.extend(extra);
        p.sort_unstable();
        p.dedup();
        p
    };
    let end_ck = checkpoint_at(&info, english_end).map(|k| k as u64);
    let opts = MemoOptions {
        checkpoints: Selection::list(pick(&cks, end_ck)),
        chunks: Selection::list(pick(&chs, None)),
        samples: DEMO_MEMO_ROWS,
        log_samples: true,
        ..MemoOptions::default()
    };
    println!(
        "\nmemorization (Analysis360's protocol: a 32-token prompt from a training row, 32 greedy tokens; full_match = share of rows continued exactly; {} rows per cell; index of {} training tokens built):",
        DEMO_MEMO_ROWS, r.tokens
    );
    let res = crate::analysis::memorize(run, &opts, false, !quiet)?;
    crate::analysis::print_matrix(run, &res);
    by_source(run, &data, &res)?;
    let (model, _) = glass_run::load_model(run, Some(last.index))?;
    let out = greedy(&model, &tok, SONNET_PROMPT, 48)?;
    let index = glass_analysis::Index::open(run)?;
    let text = tok.decode(&out)?;
    let topts = TraceOptions {
        min_tokens: 6,
        max_occurrences: 2,
        rank: Rank::Length,
        checkpoint: Some((last.index, last.step)),
    };
    let mut tr = glass_analysis::trace::trace(run, &index, &tok, &text, &out, &topts)?;
    // A looping continuation repeats its spans: show each text once.
    let mut seen = std::collections::HashSet::new();
    tr.spans.retain(|s| seen.insert(s.tokens.clone()));
    tr.spans.truncate(3);
    println!(
        "\ntrace: checkpoint {} continues the first line of Sonnet II greedily; the longest spans of its output found in training, with the steps that held them:",
        last.index
    );
    crate::analysis::print_trace(&tr, Some(SONNET_PROMPT));
    println!(
        "(index, memorization and trace in {:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Greedy continuation of `prompt` (up to `n` tokens, stopping at end of text).
fn greedy(
    model: &glass_engine::Model,
    tok: &glass_data::GlassTokenizer,
    prompt: &str,
    n: usize,
) -> Result<Vec<u32>> {
    let ids = tok.encode(prompt)?;
    let eos = tok.specials().eos;
    let mut sampler = Sampler::new(SamplingConfig {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    });
    Ok(model
        .generate(&ids, n, &mut sampler, |t| t != eos)?
        .into_iter()
        .filter(|&t| t != eos)
        .collect())
}

/// full_match at the last analysed checkpoint, split by the source each sampled row
/// came from: the rows of the repeated sonnets are what the model reproduces.
fn by_source(run: &Path, data: &glass_data::Manifest, res: &[PairResult]) -> Result<()> {
    let Some(last) = res.iter().map(|p| p.checkpoint).max() else {
        return Ok(());
    };
    let prepared = glass_data::PreparedData::open(run)?;
    let spc = data.config.steps_per_chunk;
    let mut per: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for p in res.iter().filter(|p| p.checkpoint == last) {
        let (_, segs) = prepared.chunk_segments(p.chunk * spc)?;
        for s in p.samples.iter().flatten() {
            let src = segs
                .iter()
                .find(|g| g.row as u64 == s.row)
                .map_or("?", |g| {
                    data.config.sources[g.source as usize].name.as_str()
                });
            let e = per.entry(src.to_string()).or_default();
            e.0 += 1;
            e.1 += usize::from(s.matches == s.matched.len());
        }
    }
    let line: Vec<String> = per
        .iter()
        .map(|(src, (n, full))| format!("{src}: {full} of {n} rows"))
        .collect();
    let tokens = data
        .sources
        .iter()
        .find(|s| s.name == "sonnets")
        .map(|s| s.tokens);
    let epochs = data
        .stages
        .last()
        .and_then(|st| st.sources.iter().find(|s| s.source == "sonnets"))
        .map(|s| s.epochs);
    let epochs = tokens.zip(epochs);
    println!(
        "  rows reproduced exactly at checkpoint {last}, by source: {}",
        line.join(", ")
    );
    if let Some((tokens, epochs)) = epochs {
        println!(
            "  (why: the `sonnets` source is Sonnets I-III, {tokens} tokens, seen about {epochs:.0} times over the run; a model this size starts reproducing a text verbatim after 70-100 passes, and sees the rest of the corpus about once)"
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
        "  metrics.sqlite          per-step loss/lr/grad-norm, validation loss, evals, memorization, events"
    );
    println!("  evals/, analysis/, index/   per-checkpoint evaluation and memorization results, trace index");
    println!("\nnext:");
    println!(
        "  glass data show {d} --step 100     exact rows (text, source, documents) of step 100"
    );
    println!("  glass info {d}                     checkpoints with hashes");
    println!(
        "  glass verify {d} --replay 5        recompute checkpoint 5 and prove it bit-identical"
    );
    println!("  glass metrics {d} --evals          evaluation curves per checkpoint");
    println!("  glass generate {d} --prompt \"ROMEO.\" --temperature 0.8 --seed 1");
    println!("  glass trace {d} --text \"...\"     which training steps held a text");
    println!("  glass serve {d}                    all of it in a browser");
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
