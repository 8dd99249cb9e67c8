//! `glass data prepare`: tokenizer, tokenization (optionally as `--shard i/N` jobs),
//! packing into chunk files, validation rows and the manifest, in that order.
//!
//! Every step is resumable: tokenized stores and chunks are reused only when their headers
//! name the same config, tokenizer and input hashes and their files still hash right; the
//! manifest is removed first and written last, so a run is usable only once complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use serde::Serialize;

use crate::chunk::{chunk_stem, write_chunk, ChunkMeta};
use crate::config::{DataConfig, SourceKind};
use crate::decontaminate::{
    matches as decontaminate_matches, record as decontaminate_record, BenchGrams, BenchItem,
    BenchMatch,
};
use crate::dedup::{
    cluster, fingerprint_source, place as dedup_place, write_removed, DedupRecord,
    DedupSourceRecord, Removed, RemovedDoc, SubstringRemoved,
};
use crate::dtype::TokenDtype;
use crate::error::{DataError, IoContext, Result};
use crate::manifest::{
    hash_entry, ChunkRecord, Manifest, ManifestFile, SourceRecord, TokenizerRecord, MANIFEST_FILE,
    MANIFEST_FORMAT,
};
use crate::minhash::MinHasher;
use crate::order::Plan;
use crate::pack::{pack_validation, Framing, Packer};
use crate::sources::{list_units, read_unit, RawDoc, Unit, UnitCounts, UnitLocation};
use crate::store::{
    files_match, read_header, shard_counts_present, FileHash, SourceView, StoreHeader, StoreWriter,
    STORE_FORMAT,
};
use crate::tokenizer::{add_missing_specials, train_bpe, GlassTokenizer};
use glass_io::atomic::{remove_if_exists, sha256_file, sha256_hex, write_atomic};
use glass_io::progress::Progress;

/// One shard job out of `count`: tokenizes the units whose global index is `index (mod count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This job's index, `0..count`.
    pub index: u32,
    /// Number of jobs.
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or("expected i/N, e.g. 0/4")?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index `{i}`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count `{n}`"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < N"));
        }
        Ok(Self { index, count })
    }
}

/// How to run `prepare`.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Only tokenize this shard (no chunks); combine later with a plain `prepare`.
    pub shard: Option<Shard>,
    /// Only obtain the tokenizer (run once before shard jobs).
    pub tokenizer_only: bool,
    /// Worker threads (default: all cores). Never changes the output.
    pub threads: Option<usize>,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// The items of the `[data] decontaminate` tasks (loaded by the caller, which knows
    /// the benchmarks); required when the config names tasks.
    pub benchmark: Option<Vec<BenchItem>>,
}

/// What a `prepare` call did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    /// Shard count of the stores used.
    pub n_shards: u32,
    /// Shards tokenized by this call.
    pub shards_tokenized: Vec<u32>,
    /// Shards reused from an earlier call.
    pub shards_reused: Vec<u32>,
    /// Tokens produced by tokenization in this call.
    pub tokens_tokenized: u64,
    /// Input bytes tokenized in this call.
    pub bytes_tokenized: u64,
    /// Seconds spent tokenizing.
    pub tokenize_seconds: f64,
    /// Chunks written.
    pub chunks_written: u64,
    /// Chunks already present and identical.
    pub chunks_reused: u64,
    /// Total steps of the run.
    pub n_steps: u64,
    /// Whether chunks and manifest are complete (false for shard and tokenizer-only jobs).
    pub complete: bool,
}

/// Prepares `run_dir`'s data per its `glass.toml` `[data]` table.
pub fn prepare(run_dir: &Path, opts: &PrepareOptions) -> Result<PrepareReport> {
    let cfg = DataConfig::load(run_dir)?;
    if let Some(b) = Manifest::load(run_dir).ok().and_then(|m| m.base) {
        return Err(DataError::Config(format!(
            "{}/data reads the rows of {} by hash (a branch made with `glass train --continue`); there is nothing to prepare — `glass data verify {}` checks them",
            run_dir.display(),
            b.run_dir,
            run_dir.display()
        )));
    }
    if let Some(s) = cfg.sources.iter().find(|s| s.kind == SourceKind::Release) {
        return Err(DataError::Config(format!(
            "source `{}` is kind = \"release\": {}/data was imported from a published release (rows as they were trained on), not built from sources, so `glass data prepare` cannot rebuild it; `glass data verify` checks it",
            s.name,
            run_dir.display()
        )));
    }
    match opts.threads {
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(glass_io::disk::cap_threads(t))
            .build()
            .map_err(|e| DataError::Config(format!("thread pool: {e}")))?
            .install(|| Prepare::new(run_dir)?.run(opts)),
        None => Prepare::new(run_dir)?.run(opts),
    }
}

/// State shared by the steps of one `prepare`.
struct Prepare {
    run_dir: PathBuf,
    data: PathBuf,
    cfg: DataConfig,
    units: Vec<Option<Vec<Unit>>>,
    unit_sha: HashMap<(usize, usize), String>,
}

