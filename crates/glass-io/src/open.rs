//! The one way Glass opens a file it reads from a run, a release or prepared data, and
//! checks a path it is about to write there.
//!
//! **Reads.** [`open_beneath`] opens `root/rel` as a regular file without leaving `root`:
//! `rel` must be relative with no `..`, and every component beneath `root` is opened
//! relative to the one before it with `O_NOFOLLOW`, so no symbolic link beneath the root
//! is followed (a link is refused wherever it points, inside the root or out), and a link
//! swapped in while the path is walked is refused too. The last component is opened with
//! `O_NONBLOCK`, so a FIFO does not block the open, and then checked with `fstat`: only a
//! regular file is accepted (not a FIFO, a device such as `/dev/zero`, a socket or a
//! directory). [`open_regular`] does the same for a path the user named (no root: a link
//! there is the user's own and is followed), so a FIFO or device given on the command
//! line is refused instead of blocking or never ending.
//!
//! An [`Opened`] file knows its length from that `fstat`. It is hashed by
//! [`Opened::sha256`], which reads at most that length plus one byte (a file that grows or
//! shrinks while read is an error), and [`Opened::sha256_expecting`] compares a recorded
//! length first and does not read a file of another length at all. [`Opened::read_all`]
//! refuses a file longer than the caller's bound before reading it, so a sparse file
//! that claims terabytes is an error, not an allocation.
//!
//! **Writes.** [`check_write_beneath`] refuses a path beneath `root` when it, or a
//! directory on its way, is a symbolic link (or not a directory / regular file), so a
//! run whose `evals/` or `metrics.sqlite` was replaced by a link pointing elsewhere is
//! not written through. The check resolves before the write: a link created between the
//! check and the write is not seen (a time-of-check-to-time-of-use race that only a
//! process writing into the directory at the same time could use).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, IoError, Result};

/// Upper bound for a record file read whole into memory (a JSON manifest, a TOML
/// config, a tokenizer): far above any real one, far below what a sparse or forged file
/// could claim.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// A regular file opened for reading, with the length `fstat` gave when it was opened.
#[derive(Debug)]
pub struct Opened {
    file: File,
    path: PathBuf,
    len: u64,
    identity: FileIdentity,
}

/// What identifies a file's content without reading it, as far as the file system
/// tells: device, inode, size, and modification and change times (nanoseconds). Any
/// write changes the change time, which no user can set back, so an unchanged identity
/// means an unchanged file (barring a clock moved back). For in-memory caches of
/// checks already made; never written anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(md: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

fn err(path: &Path, kind: std::io::ErrorKind, msg: String) -> IoError {
    IoError {
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, msg),
    }
}

/// The parts of `rel` (relative to a root): plain names only.
fn plain_parts<'a>(root: &Path, rel: &'a Path, full: &Path) -> Result<Vec<&'a std::ffi::OsStr>> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            _ => {
                return Err(err(
                    full,
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "the path leaves {} (absolute, or with `..`); refusing to use it",
                        root.display()
                    ),
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(err(
            full,
            std::io::ErrorKind::InvalidInput,
            "an empty path names no file".into(),
        ));
    }
    Ok(parts)
}

/// `path` (built as `root.join(rel)`) relative to `root`.
fn relative<'a>(root: &Path, path: &'a Path) -> Result<&'a Path> {
    path.strip_prefix(root).map_err(|_| {
        err(
            path,
            std::io::ErrorKind::InvalidInput,
            format!("not inside {}; refusing to use it", root.display()),
        )
    })
}

fn kind_of(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, md: &Metadata) -> IoError {
    err(
        path,
        std::io::ErrorKind::InvalidData,
        format!(
            "is {}, not a regular file; refusing to read it (replace it with the file itself)",
            kind_of(md)
        ),
    )
}

fn link_refused(path: &Path, root: &Path) -> IoError {
    err(
        path,
        std::io::ErrorKind::InvalidData,
        format!(
            "is a symbolic link, or a directory on its way beneath {} is; Glass follows no link inside a run or release (replace the link with what it points to)",
            root.display()
        ),
    )
}

#[cfg(unix)]
mod sys {
    use std::ffi::{CString, OsStr};
    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;

