//! Finding a source's files ("units") and reading its documents, streamed one unit at a
//! time so memory stays bounded by the largest document, not the corpus.
//!
//! Units are sorted by their path, so document ids `(source, unit path, line)` and the
//! document order are the same on every machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{BadInput, SourceConfig, SourceKind};
use crate::embedded::embedded_set;
use crate::error::{DataError, IoContext, Result};

/// One input file of a source (or one embedded file).
#[derive(Debug, Clone)]
pub struct Unit {
    /// Stable id: the path as relative to the run directory, or `embedded:NAME`.
    pub path: String,
    /// Where the bytes are.
    pub location: UnitLocation,
    /// Size in bytes (for progress and shard balance).
    pub bytes: u64,
}

/// Where a unit's bytes come from.
#[derive(Debug, Clone)]
pub enum UnitLocation {
    /// A file on disk.
    File(PathBuf),
    /// Text compiled into the binary.
    Embedded(&'static str),
}

/// One document read from a unit, before tokenization.
#[derive(Debug, Clone)]
pub struct RawDoc {
    /// 1-based line for JSONL documents; 0 for whole-file documents.
    pub line: u64,
    /// Byte offset of the document's record inside its file.
    pub byte_start: u64,
    /// Byte length of that record.
    pub byte_len: u64,
    /// The document text.
    pub text: String,
    /// JSONL id and metadata fields, when configured.
    pub meta: Option<serde_json::Value>,
}

/// What reading a unit skipped and what its bytes hash to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitCounts {
    /// sha256 of the unit's bytes.
    pub sha256: String,
    /// Bytes read.
    pub bytes: u64,
    /// Malformed JSONL lines skipped (`bad_lines = "skip"`).
    pub bad_lines: u64,
    /// Documents skipped for invalid UTF-8 (`invalid_utf8 = "skip"`).
    pub invalid_utf8: u64,
    /// Blank JSONL lines skipped.
    pub blank_lines: u64,
}

fn src_err(src: &SourceConfig, message: String) -> DataError {
    DataError::Source {
        source_name: src.name.clone(),
        message,
    }
}

/// Lists a source's units, sorted by path; a pattern matching nothing is an error.
pub fn list_units(src: &SourceConfig, run_dir: &Path) -> Result<Vec<Unit>> {
    if src.kind == SourceKind::Embedded {
        let set = src.embedded.expect("validated");
        let keep = |n: &str| {
            (src.works.is_empty() || src.works.iter().any(|w| w == n))
                && !src.exclude.iter().any(|w| w == n)
        };
        return Ok(embedded_set(set)
            .into_iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, t)| Unit {
                path: format!("embedded:{n}"),
                location: UnitLocation::Embedded(t),
                bytes: t.len() as u64,
            })
            .collect());
    }
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let keep = |p: &Path| -> bool {
        let exts: Vec<&str> = if src.extensions.is_empty() && src.kind == SourceKind::Jsonl {
            vec!["jsonl"]
        } else {
            src.extensions.iter().map(|s| s.as_str()).collect()
        };
        exts.is_empty()
            || p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
    };
    for pattern in &src.paths {
        let full = run_dir.join(pattern);
        let mut matched = Vec::new();
        if pattern.contains(['*', '?', '[']) {
            let pat = full
                .to_str()
                .ok_or_else(|| src_err(src, format!("path `{pattern}` is not UTF-8")))?;
            let paths =
                glob::glob(pat).map_err(|e| src_err(src, format!("bad glob `{pattern}`: {e}")))?;
            for p in paths {
                let p = p.map_err(|e| src_err(src, format!("glob `{pattern}`: {e}")))?;
                matched.push(p);
            }
        } else if full.exists() {
            matched.push(full.clone());
        } else {
            return Err(src_err(
                src,
                format!("path `{pattern}` does not exist ({})", full.display()),
            ));
        }
        let mut n_matched = 0usize;
        for m in matched {
            if m.is_dir() {
                walk(&m, &mut |p| {
                    if keep(p) {
                        found.insert(display_path(p, run_dir), p.to_path_buf());
                        n_matched += 1;
                    }
                })
                .at(&m)?;
            } else if m.is_file() && (keep(&m) || !pattern.contains(['*', '?', '['])) {
                found.insert(display_path(&m, run_dir), m);
                n_matched += 1;
            }
        }
        if n_matched == 0 {
            return Err(src_err(src, format!("`{pattern}` matched no files")));
        }
    }
    if found.is_empty() {
        return Err(src_err(src, "no input files".into()));
    }
    found
        .into_iter()
        .map(|(path, p)| {
            let bytes = std::fs::metadata(&p).at(&p)?.len();
            Ok(Unit {
                path,
                location: UnitLocation::File(p),
                bytes,
            })
        })
        .collect()
}

fn display_path(p: &Path, run_dir: &Path) -> String {
    let rel = p.strip_prefix(run_dir).unwrap_or(p);
    rel.to_string_lossy().replace('\\', "/")
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            walk(&p, f)?;
        } else if p.is_file() {
            f(&p);
        }
    }
    Ok(())
}

