//! Checks of what prepared-data files claim, before any of it is used as an index, a
//! length or a path: a corrupt or forged file must give an error naming it, never a
//! panic, an absurd allocation, or a read outside the run.

use std::path::Path;

use crate::chunk::ChunkHeader;
use crate::error::{DataError, Result};
use crate::manifest::{ChunkRecord, Manifest};
use crate::pack::SEGMENT_BYTES;

pub use glass_io::paths::is_inside;

/// [`is_inside`] as an error naming the file that lists the path.
pub fn check_inside(rel: &str, listed_in: &Path) -> Result<()> {
    if is_inside(rel) {
        Ok(())
    } else {
        Err(DataError::Format(format!(
            "{}: path `{rel}` leaves the run directory (absolute or with `..`); refusing to read it",
            listed_in.display()
        )))
    }
}

/// A plain file name (no directory part), as chunk and store headers use.
fn check_file_name(name: &str, listed_in: &Path) -> Result<()> {
    if is_inside(name) && !name.contains('/') {
        Ok(())
    } else {
        Err(DataError::Format(format!(
            "{}: file name `{name}` is not a plain file name; refusing to read it",
            listed_in.display()
        )))
    }
}

/// Internal consistency of a data manifest: its config validates, its geometry agrees
/// with the config, its chunks cover the steps exactly, its paths stay inside `data/`.
pub fn check_manifest(m: &Manifest, path: &Path) -> Result<()> {
    let bad = |msg: String| Err(DataError::Format(format!("{}: {msg}", path.display())));
    m.config
        .validate()
        .map_err(|e| DataError::Format(format!("{}: {e}", path.display())))?;
    if m.row_len != m.config.seq_len + 1 {
        return bad(format!(
            "row_len {} is not seq_len + 1 = {}",
            m.row_len,
            m.config.seq_len + 1
        ));
    }
    let spc = m.config.steps_per_chunk;
    if m.n_chunks != m.chunks.len() as u64 || m.n_chunks != m.n_steps.div_ceil(spc) {
        return bad(format!(
            "{} chunks listed, n_chunks {}, but {} steps of {spc} per chunk need {}",
            m.chunks.len(),
            m.n_chunks,
            m.n_steps,
            m.n_steps.div_ceil(spc)
        ));
    }
    for (i, c) in m.chunks.iter().enumerate() {
        let first = i as u64 * spc;
        let n = spc.min(m.n_steps - first);
        if c.index != i as u64 || c.first_step != first || c.n_steps != n {
            return bad(format!(
                "chunk entry {i} is (index {}, first_step {}, n_steps {}), expected ({i}, {first}, {n})",
                c.index, c.first_step, c.n_steps
            ));
        }
        check_inside(&c.header, path)?;
    }
    if m.stages.is_empty() || m.stages.first().is_some_and(|s| s.first_step != 0) {
        return bad("stages must start at step 0".into());
    }
    if m.tokenizer.vocab_size == 0 || m.tokenizer.vocab_size as u64 > 1 << 32 {
        return bad(format!(
            "tokenizer vocab_size {} is outside 1..=2^32",
            m.tokenizer.vocab_size
        ));
    }
    check_inside(&m.tokenizer.file, path)?;
    if let Some(v) = &m.validation {
        check_inside(v, path)?;
    }
    for f in &m.files {
        check_inside(&f.path, path)?;
    }
    if let Some(b) = &m.base {
        // A branch reads its parent's files by design; which ones, and their hashes,
        // are still this manifest's.
        if !Path::new(&b.run_dir).is_absolute() || b.from_step > m.n_steps {
            return bad(format!(
                "base {{run_dir {}, from_step {}}} must name an absolute directory and a step within the {} steps",
                b.run_dir, b.from_step, m.n_steps
            ));
        }
        for l in &b.local {
            check_inside(l, path)?;
        }
    }
    Ok(())
}

/// The sha256 the manifest lists for `rel` (relative to `data/`).
pub fn listed_sha<'a>(m: &'a Manifest, rel: &str) -> Option<&'a str> {
    m.files
        .iter()
        .find(|f| f.path == rel)
        .map(|f| f.sha256.as_str())
}

/// A chunk (or validation) header against the manifest: same geometry, sizes that
/// match its row count, file names without directories, and file hashes equal to the
/// ones the manifest lists (so hashing the file against the header checks it against
/// the manifest).
pub fn check_header(
    m: &Manifest,
    h: &ChunkHeader,
    rec: Option<&ChunkRecord>,
    dir_rel: &str,
    path: &Path,
) -> Result<()> {
    let bad = |msg: String| Err(DataError::Format(format!("{}: {msg}", path.display())));
    if h.row_len != m.row_len {
        return bad(format!(
            "row_len {} differs from the manifest's {}",
            h.row_len, m.row_len
        ));
    }
    if h.dtype != m.tokenizer.dtype {
        return bad(format!(
            "dtype {:?} differs from the manifest's {:?}",
            h.dtype, m.tokenizer.dtype
        ));
    }
    if let Some(c) = rec {
        let rows = c.n_steps.checked_mul(m.config.rows_per_step as u64);
        if h.chunk != Some(c.index)
            || h.first_step != c.first_step
            || h.n_steps != c.n_steps
            || Some(h.n_rows) != rows
        {
            return bad(format!(
                "header says chunk {}, steps {}+{}, {} rows; the manifest has chunk {}, steps {}+{}",
                h.chunk.map_or("none".into(), |c| c.to_string()),
                h.first_step,
                h.n_steps,
                h.n_rows,
                c.index,
                c.first_step,
                c.n_steps
            ));
        }
    }
    let tok_bytes = h
        .n_rows
        .checked_mul(h.row_len as u64)
        .and_then(|t| t.checked_mul(h.dtype.width() as u64));
    if tok_bytes != Some(h.tokens.bytes) {
        return bad(format!(
            "{} rows of {} tokens do not make the {} bytes of {}",
            h.n_rows, h.row_len, h.tokens.bytes, h.tokens.file
        ));
    }
    if h.n_segments.checked_mul(SEGMENT_BYTES as u64) != Some(h.segments.bytes) {
        return bad(format!(
            "{} segments do not make the {} bytes of {}",
            h.n_segments, h.segments.bytes, h.segments.file
        ));
    }
    for f in [&h.tokens, &h.segments] {
        check_file_name(&f.file, path)?;
        let rel = if dir_rel.is_empty() {
            f.file.clone()
        } else {
            format!("{dir_rel}/{}", f.file)
        };
        if listed_sha(m, &rel) != Some(f.sha256.as_str()) {
            return bad(format!(
                "{} has sha256 {} in the header but the data manifest lists {}",
                rel,
                f.sha256,
                listed_sha(m, &rel).unwrap_or("nothing")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_inside;

    #[test]
    fn paths_outside_the_run_are_refused() {
        for ok in [
            "a",
            "chunks/chunk-00000.json",
            "checkpoints/c/model.safetensors",
        ] {
            assert!(is_inside(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a", "a\\..\\b"] {
            assert!(!is_inside(bad), "{bad}");
        }
    }
}
