//! A user's collection: one SQLite file in Anki's schema 18, which is what
//! full syncs exchange byte for byte.

pub mod download;
pub mod legacy;
pub(crate) mod objects;
pub mod proto;
pub mod restore;
pub mod schema;
pub mod schema11;
pub mod snapshots;
pub mod text;
pub mod upload;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use unicase::UniCase;

use crate::ground::durable;

pub(crate) const FILE_NAME: &str = "collection.anki2";

/// Registers the `unicase` collation that several columns declare. It must
/// order exactly like the `unicase` crate, which Anki uses: an index built
/// with any other order looks corrupt to the client's integrity check.
pub(crate) fn register_unicase(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_collation("unicase", |a, b| UniCase::new(a).cmp(&UniCase::new(b)))
}

/// Opens an existing collection file for this server's use.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    register_unicase(&conn)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A commit that has been acknowledged to a client must survive a power
    // cut, or the client's and the server's usn bookkeeping part ways.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Room for a normal sync's dirty pages, so a large transaction does not
    // spill to the WAL halfway (SQLite's default is 2 MiB). Memory is only
    // used as pages are touched.
    conn.pragma_update(None, "cache_size", -8192)?;
    // Statement journals in memory. Inside a normal sync's transaction a
    // statement that may fail after writing (`DELETE FROM config` in
    // applyChanges, a REPLACE) journals the pages it changes; past 64 KiB
    // SQLite moves that journal to a temp file, in /var/tmp on the SD card,
    // and keeps using the file, a write syscall per page, for the rest of
    // the transaction. One statement's journal holds only the pages that
    // statement changed (applyChunk's rows need none, see `UPDATE_CARD`).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A normal sync's steps use a few dozen distinct statements per row
    // kind; preparing one costs more than running it on a row.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens the collection in `dir`, first creating an empty one if the user
/// has none yet. The new file appears whole or not at all.
pub fn open_or_create(dir: &Path) -> Result<Connection, StoreError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        create(dir, &path)?;
    }
    Ok(open(&path)?)
}

/// A storage failure: the database or the file system.
#[derive(Debug)]
pub enum StoreError {
    Sql(rusqlite::Error),
    Io(std::io::Error),
    /// Stored data this server cannot read (a damaged protobuf blob).
    Unreadable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sql(e) => write!(f, "database: {e}"),
            StoreError::Io(e) => write!(f, "i/o: {e}"),
            StoreError::Unreadable(what) => write!(f, "unreadable: {what}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sql(e) => Some(e),
            StoreError::Io(e) => Some(e),
            StoreError::Unreadable(_) => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

fn create(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let temp = durable::temp_path(dir, FILE_NAME);
    drop(durable::create_private(&temp)?);
    let result = (|| -> Result<(), StoreError> {
        let conn = Connection::open(&temp)?;
        register_unicase(&conn)?;
        conn.pragma_update(None, "page_size", 4096)?;
        schema::create(&conn, crate::ground::clock::now_millis())?;
        // Clients write their collections in WAL mode; so do we.
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&temp)?.sync_all()?;
        durable::commit_rename(&temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = durable::remove_if_present(&temp);
    }
    result
}

/// A database file's companion: `-wal`, `-shm`, `-journal`.
pub(crate) fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

/// Folds the WAL into the main file, so the main file alone is the collection.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("checkpoint blocked by another reader".into()),
        ));
    }
    Ok(())
}

/// SQLite's full integrity check of a collection file, read beside the
/// server: `None` when all is well, else the first problems. Blocking.
pub(crate) fn integrity(path: &Path) -> Result<Option<String>, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    register_unicase(&conn)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check(5)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

/// What `/sync/meta` reports about a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    /// `col.mod`, ms
    pub(crate) modified: i64,
    /// `col.scm`, ms
    pub(crate) schema_modified: i64,
    /// `col.usn`: the usn the next sync will stamp on what it changes
    pub(crate) usn: i32,
    /// no cards at all
    pub(crate) empty: bool,
    /// `schedVer` 2 or later (the v2 and v3 schedulers): clients before
    /// sync version 9 cannot take it.
    pub(crate) sched_v2: bool,
    /// A `creationOffset` is set (the new timezone handling): clients
    /// before sync version 10 cannot take it.
    pub(crate) creation_offset: bool,
}

pub(crate) fn status(conn: &Connection) -> rusqlite::Result<Status> {
    let (modified, schema_modified, usn) =
        conn.query_row("SELECT mod, scm, usn FROM col WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let any_card: Option<i64> = conn
        .query_row("SELECT 1 FROM cards LIMIT 1", [], |r| r.get(0))
        .optional()?;
    let config = |key: &str| -> rusqlite::Result<Option<serde_json::Value>> {
        let val: Option<Vec<u8>> = conn
            .query_row("SELECT val FROM config WHERE KEY = ?", [key], |r| r.get(0))
            .optional()?;
        Ok(val.and_then(|v| serde_json::from_slice(&v).ok()))
    };
    // Anki reads a missing schedVer as the v1 scheduler.
    let sched = config("schedVer")?.and_then(|v| v.as_i64()).unwrap_or(1);
    Ok(Status {
        modified,
        schema_modified,
        usn,
        empty: any_card.is_none(),
        sched_v2: sched >= 2,
        creation_offset: config("creationOffset")?.is_some_and(|v| !v.is_null()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicase_orders_like_anki() {
        use std::cmp::Ordering::*;
        let cmp = |a: &str, b: &str| UniCase::new(a).cmp(&UniCase::new(b));
        assert_eq!(cmp("abc", "ABC"), Equal);
        assert_eq!(cmp("Maße", "MASSE"), Equal);
        assert_eq!(cmp("a", "B"), Less);
        assert_eq!(cmp("Émile", "émile"), Equal);
    }

    #[test]
    fn a_new_collection_is_valid_and_pristine() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_or_create(dir.path()).unwrap();
        let st = status(&conn).unwrap();
        assert_eq!(st.modified, 0);
        assert_eq!(st.usn, 0);
        assert!(st.empty);
        assert!(st.schema_modified > 0);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        upload::validate(&dir.path().join(FILE_NAME)).unwrap();
        // Nothing but the collection (and its WAL while open) is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }
}
