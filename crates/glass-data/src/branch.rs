//! A branch's data: a branch that continues another run's stream from a checkpoint
//! (`glass train NEW --from RUN --checkpoint K --continue`) reads the parent's rows, by
//! hash, from the parent's data directory instead of copying them. Its
//! `data/manifest.json` is the parent's, plus a [`BaseData`] record naming where the
//! files are, the parent manifest's sha256 and the step the branch starts at.

use std::path::Path;

use crate::chunk::{chunk_stem, write_chunk, ChunkMeta};
use crate::config::DataConfig;
use crate::error::{DataError, Result};
use crate::manifest::{hash_entry, BaseData, Manifest, ManifestFile, MANIFEST_FILE};
use crate::order::Plan;
use crate::pack::{Framing, Packer};
use crate::store::{read_header as read_store_header, SourceView};

/// What [`link`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// The branch's data manifest was written.
    Created,
    /// It already linked the same base at the same step (a re-run after a crash).
    Existing,
}

/// Makes `run_dir`'s data the rows of `parent_dir`'s data, read from there by hash, for a
/// branch that starts training at `from_step`. `run_dir`'s `[data]` must be the
/// parent's, except for the stages' weights and FIM rates: then the rows from
/// `from_step` on (a chunk boundary) are packed anew with them (see [`reweighted`]).
pub fn link(run_dir: &Path, parent_dir: &Path, from_step: u64) -> Result<Linked> {
    let cfg = DataConfig::load(run_dir)?;
    let parent = Manifest::load(parent_dir)?;
    parent.check_base(parent_dir)?;
    let parent_manifest = parent_dir.join("data").join(MANIFEST_FILE);
    if from_step > parent.n_steps {
        return Err(DataError::Range(format!(
            "step {from_step} is past the end of {}'s data ({} steps)",
            parent_dir.display(),
            parent.n_steps
        )));
    }
    let base = match &parent.base {
        // A branch of a branch reads from the same place as its parent.
        Some(b) if b.local.is_empty() => BaseData {
            from_step,
            ..b.clone()
        },
        Some(_) => {
            return Err(DataError::Config(format!(
                "{}: the parent holds rows of its own after its branch point; branching it again with --continue is not supported — branch from its parent instead",
                parent_manifest.display()
            )))
        }
        None => BaseData {
            run_dir: std::fs::canonicalize(parent_dir)
                .map_err(|e| DataError::Io {
                    path: parent_dir.to_path_buf(),
                    source: e,
                })?
                .display()
                .to_string(),
            manifest_sha256: glass_io::open::sha256_beneath(parent_dir, &parent_manifest, None)?.0,
            from_step,
            local: vec![],
        },
    };
    let mine = run_dir.join("data").join(MANIFEST_FILE);
    if mine.exists() {
        let existing = Manifest::load(run_dir)?;
        return match &existing.base {
            Some(b)
                if b.run_dir == base.run_dir
                    && b.manifest_sha256 == base.manifest_sha256
                    && b.from_step == from_step =>
            {
                if existing.config_sha256 != cfg.hash() {
                    return Err(DataError::Config(format!(
                        "{}: [data] changed since this branch's data was made ({}); restore it",
                        run_dir.join(crate::config::RUN_CONFIG_FILE).display(),
                        differences(&existing.config, &cfg).join(", ")
                    )));
                }
                Ok(Linked::Existing)
            }
            Some(b) => Err(DataError::Config(format!(
                "{}: already reads the data of {} from step {}, not {} from step {from_step}; start the branch in a new directory",
                mine.display(),
                b.run_dir,
                b.from_step,
                base.run_dir
            ))),
            None => Err(DataError::Config(format!(
                "{}: this directory holds data prepared for itself, but a --continue branch reads its parent's rows; remove {} and run the branch command again",
                mine.display(),
                run_dir.join("data").display()
            ))),
        };
    }
    let diffs = differences(&parent.config, &cfg);
    let m = if diffs.is_empty() {
        Manifest {
            base: Some(base),
            ..parent
        }
    } else if diffs
        .iter()
        .all(|d| d.ends_with(" weights") || d.ends_with(" fim_rate"))
    {
        reweighted(run_dir, parent_dir, parent, cfg, base)?
    } else {
        return Err(DataError::Config(format!(
            "{}: [data] differs from the parent's ({}): a --continue branch trains on the parent's rows, so only the stages' weights and fim_rate may change (for the steps after the branch point) — restore the other keys as {} has them",
            run_dir.join(crate::config::RUN_CONFIG_FILE).display(),
            diffs.join(", "),
            parent_dir.join(crate::config::RUN_CONFIG_FILE).display()
        )));
    };
    let dir = run_dir.join("data");
    glass_io::open::create_dir_beneath(run_dir, &dir)?;
    glass_io::atomic::write_atomic_beneath(
        run_dir,
        &mine,
        &serde_json::to_vec_pretty(&m).expect("manifest serialises"),
    )?;
    Ok(Linked::Created)
}

