//! Writing files so that a crash or power cut at any moment leaves either the
//! old or the new file, never a torn one: write to a temp name in the same
//! folder, fsync it, rename it over the target, fsync the folder.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks names this server writes before they are complete, so a start-up
/// sweep can remove what a crash left behind.
pub(crate) const TEMP_MARK: &str = ".leitner-tmp";

/// A fresh, unused path in `dir` for a file that will be renamed into place.
pub(crate) fn temp_path(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{stem}.{}-{n}{TEMP_MARK}", std::process::id()))
}

/// Creates a new file readable by its owner only: collections are private.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written to the file system that holds `path`: files,
/// names and renames alike, in one go. Many small files cost one flush this
/// way instead of one each, which on an SD card is the difference that
/// matters; the board's data partition holds little but our own files.
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    sync_filesystem_of(&File::open(path)?)
}

/// [`sync_filesystem`] through a descriptor kept open: it also reports a
/// failed write-back that happened since it was opened.
pub(crate) fn sync_filesystem_of(handle: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    nix::unistd::syncfs(handle.as_raw_fd()).map_err(io::Error::from)
}

/// Renames `from` over `to` (same folder) and makes the rename durable.
pub(crate) fn commit_rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Removes temp files a crash left in `dir`.
pub(crate) fn sweep_temps(dir: &Path) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().contains(TEMP_MARK) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Temp files in `dir` whose writer is gone: the process id in their name
/// (see [`temp_path`]) no longer runs. A live process's temp is a write in
/// progress, not litter.
pub(crate) fn stale_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(TEMP_MARK) else {
                return false;
            };
            let pid = stem
                .rsplit_once('.')
                .and_then(|(_, tail)| tail.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            match pid {
                Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                None => true,
            }
        })
        .map(|entry| entry.path())
        .collect()
}

/// Whether an error means the file system has no room left (or the user's
/// quota is used up).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 || code == nix::errno::Errno::EDQUOT as i32
    )
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `path`; `None` when it cannot be asked.
pub(crate) fn free_space(path: &Path) -> Option<u64> {
    space(path).map(|(free, _)| free)
}

/// Free bytes (for an unprivileged writer) and total bytes of the file
/// system holding `path`, from one look; `None` when it cannot be asked.
// The block counts are 32 bits wide on 32-bit ARM, 64 elsewhere.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn space(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let block = s.fragment_size() as u64;
    let free = (s.blocks_available() as u64).saturating_mul(block);
    Some((free, (s.blocks() as u64).saturating_mul(block)))
}

/// Takes the turn to change one of the small stores kept in folder `dir`
/// (the users and devices stores), until the guard is dropped. The folder
/// is the lock: the stores' files are replaced, so locking one would lock
/// an inode that is about to go. Blocking.
pub(crate) fn folder_turn(dir: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    Flock::lock(fs::File::open(dir)?, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
}

/// Removes a file that may not exist.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces `path` with `contents` (mode 0600): temp file, fsync, rename,
/// fsync the folder. Readers see the old file or the new one, never a part.
pub(crate) fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = temp_path(dir, &stem);
    let result = (|| {
        let mut file = create_private(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        commit_rename(&temp, path)
    })();
    if result.is_err() {
        let _ = remove_if_present(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temps_of_dead_processes_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let ours = temp_path(dir.path(), "upload");
        fs::write(&ours, b"in progress").unwrap();
        let dead = dir.path().join(format!("upload.4194303-1{TEMP_MARK}"));
        fs::write(&dead, b"left by a crash").unwrap();
        fs::write(dir.path().join("collection.anki2"), b"not a temp").unwrap();
        assert_eq!(stale_temps(dir.path()), [dead]);
    }
}
