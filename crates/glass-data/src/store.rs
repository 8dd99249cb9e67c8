//! Token stores: the tokenized documents of one source, written by one shard job.
//!
//! Shard job `i` of `n` tokenizes the units whose global index is `i (mod n)`; the stores
//! of all shards together are read as one document list in unit order ([`SourceView`]),
//! which is why any `--shard` split yields the same chunks as a single-machine run.
//!
//! Files under `data/tokens/SOURCE/`, with stem `I-of-N`:
//! `.tokens` (ids, little-endian), `.docs` ([`DocRecord`]s), `.meta.jsonl` (optional JSONL
//! ids/metadata, one line per document) and `.json` ([`StoreHeader`], written last).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dtype::TokenDtype;
use crate::error::{DataError, Result};
use crate::sources::UnitCounts;
use glass_io::atomic::AtomicFile;

/// Bytes per [`DocRecord`] on disk.
pub const DOC_RECORD_BYTES: usize = 40;

/// Where one document's tokens are and which input it came from (40 bytes, little-endian:
/// `tok_start u64, n_tokens u32, unit u32, line u64, byte_start u64, byte_len u64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocRecord {
    /// Offset (in tokens) of the document in its store's `.tokens` file.
    pub tok_start: u64,
    /// Number of tokens.
    pub n_tokens: u32,
    /// Index of the unit (input file) within the source.
    pub unit: u32,
    /// 1-based JSONL line, or 0 for a whole-file document.
    pub line: u64,
    /// Byte offset of the record in its file.
    pub byte_start: u64,
    /// Byte length of the record.
    pub byte_len: u64,
}

impl DocRecord {
    /// The on-disk bytes.
    pub fn to_bytes(&self) -> [u8; DOC_RECORD_BYTES] {
        let mut b = [0u8; DOC_RECORD_BYTES];
        b[0..8].copy_from_slice(&self.tok_start.to_le_bytes());
        b[8..12].copy_from_slice(&self.n_tokens.to_le_bytes());
        b[12..16].copy_from_slice(&self.unit.to_le_bytes());
        b[16..24].copy_from_slice(&self.line.to_le_bytes());
        b[24..32].copy_from_slice(&self.byte_start.to_le_bytes());
        b[32..40].copy_from_slice(&self.byte_len.to_le_bytes());
        b
    }

    /// Parses the on-disk bytes.
    pub fn from_bytes(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Self {
            tok_start: u64_at(0),
            n_tokens: u32_at(8),
            unit: u32_at(12),
            line: u64_at(16),
            byte_start: u64_at(24),
            byte_len: u64_at(32),
        }
    }
}

/// One input file as a store recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Unit index within the source.
    pub index: u32,
    /// Unit path (document id prefix).
    pub path: String,
    /// First document of this unit in the store.
    pub first_doc: u64,
    /// Documents kept.
    pub n_docs: u64,
    /// Tokens of those documents.
    pub n_tokens: u64,
    /// Documents that were empty (no text or no tokens) and so were skipped.
    pub empty_docs: u64,
    /// Hash and skip counts of the input.
    #[serde(flatten)]
    pub counts: UnitCounts,
}

/// A file of the store and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// File name relative to the store's directory.
    pub file: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Its length.
    pub bytes: u64,
}

/// The header of one store, written after its data files, so its presence marks a
/// complete store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHeader {
    /// `glass-token-store-v1`.
    pub format: String,
    /// Source name.
    pub source: String,
    /// This shard's index.
    pub shard: u32,
    /// Number of shards.
    pub n_shards: u32,
    /// Token width.
    pub dtype: TokenDtype,
    /// sha256 of the tokenizer.json used.
    pub tokenizer_sha256: String,
    /// sha256 of the source's config entry.
    pub source_config_sha256: String,
    /// Documents in the store.
    pub n_docs: u64,
    /// Tokens in the store.
    pub n_tokens: u64,
    /// Units this shard tokenized, in order.
    pub units: Vec<UnitRecord>,
    /// The `.tokens` file.
    pub tokens: FileHash,
    /// The `.docs` file.
    pub docs: FileHash,
    /// The `.meta.jsonl` file, when the source keeps ids or metadata.
    pub meta: Option<FileHash>,
}

/// Format tag of [`StoreHeader`].
pub const STORE_FORMAT: &str = "glass-token-store-v1";

/// Paths of one store's files.
pub fn store_stem(tokens_dir: &Path, source: &str, shard: u32, n_shards: u32) -> PathBuf {
    tokens_dir
        .join(source)
        .join(format!("{shard:05}-of-{n_shards:05}"))
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_os_string();
    s.push(ext);
    PathBuf::from(s)
}

