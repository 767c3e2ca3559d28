//! A user's media: the flat folder of files and the database that says what
//! each name holds (SHA-1, size, the media usn of its last change).
//!
//! The database is the layout the official server keeps (`media.db`, user
//! version 4), so a data folder moves between the two servers, plus two
//! tables of our own: `leitner_owed`, the file operations of the last two
//! batches with what each changed row held before and the usn it was given,
//! and `leitner_flushed`, the newest batch known to be on the card.
//!
//! Crash safety rests on one flush per batch. A batch's new contents are
//! written into `media.incoming/`, its rows and owed operations commit
//! (without a flush of their own), and one flush of the file system makes
//! the staged files, the commit and the previous batch's renames durable
//! together; only then are the files renamed into (or deleted from) the
//! folder, and the client told. A crash before that flush has ended may
//! leave the commit on the card without the files it names. That a batch
//! was flushed is recorded with the next batch's commit, or when the server
//! settles after its work ([`Store::settle`]); a batch not known to be
//! flushed when the store is next opened is checked: every staged file
//! (or the folder's file, if already renamed) must have the size and SHA-1
//! its row says. If so, its operations are finished; if not, the batch is
//! undone from the rows' saved values (its client was never told, and sends
//! it again). A flushed batch is never undone, only its operations redone,
//! and only on rows that still carry the usn it gave them (another server
//! may have written the store since). The folder is never touched before
//! its batch is durable, so rows and files always end up saying the same
//! thing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::ground::durable;
use crate::storage::collection::StoreError;

pub(crate) const DB_NAME: &str = "media.db";
pub(crate) const FOLDER: &str = "media";
/// Where uploaded files wait until their batch is on the card; same file
/// system.
pub(crate) const STAGING: &str = "media.incoming";

const SCHEMA_VERSION: i64 = 4;

/// The official server's tables (v4) and our owed operations.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS media (
    fname TEXT NOT NULL PRIMARY KEY,
    csum BLOB NOT NULL,
    size INTEGER NOT NULL,
    usn INTEGER NOT NULL,
    mtime INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_usn ON media (usn);
CREATE TABLE IF NOT EXISTS meta (
    last_usn INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    total_nonempty_files INTEGER NOT NULL
);
INSERT INTO meta SELECT 0, 0, 0 WHERE NOT EXISTS (SELECT 1 FROM meta);
CREATE TABLE IF NOT EXISTS leitner_owed (
    batch INTEGER NOT NULL,
    fname TEXT NOT NULL,
    staged TEXT,
    usn INTEGER NOT NULL,
    old_csum BLOB,
    old_size INTEGER,
    old_usn INTEGER,
    old_mtime INTEGER,
    PRIMARY KEY (batch, fname)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leitner_flushed (batch INTEGER NOT NULL);
INSERT INTO leitner_flushed SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM leitner_flushed);
";

/// The owed operations as leitner up to 0.2.x kept them: one batch, already
/// durable before its commit.
const OLD_OWED: &str = "leitner_pending";

/// One entry as `mediaChanges` reports it: a deleted file has no SHA-1.
pub(crate) struct Change {
    pub(crate) name: String,
    pub(crate) usn: i64,
    pub(crate) sha1: Option<[u8; 20]>,
}

/// What an upload asks for one name.
pub(crate) enum Upload {
    Delete,
    /// New contents, complete in the staging folder (not yet flushed).
    Put {
        staged: String,
        sha1: [u8; 20],
        size: u64,
    },
}

/// A live file, for sending.
pub(crate) struct Live {
    pub(crate) path: PathBuf,
}

pub(crate) struct Store {
    conn: Connection,
    folder: PathBuf,
    staging: PathBuf,
    /// Kept open for the store's life: a flush through it reports a failed
    /// write-back of anything written since it was opened (a descriptor
    /// opened later would not see one that happened before).
    staging_dir: fs::File,
}

