//! `RUN/index/`: one suffix array per data chunk (and one for the validation rows), over
//! the chunk token files themselves.
//!
//! Each shard stores only its suffix array, as little-endian positions of `width` bytes
//! (4 while the shard holds at most 2³⁰ tokens, 5 beyond): 4 bytes per training token,
//! against 7 for infini-gram, which copies the text. A position is `row · row_len + offset`
//! in the chunk's `[n_rows, row_len]` token array, so the text is read from
//! `data/chunks/chunk-KKKKK.tokens` directly.
//!
//! Rows are independent training examples, so a match must never span two of them: the
//! array is built over `token + 1` with a `0` after every row (the `0`s are dropped from
//! the stored array), which makes suffix order agree with comparing each suffix only up to
//! the end of its row. Queries compare the same way (`query.rs`).
//!
//! Files, all written atomically: `index/NAME.sa` (the array), `index/NAME.json` (its
//! [`ShardRecord`], written after the array, so its presence marks a complete shard) and
//! `index/manifest.json` (all shards, written last; `glass verify` re-hashes what it
//! lists). A shard is reused while the chunk token file it pins still has the same
//! sha256, so a later `glass index` builds only new or changed chunks.
//!
//! A run over a suite's data read in place (`glass import pythia|olmo|crystalcoder`) has
//! no chunk files: `glass index` first copies each chunk's rows (blocks of
//! [`glass_data::rows::EXTERNAL_STEPS_PER_CHUNK`] steps, read through
//! [`glass_data::rows::TrainingRows`]) into `index/rows/chunk-KKKKK.tokens` (u32 ids) with a
//! chunk header pinning the data it was read from, and indexes those; a copy is redone
//! only when the data's manifest changes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glass_data::chunk::{chunk_stem, read_header, ChunkHeader, CHUNK_FORMAT};
use glass_data::dtype::TokenDtype;
use glass_data::rows::TrainingRows;
use glass_data::store::FileHash;
use glass_io::atomic::{write_atomic_beneath, AtomicFile};
use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// Directory of the index inside a run.
pub const INDEX_DIR: &str = "index";
/// The index manifest, relative to the run.
pub const INDEX_MANIFEST: &str = "index/manifest.json";
/// Format tag of the manifest and shard records.
pub const INDEX_FORMAT: &str = "glass-index-v1";
/// Shards with more tokens than this store 5-byte positions (and build with 64-bit
/// libsais); below it, 4-byte positions and the 32-bit build.
pub const NARROW_MAX_TOKENS: u64 = (i32::MAX as u64) / 2;

/// A file with its content hash, path relative to the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the run directory.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// One shard: the suffix array of one chunk (or of the validation rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// `glass-index-v1`.
    pub format: String,
    /// `chunk-KKKKK` or `validation`.
    pub name: String,
    /// Chunk index (`None` for validation rows).
    pub chunk: Option<u64>,
    /// First training step of the chunk.
    pub first_step: u64,
    /// First global row of the chunk.
    pub first_row: u64,
    /// Rows.
    pub n_rows: u64,
    /// Tokens per row.
    pub row_len: usize,
    /// Token width of the token file.
    pub dtype: TokenDtype,
    /// The chunk token file the array indexes (pinned by hash).
    pub tokens: FileRef,
    /// The suffix array file.
    pub sa: FileRef,
    /// Bytes per stored position (4 or 5).
    pub width: usize,
    /// Positions stored (= tokens in the chunk).
    pub n_suffixes: u64,
}

/// `index/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    /// `glass-index-v1`.
    pub format: String,
    /// sha256 of the run's tokenizer.json the chunks were made with.
    pub tokenizer_sha256: String,
    /// Tokens per row.
    pub row_len: usize,
    /// Training shards, in training order.
    pub shards: Vec<ShardRecord>,
    /// The validation rows' shard, when the run has validation rows.
    pub validation: Option<ShardRecord>,
    /// Every index file, for `glass verify`.
    pub files: Vec<FileRef>,
    /// The data files the index depends on (chunk token files), for `glass verify`.
    pub pins: Vec<FileRef>,
}

