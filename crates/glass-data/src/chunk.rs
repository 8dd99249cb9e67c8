//! Chunk files: the rows of one checkpoint interval in training order, as raw
//! little-endian arrays anyone can read (`numpy.fromfile`), plus a JSON header.
//!
//! `chunks/chunk-NNNNN.tokens`: `[n_rows, row_len]` ids (u16 or u32);
//! `chunks/chunk-NNNNN.segments`: [`Segment`] records sorted by (row, pos);
//! `chunks/chunk-NNNNN.json`: [`ChunkHeader`], written last, so its presence marks a
//! complete chunk. Validation rows use the same layout under the stem `validation`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dtype::TokenDtype;
use crate::error::{DataError, IoContext, Result};
use crate::pack::{ChunkRows, Segment, SEGMENT_BYTES};
use crate::store::FileHash;
use glass_io::atomic::{remove_if_exists, sha256_hex, write_atomic, AtomicFile};

/// Format tag of [`ChunkHeader`].
pub const CHUNK_FORMAT: &str = "glass-chunk-v1";

/// The segment record layout, written into every header so readers need no other spec.
pub const SEGMENT_FIELDS: &[(&str, &str)] = &[
    ("row", "<u4"),
    ("pos", "<u4"),
    ("len", "<u4"),
    ("kind", "<u4"),
    ("source", "<u4"),
    ("epoch", "<u4"),
    ("doc", "<u8"),
    ("doc_tok", "<u8"),
];

/// Header of one chunk (or of the validation rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// `glass-chunk-v1`.
    pub format: String,
    /// Chunk index (`null` for validation rows).
    pub chunk: Option<u64>,
    /// First global step (0 for validation).
    pub first_step: u64,
    /// Steps in the chunk (0 for validation).
    pub n_steps: u64,
    /// First global row (`first_step * rows_per_step`).
    pub first_row: u64,
    /// Rows in the file.
    pub n_rows: u64,
    /// Tokens per row (`seq_len + 1`).
    pub row_len: usize,
    /// Token width.
    pub dtype: TokenDtype,
    /// Segment records in the file.
    pub n_segments: u64,
    /// Segment record layout as numpy dtype fields.
    pub segment_fields: Vec<(String, String)>,
    /// The tokens file.
    pub tokens: FileHash,
    /// The segments file.
    pub segments: FileHash,
    /// sha256 of the data config the chunk was built from.
    pub config_sha256: String,
    /// sha256 of the tokenizer.json.
    pub tokenizer_sha256: String,
}

/// Path stem of chunk `c` under `chunks_dir`.
pub fn chunk_stem(c: u64) -> String {
    format!("chunk-{c:05}")
}

fn file(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}.{ext}"))
}

/// Identity fields a header must carry to be reused.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    /// Chunk index, or `None` for validation.
    pub chunk: Option<u64>,
    /// First step.
    pub first_step: u64,
    /// Steps.
    pub n_steps: u64,
    /// First global row.
    pub first_row: u64,
    /// Row length.
    pub row_len: usize,
    /// Token width.
    pub dtype: TokenDtype,
    /// Config hash.
    pub config_sha256: String,
    /// Tokenizer hash.
    pub tokenizer_sha256: String,
}

/// Writes one chunk unless an identical complete one is already there (resume); returns
/// its header and whether it was written.
pub fn write_chunk(
    dir: &Path,
    stem: &str,
    meta: &ChunkMeta,
    rows: &ChunkRows,
) -> Result<(ChunkHeader, bool)> {
    let mut tok_bytes = Vec::new();
    meta.dtype.encode(&rows.tokens, &mut tok_bytes);
    let mut seg_bytes = Vec::with_capacity(rows.segments.len() * SEGMENT_BYTES);
    for s in &rows.segments {
        seg_bytes.extend_from_slice(&s.to_bytes());
    }
    let header = make_header(
        meta,
        rows.n_rows,
        rows.segments.len() as u64,
        FileHash {
            file: format!("{stem}.tokens"),
            sha256: sha256_hex(&tok_bytes),
            bytes: tok_bytes.len() as u64,
        },
        FileHash {
            file: format!("{stem}.segments"),
            sha256: sha256_hex(&seg_bytes),
            bytes: seg_bytes.len() as u64,
        },
    );
    let json_path = file(dir, stem, "json");
    if let Ok(existing) = read_header(dir, dir, stem) {
        if existing == header
            && file_ok(dir, dir, &header.tokens)?
            && file_ok(dir, dir, &header.segments)?
        {
            return Ok((header, false));
        }
    }
    remove_if_exists(&json_path)?;
    write_atomic(&file(dir, stem, "tokens"), &tok_bytes)?;
    write_atomic(&file(dir, stem, "segments"), &seg_bytes)?;
    write_atomic(
        &json_path,
        &serde_json::to_vec_pretty(&header).expect("json"),
    )?;
    Ok((header, true))
}

