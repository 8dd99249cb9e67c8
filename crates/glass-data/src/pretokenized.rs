//! Prepared data from rows that were already tokenized and packed elsewhere (a published
//! release such as LLM360's `train_NNN.jsonl`: one JSON object per training row,
//! `{"token_ids": [...], "source": "..."}`), in exactly their order.
//!
//! The result is ordinary prepared data (`docs/data-format.md`), so every reader works on
//! it unchanged: input file `k` becomes chunk `k`; each row is one document of a token
//! store per `source` (unit `k` = that file, line = its JSONL line), and its single text
//! segment points at that document, so `glass data show` resolves rows to file and line.
//! Input files are streamed line by line, never held in memory. The sources are
//! `kind = "release"`, which `glass data prepare` refuses to rebuild.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chunk::{chunk_stem, write_header, ChunkMeta, ChunkWriter};
use crate::config::{
    BadInput, DataConfig, DtypeChoice, SourceConfig, SourceKind, StageConfig, TokenizerConfig,
};
use crate::dtype::TokenDtype;
use crate::error::{DataError, IoContext, Result};
use crate::manifest::{
    hash_entry, ChunkRecord, Manifest, ManifestFile, SourceRecord, TokenizerRecord, MANIFEST_FILE,
    MANIFEST_FORMAT,
};
use crate::pack::{Segment, SegmentKind, SourceStageStats, StageStats};
use crate::sources::UnitCounts;
use crate::store::{FileHash, StoreHeader, StoreWriter, STORE_FORMAT};
use crate::tokenizer::GlassTokenizer;
use glass_io::atomic::{sha256_hex, write_atomic};

/// Name of the single stage of imported data.
pub const RELEASE_STAGE: &str = "release";

/// What to import.
#[derive(Debug, Clone)]
pub struct PretokenizedInput<'a> {
    /// Row files in training order; file `k` becomes chunk `k`.
    pub files: &'a [PathBuf],
    /// Rows per optimizer step; must divide every file's row count.
    pub rows_per_step: usize,
    /// Every token id must be below this (the model's embedding rows).
    pub max_vocab: usize,
    /// The tokenizer (`tokenizer.json` bytes) and its config (`path` must be
    /// `tokenizer.json` relative to the run).
    pub tokenizer_json: &'a [u8],
    /// Tokenizer config written into `[data.tokenizer]`.
    pub tokenizer: TokenizerConfig,
    /// Recorded as each source's `paths` (where the rows came from).
    pub origin: String,
}

/// What [`import_pretokenized`] wrote.
#[derive(Debug, Clone)]
pub struct PretokenizedReport {
    /// The `[data]` table the data was built under (write it into `glass.toml`).
    pub config: DataConfig,
    /// Tokens per row.
    pub row_len: usize,
    /// Rows of each file.
    pub rows_per_file: Vec<u64>,
    /// sha256 and length of each input file.
    pub file_hashes: Vec<(String, u64)>,
    /// Steps per chunk.
    pub steps_per_chunk: u64,
    /// Total steps.
    pub n_steps: u64,
    /// sha256 of the written `data/manifest.json`.
    pub manifest_sha256: String,
}

/// Progress reported per file: `(file index, rows so far in it, bytes so far in it)`.
pub type RowProgress<'a> = &'a mut dyn FnMut(usize, u64, u64);

fn bad(path: &Path, line: u64, msg: impl std::fmt::Display) -> DataError {
    DataError::Format(format!("{}:{line}: {msg}", path.display()))
}

/// A valid source name for `s` (config names allow ASCII letters, digits, `_`, `-`).
fn source_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if n.is_empty() {
        "unnamed".into()
    } else {
        n
    }
}

struct Source {
    name: String,
    writer: StoreWriter,
    docs: u64,
    tokens: u64,
}

#[derive(serde::Deserialize)]
struct Row {
    token_ids: Vec<u32>,
    source: String,
}