impl IndexManifest {
    /// Loads `RUN/index/manifest.json`; a missing index is an error that says how to
    /// build one.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let p = run_dir.join(INDEX_MANIFEST);
        if !p.exists() {
            return Err(AnalysisError::NoIndex(format!(
                "{} has no index ({} is missing); build it with `glass index {}`",
                run_dir.display(),
                p.display(),
                run_dir.display()
            )));
        }
        let bytes = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)?;
        let m: IndexManifest =
            serde_json::from_slice(&bytes).map_err(|e| AnalysisError::Format {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        if m.format != INDEX_FORMAT {
            return Err(AnalysisError::Format {
                path: p,
                msg: format!(
                    "unknown index format `{}` (this glass reads {INDEX_FORMAT}); rebuild it with `glass index`",
                    m.format
                ),
            });
        }
        Ok(m)
    }
}

/// What `glass verify RUN` checks of the index beyond the hashes of its files (which
/// `glass_run::verify_run` re-hashes): that it covers the run's chunks and that every
/// shard record agrees with the chunk header it indexes — what every query checks when it
/// opens the index. `None` without an index; otherwise the first problem, naming the file.
pub fn index_problem(run_dir: &Path) -> Option<String> {
    if !run_dir.join(INDEX_MANIFEST).exists() {
        return None;
    }
    crate::query::Index::open_with(run_dir, crate::query::IndexCheck::BoundsOnly)
        .err()
        .map(|e| e.to_string())
}

/// What [`build_index`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    /// Shards built now.
    pub built: Vec<String>,
    /// Shards reused (their chunk is unchanged).
    pub reused: Vec<String>,
    /// Training tokens indexed (all shards).
    pub tokens: u64,
    /// Validation tokens indexed.
    pub validation_tokens: u64,
    /// Bytes of suffix arrays on disk (all shards).
    pub bytes: u64,
    /// Tokens of the shards built now.
    pub built_tokens: u64,
    /// Seconds spent building.
    pub seconds: f64,
}

/// Where `glass index` copies an external-data run's rows, relative to the run.
pub const EXTERNAL_ROWS_DIR: &str = "index/rows";

/// What the index needs to know of a run's data.
pub struct DataInfo {
    /// The prepared data's manifest (`None` for external data).
    pub manifest: Option<glass_data::Manifest>,
    /// sha256 of the tokenizer.json the rows were made with (`""` for external data
    /// imported without one).
    pub tokenizer_sha256: String,
    /// Tokens per row.
    pub row_len: usize,
    /// Rows per step.
    pub rows_per_step: u64,
    /// External data's suite (`pythia`, `olmo`, `crystalcoder`).
    pub suite: Option<String>,
}

fn external_info(rows: &TrainingRows) -> DataInfo {
    DataInfo {
        manifest: None,
        tokenizer_sha256: rows
            .external()
            .and_then(|x| x.manifest().tokenizer.as_ref())
            .map_or(String::new(), |t| t.sha256.clone()),
        row_len: rows.row_len(),
        rows_per_step: rows.rows_per_step(),
        suite: rows.suite().map(String::from),
    }
}

/// The data shards the index must cover, from the prepared data.
pub(crate) struct DataShard {
    pub name: String,
    /// The run directory the files lie beneath (the run's own, or a branch's parent).
    pub root: PathBuf,
    pub dir: PathBuf,
    pub rel_dir: &'static str,
    pub header: ChunkHeader,
}

pub(crate) fn data_shards(run_dir: &Path) -> Result<(DataInfo, Vec<DataShard>, Option<DataShard>)> {
    if glass_data::external::is_external(run_dir) {
        let rows = TrainingRows::open(run_dir)?;
        let dir = run_dir.join(EXTERNAL_ROWS_DIR);
        let mut shards = Vec::new();
        for c in rows.chunks() {
            let stem = chunk_stem(c.index);
            let header = match current_copy(run_dir, &rows, &c)? {
                Some(h) => h,
                None => {
                    return Err(AnalysisError::Stale(format!(
                        "{}: the copy of chunk {} of the external data is missing or was made from other data; rebuild the index with `glass index {}`",
                        dir.join(format!("{stem}.json")).display(),
                        c.index,
                        run_dir.display()
                    )))
                }
            };
            shards.push(DataShard {
                name: stem,
                root: run_dir.to_path_buf(),
                dir: dir.clone(),
                rel_dir: EXTERNAL_ROWS_DIR,
                header,
            });
        }
        return Ok((external_info(&rows), shards, None));
    }
    let m = glass_data::Manifest::load(run_dir)?;
    // A branch's data may live in its parent's directory (docs/data-format.md).
    let data = m.dir_of(run_dir, "validation.json");
    let mut shards = Vec::new();
    for c in &m.chunks {
        let stem = chunk_stem(c.index);
        let chunks_dir = m.chunk_dir(run_dir, &stem);
        let root = m.root_of(run_dir, &format!("chunks/{stem}.json"));
        let header = read_header(&root, &chunks_dir, &stem)?;
        shards.push(DataShard {
            name: stem,
            root,
            dir: chunks_dir,
            rel_dir: "data/chunks",
            header,
        });
    }
    let validation = match &m.validation {
        Some(_) => {
            let root = m.root_of(run_dir, "validation.json");
            Some(DataShard {
                name: "validation".into(),
                header: read_header(&root, &data, "validation")?,
                root,
                dir: data.clone(),
                rel_dir: "data",
            })
        }
        None => None,
    };
    let info = DataInfo {
        tokenizer_sha256: m.tokenizer.sha256.clone(),
        row_len: m.row_len,
        rows_per_step: m.config.rows_per_step as u64,
        suite: None,
        manifest: Some(m),
    };
    Ok((info, shards, validation))
}

