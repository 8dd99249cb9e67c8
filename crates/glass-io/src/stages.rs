//! The hash-and-write pipeline behind [`crate::atomic::AtomicFile`] once a file outgrows
//! one stage.
//!
//! Bytes are gathered in page-aligned buffers ("stages") of [`STAGE`] bytes. A full stage
//! goes to a hashing thread, then to a writing thread, while the next one fills, so
//! gathering, hashing and the disk all work at once. The writer uses `O_DIRECT` where
//! the filesystem allows it: the disk reads the stage itself, with no copy into the page
//! cache. That copy is as much CPU as hashing, and it lands in freshly allocated page
//! cache, which on a virtual machine can cost several times the copy. A release or a
//! checkpoint is written once and not read back soon, so caching it gains nothing. The
//! hash is of the stage the disk was handed, that is, of what was written.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes per stage: large enough that the disk sees long requests, small enough that a
/// few stages per open file cost little memory.
pub(crate) const STAGE: usize = 8 << 20;

/// `O_DIRECT` wants the memory, the file offset and the length aligned to the device's
/// block size; a page covers every common device. Stages start at multiples of
/// [`STAGE`], so only a file's last stage has a length to round.
const PAGE: usize = 4096;

/// Stages one file may hold at once: one filling, one hashing, one being written, one
/// queued for the disk.
const STAGES_PER_FILE: usize = 4;

/// Past this many stages alive in the process (512 MiB), a file waits for its own stages
/// to come back instead of taking more, so memory stays bounded however many files are
/// written at once (each still has two: one filling while one is written).
const STAGES_SOFT_CAP: usize = 64;

/// Stages alive (filling, in a pipeline or pooled).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Stages kept for reuse by later files (the process's working set stays warm instead of
/// faulting in fresh memory for every file).
const POOL_KEEP: usize = 8;

static POOL: Mutex<Vec<Stage>> = Mutex::new(Vec::new());

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE]);

/// A page-aligned buffer of [`STAGE`] bytes, the first `len` of them filled.
pub(crate) struct Stage {
    pages: Box<[Page]>,
    len: usize,
}

impl Stage {
    /// A stage from the pool, or a new one (its pages zeroed lazily by the kernel).
    pub(crate) fn take() -> Stage {
        if let Some(s) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return s.emptied();
        }
        let pages = Box::<[Page]>::new_zeroed_slice(STAGE / PAGE);
        // SAFETY: a `Page` is a byte array, and all-zero bytes are a valid one.
        let pages = unsafe { pages.assume_init() };
        LIVE.fetch_add(1, Ordering::Relaxed);
        Stage { pages, len: 0 }
    }

    /// The stage with nothing filled, for reuse.
    fn emptied(mut self) -> Stage {
        self.len = 0;
        self
    }

    /// Returns the stage to the pool (or frees it when the pool is full).
    pub(crate) fn give_back(self) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(self);
        }
    }

    /// Whether a file may take another stage now (see [`STAGES_SOFT_CAP`]).
    fn may_take_more() -> bool {
        LIVE.load(Ordering::Relaxed) < STAGES_SOFT_CAP
            || !POOL.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn all(&self) -> &[u8] {
        // SAFETY: `Page` is `repr(C)` around a byte array of its whole size (no padding),
        // so the slice of pages is `STAGE` initialised bytes; the borrow of `self` keeps
        // them alive and unaliased by any `&mut`.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr().cast::<u8>(), STAGE) }
    }

    fn all_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `all`, through the unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.pages.as_mut_ptr().cast::<u8>(), STAGE) }
    }

    /// The filled bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.all()[..self.len]
    }

    /// The unfilled rest, for [`Stage::filled`] to account for.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.all_mut()[len..]
    }

    /// Marks `n` more bytes of [`Stage::spare`] as filled.
    pub(crate) fn filled(&mut self, n: usize) {
        assert!(self.len + n <= STAGE, "stage overfilled");
        self.len += n;
    }

    /// Appends as much of `bytes` as fits; returns how much did.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(STAGE - self.len);
        self.spare()[..n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == STAGE
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stage on its way through the pipeline, with the file offset of its first byte.
struct Job {
    stage: Stage,
    offset: u64,
}

/// What the pipeline reports when it is finished.
pub(crate) struct Finished {
    pub(crate) hasher: Sha256,
    /// Bytes the disk took by `O_DIRECT` (the rest went through the page cache).
    pub(crate) direct_bytes: u64,
}

/// The two threads of one file and the stages between them.
pub(crate) struct Pipeline {
    to_hash: Option<SyncSender<Job>>,
    returned: Receiver<Stage>,
    /// Stages handed to the threads and not yet returned.
    out: usize,
    failed: Arc<AtomicBool>,
    hashing: Option<JoinHandle<Sha256>>,
    writing: Option<JoinHandle<io::Result<u64>>>,
}

impl Pipeline {
    /// Starts the threads for the temp file `tmp` (open as `file`), continuing `hasher`.
    /// `allow_direct` off keeps every write in the page cache.
    pub(crate) fn start(
        file: &File,
        tmp: &Path,
        hasher: Sha256,
        allow_direct: bool,
    ) -> io::Result<Pipeline> {
        let file = file.try_clone()?;
        let direct = if allow_direct { open_direct(tmp) } else { None };
        let (to_hash, hash_rx) = mpsc::sync_channel::<Job>(1);
        let (to_write, write_rx) = mpsc::sync_channel::<Job>(1);
        let (give_back, returned) = mpsc::channel::<Stage>();
        let failed = Arc::new(AtomicBool::new(false));
        let hashing = std::thread::Builder::new()
            .name("glass-hash".into())
            .spawn(move || hash_stages(hasher, hash_rx, to_write))?;
        let writing = {
            let failed = failed.clone();
            let tmp = tmp.to_path_buf();
            std::thread::Builder::new()
                .name("glass-write".into())
                .spawn(move || write_stages(file, direct, tmp, write_rx, give_back, failed))?
        };
        Ok(Pipeline {
            to_hash: Some(to_hash),
            returned,
            out: 0,
            failed,
            hashing: Some(hashing),
            writing: Some(writing),
        })
    }

    /// Hands a stage to the threads; `false` if writing failed (then [`Pipeline::finish`]
    /// reports why).
    pub(crate) fn send(&mut self, stage: Stage, offset: u64) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            stage.give_back();
            return false;
        }
        let Some(tx) = &self.to_hash else {
            return false;
        };
        if tx.send(Job { stage, offset }).is_err() {
            return false;
        }
        self.out += 1;
        true
    }

    /// The next stage to fill: a returned one, a new one while this file holds fewer than
    /// [`STAGES_PER_FILE`], or else the next to come back.
    pub(crate) fn next_stage(&mut self) -> Stage {
        if let Ok(s) = self.returned.try_recv() {
            self.out -= 1;
            return s.emptied();
        }
        if self.out + 1 < STAGES_PER_FILE && (self.out == 0 || Stage::may_take_more()) {
            return Stage::take();
        }
        match self.returned.recv() {
            Ok(s) => {
                self.out -= 1;
                s.emptied()
            }
            // The writer is gone (it failed and returned what it held); `finish` says why.
            Err(_) => Stage::take(),
        }
    }

    /// Waits for every stage to be hashed and written; returns the hash and how many bytes
    /// went by `O_DIRECT`, or the first write error.
    pub(crate) fn finish(mut self) -> io::Result<Finished> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<Finished> {
        drop(self.to_hash.take());
        let hasher = self
            .hashing
            .take()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        let written = self
            .writing
            .take()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        while let Ok(s) = self.returned.try_recv() {
            s.give_back();
        }
        let (Some(hasher), Some(written)) = (hasher, written) else {
            return Err(io::Error::other("the write pipeline was already stopped"));
        };
        Ok(Finished {
            hasher,
            direct_bytes: written?,
        })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // An abandoned file: let the threads drain and end; their result does not matter.
        if self.hashing.is_some() {
            let _ = self.stop();
        }
    }
}

