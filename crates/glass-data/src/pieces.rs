//! Several files read as one byte stream, each memory-mapped: Pythia's `.bin` ships as
//! byte-split pieces `document-00000-of-00020.bin` … that `cat` would join, and a range
//! may cross from one piece into the next (even in the middle of a token).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Files concatenated in order, memory-mapped, never copied whole.
pub struct Pieces {
    paths: Vec<PathBuf>,
    maps: Vec<Option<memmap2::Mmap>>,
    /// `starts[i]` = offset of piece `i` in the stream; `starts[n]` = total length.
    starts: Vec<u64>,
}

/// Where a byte of the stream lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceOffset {
    /// Index of the piece.
    pub piece: usize,
    /// Offset within that piece.
    pub offset: u64,
}

impl Pieces {
    /// Maps every file (regular files only; links are followed).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(DataError::Range("no data files given".into()));
        }
        let mut maps = Vec::with_capacity(paths.len());
        let mut starts = vec![0u64];
        for p in paths {
            let opened = glass_io::open::open_regular(p)?;
            let len = opened.len();
            maps.push(opened.map()?);
            starts.push(starts.last().copied().unwrap_or(0) + len);
        }
        Ok(Self {
            paths: paths.to_vec(),
            maps,
            starts,
        })
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The files, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Length of piece `i`.
    pub fn piece_len(&self, i: usize) -> u64 {
        self.starts[i + 1] - self.starts[i]
    }

    /// The piece holding stream byte `offset` (`offset < len`).
    pub fn locate(&self, offset: u64) -> Option<PieceOffset> {
        if offset >= self.len() {
            return None;
        }
        // The last start ≤ offset whose piece is not empty.
        let piece = self.starts.partition_point(|&s| s <= offset) - 1;
        Some(PieceOffset {
            piece,
            offset: offset - self.starts[piece],
        })
    }

    /// Appends stream bytes `[offset, offset + len)` to `out`; a range past the end is an
    /// error naming `what` (the file whose record asked for it).
    pub fn read(&self, offset: u64, len: u64, out: &mut Vec<u8>, what: &Path) -> Result<()> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len());
        let Some(end) = end else {
            return Err(DataError::layout(
                what,
                None,
                format!(
                    "bytes [{offset}, {offset}+{len}) lie past the end of the {} data bytes in {} file(s) (last: {})",
                    self.len(),
                    self.paths.len(),
                    self.paths.last().map(|p| p.display().to_string()).unwrap_or_default()
                ),
            ));
        };
        let mut at = offset;
        while at < end {
            let loc = self.locate(at).expect("in range");
            let map = self.maps[loc.piece].as_deref().unwrap_or(&[]);
            let take = (self.piece_len(loc.piece) - loc.offset).min(end - at);
            let s = loc.offset as usize;
            out.extend_from_slice(&map[s..s + take as usize]);
            at += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_pieces_including_empty_ones() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, b) in [&b"abc"[..], b"", b"defg", b"h"].iter().enumerate() {
            let p = d.path().join(format!("p{i}"));
            std::fs::write(&p, b).unwrap();
            paths.push(p);
        }
        let p = Pieces::open(&paths).unwrap();
        assert_eq!(p.len(), 8);
        let mut out = Vec::new();
        p.read(1, 7, &mut out, Path::new("x.idx")).unwrap();
        assert_eq!(out, b"bcdefgh");
        assert_eq!(
            p.locate(3),
            Some(PieceOffset {
                piece: 2,
                offset: 0
            })
        );
        let e = p.read(5, 4, &mut out, Path::new("x.idx")).unwrap_err();
        assert!(e.to_string().contains("x.idx"), "{e}");
    }
}
