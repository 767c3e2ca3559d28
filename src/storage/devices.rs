//! The devices store: one record per login (a phone, a laptop), so the
//! owner can see which devices sync and cut one off without changing the
//! password for all of them.
//!
//! A login gets a random host key; the record keeps only its SHA-256, so the
//! file (mode 0600, replaced whole like the users store) holds nothing a
//! device could log in with. Each record also names the password it was
//! issued under (a short fingerprint, see [`password_mark`]): a new password
//! retires every key of the old one, for `SYNC_USERn` users too. The key the
//! official server derives from the password is one record per user and
//! password ([`moved_key`]), kept however many records come after it, so a
//! revocation of it holds.
//!
//! How recently a device synced changes on every request; the server keeps
//! that in memory and folds it in here when it exits (and at the next
//! login), not once per sync: the card is not written for a timestamp.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ground::durable;
use crate::storage::data_dir::DEVICES_FILE;

const FORMAT_VERSION: u32 = 1;
/// Devices kept per user: a login past it forgets the one unused longest
/// (its key stops working). Clients never say when they log out, so
/// records of forgotten logins would otherwise pile up.
pub(crate) const MAX_PER_USER: usize = 40;
/// Revoked records kept per user, so `device list` can confirm a revocation.
const MAX_REVOKED_PER_USER: usize = 10;

/// How a device got its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Origin {
    /// A login to leitner: a random key.
    Login,
    /// The key the official server derives from the password, which a
    /// device moving from it still holds; recorded the first time it is used.
    Moved,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Device {
    pub(crate) user: String,
    /// Short and random, unique per user: what `device revoke` takes.
    pub(crate) id: String,
    /// SHA-256 of the host key, hex; for the official server's key,
    /// [`moved_key`].
    pub(crate) key: String,
    /// The password the key was issued under ([`password_mark`]).
    pub(crate) password: String,
    pub(crate) origin: Origin,
    /// The client's own description, e.g. `26.9.3,0b9d9a1,linux`.
    pub(crate) client: String,
    /// Unix milliseconds: the login (or first use of a moved key).
    pub(crate) first: i64,
    /// Unix milliseconds of the last request, 0 if none since the login.
    #[serde(default)]
    pub(crate) last: i64,
    /// The address of the last request (or of the login).
    #[serde(default)]
    pub(crate) address: String,
    /// Unix milliseconds of the revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoked: Option<i64>,
}

impl Device {
    /// When the device was last heard of.
    pub(crate) fn last_heard(&self) -> i64 {
        self.last.max(self.first)
    }
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    devices: Vec<Device>,
}

/// Why the store cannot be read or changed as asked.
#[derive(Debug)]
pub(crate) enum DevicesError {
    Io(io::Error),
    /// The file exists but is not a devices store we understand.
    Damaged(String),
    /// The change asked for cannot be made (the message says why).
    Refused(String),
}

impl std::fmt::Display for DevicesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevicesError::Io(e) => write!(f, "devices store: {e}"),
            DevicesError::Damaged(why) => {
                write!(f, "devices store {DEVICES_FILE} is damaged: {why}")
            }
            DevicesError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DevicesError {}

impl From<io::Error> for DevicesError {
    fn from(e: io::Error) -> Self {
        DevicesError::Io(e)
    }
}

pub(crate) fn path(base: &Path) -> PathBuf {
    base.join(DEVICES_FILE)
}

/// SHA-256 of a host key, as records keep it.
pub(crate) fn key_hash(host_key: &str) -> String {
    crate::ground::hex::encode(&Sha256::digest(host_key.as_bytes()))
}

/// A fingerprint of a user's password, from the key the official server
/// derives from it: it changes with the password. Four hex digits on
/// purpose: that key is a fast hash of a `SYNC_USERn` password, and a longer
/// fingerprint in this file (and in every backup of it) would let anyone
/// holding one test password guesses offline; 16 bits confirm none. The
/// price: a changed `SYNC_USERn` password leaves the old devices in with a
/// chance of 1 in 65,536 (`user passwd` removes their records anyway).
pub(crate) fn password_mark(derived_host_key: &str) -> String {
    let digest = Sha256::digest(format!("leitner device\0{derived_host_key}").as_bytes());
    crate::ground::hex::encode(&digest[..2])
}

/// The record `key` of the official server's key for `user` under the
/// password of `mark`.
pub(crate) fn moved_key(user: &str, mark: &str) -> String {
    format!("moved:{user}:{mark}")
}

/// A new random host key: 40 hex digits, the shape of the official ones.
pub(crate) fn new_host_key() -> io::Result<String> {
    let mut bytes = [0u8; 20];
    crate::ground::random::fill(&mut bytes)?;
    Ok(crate::ground::hex::encode(&bytes))
}

/// A device id not yet taken by `user` in `devices`.
pub(crate) fn new_id(devices: &[Device], user: &str) -> io::Result<String> {
    loop {
        let mut bytes = [0u8; 3];
        crate::ground::random::fill(&mut bytes)?;
        let id = crate::ground::hex::encode(&bytes);
        if !devices.iter().any(|d| d.user == user && d.id == id) {
            return Ok(id);
        }
    }
}

