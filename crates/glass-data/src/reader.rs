//! Reading prepared data for training: the global batch of any step, any rank's slice of
//! it, validation rows, and the tokenizer — all from `RUN/data/` as the manifest lists it.

use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use crate::chunk::{read_header, read_rows, read_segments, ChunkHeader};
use crate::error::{DataError, Result};
use crate::manifest::ChunkRecord;
use crate::manifest::Manifest;
use crate::order::rank_rows;
use crate::pack::Segment;
use crate::store::FileHash;
use crate::store::{read_header as read_store_header, SourceView};
use crate::tokenizer::{GlassTokenizer, SpecialIds};

/// A prepared run's data, opened for reading.
///
/// Nothing read is trusted: every header is checked against the manifest when opened,
/// and each chunk's token file is hashed against the manifest before its first row is
/// returned (once per chunk), so training never runs a step on altered data.
#[derive(Debug)]
pub struct PreparedData {
    /// The run's own `data/`.
    data_dir: PathBuf,
    /// Where each chunk's files are: `data/chunks` of this run or, for a branch, of the
    /// run it reads its rows from.
    chunk_dirs: Vec<PathBuf>,
    /// The run directory each chunk's files lie beneath (reads never leave it).
    chunk_roots: Vec<PathBuf>,
    /// Where the validation rows, tokenizer and token stores are.
    shared_dir: PathBuf,
    /// The run directory `shared_dir` lies beneath.
    shared_root: PathBuf,
    manifest: Manifest,
    chunks: Vec<ChunkHeader>,
    validation: Option<ChunkHeader>,
    /// Set once a chunk's token file has been hashed and found as the manifest lists it.
    verified: Vec<OnceLock<()>>,
}

impl PreparedData {
    /// Opens `run_dir/data` (fails if `prepare` has not completed).
    pub fn open(run_dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(run_dir)?;
        manifest.check_base(run_dir)?;
        let data_dir = run_dir.join("data");
        let shared_dir = manifest.dir_of(run_dir, "validation.json");
        let shared_root = manifest.root_of(run_dir, "validation.json");
        let open_header = |root: &Path,
                           dir: &Path,
                           stem: &str,
                           rel: &str,
                           rec: Option<&ChunkRecord>| {
            let path = dir.join(format!("{stem}.json"));
            let (sha, _) = glass_io::open::sha256_beneath(root, &path, None)?;
            let listed = crate::integrity::listed_sha(&manifest, rel);
            if listed != Some(sha.as_str()) {
                return Err(DataError::Format(format!(
                    "{}: sha256 {sha} but the data manifest lists {}; the file was modified — restore it or re-run `glass data prepare`",
                    path.display(),
                    listed.unwrap_or("nothing")
                )));
            }
            let h = read_header(root, dir, stem)?;
            let dir_rel = rel.rsplit_once('/').map_or("", |x| x.0);
            crate::integrity::check_header(&manifest, &h, rec, dir_rel, &path)?;
            Ok(h)
        };
        let mut chunk_dirs = Vec::with_capacity(manifest.chunks.len());
        let mut chunk_roots = Vec::with_capacity(manifest.chunks.len());
        let chunks = manifest
            .chunks
            .iter()
            .map(|c| {
                let stem = crate::chunk::chunk_stem(c.index);
                let rel = format!("chunks/{stem}.json");
                let dir = manifest.dir_of(run_dir, &rel).join("chunks");
                let root = manifest.root_of(run_dir, &rel);
                let h = open_header(&root, &dir, &stem, &rel, Some(c))?;
                chunk_dirs.push(dir);
                chunk_roots.push(root);
                Ok(h)
            })
            .collect::<Result<Vec<_>>>()?;
        let validation = match &manifest.validation {
            Some(_) => Some(open_header(
                &shared_root,
                &shared_dir,
                "validation",
                "validation.json",
                None,
            )?),
            None => None,
        };
        let verified = (0..chunks.len()).map(|_| OnceLock::new()).collect();
        Ok(Self {
            data_dir,
            chunk_dirs,
            chunk_roots,
            shared_dir,
            shared_root,
            manifest,
            chunks,
            validation,
            verified,
        })
    }

