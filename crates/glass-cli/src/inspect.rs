//! `glass inspect`: the logit lens, attention maps and (with `--save`) every internal
//! tensor of one or several checkpoints on one sequence (a prompt, a text file, or a
//! training row).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use glass_analysis::inspect::{inspect, save, InspectOptions, Inspection};
use serde_json::json;

/// Options of `glass inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Run directory.
    pub run: PathBuf,
    /// Checkpoint: an index or `latest` (default).
    #[arg(long, conflicts_with = "checkpoints")]
    pub checkpoint: Option<glass_run::Checkpoint>,
    /// Several checkpoints: all, latest, or indices K,K2,...
    #[arg(long)]
    pub checkpoints: Option<glass_run::Selection>,
    /// The text to inspect.
    #[arg(long, conflicts_with_all = ["text_file", "step"])]
    pub prompt: Option<String>,
    /// Inspect the text of this file.
    #[arg(long, value_name = "FILE", conflicts_with = "step")]
    pub text_file: Option<PathBuf>,
    /// Inspect a training row: the step (with --row).
    #[arg(long, requires = "row")]
    pub step: Option<u64>,
    /// Row of --step's batch.
    #[arg(long, requires = "step")]
    pub row: Option<usize>,
    /// Lens candidates per position.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Attention maps of this layer (all heads, or --head).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Attention map of this head (with --layer).
    #[arg(long, requires = "layer")]
    pub head: Option<usize>,
    /// Write every residual stream, attention map and MLP activation as safetensors
    /// (with several checkpoints: one file each, `-ckpt<K>` before the extension).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The sequence to inspect, as token ids (a training row: all `seq_len + 1` tokens; the
/// caller keeps what fits the model's context).
fn sequence(a: &InspectArgs, tok: &glass_data::GlassTokenizer) -> Result<Vec<u32>> {
    let ids = match (&a.prompt, &a.text_file, a.step) {
        (Some(p), _, _) => tok.encode(p)?,
        (_, Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("{}: cannot read the text file", f.display()))?;
            tok.encode(&text)?
        }
        (_, _, Some(step)) => {
            let row = a.row.unwrap_or(0);
            let data = glass_data::PreparedData::open(&a.run)?;
            anyhow::ensure!(
                step < data.n_steps(),
                "step {step} is past the prepared data ({} steps)",
                data.n_steps()
            );
            anyhow::ensure!(
                row < data.rows_per_step(),
                "row {row} is out of range: a step has {} rows (0..={})",
                data.rows_per_step(),
                data.rows_per_step() - 1
            );
            let mut ids = Vec::new();
            data.rows(step, 0, 1, &mut ids)?;
            let len = data.row_len();
            ids[row * len..(row + 1) * len].to_vec()
        }
        _ => bail!("say what to inspect: --prompt TEXT, --text-file FILE or --step N --row R"),
    };
    anyhow::ensure!(!ids.is_empty(), "the text encodes to no tokens");
    Ok(ids)
}

