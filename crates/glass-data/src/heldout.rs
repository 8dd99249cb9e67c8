//! Held-out documents per source (`[data.heldout]`): which documents of every source are
//! kept out of the training stream, chosen at prepare time, and recorded with their text
//! and tokens in [`HELDOUT_FILE`], so that `glass analyze dynamics` can measure each
//! source's loss on text the model never trained on.
//!
//! The choice is a pure function of `[data] seed` and each document's identity — never of
//! threads, shards or resumes: every document a source packs from (after `[data.dedup]`
//! and decontamination) gets the key [`rank_key`] of `(seed, source, file, line,
//! byte_start)`; the `docs_per_source` documents with the smallest keys are held out.
//! Each is scored on its longest prefix of whole lines of at most `max_doc_tokens`
//! tokens ([`cut`]), so the cost of scoring is bounded however long the documents are.
//!
//! A source's held-out set is one set for the whole run, whatever stages train on the
//! source: a stage only sets the source's share of rows, so its held-out documents (and
//! their loss at a checkpoint) would be the same for every stage.
//!
//! `[data.heldout] sources` limits withholding to some training sources (a source of one
//! document, repeated on purpose, has nothing to spare). Validation sources
//! (`[data.validation]`) are never trained on; their documents are
//! chosen by the same rule (with [`VALIDATION_DEFAULT`] when the run has no
//! `[data.heldout]`, at analysis time, so runs prepared without the table need not be
//! prepared again).

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{DataConfig, HeldoutConfig, SourceConfig};
use crate::dedup::{place, DocPlace};
use crate::error::{DataError, Result};
use crate::manifest::{Manifest, ManifestFile};
use crate::sources::{list_units, read_unit, Unit};
use crate::store::SourceView;
use crate::tokenizer::GlassTokenizer;

/// The held-out documents file, relative to `RUN/data/`.
pub const HELDOUT_FILE: &str = "heldout.json";
/// Format tag of [`HeldoutFile`].
pub const HELDOUT_FORMAT: &str = "glass-heldout-v1";

/// The settings used for validation sources of runs prepared without `[data.heldout]`:
/// 4 documents per source, each scored on at most 1024 tokens (the demo's three held-out
/// plays: 3 × 1024 tokens per checkpoint).
pub const VALIDATION_DEFAULT: HeldoutConfig = HeldoutConfig {
    docs_per_source: 4,
    max_doc_tokens: Some(1024),
    sources: None,
};

/// Every source's held-out documents ([`HELDOUT_FILE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutFile {
    /// [`HELDOUT_FORMAT`].
    pub format: String,
    /// The seed of the choice (`[data] seed`).
    pub seed: u64,
    /// The settings used.
    pub settings: HeldoutConfig,
    /// Per source, in config order: training sources, then validation sources.
    pub sources: Vec<HeldoutSource>,
}

impl HeldoutFile {
    /// Which documents of which source, without their text and tokens (token and byte
    /// counts only): what `glass data stats --json` lists and what each checkpoint's
    /// dynamics records.
    pub fn summary(&self) -> serde_json::Value {
        let sources: Vec<serde_json::Value> = self
            .sources
            .iter()
            .map(|s| {
                let docs: Vec<serde_json::Value> = s
                    .docs
                    .iter()
                    .map(|d| {
                        let mut v = serde_json::to_value(&d.place).expect("json");
                        v["doc_tokens"] = d.doc_tokens.into();
                        v["tokens"] = d.tokens.len().into();
                        v["bytes"] = d.bytes.into();
                        v
                    })
                    .collect();
                serde_json::json!({"name": s.name, "role": s.role, "candidates": s.candidates, "docs": docs})
            })
            .collect();
        serde_json::json!({"seed": self.seed, "settings": self.settings, "sources": sources})
    }
}

/// One source's held-out documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutSource {
    /// Source name.
    pub name: String,
    /// `train` (the documents were withheld from the training stream) or `validation`.
    pub role: String,
    /// Documents the choice was made among.
    pub candidates: u64,
    /// The held-out documents, in document order.
    pub docs: Vec<HeldoutDoc>,
}

/// One held-out document: where it is from, the text scored and its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutDoc {
    /// Source, document index, file, line, byte range: the provenance `glass data show`
    /// prints.
    #[serde(flatten)]
    pub place: DocPlace,
    /// Tokens of the whole document (as stored).
    pub doc_tokens: u64,
    /// The text scored: the document, or its prefix under `max_doc_tokens`.
    pub text: String,
    /// UTF-8 bytes of `text`.
    pub bytes: u64,
    /// The tokenizer's tokens of `text` (no framing tokens).
    pub tokens: Vec<u32>,
}

