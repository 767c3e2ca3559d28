//! Who is asking: logins (`/sync/hostKey`) and host keys on every other request.
//!
//! A login gets a random host key of its own, recorded as a device (see
//! `service::devices`), so one lost phone can be cut off. The key the
//! official server derives, `sha1_hex("user:secret")` over the `SYNC_USERn`
//! value, is still accepted, so devices stay logged in when a user moves from
//! it to leitner; all the devices holding it are one "moved" device,
//! recorded on its first request and revoked together.

mod roster;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use smol::lock::Semaphore;

pub use roster::host_key;
pub(crate) use roster::{password_marks, stored_password_mark};
use roster::{Roster, Stamp};

use crate::ground::password;
use crate::service::account::Account;
use crate::service::config::{Secret, UserSpec};
use crate::service::devices::{Devices, NewDevice};
use crate::storage::devices::{self as device_store};
use crate::storage::users;

/// At most this many password checks run at once, so a flood of logins cannot
/// occupy every blocking thread (each check is ~1 s of CPU on a Pi).
const CONCURRENT_LOGINS: usize = 2;

struct Credential {
    secret: Secret,
    /// For plain passwords the PHC string is computed on first use, not at
    /// start-up: a socket-activated server starts often and must start fast.
    phc: OnceLock<String>,
}

impl Credential {
    fn phc(&self) -> &str {
        match &self.secret {
            Secret::Phc(phc) => phc,
            Secret::Plain(password) => self.phc.get_or_init(|| password::hash_plain(password)),
        }
    }

    /// Blocking: one PBKDF2 run (plus one more the first time for a plain password).
    fn verify(&self, password: &str) -> bool {
        password::verify(password, self.phc())
    }
}

/// Where a user is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `SYNC_USERn`, with its number.
    Env(usize),
    /// The users store (`leitner user add`).
    Store,
}

/// One user as the server knows them now.
#[derive(Clone)]
pub(crate) struct Known {
    pub(crate) account: Arc<Account>,
    /// The key the official server would derive from the password.
    pub(crate) host_key: String,
    /// [`device_store::password_mark`] of the password.
    pub(crate) password_mark: String,
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests only
    pub(crate) source: Source,
    credential: Arc<Credential>,
}

/// The user and device a host key belongs to.
#[derive(Clone)]
pub(crate) struct Found {
    pub(crate) account: Arc<Account>,
    /// The device's record's `key`: the SHA-256 of its own key, or for the
    /// key the official server derives, [`device_store::moved_key`].
    pub(crate) key_hash: String,
    /// The official server's key, not recorded yet: the caller records it
    /// ([`Users::record_moved`]). The password's mark.
    pub(crate) unrecorded: Option<String>,
}

/// The users the server serves. The users store is re-read whenever its
/// file changes (checked on each request: one `stat`), so users added,
/// removed or given a new password by `leitner user` count at once.
pub(crate) struct Users {
    env: Vec<UserSpec>,
    base: PathBuf,
    roster: RwLock<Arc<Roster>>,
    /// The users store's and the devices store's.
    stamp: Mutex<(Option<Stamp>, Option<Stamp>)>,
    pub(crate) devices: Devices,
    login_slots: Semaphore,
    throttle: crate::service::throttle::Throttle,
}