    /// `openat(dir, name, flags)`, with `EINTR` retried.
    pub fn openat(dir: &File, name: &OsStr, flags: libc::c_int) -> std::io::Result<File> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        loop {
            // SAFETY: `c` is a NUL-terminated string alive for the call, `dir` an open
            // descriptor borrowed for the call; openat does not retain either.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by openat and is owned by nothing else.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub const DIR: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    pub const LEAF: libc::c_int =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    pub const USER: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;

    pub fn is_loop(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(libc::ELOOP)
    }

    /// Clears `O_NONBLOCK` (set only so that opening a FIFO could not block).
    pub fn blocking(f: &File) -> std::io::Result<()> {
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn open_path(path: &std::path::Path, flags: libc::c_int) -> std::io::Result<File> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        loop {
            // SAFETY: `c` is NUL-terminated and alive for the call.
            let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by open and is owned by nothing else.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Opens `path`, which lies beneath `root` (given as `root.join(rel)`), as a
/// regular file, following no symbolic link beneath `root`. `root` itself is opened as
/// given (a link to the run directory is the user's choice). Errors name the file: a
/// path leaving the root, a link, a FIFO or device, a missing file (`NotFound`).
pub fn open_beneath(root: &Path, path: &Path) -> Result<Opened> {
    let rel = relative(root, path)?;
    let full = root.join(rel);
    let parts = plain_parts(root, rel, &full)?;
    let root_dir = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let mut dir = sys::open_path(root_dir, sys::DIR & !libc::O_NOFOLLOW).at(root_dir)?;
    let (last, dirs) = parts.split_last().expect("not empty");
    for d in dirs {
        dir = match sys::openat(&dir, d, sys::DIR) {
            Ok(f) => f,
            Err(e) if sys::is_loop(&e) => return Err(link_refused(&full, root)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                // Either a file where a directory should be, or a link (O_DIRECTORY and
                // O_NOFOLLOW together report a link as ENOTDIR on some systems).
                return Err(match std::fs::symlink_metadata(full_upto(root, rel, d)) {
                    Ok(md) if md.file_type().is_symlink() => link_refused(&full, root),
                    _ => IoError {
                        path: full,
                        source: e,
                    },
                });
            }
            Err(e) => return Err(e).at(&full),
        };
    }
    let file = match sys::openat(&dir, last, sys::LEAF) {
        Ok(f) => f,
        Err(e) if sys::is_loop(&e) => return Err(link_refused(&full, root)),
        Err(e) => return Err(e).at(&full),
    };
    finish(file, full)
}

/// The path of `rel` up to and including the component `upto` (for error messages).
fn full_upto(root: &Path, rel: &Path, upto: &std::ffi::OsStr) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if c.as_os_str() == upto {
            break;
        }
    }
    p
}

/// Opens a file the user named on the command line (or a file of an input folder the user
/// named): links are followed, but only a regular file is accepted, and a FIFO does not
/// block the open.
pub fn open_regular(path: &Path) -> Result<Opened> {
    let file = sys::open_path(path, sys::USER).at(path)?;
    finish(file, path.to_path_buf())
}

fn finish(file: File, path: PathBuf) -> Result<Opened> {
    let md = file.metadata().at(&path)?;
    if !md.file_type().is_file() {
        return Err(not_regular(&path, &md));
    }
    sys::blocking(&file).at(&path)?;
    Ok(Opened {
        file,
        len: md.len(),
        identity: FileIdentity::of(&md),
        path,
    })
}

/// Reads a whole record file beneath `root` (at most `max` bytes; see
/// [`Opened::read_all`]).
pub fn read_beneath(root: &Path, path: &Path, max: u64) -> Result<Vec<u8>> {
    open_beneath(root, path)?.read_all(max)
}

/// sha256 and length of a file beneath `root`; with `expected_len`, a file of another
/// length is an error and is not read.
pub fn sha256_beneath(
    root: &Path,
    path: &Path,
    expected_len: Option<u64>,
) -> Result<(String, u64)> {
    let f = open_beneath(root, path)?;
    match expected_len {
        Some(n) => f.sha256_expecting(n),
        None => f.sha256(),
    }
}

impl Opened {
    /// Length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file's identity when opened (see [`FileIdentity`]).
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path it was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file, for reading it as a stream.
    pub fn into_file(self) -> File {
        self.file
    }

    /// An error unless the file has `want` bytes (the recorded length).
    pub fn expect_len(&self, want: u64) -> Result<()> {
        if self.len != want {
            return Err(err(
                &self.path,
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes, but {want} are recorded; not read (the file was changed or replaced)",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    /// The whole file, refusing one longer than `max` bytes before reading it, and one
    /// that changes size while read.
    pub fn read_all(self, max: u64) -> Result<Vec<u8>> {
        if self.len > max {
            return Err(err(
                &self.path,
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes, more than the {max} such a file may have; refusing to read it",
                    self.len
                ),
            ));
        }
        let mut out = Vec::with_capacity(self.len as usize);
        (&self.file)
            .take(self.len + 1)
            .read_to_end(&mut out)
            .at(&self.path)?;
        if out.len() as u64 != self.len {
            return Err(self.resized(out.len() as u64));
        }
        Ok(out)
    }

    fn resized(&self, got: u64) -> IoError {
        err(
            &self.path,
            std::io::ErrorKind::InvalidData,
            format!(
                "changed size while being read ({} bytes when opened, {}{} read)",
                self.len,
                got,
                if got > self.len { " or more" } else { "" }
            ),
        )
    }

    /// sha256 and length, reading at most the length `fstat` gave plus one byte.
    pub fn sha256(self) -> Result<(String, u64)> {
        self.sha256_cancellable(&AtomicBool::new(false))
    }

    /// [`Opened::sha256`] after checking the recorded length: a file of another length
    /// is an error and is not read at all.
    pub fn sha256_expecting(self, want: u64) -> Result<(String, u64)> {
        self.expect_len(want)?;
        self.sha256()
    }

    /// [`Opened::sha256`] that stops, with an `Interrupted` error, once `stop` is set
    /// (checked between 1 MiB reads).
    pub fn sha256_cancellable(self, stop: &AtomicBool) -> Result<(String, u64)> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        let mut f = (&self.file).take(self.len + 1);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(err(
                    &self.path,
                    std::io::ErrorKind::Interrupted,
                    "hashing stopped: the request was cancelled".into(),
                ));
            }
            let k = match f.read(&mut buf) {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).at(&self.path),
            };
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        if n != self.len {
            return Err(self.resized(n));
        }
        Ok((hex::encode(h.finalize()), n))
    }

    /// Maps the file read-only (`None` for an empty file, which cannot be mapped).
    pub fn map(&self) -> Result<Option<memmap2::Mmap>> {
        if self.len == 0 {
            return Ok(None);
        }
        // SAFETY: the map is read-only and no `&mut` to it is made. Every file Glass
        // maps (checkpoints, chunk tokens, suffix arrays, stores) is written once under a
        // temp name and renamed into place, never modified in place, so its bytes do not
        // change while mapped. Another program writing into the file could only change
        // the values read, which the callers' hash and bounds checks catch; one
        // truncating it would stop this process with SIGBUS, as any reader of a mapped
        // file (docs/threat-model.md names this limit).
        let m = unsafe { memmap2::Mmap::map(&self.file) }.at(&self.path)?;
        if m.len() as u64 != self.len {
            return Err(self.resized(m.len() as u64));
        }
        Ok(Some(m))
    }
}

/// Refuses to write `path` (beneath `root`, given as `root.join(rel)`) when a
/// directory on its way beneath `root`, or `path` itself, is a symbolic link, or is
/// something other than a directory (on the way) or a regular file or directory (at the
/// end). Parts that do not exist yet are fine: they will be created as plain directories
/// and files. `root` itself is not checked.
pub fn check_write_beneath(root: &Path, path: &Path) -> Result<()> {
    let rel = relative(root, path)?;
    let full = root.join(rel);
    let parts = plain_parts(root, rel, &full)?;
    let mut cur = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let md = match std::fs::symlink_metadata(&cur) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).at(&cur),
        };
        let last = i + 1 == parts.len();
        let t = md.file_type();
        if t.is_symlink() {
            return Err(err(
                &cur,
                std::io::ErrorKind::InvalidData,
                format!(
                    "is a symbolic link; refusing to write {} through it (Glass writes a run's and a release's files only beneath it, through no link: replace the link with a directory or file)",
                    full.display()
                ),
            ));
        }
        if !(t.is_dir() || (last && t.is_file())) {
            return Err(err(
                &cur,
                std::io::ErrorKind::InvalidData,
                format!(
                    "is {}; refusing to write {} there",
                    kind_of(&md),
                    full.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The first entry beneath `root` (depth first, in directory order) that is a symbolic
/// link or anything but a regular file or directory; `None` when there is none or `root`
/// does not exist. Links are not followed, so the walk stays beneath `root` and ends.
pub fn first_link_beneath(root: &Path) -> Result<Option<PathBuf>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(root),
    };
    for e in rd {
        let e = e.at(root)?;
        let p = e.path();
        let t = e.file_type().at(&p)?;
        if t.is_dir() {
            if let Some(found) = first_link_beneath(&p)? {
                return Ok(Some(found));
            }
        } else if !t.is_file() {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Creates `dir` and its missing parents beneath `root` after [`check_write_beneath`].
pub fn create_dir_beneath(root: &Path, dir: &Path) -> Result<()> {
    check_write_beneath(root, dir)?;
    std::fs::create_dir_all(dir).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn kind(e: &IoError) -> String {
        e.to_string()
    }

    #[test]
    fn regular_files_beneath_the_root_open_and_hash() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f.bin"), b"hello").unwrap();
        let want = (crate::sha256_hex(b"hello"), 5);
        for p in [d.path().join("a/b/f.bin"), d.path().join("a/./b/f.bin")] {
            assert_eq!(sha256_beneath(d.path(), &p, Some(5)).unwrap(), want);
        }
        assert_eq!(
            read_beneath(d.path(), &d.path().join("a/b/f.bin"), 5).unwrap(),
            b"hello"
        );
        let e = read_beneath(d.path(), &d.path().join("a/b/f.bin"), 4).unwrap_err();
        assert!(kind(&e).contains("more than the 4"), "{e}");
        let e = sha256_beneath(d.path(), &d.path().join("a/b/f.bin"), Some(6)).unwrap_err();
        assert!(kind(&e).contains("5 bytes, but 6 are recorded"), "{e}");
        let e = open_beneath(d.path(), &d.path().join("a/b/none")).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn paths_leaving_the_root_and_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("run");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::fs::write(root.join("inside"), b"x").unwrap();
        for rel in ["../outside", "sub/../../outside", "/etc/passwd"] {
            let e = open_beneath(&root, &root.join(rel)).unwrap_err();
            assert!(
                kind(&e).contains("leaves") || kind(&e).contains("not inside"),
                "{rel}: {e}"
            );
        }
        // A link to a file outside, to one inside, a linked directory, /dev/zero.
        symlink(d.path().join("outside"), root.join("out-link")).unwrap();
        symlink("inside", root.join("in-link")).unwrap();
        symlink(d.path(), root.join("dir-link")).unwrap();
        symlink("/dev/zero", root.join("zero")).unwrap();
        for rel in ["out-link", "in-link", "dir-link/outside", "zero"] {
            let e = open_beneath(&root, &root.join(rel)).unwrap_err();
            assert!(kind(&e).contains("symbolic link"), "{rel}: {e}");
        }
        // The root itself may be a link.
        let alias = d.path().join("alias");
        symlink(&root, &alias).unwrap();
        assert_eq!(
            read_beneath(&alias, &alias.join("inside"), 10).unwrap(),
            b"x"
        );
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path alive for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_beneath(d.path(), &d.path().join("fifo")).unwrap_err();
        assert!(kind(&e).contains("FIFO"), "{e}");
        let e = open_regular(&fifo).unwrap_err();
        assert!(kind(&e).contains("FIFO"), "{e}");
        let e = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(kind(&e).contains("character device"), "{e}");
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let e = open_beneath(d.path(), &d.path().join("dir")).unwrap_err();
        assert!(kind(&e).contains("directory"), "{e}");
        // sha256_file (no root) refuses the same.
        let e = crate::sha256_file(Path::new("/dev/zero")).unwrap_err();
        assert!(kind(&e).contains("character device"), "{e}");
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_hashed_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![1u8; 3 << 20]).unwrap();
        let f = open_beneath(d.path(), &d.path().join("f")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .set_len(5 << 20)
            .unwrap();
        let e = f.sha256().unwrap_err();
        assert!(kind(&e).contains("changed size"), "{e}");
        let f = open_beneath(d.path(), &d.path().join("f")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let e = f.sha256().unwrap_err();
        assert!(kind(&e).contains("changed size"), "{e}");
    }

    #[test]
    fn cancelled_hashing_stops() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![0u8; 4 << 20]).unwrap();
        let stop = AtomicBool::new(true);
        let e = open_beneath(d.path(), &d.path().join("f"))
            .unwrap()
            .sha256_cancellable(&stop)
            .unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::Interrupted);
    }

    #[test]
    fn writes_through_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("run");
        std::fs::create_dir_all(root.join("evals")).unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        check_write_beneath(&root, &root.join("evals/ckpt-0000/x.json")).unwrap();
        check_write_beneath(&root, &root.join("new/dir/x.json")).unwrap();
        symlink(d.path().join("elsewhere"), root.join("linked")).unwrap();
        symlink(
            d.path().join("elsewhere/m.sqlite"),
            root.join("metrics.sqlite"),
        )
        .unwrap();
        for rel in ["linked/x.json", "linked", "metrics.sqlite"] {
            let e = check_write_beneath(&root, &root.join(rel)).unwrap_err();
            assert!(kind(&e).contains("symbolic link"), "{rel}: {e}");
            let e = create_dir_beneath(&root, &root.join(rel)).unwrap_err();
            assert!(kind(&e).contains("symbolic link"), "{rel}: {e}");
        }
        assert!(check_write_beneath(&root, &root.join("../x")).is_err());
        assert_eq!(
            std::fs::read_dir(d.path().join("elsewhere"))
                .unwrap()
                .count(),
            0
        );
    }
}
