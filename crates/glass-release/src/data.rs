//! The data part of a release: each prepared chunk as LLM360-style JSONL rows
//! (`{"token_ids": [...], "source": "..."}`, one line per training row, in training order)
//! plus a sidecar with Glass's segments, streamed block by block so memory stays bounded
//! whatever the chunk size.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use glass_data::chunk::{read_rows, ChunkHeader};
use glass_data::pack::{Segment, SEGMENT_BYTES};
use glass_data::store::SourceView;
use glass_data::PreparedData;
use glass_io::atomic::AtomicFile;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{file_err, io, Result};
use crate::layout::ReleaseFile;

/// Rows formatted per block (parallel JSON formatting, bounded memory). Debug builds
/// (the test suite) use tiny blocks so that small test chunks cross block boundaries;
/// the output is the same for any block size.
pub(crate) const BLOCK_ROWS: u64 = if cfg!(debug_assertions) { 5 } else { 1024 };

/// One line of `train_NNN.jsonl`.
#[derive(Serialize)]
struct Row<'a> {
    token_ids: &'a [u32],
    source: &'a str,
}

/// One segment of a row in the sidecar.
#[derive(Serialize)]
struct SegmentLine<'a> {
    /// First position in the row.
    pos: u32,
    /// Tokens.
    len: u32,
    /// 0 text, 1 BOS, 2 EOS, 3 FIM prefix, 4 FIM middle, 5 FIM suffix.
    kind: u32,
    source: &'a str,
    /// Document index within the source.
    doc: u64,
    /// Stable document id: input path, plus `:line` for JSONL.
    doc_id: String,
    epoch: u32,
    /// Offset of the first token within the document's tokens.
    doc_tok: u64,
    /// The document's byte range in its input file.
    byte_start: u64,
    byte_len: u64,
}

/// One line of `train_NNN.segments.jsonl`.
#[derive(Serialize)]
struct SidecarLine<'a> {
    /// Global row index (`step · rows_per_step + slot`).
    row: u64,
    step: u64,
    segments: Vec<SegmentLine<'a>>,
}

/// Streams a chunk's segment records in row order.
struct SegmentStream {
    r: BufReader<File>,
    left: u64,
    path: std::path::PathBuf,
    peeked: Option<Segment>,
}

impl SegmentStream {
    fn open(root: &Path, chunks_dir: &Path, h: &ChunkHeader) -> Result<Self> {
        let path = chunks_dir.join(&h.segments.file);
        let opened = glass_io::open::open_beneath(root, &path)?;
        opened.expect_len(h.segments.bytes)?;
        let f = opened.into_file();
        Ok(Self {
            r: BufReader::with_capacity(1 << 20, f),
            left: h.n_segments,
            path,
            peeked: None,
        })
    }

    fn next(&mut self) -> Result<Option<Segment>> {
        if let Some(s) = self.peeked.take() {
            return Ok(Some(s));
        }
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; SEGMENT_BYTES];
        self.r.read_exact(&mut b).map_err(io(&self.path))?;
        self.left -= 1;
        Segment::from_bytes(&b)
            .map(Some)
            .ok_or_else(|| file_err(&self.path, "unknown segment kind; the file is corrupt"))
    }

    /// All segments of chunk row `row` (rows are sorted).
    fn row(&mut self, row: u64, out: &mut Vec<Segment>) -> Result<()> {
        out.clear();
        while let Some(s) = self.next()? {
            if (s.row as u64) < row {
                return Err(file_err(&self.path, "segments are not sorted by row"));
            }
            if s.row as u64 > row {
                self.peeked = Some(s);
                break;
            }
            out.push(s);
        }
        Ok(())
    }
}