fn make_header(
    meta: &ChunkMeta,
    n_rows: u64,
    n_segments: u64,
    tokens: FileHash,
    segments: FileHash,
) -> ChunkHeader {
    ChunkHeader {
        format: CHUNK_FORMAT.into(),
        chunk: meta.chunk,
        first_step: meta.first_step,
        n_steps: meta.n_steps,
        first_row: meta.first_row,
        n_rows,
        row_len: meta.row_len,
        dtype: meta.dtype,
        n_segments,
        segment_fields: SEGMENT_FIELDS
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        tokens,
        segments,
        config_sha256: meta.config_sha256.clone(),
        tokenizer_sha256: meta.tokenizer_sha256.clone(),
    }
}

/// Writes one chunk row by row, for chunks too large to hold in memory (rows imported
/// from a release). The files are hashed as they are written and the header is written
/// last, as [`write_chunk`] does; dropping an unfinished writer leaves no chunk behind.
pub struct ChunkWriter {
    stem: String,
    meta: ChunkMeta,
    tokens: AtomicFile,
    segments: AtomicFile,
    n_rows: u64,
    n_segments: u64,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// Starts chunk `stem` under `dir`, removing any header of an older one first.
    pub fn create(dir: &Path, stem: &str, meta: ChunkMeta) -> Result<Self> {
        remove_if_exists(&file(dir, stem, "json"))?;
        Ok(Self {
            tokens: AtomicFile::create(&file(dir, stem, "tokens"))?,
            segments: AtomicFile::create(&file(dir, stem, "segments"))?,
            stem: stem.to_string(),
            meta,
            n_rows: 0,
            n_segments: 0,
            buf: Vec::new(),
        })
    }

    /// Appends one row of `row_len` ids and its segments (their `row` is set here).
    pub fn push_row(&mut self, ids: &[u32], segments: &[Segment]) -> Result<()> {
        if ids.len() != self.meta.row_len {
            return Err(DataError::Format(format!(
                "row of {} tokens in a chunk of {}-token rows",
                ids.len(),
                self.meta.row_len
            )));
        }
        let row = u32::try_from(self.n_rows)
            .map_err(|_| DataError::Format("more than 2^32 rows in one chunk".into()))?;
        self.buf.clear();
        self.meta.dtype.encode(ids, &mut self.buf);
        self.tokens.write(&self.buf)?;
        for s in segments {
            self.segments.write(&Segment { row, ..*s }.to_bytes())?;
        }
        self.n_rows += 1;
        self.n_segments += segments.len() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// Commits both files and returns the header to publish with [`write_header`] (the
    /// caller may still fill in fields known only later, such as the config hash);
    /// `n_steps` is set now that the rows are counted.
    pub fn finish(mut self, n_steps: u64) -> Result<ChunkHeader> {
        self.meta.n_steps = n_steps;
        let (tsha, tbytes) = self.tokens.commit()?;
        let (ssha, sbytes) = self.segments.commit()?;
        let header = make_header(
            &self.meta,
            self.n_rows,
            self.n_segments,
            FileHash {
                file: format!("{}.tokens", self.stem),
                sha256: tsha,
                bytes: tbytes,
            },
            FileHash {
                file: format!("{}.segments", self.stem),
                sha256: ssha,
                bytes: sbytes,
            },
        );
        Ok(header)
    }
}

/// Publishes a chunk's header (atomically; it marks the chunk complete).
pub fn write_header(dir: &Path, stem: &str, h: &ChunkHeader) -> Result<()> {
    Ok(write_atomic(
        &file(dir, stem, "json"),
        &serde_json::to_vec_pretty(h).expect("json"),
    )?)
}

/// Whether `dir/f.file` (beneath `root`) is a regular file with the recorded length and
/// hash (a file of another length is not read).
fn file_ok(root: &Path, dir: &Path, f: &FileHash) -> Result<bool> {
    let p = dir.join(&f.file);
    match glass_io::open::sha256_beneath(root, &p, Some(f.bytes)) {
        Ok((sha, _)) => Ok(sha == f.sha256),
        Err(_) => Ok(false),
    }
}

/// Reads a chunk header from `dir`, which lies beneath the run directory `root` (no
/// link beneath `root` is followed: [`glass_io::open`]).
pub fn read_header(root: &Path, dir: &Path, stem: &str) -> Result<ChunkHeader> {
    let p = file(dir, stem, "json");
    let bytes = glass_io::open::read_beneath(root, &p, glass_io::open::MAX_RECORD_BYTES)?;
    let h: ChunkHeader = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::Format(format!("{}: {e}", p.display())))?;
    if h.format != CHUNK_FORMAT {
        return Err(DataError::Format(format!(
            "{}: unknown format `{}`",
            p.display(),
            h.format
        )));
    }
    Ok(h)
}

