//! One user's server-side state: their folder and a lock that serialises
//! that user's requests and nobody else's.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use smol::lock::{Mutex, MutexGuardArc};

use crate::collection;

pub struct Account {
    pub name: String,
    /// `SYNC_BASE/<name>`
    pub dir: PathBuf,
    pub host_key: String,
    state: Arc<Mutex<AccountState>>,
}

/// What only one request of a user may touch at a time.
#[derive(Default)]
pub struct AccountState {
    /// The open collection, kept between requests of this user so a sync's
    /// requests do not reopen the file each time.
    pub collection: Option<Connection>,
    /// A normal sync in progress: its transaction is open on `collection`.
    pub session: Option<crate::sync::normal::Session>,
}

impl Account {
    pub fn new(name: String, dir: PathBuf, host_key: String) -> Account {
        Account {
            name,
            dir,
            host_key,
            state: Arc::new(Mutex::new(AccountState::default())),
        }
    }

    pub fn collection_path(&self) -> PathBuf {
        self.dir.join(collection::FILE_NAME)
    }

    /// Waits for this user's other requests; other users never wait here.
    /// The guard is owned so it can move to the blocking pool, or into a
    /// response body that is still streaming.
    pub async fn lock(&self) -> MutexGuardArc<AccountState> {
        self.state.lock_arc().await
    }
}

impl AccountState {
    /// The open collection, opening (and if need be creating) it first.
    pub fn collection(
        &mut self,
        account_dir: &std::path::Path,
    ) -> Result<&Connection, collection::StoreError> {
        if self.collection.is_none() {
            self.collection = Some(collection::open_or_create(account_dir)?);
        }
        Ok(self.collection.as_ref().expect("just opened"))
    }

    /// Rolls back a normal sync in progress, if any.
    pub fn abort_session(&mut self) {
        if self.session.take().is_some() {
            if let Some(conn) = &self.collection {
                if !conn.is_autocommit() {
                    if let Err(e) = conn.execute_batch("ROLLBACK") {
                        log::error!("rolling back an aborted sync failed: {e}");
                        // Closing the connection rolls back for certain.
                        self.collection = None;
                    }
                }
            }
        }
    }

    /// Closes the collection, folding the WAL back into the main file first.
    pub fn close_collection(&mut self) -> rusqlite::Result<()> {
        self.abort_session();
        if let Some(conn) = self.collection.take() {
            collection::checkpoint(&conn)?;
            conn.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}