/// Every record; none if there is no store yet.
pub(crate) fn load(base: &Path) -> Result<Vec<Device>, DevicesError> {
    let bytes = match std::fs::read(path(base)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let file: StoreFile =
        serde_json::from_slice(&bytes).map_err(|e| DevicesError::Damaged(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(DevicesError::Damaged(format!(
            "format version {} (this leitner reads {FORMAT_VERSION})",
            file.version
        )));
    }
    Ok(file.devices)
}

/// Changes the store through `change`; the new list replaces the file
/// atomically, kept within the limits per user. Edits take turns with each
/// other and with the users store's. Blocking.
pub(crate) fn edit<T>(
    base: &Path,
    change: impl FnOnce(&mut Vec<Device>) -> Result<T, DevicesError>,
) -> Result<T, DevicesError> {
    let _turn = durable::folder_turn(base)?;
    let mut devices = load(base)?;
    let before = devices.clone();
    let result = change(&mut devices)?;
    trim(&mut devices);
    if devices != before {
        let json = serde_json::to_vec_pretty(&StoreFile {
            version: FORMAT_VERSION,
            devices,
        })
        .map_err(io::Error::other)?;
        durable::replace(&path(base), &json)?;
    }
    Ok(result)
}

/// Keeps each user's newest [`MAX_PER_USER`] live and
/// [`MAX_REVOKED_PER_USER`] revoked records of logins, and every record of
/// the official server's key (one per password: forgetting a revoked one
/// would let that key in again).
fn trim(devices: &mut Vec<Device>) {
    let mut order: Vec<usize> = (0..devices.len()).collect();
    // Newest first, so the first ones counted are the ones kept.
    order.sort_by_key(|&i| std::cmp::Reverse(devices[i].last_heard()));
    let mut counts: std::collections::HashMap<(&str, bool), usize> = Default::default();
    let mut keep = vec![false; devices.len()];
    for i in order {
        let d = &devices[i];
        if d.origin == Origin::Moved {
            keep[i] = true;
            continue;
        }
        let revoked = d.revoked.is_some();
        let n = counts.entry((d.user.as_str(), revoked)).or_default();
        *n += 1;
        let limit = if revoked {
            MAX_REVOKED_PER_USER
        } else {
            MAX_PER_USER
        };
        keep[i] = *n <= limit;
    }
    let mut i = 0;
    devices.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(user: &str, id: &str, last: i64) -> Device {
        Device {
            user: user.into(),
            id: id.into(),
            key: key_hash(id),
            password: password_mark("k"),
            origin: Origin::Login,
            client: "26.9.3,0b9d9a1,linux".into(),
            first: 1,
            last,
            address: "192.0.2.1".into(),
            revoked: None,
        }
    }

    #[test]
    fn edits_are_kept_private_and_a_refusal_changes_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        edit(dir.path(), |all| {
            all.push(device("alice", "a1", 5));
            Ok(())
        })
        .unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![device("alice", "a1", 5)]);
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let refused = edit(dir.path(), |all| -> Result<(), _> {
            all.clear();
            Err(DevicesError::Refused("no".into()))
        });
        assert!(matches!(refused, Err(DevicesError::Refused(_))));
        assert_eq!(load(dir.path()).unwrap().len(), 1);
        std::fs::write(path(dir.path()), br#"{"version":9,"devices":[]}"#).unwrap();
        assert!(matches!(load(dir.path()), Err(DevicesError::Damaged(_))));
    }

    #[test]
    fn each_user_keeps_the_devices_heard_from_last() {
        let mut all: Vec<Device> = (0..MAX_PER_USER as i64 + 3)
            .map(|i| device("alice", &format!("a{i}"), 100 + i))
            .collect();
        all.push(device("bob", "b", 0));
        for i in 0..MAX_REVOKED_PER_USER as i64 + 2 {
            let mut gone = device("alice", &format!("r{i}"), i);
            gone.revoked = Some(i);
            all.push(gone);
        }
        let mut moved = device("alice", "m", 0);
        (moved.origin, moved.key, moved.revoked) =
            (Origin::Moved, moved_key("alice", "ab12"), Some(1));
        all.push(moved.clone());
        trim(&mut all);
        assert!(
            all.contains(&moved),
            "a revoked official key is never forgotten"
        );
        let alice_live: Vec<_> = all
            .iter()
            .filter(|d| d.user == "alice" && d.revoked.is_none())
            .collect();
        assert_eq!(alice_live.len(), MAX_PER_USER);
        // The three heard from least recently went.
        assert!(alice_live.iter().all(|d| d.last >= 103));
        assert_eq!(
            all.iter().filter(|d| d.revoked.is_some()).count(),
            MAX_REVOKED_PER_USER + 1
        );
        assert!(all.iter().any(|d| d.user == "bob"));
    }

    #[test]
    fn keys_and_marks_have_their_shapes() {
        let key = new_host_key().unwrap();
        assert_eq!(key.len(), 40);
        assert_ne!(key, new_host_key().unwrap());
        assert_eq!(key_hash("x").len(), 64);
        assert_eq!(password_mark("a").len(), 4);
        assert_ne!(password_mark("a"), password_mark("b"));
        let taken = vec![device("alice", "abcdef", 0)];
        assert_ne!(new_id(&taken, "alice").unwrap(), "abcdef");
    }
}