/// The held-out record in the data manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutRecord {
    /// [`HELDOUT_FILE`] (hashed in `files`).
    pub file: String,
    /// Per source: documents, scored tokens and bytes.
    pub sources: Vec<HeldoutCount>,
}

/// One source's numbers in [`HeldoutRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldoutCount {
    /// Source name.
    pub name: String,
    /// `train` or `validation`.
    pub role: String,
    /// Documents held out.
    pub docs: u64,
    /// Tokens of those documents as stored (withheld from training for `train`).
    pub doc_tokens: u64,
    /// Tokens scored.
    pub tokens: u64,
    /// UTF-8 bytes scored.
    pub bytes: u64,
}

/// The key ordering documents for the choice: the first 8 bytes (little-endian) of
/// `sha256("{seed}\0{source}\0{file}\0{line}\0{byte_start}")`.
pub fn rank_key(seed: u64, source: &str, file: &str, line: u64, byte_start: u64) -> u64 {
    let h = Sha256::digest(format!("{seed}\0{source}\0{file}\0{line}\0{byte_start}"));
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The documents of `view` held out: among those packing draws from and substring
/// deduplication left whole (a cut document repeats trained text), the `n` with the
/// smallest [`rank_key`] (ties by document index), in document order. Also returns the
/// number of candidates.
pub fn choose(view: &SourceView, seed: u64, n: usize) -> (Vec<u64>, u64) {
    let mut keyed: Vec<(u64, u64)> = (0..view.n_drawable())
        .into_par_iter()
        .map(|i| view.drawable(i))
        .filter(|&d| !view.is_cut(d))
        .map(|d| {
            let p = place(view, d);
            (rank_key(seed, &view.name, &p.file, p.line, p.byte_start), d)
        })
        .collect();
    let m = keyed.len() as u64;
    keyed.sort_unstable();
    let mut docs: Vec<u64> = keyed.into_iter().take(n).map(|k| k.1).collect();
    docs.sort_unstable();
    (docs, m)
}

/// `text` cut to its longest prefix of whole lines (each ending in `\n`, or the end of
/// the text) that encodes to at most `cap` tokens; when even the first line is longer,
/// its longest prefix of whole characters that fits. Token counts of prefixes are found
/// by doubling then bisection, and the result is checked to fit.
pub fn cut(text: &str, tok: &GlassTokenizer, cap: usize) -> Result<String> {
    let fits = |c: usize| -> Result<bool> { Ok(tok.encode(&text[..c])?.len() <= cap) };
    if fits(text.len())? {
        return Ok(text.to_string());
    }
    let mut ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
    ends.retain(|&e| e < text.len());
    let best = match last_fitting(&ends, &fits)? {
        Some(c) => c,
        None => {
            let first_line = text.find('\n').map_or(text.len(), |i| i + 1);
            let chars: Vec<usize> = text[..first_line]
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .collect();
            last_fitting(&chars, &fits)?.unwrap_or(0)
        }
    };
    Ok(text[..best].to_string())
}

/// Largest cut among sorted `cands` that fits, searched from small prefixes up (long
/// documents are never encoded whole more than once).
fn last_fitting(cands: &[usize], fits: &dyn Fn(usize) -> Result<bool>) -> Result<Option<usize>> {
    if cands.is_empty() || !fits(cands[0])? {
        return Ok(None);
    }
    // cands[lo] fits; find hi with cands[hi] not fitting (or past the end), doubling.
    let (mut lo, mut step) = (0usize, 1usize);
    let mut hi = loop {
        let probe = lo + step;
        if probe >= cands.len() {
            break cands.len();
        }
        if fits(cands[probe])? {
            lo = probe;
            step *= 2;
        } else {
            break probe;
        }
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(cands[mid])? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(cands[lo]))
}

/// Reads the texts of `docs` of source `src` (re-reading only the units that hold
/// them), cuts each to `cap` tokens and encodes it.
pub fn read_docs(
    src: &SourceConfig,
    units: &[Unit],
    view: &SourceView,
    docs: &[u64],
    tok: &GlassTokenizer,
    cap: Option<usize>,
) -> Result<Vec<HeldoutDoc>> {
    let places: Vec<DocPlace> = docs.iter().map(|&d| place(view, d)).collect();
    let mut by_unit: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &d) in docs.iter().enumerate() {
        by_unit
            .entry(view.doc(d).unit as usize)
            .or_default()
            .push(i);
    }
    let mut texts: Vec<Option<String>> = vec![None; docs.len()];
    for (u, want) in by_unit {
        let unit = units.get(u).filter(|x| x.path == view.unit_path(u)).ok_or_else(|| {
            DataError::Source {
                source_name: src.name.clone(),
                message: format!(
                    "input `{}` is no longer where `glass data prepare` read it (its inputs changed since); restore them or prepare again",
                    view.unit_path(u)
                ),
            }
        })?;
        read_unit(src, unit, &mut |d| {
            for &i in &want {
                let p = &places[i];
                if texts[i].is_none() && d.line == p.line && d.byte_start == p.byte_start {
                    texts[i] = Some(d.text.clone());
                }
            }
            Ok(())
        })?;
    }
    docs.iter()
        .zip(places)
        .zip(texts)
        .map(|((&d, p), text)| {
            let text = text.ok_or_else(|| DataError::Source {
                source_name: src.name.clone(),
                message: format!(
                    "{} line {} byte {}: the document is no longer in the input (it changed since `glass data prepare`); restore it or prepare again",
                    p.file, p.line, p.byte_start
                ),
            })?;
            let text = match cap {
                Some(c) => cut(&text, tok, c)?,
                None => text,
            };
            if text.is_empty() {
                return Err(DataError::Config(format!(
                    "[data.heldout] max_doc_tokens = {} keeps nothing of {} line {} (its first character alone is more tokens); raise it",
                    cap.unwrap_or(0),
                    p.file,
                    p.line
                )));
            }
            let tokens = tok.encode(&text)?;
            Ok(HeldoutDoc {
                doc_tokens: view.doc(d).n_tokens as u64,
                bytes: text.len() as u64,
                place: p,
                text,
                tokens,
            })
        })
        .collect()
}

