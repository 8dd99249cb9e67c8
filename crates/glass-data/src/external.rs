//! Runs whose training data stays where it was downloaded: Pythia's Megatron `.bin`/`.idx`,
//! OLMo's memmaps + `global_indices.npy` and CrystalCoder's modelzoo HDF5 files, referenced
//! in place by
//! `RUN/data/manifest.json` (format `glass-external-data-v1`) instead of being copied into
//! chunks. The manifest records every file (absolute path, length and, unless deferred,
//! sha256), the layout, the row length and rows per step; the readers in
//! [`crate::megatron`], [`crate::olmo`] and [`crate::crystalcoder`] turn a step into its
//! exact rows.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DataError, IoContext, Result};
use crate::manifest::{Mismatch, VerifyReport, MANIFEST_FILE};
use crate::megatron::MegatronDataset;
use crate::npy::IndexFormat;
use crate::olmo::{OlmoConfig, OlmoDataset, OlmoDtype, OlmoOrder};

/// Format tag of [`ExternalManifest`].
pub const EXTERNAL_FORMAT: &str = "glass-external-data-v1";

/// A file read in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalFile {
    /// Absolute path.
    pub path: String,
    /// Length in bytes when imported.
    pub bytes: u64,
    /// sha256 as read at import, or `None` when hashing was deferred (`glass data verify`
    /// records it on its first pass).
    pub sha256: Option<String>,
}

/// Which layout the files are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExternalLayout {
    /// A Megatron indexed dataset (Pythia): one `.idx`, the `.bin` whole or in pieces.
    Megatron {
        /// The `.idx`.
        index: ExternalFile,
        /// The `.bin`, or its byte-split pieces in order.
        pieces: Vec<ExternalFile>,
    },
    /// OLMo memmaps in `global_indices` order.
    Olmo {
        /// The training config it was read from.
        config: ExternalFile,
        /// Token files, in dataset order.
        files: Vec<ExternalFile>,
        /// Each file's path as the config names it.
        config_paths: Vec<String>,
        /// Each file's `data.datasets` label, if any.
        labels: Vec<Option<String>>,
        /// Token width.
        dtype: OlmoDtype,
        /// The order file.
        global_indices: ExternalFile,
        /// How the order file is stored.
        global_indices_format: IndexFormat,
    },
    /// The Cerebras modelzoo's HDF5 files (CrystalCoder), stage by stage.
    Hdf5 {
        /// Each stage's files, in order.
        stages: Vec<Vec<ExternalFile>>,
        /// Each stage's name and rows per file.
        stage_rows: Vec<crate::crystalcoder::StageRows>,
    },
}

/// The tokenizer copied into the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTokenizer {
    /// Path relative to `RUN/data/`.
    pub file: String,
    /// sha256.
    pub sha256: String,
    /// Where it was copied from.
    pub source: String,
}

/// `RUN/data/manifest.json` of a run over external data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalManifest {
    /// `glass-external-data-v1`.
    pub format: String,
    /// `pythia` or `olmo`.
    pub suite: String,
    /// The files and how to read them.
    pub layout: ExternalLayout,
    /// Tokens a row holds (Pythia: `seq_len + 1` = 2049; OLMo: `seq_len`).
    pub row_len: u64,
    /// The model's context length.
    pub seq_len: u64,
    /// Rows per optimizer step.
    pub rows_per_step: u64,
    /// Complete steps the data holds.
    pub n_steps: u64,
    /// The tokenizer, when given.
    pub tokenizer: Option<ExternalTokenizer>,
}

/// Whether `RUN/data/manifest.json` is an external-data manifest (false when absent).
pub fn is_external(run_dir: &Path) -> bool {
    let p = run_dir.join("data").join(MANIFEST_FILE);
    let Ok(bytes) = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)
    else {
        return false;
    };
    #[derive(Deserialize)]
    struct Tag {
        format: String,
    }
    serde_json::from_slice::<Tag>(&bytes).is_ok_and(|t| t.format == EXTERNAL_FORMAT)
}