    /// Hashes the token file of chunk `c` against its (manifest-checked) header, once.
    fn verify_chunk(&self, c: usize) -> Result<()> {
        if self.verified[c].get().is_some() {
            return Ok(());
        }
        verify_file(
            &self.chunk_roots[c],
            &self.chunk_dirs[c],
            &self.chunks[c].tokens,
        )?;
        let _ = self.verified[c].set(());
        Ok(())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The first step this run trains: 0, or for a branch that continues another run's
    /// stream the step of the checkpoint it starts from.
    pub fn first_step(&self) -> u64 {
        self.manifest.base.as_ref().map_or(0, |b| b.from_step)
    }

    /// The run's own data directory (`RUN/data`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// sha256 of the token file of the chunk holding `step` (as the manifest lists it).
    pub fn chunk_tokens_sha256(&self, step: u64) -> Option<&str> {
        let i = (step / self.steps_per_chunk().max(1)) as usize;
        self.chunks.get(i).map(|c| c.tokens.sha256.as_str())
    }

    /// Tokens per training input (rows hold one more).
    pub fn seq_len(&self) -> usize {
        self.manifest.config.seq_len
    }

    /// Tokens per row: `seq_len + 1` (inputs and shifted targets).
    pub fn row_len(&self) -> usize {
        self.manifest.row_len
    }

    /// Rows per global batch.
    pub fn rows_per_step(&self) -> usize {
        self.manifest.config.rows_per_step
    }

    /// Steps in the run.
    pub fn n_steps(&self) -> u64 {
        self.manifest.n_steps
    }

    /// Steps per chunk (the checkpoint interval).
    pub fn steps_per_chunk(&self) -> u64 {
        self.manifest.config.steps_per_chunk
    }

    /// Chunk files.
    pub fn n_chunks(&self) -> u64 {
        self.manifest.n_chunks
    }

    /// Embedding-table size a model needs (one more than the largest id).
    pub fn vocab_size(&self) -> usize {
        self.manifest.tokenizer.vocab_size
    }

    /// EOS, BOS and FIM ids.
    pub fn specials(&self) -> SpecialIds {
        self.manifest.tokenizer.specials
    }

    /// Path of the run's `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.shared_dir.join(&self.manifest.tokenizer.file)
    }

    /// The bytes of the run's `tokenizer.json`, read beneath the run holding it.
    pub fn tokenizer_json(&self) -> Result<Vec<u8>> {
        Ok(glass_io::open::read_beneath(
            &self.shared_root,
            &self.tokenizer_path(),
            glass_io::open::MAX_RECORD_BYTES,
        )?)
    }

    /// Loads the run's tokenizer (for decoding samples and encoding prompts).
    pub fn tokenizer(&self) -> Result<GlassTokenizer> {
        let p = self.tokenizer_path();
        let bytes = self.tokenizer_json()?;
        let tok = GlassTokenizer::from_json(&bytes, &self.manifest.config.tokenizer).map_err(
            |e| match e {
                DataError::Tokenizer(m) => DataError::Tokenizer(format!("{}: {m}", p.display())),
                other => other,
            },
        )?;
        // The ids in the chunks were made by a tokenizer of exactly this many ids: one
        // with more or fewer would decode rows with ids dropped or misread.
        let (ids, recorded) = (tok.vocab_size(), self.manifest.tokenizer.vocab_size);
        if ids != recorded {
            return Err(DataError::Tokenizer(format!(
                "{}: the tokenizer has {ids} ids but the data manifest records {recorded} (the tokenizer the chunks were made with): this is not the run's tokenizer; restore the run's tokenizer.json (or re-run `glass data prepare`)",
                p.display()
            )));
        }
        Ok(tok)
    }

    /// Name of the stage `step` belongs to.
    pub fn stage_of(&self, step: u64) -> &str {
        let i = self
            .manifest
            .stages
            .iter()
            .rposition(|s| s.first_step <= step)
            .unwrap_or(0);
        &self.manifest.stages[i].name
    }

    fn locate(&self, step: u64) -> Result<(&ChunkHeader, (&Path, &Path), u64)> {
        if step >= self.n_steps() {
            return Err(DataError::Range(format!(
                "step {step} is past the end of the data ({} steps)",
                self.n_steps()
            )));
        }
        let i = (step / self.steps_per_chunk()) as usize;
        self.verify_chunk(i)?;
        let c = &self.chunks[i];
        Ok((
            c,
            (&self.chunk_roots[i], &self.chunk_dirs[i]),
            (step - c.first_step) * self.rows_per_step() as u64,
        ))
    }

    /// Fills `out` with the global batch of `step`: `rows_per_step` rows of `row_len`
    /// tokens, row-major. The same for every world size.
    pub fn batch(&self, step: u64, out: &mut Vec<u32>) -> Result<()> {
        self.rows(step, 0, 1, out)
    }

    /// The rows `[a, b)` of the global batch that `rank` of `world_size` takes: contiguous
    /// slices, so ranks `0..world_size` concatenated give the global batch.
    pub fn rank_rows(&self, rank: usize, world_size: usize) -> Result<(usize, usize)> {
        let b = self.rows_per_step();
        if world_size == 0 || rank >= world_size || world_size > b {
            return Err(DataError::Range(format!(
                "rank {rank} of world size {world_size}: need rank < world_size <= rows_per_step ({b})"
            )));
        }
        let (x, y) = rank_rows(b as u64, rank as u64, world_size as u64);
        Ok((x as usize, y as usize))
    }