/// Chooses and reads source `s`'s held-out documents.
pub fn select_source(
    cfg: &DataConfig,
    s: usize,
    role: &str,
    units: &[Unit],
    view: &SourceView,
    tok: &GlassTokenizer,
    settings: &HeldoutConfig,
) -> Result<HeldoutSource> {
    let src = &cfg.sources[s];
    let (docs, candidates) = choose(view, cfg.seed, settings.docs_per_source);
    if docs.is_empty() {
        return Err(DataError::Source {
            source_name: src.name.clone(),
            message: "has no documents to hold out (every one was removed before packing)".into(),
        });
    }
    if role == "train" && docs.len() as u64 >= candidates {
        return Err(DataError::Source {
            source_name: src.name.clone(),
            message: format!(
                "[data.heldout] docs_per_source = {} would hold out all of its {candidates} documents, leaving nothing to train on; lower docs_per_source, or list the other sources in [data.heldout] sources",
                settings.docs_per_source
            ),
        });
    }
    Ok(HeldoutSource {
        name: src.name.clone(),
        role: role.into(),
        candidates,
        docs: read_docs(src, units, view, &docs, tok, settings.max_doc_tokens)?,
    })
}

/// `[data.heldout]` at prepare time: chooses every used source's held-out documents,
/// leaves those of training sources out of `views` (on top of what deduplication left
/// out), and writes [`HELDOUT_FILE`]. `None` without the table.
pub fn withhold(
    run_dir: &Path,
    data_dir: &Path,
    cfg: &DataConfig,
    units: &[Option<Vec<Unit>>],
    views: &mut [Option<SourceView>],
    tok: &GlassTokenizer,
) -> Result<Option<(HeldoutRecord, ManifestFile)>> {
    let Some(settings) = &cfg.heldout else {
        return Ok(None);
    };
    let train = cfg.training_sources();
    let listed = |s: usize| {
        settings
            .sources
            .as_ref()
            .is_none_or(|l| l.contains(&cfg.sources[s].name))
    };
    let mut sources = Vec::new();
    for s in cfg.used_sources() {
        let role = match train.contains(&s) {
            true if !listed(s) => continue,
            true => "train",
            false => "validation",
        };
        let view = views[s].as_mut().expect("used sources have views");
        let units = units[s].as_deref().expect("used sources are listed");
        let h = select_source(cfg, s, role, units, view, tok, settings)?;
        if role == "train" {
            // Packing draws from the documents left: everything outside `kept`.
            let mut kept: Vec<u64> = (0..view.n_drawable()).map(|i| view.drawable(i)).collect();
            kept.retain(|d| h.docs.binary_search_by_key(d, |x| x.place.doc).is_err());
            let mut removed = Vec::with_capacity((view.n_docs() - kept.len() as u64) as usize);
            let mut it = kept.iter().peekable();
            for d in 0..view.n_docs() {
                if it.peek() == Some(&&d) {
                    it.next();
                } else {
                    removed.push(d);
                }
            }
            view.remove_docs(&removed);
        }
        sources.push(h);
    }
    // Training sources first, then validation sources, each in config order.
    sources.sort_by_key(|h| h.role != "train");
    let file = HeldoutFile {
        format: HELDOUT_FORMAT.into(),
        seed: cfg.seed,
        settings: settings.clone(),
        sources,
    };
    let bytes = serde_json::to_vec(&file).expect("json");
    glass_io::atomic::write_atomic_beneath(run_dir, &data_dir.join(HELDOUT_FILE), &bytes)?;
    let record = HeldoutRecord {
        file: HELDOUT_FILE.into(),
        sources: file.sources.iter().map(count).collect(),
    };
    Ok(Some((
        record,
        ManifestFile {
            path: HELDOUT_FILE.into(),
            sha256: glass_io::atomic::sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        },
    )))
}