impl ExternalManifest {
    /// Reads and checks `RUN/data/manifest.json`.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let p = run_dir.join("data").join(MANIFEST_FILE);
        let bytes = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)?;
        let m: Self = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::Format(format!("{}: {e}", p.display())))?;
        if m.format != EXTERNAL_FORMAT {
            return Err(DataError::Format(format!(
                "{}: format `{}`, expected `{EXTERNAL_FORMAT}`",
                p.display(),
                m.format
            )));
        }
        if m.row_len == 0 || m.rows_per_step == 0 {
            return Err(DataError::Format(format!(
                "{}: row_len and rows_per_step must be positive",
                p.display()
            )));
        }
        if let Some(t) = &m.tokenizer {
            if !glass_io::paths::is_inside(&t.file) {
                return Err(DataError::Format(format!(
                    "{}: tokenizer path `{}` leaves the data directory",
                    p.display(),
                    t.file
                )));
            }
        }
        Ok(m)
    }

    /// Every external file, in manifest order.
    pub fn files(&self) -> Vec<&ExternalFile> {
        match &self.layout {
            ExternalLayout::Megatron { index, pieces } => {
                std::iter::once(index).chain(pieces.iter()).collect()
            }
            ExternalLayout::Olmo {
                config,
                files,
                global_indices,
                ..
            } => std::iter::once(config)
                .chain(files.iter())
                .chain(std::iter::once(global_indices))
                .collect(),
            ExternalLayout::Hdf5 { stages, .. } => stages.iter().flatten().collect(),
        }
    }

    fn files_mut(&mut self) -> Vec<&mut ExternalFile> {
        match &mut self.layout {
            ExternalLayout::Megatron { index, pieces } => {
                std::iter::once(index).chain(pieces.iter_mut()).collect()
            }
            ExternalLayout::Olmo {
                config,
                files,
                global_indices,
                ..
            } => std::iter::once(config)
                .chain(files.iter_mut())
                .chain(std::iter::once(global_indices))
                .collect(),
            ExternalLayout::Hdf5 { stages, .. } => stages.iter_mut().flatten().collect(),
        }
    }

    /// Writes it atomically to `RUN/data/manifest.json`.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let p = run_dir.join("data").join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).expect("serializable");
        glass_io::atomic::write_atomic(&p, &json)?;
        Ok(())
    }
}

/// Checks that `f` still has the length recorded at import (a cheap guard on every read;
/// `glass data verify` compares the hashes).
fn check_len(f: &ExternalFile) -> Result<PathBuf> {
    let p = PathBuf::from(&f.path);
    let len = std::fs::metadata(&p).at(&p)?.len();
    if len != f.bytes {
        return Err(DataError::layout(
            &p,
            None,
            format!(
                "{len} bytes, but the run recorded {} at import: the data changed or is another file",
                f.bytes
            ),
        ));
    }
    Ok(p)
}

enum Reader {
    Megatron(MegatronDataset),
    Olmo(OlmoDataset, OlmoOrder),
    /// Files are opened per read (a stage has thousands; a step touches a few).
    Hdf5,
}

/// One row of a step, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalRow {
    /// Token ids (`row_len`).
    pub ids: Vec<u32>,
    /// Pythia: the idx entry; OLMo: the instance index.
    pub sequence: u64,
    /// The file holding the row's first token.
    pub file: String,
    /// Byte offset of that token in the file.
    pub byte: u64,
    /// OLMo: the chunk within the file.
    pub chunk: Option<u64>,
    /// OLMo: the file's `data.datasets` label; CrystalCoder: the stage.
    pub label: Option<String>,
    /// CrystalCoder: the row within the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
}

/// An opened external-data run.
pub struct ExternalData {
    run_dir: PathBuf,
    manifest: ExternalManifest,
    reader: Reader,
}

