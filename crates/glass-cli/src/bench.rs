//! `glass bench`: argument parsing and printing (text, or JSON with --json) only; the
//! benchmarks are in `glass-bench`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use glass_bench::data::{DataBench, Throughput};
use glass_bench::dist::DistBench;
use glass_bench::gemm::GemmRow;
use glass_bench::index::IndexBench;
use glass_bench::train::{TrainBench, TrainOptions};

/// What to measure.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Full training steps (forward + backward + AdamW) on random tokens.
    Train(TrainArgs),
    /// `glass data prepare` in a fresh process vs a Python pipeline doing the same job,
    /// and tokenizer-only throughput vs the HF tokenizers package.
    Data(BenchDataArgs),
    /// Checkpoint write and load throughput (GB/s), the load warm and cold (page cache).
    Checkpoint {
        /// Model preset.
        #[arg(long, default_value = "small")]
        preset: String,
        /// Directory to write the checkpoints in.
        #[arg(long, default_value = "target/bench-checkpoint")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hugging Face export and import throughput (GB/s) for a model preset.
    Hf(BenchHfArgs),
    /// A model's inference cost: bytes of weights, peak RSS, prefill and batched greedy
    /// decode tokens/s (32 rows, 32-token prompts, 32 new tokens) at 1 and N threads.
    Model(BenchModelArgs),
    /// Trace-index build speed and peak memory, and count latency (`glass index`).
    Index(BenchIndexArgs),
    /// sgemm throughput of Glass's GEMM against the `gemm` crate (squares and model shapes).
    Gemm(GemmArgs),
    /// `glass serve` on a synthetic million-step run: API latency of the loss curve, and
    /// time to the first drawn chart in headless Chromium.
    Serve(BenchServeArgs),
}

/// Options of `glass bench train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Model preset (`tiny`: batch 8 × 256; `small`: batch 4 × 512).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Sequences per step (default: the preset's benchmark batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: the preset's benchmark length).
    #[arg(long)]
    seq: Option<usize>,
    /// Also time every phase of the step (GEMMs by projection, attention, norms, RoPE,
    /// SwiGLU, head and loss, gradient accumulation, AdamW) and print the breakdown.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Time the data-parallel step with this many gradient groups (default under
    /// mpirun/srun: the world size); also usable in one process for comparison.
    #[arg(long)]
    grad_groups: Option<usize>,
    /// Data parallel: shard the AdamW moments over the ranks (ZeRO stage 1).
    #[arg(long)]
    shard_optimizer: bool,
    /// A Python with torch and transformers: also time PyTorch in each of its fast
    /// configurations (eager/SDPA, eager attention, torch.compile default and
    /// max-autotune; fused AdamW), alternating with Glass, and compare medians.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The PyTorch reference script (with --python).
    #[arg(long, default_value = "bench/pytorch_reference.py")]
    reference: PathBuf,
    /// Alternating rounds (with --python).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// PyTorch configurations to run, comma-separated (with --python; default all:
    /// eager-sdpa,eager,compile,compile-max-autotune).
    #[arg(long, value_delimiter = ',')]
    torch_configs: Vec<String>,
}

/// Options of `glass bench data`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchDataArgs {
    /// Folder for the run, corpus copy, tokenizer.json and outputs.
    #[arg(long, default_value = "target/bench-data")]
    pub out: PathBuf,
    /// Timed repetitions of each side (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Python interpreter with `tokenizers` and `numpy`, to run the reference scripts.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference pipeline script.
    #[arg(long, default_value = "bench/data_pipeline_reference.py")]
    pub pipeline_script: PathBuf,
    /// The reference tokenizer-only script.
    #[arg(long, default_value = "bench/hf_tokenizers_reference.py")]
    pub tokenizer_script: PathBuf,
    /// Worker threads for both sides (default: the global --threads, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Instead: a generated real-format corpus (Parquet and .jsonl.zst shards with planted
    /// duplicates), prepared without and with `[data.dedup]`, against
    /// bench/dedup_reference.py (pyarrow/zstandard reading, `tokenizers`, datatrove's
    /// MinHash deduplication); medians of --iters alternating runs.
    #[arg(long)]
    pub corpus: bool,
    /// Size of the generated corpus, MB of text (--corpus).
    #[arg(long, default_value_t = 32)]
    pub corpus_mb: usize,
    /// The reference script of --corpus.
    #[arg(long, default_value = "bench/dedup_reference.py")]
    pub dedup_script: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `glass bench hf`.