/// Reads all segment records of a chunk (`dir` beneath the run directory `root`).
pub fn read_segments(root: &Path, dir: &Path, h: &ChunkHeader) -> Result<Vec<Segment>> {
    let p = dir.join(&h.segments.file);
    let bytes =
        glass_io::open::read_beneath(root, &p, h.n_segments.saturating_mul(SEGMENT_BYTES as u64))?;
    if bytes.len() as u64 != h.n_segments * SEGMENT_BYTES as u64 {
        return Err(DataError::Format(format!(
            "{}: {} bytes, header says {} segments",
            p.display(),
            bytes.len(),
            h.n_segments
        )));
    }
    bytes
        .chunks_exact(SEGMENT_BYTES)
        .map(|b| {
            Segment::from_bytes(b)
                .ok_or_else(|| DataError::Format(format!("{}: unknown segment kind", p.display())))
        })
        .collect()
}

/// Reads rows `[first, first + n)` of a chunk's tokens into `out` (as u32); `dir` lies
/// beneath the run directory `root`.
pub fn read_rows(
    root: &Path,
    dir: &Path,
    h: &ChunkHeader,
    first: u64,
    n: u64,
    out: &mut Vec<u32>,
) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    if first + n > h.n_rows {
        return Err(DataError::Range(format!(
            "rows {first}..{} outside chunk of {} rows",
            first + n,
            h.n_rows
        )));
    }
    let p = dir.join(&h.tokens.file);
    let opened = glass_io::open::open_beneath(root, &p)?;
    opened.expect_len(h.tokens.bytes)?;
    let mut f = opened.into_file();
    let w = h.dtype.width() as u64;
    let row_bytes = h.row_len as u64 * w;
    let mut buf = vec![0u8; (n * row_bytes) as usize];
    f.seek(SeekFrom::Start(first * row_bytes))
        .and_then(|_| f.read_exact(&mut buf))
        .at(&p)?;
    h.dtype.decode(&buf, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::SegmentKind;

    fn seg(row: u32, pos: u32, len: u32, doc: u64) -> Segment {
        Segment {
            row,
            pos,
            len,
            kind: SegmentKind::Text,
            source: 1,
            epoch: 0,
            doc,
            doc_tok: 3,
        }
    }

    /// The streaming writer and the in-memory one write the same bytes and header.
    #[test]
    fn chunk_writer_matches_write_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let meta = ChunkMeta {
            chunk: Some(3),
            first_step: 6,
            n_steps: 2,
            first_row: 12,
            row_len: 4,
            dtype: TokenDtype::U16,
            config_sha256: "c".into(),
            tokenizer_sha256: "t".into(),
        };
        let tokens: Vec<u32> = (0..16).map(|i| i * 1000 + 7).collect();
        let segments = vec![
            seg(0, 0, 4, 0),
            seg(1, 0, 1, 0),
            seg(1, 1, 3, 1),
            seg(2, 0, 4, 2),
            seg(3, 0, 4, 3),
        ];
        let rows = ChunkRows {
            tokens: tokens.clone(),
            segments: segments.clone(),
            n_rows: 4,
        };
        let (want, written) = write_chunk(&a, "chunk-00003", &meta, &rows).unwrap();
        assert!(written);
        let mut w = ChunkWriter::create(&b, "chunk-00003", meta.clone()).unwrap();
        for r in 0..4u32 {
            let s: Vec<Segment> = segments
                .iter()
                .filter(|s| s.row == r)
                .map(|s| Segment { row: 99, ..*s })
                .collect();
            w.push_row(&tokens[r as usize * 4..(r as usize + 1) * 4], &s)
                .unwrap();
        }
        assert!(w.push_row(&tokens[..3], &[]).is_err(), "a short row");
        let got = w.finish(2).unwrap();
        write_header(&b, "chunk-00003", &got).unwrap();
        assert_eq!(got, want);
        for ext in ["tokens", "segments", "json"] {
            let name = format!("chunk-00003.{ext}");
            assert_eq!(
                std::fs::read(a.join(&name)).unwrap(),
                std::fs::read(b.join(&name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(read_segments(&b, &b, &got).unwrap(), segments);
    }
}