/// `out.safetensors` → `out-ckpt3.safetensors` when several checkpoints are saved.
fn save_path(base: &Path, k: u32, several: bool) -> PathBuf {
    if !several {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map_or("inspect".into(), |s| s.to_string_lossy());
    let ext = base
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    base.with_file_name(format!("{stem}-ckpt{k}{ext}"))
}

/// A token's text for the table: escaped, at most 12 characters.
fn show(tok: &glass_data::GlassTokenizer, t: u32) -> String {
    let s = tok.decode(&[t]).unwrap_or_default();
    let s: String = s.escape_debug().collect();
    if s.chars().count() > 12 {
        s.chars().take(11).chain(['…']).collect()
    } else {
        s
    }
}

/// Prints the lens as a table: one row per position, one column per shown layer (top-1
/// token and the rank of the actual next token).
fn print_table(ins: &Inspection, tok: &glass_data::GlassTokenizer) {
    let n = ins.tokens.len();
    let streams = ins.layers + 1;
    let every = streams.div_ceil(12).max(1);
    let mut cols: Vec<usize> = (0..streams).step_by(every).collect();
    if cols.last() != Some(&(streams - 1)) {
        cols.push(streams - 1);
    }
    print!("{:>5} {:<14}{:<14}", "pos", "token", "next");
    for &l in &cols {
        print!(" {:<18}", format!("resid {l}"));
    }
    println!();
    for p in 0..n {
        let next = ins.lens[0][p]
            .next
            .map_or("—".to_string(), |t| show(tok, t));
        print!("{p:>5} {:<14}{:<14}", show(tok, ins.tokens[p]), next);
        for &l in &cols {
            let c = &ins.lens[l][p];
            let top = c.top.first().map_or(String::new(), |c| show(tok, c.token));
            let cell = match c.next_rank {
                Some(r) => format!("{top} (#{r})"),
                None => top,
            };
            print!(" {cell:<18}");
        }
        println!();
    }
}

/// Runs `glass inspect`.
pub fn run(a: InspectArgs) -> Result<()> {
    let manifest = glass_run::RunManifest::require(&a.run)?;
    let entries = match (&a.checkpoints, a.checkpoint) {
        (Some(sel), _) => sel.checkpoints(&manifest)?,
        (None, k) => vec![k
            .unwrap_or(glass_run::Checkpoint::Latest)
            .resolve(&manifest)?
            .clone()],
    };
    let tok = glass_run::run_tokenizer(&a.run)?;
    let ids = sequence(&a, &tok)?;
    if let Some(path) = &a.save {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        anyhow::ensure!(
            parent.is_dir(),
            "{}: --save needs an existing, writable directory ({} is not one)",
            path.display(),
            parent.display()
        );
    }
    let several = entries.len() > 1;
    let mut reports = Vec::new();
    for e in &entries {
        let (model, k) = glass_run::load_model(&a.run, Some(e.index))?;
        // A training row holds seq_len + 1 tokens (inputs and the last target): the model
        // sees the first max_seq_len of them.
        let ids = if a.step.is_some() {
            &ids[..ids.len().min(model.cfg.max_seq_len)]
        } else {
            &ids[..]
        };
        let heads = model.cfg.n_heads;
        let attention: Vec<(usize, usize)> = match (a.layer, a.head) {
            (Some(l), Some(h)) => vec![(l, h)],
            (Some(l), None) => (0..heads).map(|h| (l, h)).collect(),
            _ => vec![],
        };
        if several {
            eprintln!("checkpoint {k} (step {})…", e.step);
        }
        let opts = InspectOptions {
            top_k: a.top_k,
            attention,
            keep_tensors: a.save.is_some(),
        };
        let ins =
            inspect(&model, ids, &opts).with_context(|| format!("inspecting checkpoint {k}"))?;
        let saved = match &a.save {
            Some(base) => {
                let path = save_path(base, k, several);
                let meta = HashMap::from([(
                    "glass".to_string(),
                    json!({"run": a.run.display().to_string(), "checkpoint": k, "step": e.step})
                        .to_string(),
                )]);
                let (sha, bytes) = save(&ins, &path, meta)
                    .with_context(|| format!("writing {}", path.display()))?;
                Some(json!({"path": path.display().to_string(), "sha256": sha, "bytes": bytes}))
            }
            None => None,
        };
        if a.json {
            let mut v = serde_json::to_value(&ins)?;
            v["checkpoint"] = json!(k);
            v["step"] = json!(e.step);
            v["token_text"] = json!(ids
                .iter()
                .map(|&t| tok.decode(&[t]).unwrap_or_default())
                .collect::<Vec<_>>());
            if let Some(s) = saved {
                v["saved"] = s;
            }
            reports.push(v);
        } else {
            println!(
                "checkpoint {k} (step {}): {} tokens, {} layers; lens: top-1 token (#rank of the actual next token) per residual stream",
                e.step,
                ids.len(),
                ins.layers
            );
            print_table(&ins, &tok);
            for m in &ins.attention {
                println!("attention, layer {} head {} (row: query position; columns: key positions 0..=row)", m.layer, m.head);
                for (p, row) in m.probs.iter().enumerate() {
                    let cells: Vec<String> = row[..=p].iter().map(|x| format!("{x:.3}")).collect();
                    println!("{p:>5} {}", cells.join(" "));
                }
            }
            if let Some(s) = saved {
                println!(
                    "saved {} ({} bytes, sha256 {})",
                    s["path"].as_str().unwrap_or(""),
                    s["bytes"],
                    s["sha256"].as_str().unwrap_or("")
                );
            }
        }
    }
    if a.json {
        let out = if several {
            serde_json::Value::Array(reports)
        } else {
            reports.pop().unwrap_or_default()
        };
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
