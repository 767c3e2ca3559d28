//! The service: what the server and the commands share above storage.
//! Accounts and their locks, logins and their throttling, the configuration,
//! a sync in progress, what is running, and the control socket through which
//! a command coordinates with a running server.

pub mod account;
pub mod activity;
pub mod auth;
pub mod backups;
pub mod config;
pub mod control;
pub mod devices;
pub mod session;
pub mod throttle;

use std::io;
use std::sync::Arc;

use crate::ground::budget::Budget;
use crate::storage::collection::snapshots;
use activity::Activity;
use auth::Users;
use config::Config;

/// Everything the endpoints share: configuration and users. Built once.
pub(crate) struct Service {
    pub(crate) config: Config,
    pub(crate) users: Users,
    pub(crate) activity: Arc<Activity>,
    /// Memory for request bodies in flight, all requests together.
    pub(crate) budget: Arc<Budget>,
    /// Requests not yet known to come from a user (logins): only so many
    /// at once, whatever a LAN device opens.
    pub(crate) strangers: throttle::Strangers,
}

/// The memory request bodies may take at once: with the rest of the process
/// (about 10 MB), under 64 MB whatever the network sends.
const BODY_BUDGET: u64 = 48 << 20;

/// Logins in flight at once, in all and from one address.
const STRANGERS: usize = 1024;
const STRANGERS_PER_ADDRESS: usize = 32;

impl Service {
    /// Reads the users, creates every user's folder and finishes what a
    /// crash interrupted. Blocking.
    pub(crate) fn new(config: Config, activity: Arc<Activity>) -> io::Result<Service> {
        std::fs::create_dir_all(&config.base)?;
        // An old client's upload arrives here before its user is known; a
        // command may be writing the users store beside it, so only what a
        // dead process left goes.
        for stale in crate::ground::durable::stale_temps(&config.base) {
            let _ = crate::ground::durable::remove_if_present(&stale);
        }
        let users =
            Users::new(config.users.clone(), config.base.clone()).map_err(io::Error::other)?;
        let seen = crate::storage::data_dir::load_seen(&config.base);
        for known in users.all() {
            let account = &known.account;
            std::fs::create_dir_all(&account.dir)?;
            crate::ground::durable::sweep_temps(&account.dir)?;
            snapshots::repair(&account.dir, config.snapshots);
            if let Some(seen) = seen.get(&account.name) {
                account.saw(seen.clone());
            }
        }
        if users.all().is_empty() {
            log::warn!("no users yet: add one with `leitner user add NAME`");
        }
        Ok(Service {
            config,
            users,
            activity,
            budget: Budget::new(BODY_BUDGET),
            strangers: throttle::Strangers::new(STRANGERS, STRANGERS_PER_ADDRESS),
        })
    }

    /// What the server saw of each user, for `leitner status` and the record
    /// kept across restarts.
    pub(crate) fn seen(&self) -> crate::storage::data_dir::SeenMap {
        let mut all = crate::storage::data_dir::load_seen(&self.config.base);
        for known in self.users.all() {
            if let Some(seen) = known.account.last_seen() {
                all.insert(known.account.name.clone(), seen);
            }
        }
        all
    }

    /// Whether any user is in the middle of a sync (between requests of a
    /// normal sync counts), so the process must not exit yet.
    pub(crate) fn syncing(&self) -> bool {
        let idle = self.config.sync_idle;
        self.users
            .all()
            .iter()
            .any(|known| known.account.busy(idle))
    }

    /// Gives back the users' database page caches kept from past requests
    /// (the server then empties its own spares and trims the allocator).
    /// Blocking.
    pub(crate) fn release_memory(&self) {
        for known in self.users.all() {
            known.account.release_memory();
        }
    }

    /// Decompressed size limit for a collection upload, as the official
    /// server applies it: three times `MAX_SYNC_PAYLOAD_MEGS`.
    pub(crate) fn collection_limit(&self) -> u64 {
        self.config.max_payload.saturating_mul(3)
    }
}
