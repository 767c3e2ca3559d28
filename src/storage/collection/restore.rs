//! Restoring a snapshot: the snapshot becomes a collection file beside the
//! live one, marked so that every device must do a full sync, and checked
//! before anything live is touched. Installing it is the same step as
//! installing a full upload ([`super::upload::install`]).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::snapshots::{self, SnapshotError};
use super::upload::{self, Received};
use super::{register_unicase, StoreError};

/// Decompresses snapshot `id` of the user in `account_dir` into a temp file
/// and prepares it: a new modification and schema time, so every device
/// sees a collection it must replace by a full sync (and none mistakes it
/// for its own because the times match). Blocking.
pub(crate) fn prepare(account_dir: &Path, id: i64, now_ms: i64) -> Result<Received, SnapshotError> {
    let (received, mut writer) = Received::create(account_dir)?;
    snapshots::unpack(account_dir, id, &mut writer)?;
    writer.finish()?;
    let conn = Connection::open_with_flags(
        received.path(),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(StoreError::from)?;
    register_unicase(&conn).map_err(StoreError::from)?;
    let marked = (|| -> rusqlite::Result<()> {
        conn.execute("UPDATE col SET mod = ?1, scm = ?1", [now_ms])?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        super::checkpoint(&conn)
    })();
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    marked.map_err(StoreError::from)?;
    upload::validate(received.path()).map_err(|why| {
        SnapshotError::Store(StoreError::Io(std::io::Error::other(format!(
            "snapshot {id} is not a usable collection: {why}"
        ))))
    })?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::collection::{self, snapshots::Limits};

    #[test]
    fn a_restored_collection_replaces_the_live_one_which_becomes_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            count: 10,
            bytes: u64::MAX,
        };
        let conn = collection::open_or_create(dir.path()).unwrap();
        conn.execute("UPDATE col SET mod = 1", []).unwrap();
        drop(conn);
        let snapshots::Taken::New(id) = snapshots::take(dir.path(), limits).unwrap() else {
            panic!("no snapshot");
        };
        let conn = collection::open(&dir.path().join(collection::FILE_NAME)).unwrap();
        conn.execute("UPDATE col SET mod = 2", []).unwrap();
        collection::checkpoint(&conn).unwrap();
        drop(conn);

        let mut received = prepare(dir.path(), id, 99).unwrap();
        let raw = upload::install(dir.path(), &mut received).unwrap().unwrap();
        snapshots::pack(&raw, snapshots::Kind::Restore, limits).unwrap();
        let conn = collection::open(&dir.path().join(collection::FILE_NAME)).unwrap();
        let (modified, scm): (i64, i64) = conn
            .query_row("SELECT mod, scm FROM col", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((modified, scm), (99, 99));
        let all = snapshots::list(dir.path()).unwrap();
        let newest = all.last().unwrap().info.clone().unwrap();
        assert_eq!(
            (newest.kind, newest.modified),
            (snapshots::Kind::Restore, 2)
        );
        assert!(matches!(
            prepare(dir.path(), 12345, 1),
            Err(SnapshotError::NotFound(12345))
        ));
        // Nothing but the collection, its WAL and the snapshots is left.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        names.sort();
        assert_eq!(names, [collection::FILE_NAME, "snapshots"]);
    }
}
