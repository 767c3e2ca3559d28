//! One user's server-side state: their folder and a lock that serialises
//! that user's requests and nobody else's.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use smol::lock::{Mutex, MutexGuardArc, RwLock, RwLockReadGuardArc, RwLockWriteGuardArc};

use crate::storage::collection;
use crate::storage::data_dir::Seen;
use crate::storage::media;

pub(crate) struct Account {
    pub(crate) name: String,
    /// `SYNC_BASE/<name>`
    pub(crate) dir: PathBuf,
    state: Arc<Mutex<AccountState>>,
    /// The media store, opened on first use. Its own lock: media sync runs
    /// beside a collection sync of the same user, as clients do it.
    media: Arc<Mutex<Option<media::Store>>>,
    /// The media usn as of the last media request, or -1 before the first:
    /// `/sync/meta` reads it here instead of waiting for a media upload that
    /// holds the media lock.
    pub(crate) media_usn: std::sync::atomic::AtomicI64,
    /// The last authenticated request: when, and from which client.
    seen: std::sync::Mutex<Option<Seen>>,
    /// Downloads streaming the collection file hold this for reading; what
    /// replaces or folds the file (an upload's install, a command's hold)
    /// takes it for writing. Taken before the state lock, never after.
    files: Arc<RwLock<()>>,
    /// Snapshots the server is about to compress or compressing, for
    /// `leitner check` (which otherwise sees a raw snapshot as a problem).
    compressing: Arc<std::sync::atomic::AtomicUsize>,
    /// When a request of this user last met a full disk, and the free
    /// bytes then (see [`Account::room_for_a_sync`]).
    full: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// Room a sync needs at least: its WAL pages, a media batch's rows.
pub(crate) const MIN_FREE: u64 = 1 << 20;

/// How long a request that met a full disk holds the user's next syncs back
/// unless more room is free: a quota (which `statvfs` does not show) or
/// room made elsewhere is not waited for longer.
const FULL_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(600);

/// Counts a snapshot as being compressed while it lives.
pub(crate) struct Compressing(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Compressing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What only one request of a user may touch at a time.
#[derive(Default)]
pub(crate) struct AccountState {
    /// The open collection, kept between requests of this user so a sync's
    /// requests do not reopen the file each time.
    pub(crate) collection: Option<Connection>,
    /// A normal sync in progress: its transaction is open on `collection`.
    pub(crate) session: Option<crate::service::session::Session>,
}

impl Account {
    /// A request of this user met a full disk. Blocking (one `statvfs`).
    pub(crate) fn met_full_disk(&self) {
        let free = crate::ground::durable::free_space(&self.dir).unwrap_or(0);
        *self.full.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), free));
    }

    /// Whether a sync has room to start: at least [`MIN_FREE`] free, the
    /// user's older snapshots giving way for it; and, for a while after one
    /// of the user's requests met a full disk, that much more than was free
    /// then. So a normal sync that filled the disk halfway (the client could
    /// only be told "507") is followed by `meta` saying why. Blocking.
    pub(crate) fn room_for_a_sync(&self) -> bool {
        loop {
            let Some(free) = crate::ground::durable::free_space(&self.dir) else {
                return true;
            };
            if free < MIN_FREE {
                if matches!(
                    crate::storage::collection::snapshots::make_room(&self.dir),
                    Ok(true)
                ) {
                    continue;
                }
                return false;
            }
            let mut full = self.full.lock().unwrap_or_else(|p| p.into_inner());
            return match *full {
                Some((when, at)) if when.elapsed() < FULL_REMEMBERED => {
                    if free >= at.saturating_add(MIN_FREE) {
                        *full = None;
                        true
                    } else {
                        false
                    }
                }
                Some(_) => {
                    *full = None;
                    true
                }
                None => true,
            };
        }
    }

    pub(crate) fn new(name: String, dir: PathBuf) -> Account {
        Account {
            name,
            dir,
            state: Arc::new(Mutex::new(AccountState::default())),
            media: Arc::new(Mutex::new(None)),
            media_usn: std::sync::atomic::AtomicI64::new(-1),
            full: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(None),
            files: Arc::new(RwLock::new(())),
            compressing: Arc::default(),
        }
    }

    /// Marks a snapshot of this user as being compressed until the returned
    /// guard drops.
    pub(crate) fn compressing(&self) -> Compressing {
        self.compressing
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Compressing(self.compressing.clone())
    }

    pub(crate) fn is_compressing(&self) -> bool {
        self.compressing.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Records a request of this user (kept in memory; saved at shutdown).
    pub(crate) fn saw(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
    }

    pub(crate) fn last_seen(&self) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn collection_path(&self) -> PathBuf {
        self.dir.join(collection::FILE_NAME)
    }

    /// Waits for this user's other requests; other users never wait here.
    /// The guard is owned so it can move to the blocking pool, or into a
    /// response body that is still streaming.
    pub(crate) async fn lock(&self) -> MutexGuardArc<AccountState> {
        self.state.lock_arc().await
    }

    /// The lock if nobody holds it now.
    pub(crate) fn try_lock(&self) -> Option<MutexGuardArc<AccountState>> {
        self.state.try_lock_arc()
    }

    /// For streaming the collection file out (see [`Account::files`]).
    pub(crate) async fn reading_files(&self) -> RwLockReadGuardArc<()> {
        self.files.read_arc().await
    }

    /// For replacing the collection file: waits for downloads in progress.
    pub(crate) async fn replacing_files(&self) -> RwLockWriteGuardArc<()> {
        self.files.write_arc().await
    }

    /// Whether a request or a normal sync of this user is under way, without
    /// waiting: a held lock counts as under way.
    pub(crate) fn busy(&self, idle: std::time::Duration) -> bool {
        match self.state.try_lock() {
            Some(state) => state.syncing(idle),
            None => true,
        }
    }

    /// Records the last media batch as flushed and gives back the memory
    /// this user's open databases keep between requests (page caches), if
    /// nothing of the user's is under way; the
    /// connections stay open, so a sync in the next minute costs a few page
    /// reads, not a reopen. Blocking.
    pub(crate) fn release_memory(&self) {
        if let Some(state) = self.state.try_lock() {
            if state.session.is_none() {
                if let Some(conn) = &state.collection {
                    let _ = conn.execute_batch("PRAGMA shrink_memory");
                }
            }
        }
        if let Some(media) = self.media.try_lock() {
            if let Some(store) = media.as_ref() {
                if let Err(e) = store.settle() {
                    log::warn!(
                        "{}: recording the last media batch as flushed: {e}",
                        self.name
                    );
                }
                let _ = store.release_memory();
            }
        }
    }

    /// Waits for this user's other media requests. Holds `None` until the
    /// store is first opened (see [`open_media`]).
    pub(crate) async fn lock_media(&self) -> MutexGuardArc<Option<media::Store>> {
        self.media.lock_arc().await
    }
}