fn hash_stages(mut hasher: Sha256, jobs: Receiver<Job>, to_write: SyncSender<Job>) -> Sha256 {
    for job in jobs {
        hasher.update(job.stage.bytes());
        if let Err(mpsc::SendError(job)) = to_write.send(job) {
            job.stage.give_back();
        }
    }
    hasher
}

/// Writes each stage at its offset, returning every stage for reuse. After an error the
/// rest are returned unwritten and the error is reported at the end.
fn write_stages(
    file: File,
    mut direct: Option<File>,
    tmp: PathBuf,
    jobs: Receiver<Job>,
    give_back: Sender<Stage>,
    failed: Arc<AtomicBool>,
) -> io::Result<u64> {
    let mut result = Ok(());
    let mut direct_bytes = 0u64;
    for job in jobs {
        if result.is_ok() {
            result = write_stage(&file, &mut direct, &job, &mut direct_bytes);
            if let Err(e) = &result {
                failed.store(true, Ordering::Relaxed);
                result = Err(io::Error::new(e.kind(), format!("{}: {e}", tmp.display())));
            }
        }
        if let Err(mpsc::SendError(s)) = give_back.send(job.stage) {
            s.give_back();
        }
    }
    result.map(|()| direct_bytes)
}

/// One stage: its whole pages by `O_DIRECT` where possible, the rest (a file's last few
/// bytes, or all of it where the filesystem refuses) through the page cache, whose
/// writeback is started at once.
fn write_stage(
    file: &File,
    direct: &mut Option<File>,
    job: &Job,
    direct_bytes: &mut u64,
) -> io::Result<()> {
    let bytes = job.stage.bytes();
    let mut done = 0;
    if let Some(d) = direct.as_ref() {
        let whole = bytes.len() / PAGE * PAGE;
        if whole > 0 {
            match write_at(d, &bytes[..whole], job.offset) {
                Ok(()) => {
                    done = whole;
                    *direct_bytes += whole as u64;
                }
                // Alignment the device does not take: every later write goes through the
                // page cache (the bytes are rewritten whole, so a partial write is harmless).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = None,
                Err(e) => return Err(e),
            }
        }
    }
    if done < bytes.len() {
        let at = job.offset + done as u64;
        write_at(file, &bytes[done..], at)?;
        start_writeback(file, at, job.offset + bytes.len() as u64);
    }
    Ok(())
}

/// A second descriptor of `tmp` that bypasses the page cache, if the filesystem has one.
#[cfg(target_os = "linux")]
pub(crate) fn open_direct(tmp: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp)
        .ok()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_direct(_tmp: &Path) -> Option<File> {
    None
}

#[cfg(unix)]
fn write_at(f: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, bytes, offset)
}

#[cfg(not(unix))]
fn write_at(mut f: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, Write};
    f.seek(io::SeekFrom::Start(offset))?;
    f.write_all(bytes)
}

/// Starts (does not wait for) writeback of bytes `from..to` of `f`, so the final fsync
/// has little left to wait for; advisory, so a failure is ignored (the fsync at commit
/// reports real I/O errors).
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(f: &File, from: u64, to: u64) {
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
pub(crate) fn start_writeback(_f: &File, _from: u64, _to: u64) {}
