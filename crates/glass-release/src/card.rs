//! `OUT/README.md`: the model and data card of a release — what was trained on what, every
//! checkpoint with its scores and hashes, and how to load, rebuild and verify it without
//! Glass.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use glass_data::PreparedData;
use glass_run::RunConfig;

use crate::layout::{ReleaseFile, ReleaseManifest};
use crate::metrics::RunMetrics;

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:.4}"))
}

/// The card's Markdown.
pub(crate) fn card(
    cfg: &RunConfig,
    data: &PreparedData,
    m: &ReleaseManifest,
    files: &[ReleaseFile],
    metrics: &RunMetrics,
) -> String {
    let mc = &cfg.model;
    let dm = data.manifest();
    let b = data.rows_per_step() as u64;
    let row_len = data.row_len() as u64;
    let spc = data.steps_per_chunk();
    let mut s = String::new();
    let _ = writeln!(s, "# {} — a Glass release\n", m.run_name);
    let _ = writeln!(
        s,
        "Every checkpoint of run `{}` (id `{}`) as a transformers `LlamaForCausalLM` folder, the exact \
         training rows between checkpoints (LLM360's JSONL layout), the metrics, and a manifest \
         with the sha256 of every file. Written by Glass {}.\n",
        m.run_name, m.run_id, m.glass_version
    );
    let _ = writeln!(s, "## Model\n");
    let _ = writeln!(s, "| field | value |\n|---|---|");
    for (k, v) in [
        (
            "architecture",
            "LLaMA (pre-norm RMSNorm, RoPE, SwiGLU)".to_string(),
        ),
        ("vocab_size", mc.vocab_size.to_string()),
        ("hidden_size (d_model)", mc.d_model.to_string()),
        ("num_hidden_layers", mc.n_layers.to_string()),
        ("num_attention_heads", mc.n_heads.to_string()),
        ("num_key_value_heads", mc.n_kv_heads.to_string()),
        ("intermediate_size", mc.ffn_hidden.to_string()),
        ("max_position_embeddings", mc.max_seq_len.to_string()),
        ("rope_theta", mc.rope_theta.to_string()),
        ("rms_norm_eps", mc.norm_eps.to_string()),
        ("tie_word_embeddings", mc.tie_embeddings.to_string()),
        ("weights dtype in the folders", m.dtype.clone()),
        ("config sha256", format!("`{}`", m.config_sha256)),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let tokens: u64 = dm
        .stages
        .iter()
        .fold(0u64, |a, x| a.saturating_add(x.tokens));
    let _ = writeln!(s, "\n## Data\n");
    let _ = writeln!(
        s,
        "{} steps of {b} rows × {row_len} tokens (inputs plus the shifted target) = {tokens} tokens, in {} chunks \
         of {spc} steps. Tokenizer: `tokenizer.json` ({} ids, sha256 `{}`). Data manifest sha256 \
         `{}` (`glass/data-manifest.json`).\n",
        dm.n_steps,
        dm.chunks.len(),
        dm.tokenizer.vocab_size,
        dm.tokenizer.sha256,
        m.data_manifest_sha256
    );
    let _ = writeln!(s, "### Curriculum\n");
    let _ = writeln!(
        s,
        "| stage | steps | tokens | sources (weight, rows, documents, FIM documents, epochs at end) |\n|---|---|---|---|"
    );
    for st in &dm.stages {
        let srcs: Vec<String> = st
            .sources
            .iter()
            .map(|x| {
                format!(
                    "{} ({}, {} rows, {} docs, {} FIM, {:.2} epochs)",
                    x.source, x.weight, x.rows, x.docs, x.fim_docs, x.epochs
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {}–{} | {} | {} |",
            st.name,
            st.first_step,
            st.first_step + st.n_steps,
            st.tokens,
            srcs.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\n### Sources\n\n| source | documents | tokens | input files |\n|---|---|---|---|"
    );
    for src in &dm.sources {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            src.name,
            src.docs,
            src.tokens,
            src.units.len()
        );
    }

    // Checkpoints: val loss, eval scores, hashes.
    let mut evals: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in &metrics.evals {
        evals
            .entry(e.checkpoint)
            .or_default()
            .push(format!("{} {} {:.4}", e.task, e.metric, e.value));
    }
    let bpb: BTreeMap<u32, Option<f64>> = metrics
        .checkpoints
        .iter()
        .map(|c| (c.checkpoint, c.val_bpb))
        .collect();
    let weights_sha = |dir: &str| -> String {
        let w: Vec<&ReleaseFile> = files
            .iter()
            .filter(|f| {
                f.path.starts_with(&format!("{dir}/"))
                    && !f.path[dir.len() + 1..].contains('/')
                    && f.path.ends_with(".safetensors")
            })
            .collect();
        match w.as_slice() {
            [one] => format!("`{}`", one.sha256),
            [] => "—".into(),
            many => format!("{} shards (see manifest.json)", many.len()),
        }
    };
    let _ = writeln!(s, "\n## Checkpoints\n");
    let _ = writeln!(
        s,
        "`checkpoints/ckpt_KKK` is Glass checkpoint K: the model after training steps `[0, step)`. \
         Checkpoint 0 is the initial weights; the data between two consecutive chunk checkpoints is \
         one `data/train_NNN.jsonl`.\n"
    );
    let _ = writeln!(
        s,
        "| ckpt | step | tokens | val loss (nats/token) | val bits/byte | evals | checkpoint sha256 (state.json) | model.safetensors sha256 |\n|---|---|---|---|---|---|---|---|"
    );
    for c in &m.checkpoints {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | `{}` | {} |",
            c.dir.rsplit('/').next().unwrap_or(&c.dir),
            c.step,
            c.tokens,
            fmt_opt(c.val_loss),
            fmt_opt(bpb.get(&c.index).copied().flatten()),
            evals.get(&c.index).map_or("—".into(), |v| v.join("; ")),
            c.checkpoint_sha256,
            weights_sha(&c.dir)
        );
    }
    let with_opt = m.checkpoints.iter().any(|c| c.with_optimizer);
    let last = m.checkpoints.last().map_or("ckpt_000".into(), |c| {
        c.dir.rsplit('/').next().unwrap_or(&c.dir).to_string()
    });
    let _ = writeln!(s, "\n## Load a checkpoint in transformers\n");
    let _ = writeln!(
        s,
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\
         model = AutoModelForCausalLM.from_pretrained(\"checkpoints/{last}\")\n\
         tok = AutoTokenizer.from_pretrained(\"checkpoints/{last}\")\n\
         ids = tok(\"To be\", return_tensors=\"pt\").input_ids\n\
         print(tok.decode(model.generate(ids, max_new_tokens=20)[0]))\n```\n"
    );
    let _ = writeln!(s, "## Rebuild the batch of step N\n");
    let _ = writeln!(
        s,
        "The global batch of step N is rows `[N·{b}, (N+1)·{b})` of the training stream. Chunk \
         `c = N // {spc}` holds steps `[c·{spc}, (c+1)·{spc})`, so the batch is lines \
         `[(N − c·{spc})·{b}, (N − c·{spc} + 1)·{b})` of `data/train_<c>.jsonl` (0-based). Each row \
         has {row_len} ids: the model's inputs are `token_ids[:-1]`, its targets `token_ids[1:]`. \
         The same line of `data/train_<c>.segments.jsonl` says which document, token range and byte \
         range every span of the row comes from (`kind`: 0 text, 1 BOS, 2 EOS, 3–5 FIM sentinels; \
         see Glass's `docs/data-format.md`).\n"
    );
    let _ = writeln!(
        s,
        "```python\nimport json, itertools\nB, S = {b}, {spc}\nN = 7\nc = N // S\n\
         with open(f\"data/train_{{c:03d}}.jsonl\") as f:\n    \
         first = (N - c * S) * B\n    \
         batch = [json.loads(l)[\"token_ids\"] for l in itertools.islice(f, first, first + B)]\n```\n"
    );
    let _ = writeln!(s, "## Verify\n");
    let _ = writeln!(
        s,
        "`manifest.json` lists every other file with its sha256 and size. With Glass: `glass verify .` \
         (names any changed, missing or extra file). Without:\n\n\
         ```python\nimport hashlib, json\nm = json.load(open(\"manifest.json\"))\n\
         for f in m[\"files\"]:\n    h = hashlib.sha256(open(f[\"path\"], \"rb\").read()).hexdigest()\n    \
         assert h == f[\"sha256\"], f[\"path\"]\n```\n"
    );
    if with_opt {
        let _ = writeln!(
            s,
            "## Continue training\n\nEach `checkpoints/ckpt_KKK/glass/` holds Glass's exact training state \
             (`state.json`, the AdamW moments in `optimizer.safetensors`). `glass import release . RUN` \
             turns this release back into a Glass run (it re-prepares the data from `glass/run/glass.toml` \
             and checks it against the pinned data manifest); then `glass verify RUN --replay K` \
             recomputes checkpoint K from K−1 bit for bit and `glass train RUN` continues.\n"
        );
    }
    s
}