/// The header of chunk `c`'s row copy under [`EXTERNAL_ROWS_DIR`] if it was made from the
/// data the run has now (its `config_sha256` is the chunk's pin) and agrees with the
/// chunk's shape; `None` otherwise. The copy's bytes are checked against the header's
/// hash where the index is opened, as a prepared chunk's are.
fn current_copy(
    run_dir: &Path,
    rows: &TrainingRows,
    c: &glass_data::rows::RowChunk,
) -> Result<Option<ChunkHeader>> {
    let dir = run_dir.join(EXTERNAL_ROWS_DIR);
    let stem = chunk_stem(c.index);
    if !dir.join(format!("{stem}.json")).exists() {
        return Ok(None);
    }
    let Ok(h) = read_header(run_dir, &dir, &stem) else {
        return Ok(None);
    };
    let ok = h.config_sha256 == rows.chunk_pin(c)?
        && h.chunk == Some(c.index)
        && h.first_step == c.first_step
        && h.n_steps == c.n_steps
        && h.first_row == c.first_row
        && h.n_rows == c.n_rows
        && h.row_len == rows.row_len()
        && h.dtype == TokenDtype::U32
        && h.tokens.file == format!("{stem}.tokens")
        && Some(h.tokens.bytes) == c.n_rows.checked_mul(4 * rows.row_len() as u64);
    Ok(ok.then_some(h))
}

/// Copies every chunk of an external-data run whose copy is missing or stale into
/// [`EXTERNAL_ROWS_DIR`] (u32 ids, one step read at a time); `progress(name, done,
/// total)` before each chunk. Returns the chunks copied.
fn copy_external_rows(
    run_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<String>> {
    let rows = TrainingRows::open(run_dir)?;
    let info = external_info(&rows);
    let dir = run_dir.join(EXTERNAL_ROWS_DIR);
    glass_io::open::create_dir_beneath(run_dir, &dir)?;
    let chunks = rows.chunks();
    let mut copied = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let stem = chunk_stem(c.index);
        progress(&format!("copying rows of {stem}"), i, chunks.len());
        if current_copy(run_dir, &rows, c)?.is_some() {
            continue;
        }
        let hp = dir.join(format!("{stem}.json"));
        glass_io::open::check_write_beneath(run_dir, &hp)?;
        glass_io::atomic::remove_if_exists(&hp)?;
        let tokens_name = format!("{stem}.tokens");
        let mut out = AtomicFile::create_beneath(run_dir, &dir.join(&tokens_name))?;
        let mut ids = Vec::new();
        let mut bytes = Vec::new();
        for step in c.first_step..c.first_step + c.n_steps {
            ids.clear();
            bytes.clear();
            rows.read_range(step * rows.rows_per_step(), rows.rows_per_step(), &mut ids)?;
            TokenDtype::U32.encode(&ids, &mut bytes);
            out.write(&bytes)?;
        }
        let (tokens_sha, tokens_bytes) = out.commit()?;
        let segments_name = format!("{stem}.segments");
        write_atomic_beneath(run_dir, &dir.join(&segments_name), &[])?;
        let header = ChunkHeader {
            format: CHUNK_FORMAT.into(),
            chunk: Some(c.index),
            first_step: c.first_step,
            n_steps: c.n_steps,
            first_row: c.first_row,
            n_rows: c.n_rows,
            row_len: rows.row_len(),
            dtype: TokenDtype::U32,
            n_segments: 0,
            segment_fields: vec![],
            tokens: FileHash {
                file: tokens_name,
                sha256: tokens_sha,
                bytes: tokens_bytes,
            },
            segments: FileHash {
                file: segments_name,
                sha256: glass_io::atomic::sha256_hex(&[]),
                bytes: 0,
            },
            config_sha256: rows.chunk_pin(c)?,
            tokenizer_sha256: info.tokenizer_sha256.clone(),
        };
        write_atomic_beneath(
            run_dir,
            &hp,
            &serde_json::to_vec_pretty(&header).expect("json"),
        )?;
        copied.push(stem);
    }
    Ok(copied)
}

