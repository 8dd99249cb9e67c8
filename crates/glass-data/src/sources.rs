//! Finding a source's files ("units") and reading its documents, streamed one unit at a
//! time so memory stays bounded by the largest document, not the corpus.
//!
//! Units are sorted by their path, so document ids `(source, unit path, line)` and the
//! document order are the same on every machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::columnar::{self, Columnar};
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
        let exts: Vec<&str> = if src.extensions.is_empty() {
            default_extensions(src.kind).to_vec()
        } else {
            src.extensions.iter().map(|s| s.as_str()).collect()
        };
        // By suffix, so that two-part extensions (`jsonl.gz`) match too.
        exts.is_empty()
            || p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| exts.iter().any(|e| n.ends_with(&format!(".{e}"))))
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
            if m.is_dir() && src.kind == SourceKind::Arrow && m.join("state.json").is_file() {
                for p in datasets_folder(src, &m)? {
                    found.insert(display_path(&p, run_dir), p);
                    n_matched += 1;
                }
            } else if m.is_dir() {
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

/// The files a source of `kind` takes from a directory when it names no `extensions`.
fn default_extensions(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Jsonl => &["jsonl", "jsonl.gz", "json.gz", "jsonl.zst", "json.zst"],
        SourceKind::Parquet => &["parquet"],
        SourceKind::Arrow => &["arrow"],
        _ => &[],
    }
}

/// The shards of a `datasets` folder (`Dataset.save_to_disk` output), as its
/// `state.json` lists them; a listed shard that is missing is an error.
fn datasets_folder(src: &SourceConfig, dir: &Path) -> Result<Vec<PathBuf>> {
    let state = dir.join("state.json");
    let bytes = glass_io::open::read_beneath(dir, &state, glass_io::open::MAX_RECORD_BYTES)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| src_err(src, format!("{}: not JSON: {e}", state.display())))?;
    let files = v["_data_files"].as_array().ok_or_else(|| {
        src_err(
            src,
            format!(
                "{}: no `_data_files` list (not a `datasets` save_to_disk folder?)",
                state.display()
            ),
        )
    })?;
    files
        .iter()
        .map(|f| {
            let name = f["filename"]
                .as_str()
                .filter(|n| !n.contains('/') && !n.contains('\\') && !n.starts_with('.'))
                .ok_or_else(|| {
                    src_err(
                        src,
                        format!("{}: a `_data_files` entry without a plain `filename`: {f}", state.display()),
                    )
                })?;
            let p = dir.join(name);
            if !p.is_file() {
                return Err(src_err(
                    src,
                    format!(
                        "{} lists shard `{name}`, which is missing from {}; copy the whole folder again",
                        state.display(),
                        dir.display()
                    ),
                ));
            }
            Ok(p)
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
        (UnitLocation::File(p), SourceKind::Parquet) => {
            read_rows(src, unit, p, Columnar::Parquet, &mut counts, emit)?
        }
        (UnitLocation::File(p), SourceKind::Arrow) => {
            read_rows(src, unit, p, Columnar::Arrow, &mut counts, emit)?
        }
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

/// The largest document (a JSONL line, a row's text) read: memory stays bounded by it,
/// whatever a file holds. Longer ones are malformed records (`bad_lines`).
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// A compressed JSONL file may inflate to at most this many times its size (plus
/// [`INFLATE_FLOOR`]); text corpora compress 3–10×, a decompression bomb far more.
pub const MAX_INFLATION: u64 = 100;

/// Inflation allowed to any compressed file regardless of its size.
pub const INFLATE_FLOOR: u64 = 1 << 30;

/// How a JSONL file is compressed, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Self::Gzip,
            Some("zst") => Self::Zstd,
            _ => Self::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "plain",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// sha256 and length of a file's bytes, streamed.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = glass_io::open::open_regular(path)?.into_file();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(h.finalize()), n_total))
}

/// Reads one line (through its `\n`) into `buf`, keeping at most `max` bytes of it;
/// returns the bytes consumed (0 at the end) and whether the line was longer than `max`
/// (the rest is consumed, not kept).
fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut n, mut long) = (0usize, false);
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok((n, long));
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() + take <= max {
            buf.extend_from_slice(&avail[..take]);
        } else {
            long = true;
        }
        r.consume(take);
        n += take;
        if done {
            return Ok((n, long));
        }
    }
}