impl Store {
    /// Opens (creating if need be) the media of the user in `account_dir`,
    /// finishing whatever a crash left owed.
    pub(crate) fn open(account_dir: &Path) -> Result<Store, StoreError> {
        let folder = account_dir.join(FOLDER);
        let staging = account_dir.join(STAGING);
        fs::create_dir_all(&folder)?;
        fs::create_dir_all(&staging)?;
        let conn = Connection::open(account_dir.join(DB_NAME))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // No flush per commit: a batch is made durable by one flush of the
        // file system after its commit (see the module's comment), before
        // the client is told; the checkpoints still flush.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 | SCHEMA_VERSION => {}
            3 => {
                return Err(StoreError::Io(io::Error::other(
                    "media.db is from an older Anki server (version 3): \
                     start the official server once to upgrade it",
                )))
            }
            v => {
                return Err(StoreError::Io(io::Error::other(format!(
                    "media.db has unknown version {v}"
                ))))
            }
        }
        conn.execute_batch(SCHEMA)?;
        if version == 0 {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        let staging_dir = fs::File::open(&staging)?;
        let store = Store {
            conn,
            folder,
            staging,
            staging_dir,
        };
        store.redo_owed()?;
        Ok(store)
    }

    /// Whether `account_dir`'s user ever synced media; asking creates nothing.
    pub(crate) fn exists(account_dir: &Path) -> bool {
        account_dir.join(DB_NAME).exists()
    }

    pub(crate) fn staging(&self) -> &Path {
        &self.staging
    }

    pub(crate) fn last_usn(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT last_usn FROM meta", [], |r| r.get(0))
    }

    pub(crate) fn live_count(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT total_nonempty_files FROM meta", [], |r| r.get(0))
    }