/// Writes one store incrementally.
pub struct StoreWriter {
    stem: PathBuf,
    header: StoreHeader,
    tokens: AtomicFile,
    docs: AtomicFile,
    meta: Option<AtomicFile>,
    buf: Vec<u8>,
}

impl StoreWriter {
    /// Starts the store of `header.source`, shard `header.shard`.
    pub fn create(tokens_dir: &Path, header: StoreHeader, with_meta: bool) -> Result<Self> {
        let stem = store_stem(tokens_dir, &header.source, header.shard, header.n_shards);
        glass_io::atomic::remove_if_exists(&with_ext(&stem, ".json"))?;
        Ok(Self {
            tokens: AtomicFile::create(&with_ext(&stem, ".tokens"))?,
            docs: AtomicFile::create(&with_ext(&stem, ".docs"))?,
            meta: if with_meta {
                Some(AtomicFile::create(&with_ext(&stem, ".meta.jsonl"))?)
            } else {
                None
            },
            stem,
            header,
            buf: Vec::new(),
        })
    }

    /// Starts a unit; its documents follow.
    pub fn begin_unit(&mut self, index: u32, path: &str) {
        self.header.units.push(UnitRecord {
            index,
            path: path.to_string(),
            first_doc: self.header.n_docs,
            n_docs: 0,
            n_tokens: 0,
            empty_docs: 0,
            counts: UnitCounts::default(),
        });
    }

    /// Appends one document of the current unit; an empty one is counted and skipped.
    pub fn push_doc(
        &mut self,
        ids: &[u32],
        line: u64,
        byte_start: u64,
        byte_len: u64,
        meta: Option<&serde_json::Value>,
    ) -> Result<()> {
        let unit = self.header.units.last_mut().expect("begin_unit first");
        if ids.is_empty() {
            unit.empty_docs += 1;
            return Ok(());
        }
        let n_tokens = u32::try_from(ids.len()).map_err(|_| {
            DataError::Format(format!(
                "{}:{line}: document has more than 2^32 tokens",
                unit.path
            ))
        })?;
        let rec = DocRecord {
            tok_start: self.header.n_tokens,
            n_tokens,
            unit: unit.index,
            line,
            byte_start,
            byte_len,
        };
        unit.n_docs += 1;
        unit.n_tokens += ids.len() as u64;
        self.header.n_docs += 1;
        self.header.n_tokens += ids.len() as u64;
        self.buf.clear();
        self.header.dtype.encode(ids, &mut self.buf);
        self.tokens.write(&self.buf)?;
        self.docs.write(&rec.to_bytes())?;
        if let Some(m) = &mut self.meta {
            let mut line =
                serde_json::to_vec(meta.unwrap_or(&serde_json::Value::Null)).expect("json");
            line.push(b'\n');
            m.write(&line)?;
        }
        Ok(())
    }

    /// Ends the current unit with its input hash and skip counts.
    pub fn end_unit(&mut self, counts: UnitCounts) {
        self.header
            .units
            .last_mut()
            .expect("begin_unit first")
            .counts = counts;
    }

    /// Commits the data files, then the header; returns the header.
    pub fn finish(mut self) -> Result<StoreHeader> {
        let name = |ext: &str| {
            with_ext(&self.stem, ext)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        };
        let (sha, bytes) = self.tokens.commit()?;
        self.header.tokens = FileHash {
            file: name(".tokens"),
            sha256: sha,
            bytes,
        };
        let (sha, bytes) = self.docs.commit()?;
        self.header.docs = FileHash {
            file: name(".docs"),
            sha256: sha,
            bytes,
        };
        if let Some(m) = self.meta.take() {
            let (sha, bytes) = m.commit()?;
            self.header.meta = Some(FileHash {
                file: name(".meta.jsonl"),
                sha256: sha,
                bytes,
            });
        }
        let json = serde_json::to_vec_pretty(&self.header).expect("json");
        glass_io::atomic::write_atomic(&with_ext(&self.stem, ".json"), &json)?;
        Ok(self.header)
    }
}

