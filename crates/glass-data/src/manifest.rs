//! The run's data manifest: what was built from what, with every file's sha256, so anyone
//! can check a released run byte for byte (`glass data verify`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{DataConfig, SourceKind};
use crate::dtype::TokenDtype;
use crate::error::{DataError, Result};
use crate::pack::StageStats;
use crate::store::UnitRecord;
use crate::tokenizer::SpecialIds;
use glass_io::atomic::sha256_file;

/// Format tag of [`Manifest`].
pub const MANIFEST_FORMAT: &str = "glass-data-manifest-v1";
/// File name of the manifest inside `RUN/data/`.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The tokenizer as the run used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerRecord {
    /// `tokenizer.json`, relative to `RUN/data/`.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// One more than the largest id.
    pub vocab_size: usize,
    /// Token width of every token file.
    pub dtype: TokenDtype,
    /// Ids of the framing tokens.
    pub specials: SpecialIds,
    /// Whether it was trained from the sources (else loaded from `config.tokenizer.path`).
    pub trained: bool,
    /// Special tokens added to a loaded tokenizer (FIM sentinels it lacked).
    pub added_tokens: Vec<String>,
}

/// One source: its inputs with their hashes and what reading them kept and skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Source name.
    pub name: String,
    /// Source kind.
    pub kind: SourceKind,
    /// `train`, `validation` or `tokenizer` (only used to train the tokenizer).
    pub role: String,
    /// Documents kept.
    pub docs: u64,
    /// Tokens of those documents.
    pub tokens: u64,
    /// Malformed JSONL lines skipped.
    pub bad_lines: u64,
    /// Documents or lines skipped for invalid UTF-8.
    pub invalid_utf8: u64,
    /// Blank JSONL lines skipped.
    pub blank_lines: u64,
    /// Empty documents skipped.
    pub empty_docs: u64,
    /// Shard jobs whose stores hold the source.
    pub n_shards: u32,
    /// Every input file (or embedded file) with its hash and counts.
    pub units: Vec<UnitRecord>,
}

/// One chunk in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Chunk index.
    pub index: u64,
    /// First step.
    pub first_step: u64,
    /// Steps.
    pub n_steps: u64,
    /// Header path relative to `RUN/data/`.
    pub header: String,
}

/// A hashed file, relative to `RUN/data/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to `RUN/data/`.
    pub path: String,
    /// sha256.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// Everything `prepare` produced and what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `glass-data-manifest-v1`.
    pub format: String,
    /// The `[data]` table used.
    pub config: DataConfig,
    /// Its sha256 ([`DataConfig::hash`]).
    pub config_sha256: String,
    /// Tokens per row (`seq_len + 1`).
    pub row_len: usize,
    /// Total optimizer steps.
    pub n_steps: u64,
    /// Chunk files.
    pub n_chunks: u64,
    /// The tokenizer.
    pub tokenizer: TokenizerRecord,
    /// Sources, in config order (unused sources omitted).
    pub sources: Vec<SourceRecord>,
    /// Per-stage, per-source numbers.
    pub stages: Vec<StageStats>,
    /// Chunks in order.
    pub chunks: Vec<ChunkRecord>,
    /// Header of the validation rows, when configured.
    pub validation: Option<String>,
    /// Every file under `RUN/data/` except this manifest, with its hash.
    pub files: Vec<ManifestFile>,
    /// A branch's data (`glass train --continue`): the files are read, by hash, from
    /// another run's data directory instead of being copied (absent for prepared data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseData>,
    /// What `[data.dedup]` removed (absent when the config has no dedup table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::dedup::DedupRecord>,
    /// The documents `[data.heldout]` withheld per source (absent without the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout: Option<crate::heldout::HeldoutRecord>,
}

/// Where a branch's data manifest reads the files it does not hold itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseData {
    /// The run whose `data/` holds the files (absolute path).
    pub run_dir: String,
    /// sha256 of that run's `data/manifest.json` when the branch was made.
    pub manifest_sha256: String,
    /// The first step the branch trains: the step of the parent checkpoint it starts
    /// from. Rows before it are the parent's, untouched.
    pub from_step: u64,
    /// Files (paths as in `files`) this data directory holds itself; every other listed
    /// file is read from the base's `data/`.
    #[serde(default)]
    pub local: Vec<String>,
}

impl Manifest {
    /// The directory holding file `rel` (relative to a data directory) of the data in
    /// `run_dir`: the run's own `data/`, or the base run's for a branch.
    pub fn dir_of(&self, run_dir: &Path, rel: &str) -> PathBuf {
        self.root_of(run_dir, rel).join("data")
    }

    /// The run directory whose `data/` holds file `rel` (see [`Manifest::dir_of`]): the
    /// directory its reads must stay beneath.
    pub fn root_of(&self, run_dir: &Path, rel: &str) -> PathBuf {
        match &self.base {
            Some(b) if !b.local.iter().any(|l| l == rel) => PathBuf::from(&b.run_dir),
            _ => run_dir.to_path_buf(),
        }
    }

    /// The directory holding the files of chunk `stem` (`chunk-KKKKK`) of the data in
    /// `run_dir` (see [`Manifest::dir_of`]).
    pub fn chunk_dir(&self, run_dir: &Path, stem: &str) -> PathBuf {
        self.dir_of(run_dir, &format!("chunks/{stem}.json"))
            .join("chunks")
    }