/// Writes `run_dir/data/` from `input`'s rows. `run_dir/data` must not exist yet (the
/// caller assembles the run in a temporary directory and publishes it whole).
pub fn import_pretokenized(
    run_dir: &Path,
    input: &PretokenizedInput<'_>,
    progress: RowProgress<'_>,
) -> Result<PretokenizedReport> {
    if input.files.is_empty() {
        return Err(DataError::Config("no row files to import".into()));
    }
    if input.rows_per_step == 0 {
        return Err(DataError::Config("rows_per_step must be at least 1".into()));
    }
    let data = run_dir.join("data");
    std::fs::create_dir_all(&data).at(&data)?;
    let tok = GlassTokenizer::from_json(input.tokenizer_json, &input.tokenizer)?;
    let tok_sha = sha256_hex(input.tokenizer_json);
    write_atomic(&data.join("tokenizer.json"), input.tokenizer_json)?;
    let vocab = tok.vocab_size().max(input.max_vocab);
    let dtype = TokenDtype::for_vocab(DtypeChoice::Auto, vocab)?;
    let tokens_dir = data.join("tokens");
    let chunks_dir = data.join("chunks");
    std::fs::create_dir_all(&chunks_dir).at(&chunks_dir)?;
    let source_cfg = |name: &str| SourceConfig {
        name: name.to_string(),
        kind: SourceKind::Release,
        paths: vec![input.origin.clone()],
        extensions: vec![],
        text_field: None,
        id_field: None,
        metadata_fields: vec![],
        bad_lines: BadInput::Error,
        invalid_utf8: Default::default(),
        embedded: None,
        works: vec![],
        exclude: vec![],
        head_bytes: None,
        piece_bytes: None,
    };

    let mut sources: Vec<Source> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut row_len = 0usize;
    let mut rows_per_file = Vec::new();
    let mut file_hashes = Vec::new();
    let mut headers = Vec::new();
    let mut unit_names = Vec::new();
    let mut line_buf = Vec::new();
    for (k, path) in input.files.iter().enumerate() {
        let unit_name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        unit_names.push(unit_name.clone());
        for s in &mut sources {
            s.writer.begin_unit(k as u32, &unit_name);
        }
        let stem = chunk_stem(k as u64);
        let meta = ChunkMeta {
            chunk: Some(k as u64),
            first_step: 0,
            n_steps: 0,
            first_row: 0,
            row_len,
            dtype,
            config_sha256: String::new(),
            tokenizer_sha256: tok_sha.clone(),
        };
        let mut chunk: Option<ChunkWriter> = None;
        let f = glass_io::open::open_regular(path)?.into_file();
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let mut hasher = Sha256::new();
        let (mut line_no, mut offset) = (0u64, 0u64);
        loop {
            line_buf.clear();
            let n = r.read_until(b'\n', &mut line_buf).at(path)?;
            if n == 0 {
                break;
            }
            hasher.update(&line_buf);
            line_no += 1;
            let start = offset;
            offset += n as u64;
            let text = std::str::from_utf8(&line_buf).map_err(|e| {
                bad(
                    path,
                    line_no,
                    format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to()),
                )
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let row: Row = serde_json::from_str(text).map_err(|e| {
                bad(
                    path,
                    line_no,
                    format!("not a row object {{\"token_ids\": [...], \"source\": \"...\"}}: {e}"),
                )
            })?;
            if row_len == 0 {
                if row.token_ids.len() < 2 {
                    return Err(bad(
                        path,
                        line_no,
                        "a row needs at least 2 token ids (inputs and shifted targets)",
                    ));
                }
                row_len = row.token_ids.len();
            }
            if row.token_ids.len() != row_len {
                return Err(bad(
                    path,
                    line_no,
                    format!(
                        "{} token ids, but rows so far have {row_len}: every row must have the same length",
                        row.token_ids.len()
                    ),
                ));
            }
            if let Some(&t) = row
                .token_ids
                .iter()
                .find(|&&t| t as usize >= input.max_vocab)
            {
                return Err(bad(
                    path,
                    line_no,
                    format!(
                        "token id {t} is outside the model's vocabulary of {} ids",
                        input.max_vocab
                    ),
                ));
            }
            let s = match by_name.get(&row.source) {
                Some(&s) => s,
                None => {
                    let name = source_name(&row.source);
                    if sources.iter().any(|s| s.name == name) {
                        return Err(bad(
                            path,
                            line_no,
                            format!("source `{}` and another source both become `{name}` as a source name", row.source),
                        ));
                    }
                    let scfg = source_cfg(&name);
                    let empty = FileHash {
                        file: String::new(),
                        sha256: String::new(),
                        bytes: 0,
                    };
                    let header = StoreHeader {
                        format: STORE_FORMAT.into(),
                        source: name.clone(),
                        shard: 0,
                        n_shards: 1,
                        dtype,
                        tokenizer_sha256: tok_sha.clone(),
                        source_config_sha256: sha256_hex(&serde_json::to_vec(&scfg).expect("json")),
                        n_docs: 0,
                        n_tokens: 0,
                        units: vec![],
                        tokens: empty.clone(),
                        docs: empty,
                        meta: None,
                    };
                    let mut writer = StoreWriter::create(&tokens_dir, header, false)?;
                    // Files before this one held no rows of the source: empty units keep
                    // unit k = file k for every source.
                    for (j, u) in unit_names.iter().enumerate() {
                        writer.begin_unit(j as u32, u);
                        if j < k {
                            writer.end_unit(file_hashes.get(j).map_or_else(
                                UnitCounts::default,
                                |h: &(String, u64)| UnitCounts {
                                    sha256: h.0.clone(),
                                    bytes: h.1,
                                    ..Default::default()
                                },
                            ));
                        }
                    }
                    sources.push(Source {
                        name,
                        writer,
                        docs: 0,
                        tokens: 0,
                    });
                    by_name.insert(row.source.clone(), sources.len() - 1);
                    sources.len() - 1
                }
            };
            let src = &mut sources[s];
            src.writer
                .push_doc(&row.token_ids, line_no, start, n as u64, None)?;
            let seg = Segment {
                row: 0,
                pos: 0,
                len: row_len as u32,
                kind: SegmentKind::Text,
                source: s as u32,
                epoch: 0,
                doc: src.docs,
                doc_tok: 0,
            };
            src.docs += 1;
            src.tokens += row_len as u64;
            let w = match &mut chunk {
                Some(w) => w,
                None => chunk.insert(ChunkWriter::create(
                    &chunks_dir,
                    &stem,
                    ChunkMeta {
                        row_len,
                        ..meta.clone()
                    },
                )?),
            };
            w.push_row(&row.token_ids, &[seg])?;
            if w.n_rows() % 4096 == 0 {
                progress(k, w.n_rows(), offset);
            }
        }
        let hash = (hex::encode(hasher.finalize()), offset);
        for s in &mut sources {
            s.writer.end_unit(UnitCounts {
                sha256: hash.0.clone(),
                bytes: hash.1,
                ..Default::default()
            });
        }
        file_hashes.push(hash);
        let Some(w) = chunk else {
            return Err(DataError::Format(format!(
                "{}: holds no rows",
                path.display()
            )));
        };
        let n_rows = w.n_rows();
        progress(k, n_rows, offset);
        if n_rows % input.rows_per_step as u64 != 0 {
            return Err(DataError::Format(format!(
                "{}: {n_rows} rows are not a whole number of steps of {} rows; pass the rows per step the release was trained with (--rows-per-step) or a divisor of it",
                path.display(),
                input.rows_per_step
            )));
        }
        if let Some(&first) = rows_per_file.first() {
            if n_rows != first && k + 1 < input.files.len() {
                return Err(DataError::Format(format!(
                    "{}: {n_rows} rows, but {} has {first}: every chunk but the last must have the same number of rows (one checkpoint interval)",
                    path.display(),
                    input.files[0].display()
                )));
            }
            if n_rows > first {
                return Err(DataError::Format(format!(
                    "{}: {n_rows} rows, more than the {first} of every earlier chunk",
                    path.display()
                )));
            }
        }
        rows_per_file.push(n_rows);
        headers.push(w.finish(n_rows / input.rows_per_step as u64)?);
    }

    let b = input.rows_per_step as u64;
    let steps_per_chunk = rows_per_file[0] / b;
    let n_rows: u64 = rows_per_file.iter().sum();
    let n_steps = n_rows / b;
    let mut weights = BTreeMap::new();
    for s in &sources {
        weights.insert(s.name.clone(), s.docs as f64 / n_rows as f64);
    }
    let config = DataConfig {
        seed: 0,
        seq_len: row_len - 1,
        rows_per_step: input.rows_per_step,
        steps_per_chunk,
        token_dtype: DtypeChoice::Auto,
        tokenizer: input.tokenizer.clone(),
        sources: sources.iter().map(|s| source_cfg(&s.name)).collect(),
        stages: vec![StageConfig {
            name: RELEASE_STAGE.into(),
            tokens: n_steps * b * row_len as u64,
            weights,
            fim_rate: BTreeMap::new(),
        }],
        validation: None,
        dedup: None,
        decontaminate: vec![],
        decontaminate_ngram: None,
        decontaminate_data_dir: vec![],
        heldout: None,
    };
    config.validate()?;
    let config_sha256 = config.hash();

    let mut files = vec![hash_entry(&data, "tokenizer.json")?];
    let mut records = Vec::new();
    let mut stage_sources = Vec::new();
    for s in sources {
        let h = s.writer.finish()?;
        let dir = format!("tokens/{}", s.name);
        for f in [&h.tokens, &h.docs] {
            files.push(ManifestFile {
                path: format!("{dir}/{}", f.file),
                sha256: f.sha256.clone(),
                bytes: f.bytes,
            });
        }
        files.push(hash_entry(&data, &format!("{dir}/00000-of-00001.json"))?);
        stage_sources.push(SourceStageStats {
            source: s.name.clone(),
            weight: s.docs as f64 / n_rows as f64,
            fim_rate: 0.0,
            rows: s.docs,
            tokens: s.tokens,
            doc_tokens: s.tokens,
            docs: s.docs,
            fim_docs: 0,
            epochs: 1.0,
        });
        records.push(SourceRecord {
            name: s.name,
            kind: SourceKind::Release,
            role: "train".into(),
            docs: h.n_docs,
            tokens: h.n_tokens,
            bad_lines: 0,
            invalid_utf8: 0,
            blank_lines: 0,
            empty_docs: 0,
            n_shards: 1,
            units: h.units,
        });
    }
    let mut chunks = Vec::new();
    for (k, mut h) in headers.into_iter().enumerate() {
        let stem = chunk_stem(k as u64);
        h.first_step = k as u64 * steps_per_chunk;
        h.first_row = h.first_step * b;
        h.config_sha256 = config_sha256.clone();
        write_header(&chunks_dir, &stem, &h)?;
        for f in [&h.tokens, &h.segments] {
            files.push(ManifestFile {
                path: format!("chunks/{}", f.file),
                sha256: f.sha256.clone(),
                bytes: f.bytes,
            });
        }
        files.push(hash_entry(&data, &format!("chunks/{stem}.json"))?);
        chunks.push(ChunkRecord {
            index: k as u64,
            first_step: h.first_step,
            n_steps: h.n_steps,
            header: format!("chunks/{stem}.json"),
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        config: config.clone(),
        config_sha256,
        row_len,
        n_steps,
        n_chunks: chunks.len() as u64,
        tokenizer: TokenizerRecord {
            file: "tokenizer.json".into(),
            sha256: tok_sha,
            vocab_size: tok.vocab_size(),
            dtype,
            specials: tok.specials(),
            trained: false,
            added_tokens: vec![],
        },
        sources: records,
        stages: vec![StageStats {
            name: RELEASE_STAGE.into(),
            first_step: 0,
            n_steps,
            rows: n_rows,
            tokens: n_rows * row_len as u64,
            sources: stage_sources,
        }],
        chunks,
        validation: None,
        files,
        base: None,
        dedup: None,
        heldout: None,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("json");
    write_atomic(&data.join(MANIFEST_FILE), &bytes)?;
    Ok(PretokenizedReport {
        config,
        row_len,
        rows_per_file,
        file_hashes,
        steps_per_chunk,
        n_steps,
        manifest_sha256: sha256_hex(&bytes),
    })
}
