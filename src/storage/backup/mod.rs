//! Backups off the card: an incremental repository on a USB drive, a folder
//! or another machine (`repository`, over a `target`: a folder, or `sftp`),
//! whose files are
//! sealed by `seal` and described by a `record` per backup; and the
//! single-file archive of leitner 0.2, which can still be restored
//! (`archive`). What to back up and when is the commands' business: this
//! module knows files and bytes, not the server.

pub(crate) mod archive;
pub(crate) mod record;
pub(crate) mod repository;
pub(crate) mod seal;
pub(crate) mod sftp;
pub(crate) mod status;
pub(crate) mod target;

use std::fmt;
use std::io;

pub(crate) use repository::Repository;

/// Why a backup or a restore did not go through. The wording is what the
/// owner reads in `leitner status` and the journal.
#[derive(Debug)]
pub(crate) enum BackupError {
    /// Reading or writing the destination.
    Io(io::Error),
    /// Reading the data folder, or writing a restore into it.
    Source(io::Error),
    /// Not a backup this leitner can read.
    Invalid(String),
    NoRepository(String),
    NeedsPassphrase,
    WrongPassphrase,
    /// A passphrase was given for a repository made without one.
    NotEncrypted,
    /// Another run holds the repository.
    Locked(String),
    Damaged {
        what: String,
        why: seal::Damaged,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Io(e) if crate::ground::durable::is_disk_full(e) => f.write_str(
                "the destination is full: the earlier backups are intact; make room on it \
                 or use a larger one",
            ),
            BackupError::Io(e) => write!(f, "the destination: {e}"),
            BackupError::Source(e) => e.fmt(f),
            BackupError::Invalid(why) => write!(f, "not a usable leitner backup: {why}"),
            BackupError::NoRepository(place) => write!(f, "no leitner backups in {place}"),
            BackupError::NeedsPassphrase => f.write_str(
                "these backups are encrypted: give their passphrase (backup_passphrase=)",
            ),
            BackupError::WrongPassphrase => {
                f.write_str("the passphrase does not open these backups")
            }
            BackupError::NotEncrypted => f.write_str(
                "these backups were started without a passphrase: leave it out, or start \
                 encrypted backups in another folder",
            ),
            BackupError::Locked(by) => write!(f, "another backup or restore is running: {by}"),
            BackupError::Damaged { what, why } => write!(f, "{what} is damaged: {why}"),
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Io(e) | BackupError::Source(e) => Some(e),
            BackupError::Damaged { why, .. } => Some(why),
            _ => None,
        }
    }
}

impl From<io::Error> for BackupError {
    fn from(e: io::Error) -> Self {
        BackupError::Io(e)
    }
}