    /// Fills `out` with `rank`'s slice of the global batch of `step`. When `world_size`
    /// does not divide `rows_per_step`, ranks get ⌊B/W⌋ or ⌈B/W⌉ rows; weight gradients by
    /// row count so the update equals the single-process one.
    pub fn rows(
        &self,
        step: u64,
        rank: usize,
        world_size: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let (a, b) = self.rank_rows(rank, world_size)?;
        let (chunk, (root, dir), first) = self.locate(step)?;
        out.clear();
        read_rows(root, dir, chunk, first + a as u64, (b - a) as u64, out)
    }

    /// Segments of each row of `step`'s global batch (row indices relative to the batch).
    pub fn batch_segments(&self, step: u64) -> Result<Vec<Vec<Segment>>> {
        let (chunk_first_step, segs) = self.chunk_segments(step)?;
        let b = self.rows_per_step() as u64;
        let first = (step - chunk_first_step) * b;
        let mut rows = vec![Vec::new(); b as usize];
        for mut s in segs {
            let r = s.row as u64;
            if r >= first && r < first + b {
                s.row = (r - first) as u32;
                rows[(r - first) as usize].push(s);
            }
        }
        Ok(rows)
    }

    /// Every segment of the chunk holding `step` (rows relative to the chunk), hashed and
    /// checked, with the chunk's first step.
    pub fn chunk_segments(&self, step: u64) -> Result<(u64, Vec<Segment>)> {
        let (chunk, (root, dir), _) = self.locate(step)?;
        verify_file(root, dir, &chunk.segments)?;
        let n_sources = self.manifest.config.sources.len();
        let segs = read_segments(root, dir, chunk)?;
        for s in &segs {
            let end = s.pos as u64 + s.len as u64;
            if s.row as u64 >= chunk.n_rows
                || end > self.row_len() as u64
                || s.source as usize >= n_sources
            {
                return Err(DataError::Format(format!(
                    "{}: segment (row {}, pos {}, len {}, source {}) lies outside the chunk's {} rows of {} tokens or its {n_sources} sources",
                    dir.join(&chunk.segments.file).display(),
                    s.row,
                    s.pos,
                    s.len,
                    s.source,
                    chunk.n_rows,
                    self.row_len()
                )));
            }
        }
        Ok((chunk.first_step, segs))
    }

    /// Number of validation rows (0 when none are configured).
    pub fn n_validation_rows(&self) -> u64 {
        self.validation.as_ref().map_or(0, |v| v.n_rows)
    }

    /// Fills `out` with all validation rows (row-major, `row_len` each); returns their count.
    pub fn validation(&self, out: &mut Vec<u32>) -> Result<u64> {
        out.clear();
        match &self.validation {
            Some(v) => {
                verify_file(&self.shared_root, &self.shared_dir, &v.tokens)?;
                read_rows(&self.shared_root, &self.shared_dir, v, 0, v.n_rows, out)?;
                Ok(v.n_rows)
            }
            None => Ok(0),
        }
    }

    /// The tokenized documents of source `name`, for mapping segments back to document ids.
    pub fn source_view(&self, name: &str) -> Result<SourceView> {
        let rec = self
            .manifest
            .sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| DataError::Range(format!("no source `{name}` in this run")))?;
        let tokens_dir = self.shared_dir.join("tokens");
        let headers = (0..rec.n_shards)
            .map(|j| {
                read_store_header(&self.shared_root, &tokens_dir, name, j, rec.n_shards)?
                    .ok_or_else(|| {
                        DataError::Format(format!("store {name} {j}/{} missing", rec.n_shards))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        SourceView::open(&self.shared_root, &tokens_dir, &headers)
    }
}

/// Hashes `dir/f.file` (beneath the run directory `root`) and compares it with the hash
/// and length `f` records; a file of another length is not read.
fn verify_file(root: &Path, dir: &Path, f: &FileHash) -> Result<()> {
    let p = dir.join(&f.file);
    let (sha, bytes) = glass_io::open::sha256_beneath(root, &p, Some(f.bytes))?;
    if sha != f.sha256 || bytes != f.bytes {
        return Err(DataError::Format(format!(
            "{}: sha256 {sha} ({bytes} bytes) but the data manifest lists {} ({} bytes); the file was modified — restore it or re-run `glass data prepare`",
            p.display(),
            f.sha256,
            f.bytes
        )));
    }
    Ok(())
}
