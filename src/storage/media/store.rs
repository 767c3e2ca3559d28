//! A user's media: the flat folder of files and the database that says what
//! each name holds (SHA-1, size, the media usn of its last change).
//!
//! The database is the layout the official server keeps (`media.db`, user
//! version 4), so a data folder moves between the two servers, plus one table
//! of our own, `leitner_pending`: the file operations a committed batch still
//! owes the folder.
//!
//! Crash safety rests on one ordering. A batch's new contents are written
//! into `media.incoming/` and fsynced; the rows and the owed operations
//! commit in one transaction; only then are the files renamed into (or
//! deleted from) the folder. The commit is the moment of truth: before it,
//! the folder is untouched and the staged files are litter; after it, every
//! owed operation can be redone, and is redone when the store is next
//! opened, so rows and files always end up saying the same thing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::ground::durable;
use crate::storage::collection::StoreError;

pub(crate) const DB_NAME: &str = "media.db";
pub(crate) const FOLDER: &str = "media";
/// Where uploaded files wait for their batch to commit; same file system.
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
CREATE TABLE IF NOT EXISTS leitner_pending (
    fname TEXT NOT NULL PRIMARY KEY,
    staged TEXT
);
";

/// One entry as `mediaChanges` reports it: a deleted file has no SHA-1.
pub(crate) struct Change {
    pub(crate) name: String,
    pub(crate) usn: i64,
    pub(crate) sha1: Option<[u8; 20]>,
}

/// What an upload asks for one name.
pub(crate) enum Upload {
    Delete,
    /// New contents, complete and fsynced in the staging folder.
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
        // A batch acknowledged to a client must survive a power cut: the
        // client marks those files as synced.
        conn.pragma_update(None, "synchronous", "FULL")?;
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
        let store = Store {
            conn,
            folder,
            staging,
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
    /// it. Each effective change takes the next usn; uploading what is
    /// already there, or deleting what is already gone, changes nothing.
    pub(crate) fn apply(
        &mut self,
        batch: Vec<(String, Upload)>,
        now: i64,
    ) -> Result<i64, StoreError> {
        // The staged files must be durable, names included, before the
        // commit makes them owed; one flush of the file system covers them
        // all, and also the previous batch's renames, whose owed rows this
        // transaction deletes.
        durable::sync_filesystem(&self.staging)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // The previous batch's operations were all done (or redone at open).
        tx.execute("DELETE FROM leitner_pending", [])?;
        let (mut usn, mut bytes, mut files): (i64, i64, i64) = tx.query_row(
            "SELECT last_usn, total_bytes, total_nonempty_files FROM meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut litter = Vec::new();
        let mut owed = Vec::new();
        for (name, upload) in batch {
            let live: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT csum, size FROM media WHERE fname = ? AND size > 0",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match (upload, live) {
                (Upload::Delete, None) => {}
                (Upload::Delete, Some((_, old_size))) => {
                    usn += 1;
                    // The checksum stays: it is what a deletion is reported with.
                    tx.execute(
                        "UPDATE media SET size = 0, usn = ?, mtime = ? WHERE fname = ?",
                        params![usn, now, name],
                    )?;
                    tx.execute(
                        "INSERT INTO leitner_pending (fname, staged) VALUES (?, NULL)",
                        [&name],
                    )?;
                    owed.push((name, None));
                    bytes -= old_size;
                    files -= 1;
                }
                (Upload::Put { staged, sha1, .. }, Some((old, _))) if old == sha1 => {
                    litter.push(staged);
                }
                (Upload::Put { staged, sha1, size }, live) => {
                    usn += 1;
                    tx.execute(
                        "INSERT OR REPLACE INTO media (fname, csum, size, usn, mtime) \
                         VALUES (?, ?, ?, ?, ?)",
                        params![name, &sha1[..], size as i64, usn, now],
                    )?;
                    tx.execute(
                        "INSERT INTO leitner_pending (fname, staged) VALUES (?, ?)",
                        params![name, staged],
                    )?;
                    owed.push((name, Some(staged)));
                    match live {
                        Some((_, old_size)) => bytes += size as i64 - old_size,
                        None => {
                            bytes += size as i64;
                            files += 1;
                        }
                    }
                }
            }
        }
        tx.execute(
            "UPDATE meta SET last_usn = ?, total_bytes = ?, total_nonempty_files = ?",
            params![usn, bytes, files],
        )?;
        tx.commit()?;
        for staged in litter {
            durable::remove_if_present(&self.staging.join(staged))?;
        }
        // No flush after the renames: until the next batch's flush they can
        // be redone from the owed rows, which stay until then.
        self.perform(&owed)?;
        Ok(usn)
    }

    /// Makes the folder match the last committed batch, at open: whatever a
    /// crash interrupted is finished (every step can be repeated, so this is
    /// safe whether the batch was half done, done, or not started) and made
    /// durable. Anything else in the staging folder is from a batch that
    /// never committed, and goes.
    fn redo_owed(&self) -> Result<(), StoreError> {
        let owed: Vec<(String, Option<String>)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT fname, staged FROM leitner_pending")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        self.perform(&owed)?;
        if !owed.is_empty() {
            durable::sync_dir(&self.folder)?;
        }
        for entry in fs::read_dir(&self.staging)? {
            durable::remove_if_present(&entry?.path())?;
        }
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

impl Store {
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

/// A fresh name in the staging folder, unique within this process; the
/// folder is emptied before a process stages anything, so that is enough.
pub(crate) fn staged_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn a_crash_after_the_commit_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let old = vec![("x.txt".to_string(), stage(&store, b"old"))];
        store.apply(old, 1).unwrap();
        // Commit a batch by hand, as if the process died right after it.
        let staged = staged_name();
        fs::write(store.staging().join(&staged), b"new").unwrap();
        store
            .conn
            .execute_batch(&format!(
                "DELETE FROM leitner_pending;
                 INSERT INTO leitner_pending VALUES ('x.txt', '{staged}');
                 INSERT INTO leitner_pending VALUES ('y.txt', NULL);"
            ))
            .unwrap();
        fs::write(dir.path().join("media/y.txt"), b"deleted").unwrap();
        fs::write(store.staging().join("litter"), b"uncommitted").unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("media/x.txt")).unwrap(), b"new");
        assert!(!dir.path().join("media/y.txt").exists());
        assert_eq!(fs::read_dir(store.staging()).unwrap().count(), 0);
        // Redoing again changes nothing.
        drop(store);
        Store::open(dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("media/x.txt")).unwrap(), b"new");
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
        // As if the process died after committing a batch, before renaming.
        let staged = staged_name();
        fs::rename(
            dir.path().join("media/b.txt"),
            store.staging().join(&staged),
        )
        .unwrap();
        store
            .conn
            .execute_batch(&format!(
                "DELETE FROM leitner_pending;
                 INSERT INTO leitner_pending VALUES ('b.txt', '{staged}');"
            ))
            .unwrap();
        fs::write(dir.path().join("media/stray.txt"), b"?").unwrap();
        fs::write(dir.path().join("media/a.txt"), b"changed").unwrap();
        drop(store);
        let found = audit(dir.path()).unwrap().unwrap();
        assert_eq!(found.owed, 1);
        assert_eq!(found.staged, 1);
        assert_eq!(found.missing, ["b.txt"]);
        assert_eq!(found.differing, ["a.txt"]);
        assert_eq!(found.strays, ["stray.txt"]);
        Store::open(dir.path()).unwrap();
        let found = audit(dir.path()).unwrap().unwrap();
        assert_eq!((found.owed, found.staged), (0, 0));
        assert!(found.missing.is_empty());
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