impl ExternalData {
    /// Loads the manifest, checks every file's length and opens the readers (O(1) checks
    /// of the headers and lengths; no file is hashed).
    pub fn open(run_dir: &Path) -> Result<Self> {
        let manifest = ExternalManifest::load(run_dir)?;
        for f in manifest.files() {
            check_len(f)?;
        }
        let reader = match &manifest.layout {
            ExternalLayout::Megatron { index, pieces } => {
                let bins: Vec<PathBuf> = pieces.iter().map(|p| PathBuf::from(&p.path)).collect();
                Reader::Megatron(MegatronDataset::open(Path::new(&index.path), &bins)?)
            }
            ExternalLayout::Olmo {
                files,
                dtype,
                global_indices,
                ..
            } => {
                let paths: Vec<PathBuf> = files.iter().map(|p| PathBuf::from(&p.path)).collect();
                Reader::Olmo(
                    OlmoDataset::open(&paths, *dtype, manifest.seq_len)?,
                    OlmoOrder::open(Path::new(&global_indices.path), manifest.rows_per_step)?,
                )
            }
            ExternalLayout::Hdf5 { stages, stage_rows } => {
                if stages.len() != stage_rows.len()
                    || stages
                        .iter()
                        .zip(stage_rows)
                        .any(|(f, r)| f.len() != r.rows.len())
                {
                    return Err(DataError::Format(format!(
                        "{}: the HDF5 stages' files and row counts disagree",
                        run_dir.join("data").join(MANIFEST_FILE).display()
                    )));
                }
                Reader::Hdf5
            }
        };
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            manifest,
            reader,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &ExternalManifest {
        &self.manifest
    }

    /// The run's tokenizer, if it has one.
    pub fn tokenizer(&self) -> Result<Option<tokenizers::Tokenizer>> {
        let Some(t) = &self.manifest.tokenizer else {
            return Ok(None);
        };
        let p = self.run_dir.join("data").join(&t.file);
        let bytes =
            glass_io::open::read_beneath(&self.run_dir, &p, glass_io::open::MAX_RECORD_BYTES)?;
        let sha = glass_io::atomic::sha256_hex(&bytes);
        if sha != t.sha256 {
            return Err(DataError::Tokenizer(format!(
                "{}: sha256 {sha}, the manifest says {}",
                p.display(),
                t.sha256
            )));
        }
        crate::tokenizer::parse_tokenizer_json(&bytes)
            .map(Some)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", p.display())))
    }

    /// Rows `[⌊r·B/W⌋, ⌊(r+1)·B/W⌋)` of step `step`'s global batch for rank `r` of `W`.
    pub fn rows(
        &self,
        step: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Vec<(usize, ExternalRow)>> {
        let b = self.manifest.rows_per_step as usize;
        if world_size == 0 || rank >= world_size || world_size > b {
            return Err(DataError::Range(format!(
                "rank {rank} of world size {world_size}: need 0 ≤ rank < world size ≤ rows per step ({b})"
            )));
        }
        if step >= self.manifest.n_steps {
            return Err(DataError::Range(format!(
                "step {step} is past the last step ({} steps)",
                self.manifest.n_steps
            )));
        }
        let cut = |r: usize| (r as u128 * b as u128 / world_size as u128) as usize;
        let (lo, hi) = (cut(rank), cut(rank + 1));
        let row_len = self.manifest.row_len;
        let mut out = Vec::with_capacity(hi - lo);
        match &self.reader {
            Reader::Megatron(ds) => {
                let (ids, origins) = ds.step_rows(step, self.manifest.rows_per_step, row_len)?;
                for slot in lo..hi {
                    let o = &origins[slot];
                    let r = row_len as usize;
                    out.push((
                        slot,
                        ExternalRow {
                            ids: ids[slot * r..(slot + 1) * r].to_vec(),
                            sequence: o.sequence,
                            file: ds.bin().paths()[o.piece].display().to_string(),
                            byte: o.piece_offset,
                            chunk: None,
                            label: None,
                            row: None,
                        },
                    ));
                }
            }
            Reader::Olmo(ds, order) => {
                let ExternalLayout::Olmo { labels, .. } = &self.manifest.layout else {
                    unreachable!("reader follows layout")
                };
                let inst = order.step_instances(step, ds.len())?;
                for (slot, &i) in inst.iter().enumerate().take(hi).skip(lo) {
                    let mut ids = Vec::with_capacity(row_len as usize);
                    let o = ds.instance(i, &mut ids)?;
                    out.push((
                        slot,
                        ExternalRow {
                            ids,
                            sequence: i,
                            file: ds.paths()[o.file].display().to_string(),
                            byte: o.byte,
                            chunk: Some(o.chunk),
                            label: labels.get(o.file).cloned().flatten(),
                            row: None,
                        },
                    ));
                }
            }
            Reader::Hdf5 => {
                let ExternalLayout::Hdf5 { stages, stage_rows } = &self.manifest.layout else {
                    unreachable!("reader follows layout")
                };
                // Each file a step touches is opened once.
                let mut open: Option<((usize, usize), crate::hdf5::H5File, crate::hdf5::Dataset)> =
                    None;
                for slot in lo..hi {
                    let (si, fi, row) = crate::crystalcoder::locate(
                        stage_rows,
                        self.manifest.rows_per_step,
                        step,
                        slot as u64,
                    )
                    .ok_or_else(|| {
                        DataError::Range(format!("step {step} slot {slot} is past the data"))
                    })?;
                    let path = Path::new(&stages[si][fi].path);
                    if open.as_ref().is_none_or(|o| o.0 != (si, fi)) {
                        let (f, ds, shape) = crate::crystalcoder::open_file(path)?;
                        if shape.rows != stage_rows[si].rows[fi] || shape.seq_len != row_len {
                            return Err(DataError::layout(
                                path,
                                None,
                                format!(
                                    "holds {} rows of {} tokens, the run recorded {} of {row_len} at import",
                                    shape.rows, shape.seq_len, stage_rows[si].rows[fi]
                                ),
                            ));
                        }
                        open = Some(((si, fi), f, ds));
                    }
                    let (_, f, ds) = open.as_ref().expect("opened above");
                    out.push((
                        slot,
                        ExternalRow {
                            ids: crate::crystalcoder::row_ids(f, ds, row)?,
                            sequence: step * self.manifest.rows_per_step + slot as u64,
                            file: stages[si][fi].path.clone(),
                            byte: 0,
                            chunk: None,
                            label: Some(stage_rows[si].name.clone()),
                            row: Some(row),
                        },
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// What long work reports, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A phase starts: `label`, over `total` units (bytes or records).
    Begin {
        /// What is being done.
        label: String,
        /// Units in all.
        total: u64,
    },
    /// Units done so far in the phase.
    At(u64),
    /// The phase ended.
    End,
}

/// sha256 of a file, read in 8 MiB blocks, reporting bytes read.
pub fn hash_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<(String, u64)> {
    let mut f = glass_io::open::open_regular(path)?.into_file();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).at(path)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress(n);
    }
    Ok((hex::encode(h.finalize()), n))
}

fn record(
    path: &Path,
    hash: bool,
    base: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExternalFile> {
    let abs = std::fs::canonicalize(path).at(path)?;
    let bytes = glass_io::open::open_regular(&abs)?.len();
    let sha256 = if hash {
        Some(hash_file(&abs, &mut |n| progress(Progress::At(base + n)))?.0)
    } else {
        None
    };
    Ok(ExternalFile {
        path: abs.display().to_string(),
        bytes,
        sha256,
    })
}

fn record_all(
    paths: &[PathBuf],
    hash: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<ExternalFile>> {
    let total: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).at(p))
        .sum::<Result<u64>>()?;
    if hash {
        progress(Progress::Begin {
            label: "sha256".into(),
            total,
        });
    }
    let mut base = 0;
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let f = record(p, hash, base, progress)?;
        base += f.bytes;
        out.push(f);
    }
    if hash {
        progress(Progress::End);
    }
    Ok(out)
}

/// Options shared by the external imports.
#[derive(Debug, Clone, Default)]
pub struct ImportCommon {
    /// A `tokenizer.json` to copy into the run (for text in `glass data show`).
    pub tokenizer: Option<PathBuf>,
    /// Hash every file now (else record lengths only and let `glass data verify` hash).
    pub hash: bool,
    /// Check every `.idx` record now (Megatron; O(sequences)).
    pub validate: bool,
}

/// `glass import pythia` options.
#[derive(Debug, Clone)]
pub struct PythiaImport {
    /// Folder holding the `.idx` and the `.bin` (whole or as pieces).
    pub data: PathBuf,
    /// The `.idx`, when the folder holds several.
    pub index: Option<PathBuf>,
    /// Rows per step (Pythia: 1024).
    pub rows_per_step: u64,
    /// Context length (Pythia: 2048; rows hold `seq_len + 1` tokens).
    pub seq_len: u64,
    /// Shared options.
    pub common: ImportCommon,
}

/// `glass import olmo` options.
#[derive(Debug, Clone)]
pub struct OlmoImport {
    /// OLMo's `config.yaml`.
    pub config: PathBuf,
    /// Folder holding local copies of the config's data files.
    pub data: PathBuf,
    /// The order file (default: `DATA/global_indices.npy`, else next to the config).
    pub global_indices: Option<PathBuf>,
    /// Shared options.
    pub common: ImportCommon,
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalImportReport {
    /// The run.
    pub run_dir: PathBuf,
    /// `pythia` or `olmo`.
    pub suite: String,
    /// Files referenced.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Whether they were hashed.
    pub hashed: bool,
    /// Rows (sequences or instances) in order.
    pub rows: u64,
    /// Tokens per row.
    pub row_len: u64,
    /// Rows per step.
    pub rows_per_step: u64,
    /// Complete steps.
    pub n_steps: u64,
    /// sha256 of the written data manifest.
    pub manifest_sha256: String,
}

/// The `.idx` of a Pythia data folder and its `.bin`: `STEM.bin`, or every piece
/// `STEM-IIIII-of-NNNNN.bin` for `IIIII` = 0..=NNNNN (Pythia's naming: `NNNNN` is the
/// last piece's number), in order.
pub fn pythia_files(data: &Path, index: Option<&Path>) -> Result<(PathBuf, Vec<PathBuf>)> {
    let idx =
        match index {
            Some(i) => i.to_path_buf(),
            None => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(data)
                    .at(data)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "idx"))
                    .collect();
                found.sort();
                match found.len() {
                    1 => found.remove(0),
                    0 => return Err(DataError::layout(
                        data,
                        None,
                        "no .idx file here (Pythia's folder holds document.idx and document-*.bin)",
                    )),
                    _ => {
                        return Err(DataError::layout(
                            data,
                            None,
                            format!(
                                "several .idx files ({}): name one with --index",
                                found
                                    .iter()
                                    .map(|p| p.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ))
                    }
                }
            }
        };
    let dir = idx.parent().unwrap_or(data);
    let stem = idx
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| DataError::layout(&idx, None, "file name is not UTF-8"))?
        .to_string();
    let whole = dir.join(format!("{stem}.bin"));
    if whole.is_file() {
        return Ok((idx, vec![whole]));
    }
    let prefix = format!("{stem}-");
    let mut pieces: Vec<(u64, u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".bin"))
        else {
            continue;
        };
        let Some((i, n)) = rest.split_once("-of-") else {
            continue;
        };
        if let (Ok(i), Ok(n)) = (i.parse::<u64>(), n.parse::<u64>()) {
            pieces.push((i, n, p));
        }
    }
    if pieces.is_empty() {
        return Err(DataError::layout(
            &idx,
            None,
            format!("neither {stem}.bin nor pieces {stem}-00000-of-NNNNN.bin are next to it"),
        ));
    }
    pieces.sort();
    let last = pieces[0].1;
    if pieces.iter().any(|p| p.1 != last) {
        return Err(DataError::layout(
            dir,
            None,
            format!("pieces of {stem}.bin disagree on their count (-of-NNNNN)"),
        ));
    }
    let missing: Vec<String> = (0..=last)
        .filter(|i| !pieces.iter().any(|p| p.0 == *i))
        .map(|i| format!("{stem}-{i:05}-of-{last:05}.bin"))
        .collect();
    if !missing.is_empty() || pieces.len() as u64 != last + 1 {
        return Err(DataError::layout(
            dir,
            None,
            format!(
                "{} pieces of {stem}.bin, expected {} (00000 to {last:05}); missing: {}",
                pieces.len(),
                last + 1,
                missing.join(", ")
            ),
        ));
    }
    Ok((idx, pieces.into_iter().map(|p| p.2).collect()))
}

fn staging(run_dir: &Path) -> Result<PathBuf> {
    if run_dir.exists() {
        return Err(DataError::Range(format!(
            "{} already exists; choose a new run directory",
            run_dir.display()
        )));
    }
    let parent = glass_io::atomic::dir_of(run_dir);
    std::fs::create_dir_all(parent).at(parent)?;
    let name = run_dir
        .file_name()
        .ok_or_else(|| DataError::Range(format!("{}: not a directory name", run_dir.display())))?;
    let tmp = parent.join(format!(".{}.importing", name.to_string_lossy()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    std::fs::create_dir_all(tmp.join("data")).at(&tmp)?;
    Ok(tmp)
}

fn finish(
    tmp: &Path,
    run_dir: &Path,
    mut m: ExternalManifest,
    common: &ImportCommon,
    rows: u64,
) -> Result<ExternalImportReport> {
    if let Some(t) = &common.tokenizer {
        let bytes = glass_io::open::open_regular(t)?.read_all(glass_io::open::MAX_RECORD_BYTES)?;
        crate::tokenizer::parse_tokenizer_json(&bytes)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", t.display())))?;
        glass_io::atomic::write_atomic(&tmp.join("data/tokenizer.json"), &bytes)?;
        m.tokenizer = Some(ExternalTokenizer {
            file: "tokenizer.json".into(),
            sha256: glass_io::atomic::sha256_hex(&bytes),
            source: std::fs::canonicalize(t).at(t)?.display().to_string(),
        });
    }
    m.save(tmp)?;
    let (manifest_sha256, _) =
        glass_io::atomic::sha256_file(&tmp.join("data").join(MANIFEST_FILE))?;
    std::fs::rename(tmp, run_dir).at(run_dir)?;
    glass_io::atomic::sync_dir(glass_io::atomic::dir_of(run_dir))?;
    let files = m.files();
    Ok(ExternalImportReport {
        run_dir: run_dir.to_path_buf(),
        suite: m.suite.clone(),
        files: files.len(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        hashed: common.hash,
        rows,
        row_len: m.row_len,
        rows_per_step: m.rows_per_step,
        n_steps: m.n_steps,
        manifest_sha256,
    })
}

/// `glass import pythia`: a run whose data is a Megatron dataset read in place.
pub fn import_pythia(
    o: &PythiaImport,
    run_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExternalImportReport> {
    if o.rows_per_step == 0 || o.seq_len == 0 {
        return Err(DataError::Range(
            "--rows-per-step and --seq-len must be positive".into(),
        ));
    }
    let (idx, bins) = pythia_files(&o.data, o.index.as_deref())?;
    let ds = MegatronDataset::open(&idx, &bins)?;
    if o.common.validate {
        progress(Progress::Begin {
            label: "checking .idx".into(),
            total: ds.index().len(),
        });
        ds.validate_all(&mut |n| progress(Progress::At(n)))?;
        progress(Progress::End);
    }
    let row_len = o
        .seq_len
        .checked_add(1)
        .ok_or_else(|| DataError::Range("--seq-len is too large".into()))?;
    let n_steps = ds.n_steps(o.rows_per_step);
    if n_steps > 0 {
        // The first step must read as rows of this length: catches a wrong --seq-len now.
        ds.step_rows(0, o.rows_per_step, row_len)?;
    }
    let tmp = staging(run_dir)?;
    let result = (|| {
        let index = record_all(std::slice::from_ref(&idx), o.common.hash, progress)?.remove(0);
        let pieces = record_all(&bins, o.common.hash, progress)?;
        let m = ExternalManifest {
            format: EXTERNAL_FORMAT.into(),
            suite: "pythia".into(),
            layout: ExternalLayout::Megatron { index, pieces },
            row_len,
            seq_len: o.seq_len,
            rows_per_step: o.rows_per_step,
            n_steps,
            tokenizer: None,
        };
        finish(&tmp, run_dir, m, &o.common, ds.index().len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// `glass import olmo`: a run whose data is OLMo's memmaps in `global_indices` order.
pub fn import_olmo(
    o: &OlmoImport,
    run_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExternalImportReport> {
    let text =
        glass_io::open::open_regular(&o.config)?.read_all(glass_io::open::MAX_RECORD_BYTES)?;
    let text =
        String::from_utf8(text).map_err(|_| DataError::layout(&o.config, None, "not UTF-8"))?;
    let cfg = OlmoConfig::parse(&text, &o.config)?;
    let mut local = Vec::with_capacity(cfg.paths.len());
    for p in &cfg.paths {
        local.push(crate::olmo::resolve_local(&o.data, p).ok_or_else(|| {
            DataError::layout(
                &o.data,
                None,
                format!("the config's data file `{p}` is not here (looked for its path without the scheme, then with leading folders dropped down to the file name)"),
            )
        })?);
    }
    let gi = match &o.global_indices {
        Some(g) => g.clone(),
        None => {
            let beside = o
                .config
                .parent()
                .unwrap_or(Path::new("."))
                .join("global_indices.npy");
            let in_data = o.data.join("global_indices.npy");
            if in_data.is_file() {
                in_data
            } else if beside.is_file() {
                beside
            } else {
                return Err(DataError::layout(
                    &o.data,
                    None,
                    "no global_indices.npy here or next to the config: name it with --global-indices",
                ));
            }
        }
    };
    let ds = OlmoDataset::open(&local, cfg.dtype, cfg.seq_len)?;
    let order = OlmoOrder::open(&gi, cfg.global_batch_size)?;
    if order.n_steps() > 0 {
        order.step_instances(0, ds.len())?;
    }
    let tmp = staging(run_dir)?;
    let result = (|| {
        let config =
            record_all(std::slice::from_ref(&o.config), o.common.hash, progress)?.remove(0);
        let files = record_all(&local, o.common.hash, progress)?;
        let global_indices =
            record_all(std::slice::from_ref(&gi), o.common.hash, progress)?.remove(0);
        let m = ExternalManifest {
            format: EXTERNAL_FORMAT.into(),
            suite: "olmo".into(),
            layout: ExternalLayout::Olmo {
                config,
                files,
                config_paths: cfg.paths.clone(),
                labels: cfg.labels.clone(),
                dtype: cfg.dtype,
                global_indices,
                global_indices_format: order.indices().format(),
            },
            row_len: cfg.seq_len,
            seq_len: cfg.seq_len,
            rows_per_step: cfg.global_batch_size,
            n_steps: order.n_steps(),
            tokenizer: None,
        };
        finish(&tmp, run_dir, m, &o.common, order.indices().len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// `glass import crystalcoder` options.
#[derive(Debug, Clone)]
pub struct CrystalCoderImport {
    /// Folder of stage folders of `.h5` files (or of `.h5` files: one stage).
    pub data: PathBuf,
    /// Stage folders to read, in training order (default: every sub-folder with `.h5`
    /// files, in natural name order).
    pub stages: Vec<String>,
    /// Rows per optimizer step (the global batch size).
    pub rows_per_step: u64,
    /// Expected tokens per row, if given (checked against every file).
    pub seq_len: Option<u64>,
    /// Shared options.
    pub common: ImportCommon,
}

/// `glass import crystalcoder`: a run whose data is the modelzoo's HDF5 files, read in
/// place. Every file's header is read and checked (`data` of `[n, 3, seq]` integers,
/// `n_examples` = `n`, one `seq` for all).
pub fn import_crystalcoder(
    o: &CrystalCoderImport,
    run_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExternalImportReport> {
    if o.rows_per_step == 0 || o.seq_len == Some(0) {
        return Err(DataError::Range(
            "--rows-per-step and --seq-len must be positive".into(),
        ));
    }
    let stages = crate::crystalcoder::stage_files(&o.data, &o.stages)?;
    let total: u64 = stages.iter().map(|s| s.1.len() as u64).sum();
    progress(Progress::Begin {
        label: "checking .h5 headers".into(),
        total,
    });
    let mut seq_len = o.seq_len;
    let mut stage_rows = Vec::with_capacity(stages.len());
    let mut done = 0;
    for (name, files) in &stages {
        let mut rows = Vec::with_capacity(files.len());
        for p in files {
            let (f, ds, shape) = crate::crystalcoder::open_file(p)?;
            match seq_len {
                Some(s) if s != shape.seq_len => {
                    return Err(DataError::layout(
                        p,
                        None,
                        format!(
                            "rows of {} tokens, but {} (--seq-len or the first file) has {s}",
                            shape.seq_len,
                            if o.seq_len.is_some() {
                                "--seq-len"
                            } else {
                                "the first file"
                            }
                        ),
                    ))
                }
                Some(_) => {}
                None => seq_len = Some(shape.seq_len),
            }
            // The first row must decode: catches a filter or chunk index problem now.
            if shape.rows > 0 {
                crate::crystalcoder::row_ids(&f, &ds, 0)?;
            }
            rows.push(shape.rows);
            done += 1;
            progress(Progress::At(done));
        }
        stage_rows.push(crate::crystalcoder::StageRows {
            name: name.clone(),
            rows,
        });
    }
    progress(Progress::End);
    let seq_len = seq_len.unwrap_or(0);
    let n_steps = crate::crystalcoder::n_steps(&stage_rows, o.rows_per_step);
    let all_rows: u64 = stage_rows.iter().flat_map(|s| s.rows.iter()).sum();
    let tmp = staging(run_dir)?;
    let result = (|| {
        let paths: Vec<PathBuf> = stages.iter().flat_map(|s| s.1.iter().cloned()).collect();
        let mut recorded = record_all(&paths, o.common.hash, progress)?.into_iter();
        let files = stages
            .iter()
            .map(|s| recorded.by_ref().take(s.1.len()).collect())
            .collect();
        let m = ExternalManifest {
            format: EXTERNAL_FORMAT.into(),
            suite: "crystalcoder".into(),
            layout: ExternalLayout::Hdf5 {
                stages: files,
                stage_rows,
            },
            row_len: seq_len,
            seq_len,
            rows_per_step: o.rows_per_step,
            n_steps,
            tokenizer: None,
        };
        finish(&tmp, run_dir, m, &o.common, all_rows)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Re-hashes every external file (and the tokenizer copy) against the manifest. Files
/// whose hash was deferred at import are hashed and the hash recorded in the manifest
/// (written atomically), so later passes compare against it.
pub fn verify(run_dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<VerifyReport> {
    let mut m = ExternalManifest::load(run_dir)?;
    let mut r = VerifyReport::default();
    let total: u64 = m.files().iter().map(|f| f.bytes).sum();
    progress(Progress::Begin {
        label: "sha256".into(),
        total,
    });
    let mut base = 0u64;
    let mut recorded = false;
    for f in m.files_mut() {
        r.checked += 1;
        let p = PathBuf::from(&f.path);
        match std::fs::metadata(&p) {
            Err(_) => {
                r.mismatches.push(Mismatch {
                    path: f.path.clone(),
                    problem: "missing".into(),
                });
                base += f.bytes;
                continue;
            }
            Ok(md) if md.len() != f.bytes => {
                r.mismatches.push(Mismatch {
                    path: f.path.clone(),
                    problem: format!("{} bytes, manifest says {}", md.len(), f.bytes),
                });
                base += f.bytes;
                continue;
            }
            Ok(_) => {}
        }
        let (sha, n) = match hash_file(&p, &mut |n| progress(Progress::At(base + n))) {
            Ok(x) => x,
            Err(e) => {
                r.mismatches.push(Mismatch {
                    path: f.path.clone(),
                    problem: e.to_string(),
                });
                base += f.bytes;
                continue;
            }
        };
        base += f.bytes;
        r.bytes += n;
        match &f.sha256 {
            Some(want) if *want != sha => r.mismatches.push(Mismatch {
                path: f.path.clone(),
                problem: format!("sha256 {sha}, manifest says {want}"),
            }),
            Some(_) => {}
            None => {
                f.sha256 = Some(sha);
                recorded = true;
            }
        }
    }
    progress(Progress::End);
    if let Some(t) = &m.tokenizer {
        r.checked += 1;
        let p = run_dir.join("data").join(&t.file);
        match glass_io::open::sha256_beneath(run_dir, &p, None) {
            Ok((sha, n)) => {
                r.bytes += n;
                if sha != t.sha256 {
                    r.mismatches.push(Mismatch {
                        path: format!("data/{}", t.file),
                        problem: format!("sha256 {sha}, manifest says {}", t.sha256),
                    });
                }
            }
            Err(e) => r.mismatches.push(Mismatch {
                path: format!("data/{}", t.file),
                problem: e.source.to_string(),
            }),
        }
    }
    if recorded && r.mismatches.is_empty() {
        m.save(run_dir)?;
    }
    r.manifest_sha256 = glass_io::atomic::sha256_file(&run_dir.join("data").join(MANIFEST_FILE))?.0;
    Ok(r)
}