/// Reads every document of `unit` in order, calling `emit` for each; returns the unit's
/// hash and the counts of skipped input, per the source's bad-input policy.
pub fn read_unit(
    src: &SourceConfig,
    unit: &Unit,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<UnitCounts> {
    let mut counts = UnitCounts::default();
    let whole = |bytes: Vec<u8>,
                 counts: &mut UnitCounts,
                 emit: &mut dyn FnMut(RawDoc) -> Result<()>| {
        counts.sha256 = hex::encode(Sha256::digest(&bytes));
        counts.bytes = bytes.len() as u64;
        match String::from_utf8(bytes) {
            Ok(text) => emit_whole(src, text, emit),
            Err(_) if src.invalid_utf8 == BadInput::Skip => {
                counts.invalid_utf8 += 1;
                Ok(())
            }
            Err(e) => Err(src_err(
                src,
                format!("{}: invalid UTF-8 at byte {} (set invalid_utf8 = \"skip\" to skip and count such documents)", unit.path, e.utf8_error().valid_up_to()),
            )),
        }
    };
    match (&unit.location, src.kind) {
        (UnitLocation::Embedded(text), _) => whole(text.as_bytes().to_vec(), &mut counts, emit)?,
        (UnitLocation::File(p), SourceKind::Jsonl) => read_jsonl(src, unit, p, &mut counts, emit)?,
        (UnitLocation::File(p), _) => {
            let mut bytes = Vec::new();
            // A regular file only: a FIFO or device named as a source is refused, not
            // read forever.
            glass_io::open::open_regular(p)?
                .into_file()
                .read_to_end(&mut bytes)
                .at(p)?;
            whole(bytes, &mut counts, emit)?
        }
    }
    Ok(counts)
}

/// Emits a whole-file document: as it is, cut to its head (`head_bytes`), or cut into
/// pieces (`piece_bytes`); a piece's `line` is the 1-based line it starts on (its id
/// within the file), a whole file's is 0.
fn emit_whole(
    src: &SourceConfig,
    mut text: String,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<()> {
    if let Some(n) = src.head_bytes {
        text.truncate(line_cut(&text, n as usize));
    }
    let Some(piece) = src.piece_bytes else {
        let len = text.len() as u64;
        return emit(RawDoc {
            line: 0,
            byte_start: 0,
            byte_len: len,
            text,
            meta: None,
        });
    };
    let (mut at, mut line) = (0usize, 1u64);
    while at < text.len() {
        let end = at + line_cut(&text[at..], piece as usize);
        let body = &text[at..end];
        emit(RawDoc {
            line,
            byte_start: at as u64,
            byte_len: body.len() as u64,
            text: body.to_string(),
            meta: None,
        })?;
        line += body.matches('\n').count() as u64;
        at = end;
    }
    Ok(())
}

/// Length of the prefix of `text` that ends at the first line end at or after byte
/// `min` (all of `text` when no line ends there); never empty for non-empty text.
fn line_cut(text: &str, min: usize) -> usize {
    if min >= text.len() {
        return text.len();
    }
    // A line feed is one byte in UTF-8, so cutting after it is always a char boundary.
    match text.as_bytes()[min..].iter().position(|&b| b == b'\n') {
        Some(i) => min + i + 1,
        None => text.len(),
    }
}

fn read_jsonl(
    src: &SourceConfig,
    unit: &Unit,
    path: &Path,
    counts: &mut UnitCounts,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, glass_io::open::open_regular(path)?.into_file());
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let (mut line, mut offset) = (0u64, 0u64);
    let field = src.text_field.as_deref().expect("validated");
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf);
        line += 1;
        let start = offset;
        offset += n as u64;
        let mut body = &buf[..];
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            counts.blank_lines += 1;
            continue;
        }
        let bad = |msg: String, counts: &mut UnitCounts| -> Result<()> {
            let utf8 = std::str::from_utf8(body).is_err();
            if utf8 && src.invalid_utf8 == BadInput::Skip {
                counts.invalid_utf8 += 1;
                Ok(())
            } else if !utf8 && src.bad_lines == BadInput::Skip {
                counts.bad_lines += 1;
                Ok(())
            } else {
                let hint = if utf8 { "invalid_utf8" } else { "bad_lines" };
                Err(src_err(
                    src,
                    format!(
                        "{}:{line}: {msg} (set {hint} = \"skip\" to skip and count such lines)",
                        unit.path
                    ),
                ))
            }
        };
        if std::str::from_utf8(body).is_err() {
            bad("invalid UTF-8".into(), counts)?;
            continue;
        }
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                bad(format!("malformed JSON: {e}"), counts)?;
                continue;
            }
        };
        let Some(text) = value.get(field).and_then(|t| t.as_str()) else {
            bad(format!("field `{field}` missing or not a string"), counts)?;
            continue;
        };
        let meta = if src.id_field.is_some() || !src.metadata_fields.is_empty() {
            let mut m = serde_json::Map::new();
            if let Some(id) = &src.id_field {
                m.insert(
                    "id".into(),
                    value.get(id).cloned().unwrap_or(serde_json::Value::Null),
                );
            }
            for f in &src.metadata_fields {
                m.insert(
                    f.clone(),
                    value.get(f).cloned().unwrap_or(serde_json::Value::Null),
                );
            }
            Some(serde_json::Value::Object(m))
        } else {
            None
        };
        emit(RawDoc {
            line,
            byte_start: start,
            byte_len: n as u64,
            text: text.to_string(),
            meta,
        })?;
    }
    counts.sha256 = hex::encode(hasher.finalize());
    counts.bytes = offset;
    Ok(())
}

/// The exact text of one document, re-read from its source by id: what per-row metadata
/// points back to.
pub fn read_document(src: &SourceConfig, unit: &Unit, line: u64) -> Result<String> {
    let mut found = None;
    read_unit(src, unit, &mut |d| {
        if d.line == line && found.is_none() {
            found = Some(d.text);
        }
        Ok(())
    })?;
    found.ok_or_else(|| src_err(src, format!("{}: no document at line {line}", unit.path)))
}
