//! Where a backup goes or a restore comes from: a destination opened as a
//! repository (a folder or a USB drive, used as root; another machine over
//! SFTP, with the data folder's key), and sources named on the command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::super::Error;
use super::{ssh_key, usb};
use crate::service::backups::Destination;
use crate::storage::backup::repository::FOLDER;
use crate::storage::backup::sftp::{Login, Sftp};
use crate::storage::backup::target::{Folder, Target};
use crate::storage::backup::{BackupError, Repository};

/// A source named on the command line: an existing folder, or a
/// destination as `LEITNER_BACKUP_TO` names them.
pub(super) fn source_destination(source: &OsString) -> Result<Destination, Error> {
    let path = Path::new(source);
    if path.is_absolute() || super::super::as_root(|| path.is_dir()) {
        return Ok(Destination::Folder(absolute(path)?));
    }
    let text = source
        .to_str()
        .ok_or_else(|| Error::usage("restore-backup: the source is not UTF-8"))?;
    crate::service::backups::parse_destination(text)
        .map_err(|why| Error::usage(format!("restore-backup: {why}")))
}

/// Whether two paths are on one file system.
pub(super) fn same_disk(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| super::super::as_root(|| std::fs::metadata(p).map(|m| m.dev()));
    matches!((dev(a), dev(b)), (Ok(x), Ok(y)) if x == y)
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|e| Error::usage(format!("{}: {e}", path.display())))
}

/// A repository opened at a destination, with the drive it is on while
/// that is mounted for the run.
pub(super) struct Opened {
    pub(super) repo: Repository,
    // Dropped after the repository (which lets go of its lock first).
    pub(super) drive: Option<usb::Mounted>,
}

/// Opens (or with `create`, starts) the repository at a destination.
pub(super) fn open(
    base: &Path,
    destination: &Destination,
    passphrase: Option<&str>,
    create: bool,
) -> Result<Opened, String> {
    let (target, drive): (Box<dyn Target>, _) = match destination {
        Destination::Folder(path) => (
            Box::new(AsRoot(super::super::as_root(|| folder(path, create))?)),
            None,
        ),
        Destination::Usb { label } => {
            let drive = usb::mount_drive(label.as_deref())?;
            let target = AsRoot(super::super::as_root(|| folder(&drive.root, create))?);
            (Box::new(target), Some(drive))
        }
        Destination::Sftp {
            user,
            host,
            port,
            path,
        } => {
            ssh_key::public_key(base, passphrase)?;
            let login = Login {
                user: user.clone(),
                host: host.clone(),
                port: *port,
                key: ssh_key::key_path(base),
                known_hosts: ssh_key::known_hosts(base),
            };
            let path = if path.is_empty() {
                FOLDER.to_owned()
            } else {
                format!("{path}/{FOLDER}")
            };
            let sftp = Sftp::connect(&login, &path, create).map_err(|e| {
                if e.to_string().contains("Permission denied") {
                    format!(
                        "{e}: the host does not know this Pi's key yet; add the line \
                         `sudo leitner backup-key` prints to {user}'s ~/.ssh/authorized_keys on {host}"
                    )
                } else {
                    e.to_string()
                }
            })?;
            (Box::new(sftp), None)
        }
    };
    let repo =
        Repository::open(target, passphrase, create).map_err(|e: BackupError| e.to_string())?;
    Ok(Opened { repo, drive })
}

/// The repository folder for a destination folder: the folder itself if it
/// is one, else its `leitner-backups`, made if missing.
fn folder(path: &Path, create: bool) -> Result<Folder, String> {
    let repo = if path.join("repository.json").exists() || path.file_name() == Some(FOLDER.as_ref())
    {
        path.to_owned()
    } else {
        path.join(FOLDER)
    };
    if !create && !repo.is_dir() {
        return Err(format!("no leitner backups in {}", path.display()));
    }
    Folder::open(&repo).map_err(|e| format!("{}: {e}", repo.display()))
}

/// A destination used with root's rights when the command was started as
/// root: backups may go where only root may write, and the service's own
/// user cannot change or remove them.
struct AsRoot<T>(T);

impl<T: Target> Target for AsRoot<T> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn read(&mut self, path: &str, limit: u64) -> std::io::Result<Vec<u8>> {
        super::super::as_root(|| self.0.read(path, limit))
    }
    fn write(&mut self, path: &str, data: &[u8]) -> std::io::Result<()> {
        super::super::as_root(|| self.0.write(path, data))
    }
    fn create_new(&mut self, path: &str, data: &[u8]) -> std::io::Result<()> {
        super::super::as_root(|| self.0.create_new(path, data))
    }
    fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>> {
        super::super::as_root(|| self.0.list(dir))
    }
    fn make_dir(&mut self, dir: &str) -> std::io::Result<()> {
        super::super::as_root(|| self.0.make_dir(dir))
    }
    fn remove(&mut self, path: &str) -> std::io::Result<()> {
        super::super::as_root(|| self.0.remove(path))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        super::super::as_root(|| self.0.flush())
    }
    fn uncache(&mut self, path: &str) {
        super::super::as_root(|| self.0.uncache(path))
    }
}