    /// Entries changed after `usn`, oldest change first (the client takes the
    /// last one's usn as its next starting point).
    pub(crate) fn changes_after(&self, usn: i64, limit: usize) -> rusqlite::Result<Vec<Change>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT fname, usn, csum, size FROM media WHERE usn > ? ORDER BY usn LIMIT ?",
        )?;
        let rows = stmt.query_map(params![usn, limit as i64], |r| {
            let size: i64 = r.get(3)?;
            let csum: Vec<u8> = r.get(2)?;
            Ok(Change {
                name: r.get(0)?,
                usn: r.get(1)?,
                sha1: (size > 0).then(|| csum.try_into().ok()).flatten(),
            })
        })?;
        rows.collect()
    }

    /// The file behind a live entry, or `None` if the name is not live.
    pub(crate) fn live(&self, name: &str) -> rusqlite::Result<Option<Live>> {
        self.conn
            .query_row(
                "SELECT size FROM media WHERE fname = ? AND size > 0",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|size| {
                size.map(|_| Live {
                    path: self.folder.join(name),
                })
            })
    }

    /// Drops the row of a live entry whose file has gone missing from the
    /// folder (removed by hand, or lost to a failing card), as the official
    /// server does: a later media check on a client that has the file
    /// uploads it again.
    pub(crate) fn forget(&mut self, name: &str) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let size: Option<i64> = tx
            .query_row(
                "SELECT size FROM media WHERE fname = ? AND size > 0",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(size) = size {
            tx.execute("DELETE FROM media WHERE fname = ?", [name])?;
            tx.execute(
                "UPDATE meta SET total_bytes = total_bytes - ?, \
                 total_nonempty_files = total_nonempty_files - 1",
                [size],
            )?;
        }
        tx.commit()
    }

    /// Applies one uploaded batch, in order, and returns the media usn after
    /// it, once the batch is durable. Each effective change takes the next
    /// usn; uploading what is already there, or deleting what is already
    /// gone, changes nothing.
    pub(crate) fn apply(
        &mut self,
        batch: Vec<(String, Upload)>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Only the previous batch's operations may still be undone on the
        // card (its renames become durable with this batch's flush).
        tx.execute(
            "DELETE FROM leitner_owed WHERE batch < (SELECT max(batch) FROM leitner_owed)",
            [],
        )?;
        // The batch before this one was flushed before it was answered.
        tx.execute(
            "UPDATE leitner_flushed SET batch = \
             max(batch, coalesce((SELECT max(batch) FROM leitner_owed), 0))",
            [],
        )?;
        let (mut usn, mut bytes, mut files): (i64, i64, i64) = tx.query_row(
            "SELECT last_usn, total_bytes, total_nonempty_files FROM meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        // A batch is named by the first usn it takes: later batches, higher.
        let batch_id = usn + 1;
        let mut litter = Vec::new();
        let mut owed = Vec::new();
        for (name, upload) in batch {
            let before: Option<Row> = tx
                .query_row(
                    "SELECT csum, size, usn, mtime FROM media WHERE fname = ?",
                    [&name],
                    |r| Ok(Row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let live = before.as_ref().filter(|row| row.1 > 0);
            let staged = match (upload, live) {
                (Upload::Delete, None) => continue,
                (Upload::Delete, Some(row)) => {
                    usn += 1;
                    // The checksum stays: it is what a deletion is reported with.
                    tx.execute(
                        "UPDATE media SET size = 0, usn = ?, mtime = ? WHERE fname = ?",
                        params![usn, now, name],
                    )?;
                    bytes -= row.1;
                    files -= 1;
                    None
                }
                (Upload::Put { staged, sha1, .. }, Some(row)) if row.0 == sha1 => {
                    litter.push(staged);
                    continue;
                }
                (Upload::Put { staged, sha1, size }, live) => {
                    usn += 1;
                    tx.execute(
                        "INSERT OR REPLACE INTO media (fname, csum, size, usn, mtime) \
                         VALUES (?, ?, ?, ?, ?)",
                        params![name, &sha1[..], size as i64, usn, now],
                    )?;
                    match live {
                        Some(row) => bytes += size as i64 - row.1,
                        None => {
                            bytes += size as i64;
                            files += 1;
                        }
                    }
                    Some(staged)
                }
            };
            let (csum, size, old_usn, mtime) = match before {
                Some(Row(csum, size, usn, mtime)) => {
                    (Some(csum), Some(size), Some(usn), Some(mtime))
                }
                None => (None, None, None, None),
            };
            tx.execute(
                "INSERT INTO leitner_owed \
                 (batch, fname, staged, usn, old_csum, old_size, old_usn, old_mtime) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params![batch_id, name, staged, usn, csum, size, old_usn, mtime],
            )?;
            owed.push((name, staged));
        }
        tx.execute(
            "UPDATE meta SET last_usn = ?, total_bytes = ?, total_nonempty_files = ?",
            params![usn, bytes, files],
        )?;
        tx.commit()?;
        for staged in litter {
            durable::remove_if_present(&self.staging.join(staged))?;
        }
        if owed.is_empty() {
            return Ok(usn);
        }
        #[cfg(test)]
        if tests::CRASH_AFTER_COMMIT.get() {
            return Ok(usn);
        }
        // The one flush: staged files, the commit, the previous renames.
        durable::sync_filesystem_of(&self.staging_dir)?;
        // Durable from the next batch's flush on; until then the owed rows
        // can redo them.
        self.perform(&owed)?;
        Ok(usn)
    }

    /// Makes the folder match the committed batches, at open (every step can
    /// be repeated, so this is safe whether a batch was half done, done, or
    /// not started), and makes that durable. The newest batch is checked
    /// first and undone if the card lost part of it; anything else in the
    /// staging folder is from a batch that never committed, and goes.
    fn redo_owed(&self) -> Result<(), StoreError> {
        let mut changed = self.redo_old_owed()?;
        let flushed: i64 = self
            .conn
            .query_row("SELECT batch FROM leitner_flushed", [], |r| r.get(0))?;
        let batches: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT DISTINCT batch FROM leitner_owed ORDER BY batch")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        // The newest batch first: unless known to be on the card, kept only
        // if all of it reached the card, else undone (which touches rows
        // and staged files only).
        let mut newest = None;
        if let Some(&last) = batches.last() {
            let owed = self.owed(last)?;
            if last <= flushed || self.intact(last, &owed) {
                newest = Some(owed);
            } else {
                self.undo(last)?;
            }
            changed = true;
        }
        // Then the earlier one, leaving alone the names the newest changes
        // again (a deletion redone there would remove the newest's file).
        let again: std::collections::HashSet<&String> =
            newest.iter().flatten().map(|(name, _)| name).collect();
        for &batch in &batches[..batches.len().saturating_sub(1)] {
            let owed: Vec<_> = self
                .owed(batch)?
                .into_iter()
                .filter(|(name, _)| !again.contains(name))
                .collect();
            self.perform(&owed)?;
        }
        if let Some(owed) = &newest {
            self.perform(owed)?;
        }
        for entry in fs::read_dir(&self.staging)? {
            durable::remove_if_present(&entry?.path())?;
            changed = true;
        }
        if changed {
            durable::sync_filesystem_of(&self.staging_dir)?;
            // All done and on the card: nothing is owed, nothing to check.
            self.conn.execute_batch(
                "BEGIN; DELETE FROM leitner_owed; \
                 UPDATE leitner_flushed SET batch = (SELECT last_usn FROM meta); COMMIT;",
            )?;
        }
        Ok(())
    }

    /// Finishes what a store written by leitner 0.2 still owed (its batches
    /// were durable before they committed) and drops its table.
    fn redo_old_owed(&self) -> Result<bool, StoreError> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?",
            [OLD_OWED],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(false);
        }
        let owed: Vec<(String, Option<String>)> = {
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT fname, staged FROM {OLD_OWED}"))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        self.perform(&owed)?;
        durable::sync_filesystem(&self.folder)?;
        self.conn.execute_batch(&format!("DROP TABLE {OLD_OWED}"))?;
        Ok(true)
    }

    /// A batch's operations on names whose rows still carry the usn it
    /// gave them: a row changed since (by another server that had the
    /// folder meanwhile, or forgotten) is no longer this batch's to finish.
    fn owed(&self, batch: i64) -> rusqlite::Result<Vec<(String, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.fname, o.staged FROM leitner_owed o \
             JOIN media m ON m.fname = o.fname AND m.usn = o.usn WHERE o.batch = ?",
        )?;
        let rows = stmt.query_map([batch], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Whether every new file of `batch` reached the card: its staged file,
    /// or the folder's if it was renamed already, has the size and SHA-1 of
    /// its row. A file that cannot be read counts as lost: the batch was
    /// never answered. Blocking (reads the files).
    fn intact(&self, batch: i64, owed: &[(String, Option<String>)]) -> bool {
        match self.check_files(owed) {
            Ok(true) => true,
            Ok(false) => {
                log::warn!(
                    "media batch {batch}: a file did not reach the disk before a crash; \
                     the batch is undone and the client will send it again"
                );
                false
            }
            Err(e) => {
                log::warn!("media batch {batch}: checking its files: {e}; the batch is undone");
                false
            }
        }
    }

    fn check_files(&self, owed: &[(String, Option<String>)]) -> Result<bool, StoreError> {
        use sha1::{Digest, Sha1};
        for (name, staged) in owed {
            let Some(staged) = staged else { continue };
            let (csum, size): (Vec<u8>, i64) = self.conn.query_row(
                "SELECT csum, size FROM media WHERE fname = ?",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let staged = self.staging.join(staged);
            let path = if staged.exists() {
                staged
            } else {
                self.folder.join(name)
            };
            let mut file = match fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            if file.metadata()?.len() != size as u64 {
                return Ok(false);
            }
            let mut hasher = Sha1::new();
            io::copy(&mut file, &mut hasher)?;
            if hasher.finalize().as_slice() != csum.as_slice() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Puts the rows `batch` changed back as they were and forgets its
    /// operations; the folder was not touched yet (it never is before its
    /// batch is durable). The usns it took are given back. Its staged
    /// files go with the rest of the staging folder ([`Store::redo_owed`]).
    fn undo(&self, batch: i64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        // Only if nothing was written after it (another server may have had
        // the folder since); else its rows are simply no longer owed.
        let ours: bool = tx.query_row(
            "SELECT (SELECT max(usn) FROM leitner_owed WHERE batch = ?) = \
             (SELECT last_usn FROM meta)",
            [batch],
            |r| r.get(0),
        )?;
        if ours {
            let mine = "SELECT o.fname FROM leitner_owed o JOIN media m \
                        ON m.fname = o.fname AND m.usn = o.usn WHERE o.batch = ?1";
            tx.execute(
                &format!("DELETE FROM media WHERE fname IN ({mine} AND o.old_usn IS NULL)"),
                [batch],
            )?;
            tx.execute(
                &format!(
                    "UPDATE media SET (csum, size, usn, mtime) = \
                     (SELECT old_csum, old_size, old_usn, old_mtime FROM leitner_owed o \
                      WHERE o.batch = ?1 AND o.fname = media.fname) \
                     WHERE fname IN ({mine} AND o.old_usn IS NOT NULL)"
                ),
                [batch],
            )?;
            // The batch took the usns from `batch` on.
            tx.execute(
                "UPDATE meta SET last_usn = ? - 1, \
                 total_bytes = (SELECT coalesce(sum(size), 0) FROM media), \
                 total_nonempty_files = (SELECT count(*) FROM media WHERE size > 0)",
                [batch],
            )?;
        }
        tx.execute("DELETE FROM leitner_owed WHERE batch = ?", [batch])?;
        tx.commit()?;
        Ok(())
    }

    /// Moves staged files into the folder (`Some(staged)`) or removes files
    /// from it (`None`); a staged file already gone was moved before.
    fn perform(&self, owed: &[(String, Option<String>)]) -> Result<(), StoreError> {
        for (name, staged) in owed {
            let target = self.folder.join(name);
            match staged {
                Some(staged) => match fs::rename(self.staging.join(staged), &target) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other?,
                },
                None => durable::remove_if_present(&target)?,
            }
        }
        Ok(())
    }
}

/// A media row: checksum, size, usn, mtime.
struct Row(Vec<u8>, i64, i64, i64);

impl Store {
    /// Records that the newest batch is on the card (it was flushed before
    /// it was answered), so that no later open checks it again, and a file
    /// of it removed by hand or lost to the card since is never taken for a
    /// batch the card lost (which would be undone). One small commit per
    /// spell of work, instead of one per batch. Blocking.
    pub(crate) fn settle(&self) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE leitner_flushed SET batch = (SELECT max(batch) FROM leitner_owed) \
             WHERE batch < (SELECT max(batch) FROM leitner_owed)",
            [],
        )?;
        Ok(())
    }

    /// Gives back the memory SQLite keeps for this database's pages; they
    /// are read again when next needed. Blocking.
    pub(crate) fn release_memory(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch("PRAGMA shrink_memory")
    }

    /// Folds the write-ahead log into the database file, so that the file
    /// alone is the whole store: for a backup that reads it while the store
    /// is held. Blocking.
    pub(crate) fn checkpoint(&self) -> rusqlite::Result<()> {
        crate::storage::collection::checkpoint(&self.conn)
    }

    /// Every live file: name, SHA-1 and size, in name order. Blocking.
    pub(crate) fn live_files(&self) -> rusqlite::Result<Vec<(String, [u8; 20], u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT fname, csum, size FROM media WHERE size > 0 ORDER BY fname")?;
        let rows = stmt.query_map([], |r| {
            let csum: Vec<u8> = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                csum.try_into().unwrap_or([0; 20]),
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        rows.collect()
    }
}

/// A fresh name in the staging folder. Unique across processes too (a
/// random part drawn once per process): owed rows outlive the process that
/// wrote them, and on a board the same pid comes back after every boot.
pub(crate) fn staged_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PROCESS: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if crate::ground::random::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        crate::ground::hex::encode(&bytes)
    });
    format!("{process}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes [`Store::apply`] stop right after its commit.
        pub(super) static CRASH_AFTER_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    use crate::storage::media::audit::audit;
    use sha1::{Digest, Sha1};

    fn stage(store: &Store, data: &[u8]) -> Upload {
        let staged = staged_name();
        fs::write(store.staging().join(&staged), data).unwrap();
        Upload::Put {
            staged,
            sha1: Sha1::digest(data).into(),
            size: data.len() as u64,
        }
    }

    fn names(store: &Store, after: i64) -> Vec<(String, i64, bool)> {
        store
            .changes_after(after, 1000)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.usn, c.sha1.is_some()))
            .collect()
    }

    #[test]
    fn usns_count_effective_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_usn().unwrap(), 0);
        let batch = vec![
            ("a.txt".to_string(), stage(&store, b"a")),
            ("b.txt".to_string(), stage(&store, b"bb")),
            ("gone.txt".to_string(), Upload::Delete),
        ];
        assert_eq!(store.apply(batch, 1).unwrap(), 2);
        assert_eq!(fs::read(dir.path().join("media/a.txt")).unwrap(), b"a");
        assert_eq!(store.live_count().unwrap(), 2);

        // Same contents again: nothing; new contents: one usn; deletion: one.
        let batch = vec![
            ("a.txt".to_string(), stage(&store, b"a")),
            ("b.txt".to_string(), stage(&store, b"new")),
            ("a.txt".to_string(), Upload::Delete),
        ];
        assert_eq!(store.apply(batch, 2).unwrap(), 4);
        assert!(!dir.path().join("media/a.txt").exists());
        assert_eq!(fs::read(dir.path().join("media/b.txt")).unwrap(), b"new");
        assert_eq!(
            names(&store, 2),
            vec![("b.txt".into(), 3, true), ("a.txt".into(), 4, false)]
        );
        assert_eq!(store.live_count().unwrap(), 1);
        assert_eq!(fs::read_dir(store.staging()).unwrap().count(), 0);
    }

    /// Applies a batch as if the process died right after its commit:
    /// before the flush, the renames and the answer.
    fn apply_and_crash(store: &mut Store, batch: Vec<(String, Upload)>) {
        CRASH_AFTER_COMMIT.set(true);
        store.apply(batch, 2).unwrap();
        CRASH_AFTER_COMMIT.set(false);
    }

    fn read(dir: &Path, name: &str) -> Option<Vec<u8>> {
        fs::read(dir.join("media").join(name)).ok()
    }

    #[test]
    fn a_crash_after_the_commit_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = vec![
            ("x.txt".to_string(), stage(&store, b"old")),
            ("y.txt".to_string(), stage(&store, b"y")),
        ];
        store.apply(first, 1).unwrap();
        let second = vec![
            ("x.txt".to_string(), stage(&store, b"new")),
            ("y.txt".to_string(), Upload::Delete),
        ];
        apply_and_crash(&mut store, second);
        assert_eq!(read(dir.path(), "x.txt").unwrap(), b"old");
        fs::write(store.staging().join("litter"), b"uncommitted").unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(read(dir.path(), "x.txt").unwrap(), b"new");
        assert_eq!(read(dir.path(), "y.txt"), None);
        assert_eq!(store.last_usn().unwrap(), 4);
        assert_eq!(fs::read_dir(store.staging()).unwrap().count(), 0);
        // Redoing again changes nothing.
        drop(store);
        Store::open(dir.path()).unwrap();
        assert_eq!(read(dir.path(), "x.txt").unwrap(), b"new");
        assert!(audit(dir.path()).unwrap().unwrap().is_clean());
    }

    #[test]
    fn a_batch_the_card_lost_part_of_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = vec![
            ("x.txt".to_string(), stage(&store, b"old")),
            ("y.txt".to_string(), stage(&store, b"kept")),
        ];
        store.apply(first, 1).unwrap();
        let new = stage(&store, b"brand new");
        let Upload::Put { staged, .. } = &new else {
            unreachable!()
        };
        let lost = store.staging().join(staged);
        let second = vec![
            ("x.txt".to_string(), stage(&store, b"new")),
            ("z.txt".to_string(), new),
            ("y.txt".to_string(), Upload::Delete),
        ];
        apply_and_crash(&mut store, second);
        // The commit reached the card, one staged file's data did not.
        fs::write(&lost, b"").unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_usn().unwrap(), 2);
        assert_eq!(store.live_count().unwrap(), 2);
        assert_eq!(read(dir.path(), "x.txt").unwrap(), b"old");
        assert_eq!(read(dir.path(), "y.txt").unwrap(), b"kept");
        assert_eq!(read(dir.path(), "z.txt"), None);
        assert!(store.live("z.txt").unwrap().is_none());
        assert_eq!(
            names(&store, 0),
            vec![("x.txt".into(), 1, true), ("y.txt".into(), 2, true)]
        );
        let bytes: i64 = store
            .conn
            .query_row("SELECT total_bytes FROM meta", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bytes, 7);
        drop(store);
        assert!(audit(dir.path()).unwrap().unwrap().is_clean());
    }

    #[test]
    fn an_answered_batch_is_never_undone() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let batch = vec![
            ("x.txt".to_string(), stage(&store, b"x")),
            ("y.txt".to_string(), stage(&store, b"y")),
        ];
        store.apply(batch, 1).unwrap();
        store.settle().unwrap();
        // Removed by hand (or lost to a failing card) after the answer.
        fs::remove_file(dir.path().join("media/x.txt")).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_usn().unwrap(), 2);
        assert!(store.live("x.txt").unwrap().is_some());
        assert_eq!(read(dir.path(), "y.txt").unwrap(), b"y");
        // Nothing is owed after an open: the next one checks nothing.
        let owed: i64 = store
            .conn
            .query_row("SELECT count(*) FROM leitner_owed", [], |r| r.get(0))
            .unwrap();
        assert_eq!(owed, 0);
    }

    #[test]
    fn a_name_deleted_then_uploaded_again_keeps_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .apply(vec![("n.txt".to_string(), stage(&store, b"one"))], 1)
            .unwrap();
        store
            .apply(vec![("n.txt".to_string(), Upload::Delete)], 1)
            .unwrap();
        store
            .apply(vec![("n.txt".to_string(), stage(&store, b"two"))], 1)
            .unwrap();
        drop(store);
        // Both later batches are still owed at open; the deletion must not
        // take the newer file.
        Store::open(dir.path()).unwrap();
        assert_eq!(read(dir.path(), "n.txt").unwrap(), b"two");
        assert!(audit(dir.path()).unwrap().unwrap().is_clean());
    }

    #[test]
    fn what_leitner_0_2_still_owed_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let Upload::Put { staged, sha1, .. } = stage(&store, b"owed") else {
            unreachable!()
        };
        store
            .conn
            .execute_batch(&format!(
                "CREATE TABLE leitner_pending (fname TEXT NOT NULL PRIMARY KEY, staged TEXT);
                 INSERT INTO leitner_pending VALUES ('x.txt', '{staged}');"
            ))
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO media VALUES ('x.txt', ?, 4, 1, 1)",
                [&sha1[..]],
            )
            .unwrap();
        drop(store);
        let found = audit(dir.path()).unwrap().unwrap();
        assert_eq!((found.owed, found.staged), (1, 1));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(read(dir.path(), "x.txt").unwrap(), b"owed");
        let old: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'leitner_pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }

    #[test]
    fn the_audit_sees_a_half_applied_batch_and_opening_mends_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let batch = vec![
            ("a.txt".to_string(), stage(&store, b"a")),
            ("b.txt".to_string(), stage(&store, b"b")),
        ];
        store.apply(batch, 1).unwrap();
        assert!(audit(dir.path()).unwrap().unwrap().is_clean());
        let third = vec![("c.txt".to_string(), stage(&store, b"c"))];
        apply_and_crash(&mut store, third);
        fs::write(dir.path().join("media/stray.txt"), b"?").unwrap();
        fs::write(dir.path().join("media/a.txt"), b"changed").unwrap();
        fs::remove_file(dir.path().join("media/b.txt")).unwrap();
        drop(store);
        let found = audit(dir.path()).unwrap().unwrap();
        assert_eq!(found.owed, 1);
        assert_eq!(found.staged, 1);
        assert_eq!(found.missing, ["b.txt", "c.txt"]);
        assert_eq!(found.differing, ["a.txt"]);
        assert_eq!(found.strays, ["stray.txt"]);
        Store::open(dir.path()).unwrap();
        let found = audit(dir.path()).unwrap().unwrap();
        assert_eq!((found.owed, found.staged), (0, 0));
        assert_eq!(found.missing, ["b.txt"]);
    }

    #[test]
    fn a_missing_file_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .apply(vec![("x.txt".to_string(), stage(&store, b"x"))], 1)
            .unwrap();
        assert!(store.live("x.txt").unwrap().is_some());
        store.forget("x.txt").unwrap();
        assert!(store.live("x.txt").unwrap().is_none());
        assert_eq!(store.live_count().unwrap(), 0);
    }
}