/// The data of a branch that re-weights (or drops) sources from `base.from_step` on: the
/// parent's chunks before it, by hash; from it, chunks of its own, packed by replaying
/// the parent's packing up to `from_step` (the streams' positions there are a pure
/// function of the parent's config) and then drawing with the branch's weights.
fn reweighted(
    run_dir: &Path,
    parent_dir: &Path,
    parent: Manifest,
    cfg: DataConfig,
    mut base: BaseData,
) -> Result<Manifest> {
    let spc = parent.config.steps_per_chunk;
    let from = base.from_step;
    let cfg_path = run_dir.join(crate::config::RUN_CONFIG_FILE);
    if !from.is_multiple_of(spc) {
        return Err(DataError::Config(format!(
            "{}: changing stage weights needs a branch point at a chunk boundary (a multiple of steps_per_chunk = {spc}), but the checkpoint is at step {from}; branch at step {} or {}",
            cfg_path.display(),
            from / spc * spc,
            (from / spc + 1) * spc
        )));
    }
    for st in &cfg.stages {
        for (name, w) in &st.weights {
            if *w > 0.0 && !parent.sources.iter().any(|s| &s.name == name) {
                return Err(DataError::Config(format!(
                    "{}: stage `{}` weights source `{name}`, which the parent never tokenized (no stage trained on it and it is no validation source); a branch can re-weight or drop the parent's sources, not add new ones",
                    cfg_path.display(),
                    st.name
                )));
            }
        }
    }
    // The token stores, checked against the hashes the parent's manifest lists.
    let tokens_dir = parent.dir_of(parent_dir, "tokens").join("tokens");
    let tokens_root = parent.root_of(parent_dir, "tokens");
    for f in parent
        .files
        .iter()
        .filter(|f| f.path.starts_with("tokens/"))
    {
        let p = tokens_dir.join(f.path.trim_start_matches("tokens/"));
        let (sha, bytes) = glass_io::open::sha256_beneath(&tokens_root, &p, Some(f.bytes))?;
        if sha != f.sha256 || bytes != f.bytes {
            return Err(DataError::Format(format!(
                "{}: sha256 {sha} ({bytes} bytes) but {}'s data manifest lists {} ({} bytes); restore the parent's data",
                p.display(),
                parent_dir.display(),
                f.sha256,
                f.bytes
            )));
        }
    }
    let mut views: Vec<Option<SourceView>> = Vec::new();
    for src in &cfg.sources {
        let view = match parent.sources.iter().find(|s| s.name == src.name) {
            Some(rec) => {
                let headers = (0..rec.n_shards)
                    .map(|j| {
                        read_store_header(&tokens_root, &tokens_dir, &src.name, j, rec.n_shards)?
                            .ok_or_else(|| {
                                DataError::Format(format!(
                                    "{}: store {} {j}/{} missing",
                                    tokens_dir.display(),
                                    src.name,
                                    rec.n_shards
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(SourceView::open(&tokens_root, &tokens_dir, &headers)?)
            }
            None => None,
        };
        views.push(view);
    }
    // The parent's deduplication and held-out documents: the same documents are left
    // out, read from its removed-documents and held-out files, checked against the
    // parent's manifest.
    let mut removed: Vec<(String, u64)> = Vec::new();
    let mut cut = crate::dedup::Removals::default();
    let mut removed_file = std::path::PathBuf::new();
    if parent.heldout.is_some() {
        removed.extend(crate::heldout::withheld(parent_dir, &parent)?);
    }
    if let Some(d) = &parent.dedup {
        let f = parent
            .files
            .iter()
            .find(|f| f.path == d.file)
            .ok_or_else(|| {
                DataError::Format(format!(
                    "{}'s data manifest lists no {} file",
                    parent_dir.display(),
                    d.file
                ))
            })?;
        let root = parent.root_of(parent_dir, &d.file);
        let p = parent.dir_of(parent_dir, &d.file).join(&d.file);
        let (sha, _) = glass_io::open::sha256_beneath(&root, &p, Some(f.bytes))?;
        if sha != f.sha256 {
            return Err(DataError::Format(format!(
                "{}: sha256 {sha} but {}'s data manifest lists {}; restore the parent's data",
                p.display(),
                parent_dir.display(),
                f.sha256
            )));
        }
        cut = crate::dedup::read_removed(&root, &p)?;
        removed_file = p;
        removed.append(&mut cut.docs);
    }
    if !removed.is_empty() || !cut.spans.is_empty() {
        for (s, src) in cfg.sources.iter().enumerate() {
            if let Some(v) = views[s].as_mut() {
                v.cut_spans(&cut.spans_of(&src.name))
                    .map_err(|e| DataError::Format(format!("{}: {e}", removed_file.display())))?;
                let mut docs: Vec<u64> = removed
                    .iter()
                    .filter(|r| r.0 == src.name)
                    .map(|r| r.1)
                    .collect();
                docs.sort_unstable();
                docs.dedup();
                v.remove_docs(&docs);
            }
        }
    }
    let framing = Framing::new(&parent.config, parent.tokenizer.specials);
    let mut packer = Packer::new(&parent.config, framing, &views);
    let plan = Plan::new(&parent.config);
    let first_new = from / spc;
    for _ in 0..first_new {
        packer.next_chunk();
    }
    packer.reweight(&cfg, from);
    let data_dir = run_dir.join("data");
    let chunks_dir = data_dir.join("chunks");
    glass_io::open::create_dir_beneath(run_dir, &chunks_dir)?;
    let config_sha256 = cfg.hash();
    let mut files: Vec<ManifestFile> = parent
        .files
        .iter()
        .filter(|f| {
            f.path
                .strip_prefix("chunks/chunk-")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<u64>().ok())
                .is_none_or(|c| c < first_new)
        })
        .cloned()
        .collect();
    for c in first_new..plan.n_chunks() {
        let rows = packer.next_chunk();
        let (a, b) = plan.chunk_steps(c);
        let meta = ChunkMeta {
            chunk: Some(c),
            first_step: a,
            n_steps: b - a,
            first_row: a * plan.rows_per_step,
            row_len: plan.row_len,
            dtype: parent.tokenizer.dtype,
            config_sha256: config_sha256.clone(),
            tokenizer_sha256: parent.tokenizer.sha256.clone(),
        };
        let stem = chunk_stem(c);
        let (h, _) = write_chunk(&chunks_dir, &stem, &meta, &rows)?;
        for f in [&h.tokens, &h.segments] {
            files.push(ManifestFile {
                path: format!("chunks/{}", f.file),
                sha256: f.sha256.clone(),
                bytes: f.bytes,
            });
            base.local.push(format!("chunks/{}", f.file));
        }
        files.push(hash_entry(&data_dir, &format!("chunks/{stem}.json"))?);
        base.local.push(format!("chunks/{stem}.json"));
    }
    Ok(Manifest {
        config: cfg,
        config_sha256,
        stages: packer.stats().to_vec(),
        files,
        base: Some(base),
        ..parent
    })
}

/// The `[data]` keys in which `b` differs from `a` (empty when they give the same rows).
pub fn differences(a: &DataConfig, b: &DataConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut key = |name: &str, differ: bool| {
        if differ {
            out.push(name.to_string());
        }
    };
    key("seed", a.seed != b.seed);
    key("dedup", a.dedup != b.dedup);
    key(
        "decontaminate",
        (
            &a.decontaminate,
            a.decontaminate_ngram,
            &a.decontaminate_data_dir,
        ) != (
            &b.decontaminate,
            b.decontaminate_ngram,
            &b.decontaminate_data_dir,
        ),
    );
    key("seq_len", a.seq_len != b.seq_len);
    key("rows_per_step", a.rows_per_step != b.rows_per_step);
    key("steps_per_chunk", a.steps_per_chunk != b.steps_per_chunk);
    key("token_dtype", a.token_dtype != b.token_dtype);
    key("[data.tokenizer]", a.tokenizer != b.tokenizer);
    key("[[data.sources]]", a.sources != b.sources);
    key("[data.validation]", a.validation != b.validation);
    if a.stages.len() != b.stages.len() {
        key("[[data.stages]] (count)", true);
    } else {
        for (x, y) in a.stages.iter().zip(&b.stages) {
            key(&format!("stage `{}` name", x.name), x.name != y.name);
            key(&format!("stage `{}` tokens", x.name), x.tokens != y.tokens);
            key(
                &format!("stage `{}` weights", x.name),
                x.weights != y.weights,
            );
            key(
                &format!("stage `{}` fim_rate", x.name),
                x.fim_rate != y.fim_rate,
            );
        }
    }
    out
}