/// A reader that counts what passes and fails once more than `limit` bytes came out.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(format!(
                "inflates to more than {} bytes ({MAX_INFLATION}× the file plus 1 GiB): refused as a decompression bomb",
                self.limit
            )));
        }
        Ok(n)
    }
}

fn read_jsonl(
    src: &SourceConfig,
    unit: &Unit,
    path: &Path,
    counts: &mut UnitCounts,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<()> {
    let compression = Compression::of(path);
    let file = glass_io::open::open_regular(path)?.into_file();
    let mut r: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(1 << 20, file)),
        c => {
            let (sha, bytes) = hash_file(path)?;
            counts.sha256 = sha;
            counts.bytes = bytes;
            let raw = BufReader::with_capacity(1 << 20, file);
            let inflated: Box<dyn Read> =
                if c == Compression::Gzip {
                    Box::new(flate2::bufread::MultiGzDecoder::new(raw))
                } else {
                    Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
                        src_err(src, format!("{}: not a zstd stream: {e}", unit.path))
                    })?)
                };
            let limit = bytes
                .saturating_mul(MAX_INFLATION)
                .saturating_add(INFLATE_FLOOR);
            Box::new(BufReader::with_capacity(
                1 << 20,
                Bounded {
                    inner: inflated,
                    read: 0,
                    limit,
                },
            ))
        }
    };
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let (mut line, mut offset) = (0u64, 0u64);
    loop {
        buf.clear();
        let (n, long) = read_line_bounded(&mut *r, &mut buf, MAX_DOCUMENT_BYTES).map_err(|e| {
            src_err(
                src,
                format!(
                    "{}: line {}: {} stream unreadable after {offset} decompressed bytes: {e} (a truncated or corrupt file; fetch it again)",
                    unit.path,
                    line + 1,
                    compression.name()
                ),
            )
        })?;
        if n == 0 {
            break;
        }
        if compression == Compression::None {
            hasher.update(&buf);
        }
        line += 1;
        let start = offset;
        offset += n as u64;
        if long {
            bad_record(
                src,
                &format!("{}:{line}", unit.path),
                format!("a line over {MAX_DOCUMENT_BYTES} bytes"),
                false,
                counts,
            )?;
            continue;
        }
        let mut body = &buf[..];
        while let [rest @ .., b'\n' | b'\r'] = body {
            body = rest;
        }
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            counts.blank_lines += 1;
            continue;
        }
        let at = format!("{}:{line}", unit.path);
        if std::str::from_utf8(body).is_err() {
            bad_record(src, &at, "invalid UTF-8".into(), true, counts)?;
            continue;
        }
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                bad_record(src, &at, format!("malformed JSON: {e}"), false, counts)?;
                continue;
            }
        };
        let Some(doc) = record_doc(src, &at, &value, counts)? else {
            continue;
        };
        emit(RawDoc {
            line,
            byte_start: start,
            byte_len: n as u64,
            ..doc
        })?;
    }
    if compression == Compression::None {
        counts.sha256 = hex::encode(hasher.finalize());
        counts.bytes = offset;
    }
    Ok(())
}

/// A malformed record: an error naming it and the setting that skips it, or (with that
/// setting) counted and skipped.
fn bad_record(
    src: &SourceConfig,
    at: &str,
    msg: String,
    utf8: bool,
    counts: &mut UnitCounts,
) -> Result<()> {
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
            format!("{at}: {msg} (set {hint} = \"skip\" to skip and count such records)"),
        ))
    }
}

