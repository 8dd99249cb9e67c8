//! Crash-safe file writes and content hashes: a file either has its complete new content
//! or does not exist under its final name, so an interrupted run never leaves a file that
//! looks valid but is not.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` writing into the temp file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).at(&tmp)?;
        fill(&mut f).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        std::fs::rename(&tmp, path).at(path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so a rename or removal inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Removes a file if present (durably), so a stale file cannot be mistaken for a new one.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 and length of a file, streamed so memory stays bounded.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).at(path)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A file being written under a temp name, hashed as it is written; [`AtomicFile::commit`]
/// makes it durable under its final name, and dropping it uncommitted removes the temp.
pub struct AtomicFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    out: Option<std::io::BufWriter<File>>,
    hasher: Sha256,
    len: u64,
    /// Bytes already handed to the kernel's writeback ([`WRITEBACK_STEP`]).
    written_back: u64,
}

/// Every this many bytes written, the kernel is asked to start writing them to disk
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so the disk works while
/// the rest is produced and hashed and the final fsync has little left to wait for. Only
/// when the data is durable does `commit` rename; this changes nothing about durability.
const WRITEBACK_STEP: u64 = 8 << 20;

impl AtomicFile {
    /// Starts writing `path` (its directory is created).
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).at(dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let f = File::create(&tmp).at(&tmp)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(std::io::BufWriter::with_capacity(1 << 20, f)),
            hasher: Sha256::new(),
            len: 0,
            written_back: 0,
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        // In pieces, so a large buffer's first megabytes go to disk while the rest is
        // hashed and copied.
        for piece in bytes.chunks(WRITEBACK_STEP as usize) {
            self.hasher.update(piece);
            self.len += piece.len() as u64;
            let out = self.out.as_mut().expect("open");
            out.write_all(piece).at(&self.tmp)?;
            let in_file = self.len - out.buffer().len() as u64;
            if in_file - self.written_back >= WRITEBACK_STEP {
                start_writeback(out.get_ref(), self.written_back, in_file);
                self.written_back = in_file;
            }
        }
        Ok(())
    }

    /// Flushes, fsyncs, renames into place and fsyncs the directory; returns (sha256, bytes).
    pub fn commit(mut self) -> Result<(String, u64)> {
        let out = self.out.take().expect("open");
        let f = out.into_inner().map_err(|e| e.into_error()).at(&self.tmp)?;
        f.sync_all().at(&self.tmp)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).at(&self.path)?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        let hash = std::mem::replace(&mut self.hasher, Sha256::new());
        Ok((hex::encode(hash.finalize()), self.len))
    }
}

/// Starts (does not wait for) writeback of bytes `from..to` of `f`; advisory, so a
/// failure is ignored (the fsync at commit reports real I/O errors).
#[cfg(target_os = "linux")]
fn start_writeback(f: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `f` keeps open.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &File, _from: u64, _to: u64) {}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(sha256_file(&p).unwrap(), (sha256_hex(b"two"), 3));
    }

    /// Writes larger than the writeback step, in one call and in odd pieces, keep every
    /// byte and hash what was written.
    #[test]
    fn large_writes_pass_the_writeback_step_intact() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * WRITEBACK_STEP as usize + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let whole = dir.path().join("whole.bin");
        let mut f = AtomicFile::create(&whole).unwrap();
        f.write(&data).unwrap();
        let (sha, len) = f.commit().unwrap();
        assert_eq!((sha.clone(), len), (sha256_hex(&data), data.len() as u64));
        let pieces = dir.path().join("pieces.bin");
        let mut f = AtomicFile::create(&pieces).unwrap();
        for piece in data.chunks(3_000_017) {
            f.write(piece).unwrap();
        }
        assert_eq!(f.commit().unwrap(), (sha, data.len() as u64));
        assert_eq!(std::fs::read(&whole).unwrap(), data);
        assert_eq!(std::fs::read(&pieces).unwrap(), data);
    }
}