#[derive(Args)]
pub struct BenchHfArgs {
    /// Model preset.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Directory to write the folder in (a private subdirectory, removed afterwards).
    #[arg(long, default_value = "target/bench-hf")]
    pub dir: PathBuf,
    /// Shard size (e.g. 5GB, 200MB).
    #[arg(long, default_value = "5GB")]
    pub max_shard_size: String,
}

/// Options of `glass bench model`.
#[derive(Args)]
pub struct BenchModelArgs {
    /// A run (its checkpoint loaded as `glass eval` loads it: bf16/f16 weights stay
    /// mapped) or a transformers folder with config.json and one model.safetensors.
    pub source: PathBuf,
    /// Checkpoint of a run: an index or `latest` (default).
    #[arg(long)]
    pub checkpoint: Option<glass_run::Checkpoint>,
    /// Thread counts to measure at, e.g. `1,8` (default: 1 and the `--threads` pool's size).
    #[arg(long, value_delimiter = ',')]
    pub thread_counts: Vec<usize>,
    /// Rows decoded together.
    #[arg(long, default_value_t = 32)]
    pub rows: usize,
    /// Prompt tokens per row.
    #[arg(long, default_value_t = 32)]
    pub prompt: usize,
    /// Tokens generated per row.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the prompts and the greedy continuations as JSON (`{"prompts":
    /// [[ids]], "generated": [[ids]]}`), for a reference implementation to run the same
    /// prompts and compare (bench/hf_generate_reference.py).
    #[arg(long, value_name = "FILE")]
    pub tokens_out: Option<PathBuf>,
}

/// Options of `glass bench index`.
#[derive(Args)]
pub struct BenchIndexArgs {
    /// An indexed run: times rebuilding each of its shards and counting random queries
    /// (e.g. runs/demo after `glass demo`).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Tokens of a synthetic stream to build one shard of (0 skips it).
    #[arg(long, default_value_t = 100_000_000)]
    pub synthetic_tokens: u64,
    /// Vocabulary of the synthetic stream (ids are log-uniform, like a Zipf tail).
    #[arg(long, default_value_t = 50_000)]
    pub vocab: u32,
    /// Row length of the synthetic stream.
    #[arg(long, default_value_t = 2049)]
    pub row_len: usize,
    /// Count queries timed on --run (8–32 tokens; half taken from the data, half random).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `glass bench gemm`.
#[derive(Args)]
pub struct GemmArgs {
    /// Square sizes to time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048,4096")]
    sizes: Vec<usize>,
    /// Model presets whose training-step products to time (comma-separated; `none` for
    /// squares only). Rows = the preset's benchmark batch × sequence length.
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    presets: Vec<String>,
    /// Kernels to time (comma-separated names, or `all` for every supported one).
    #[arg(long, default_value = "active")]
    kernels: String,
    /// Timed repetitions per product (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip the `gemm` crate comparison.
    #[arg(long)]
    no_gemm_crate: bool,
    /// Print one JSON object per product instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `glass bench serve`.
#[derive(Args)]
pub struct BenchServeArgs {
    /// Steps of the synthetic run.
    #[arg(long, default_value_t = 1_000_000)]
    pub steps: u64,
    /// Timed API requests.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Chart width in pixels the requests ask for (the page asks for its own width).
    #[arg(long, default_value_t = 1000)]
    pub width: usize,
    /// Where the synthetic run is written (reused while it has --steps steps).
    #[arg(long, default_value = "target/bench-serve")]
    pub dir: PathBuf,
    /// Headless page loads timed (0: skip the browser).
    #[arg(long, default_value_t = 3)]
    pub loads: usize,
    /// Chromium binary (default: `chromium`, then `chromium-browser`, `google-chrome`).
    #[arg(long)]
    pub chromium: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one bench subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(a) => train(a),
        BenchCommand::Data(a) => data(a),
        BenchCommand::Checkpoint { preset, dir, json } => checkpoint(preset, dir, json),
        BenchCommand::Hf(a) => hf(a),
        BenchCommand::Model(a) => model(a),
        BenchCommand::Index(a) => index(a),
        BenchCommand::Gemm(a) => gemm(a),
        BenchCommand::Serve(a) => serve(a),
    }
}

/// `glass bench train`: one process, or one rank of a data-parallel job.
fn train(a: TrainArgs) -> Result<()> {
    let opts = TrainOptions::preset(&a.preset, a.batch, a.seq, a.steps, a.warmup)?;
    let comm = crate::world::world("bench train")?;
    if comm.size() > 1 || a.grad_groups.is_some() {
        let opts = glass_bench::dist::DistOptions {
            train: opts,
            grad_groups: a.grad_groups.unwrap_or(comm.size()),
            shard_optimizer: a.shard_optimizer,
        };
        let r = glass_bench::dist::run(comm.clone(), &opts).map_err(anyhow::Error::from);
        let r = crate::world::or_abort(&*comm, r)?;
        if comm.rank() == 0 {
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", describe_dist(&r));
            }
        }
        return Ok(());
    }
    if let Some(py) = a.python {
        let c = glass_bench::pytorch::compare(
            &glass_bench::pytorch::CompareOptions {
                train: opts,
                python: py,
                script: a.reference,
                threads: rayon::current_num_threads(),
                rounds: a.rounds,
                configs: a.torch_configs,
            },
            &mut |m| eprintln!("{m}"),
        )?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&c)?);
        } else {
            print_comparison(&c);
        }
        return Ok(());
    }
    if a.profile {
        let (r, phases) = glass_bench::train::profile(&opts)?;
        if a.json {
            let mut v = serde_json::to_value(&r)?;
            v["profile"] = serde_json::to_value(&phases)?;
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_train(&r);
            println!(
                "{:<30} {:>10} {:>8} {:>10}",
                "phase", "ms/step", "share", "calls/step"
            );
            let mut total = 0.0;
            for p in &phases {
                total += p.share;
                println!(
                    "{:<30} {:>10.2} {:>7.1}% {:>10.0}",
                    p.phase,
                    p.ms_per_step,
                    100.0 * p.share,
                    p.calls_per_step
                );
            }
            println!(
                "{:<30} {:>10} {:>7.1}%  (the rest: batch assembly, zeroing, the pool's hand-offs)",
                "sum of phases",
                "",
                100.0 * total
            );
        }
        return Ok(());
    }
    let r = glass_bench::train::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_train(&r);
    }
    Ok(())
}