impl Users {
    /// Reads the users store beside the `SYNC_USERn` users. A name defined
    /// in both is an error: which password would count? Blocking.
    pub(crate) fn new(env: Vec<UserSpec>, base: PathBuf) -> Result<Users, String> {
        let users = Users {
            env,
            devices: Devices::new(base.clone()),
            base,
            roster: RwLock::new(Arc::new(Roster::default())),
            stamp: Mutex::new((None, None)),
            login_slots: Semaphore::new(CONCURRENT_LOGINS),
            throttle: Default::default(),
        };
        let now = users.stamps();
        let stored = users::load(&users.base).map_err(|e| e.to_string())?;
        // A damaged store would forget revocations: like a damaged users
        // store, it stops the start (the message says how to go on).
        let devices = device_store::load(&users.base).map_err(|e| {
            format!(
                "{e}; move it aside to start without it (every device then logs in again, \
                 and revoked keys of the official server work again until revoked anew)"
            )
        })?;
        for user in &stored {
            if let Some(i) = users.env.iter().position(|e| e.name == user.name) {
                return Err(format!(
                    "user '{}' is defined twice: in SYNC_USER{} and in the users store \
                     ({}); remove one of them",
                    user.name,
                    i + 1,
                    users::path(&users.base).display()
                ));
            }
        }
        *write(&users.roster) = Arc::new(users.build(&stored, devices, &Roster::default()));
        *lock(&users.stamp) = now;
        Ok(users)
    }

    /// Every user now, in name order.
    pub(crate) fn all(&self) -> Vec<Known> {
        let roster = self.current();
        let mut all: Vec<Known> = roster.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.account.name.cmp(&b.account.name));
        all
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Known> {
        self.current().by_name.get(name).cloned()
    }

    /// The user and device of a host key: a device's own key while it is
    /// not revoked and its password is the user's password now, or the key
    /// the official server derives from the password now, unless revoked.
    pub(crate) fn by_host_key(&self, key: &str) -> Option<Found> {
        let roster = self.current();
        let key_hash = device_store::key_hash(key);
        if let Some(device) = roster.devices.get(&key_hash) {
            let known = roster.by_name.get(&device.user)?;
            if device.revoked.is_some() || device.password != known.password_mark {
                return None;
            }
            return Some(Found {
                account: known.account.clone(),
                key_hash,
                unrecorded: None,
            });
        }
        // The official server's key: one record stands for every device
        // holding it, found by user and password, not by a hash of the key
        // (which would be a fast hash of the password).
        let name = roster.by_host_key.get(key)?;
        let known = &roster.by_name[name];
        let moved = device_store::moved_key(name, &known.password_mark);
        let unrecorded = match roster.devices.get(&moved) {
            Some(record) if record.revoked.is_some() => return None,
            Some(_) => None,
            None => Some(known.password_mark.clone()),
        };
        Some(Found {
            account: known.account.clone(),
            key_hash: moved,
            unrecorded,
        })
    }

    /// Records the first request of a key moved from the official server;
    /// a failure to write costs only the record. Blocking.
    pub(crate) fn record_moved(&self, found: &Found, client: &str, address: Option<IpAddr>) {
        let Some(password) = &found.unrecorded else {
            return;
        };
        let who = NewDevice {
            user: &found.account.name,
            password: password.clone(),
            client,
            address,
        };
        if let Err(e) = self.devices.moved(who, &found.key_hash) {
            log::warn!(
                "{}: recording a device moved from the official server: {e}",
                found.account.name
            );
        }
    }

    /// A new key and device record for a login that passed. If the record
    /// cannot be written (a full card), the key the official server derives
    /// is given instead: the device syncs, unrecorded. Blocking.
    pub(crate) fn new_device(
        &self,
        known: &Known,
        client: &str,
        address: Option<IpAddr>,
    ) -> String {
        let who = NewDevice {
            user: &known.account.name,
            password: known.password_mark.clone(),
            client,
            address,
        };
        match self.devices.log_in(who) {
            Ok(key) => key,
            Err(e) => {
                log::warn!(
                    "{}: recording a new device failed ({e}); it gets the password's key",
                    known.account.name
                );
                known.host_key.clone()
            }
        }
    }

