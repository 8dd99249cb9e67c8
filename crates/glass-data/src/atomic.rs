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
    let tmp = temp_path(path);
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

/// Writes several files atomically, each as [`write_atomic`] does, with their fsyncs
/// issued side by side: every temp file is written, then all are fsynced at once (one
/// thread each, so the filesystem can commit them together), renamed into place, and
/// each directory involved is fsynced once. A dozen small files then cost about one
/// fsync's wait instead of two per file. On error no temp file is left; files renamed
/// before the error keep their complete new content.
///
/// The paths must be distinct.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    debug_assert!(
        files
            .iter()
            .enumerate()
            .all(|(i, (p, _))| files[..i].iter().all(|(q, _)| q != p)),
        "write_atomic_all: a path appears twice"
    );
    let mut temps: Vec<std::path::PathBuf> = Vec::with_capacity(files.len());
    let result = (|| {
        for (path, bytes) in files {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).at(dir)?;
            let tmp = temp_path(path);
            temps.push(tmp.clone());
            let mut f = File::create(&tmp).at(&tmp)?;
            f.write_all(bytes).at(&tmp)?;
        }
        in_parallel(&temps, |tmp| {
            File::open(tmp).and_then(|f| f.sync_all()).at(tmp)
        })?;
        for ((path, _), tmp) in files.iter().zip(&temps) {
            std::fs::rename(tmp, path).at(path)?;
        }
        temps.clear();
        let mut dirs: Vec<std::path::PathBuf> = files
            .iter()
            .map(|(p, _)| p.parent().unwrap_or(Path::new(".")).to_path_buf())
            .collect();
        dirs.sort();
        dirs.dedup();
        in_parallel(&dirs, |d| sync_dir(d))
    })();
    for tmp in &temps {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// Runs `f` on every item, each on its own thread (the items are few: files whose
/// fsyncs should wait together), and returns the first error.
fn in_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|it| s.spawn(|| f(it))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// The temp name a file is written under before its rename: hidden, in the same
/// directory (so the rename is atomic), and unique to this process.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
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

/// Writes at least this large are hashed on a second thread ([`AtomicFile::write`]);
/// below it a thread costs more than it saves.
const PARALLEL_HASH_MIN: usize = 1 << 20;

impl AtomicFile {
    /// Starts writing `path` (its directory is created).
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).at(dir)?;
        let tmp = temp_path(path);
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
    ///
    /// A large buffer is hashed on a second thread while it is copied into the file
    /// (hashing is as much work as the copy), so the two take the time of one.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() < PARALLEL_HASH_MIN {
            self.hasher.update(bytes);
            return self.write_unhashed(bytes);
        }
        let mut hasher = std::mem::take(&mut self.hasher);
        let (hashed, written) = std::thread::scope(|s| {
            let h = s.spawn(move || {
                hasher.update(bytes);
                hasher
            });
            let written = self.write_unhashed(bytes);
            (h.join(), written)
        });
        self.hasher = hashed.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written
    }

    /// Appends the rest of `src` (from its position to its end), read from `src_path`.
    ///
    /// On Linux the kernel copies (`copy_file_range`: from page cache to page cache, one
    /// copy of every byte where reading and writing make two), in steps of
    /// [`WRITEBACK_STEP`]; each step's writeback is started as in [`AtomicFile::write`],
    /// and a second thread hashes it from this file's own pages, through a read-only map,
    /// while the next step is copied. The hash is thus of the bytes in the file. Where the
    /// kernel refuses (another filesystem on an older kernel, a special file), or off
    /// Linux, the bytes are read and written instead.
    pub fn copy_from(&mut self, src: &mut File, src_path: &Path) -> Result<()> {
        #[cfg(target_os = "linux")]
        if self.kernel_copy(src, src_path)? {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(COPY_BLOCK);
        let mut src = src.take(0);
        loop {
            buf.clear();
            src.set_limit(COPY_BLOCK as u64);
            if src.read_to_end(&mut buf).at(src_path)? == 0 {
                return Ok(());
            }
            self.write(&buf)?;
        }
    }

    /// [`AtomicFile::copy_from`] by `copy_file_range`; `Ok(false)` when the kernel
    /// refuses before the first byte (nothing was copied or hashed then).
    #[cfg(target_os = "linux")]
    fn kernel_copy(&mut self, src: &mut File, src_path: &Path) -> Result<bool> {
        use std::os::fd::AsRawFd;
        let out = self.out.as_mut().expect("open");
        out.flush().at(&self.tmp)?;
        let file: &File = out.get_ref();
        let reader = File::open(&self.tmp).at(&self.tmp)?;
        let mut hasher = std::mem::take(&mut self.hasher);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, usize)>(2);
        let start = self.len;
        let (len, written_back) = (&mut self.len, &mut self.written_back);
        let (copied, hashed) = std::thread::scope(|s| {
            let hashing = s.spawn(move || -> std::io::Result<Sha256> {
                for (offset, n) in rx {
                    hash_mapped(&reader, offset, n, &mut hasher)?;
                }
                Ok(hasher)
            });
            let copied = (|| -> std::io::Result<bool> {
                loop {
                    // SAFETY: both descriptors are open for the call (`src` and `file`
                    // are borrowed), and null offsets make the kernel use and advance
                    // each file's own position.
                    let n = unsafe {
                        libc::copy_file_range(
                            src.as_raw_fd(),
                            std::ptr::null_mut(),
                            file.as_raw_fd(),
                            std::ptr::null_mut(),
                            WRITEBACK_STEP as usize,
                            0,
                        )
                    };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        let refused = matches!(
                            e.raw_os_error(),
                            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                        );
                        if refused && *len == start {
                            return Ok(false);
                        }
                        return Err(e);
                    }
                    if n == 0 {
                        return Ok(true);
                    }
                    if tx.send((*len, n as usize)).is_err() {
                        // The hashing thread stopped on an error, which join reports.
                        return Ok(true);
                    }
                    *len += n as u64;
                    if *len - *written_back >= WRITEBACK_STEP {
                        start_writeback(file, *written_back, *len);
                        *written_back = *len;
                    }
                }
            })();
            drop(tx);
            let hashed = hashing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (copied, hashed)
        });
        // Which file failed: the copy names the source (reads fail far more often than
        // writes to a fresh temp file), the hash names the temp file it maps.
        let copied = copied.at(src_path)?;
        self.hasher = hashed.at(&self.tmp)?;
        Ok(copied)
    }

    /// Copies bytes into the file (the caller hashes them).
    fn write_unhashed(&mut self, bytes: &[u8]) -> Result<()> {
        // In pieces, so a large buffer's first megabytes go to disk while the rest is
        // copied.
        for piece in bytes.chunks(WRITEBACK_STEP as usize) {
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

/// Hashes bytes `offset..offset + len` of `f` through a read-only map of just them.
#[cfg(target_os = "linux")]
fn hash_mapped(f: &File, offset: u64, len: usize, h: &mut Sha256) -> std::io::Result<()> {
    // SAFETY: `f` is this process's own temp file (a fresh name no one else writes) and
    // this range is no longer being written: the copy has moved on to later offsets. Only
    // another process truncating the temp file could fault the read.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(f)?
    };
    h.update(&map[..]);
    Ok(())
}

/// Bytes read and written at a time where [`AtomicFile::copy_from`] cannot have the
/// kernel copy (large enough that [`AtomicFile::write`] hashes beside the copy, small
/// enough to stay in cache between the two).
const COPY_BLOCK: usize = 4 << 20;

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

    /// A batch lands whole, in several directories, replacing old content, with no temp
    /// left; a batch that fails part-way leaves no temp either.
    #[test]
    fn batches_land_whole_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("sub/b.csv"));
        write_atomic(&a, b"old").unwrap();
        write_atomic_all(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b");
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(dir.path()), vec!["a.json", "sub"]);
        assert_eq!(names(&dir.path().join("sub")), vec!["b.csv"]);
        // The second file's directory is a file: the batch fails, naming it, and the
        // first file's temp is gone.
        let blocked = dir.path().join("a.json/c.txt");
        let c = dir.path().join("c.txt");
        let err = write_atomic_all(&[(&c, b"c"), (&blocked, b"x")]).unwrap_err();
        assert!(err.to_string().contains("a.json"), "{err}");
        assert_eq!(names(dir.path()), vec!["a.json", "sub"]);
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
        // Pieces below and above the parallel-hash size, interleaved.
        let mut at = 0;
        for size in [3_000_017, PARALLEL_HASH_MIN + 5, 17].into_iter().cycle() {
            let end = (at + size).min(data.len());
            f.write(&data[at..end]).unwrap();
            at = end;
            if at == data.len() {
                break;
            }
        }
        assert_eq!(f.commit().unwrap(), (sha, data.len() as u64));
        assert_eq!(std::fs::read(&whole).unwrap(), data);
        assert_eq!(std::fs::read(&pieces).unwrap(), data);
    }
    /// A copy after a few written bytes (so the kernel's steps start off a page
    /// boundary), over several steps and a remainder, followed by more writes: the file
    /// and its hash are those of the bytes, whichever way the copy went. The kernel path
    /// is checked to have run, and the read-and-write path is forced with a pipe, which
    /// `copy_file_range` refuses.
    #[test]
    fn copies_land_whole_by_kernel_and_by_reading() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * WRITEBACK_STEP as usize + 54_321))
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let src_path = dir.path().join("src.bin");
        std::fs::write(&src_path, &data).unwrap();
        let expected = [&b"head"[..], &data, b"tail"].concat();

        let dst = dir.path().join("kernel.bin");
        let mut out = AtomicFile::create(&dst).unwrap();
        out.write(b"head").unwrap();
        let mut src = File::open(&src_path).unwrap();
        #[cfg(target_os = "linux")]
        assert!(
            out.kernel_copy(&mut src, &src_path).unwrap(),
            "the kernel refused"
        );
        #[cfg(not(target_os = "linux"))]
        out.copy_from(&mut src, &src_path).unwrap();
        out.write(b"tail").unwrap();
        let got = out.commit().unwrap();
        assert_eq!(got, (sha256_hex(&expected), expected.len() as u64));
        assert!(std::fs::read(&dst).unwrap() == expected);

        let (reader, mut writer) = std::io::pipe().unwrap();
        let feed = {
            let data = data.clone();
            std::thread::spawn(move || writer.write_all(&data).unwrap())
        };
        let mut piped = File::from(std::os::fd::OwnedFd::from(reader));
        let dst = dir.path().join("read.bin");
        let mut out = AtomicFile::create(&dst).unwrap();
        out.write(b"head").unwrap();
        out.copy_from(&mut piped, Path::new("pipe")).unwrap();
        out.write(b"tail").unwrap();
        feed.join().unwrap();
        assert_eq!(out.commit().unwrap(), got);
        assert!(std::fs::read(&dst).unwrap() == expected);
    }
}