    /// For a branch's data: checks that the base run's data manifest is still the one
    /// the branch pinned, with an error naming both files and the fix.
    pub fn check_base(&self, run_dir: &Path) -> Result<()> {
        let Some(b) = &self.base else {
            return Ok(());
        };
        let mine = run_dir.join("data").join(MANIFEST_FILE);
        let theirs = Path::new(&b.run_dir).join("data").join(MANIFEST_FILE);
        match glass_io::open::sha256_beneath(Path::new(&b.run_dir), &theirs, None) {
            Ok((sha, _)) if sha == b.manifest_sha256 => Ok(()),
            Ok((sha, _)) => Err(DataError::Format(format!(
                "{}: this branch reads its rows from {} (sha256 {}), which now has sha256 {sha}: the parent's data changed; restore it (re-run `glass data prepare` there with its original [data] table)",
                mine.display(),
                theirs.display(),
                b.manifest_sha256
            ))),
            Err(_) => Err(DataError::Format(format!(
                "{}: this branch reads its rows, by hash, from the parent run's data at {}, which is missing: the parent moved or was deleted; put it back at {}",
                mine.display(),
                theirs.display(),
                b.run_dir
            ))),
        }
    }
}

impl Manifest {
    /// Reads `RUN/data/manifest.json`.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let p = run_dir.join("data").join(MANIFEST_FILE);
        let bytes = glass_io::open::read_beneath(run_dir, &p, glass_io::open::MAX_RECORD_BYTES)
            .map_err(|e| {
                if e.source.kind() == std::io::ErrorKind::NotFound {
                    DataError::Format(format!(
                        "{} not found: run `glass data prepare` first (or it did not finish)",
                        p.display()
                    ))
                } else {
                    e.into()
                }
            })?;
        if crate::external::is_external(run_dir) {
            return Err(DataError::Format(format!(
                "{}: this run's training data is read in place from an external layout (`glass import pythia` / `glass import olmo`), not prepared by Glass: `glass data show` and `glass data verify` read it; this command needs prepared data",
                p.display()
            )));
        }
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::Format(format!("{}: {e}", p.display())))?;
        if m.format != MANIFEST_FORMAT {
            return Err(DataError::Format(format!(
                "{}: unknown format `{}`",
                p.display(),
                m.format
            )));
        }
        crate::integrity::check_manifest(&m, &p)?;
        Ok(m)
    }
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// File relative to the run directory.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Result of re-hashing a run's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Files checked.
    pub checked: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// sha256 of the manifest itself (pin this to pin the whole dataset).
    pub manifest_sha256: String,
    /// Every mismatch, by file.
    pub mismatches: Vec<Mismatch>,
}

/// Re-hashes every file in the manifest, and checks the run config still matches.
pub fn verify(run_dir: &Path) -> Result<VerifyReport> {
    if crate::external::is_external(run_dir) {
        return crate::external::verify(run_dir, &mut |_| {});
    }
    let m = Manifest::load(run_dir)?;
    let data = run_dir.join("data");
    let mut r = VerifyReport {
        manifest_sha256: glass_io::open::sha256_beneath(run_dir, &data.join(MANIFEST_FILE), None)?
            .0,
        ..Default::default()
    };
    if let Err(e) = m.check_base(run_dir) {
        r.mismatches.push(Mismatch {
            path: format!("data/{MANIFEST_FILE}"),
            problem: e.to_string(),
        });
    }
    for f in &m.files {
        let p = m.dir_of(run_dir, &f.path).join(&f.path);
        let shown = format!("data/{}", f.path);
        r.checked += 1;
        if !crate::integrity::is_inside(&f.path) {
            r.mismatches.push(Mismatch {
                path: shown,
                problem: "path leaves the run directory; not read".into(),
            });
            continue;
        }
        // Opened beneath the run holding it (no link followed, regular files only), its
        // length compared before a byte is read: a FIFO, a device or a file of another
        // length is reported, never hashed.
        let opened = match glass_io::open::open_beneath(&m.root_of(run_dir, &f.path), &p) {
            Ok(o) => o,
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                r.mismatches.push(Mismatch {
                    path: shown,
                    problem: "missing".into(),
                });
                continue;
            }
            Err(e) => {
                r.mismatches.push(Mismatch {
                    path: shown,
                    problem: e.source.to_string(),
                });
                continue;
            }
        };
        if opened.len() != f.bytes {
            r.mismatches.push(Mismatch {
                path: shown,
                problem: format!("{} bytes, manifest says {}", opened.len(), f.bytes),
            });
            continue;
        }
        let (sha, bytes) = match opened.sha256() {
            Ok(x) => x,
            Err(e) => {
                r.mismatches.push(Mismatch {
                    path: shown,
                    problem: e.source.to_string(),
                });
                continue;
            }
        };
        r.bytes += bytes;
        if sha != f.sha256 {
            r.mismatches.push(Mismatch {
                path: shown,
                problem: format!("sha256 {sha}, manifest says {}", f.sha256),
            });
        }
    }
    match DataConfig::load(run_dir) {
        Ok(cfg) if cfg.hash() != m.config_sha256 => r.mismatches.push(Mismatch {
            path: crate::config::RUN_CONFIG_FILE.into(),
            problem: "[data] differs from the config the data was prepared with; rerun `glass data prepare`".into(),
        }),
        Ok(_) => {}
        Err(e) => r.mismatches.push(Mismatch { path: crate::config::RUN_CONFIG_FILE.into(), problem: e.to_string() }),
    }
    Ok(r)
}

/// Hashes `path` (relative to `data_dir`) into a manifest entry.
pub(crate) fn hash_entry(data_dir: &Path, rel: &str) -> Result<ManifestFile> {
    let (sha256, bytes) = sha256_file(&data_dir.join(rel))?;
    Ok(ManifestFile {
        path: rel.to_string(),
        sha256,
        bytes,
    })
}