fn unit_sha(unit: &Unit) -> Result<String> {
    match &unit.location {
        UnitLocation::Embedded(t) => Ok(sha256_hex(t.as_bytes())),
        UnitLocation::File(p) => Ok(sha256_file(p)?.0),
    }
}

fn source_config_sha(cfg: &DataConfig, s: usize) -> String {
    sha256_hex(&serde_json::to_vec(&cfg.sources[s]).expect("json"))
}

impl Prepare {
    fn new(run_dir: &Path) -> Result<Self> {
        let cfg = DataConfig::load(run_dir)?;
        let used = cfg.used_sources();
        let mut units = vec![None; cfg.sources.len()];
        let mut needed = used.clone();
        if let Some(ts) = &cfg.tokenizer.train_sources {
            needed.extend(ts.iter().filter_map(|n| cfg.source_index(n)));
        }
        for s in needed {
            if units[s].is_none() {
                units[s] = Some(list_units(&cfg.sources[s], run_dir)?);
            }
        }
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            data: run_dir.join("data"),
            cfg,
            units,
            unit_sha: HashMap::new(),
        })
    }

    fn unit_hash(&mut self, s: usize, u: usize) -> Result<String> {
        if let Some(h) = self.unit_sha.get(&(s, u)) {
            return Ok(h.clone());
        }
        let h = unit_sha(&self.units[s].as_ref().expect("listed")[u])?;
        self.unit_sha.insert((s, u), h.clone());
        Ok(h)
    }

    fn run(mut self, opts: &PrepareOptions) -> Result<PrepareReport> {
        crate::preflight::ensure_data_replaceable(&self.run_dir, &self.cfg)?;
        crate::preflight::ensure_chunks_fit(&self.run_dir, &self.cfg)?;
        // Every directory prepared data is written to must be a directory of the run,
        // not a link leading elsewhere (docs/threat-model.md).
        for dir in [self.data.join("chunks"), self.data.join("tokens")] {
            glass_io::open::check_write_beneath(&self.run_dir, &dir)?;
        }
        for s in &self.cfg.sources {
            let d = self.data.join("tokens").join(&s.name);
            glass_io::open::check_write_beneath(&self.run_dir, &d)?;
        }
        if !self.cfg.decontaminate.is_empty()
            && opts.shard.is_none()
            && !opts.tokenizer_only
            && opts.benchmark.is_none()
        {
            return Err(DataError::Config(
                "decontaminate names benchmark tasks, but their items were not given to prepare"
                    .into(),
            ));
        }
        std::fs::create_dir_all(&self.data).at(&self.data)?;
        remove_if_exists(&self.data.join(MANIFEST_FILE))?;
        let (tok, tok_rec) = self.tokenizer()?;
        let mut report = PrepareReport::default();
        if opts.tokenizer_only {
            return Ok(report);
        }
        let tokens_dir = self.data.join("tokens");
        let n = match opts.shard {
            Some(s) => s.count,
            None => self.choose_shard_count(&tokens_dir),
        };
        report.n_shards = n;
        let jobs: Vec<u32> = match opts.shard {
            Some(s) => vec![s.index],
            None => (0..n).collect(),
        };
        let mut todo = Vec::new();
        for j in jobs {
            if self.shard_is_current(&tokens_dir, &tok_rec, j, n)? {
                report.shards_reused.push(j);
            } else {
                todo.push(j);
            }
        }
        if !todo.is_empty() {
            let total: u64 = todo
                .iter()
                .map(|&j| {
                    self.assigned(j, n)
                        .iter()
                        .map(|&(s, u)| self.units[s].as_ref().expect("listed")[u].bytes)
                        .sum::<u64>()
                })
                .sum();
            let progress = Progress::new("tokenize", total, opts.progress);
            for &j in &todo {
                self.tokenize_shard(&tokens_dir, &tok, &tok_rec, j, n, &progress)?;
                report.shards_tokenized.push(j);
            }
            progress.finish();
            (
                report.tokens_tokenized,
                report.bytes_tokenized,
                report.tokenize_seconds,
            ) = progress.totals();
        }
        if opts.shard.is_some() {
            return Ok(report);
        }
        self.build(&tokens_dir, &tok, tok_rec, n, opts, &mut report)?;
        report.complete = true;
        Ok(report)
    }

    /// Loads or trains the tokenizer into `data/tokenizer.json`.
    fn tokenizer(&mut self) -> Result<(GlassTokenizer, TokenizerRecord)> {
        let path = self.data.join("tokenizer.json");
        let tcfg = self.cfg.tokenizer.clone();
        let (bytes, trained, added) = if let Some(p) = &tcfg.path {
            let src = self.run_dir.join(p);
            let raw =
                glass_io::open::open_regular(&src)?.read_all(glass_io::open::MAX_RECORD_BYTES)?;
            let mut wanted = Vec::new();
            if self.cfg.uses_fim() {
                wanted.extend([
                    tcfg.fim.prefix.clone(),
                    tcfg.fim.middle.clone(),
                    tcfg.fim.suffix.clone(),
                ]);
            }
            let (bytes, added) = add_missing_specials(&raw, &wanted)?;
            (bytes, false, added)
        } else {
            let train: Vec<usize> = match &tcfg.train_sources {
                Some(names) => names
                    .iter()
                    .filter_map(|n| self.cfg.source_index(n))
                    .collect(),
                None => self.cfg.training_sources(),
            };
            let mut key_parts = vec![serde_json::to_value(&tcfg).expect("json")];
            for &s in &train {
                for u in 0..self.units[s].as_ref().expect("listed").len() {
                    let h = self.unit_hash(s, u)?;
                    key_parts.push(serde_json::json!([
                        self.cfg.sources[s].name,
                        self.units[s].as_ref().expect("listed")[u].path,
                        h
                    ]));
                }
            }
            let key = sha256_hex(&serde_json::to_vec(&key_parts).expect("json"));
            let key_path = self.data.join("tokenizer.key");
            let read = |p: &Path| {
                glass_io::open::read_beneath(&self.run_dir, p, glass_io::open::MAX_RECORD_BYTES)
            };
            let reuse = read(&key_path)
                .ok()
                .is_some_and(|k| String::from_utf8_lossy(&k).trim() == key)
                && path.exists();
            let bytes = if reuse {
                read(&path)?
            } else {
                remove_if_exists(&key_path)?;
                let bytes = self.train_tokenizer(&train)?;
                write_atomic(&path, &bytes)?;
                write_atomic(&key_path, key.as_bytes())?;
                bytes
            };
            (bytes, true, vec![])
        };
        if glass_io::open::read_beneath(&self.run_dir, &path, glass_io::open::MAX_RECORD_BYTES)
            .ok()
            .as_deref()
            != Some(&bytes[..])
        {
            write_atomic(&path, &bytes)?;
        }
        let tok = GlassTokenizer::from_json(&bytes, &tcfg)?;
        if self.cfg.uses_fim()
            && (tok.specials().fim_prefix.is_none()
                || tok.specials().fim_middle.is_none()
                || tok.specials().fim_suffix.is_none())
        {
            return Err(DataError::Tokenizer(
                "FIM is configured but its sentinel tokens are missing".into(),
            ));
        }
        let dtype = TokenDtype::for_vocab(self.cfg.token_dtype, tok.vocab_size())?;
        let rec = TokenizerRecord {
            file: "tokenizer.json".into(),
            sha256: sha256_hex(&bytes),
            vocab_size: tok.vocab_size(),
            dtype,
            specials: tok.specials(),
            trained,
            added_tokens: added,
        };
        Ok((tok, rec))
    }

    fn train_tokenizer(&self, train: &[usize]) -> Result<Vec<u8>> {
        let error = std::sync::Mutex::new(None::<DataError>);
        let docs = train.iter().flat_map(|&s| {
            let src = &self.cfg.sources[s];
            self.units[s]
                .as_ref()
                .expect("listed")
                .iter()
                .flat_map(|u| {
                    let mut texts = Vec::new();
                    if let Err(e) = read_unit(src, u, &mut |d| {
                        texts.push(d.text);
                        Ok(())
                    }) {
                        error.lock().expect("lock").get_or_insert(e);
                    }
                    texts
                })
        });
        let bytes = train_bpe(&self.cfg.tokenizer, docs)?;
        if let Some(e) = error.into_inner().expect("lock") {
            return Err(e);
        }
        Ok(bytes)
    }

    /// `(source, unit)` pairs of shard `j` of `n`: global unit index ≡ j (mod n), counting
    /// the used sources' units in config order.
    fn assigned(&self, j: u32, n: u32) -> Vec<(usize, usize)> {
        let mut g = 0u64;
        let mut out = Vec::new();
        for s in self.cfg.used_sources() {
            for u in 0..self.units[s].as_ref().expect("listed").len() {
                if g % n as u64 == j as u64 {
                    out.push((s, u));
                }
                g += 1;
            }
        }
        out
    }

    fn choose_shard_count(&self, tokens_dir: &Path) -> u32 {
        let used = self.cfg.used_sources();
        let mut counts: Vec<u32> = used
            .iter()
            .flat_map(|&s| shard_counts_present(tokens_dir, &self.cfg.sources[s].name))
            .collect();
        counts.sort_unstable();
        counts.dedup();
        let present = |n: u32| -> usize {
            used.iter()
                .map(|&s| {
                    (0..n)
                        .filter(|&j| {
                            read_header(&self.run_dir, tokens_dir, &self.cfg.sources[s].name, j, n)
                                .ok()
                                .flatten()
                                .is_some()
                        })
                        .count()
                })
                .sum()
        };
        let complete = |n: u32| present(n) == used.len() * n as usize;
        if let Some(&n) = counts.iter().rev().find(|&&n| complete(n)) {
            return n;
        }
        counts
            .iter()
            .copied()
            .max_by_key(|&n| (present(n), n))
            .unwrap_or(1)
    }

    fn shard_is_current(
        &mut self,
        tokens_dir: &Path,
        tok: &TokenizerRecord,
        j: u32,
        n: u32,
    ) -> Result<bool> {
        let assigned = self.assigned(j, n);
        for s in self.cfg.used_sources() {
            let Some(h) = read_header(&self.run_dir, tokens_dir, &self.cfg.sources[s].name, j, n)
                .ok()
                .flatten()
            else {
                return Ok(false);
            };
            let mine: Vec<usize> = assigned.iter().filter(|a| a.0 == s).map(|a| a.1).collect();
            let ok = h.format == STORE_FORMAT
                && h.tokenizer_sha256 == tok.sha256
                && h.dtype == tok.dtype
                && h.source_config_sha256 == source_config_sha(&self.cfg, s)
                && h.units.len() == mine.len()
                && h.units.iter().zip(&mine).all(|(r, &u)| {
                    r.index as usize == u
                        && r.path == self.units[s].as_ref().expect("listed")[u].path
                });
            if !ok {
                return Ok(false);
            }
            for (r, &u) in h.units.iter().zip(&mine) {
                if r.counts.sha256 != self.unit_hash(s, u)? {
                    return Ok(false);
                }
            }
            if !files_match(&self.run_dir, tokens_dir, &h)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn tokenize_shard(
        &self,
        tokens_dir: &Path,
        tok: &GlassTokenizer,
        rec: &TokenizerRecord,
        j: u32,
        n: u32,
        progress: &Progress,
    ) -> Result<()> {
        let assigned = self.assigned(j, n);
        for s in self.cfg.used_sources() {
            let src = &self.cfg.sources[s];
            let empty = FileHash {
                file: String::new(),
                sha256: String::new(),
                bytes: 0,
            };
            let header = StoreHeader {
                format: STORE_FORMAT.into(),
                source: src.name.clone(),
                shard: j,
                n_shards: n,
                dtype: rec.dtype,
                tokenizer_sha256: rec.sha256.clone(),
                source_config_sha256: source_config_sha(&self.cfg, s),
                n_docs: 0,
                n_tokens: 0,
                units: vec![],
                tokens: empty.clone(),
                docs: empty,
                meta: None,
            };
            let with_meta = src.id_field.is_some() || !src.metadata_fields.is_empty();
            let mut writer = StoreWriter::create(tokens_dir, header, with_meta)?;
            let mut batch = Batch::default();
            for &(_, u) in assigned.iter().filter(|a| a.0 == s) {
                let unit = &self.units[s].as_ref().expect("listed")[u];
                batch.items.push(Item::Begin(u as u32, unit.path.clone()));
                let counts = read_unit(src, unit, &mut |d| {
                    batch.bytes += d.text.len();
                    batch.items.push(Item::Doc(d));
                    if batch.bytes >= BATCH_BYTES {
                        batch.flush(tok, &mut writer, progress)?;
                    }
                    Ok(())
                })?;
                batch.items.push(Item::End(counts));
            }
            batch.flush(tok, &mut writer, progress)?;
            writer.finish()?;
        }
        Ok(())
    }

    fn build(
        &mut self,
        tokens_dir: &Path,
        tok: &GlassTokenizer,
        tok_rec: TokenizerRecord,
        n: u32,
        opts: &PrepareOptions,
        report: &mut PrepareReport,
    ) -> Result<()> {
        let (benchmark, progress) = (opts.benchmark.as_deref(), opts.progress);
        let cfg = self.cfg.clone();
        let config_sha256 = cfg.hash();
        let mut views: Vec<Option<SourceView>> = (0..cfg.sources.len()).map(|_| None).collect();
        let mut records = Vec::new();
        let mut files = vec![hash_entry(&self.data, "tokenizer.json")?];
        let train = cfg.training_sources();
        for s in cfg.used_sources() {
            let name = &cfg.sources[s].name;
            let headers: Vec<StoreHeader> = (0..n)
                .map(|j| {
                    read_header(&self.run_dir, tokens_dir, name, j, n)?
                        .ok_or_else(|| DataError::Format(format!("store {name} {j}/{n} missing")))
                })
                .collect::<Result<_>>()?;
            let view = SourceView::open(&self.run_dir, tokens_dir, &headers)?;
            let units: Vec<_> = view.units().cloned().collect();
            let sum =
                |f: &dyn Fn(&crate::store::UnitRecord) -> u64| units.iter().map(f).sum::<u64>();
            let rec = SourceRecord {
                name: name.clone(),
                kind: cfg.sources[s].kind,
                role: if train.contains(&s) {
                    "train".into()
                } else {
                    "validation".into()
                },
                docs: view.n_docs(),
                tokens: view.n_tokens(),
                bad_lines: sum(&|u| u.counts.bad_lines),
                invalid_utf8: sum(&|u| u.counts.invalid_utf8),
                blank_lines: sum(&|u| u.counts.blank_lines),
                empty_docs: sum(&|u| u.empty_docs),
                n_shards: n,
                units,
            };
            if view.n_docs() == 0 {
                return Err(DataError::Source {
                    source_name: name.clone(),
                    message: format!(
                        "no documents left ({} empty, {} malformed lines, {} invalid UTF-8 skipped)",
                        rec.empty_docs, rec.bad_lines, rec.invalid_utf8
                    ),
                });
            }
            for h in &headers {
                let dir = format!("tokens/{name}");
                files.push(hash_entry(
                    &self.data,
                    &format!("{dir}/{:05}-of-{:05}.json", h.shard, n),
                )?);
                for f in [Some(&h.tokens), Some(&h.docs), h.meta.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    files.push(ManifestFile {
                        path: format!("{dir}/{}", f.file),
                        sha256: f.sha256.clone(),
                        bytes: f.bytes,
                    });
                }
            }
            records.push(rec);
            views[s] = Some(view);
        }
        self.remove_stale_stores(tokens_dir, n)?;
        let dedup = self.dedup(&mut views, tok, benchmark, progress)?;
        if let Some((_, f)) = &dedup {
            files.push(f.clone());
        } else {
            remove_if_exists(&self.data.join(crate::dedup::REMOVED_FILE))?;
        }
        let heldout = crate::heldout::withhold(
            &self.run_dir,
            &self.data,
            &cfg,
            &self.units,
            &mut views,
            tok,
        )?;
        match &heldout {
            Some((_, f)) => files.push(f.clone()),
            None => remove_if_exists(&self.data.join(crate::heldout::HELDOUT_FILE))?,
        }

        let framing = Framing::new(&cfg, tok.specials());
        let plan = Plan::new(&cfg);
        report.n_steps = plan.n_steps;
        let chunks_dir = self.data.join("chunks");
        std::fs::create_dir_all(&chunks_dir).at(&chunks_dir)?;
        let mut packer = Packer::new(&cfg, framing, &views);
        let mut chunks = Vec::new();
        for c in 0..plan.n_chunks() {
            let rows = packer.next_chunk();
            let (a, b) = plan.chunk_steps(c);
            let meta = ChunkMeta {
                chunk: Some(c),
                first_step: a,
                n_steps: b - a,
                first_row: a * plan.rows_per_step,
                row_len: plan.row_len,
                dtype: tok_rec.dtype,
                config_sha256: config_sha256.clone(),
                tokenizer_sha256: tok_rec.sha256.clone(),
            };
            let stem = chunk_stem(c);
            let (h, written) = write_chunk(&chunks_dir, &stem, &meta, &rows)?;
            if written {
                report.chunks_written += 1;
            } else {
                report.chunks_reused += 1;
            }
            for f in [&h.tokens, &h.segments] {
                files.push(ManifestFile {
                    path: format!("chunks/{}", f.file),
                    sha256: f.sha256.clone(),
                    bytes: f.bytes,
                });
            }
            files.push(hash_entry(&self.data, &format!("chunks/{stem}.json"))?);
            chunks.push(ChunkRecord {
                index: c,
                first_step: a,
                n_steps: b - a,
                header: format!("chunks/{stem}.json"),
            });
        }
        remove_stale_chunks(&chunks_dir, plan.n_chunks())?;
        let stages = packer.stats().to_vec();

        let validation = match &cfg.validation {
            Some(v) => {
                let vs: Vec<(u32, &SourceView)> = v
                    .sources
                    .iter()
                    .filter_map(|n| cfg.source_index(n))
                    .map(|s| (s as u32, views[s].as_ref().expect("validation view")))
                    .collect();
                let rows = pack_validation(&vs, &framing, plan.row_len, v.rows as u64);
                if rows.n_rows == 0 {
                    return Err(DataError::Config(format!(
                        "validation sources hold less than one row of {} tokens",
                        plan.row_len
                    )));
                }
                let meta = ChunkMeta {
                    chunk: None,
                    first_step: 0,
                    n_steps: 0,
                    first_row: 0,
                    row_len: plan.row_len,
                    dtype: tok_rec.dtype,
                    config_sha256: config_sha256.clone(),
                    tokenizer_sha256: tok_rec.sha256.clone(),
                };
                let (h, _) = write_chunk(&self.data, "validation", &meta, &rows)?;
                for f in [&h.tokens, &h.segments] {
                    files.push(ManifestFile {
                        path: f.file.clone(),
                        sha256: f.sha256.clone(),
                        bytes: f.bytes,
                    });
                }
                files.push(hash_entry(&self.data, "validation.json")?);
                Some("validation.json".to_string())
            }
            None => {
                for ext in ["json", "tokens", "segments"] {
                    remove_if_exists(&self.data.join(format!("validation.{ext}")))?;
                }
                None
            }
        };

        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            config: cfg.clone(),
            config_sha256,
            row_len: plan.row_len,
            n_steps: plan.n_steps,
            n_chunks: plan.n_chunks(),
            tokenizer: tok_rec,
            sources: records,
            stages,
            chunks,
            validation,
            files,
            base: None,
            dedup: dedup.map(|d| d.0),
            heldout: heldout.map(|h| h.0),
        };
        write_atomic(
            &self.data.join(MANIFEST_FILE),
            &serde_json::to_vec_pretty(&manifest).expect("json"),
        )?;
        Ok(())
    }

    /// Applies `[data] decontaminate` and `[data.dedup]`, in that order: removes the
    /// training documents sharing an n-gram with a benchmark item, then fingerprints every
    /// other document of the deduplicated sources (re-reading their inputs) and clusters
    /// them in recorded order; leaves the removed documents out of `views` and writes the
    /// removed-documents file. Refuses to remove every document of a source.
    fn dedup(
        &self,
        views: &mut [Option<SourceView>],
        tok: &GlassTokenizer,
        benchmark: Option<&[BenchItem]>,
        progress: bool,
    ) -> Result<Option<(DedupRecord, ManifestFile)>> {
        let decon = !self.cfg.decontaminate.is_empty();
        if self.cfg.dedup.is_none() && !decon {
            return Ok(None);
        }
        let dedup_sources = self.cfg.dedup_sources();
        let decon_sources = if decon {
            self.cfg.training_sources()
        } else {
            vec![]
        };
        let mut sources: Vec<usize> = dedup_sources
            .iter()
            .chain(&decon_sources)
            .copied()
            .collect();
        sources.sort_unstable();
        sources.dedup();
        let mut records: Vec<DedupSourceRecord> = sources
            .iter()
            .map(|&s| {
                let v = views[s].as_ref().expect("view");
                DedupSourceRecord {
                    name: self.cfg.sources[s].name.clone(),
                    docs_before: v.n_docs(),
                    tokens_before: v.n_tokens(),
                    decontaminate: Removed::default(),
                    exact: Removed::default(),
                    near: Removed::default(),
                    substring: self
                        .cfg
                        .dedup
                        .as_ref()
                        .and_then(|d| d.substring)
                        .filter(|_| dedup_sources.contains(&s))
                        .map(|_| SubstringRemoved::default()),
                    docs_after: v.n_docs(),
                    tokens_after: v.n_tokens(),
                }
            })
            .collect();
        let rec_of = |s: usize| sources.iter().position(|&x| x == s).expect("listed");
        // Removed documents per source, and the lines of the file keyed by (source, doc).
        let mut removed: Vec<Vec<u64>> = vec![Vec::new(); self.cfg.sources.len()];
        // Token ranges substring deduplication cuts, per source.
        let mut cuts: Vec<Vec<(u64, u32, u32)>> = vec![Vec::new(); self.cfg.sources.len()];
        let mut lines: Vec<(usize, u64, RemovedDoc)> = Vec::new();
        let count = |rec: &mut DedupSourceRecord, which: u8, r: &crate::store::DocRecord| {
            let c = match which {
                0 => &mut rec.decontaminate,
                1 => &mut rec.exact,
                _ => &mut rec.near,
            };
            c.docs += 1;
            c.tokens += r.n_tokens as u64;
            c.bytes += r.byte_len;
            rec.docs_after -= 1;
            rec.tokens_after -= r.n_tokens as u64;
        };

        let decon_record = if decon {
            let items = benchmark.ok_or_else(|| {
                DataError::Config(
                    "decontaminate names benchmark tasks, but their items were not given to prepare"
                        .into(),
                )
            })?;
            let n = self.cfg.decontaminate_ngram();
            let tokens: Vec<Option<Vec<u32>>> = items
                .par_iter()
                .map(|it| Ok(Some(tok.encode(&it.text)?).filter(|t| t.len() >= n)))
                .collect::<Result<_>>()?;
            let grams = BenchGrams::new(&tokens, n);
            let total: u64 = decon_sources
                .iter()
                .flat_map(|&s| views[s].as_ref().expect("view").units())
                .map(|u| u.counts.bytes)
                .sum();
            let bar = Progress::new("decontaminate", total, progress);
            for &s in &decon_sources {
                let view = views[s].as_ref().expect("view");
                for (doc, pos, item) in decontaminate_matches(view, &grams, &bar) {
                    let r = view.doc(doc);
                    count(&mut records[rec_of(s)], 0, &r);
                    removed[s].push(doc);
                    let it = &items[item as usize];
                    lines.push((
                        s,
                        doc,
                        RemovedDoc {
                            filter: "decontaminate".into(),
                            doc: dedup_place(view, doc),
                            tokens: r.n_tokens as u64,
                            kept: None,
                            benchmark: Some(BenchMatch {
                                task: it.task.clone(),
                                item: it.id.clone(),
                                pos,
                            }),
                            jaccard: None,
                            span: None,
                            kept_at: None,
                        },
                    ));
                }
            }
            bar.finish();
            Some(decontaminate_record(items, &tokens, n))
        } else {
            None
        };

        let seed = self
            .cfg
            .dedup
            .as_ref()
            .and_then(|d| d.seed)
            .unwrap_or(self.cfg.seed);
        if let Some(dcfg) = &self.cfg.dedup {
            let hasher = MinHasher::new(seed, dcfg.bands * dcfg.rows, dcfg.shingle_words);
            let total: u64 = dedup_sources
                .iter()
                .flat_map(|&s| self.units[s].as_ref().expect("listed"))
                .map(|u| u.bytes)
                .sum();
            let bar = Progress::new("dedup", total, progress);
            // The documents left after decontamination, in recorded order, and theirs
            // fingerprints.
            let mut live: Vec<(usize, u64)> = Vec::new();
            let mut fps = Vec::new();
            for &s in &dedup_sources {
                let view = views[s].as_ref().expect("deduplicated sources are trained");
                let all = fingerprint_source(
                    &self.cfg,
                    s,
                    self.units[s].as_ref().expect("listed"),
                    view,
                    &hasher,
                    &bar,
                )?;
                let gone = &removed[s];
                for (doc, f) in all.into_iter().enumerate() {
                    let doc = doc as u64;
                    if gone.binary_search(&doc).is_err() {
                        live.push((s, doc));
                        fps.push(f);
                    }
                }
            }
            bar.finish();
            let decisions = cluster(&fps, dcfg);
            drop(fps);
            for d in &decisions {
                let (s, doc) = live[d.removed];
                let (ks, kdoc) = live[d.kept];
                let view = views[s].as_ref().expect("view");
                let r = view.doc(doc);
                count(&mut records[rec_of(s)], if d.near { 2 } else { 1 }, &r);
                removed[s].push(doc);
                lines.push((
                    s,
                    doc,
                    RemovedDoc {
                        filter: if d.near { "near" } else { "exact" }.into(),
                        doc: dedup_place(view, doc),
                        tokens: r.n_tokens as u64,
                        kept: Some(dedup_place(views[ks].as_ref().expect("view"), kdoc)),
                        benchmark: None,
                        jaccard: d.jaccard,
                        span: None,
                        kept_at: None,
                    },
                ));
            }
            if let Some(k) = dcfg.substring {
                self.substring(
                    views,
                    &dedup_sources,
                    k,
                    &mut removed,
                    &mut cuts,
                    &mut lines,
                    (&sources, &mut records),
                    progress,
                )?;
            }
        }
        lines.sort_by_key(|l| (l.0, l.1, l.2.span.map(|s| s[0])));
        let (sha256, bytes) =
            write_removed(&self.run_dir, &self.data, lines.into_iter().map(|l| l.2))?;
        for &s in &sources {
            removed[s].sort_unstable();
            let v = views[s].as_mut().expect("view");
            v.remove_docs(&removed[s]);
            v.cut_spans(&cuts[s])?;
            if v.n_drawable() == 0 {
                let rec = &records[rec_of(s)];
                return Err(DataError::Source {
                    source_name: rec.name.clone(),
                    message: format!(
                        "decontamination and deduplication removed every one of its {} documents ({} sharing an n-gram with a benchmark item of [data] decontaminate, {} exact and {} near duplicates of earlier documents, {} repeating earlier text in every token; each is listed with what it matched in {}); leave the source out of [data.dedup] sources or out of the run, or decontaminate against fewer tasks",
                        rec.docs_before,
                        rec.decontaminate.docs,
                        rec.exact.docs,
                        rec.near.docs,
                        rec.substring.map_or(0, |x| x.docs_emptied),
                        self.data.join(crate::dedup::REMOVED_FILE).display()
                    ),
                });
            }
        }
        Ok(Some((
            DedupRecord {
                seed,
                decontaminate: decon_record,
                file: crate::dedup::REMOVED_FILE.into(),
                sources: records,
            },
            ManifestFile {
                path: crate::dedup::REMOVED_FILE.into(),
                sha256,
                bytes,
            },
        )))
    }

    /// Substring deduplication (`[data.dedup] substring = k`) over the documents of the
    /// deduplicated sources still left, in recorded order: pushes the emptied documents
    /// to `removed`, the cut ranges to `cuts`, a line per span or emptied document to
    /// `lines`, and counts them in the sources' records.
    #[allow(clippy::too_many_arguments)]
    fn substring(
        &self,
        views: &[Option<SourceView>],
        dedup_sources: &[usize],
        k: u32,
        removed: &mut [Vec<u64>],
        cuts: &mut [Vec<(u64, u32, u32)>],
        lines: &mut Vec<(usize, u64, RemovedDoc)>,
        (sources, records): (&[usize], &mut [DedupSourceRecord]),
        progress: bool,
    ) -> Result<()> {
        let view = |s: usize| views[s].as_ref().expect("deduplicated sources are trained");
        let mut live: Vec<(usize, u64)> = Vec::new();
        for &s in dedup_sources {
            let mut gone = removed[s].clone();
            gone.sort_unstable();
            live.extend(
                (0..view(s).n_docs())
                    .filter(|d| gone.binary_search(d).is_err())
                    .map(|d| (s, d)),
            );
        }
        let lens: Vec<u32> = live.iter().map(|&(s, d)| view(s).doc_len(d)).collect();
        let n: u64 = lens.iter().map(|&l| l as u64 + 1).sum();
        let bar = glass_io::progress::bar(
            3 * n,
            progress,
            "substring [{bar:30}] {percent}% {msg} ETA {eta}",
        );
        bar.set_message(format!(
            "{}-token spans over {} tokens (about {:.1} GiB)",
            k,
            n,
            crate::substring::memory_bytes(n, 0) as f64 / (1u64 << 30) as f64
        ));
        let read = |i: usize, out: &mut Vec<u32>| {
            let (s, d) = live[i];
            view(s).doc_tokens(d, 0, lens[i], out)
        };
        let found = crate::substring::repeated_spans(
            &crate::substring::Docs {
                lens: &lens,
                read: &read,
            },
            k,
            &|t| bar.inc(t),
        )?;
        bar.finish_and_clear();
        // Per document: its spans, then whether nothing is left of it.
        let mut i = 0;
        while i < found.len() {
            let doc = found[i].doc;
            let j = i + found[i..].iter().take_while(|c| c.doc == doc).count();
            let (s, d) = live[doc];
            let cut: u32 = found[i..j].iter().map(|c| c.end - c.start).sum();
            let rec = &mut records[sources.iter().position(|&x| x == s).expect("listed")];
            let sub = rec.substring.get_or_insert_with(Default::default);
            sub.tokens += cut as u64;
            rec.tokens_after -= cut as u64;
            let place = |c: &crate::substring::Cut| {
                let (ks, kd) = live[c.kept_doc];
                dedup_place(view(ks), kd)
            };
            if cut == lens[doc] {
                sub.docs_emptied += 1;
                rec.docs_after -= 1;
                removed[s].push(d);
                lines.push((
                    s,
                    d,
                    RemovedDoc {
                        filter: "substring".into(),
                        doc: dedup_place(view(s), d),
                        tokens: cut as u64,
                        kept: Some(place(&found[i])),
                        benchmark: None,
                        jaccard: None,
                        span: None,
                        kept_at: Some(found[i].kept_at),
                    },
                ));
            } else {
                sub.docs_cut += 1;
                sub.spans += (j - i) as u64;
                for c in &found[i..j] {
                    cuts[s].push((d, c.start, c.end));
                    lines.push((
                        s,
                        d,
                        RemovedDoc {
                            filter: "substring".into(),
                            doc: dedup_place(view(s), d),
                            tokens: (c.end - c.start) as u64,
                            kept: Some(place(c)),
                            benchmark: None,
                            jaccard: None,
                            span: Some([c.start, c.end]),
                            kept_at: Some(c.kept_at),
                        },
                    ));
                }
            }
            i = j;
        }
        Ok(())
    }

    fn remove_stale_stores(&self, tokens_dir: &Path, n: u32) -> Result<()> {
        let Ok(rd) = std::fs::read_dir(tokens_dir) else {
            return Ok(());
        };
        let used: Vec<String> = self
            .cfg
            .used_sources()
            .iter()
            .map(|&s| self.cfg.sources[s].name.clone())
            .collect();
        let keep_suffix = format!("-of-{n:05}");
        for dir in rd.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let keep_dir = used.contains(&name);
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                let stem = fname.split('.').next().unwrap_or("");
                let ours = stem.contains("-of-");
                if ours && !(keep_dir && stem.ends_with(&keep_suffix)) {
                    remove_if_exists(&f.path())?;
                }
            }
        }
        Ok(())
    }
}

