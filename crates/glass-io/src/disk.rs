//! Limits of the machine that writers check before they start: free disk space, and how
//! many worker threads are worth starting.

use std::path::Path;

/// Bytes an unprivileged process may still write on the file system holding `path`.
#[cfg(unix)]
pub fn available_disk(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable storage of
    // the right type; statvfs only writes into it and we read it only on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    // The field types are narrower than u64 on 32-bit platforms.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(blocks.saturating_mul(size))
}

/// Free space is not checked on other platforms.
#[cfg(not(unix))]
pub fn available_disk(_path: &Path) -> Option<u64> {
    None
}

/// Most worker threads worth starting: more than a few per core only costs memory and
/// start-up time (`--threads 100000` would spend minutes creating threads).
pub fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(8, |n| n.get()) * 4
}

/// `requested` threads clamped to `1..=max_threads()`.
pub fn cap_threads(requested: usize) -> usize {
    requested.clamp(1, max_threads())
}