fn print_comparison(c: &glass_bench::pytorch::TrainComparison) {
    print_train(&c.glass_last);
    println!("{}", c.measured);
    println!("CPU: {}; {}", c.cpu, c.torch_versions);
    println!("ISA: {}", c.isa);
    println!(
        "{:<22} {:>12} {:>24} {:>14} {:>10}",
        "side", "median tok/s", "rounds", "peak RSS MiB", "compile s"
    );
    for s in &c.sides {
        let rounds: Vec<String> = s.tokens_per_s.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "{:<22} {:>12.0} {:>24} {:>14.0} {:>10.1}",
            s.name,
            s.median_tokens_per_s,
            rounds.join(" "),
            s.peak_rss_mib,
            s.compile_s
        );
    }
    println!(
        "glass / fastest PyTorch ({}): {:.2}x",
        c.fastest_torch, c.ratio_to_fastest
    );
}

fn print_train(r: &TrainBench) {
    println!(
        "{} (batch {} × seq {}, {} threads): {:.0} tokens/s, {:.1} ms/step, {:.1} GFLOP/s, MFU {:.0}% of {:.1} GFLOP/s GEMM peak, peak RSS {:.0} MiB, loss {:.3}",
        r.model, r.batch, r.seq, r.threads, r.tokens_per_s, r.step_ms, r.gflops, 100.0 * r.mfu, r.gemm_peak_gflops, r.peak_rss_mib, r.last_loss
    );
    println!(
        "  {:.1} GFLOP/s = {:.0}% of the measured GEMM peak ({:.1} GFLOP/s, {} kernel) and {:.0}% of the hardware peak: {}",
        r.gflops, 100.0 * r.mfu, r.gemm_peak_gflops, r.kernel, 100.0 * r.mfu_hardware, r.hardware_peak.derivation
    );
}