    /// Checks a login on the blocking pool; on success, the user and the
    /// host key their device keeps. An unknown user costs the same as a
    /// known one: the password is checked against a stand-in hash of the
    /// same strength and the answer thrown away.
    ///
    /// Logins from one address (`peer`) take turns, pausing after repeated
    /// failures (see [`crate::service::throttle`]); other addresses do not wait.
    pub(crate) async fn login(
        &self,
        peer: Option<IpAddr>,
        name: &str,
        password: &str,
    ) -> Option<Known> {
        let turn = match peer {
            Some(peer) => Some(self.throttle.enter(peer).await),
            None => None,
        };
        let _slot = self.login_slots.acquire().await;
        let known = self.by_name(name);
        let credential = match &known {
            Some(known) => known.credential.clone(),
            None => stand_in(),
        };
        let password = password.to_owned();
        let ok = smol::unblock(move || credential.verify(&password)).await;
        let known = known.filter(|_| ok);
        if let Some(turn) = turn {
            match known {
                Some(_) => turn.succeeded(),
                None => turn.failed(),
            }
        }
        known
    }
}

/// A credential no password matches, as costly to check as a real one.
fn stand_in() -> Arc<Credential> {
    static STAND_IN: OnceLock<Arc<Credential>> = OnceLock::new();
    STAND_IN
        .get_or_init(|| {
            Arc::new(Credential {
                secret: Secret::Phc(password::unmatchable()),
                phc: OnceLock::new(),
            })
        })
        .clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ground::password::{check_phc, hash_plain};
    use crate::storage::users::StoredUser;

    #[test]
    fn host_key_matches_the_official_derivation() {
        assert_eq!(
            host_key("alice:secret"),
            "6985e52cea44a28695d5c440bd42f57e9f50b7b1"
        );
    }

    #[test]
    fn plain_hash_has_the_official_shape_and_verifies() {
        let phc = hash_plain("secret");
        assert!(phc.starts_with("$pbkdf2-sha256$i=600000,l=32$tonuvYGpksNFQBlEmm3lxg$"));
        check_phc(&phc).unwrap();
        let c = Credential {
            secret: Secret::Phc(phc),
            phc: OnceLock::new(),
        };
        assert!(c.verify("secret"));
        assert!(!c.verify("Secret"));
    }

    #[test]
    fn the_stand_in_is_a_valid_hash_nothing_matches() {
        let c = stand_in();
        check_phc(c.phc()).unwrap();
        assert!(!c.verify(""));
    }

    #[test]
    fn the_store_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::service::config::Config::from_vars(|k| {
            (k == "SYNC_USER1").then(|| "env:pw".into())
        })
        .unwrap()
        .users;
        let users = Users::new(env.clone(), dir.path().to_owned()).unwrap();
        assert_eq!(users.all().len(), 1);
        let add = |name: &str, pw: &str| {
            let password = hash_plain(pw);
            crate::storage::users::edit(dir.path(), |list| {
                list.retain(|u| u.name != name);
                list.push(StoredUser {
                    name: name.into(),
                    password,
                    created: 0,
                });
                Ok(())
            })
            .unwrap();
        };
        add("bob", "one");
        let bob = users.by_name("bob").expect("seen without a restart");
        assert_eq!(bob.source, Source::Store);
        let env_user = users.by_name("env").unwrap();
        assert!(users.by_host_key(&bob.host_key).is_some());
        // A new password: a new host key; the old one stops working, and
        // the account (its open collection) is the same object.
        add("bob", "two");
        let bob2 = users.by_name("bob").unwrap();
        assert_ne!(bob.host_key, bob2.host_key);
        assert!(users.by_host_key(&bob.host_key).is_none());
        assert!(Arc::ptr_eq(&bob.account, &bob2.account));
        assert!(Arc::ptr_eq(
            &env_user.account,
            &users.by_name("env").unwrap().account
        ));
        // Removed: gone at once.
        crate::storage::users::edit(dir.path(), |list| {
            list.clear();
            Ok(())
        })
        .unwrap();
        assert!(users.by_name("bob").is_none());
        assert!(users.by_host_key(&bob2.host_key).is_none());
        // A name in both places stops a start.
        add("env", "x");
        assert!(Users::new(env, dir.path().to_owned())
            .err()
            .unwrap()
            .contains("defined twice"));
    }

    #[test]
    fn phc_check_refuses_garbage() {
        assert!(check_phc("secret").is_err());
        assert!(check_phc("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g").is_err());
    }
}