fn remove_stale_chunks(dir: &Path, n_chunks: u64) -> Result<()> {
    for f in std::fs::read_dir(dir).at(dir)?.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let idx = name
            .strip_prefix("chunk-")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<u64>().ok());
        if idx.is_some_and(|i| i >= n_chunks) {
            remove_if_exists(&f.path())?;
        }
    }
    Ok(())
}

/// Documents are tokenized in parallel in batches of about this many bytes.
const BATCH_BYTES: usize = 8 << 20;

enum Item {
    Begin(u32, String),
    Doc(RawDoc),
    End(UnitCounts),
}

#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    bytes: usize,
}

impl Batch {
    /// Encodes the batch's documents on all threads, then writes them in input order.
    fn flush(
        &mut self,
        tok: &GlassTokenizer,
        writer: &mut StoreWriter,
        progress: &Progress,
    ) -> Result<()> {
        let docs: Vec<&RawDoc> = self
            .items
            .iter()
            .filter_map(|i| if let Item::Doc(d) = i { Some(d) } else { None })
            .collect();
        let encoded: Vec<Result<Vec<u32>>> = docs.par_iter().map(|d| tok.encode(&d.text)).collect();
        let mut encoded = encoded.into_iter();
        for item in self.items.drain(..) {
            match item {
                Item::Begin(u, path) => writer.begin_unit(u, &path),
                Item::Doc(d) => {
                    let ids = encoded.next().expect("one per doc")?;
                    writer.push_doc(&ids, d.line, d.byte_start, d.byte_len, d.meta.as_ref())?;
                    progress.inc(d.byte_len, ids.len() as u64);
                }
                Item::End(c) => writer.end_unit(c),
            }
        }
        self.bytes = 0;
        Ok(())
    }
}
