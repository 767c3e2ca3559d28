//! Where a backup repository is kept: a folder (a USB drive mounted for the
//! run, or any folder the package's owner names) or another machine over
//! SFTP. The repository sees only these few operations on paths relative to
//! its own folder, with `/` between parts.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub(crate) trait Target {
    /// The destination as messages name it.
    fn describe(&self) -> String;
    /// A whole file of at most `limit` bytes (`NotFound` when absent).
    fn read(&mut self, path: &str, limit: u64) -> io::Result<Vec<u8>>;
    /// Writes `data` under a temp name and renames it over `path`. Durable
    /// only once [`Target::flush`] returns.
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Creates `path`, which must not exist yet (`AlreadyExists` if it
    /// does), and makes it durable.
    fn create_new(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    /// The names of the plain files in `dir`; none when it is missing.
    fn list(&mut self, dir: &str) -> io::Result<Vec<String>>;
    /// Creates `dir` (its parent exists) unless it exists.
    fn make_dir(&mut self, dir: &str) -> io::Result<()>;
    /// Removes a file; fine if it is gone already.
    fn remove(&mut self, path: &str) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Lets the next read of `path` come from the disk rather than a cache,
    /// where the target can tell (read-back verification).
    fn uncache(&mut self, _path: &str) {}
}

/// A repository in a local folder.
pub(crate) struct Folder {
    root: PathBuf,
}

impl Folder {
    /// The folder is created if missing (its parent must exist).
    pub(crate) fn open(root: &Path) -> io::Result<Folder> {
        match fs::create_dir(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && root.is_dir() => {}
            Err(e) => return Err(e),
        }
        Ok(Folder {
            root: root.to_owned(),
        })
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

const TEMP: &str = ".tmp";

impl Target for Folder {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&mut self, path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.at(path))?;
        let len = file.metadata()?.len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path} is {len} bytes, more than {limit}"),
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(limit).read_to_end(&mut data)?;
        Ok(data)
    }

    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let to = self.at(path);
        let temp = to.with_file_name(format!(
            "{}{TEMP}",
            to.file_name().unwrap_or_default().to_string_lossy()
        ));
        let result = File::create(&temp)
            .and_then(|mut f| f.write_all(data))
            .and_then(|()| fs::rename(&temp, &to));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn create_new(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.at(path))?;
        file.write_all(data)?;
        file.sync_all()?;
        File::open(&self.root)?.sync_all()
    }

    fn list(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(self.at(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn make_dir(&mut self, dir: &str) -> io::Result<()> {
        match fs::create_dir(self.at(dir)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        match fs::remove_file(self.at(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // One flush of the whole drive: every chunk, folder and rename of
        // the run, at the cost of one.
        crate::ground::durable::sync_filesystem(&self.root)
    }

    fn uncache(&mut self, path: &str) {
        use std::os::fd::AsRawFd;
        if let Ok(file) = File::open(self.at(path)) {
            let _ = nix::fcntl::posix_fadvise(
                file.as_raw_fd(),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
}