/// Builds (or brings up to date) the index of a prepared run. Shards whose chunk token
/// file is unchanged are reused; `progress(name, done, total)` is called before each
/// shard.
pub fn build_index(
    run_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<IndexReport> {
    build_index_with(run_dir, NARROW_MAX_TOKENS, progress)
}

/// [`build_index`] with the 4-byte/5-byte threshold as a parameter, so tests reach the
/// wide path on small data.
pub fn build_index_with(
    run_dir: &Path,
    narrow_max_tokens: u64,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<IndexReport> {
    let t0 = Instant::now();
    if glass_data::external::is_external(run_dir) {
        copy_external_rows(run_dir, progress)?;
    }
    let (m, shards, validation) = data_shards(run_dir)?;
    let dir = run_dir.join(INDEX_DIR);
    glass_io::open::create_dir_beneath(run_dir, &dir)?;
    let mut report = IndexReport::default();
    let all: Vec<&DataShard> = shards.iter().chain(validation.iter()).collect();
    let mut records = Vec::new();
    for (i, s) in all.iter().enumerate() {
        progress(&s.name, i, all.len());
        let rec = match reusable(run_dir, s)? {
            Some(r) => {
                report.reused.push(s.name.clone());
                r
            }
            None => {
                let r = build_shard(run_dir, s, narrow_max_tokens)?;
                report.built.push(s.name.clone());
                report.built_tokens += r.n_suffixes;
                r
            }
        };
        if rec.chunk.is_some() {
            report.tokens += rec.n_suffixes;
        } else {
            report.validation_tokens += rec.n_suffixes;
        }
        report.bytes += rec.sa.bytes;
        records.push(rec);
    }
    progress("", all.len(), all.len());
    let validation_rec = if validation.is_some() {
        records.pop()
    } else {
        None
    };
    let mut files = Vec::new();
    let mut pins = Vec::new();
    for r in records.iter().chain(validation_rec.iter()) {
        files.push(r.sa.clone());
        let hp = format!("{INDEX_DIR}/{}.json", r.name);
        let (sha256, bytes) = glass_io::open::sha256_beneath(run_dir, &run_dir.join(&hp), None)?;
        files.push(FileRef {
            path: hp,
            sha256,
            bytes,
        });
        pins.push(r.tokens.clone());
    }
    let manifest = IndexManifest {
        format: INDEX_FORMAT.into(),
        tokenizer_sha256: m.tokenizer_sha256.clone(),
        row_len: m.row_len,
        shards: records,
        validation: validation_rec,
        files,
        pins,
    };
    write_atomic_beneath(
        run_dir,
        &run_dir.join(INDEX_MANIFEST),
        &serde_json::to_vec_pretty(&manifest).expect("json"),
    )?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

pub(crate) fn token_ref(s: &DataShard) -> FileRef {
    FileRef {
        path: format!("{}/{}", s.rel_dir, s.header.tokens.file),
        sha256: s.header.tokens.sha256.clone(),
        bytes: s.header.tokens.bytes,
    }
}

/// The existing shard record if it indexes exactly this chunk, agrees with its header,
/// and its array is intact.
fn reusable(run_dir: &Path, s: &DataShard) -> Result<Option<ShardRecord>> {
    let hp = run_dir.join(INDEX_DIR).join(format!("{}.json", s.name));
    let Ok(bytes) = glass_io::open::read_beneath(run_dir, &hp, glass_io::open::MAX_RECORD_BYTES)
    else {
        return Ok(None);
    };
    let Ok(rec) = serde_json::from_slice::<ShardRecord>(&bytes) else {
        return Ok(None);
    };
    let want = token_ref(s);
    if rec.format != INDEX_FORMAT || rec.tokens != want || rec.row_len != s.header.row_len {
        return Ok(None);
    }
    // The record must pass every check a query makes (a manifest listing it alone).
    let alone = IndexManifest {
        format: INDEX_FORMAT.into(),
        tokenizer_sha256: String::new(),
        row_len: rec.row_len,
        shards: vec![],
        validation: None,
        files: vec![rec.sa.clone()],
        pins: vec![],
    };
    if crate::query::check_record(run_dir, &alone, &rec, s).is_err() {
        return Ok(None);
    }
    let sp = run_dir.join(crate::query::shard_sa_path(&s.name));
    match glass_io::open::sha256_beneath(run_dir, &sp, Some(rec.sa.bytes)) {
        Ok((sha, _)) if sha == rec.sa.sha256 => Ok(Some(rec)),
        _ => Ok(None),
    }
}

fn build_shard(run_dir: &Path, s: &DataShard, narrow_max_tokens: u64) -> Result<ShardRecord> {
    let h = &s.header;
    let hp = run_dir.join(INDEX_DIR).join(format!("{}.json", s.name));
    glass_io::open::check_write_beneath(run_dir, &hp)?;
    glass_io::atomic::remove_if_exists(&hp)?;
    let tp = s.dir.join(&h.tokens.file);
    let n = h.n_rows * h.row_len as u64;
    let rel = crate::query::shard_sa_path(&s.name);
    let (sha256, nbytes, width) = build_sa_file(
        glass_io::open::open_beneath(&s.root, &tp)?,
        h.dtype,
        h.row_len,
        n,
        n > narrow_max_tokens,
        AtomicFile::create_beneath(run_dir, &run_dir.join(&rel))?,
    )?;
    let rec = ShardRecord {
        format: INDEX_FORMAT.into(),
        name: s.name.clone(),
        chunk: h.chunk,
        first_step: h.first_step,
        first_row: h.first_row,
        n_rows: h.n_rows,
        row_len: h.row_len,
        dtype: h.dtype,
        tokens: token_ref(s),
        sa: FileRef {
            path: rel,
            sha256,
            bytes: nbytes,
        },
        width,
        n_suffixes: n,
    };
    write_atomic_beneath(
        run_dir,
        &hp,
        &serde_json::to_vec_pretty(&rec).expect("json"),
    )?;
    Ok(rec)
}

/// Builds the suffix array of a `[n_tokens / row_len, row_len]` token file and writes it
/// atomically to `out`; returns (sha256, bytes, width). The token file is mapped
/// only while the text to sort is built, so peak memory is the sort's: about 8 bytes per
/// token for the 32-bit build (text and array, both `i32`), 16 for the wide one.
pub fn build_sa_file(
    tokens: glass_io::open::Opened,
    dtype: TokenDtype,
    row_len: usize,
    n_tokens: u64,
    wide: bool,
    mut out: AtomicFile,
) -> Result<(String, u64, usize)> {
    let tokens_path = tokens.path().to_path_buf();
    let len = tokens.len();
    if row_len == 0
        || Some(len) != n_tokens.checked_mul(dtype.width() as u64)
        || !n_tokens.is_multiple_of(row_len as u64)
    {
        return Err(AnalysisError::Format {
            path: tokens_path,
            msg: format!(
                "{len} bytes, expected {n_tokens} tokens in rows of {row_len}; run `glass data verify`"
            ),
        });
    }
    let map = || -> Result<Option<memmap2::Mmap>> { Ok(tokens.map()?) };
    let width = if wide {
        let text: Vec<i64> = {
            let m = map()?;
            separated_text(m.as_deref().unwrap_or(&[]), dtype, row_len)
        };
        sort_wide(text, row_len, &mut |b| Ok(out.write(b)?))?
    } else {
        let text: Vec<i32> = {
            let m = map()?;
            separated_text(m.as_deref().unwrap_or(&[]), dtype, row_len)
        };
        sort_narrow(text, row_len, &mut |b| Ok(out.write(b)?))?
    };
    let (sha, bytes) = out.commit()?;
    Ok((sha, bytes, width))
}

fn token_at(bytes: &[u8], dtype: TokenDtype, i: usize) -> u32 {
    match dtype {
        TokenDtype::U16 => u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32,
        TokenDtype::U32 => u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes")),
    }
}

/// The text the array is built over (from little-endian `dtype` token bytes): `token + 1` per token and a `0` after every row.
pub fn separated_text<T: TryFrom<u64>>(bytes: &[u8], dtype: TokenDtype, row_len: usize) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    let n = bytes.len() / dtype.width();
    let rows = n / row_len.max(1);
    let mut text = Vec::with_capacity(n + rows);
    for r in 0..rows {
        for i in r * row_len..(r + 1) * row_len {
            text.push(T::try_from(token_at(bytes, dtype, i) as u64 + 1).expect("fits"));
        }
        text.push(T::try_from(0).expect("fits"));
    }
    text
}

/// Position in the separated text → position in the token array (`None` for separators).
fn unseparate(p: u64, row_len: usize) -> Option<u64> {
    let l = row_len as u64;
    let (row, off) = (p / (l + 1), p % (l + 1));
    (off < l).then_some(row * l + off)
}

/// Sorts a separated `i32` text (see [`separated_text`]) and hands the stored form
/// (4-byte positions in suffix order) to `sink` in blocks; returns the width, 4.
pub fn sort_narrow(
    mut text: Vec<i32>,
    row_len: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<usize> {
    if !text.is_empty() {
        let sa = libsais::SuffixArrayConstruction::for_text_mut(&mut text)
            .in_owned_buffer32()
            .single_threaded()
            .run()
            .map_err(|e| AnalysisError::Build(format!("{e:?}")))?
            .into_vec();
        drop(text);
        store(sa.iter().map(|&p| p as u64), row_len, 4, sink)?;
    }
    Ok(4)
}

/// [`sort_narrow`] for shards past 2³⁰ tokens: `i64` text and array, 5-byte positions.
pub fn sort_wide(
    mut text: Vec<i64>,
    row_len: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<usize> {
    if !text.is_empty() {
        let sa = libsais::SuffixArrayConstruction::for_text_mut(&mut text)
            .in_owned_buffer64()
            .single_threaded()
            .run()
            .map_err(|e| AnalysisError::Build(format!("{e:?}")))?
            .into_vec();
        drop(text);
        store(sa.iter().map(|&p| p as u64), row_len, 5, sink)?;
    }
    Ok(5)
}

/// Drops the separators' entries and writes the rest as `width`-byte positions.
fn store(
    sa: impl Iterator<Item = u64>,
    row_len: usize,
    width: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(1 << 20);
    for p in sa {
        if let Some(q) = unseparate(p, row_len) {
            buf.extend_from_slice(&q.to_le_bytes()[..width]);
            if buf.len() >= 1 << 20 {
                sink(&buf)?;
                buf.clear();
            }
        }
    }
    sink(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suffix order over random rows of ids wider than 16 bits: every position appears
    /// once, and the row-truncated suffixes come out sorted (a match cannot cross rows).
    #[test]
    fn suffix_order_is_row_truncated_and_takes_wide_ids() {
        let (rows, row_len) = (50usize, 7usize);
        let mut x = 99u64;
        let ids: Vec<u32> = (0..rows * row_len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct values so suffixes share long prefixes, all above 2^16.
                70_000 + (x % 3) as u32 * 20_000
            })
            .collect();
        let mut bytes = Vec::new();
        TokenDtype::U32.encode(&ids, &mut bytes);
        for wide in [false, true] {
            let mut out = Vec::new();
            let w = if wide {
                sort_wide(
                    separated_text(&bytes, TokenDtype::U32, row_len),
                    row_len,
                    &mut |b| {
                        out.extend_from_slice(b);
                        Ok(())
                    },
                )
                .unwrap()
            } else {
                sort_narrow(
                    separated_text(&bytes, TokenDtype::U32, row_len),
                    row_len,
                    &mut |b| {
                        out.extend_from_slice(b);
                        Ok(())
                    },
                )
                .unwrap()
            };
            let pos: Vec<usize> = out
                .chunks_exact(w)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a[..w].copy_from_slice(c);
                    u64::from_le_bytes(a) as usize
                })
                .collect();
            let mut seen = pos.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..ids.len()).collect::<Vec<_>>());
            let suffix = |p: usize| &ids[p..(p / row_len + 1) * row_len];
            for pair in pos.windows(2) {
                assert!(suffix(pair[0]) <= suffix(pair[1]), "wide={wide}");
            }
        }
    }
}