/// Writes chunk `h` of `data` as `rows_path` (JSONL rows) and `seg_path` (sidecar), each
/// atomically; returns their hashes (paths relative to the release as given).
pub(crate) fn write_chunk(
    run_dir: &Path,
    data: &PreparedData,
    h: &ChunkHeader,
    out: &Path,
    rows_rel: &str,
    seg_rel: &str,
    views: &mut [Option<SourceView>],
) -> Result<[ReleaseFile; 2]> {
    let stem = glass_data::chunk::chunk_stem(h.chunk.unwrap_or(0));
    let chunks_dir = data.manifest().chunk_dir(run_dir, &stem);
    let root = data
        .manifest()
        .root_of(run_dir, &format!("chunks/{stem}.json"));
    let names: Vec<String> = data
        .manifest()
        .config
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let b = data.rows_per_step() as u64;
    let row_len = h.row_len;
    let mut rows_file = AtomicFile::create_beneath(out, &crate::layout::join(out, rows_rel))?;
    let mut seg_file = AtomicFile::create_beneath(out, &crate::layout::join(out, seg_rel))?;
    let mut segs = SegmentStream::open(&root, &chunks_dir, h)?;
    let mut ids = Vec::new();
    let mut row_segs = Vec::new();
    let mut first = 0u64;
    while first < h.n_rows {
        let n = BLOCK_ROWS.min(h.n_rows - first);
        ids.clear(); // read_rows appends
        read_rows(&root, &chunks_dir, h, first, n, &mut ids)?;
        // Segments are read sequentially; rows are formatted in parallel.
        let mut block_segs: Vec<Vec<Segment>> = Vec::with_capacity(n as usize);
        for r in first..first + n {
            segs.row(r, &mut row_segs)?;
            if row_segs.is_empty() {
                return Err(file_err(
                    chunks_dir.join(&h.segments.file),
                    format!("row {r} has no segments; the data is corrupt (glass data verify)"),
                ));
            }
            for s in &row_segs {
                let i = s.source as usize;
                if i >= names.len() {
                    return Err(file_err(
                        chunks_dir.join(&h.segments.file),
                        format!("row {r}: source index {i} is not in the config"),
                    ));
                }
                if views[i].is_none() {
                    views[i] = Some(data.source_view(&names[i])?);
                }
                // Validates the document index before the parallel pass below relies on it.
                views[i].as_ref().expect("opened above").doc_id(s.doc)?;
            }
            block_segs.push(row_segs.clone());
        }
        let views_ref: &[Option<SourceView>] = views;
        let lines: Vec<(Vec<u8>, Vec<u8>)> = (0..n as usize)
            .into_par_iter()
            .map(|j| {
                let sg = &block_segs[j];
                let row_ids = &ids[j * row_len..(j + 1) * row_len];
                let mut a = serde_json::to_vec(&Row {
                    token_ids: row_ids,
                    source: &names[sg[0].source as usize],
                })
                .expect("row serialises");
                a.push(b'\n');
                let global = h.first_row + first + j as u64;
                let line = SidecarLine {
                    row: global,
                    step: global / b,
                    segments: sg
                        .iter()
                        .map(|s| {
                            let v = views_ref[s.source as usize].as_ref().expect("opened");
                            let (path, line) = v.doc_id(s.doc).expect("checked above");
                            let rec = v.doc(s.doc);
                            SegmentLine {
                                pos: s.pos,
                                len: s.len,
                                kind: s.kind as u32,
                                source: &names[s.source as usize],
                                doc: s.doc,
                                doc_id: if line == 0 {
                                    path
                                } else {
                                    format!("{path}:{line}")
                                },
                                epoch: s.epoch,
                                doc_tok: s.doc_tok,
                                byte_start: rec.byte_start,
                                byte_len: rec.byte_len,
                            }
                        })
                        .collect(),
                };
                let mut c = serde_json::to_vec(&line).expect("segments serialise");
                c.push(b'\n');
                (a, c)
            })
            .collect();
        for (a, c) in &lines {
            rows_file.write(a)?;
            seg_file.write(c)?;
        }
        first += n;
    }
    let (s1, b1) = rows_file.commit()?;
    let (s2, b2) = seg_file.commit()?;
    Ok([
        ReleaseFile {
            path: rows_rel.to_string(),
            sha256: s1,
            bytes: b1,
        },
        ReleaseFile {
            path: seg_rel.to_string(),
            sha256: s2,
            bytes: b2,
        },
    ])
}
