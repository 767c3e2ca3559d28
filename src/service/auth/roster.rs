//! The roster: every user at one moment (`SYNC_USERn` and the users
//! store) with the devices store's records, rebuilt when either file
//! changes; and the keys the official server derives, which it is built on.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sha1::{Digest, Sha1};

use super::{lock, read, write, Credential, Known, Source, Users};
use crate::service::account::Account;
use crate::service::config::{Secret, UserSpec};
use crate::storage::devices::{self as device_store, Device};
use crate::storage::users::{self, StoredUser};

pub fn host_key(raw_user_value: &str) -> String {
    crate::ground::hex::encode(&Sha1::digest(raw_user_value.as_bytes()))
}

/// The key the official server derives for a user of the users store: as
/// with `PASSWORDS_HASHED`, from the name and the PHC string.
fn stored_host_key(user: &StoredUser) -> String {
    host_key(&format!("{}:{}", user.name, user.password))
}

/// The mark of a users-store user's password (see
/// [`device_store::password_mark`]).
pub(crate) fn stored_password_mark(user: &StoredUser) -> String {
    device_store::password_mark(&stored_host_key(user))
}

/// Each user's [`device_store::password_mark`] now, for the commands: a
/// device record with another mark belongs to an earlier password.
pub(crate) fn password_marks(env: &[UserSpec], stored: &[StoredUser]) -> HashMap<String, String> {
    let mut marks: HashMap<String, String> = stored
        .iter()
        .map(|u| (u.name.clone(), stored_password_mark(u)))
        .collect();
    for spec in env {
        marks.insert(
            spec.name.clone(),
            device_store::password_mark(&host_key(&spec.raw)),
        );
    }
    marks
}

/// Every user at one moment: `SYNC_USERn` and the users store together,
/// and the devices store's keys.
#[derive(Default)]
pub(super) struct Roster {
    pub(super) by_name: HashMap<String, Known>,
    /// The official server's key -> the user's name.
    pub(super) by_host_key: HashMap<String, String>,
    /// Device records by their `key`.
    pub(super) devices: HashMap<String, Device>,
}

/// What the users store file looked like when last read: a replaced file is
/// a new inode, so a change is seen even within the same second.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    inode: u64,
    modified_ns: i128,
    len: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        len: meta.len(),
    })
}

impl Users {
    pub(super) fn stamps(&self) -> (Option<Stamp>, Option<Stamp>) {
        (
            stamp(&users::path(&self.base)),
            stamp(&device_store::path(&self.base)),
        )
    }

    /// A roster from `SYNC_USERn` and `stored`, keeping the accounts (open
    /// collections, locks) and credentials of users who stay.
    pub(super) fn build(
        &self,
        stored: &[StoredUser],
        devices: Vec<Device>,
        old: &Roster,
    ) -> Roster {
        let mut roster = Roster {
            devices: devices.into_iter().map(|d| (d.key.clone(), d)).collect(),
            ..Roster::default()
        };
        let mut add = |name: &str, secret: Secret, key: String, source: Source| {
            let reuse = old.by_name.get(name);
            let account = match reuse {
                Some(known) => known.account.clone(),
                None => Arc::new(Account::new(
                    name.to_owned(),
                    crate::storage::data_dir::user_dir(&self.base, name),
                )),
            };
            let credential = match reuse {
                Some(known) if known.credential.secret == secret => known.credential.clone(),
                _ => Arc::new(Credential {
                    secret,
                    phc: OnceLock::new(),
                }),
            };
            roster.by_host_key.insert(key.clone(), name.to_owned());
            roster.by_name.insert(
                name.to_owned(),
                Known {
                    account,
                    password_mark: device_store::password_mark(&key),
                    host_key: key,
                    source,
                    credential,
                },
            );
        };
        for (i, spec) in self.env.iter().enumerate() {
            add(
                &spec.name,
                spec.secret.clone(),
                host_key(&spec.raw),
                Source::Env(i + 1),
            );
        }
        for user in stored {
            if self.env.iter().any(|e| e.name == user.name) {
                log::error!(
                    "user '{}' is in the users store and in SYNC_USERn; the SYNC_USERn \
                     password counts",
                    user.name
                );
                continue;
            }
            let key = stored_host_key(user);
            add(
                &user.name,
                Secret::Phc(user.password.clone()),
                key,
                Source::Store,
            );
        }
        roster
    }

    /// The roster, re-read first if the users or devices store changed. A
    /// store that cannot be read keeps the last good roster (and says so).
    pub(super) fn current(&self) -> Arc<Roster> {
        let now = self.stamps();
        let mut seen = lock(&self.stamp);
        if *seen != now {
            let loaded = users::load(&self.base)
                .map_err(|e| e.to_string())
                .and_then(|u| {
                    Ok((
                        u,
                        device_store::load(&self.base).map_err(|e| e.to_string())?,
                    ))
                });
            match loaded {
                Ok((stored, devices)) => {
                    let old = read(&self.roster).clone();
                    *write(&self.roster) = Arc::new(self.build(&stored, devices, &old));
                    if seen.0 != now.0 {
                        log::info!("users store changed: {} user(s)", self.roster_len());
                    }
                }
                Err(e) => log::error!("{e}; keeping the users and devices as they were"),
            }
            *seen = now;
        }
        drop(seen);
        read(&self.roster).clone()
    }

    fn roster_len(&self) -> usize {
        read(&self.roster).by_name.len()
    }
}