/// The user's media store behind `slot`, opening it on first use (which
/// finishes anything a crash left owed). Blocking.
pub(crate) fn open_media<'a>(
    slot: &'a mut Option<media::Store>,
    account_dir: &std::path::Path,
) -> Result<&'a mut media::Store, collection::StoreError> {
    if slot.is_none() {
        *slot = Some(media::Store::open(account_dir)?);
    }
    Ok(slot.as_mut().expect("just opened"))
}

impl AccountState {
    /// The open collection, opening (and if need be creating) it first.
    pub(crate) fn collection(
        &mut self,
        account_dir: &std::path::Path,
    ) -> Result<&Connection, collection::StoreError> {
        if self.collection.is_none() {
            self.collection = Some(collection::open_or_create(account_dir)?);
        }
        Ok(self.collection.as_ref().expect("just opened"))
    }

    /// Rolls back a normal sync in progress, if any, and any transaction
    /// no sync owns (left by a request that died in a way nothing caught).
    pub(crate) fn abort_session(&mut self) {
        let orphan = self.collection.as_ref().is_some_and(|c| !c.is_autocommit());
        if self.session.take().is_some() || orphan {
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
    pub(crate) fn close_collection(&mut self) -> rusqlite::Result<()> {
        self.abort_session();
        if let Some(conn) = self.collection.take() {
            collection::checkpoint(&conn)?;
            conn.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}
