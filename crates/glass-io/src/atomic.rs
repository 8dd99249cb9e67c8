//! Crash-safe file writes and content hashes: a file either has its complete new content
//! or does not exist under its final name, so an interrupted run never leaves a file that
//! looks valid but is not.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::stages::{Pipeline, Stage, STAGE};

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of a file beneath `root` (a run or release), refused when the file or
/// a directory on its way there is a symbolic link ([`crate::open::check_write_beneath`]).
pub fn write_atomic_beneath(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    crate::open::check_write_beneath(root, path)?;
    write_atomic(path, bytes)
}

/// Like [`write_atomic`], with the content produced by `fill` writing into the temp file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = dir_of(path);
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
            let dir = dir_of(path);
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
        let mut dirs: Vec<std::path::PathBuf> =
            files.iter().map(|(p, _)| dir_of(p).to_path_buf()).collect();
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
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// The directory a file is written in: its parent, or the current directory for a bare
/// file name (`Path::parent` gives `""` there, which no system call takes). Every
/// writer here goes through it, so `--out file.json` works like `--out ./file.json`.
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory so a rename or removal inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Removes a file if present (durably), so a stale file cannot be mistaken for a new one.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(dir_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 and length of a file, streamed so memory stays bounded. Only a regular
/// file is read (a FIFO or device is refused without blocking), and never more than its
/// length plus one byte ([`crate::open`]). For a file of a run, release or data
/// directory, [`crate::open::sha256_beneath`] also keeps the path inside it.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    crate::open::open_regular(path)?.sha256()
}

/// A file being written under a temp name, hashed as it is written; [`AtomicFile::commit`]
/// makes it durable under its final name, and dropping it uncommitted removes the temp.
///
/// Bytes gather in one page-aligned stage. A file that never fills it is written and
/// hashed at commit. Past that, full stages go through the pipeline in
/// [`crate::stages`]: hashed on one thread and written on another (straight to the disk
/// where the filesystem allows `O_DIRECT`) while the next stage fills.
pub struct AtomicFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    /// The open temp file; `None` once committed.
    file: Option<File>,
    stage: Option<Stage>,
    /// File offset of the stage's first byte.
    offset: u64,
    /// The hash of what went before the pipeline started (it is moved into it).
    hasher: Option<Sha256>,
    pipeline: Option<Pipeline>,
    /// Off only in tests, to force the page-cache path.
    allow_direct: bool,
}

impl AtomicFile {
    /// [`AtomicFile::create`] of a file beneath `root` (a run or release), refused when
    /// the file or a directory on its way there is a symbolic link
    /// ([`crate::open::check_write_beneath`]).
    pub fn create_beneath(root: &Path, path: &Path) -> Result<Self> {
        crate::open::check_write_beneath(root, path)?;
        Self::create(path)
    }