fn count(h: &HeldoutSource) -> HeldoutCount {
    HeldoutCount {
        name: h.name.clone(),
        role: h.role.clone(),
        docs: h.docs.len() as u64,
        doc_tokens: h.docs.iter().map(|d| d.doc_tokens).sum(),
        tokens: h.docs.iter().map(|d| d.tokens.len() as u64).sum(),
        bytes: h.docs.iter().map(|d| d.bytes).sum(),
    }
}

/// Reads the held-out file of the data in `run_dir` (described by `m`), checked against
/// the manifest's hash.
pub fn load(run_dir: &Path, m: &Manifest) -> Result<Option<HeldoutFile>> {
    let Some(rec) = m.heldout.as_ref() else {
        return Ok(None);
    };
    let path = m.dir_of(run_dir, &rec.file).join(&rec.file);
    let bytes = glass_io::open::read_beneath(&m.root_of(run_dir, &rec.file), &path, u64::MAX)?;
    let listed = crate::integrity::listed_sha(m, &rec.file);
    if listed != Some(glass_io::atomic::sha256_hex(&bytes).as_str()) {
        return Err(DataError::Format(format!(
            "{}: does not hash to what the data manifest lists; the file was modified — restore it or re-run `glass data prepare`",
            path.display()
        )));
    }
    let f: HeldoutFile = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::Format(format!("{}: {e}", path.display())))?;
    if f.format != HELDOUT_FORMAT {
        return Err(DataError::Format(format!(
            "{}: unknown format `{}` (this glass reads {HELDOUT_FORMAT})",
            path.display(),
            f.format
        )));
    }
    Ok(Some(f))
}

/// The `(source, document)` pairs withheld from the training stream of the data in
/// `run_dir` (empty without `[data.heldout]`).
pub fn withheld(run_dir: &Path, m: &Manifest) -> Result<Vec<(String, u64)>> {
    Ok(load(run_dir, m)?
        .map(|f| {
            f.sources
                .into_iter()
                .filter(|s| s.role == "train")
                .flat_map(|s| s.docs.into_iter().map(|d| (d.place.source, d.place.doc)))
                .collect()
        })
        .unwrap_or_default())
}

/// The held-out documents of a prepared run: [`HELDOUT_FILE`] (checked against the
/// manifest's hash) when it was prepared with `[data.heldout]`; otherwise its validation
/// sources' documents chosen now with [`VALIDATION_DEFAULT`]; otherwise none.
pub fn for_run(run_dir: &Path) -> Result<HeldoutFile> {
    let data = crate::PreparedData::open(run_dir)?;
    let m: &Manifest = data.manifest();
    if let Some(f) = load(run_dir, m)? {
        return Ok(f);
    }
    let cfg = &m.config;
    let mut sources = Vec::new();
    if let Some(v) = &cfg.validation {
        let tok = data.tokenizer()?;
        for name in &v.sources {
            let s = cfg.source_index(name).ok_or_else(|| {
                DataError::Config(format!("[data.validation] names unknown source `{name}`"))
            })?;
            let view = data.source_view(name)?;
            let units = list_units(&cfg.sources[s], run_dir)?;
            sources.push(select_source(
                cfg,
                s,
                "validation",
                &units,
                &view,
                &tok,
                &VALIDATION_DEFAULT,
            )?);
        }
    }
    Ok(HeldoutFile {
        format: HELDOUT_FORMAT.into(),
        seed: cfg.seed,
        settings: VALIDATION_DEFAULT,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_keys_depend_on_seed_and_identity() {
        let k = rank_key(1, "web", "a.jsonl", 3, 120);
        assert_eq!(k, rank_key(1, "web", "a.jsonl", 3, 120));
        assert_ne!(k, rank_key(2, "web", "a.jsonl", 3, 120));
        assert_ne!(k, rank_key(1, "web", "a.jsonl", 4, 120));
        assert_ne!(k, rank_key(1, "code", "a.jsonl", 3, 120));
        // Python: int.from_bytes(hashlib.sha256(b"1\0web\0a.jsonl\x003\x00120").digest()[:8], "little")
        assert_eq!(
            rank_key(1, "web", "a.jsonl", 3, 120),
            u64::from_le_bytes(
                Sha256::digest(b"1\0web\0a.jsonl\x003\x00120")[..8]
                    .try_into()
                    .unwrap()
            )
        );
    }
}