/// Reads a store's header, or `None` when it is absent (an unfinished store);
/// `tokens_dir` lies beneath the run directory `root`.
pub fn read_header(
    root: &Path,
    tokens_dir: &Path,
    source: &str,
    shard: u32,
    n_shards: u32,
) -> Result<Option<StoreHeader>> {
    let path = with_ext(&store_stem(tokens_dir, source, shard, n_shards), ".json");
    match glass_io::open::read_beneath(root, &path, glass_io::open::MAX_RECORD_BYTES) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| DataError::Format(format!("{}: {e}", path.display()))),
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the data files still hash to what the header says (`tokens_dir` beneath the
/// run directory `root`).
pub fn files_match(root: &Path, tokens_dir: &Path, h: &StoreHeader) -> Result<bool> {
    let dir = tokens_dir.join(&h.source);
    for f in [Some(&h.tokens), Some(&h.docs), h.meta.as_ref()]
        .into_iter()
        .flatten()
    {
        let p = dir.join(&f.file);
        match glass_io::open::sha256_beneath(root, &p, Some(f.bytes)) {
            Ok((sha, _)) if sha == f.sha256 => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Shard counts that have at least one store header for `source`.
pub fn shard_counts_present(tokens_dir: &Path, source: &str) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(tokens_dir.join(source))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let stem = n.strip_suffix(".json")?;
                    stem.split_once("-of-")?.1.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v.dedup();
    v
}

/// A read-only byte buffer of a whole file (memory-mapped; empty files need no map).
pub(crate) enum Bytes {
    Map(memmap2::Mmap),
    Empty,
}

impl Bytes {
    /// Maps `path` (beneath the run directory `root`), which must have `want` bytes.
    pub(crate) fn open(root: &Path, path: &Path, want: u64) -> Result<Self> {
        let f = glass_io::open::open_beneath(root, path)?;
        f.expect_len(want)?;
        Ok(match f.map()? {
            Some(m) => Self::Map(m),
            None => Self::Empty,
        })
    }

    pub(crate) fn get(&self) -> &[u8] {
        match self {
            Self::Map(m) => m,
            Self::Empty => &[],
        }
    }
}

/// Checks a store's header against its files and every document record against the
/// header, so that every later index into the mapped files is in bounds.
fn check_store(dir: &Path, h: &StoreHeader, st: &OpenStore, dtype: TokenDtype) -> Result<()> {
    let path = dir.join(format!("{:05}-of-{:05}.json", h.shard, h.n_shards));
    let bad = |msg: String| Err(DataError::Format(format!("{}: {msg}", path.display())));
    for f in [&h.tokens, &h.docs] {
        if !crate::integrity::is_inside(&f.file) || f.file.contains('/') {
            return bad(format!("file name `{}` is not a plain file name", f.file));
        }
    }
    if h.dtype != dtype {
        return bad(format!(
            "dtype {:?} differs from the other shards'",
            h.dtype
        ));
    }
    let (docs, tokens) = (st.docs.get(), st.tokens.get());
    if Some(docs.len() as u64) != h.n_docs.checked_mul(DOC_RECORD_BYTES as u64) {
        return bad(format!(
            "{} holds {} bytes, not {} documents of {DOC_RECORD_BYTES} bytes",
            h.docs.file,
            docs.len(),
            h.n_docs
        ));
    }
    if Some(tokens.len() as u64) != h.n_tokens.checked_mul(dtype.width() as u64) {
        return bad(format!(
            "{} holds {} bytes, not {} tokens",
            h.tokens.file,
            tokens.len(),
            h.n_tokens
        ));
    }
    let mut next = 0u64;
    for u in &h.units {
        if u.first_doc != next {
            return bad(format!(
                "unit {} starts at document {}, expected {next}",
                u.index, u.first_doc
            ));
        }
        next = next.saturating_add(u.n_docs);
    }
    if next != h.n_docs {
        return bad(format!(
            "units hold {next} documents, the header says {}",
            h.n_docs
        ));
    }
    let mut ui = 0; // units are contiguous and in document order (checked above)
    for (i, b) in docs.chunks_exact(DOC_RECORD_BYTES).enumerate() {
        let r = DocRecord::from_bytes(b);
        while ui < h.units.len() && i as u64 >= h.units[ui].first_doc + h.units[ui].n_docs {
            ui += 1;
        }
        let unit_ok = h.units.get(ui).is_some_and(|u| u.index == r.unit);
        let end = r.tok_start.checked_add(r.n_tokens as u64);
        if !unit_ok || end.is_none_or(|e| e > h.n_tokens) {
            return bad(format!(
                "document record {i} (unit {}, tokens {}+{}) is outside the store's units or its {} tokens",
                r.unit, r.tok_start, r.n_tokens, h.n_tokens
            ));
        }
    }
    Ok(())
}

struct OpenStore {
    tokens: Bytes,
    docs: Bytes,
    meta: Option<Vec<String>>,
}

/// All shards' stores of one source, read as one document list in unit order.
pub struct SourceView {
    /// Source name.
    pub name: String,
    dtype: TokenDtype,
    stores: Vec<OpenStore>,
    /// `(global first doc, shard, unit record)` per unit, in unit order.
    units: Vec<(u64, usize, UnitRecord)>,
    n_docs: u64,
    n_tokens: u64,
    /// The documents packing draws from, when deduplication removed some (sorted).
    kept: Option<Vec<u64>>,
    /// Token ranges substring deduplication cut, per document (sorted, disjoint).
    cuts: std::collections::HashMap<u64, Vec<(u32, u32)>>,
}

impl SourceView {
    /// Opens the stores of all `headers` (one per shard, in shard order); `tokens_dir`
    /// lies beneath the run directory `root`.
    pub fn open(root: &Path, tokens_dir: &Path, headers: &[StoreHeader]) -> Result<Self> {
        let first = headers
            .first()
            .ok_or_else(|| DataError::Format("no stores".into()))?;
        let dir = tokens_dir.join(&first.source);
        let mut stores = Vec::new();
        let mut units = Vec::new();
        for (s, h) in headers.iter().enumerate() {
            let meta = match &h.meta {
                Some(m) => {
                    let p = dir.join(&m.file);
                    let bytes = glass_io::open::open_beneath(root, &p).and_then(|f| {
                        f.expect_len(m.bytes)?;
                        f.read_all(m.bytes)
                    })?;
                    let text = String::from_utf8(bytes)
                        .map_err(|_| DataError::Format(format!("{}: not UTF-8", p.display())))?;
                    Some(text.lines().map(str::to_string).collect())
                }
                None => None,
            };
            stores.push(OpenStore {
                tokens: Bytes::open(root, &dir.join(&h.tokens.file), h.tokens.bytes)?,
                docs: Bytes::open(root, &dir.join(&h.docs.file), h.docs.bytes)?,
                meta,
            });
            units.extend(h.units.iter().map(|u| (0u64, s, u.clone())));
        }
        for (h, st) in headers.iter().zip(&stores) {
            check_store(&dir, h, st, first.dtype)?;
        }
        units.sort_by_key(|u| u.2.index);
        for (i, u) in units.iter().enumerate() {
            if u.2.index as usize != i {
                return Err(DataError::Format(format!(
                    "source `{}`: shard stores do not cover unit {i} exactly once",
                    first.source
                )));
            }
        }
        let mut n_docs = 0;
        for u in &mut units {
            u.0 = n_docs;
            n_docs += u.2.n_docs;
        }
        let n_tokens = headers.iter().map(|h| h.n_tokens).sum();
        Ok(Self {
            name: first.source.clone(),
            dtype: first.dtype,
            stores,
            units,
            n_docs,
            n_tokens,
            kept: None,
            cuts: Default::default(),
        })
    }

    /// Leaves documents `removed` (sorted, unique) out of packing: the stream draws from
    /// the others, which keep their indices (so segments and provenance are unchanged).
    pub fn remove_docs(&mut self, removed: &[u64]) {
        if removed.is_empty() {
            self.kept = None;
            return;
        }
        let mut it = removed.iter().peekable();
        let kept = (0..self.n_docs)
            .filter(|d| {
                if it.peek() == Some(&d) {
                    it.next();
                    false
                } else {
                    true
                }
            })
            .collect();
        self.kept = Some(kept);
    }

    /// Cuts token ranges `(doc, start, end)` out of documents (substring deduplication):
    /// packing reads each cut document as its remaining tokens in order, and segments
    /// still name the store's token offsets. Refuses ranges that are empty, overlap, or
    /// leave their document (a hand-edited removed-documents file).
    pub fn cut_spans(&mut self, spans: &[(u64, u32, u32)]) -> Result<()> {
        self.cuts.clear();
        for &(doc, a, b) in spans {
            let len = self.try_doc(doc)?.n_tokens;
            if a >= b || b > len {
                return Err(DataError::Format(format!(
                    "source `{}`: cut [{a}, {b}) of document {doc} is not inside its {len} tokens",
                    self.name
                )));
            }
            self.cuts.entry(doc).or_default().push((a, b));
        }
        for (doc, v) in &mut self.cuts {
            v.sort_unstable();
            if v.windows(2).any(|w| w[0].1 > w[1].0) {
                return Err(DataError::Format(format!(
                    "source `{}`: cuts of document {doc} overlap",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Whether substring deduplication cut tokens out of `doc`.
    pub fn is_cut(&self, doc: u64) -> bool {
        self.cuts.contains_key(&doc)
    }

    /// Tokens of `doc` that packing reads: its length less the cut ranges.
    pub fn kept_len(&self, doc: u64) -> u32 {
        let cut: u32 = self
            .cuts
            .get(&doc)
            .map_or(0, |v| v.iter().map(|(a, b)| b - a).sum());
        self.doc_len(doc) - cut
    }

    /// Kept tokens `[start, start + len)` of `doc` (counted without the cut ranges) as
    /// ranges `(first token, length)` of the stored document, in order.
    pub fn kept_ranges(&self, doc: u64, start: u32, len: u32) -> Vec<(u32, u32)> {
        let full = self.doc_len(doc);
        let cuts = self.cuts.get(&doc).map_or(&[][..], |v| v.as_slice());
        let mut out = Vec::new();
        let (mut skip, mut want) = (start, len);
        let mut at = 0u32;
        for &(a, b) in cuts.iter().chain(std::iter::once(&(full, full))) {
            // Kept run [at, a).
            let run = a - at;
            if skip >= run {
                skip -= run;
            } else {
                let take = (run - skip).min(want);
                if take > 0 {
                    out.push((at + skip, take));
                }
                want -= take;
                skip = 0;
            }
            if want == 0 {
                break;
            }
            at = b;
        }
        out
    }

    /// Documents packing draws from: all, or those deduplication kept.
    pub fn n_drawable(&self) -> u64 {
        self.kept.as_ref().map_or(self.n_docs, |k| k.len() as u64)
    }

    /// The `i`-th document packing draws from (`i < n_drawable()`).
    pub fn drawable(&self, i: u64) -> u64 {
        self.kept.as_ref().map_or(i, |k| k[i as usize])
    }

    /// Global documents of unit `u` (`u` in unit order).
    pub fn unit_docs(&self, u: usize) -> std::ops::Range<u64> {
        let (start, _, rec) = &self.units[u];
        *start..start + rec.n_docs
    }

    /// The path of unit `u`.
    pub fn unit_path(&self, u: usize) -> &str {
        &self.units[u].2.path
    }

    /// Documents in the source.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Tokens in the source.
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// The units in order.
    pub fn units(&self) -> impl Iterator<Item = &UnitRecord> {
        self.units.iter().map(|u| &u.2)
    }

    fn locate(&self, doc: u64) -> (usize, u64) {
        let i = self.units.partition_point(|u| u.0 <= doc) - 1;
        let (start, shard, rec) = &self.units[i];
        (*shard, rec.first_doc + (doc - start))
    }

    /// The record of global document `doc`, or an error when the source has no such
    /// document (an index read from a corrupt segment file).
    pub fn try_doc(&self, doc: u64) -> Result<DocRecord> {
        if doc >= self.n_docs {
            return Err(DataError::Format(format!(
                "source `{}` has {} documents; document {doc} does not exist (corrupt segment file?)",
                self.name, self.n_docs
            )));
        }
        Ok(self.doc(doc))
    }

    /// The record of global document `doc` (`doc < n_docs()`).
    pub fn doc(&self, doc: u64) -> DocRecord {
        let (shard, local) = self.locate(doc);
        let off = local as usize * DOC_RECORD_BYTES;
        DocRecord::from_bytes(&self.stores[shard].docs.get()[off..off + DOC_RECORD_BYTES])
    }

    /// Number of tokens of document `doc`.
    pub fn doc_len(&self, doc: u64) -> u32 {
        self.doc(doc).n_tokens
    }

    /// The path of the unit holding document `doc` and its line: the document's stable id.
    pub fn doc_id(&self, doc: u64) -> Result<(String, u64)> {
        let r = self.try_doc(doc)?;
        Ok((self.units[r.unit as usize].2.path.clone(), r.line))
    }

    /// The JSONL id/metadata of `doc`, when the source keeps them.
    pub fn doc_meta(&self, doc: u64) -> Option<serde_json::Value> {
        if doc >= self.n_docs {
            return None;
        }
        let (shard, local) = self.locate(doc);
        let line = self.stores[shard].meta.as_ref()?.get(local as usize)?;
        serde_json::from_str(line).ok()
    }

    /// Appends tokens `[start, start + len)` of document `doc` to `out`.
    pub fn doc_tokens(&self, doc: u64, start: u32, len: u32, out: &mut Vec<u32>) {
        let (shard, local) = self.locate(doc);
        let off = local as usize * DOC_RECORD_BYTES;
        let rec =
            DocRecord::from_bytes(&self.stores[shard].docs.get()[off..off + DOC_RECORD_BYTES]);
        let w = self.dtype.width();
        let a = (rec.tok_start as usize + start as usize) * w;
        self.dtype.decode(
            &self.stores[shard].tokens.get()[a..a + len as usize * w],
            out,
        );
    }
}