/// One line of text for a [`DistBench`].
fn describe_dist(r: &DistBench) -> String {
    format!(
        "{} data-parallel (batch {} × seq {}, {} rank(s) [{}] × {} thread(s), {} gradient groups{}): {:.0} tokens/s, {:.1} ms/step of which {:.1} ms in collectives, {:.1} GFLOP/s, {:.2} MB sent per rank per step ({} parameters), peak RSS {:.0} MiB (rank 0), loss {:.3}",
        r.model,
        r.batch,
        r.seq,
        r.world_size,
        r.transport,
        r.threads_per_rank,
        r.grad_groups,
        if r.shard_optimizer { ", sharded optimizer" } else { "" },
        r.tokens_per_s,
        r.step_ms,
        r.comm_ms,
        r.gflops,
        r.bytes_sent_per_rank_per_step as f64 / 1e6,
        r.params,
        r.peak_rss_mib,
        r.last_loss
    )
}

/// `glass bench data`.
fn data(a: BenchDataArgs) -> Result<()> {
    if a.corpus {
        return data_corpus(a);
    }
    let opts = glass_bench::data::DataOptions {
        glass: std::env::current_exe().context("locating the glass binary")?,
        out: a.out,
        iters: a.iters,
        python: a.python,
        pipeline_script: a.pipeline_script,
        tokenizer_script: a.tokenizer_script,
        threads: a.threads,
    };
    let r = glass_bench::data::run(&opts, &mut |m| eprintln!("{m}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_data(&r);
    }
    Ok(())
}

/// `glass bench data --corpus`.
fn data_corpus(a: BenchDataArgs) -> Result<()> {
    let opts = glass_bench::data::CorpusOptions {
        glass: std::env::current_exe().context("locating the glass binary")?,
        out: a.out,
        iters: a.iters,
        megabytes: a.corpus_mb,
        python: a.python,
        script: a.dedup_script,
        threads: a.threads,
    };
    let r = glass_bench::data::run_corpus(&opts, &mut |m| eprintln!("{m}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{}", r.measured);
    println!(
        "  {} documents ({} planted exact copies, {} near copies), {:.1} MB of text in {:.1} MB of files, {} training tokens",
        r.docs,
        r.planted.0,
        r.planted.1,
        r.bytes as f64 / 1e6,
        r.file_bytes as f64 / 1e6,
        r.tokens
    );
    let side = |name: &str, s: &glass_bench::data::SideTimes| {
        println!(
            "  {name:<40} {:>8.2} s plain {:>8.2} s dedup ({} documents kept)",
            s.plain.median_s, s.dedup.median_s, s.docs_kept
        );
    };
    side("glass data prepare", &r.glass);
    if let Some(p) = &r.python {
        side("Python (pyarrow, tokenizers, datatrove)", p);
    }
    if let Some((plain, dedup, only)) = r.speedup {
        println!(
            "  glass is {plain:.1}x Python's speed without dedup, {dedup:.1}x with, {only:.1}x on the deduplication alone (with minus without)"
        );
    }
    Ok(())
}

fn print_data(r: &DataBench) {
    let p = &r.pipeline;
    println!("data preparation: {}", p.measured);
    println!(
        "  {:<44} {:>7.3} s  ({:.2} M training tokens/s)",
        "glass data prepare",
        p.glass.best_s,
        p.tokens as f64 / p.glass.best_s / 1e6
    );
    if let Some(py) = &p.python {
        println!(
            "  {:<44} {:>7.3} s  ({:.2} M training tokens/s)",
            "Python (tokenizers encode_batch + numpy)",
            py.best_s,
            p.tokens as f64 / py.best_s / 1e6
        );
    }
    if let Some(x) = p.speedup {
        println!("  glass is {x:.2}x the Python pipeline's speed");
    }
    let t = &r.tokenizer;
    println!(
        "tokenizer only: {} ({} documents, {:.1} MB)",
        t.measured,
        t.docs,
        t.bytes as f64 / 1e6
    );
    let line = |name: &str, x: &Throughput| {
        println!(
            "  {name:<44} {:>7.2} M tok/s {:>8.1} MB/s",
            x.tokens_per_s / 1e6,
            x.bytes_per_s / 1e6
        )
    };
    line("glass tokenize+pack", &t.glass);
    line("glass with the HF encoder", &t.glass_hf_encoder);
    if let Some(py) = &t.python_reference {
        line("HF tokenizers encode_batch (Python)", py);
    }
    if let Some(x) = t.speedup {
        println!("  glass is {x:.2}x HF tokenizers (same ids)");
    }
}

/// `glass bench checkpoint`.
fn checkpoint(preset: String, dir: PathBuf, json: bool) -> Result<()> {
    let r = glass_bench::checkpoint::run(&glass_bench::checkpoint::CheckpointOptions {
        preset: preset.clone(),
        dir,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{preset}: {:.2} GB checkpoint (weights + optimizer + state)",
        r.bytes as f64 / 1e9
    );
    println!(
        "  write (hash + fsync)                {:>7.2} GB/s",
        r.write_gb_s
    );
    for (name, l) in [("warm", &r.warm_load), ("cold", &r.cold_load)] {
        println!(
            "  load, {name} ({:>5.1}% of pages cached) {:>7.2} GB/s (hash-checked)",
            100.0 * l.resident_before,
            l.gb_s
        );
    }
    if r.cold_load.resident_before > 0.05 {
        println!(
            "  note: the kernel kept {:.0}% of the pages cached despite POSIX_FADV_DONTNEED; the cold figure is optimistic",
            100.0 * r.cold_load.resident_before
        );
    }
    Ok(())
}

/// `glass bench hf`: fails after printing when the round trip changed a bit.
fn hf(a: BenchHfArgs) -> Result<()> {
    let r = glass_bench::hf::run(&glass_bench::hf::HfOptions {
        preset: a.preset.clone(),
        dir: a.dir,
        max_shard_size: a.max_shard_size,
    })?;
    println!(
        "{}: {:.3} GB of f32 weights exported (safetensors, fsynced) at {:.2} GB/s, imported at {:.2} GB/s (page cache warm); round trip {}",
        a.preset,
        r.bytes as f64 / 1e9,
        r.export_gb_s,
        r.import_gb_s,
        if r.identical { "bit-identical" } else { "DIFFERS" }
    );
    anyhow::ensure!(r.identical, "the re-imported weights differ");
    Ok(())
}

/// `glass bench model`.
fn model(a: BenchModelArgs) -> Result<()> {
    let mut threads = a.thread_counts.clone();
    if threads.is_empty() {
        threads = vec![1, rayon::current_num_threads()];
        threads.dedup();
    }
    let checkpoint = a.checkpoint.map(|c| c.index_in(&a.source)).transpose()?;
    let r = glass_bench::model::run(
        &glass_bench::model::ModelOptions {
            source: a.source.clone(),
            checkpoint,
            threads,
            rows: a.rows,
            prompt: a.prompt,
            new_tokens: a.new_tokens,
        },
        &mut |m| eprintln!("{m}"),
    )?;
    if let Some(path) = &a.tokens_out {
        let doc = serde_json::json!({"prompts": r.prompts, "generated": r.generated});
        glass_io::atomic::write_atomic(path, &serde_json::to_vec(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} ({}{}): {} params, {} weights {:.3} GB, loaded in {:.2} s; RSS after load {:.0} MiB, peak {:.0} MiB; kernel {}",
        r.source.display(),
        r.kind,
        r.checkpoint.map_or(String::new(), |k| format!(", checkpoint {k}")),
        r.params,
        r.dtype,
        r.weight_bytes as f64 / 1e9,
        r.load_s,
        r.rss_after_load_mib,
        r.peak_rss_mib,
        r.kernel
    );
    println!(
        "{:>7} {:>16} {:>16} {:>10} {:>10}  tokens sha256",
        "threads", "prefill tok/s", "decode tok/s", "prefill s", "decode s"
    );
    for t in &r.results {
        println!(
            "{:>7} {:>16.1} {:>16.1} {:>10.3} {:>10.3}  {}",
            t.threads,
            t.prefill_tokens_per_s,
            t.decode_tokens_per_s,
            t.prefill_s,
            t.decode_s,
            &t.tokens_sha256[..16]
        );
    }
    println!("{}", r.note);
    Ok(())
}

/// `glass bench index`.
fn index(a: BenchIndexArgs) -> Result<()> {
    let r = glass_bench::index::run(&glass_bench::index::IndexOptions {
        run: a.run,
        synthetic_tokens: a.synthetic_tokens,
        vocab: a.vocab,
        row_len: a.row_len,
        queries: a.queries,
    })?;
    if a.json {
        // Through a JSON value: keys in name order, as the report has always been printed.
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(&r)?)?
        );
        return Ok(());
    }
    print_index(&r);
    Ok(())
}

fn print_index(r: &IndexBench) {
    for b in &r.build {
        println!(
            "build {}: {} tokens in {:.2}s = {:.2} M tokens/s; peak memory {:.1} MB = {:.2} bytes/token; index {:.1} bytes/token",
            b.what,
            b.tokens,
            b.seconds,
            b.tokens_per_s / 1e6,
            b.peak_bytes as f64 / 1e6,
            b.peak_bytes_per_token,
            b.index_bytes_per_token
        );
    }
    if let Some(o) = &r.open {
        println!(
            "open: {:.2} ms structure and bounds only; {:.2} ms with every array and token file hash-checked ({:.1} MB, {:.2} GB/s)",
            o.bounds_only_ms,
            o.hashed_ms,
            o.hashed_bytes as f64 / 1e6,
            o.hash_gb_per_s
        );
    }
    if let Some(h) = &r.synthetic_open_hash {
        println!(
            "open of the synthetic shard: hashing its array and token file ({:.1} MB) takes {:.2} s = {:.2} GB/s",
            h.bytes as f64 / 1e6,
            h.seconds,
            h.gb_per_s
        );
    }
    if let Some(l) = &r.count_latency {
        println!(
            "count latency over {} queries of 8-32 tokens ({} found) on {} shards / {} tokens: p50 {:.4} ms, p99 {:.4} ms, max {:.4} ms",
            l.queries, l.found, l.shards, l.tokens, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}

/// `glass bench gemm`: one line (or JSON object) per product and kernel, as each is timed.
fn gemm(a: GemmArgs) -> Result<()> {
    let plan = glass_bench::gemm::plan(&glass_bench::gemm::GemmOptions {
        sizes: a.sizes,
        presets: a.presets,
        kernels: a.kernels,
    })?;
    if !a.json {
        println!(
            "sgemm, {} threads, median of {} runs (GFLOP/s = 2·m·n·k / time; warm caches, operands allocated once)",
            plan.threads, a.reps
        );
    }
    for row in glass_bench::gemm::rows(&plan, a.reps, !a.no_gemm_crate) {
        if a.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            print_gemm_row(&row);
        }
    }
    Ok(())
}

fn print_gemm_row(row: &GemmRow) {
    let s = &row.shape;
    let t = |x: bool| if x { "ᵀ" } else { "" };
    print!(
        "{:<28} [{}×{}{}]·[{}×{}{}] {:>8}: glass {:7.1}",
        s.label,
        s.m,
        s.k,
        t(s.ta),
        s.k,
        s.n,
        t(s.tb),
        row.kernel,
        row.glass_gflops
    );
    match row.gemm_crate_gflops {
        Some(r) => println!("   gemm crate {r:7.1}   ratio {:.2}×", row.glass_gflops / r),
        None => println!(),
    }
}

/// `glass bench serve`.
fn serve(a: BenchServeArgs) -> Result<()> {
    let r = glass_bench::serve::run(
        &glass_bench::serve::ServeOptions {
            steps: a.steps,
            requests: a.requests,
            width: a.width,
            dir: a.dir,
            loads: a.loads,
            chromium: a.chromium,
        },
        &mut |m| eprintln!("{m}"),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "loss curve of a {}-step run at width {}: {} points, {} bytes; p50 {:.2} ms, p99 {:.2} ms over {} requests (full resolution: {:.0} ms)",
        r.steps, r.width, r.points, r.reply_bytes, r.p50_ms, r.p99_ms, r.requests, r.full_resolution_ms
    );
    if let (Some(p), Some(b), Some(f)) =
        (r.browser_page_ms, r.browser_baseline_ms, r.first_chart_ms)
    {
        println!(
            "headless Chromium: run page drawn in {p:.0} ms, an empty page in {b:.0} ms: first chart {f:.0} ms after the browser is up (medians of {}); the page's own performance.now() at its charts: {}",
            a.loads,
            r.in_page_ms.map_or("-".into(), |m| format!("{m:.0} ms"))
        );
    }
    Ok(())
}