/// The value at a dotted `path` (`a.b`: field `b` of the object in `a`).
fn field<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    value
        .get(path)
        .or_else(|| path.split('.').try_fold(value, |v, k| v.get(k)))
}

/// The document of one record (a JSONL line's object, a row): its text field and the
/// configured id and metadata fields; `None` when the record was skipped as malformed.
fn record_doc(
    src: &SourceConfig,
    at: &str,
    value: &serde_json::Value,
    counts: &mut UnitCounts,
) -> Result<Option<RawDoc>> {
    let name = src.text_field.as_deref().expect("validated");
    let Some(text) = field(value, name).and_then(|t| t.as_str()) else {
        bad_record(
            src,
            at,
            format!("field `{name}` missing or not a string"),
            false,
            counts,
        )?;
        return Ok(None);
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        bad_record(
            src,
            at,
            format!("a document over {MAX_DOCUMENT_BYTES} bytes"),
            false,
            counts,
        )?;
        return Ok(None);
    }
    let meta = if src.id_field.is_some() || !src.metadata_fields.is_empty() {
        let mut m = serde_json::Map::new();
        if let Some(id) = &src.id_field {
            m.insert("id".into(), field(value, id).cloned().unwrap_or_default());
        }
        for f in &src.metadata_fields {
            m.insert(f.clone(), field(value, f).cloned().unwrap_or_default());
        }
        Some(serde_json::Value::Object(m))
    } else {
        None
    };
    Ok(Some(RawDoc {
        line: 0,
        byte_start: 0,
        byte_len: text.len() as u64,
        text: text.to_string(),
        meta,
    }))
}

/// Reads the rows of a Parquet or Arrow IPC file, one record batch at a time; a row's
/// `line` is its 1-based row number in the file.
fn read_rows(
    src: &SourceConfig,
    unit: &Unit,
    path: &Path,
    format: Columnar,
    counts: &mut UnitCounts,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<()> {
    let (sha, bytes) = hash_file(path)?;
    counts.sha256 = sha;
    counts.bytes = bytes;
    // Only the columns the fields need: a corpus's other columns are never decoded.
    let mut columns: Vec<String> = Vec::new();
    for f in src
        .text_field
        .iter()
        .chain(src.id_field.iter())
        .chain(src.metadata_fields.iter())
    {
        let root = f.split('.').next().unwrap_or(f).to_string();
        if !columns.contains(&root) {
            columns.push(root);
        }
    }
    columnar::for_each_row(path, format, Some(&columns), &mut |i, row| {
        let at = format!("{} row {}", unit.path, i + 1);
        let value = serde_json::Value::Object(row);
        if let Some(doc) = record_doc(src, &at, &value, counts)? {
            emit(RawDoc { line: i + 1, ..doc })?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        DataError::Columnar(m) => src_err(src, m),
        other => other,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflation_past_the_limit_is_an_error() {
        let mut r = Bounded {
            inner: &[7u8; 100][..],
            read: 0,
            limit: 64,
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("decompression bomb"), "{e}");
        let mut r = Bounded {
            inner: &[7u8; 64][..],
            read: 0,
            limit: 64,
        };
        assert_eq!(r.read_to_end(&mut Vec::new()).unwrap(), 64);
    }

    #[test]
    fn long_lines_are_consumed_not_kept() {
        let text = b"short\n0123456789abcdef\nend";
        let mut r = &text[..];
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), (6, false));
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), (17, true));
        assert!(buf.len() <= 8);
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), (3, false));
        assert_eq!(buf, b"end");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), (0, false));
    }

    #[test]
    fn dotted_fields_reach_into_objects_and_plain_keys_win() {
        let v: serde_json::Value =
            serde_json::json!({"a": {"b": "inner"}, "a.b": "literal", "c": {"d": 1}});
        assert_eq!(field(&v, "a.b"), Some(&serde_json::json!("literal")));
        assert_eq!(field(&v, "c.d"), Some(&serde_json::json!(1)));
        assert_eq!(field(&v, "c.e"), None);
    }
}
