//! The data directory (`SYNC_BASE`): one folder per user, and beside them the
//! few files of leitner's own. Every name at this level is decided here.
//!
//! Who may change what while a server runs is decided by one lock: a server
//! holds [`LOCK_FILE`] for its whole life; a management command that finds no
//! server takes it instead, so a server started meanwhile (socket activation)
//! waits until the command is done. With a server running, commands reach it
//! through [`CONTROL_SOCKET`] (see `control`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::ground::durable;

/// The users added with `leitner user add` (PHC hashes), mode 0600.
pub(crate) const USERS_FILE: &str = "leitner-users.json";
/// One record per logged-in device (hashed keys), mode 0600.
pub(crate) const DEVICES_FILE: &str = "leitner-devices.json";
/// Held by the server for its life, or by a command while no server runs.
pub(crate) const LOCK_FILE: &str = "leitner.lock";
/// The running server's control socket.
pub(crate) const CONTROL_SOCKET: &str = "leitner.sock";
/// When each user last synced and with which client, saved at shutdown.
pub(crate) const SEEN_FILE: &str = "leitner-seen.json";
/// The highest data format a leitner has used in this folder (see [`FORMAT`]).
pub(crate) const FORMAT_FILE: &str = "leitner-format";

/// The data folder's format, as this leitner reads and writes it. It rises
/// only with a change that an older leitner could not read; everything else
/// (new optional files, new JSON fields with defaults) keeps it. The image's
/// slots record it, so that going back to an older system is refused when
/// that system would not read the data (ARCHITECTURE.md, "Data across
/// versions").
pub(crate) const FORMAT: u32 = 1;

/// Whether `name` would collide with leitner's own files, so cannot be a
/// user: anything starting with `leitner-` or `leitner.`, and temp names.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with("leitner-")
        || name.starts_with("leitner.")
        || name.contains(durable::TEMP_MARK)
}

/// A username names a folder under `SYNC_BASE`, so it must be one plain
/// path component, and not one of leitner's own names there.
pub(crate) fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the username is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' cannot be a username"));
    }
    if is_reserved(name) {
        return Err(format!(
            "'{name}' cannot be a username (names starting with 'leitner-' or 'leitner.' are leitner's own)"
        ));
    }
    if name.len() > 200 {
        return Err("the username is longer than 200 bytes".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(format!("the username contains {c:?}"));
    }
    Ok(())
}

/// The exclusive lock on a data directory; released on drop (or when the
/// process dies, however it dies).
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

fn lock_file(base: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(base.join(LOCK_FILE))
}

/// Takes the lock if nobody holds it.
pub(crate) fn try_lock(base: &Path) -> io::Result<Option<DirLock>> {
    match Flock::lock(lock_file(base)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(DirLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Takes the lock, waiting for whoever holds it. Blocking.
pub(crate) fn lock(base: &Path) -> io::Result<DirLock> {
    match Flock::lock(lock_file(base)?, FlockArg::LockExclusive) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err((_, e)) => Err(e.into()),
    }
}

/// Checks that this leitner can read the folder, and records its format
/// there when it is the first, or a newer, leitner to use it (so the file is
/// written once per format, not per start). Blocking; called with the lock.
pub(crate) fn claim_format(base: &Path) -> io::Result<()> {
    let path = base.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: u32 = text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a format number", path.display()),
                )
            })?;
            if found > FORMAT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} was written by a newer leitner (data format {found}); this one \
                         reads format {FORMAT} at most: run the newer leitner, or restore \
                         a backup made with this one",
                        base.display()
                    ),
                ));
            }
            if found == FORMAT {
                return Ok(());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    durable::replace(&path, format!("{FORMAT}\n").as_bytes())
}

/// What the server last saw of a user: when, and which client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Unix time of the last authenticated request, in milliseconds.
    pub(crate) at: i64,
    /// The client's own description, e.g. `26.9.3,0b9d9a1,linux`.
    pub(crate) client: String,
}

pub(crate) type SeenMap = BTreeMap<String, Seen>;

/// The saved record; empty if there is none or it cannot be read (it is
/// informational only).
pub(crate) fn load_seen(base: &Path) -> SeenMap {
    std::fs::read(base.join(SEEN_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Saves the record (write-temp, fsync, rename). Blocking.
pub(crate) fn save_seen(base: &Path, seen: &SeenMap) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(seen).map_err(io::Error::other)?;
    durable::replace(&base.join(SEEN_FILE), &json)
}

/// The folder of user `name`.
pub(crate) fn user_dir(base: &Path, name: &str) -> PathBuf {
    base.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_names_are_reserved() {
        for name in [
            USERS_FILE,
            LOCK_FILE,
            FORMAT_FILE,
            CONTROL_SOCKET,
            SEEN_FILE,
            "x.leitner-tmp",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["alice", "leitner", "leitnerfan", "Leitner-x"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_lock(dir.path()).unwrap().expect("free");
        assert!(try_lock(dir.path()).unwrap().is_none());
        drop(held);
        assert!(try_lock(dir.path()).unwrap().is_some());
    }

    #[test]
    fn seen_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_seen(dir.path()).is_empty());
        let mut seen = SeenMap::new();
        seen.insert(
            "alice".into(),
            Seen {
                at: 5,
                client: "26.9.3".into(),
            },
        );
        save_seen(dir.path(), &seen).unwrap();
        assert_eq!(load_seen(dir.path()), seen);
    }

    #[test]
    fn the_format_is_recorded_once_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FORMAT_FILE);
        claim_format(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{FORMAT}\n")
        );
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        claim_format(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );

        std::fs::write(&path, "0\n").unwrap();
        claim_format(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{FORMAT}\n")
        );

        std::fs::write(&path, format!("{}\n", FORMAT + 1)).unwrap();
        let refused = claim_format(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("newer leitner"), "{refused}");
        std::fs::write(&path, "two").unwrap();
        assert!(claim_format(dir.path()).is_err());
    }
}