    /// Starts writing `path` (its directory is created).
    pub fn create(path: &Path) -> Result<Self> {
        let dir = dir_of(path);
        std::fs::create_dir_all(dir).at(dir)?;
        let tmp = temp_path(path);
        let f = File::create(&tmp).at(&tmp)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(f),
            stage: Some(Stage::take()),
            offset: 0,
            hasher: Some(Sha256::new()),
            pipeline: None,
            allow_direct: true,
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = self.stage.as_mut().expect("open").push(bytes);
            bytes = &bytes[n..];
            self.hand_off_if_full()?;
        }
        Ok(())
    }

    /// Appends the rest of `src` (from its position to its end), read from `src_path`:
    /// read straight into the stages, so each byte is copied once before the disk takes it.
    pub fn copy_from(&mut self, src: &mut File, src_path: &Path) -> Result<()> {
        loop {
            let stage = self.stage.as_mut().expect("open");
            let n = match src.read(stage.spare()) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).at(src_path),
            };
            if n == 0 {
                return Ok(());
            }
            stage.filled(n);
            self.hand_off_if_full()?;
        }
    }

    /// Sends a full stage down the pipeline (starting it the first time) and takes the
    /// next one to fill.
    fn hand_off_if_full(&mut self) -> Result<()> {
        if !self.stage.as_ref().expect("open").is_full() {
            return Ok(());
        }
        if self.pipeline.is_none() {
            let hasher = self.hasher.take().expect("not yet started");
            let file = self.file.as_ref().expect("open");
            self.pipeline =
                Some(Pipeline::start(file, &self.tmp, hasher, self.allow_direct).at(&self.tmp)?);
        }
        let pipeline = self.pipeline.as_mut().expect("started");
        let stage = self.stage.take().expect("open");
        if !pipeline.send(stage, self.offset) {
            // Writing failed: the error is the pipeline's.
            let err = self.pipeline.take().expect("started").finish().err();
            return Err(err.unwrap_or_else(|| std::io::Error::other("the write pipeline stopped")))
                .at(&self.tmp);
        }
        self.offset += STAGE as u64;
        self.stage = Some(pipeline.next_stage());
        Ok(())
    }

    /// Flushes, fsyncs, renames into place and fsyncs the directory; returns (sha256, bytes).
    pub fn commit(self) -> Result<(String, u64)> {
        self.commit_counting().map(|(sha, len, _)| (sha, len))
    }

    /// [`AtomicFile::commit`], also saying how many bytes went by `O_DIRECT`.
    fn commit_counting(mut self) -> Result<(String, u64, u64)> {
        let stage = self.stage.take().expect("open");
        let len = self.offset + stage.bytes().len() as u64;
        let (hasher, direct_bytes) = match self.pipeline.take() {
            None => {
                // Never past one stage: written and hashed here.
                let mut hasher = self.hasher.take().expect("not started");
                hasher.update(stage.bytes());
                let mut f = self.file.as_ref().expect("open");
                let written = f.write_all(stage.bytes());
                stage.give_back();
                written.at(&self.tmp)?;
                (hasher, 0)
            }
            Some(mut pipeline) => {
                let sent = if stage.bytes().is_empty() {
                    stage.give_back();
                    true
                } else {
                    pipeline.send(stage, self.offset)
                };
                let finished = pipeline.finish().at(&self.tmp)?;
                if !sent {
                    return Err(std::io::Error::other("the write pipeline stopped")).at(&self.tmp);
                }
                (finished.hasher, finished.direct_bytes)
            }
        };
        let f = self.file.take().expect("open");
        f.sync_all().at(&self.tmp)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).at(&self.path)?;
        sync_dir(dir_of(&self.path))?;
        Ok((hex::encode(hasher.finalize()), len, direct_bytes))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Uncommitted: stop the threads before the temp goes.
            drop(self.pipeline.take());
            if let Some(s) = self.stage.take() {
                s.give_back();
            }
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare file name is written in the current directory, and the write reports
    /// success (its directory fsync used to fail on `""` after the file was in place).
    #[test]
    fn bare_file_names_are_written_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("a.json")), Path::new("."));
        assert_eq!(dir_of(Path::new("x/a.json")), Path::new("x"));
        assert_eq!(dir_of(Path::new("/a.json")), Path::new("/"));
        let dir = tempfile::tempdir().unwrap();
        let name = format!("glass-io-bare-{}.json", std::process::id());
        let old = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let r = write_atomic(Path::new(&name), b"{}");
        let mut f = AtomicFile::create(Path::new("b.bin")).unwrap();
        f.write(b"b").unwrap();
        let c = f.commit();
        std::env::set_current_dir(old).unwrap();
        r.unwrap();
        c.unwrap();
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"{}");
        assert_eq!(std::fs::read(dir.path().join("b.bin")).unwrap(), b"b");
    }

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

    /// Whether `dir`'s filesystem takes `O_DIRECT` writes of whole pages (by the
    /// descriptor the pipeline itself opens).
    fn takes_direct_io(dir: &Path) -> bool {
        let probe = dir.join("probe");
        std::fs::write(&probe, b"").unwrap();
        let mut stage = Stage::take();
        stage.push(&[7; 4096]);
        let ok = crate::stages::open_direct(&probe)
            .is_some_and(|mut f| f.write_all(stage.bytes()).is_ok());
        stage.give_back();
        std::fs::remove_file(probe).unwrap();
        ok
    }

    /// Writes `pieces` of `data` (cycling through the sizes) with the disk path on or off;
    /// returns (sha256, bytes, bytes written by `O_DIRECT`).
    fn write_in_pieces(
        path: &Path,
        data: &[u8],
        sizes: &[usize],
        direct: bool,
    ) -> (String, u64, u64) {
        let mut f = AtomicFile::create(path).unwrap();
        f.allow_direct = direct;
        let mut at = 0;
        for size in sizes.iter().cycle() {
            let end = (at + size).min(data.len());
            f.write(&data[at..end]).unwrap();
            at = end;
            if at == data.len() {
                break;
            }
        }
        f.commit_counting().unwrap()
    }

    /// Files over several stages, written in one call and in odd pieces, keep every byte
    /// and hash what was written, by `O_DIRECT` and through the page cache alike. Where
    /// the filesystem takes `O_DIRECT`, every whole page of them went that way (only the
    /// last few bytes went through the page cache).
    #[test]
    fn large_writes_land_whole_by_either_path() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * STAGE + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let want = (sha256_hex(&data), data.len() as u64);
        let pages = (data.len() / 4096 * 4096) as u64;
        let direct_ok = takes_direct_io(dir.path());
        for (name, sizes) in [
            ("whole", vec![data.len()]),
            ("pieces", vec![3_000_017, STAGE + 5, 17]),
        ] {
            for direct in [true, false] {
                let p = dir.path().join(format!("{name}-{direct}.bin"));
                let (sha, len, by_disk) = write_in_pieces(&p, &data, &sizes, direct);
                assert_eq!((sha, len), want.clone(), "{name}, direct {direct}");
                assert!(
                    std::fs::read(&p).unwrap() == data,
                    "{name}, direct {direct}"
                );
                let expected = if direct && direct_ok { pages } else { 0 };
                assert_eq!(by_disk, expected, "{name}, direct {direct}");
            }
        }
        if !direct_ok {
            eprintln!("note: this filesystem refuses O_DIRECT; only the page-cache path ran");
        }
        // A file within one stage is written at commit.
        let small = dir.path().join("small.bin");
        let (sha, len, by_disk) = write_in_pieces(&small, &data[..5000], &[999], true);
        assert_eq!((sha, len, by_disk), (sha256_hex(&data[..5000]), 5000, 0));
        assert_eq!(std::fs::read(&small).unwrap(), &data[..5000]);
    }

    /// A copy after a few written bytes (so stages and the source's reads are out of
    /// step), over several stages and a remainder, followed by more writes: the file and
    /// its hash are those of the bytes, from a file and from a pipe (short reads).
    #[test]
    fn copies_land_whole_from_files_and_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * STAGE + 54_321))
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let src_path = dir.path().join("src.bin");
        std::fs::write(&src_path, &data).unwrap();
        let expected = [&b"head"[..], &data, b"tail"].concat();
        let want = (sha256_hex(&expected), expected.len() as u64);

        let dst = dir.path().join("file.bin");
        let mut out = AtomicFile::create(&dst).unwrap();
        out.write(b"head").unwrap();
        let mut src = File::open(&src_path).unwrap();
        out.copy_from(&mut src, &src_path).unwrap();
        out.write(b"tail").unwrap();
        assert_eq!(out.commit().unwrap(), want);
        assert!(std::fs::read(&dst).unwrap() == expected);

        let (reader, mut writer) = std::io::pipe().unwrap();
        let feed = {
            let data = data.clone();
            std::thread::spawn(move || writer.write_all(&data).unwrap())
        };
        let mut piped = File::from(std::os::fd::OwnedFd::from(reader));
        let dst = dir.path().join("pipe.bin");
        let mut out = AtomicFile::create(&dst).unwrap();
        out.write(b"head").unwrap();
        out.copy_from(&mut piped, Path::new("pipe")).unwrap();
        out.write(b"tail").unwrap();
        feed.join().unwrap();
        assert_eq!(out.commit().unwrap(), want);
        assert!(std::fs::read(&dst).unwrap() == expected);
    }

    /// A file dropped mid-way, past the first stage, leaves no temp behind.
    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(&dir.path().join("x.bin")).unwrap();
        f.write(&vec![1u8; STAGE * 2 + 3]).unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
