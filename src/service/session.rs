//! A normal sync in progress: what its requests share between `start` and
//! `finish` (the transaction itself stays open on the user's connection).

use std::time::{Duration, Instant};

use crate::service::account::AccountState;

/// A normal sync in progress.
pub(crate) struct Session {
    /// The client's session key (`s` of `start`).
    pub(crate) key: String,
    /// `col.usn` at `start`: stamped on everything this sync writes.
    pub(crate) server_usn: i32,
    /// The client's `minUsn`: rows with `usn >= client_usn` are news to it.
    pub(crate) client_usn: i32,
    pub(crate) client_is_newer: bool,
    /// Ids still to send in `chunk` replies, taken at the first `chunk`.
    pub(crate) pending: Option<Pending>,
    pub(crate) touched: Instant,
}

/// Ids of what `chunk` replies still have to send.
pub(crate) struct Pending {
    pub(crate) revlog: Vec<i64>,
    pub(crate) cards: Vec<i64>,
    pub(crate) notes: Vec<i64>,
}

impl AccountState {
    /// Rolls back a sync nobody has touched for `idle`.
    pub(crate) fn expire_session(&mut self, idle: Duration) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.touched.elapsed() > idle)
        {
            log::warn!("rolling back an abandoned sync");
            self.abort_session();
        }
    }

    pub(crate) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Whether a normal sync is under way: started, and touched within
    /// `idle` (an older one is abandoned and will be rolled back).
    pub(crate) fn syncing(&self, idle: Duration) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.touched.elapsed() <= idle)
    }
}
