//! Full upload: the client's whole collection replaces the server's.
//!
//! The body streams through the zstd decoder into a temp file next to the
//! collection (never into memory), is checked, fsynced and renamed into place.
//! The replaced collection becomes a snapshot first.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{register_unicase, schema, sidecar, snapshots, FILE_NAME};
use crate::ground::durable;

/// An uploaded collection in its temp file, removed on drop unless installed.
pub(crate) struct Received {
    path: Option<PathBuf>,
}

impl Received {
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().expect("not yet installed")
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = durable::remove_if_present(&path);
            for suffix in ["-wal", "-shm"] {
                let _ = durable::remove_if_present(&sidecar(&path, suffix));
            }
        }
    }
}

impl Received {
    /// A new temp file in `dir` for a collection to arrive in, and the
    /// writer that fills it. Blocking.
    ///
    /// When the disk fills up while it arrives, the user's oldest snapshots
    /// go, one at a time, to make room; the newest stays, and with nothing
    /// left to remove the write fails (see [`durable::is_disk_full`]).
    pub(crate) fn create(dir: &Path) -> io::Result<(Received, Writer)> {
        let received = Received {
            path: Some(durable::temp_path(dir, "upload")),
        };
        let file = durable::create_private(received.path())?;
        let writer = Writer(BufWriter::with_capacity(
            64 * 1024,
            SyncEvery::new(file, dir.to_owned()),
        ));
        Ok((received, writer))
    }
}

/// Fills a [`Received`] file; [`Writer::finish`] makes it durable.
pub(crate) struct Writer(BufWriter<SyncEvery>);

impl Writer {
    pub(crate) fn finish(self) -> io::Result<()> {
        let file = self.0.into_inner().map_err(|e| e.into_error())?.file;
        file.sync_all()
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Flushes written data to the card every few MiB while a body streams in, so
/// the final fsync is short: an SD card can take many seconds to write out a
/// whole collection, and the client's stall timer runs while it does.
struct SyncEvery {
    file: File,
    unsynced: u64,
    /// The account folder, whose snapshots may go when the disk is full.
    account_dir: PathBuf,
}

const SYNC_STEP: u64 = 16 << 20;

impl SyncEvery {
    fn new(file: File, account_dir: PathBuf) -> SyncEvery {
        SyncEvery {
            file,
            unsynced: 0,
            account_dir,
        }
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = loop {
            match self.file.write(buf) {
                Err(e) if durable::is_disk_full(&e) => {
                    if !snapshots::make_room(&self.account_dir)? {
                        return Err(e);
                    }
                }
                other => break other?,
            }
        };
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_STEP {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Checks that a file is a schema-18 collection a client can open, first
/// converting a schema-11 one (an old client's). Blocking.
pub(crate) fn validate(path: &Path) -> Result<(), String> {
    let mut magic = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|_| "not an SQLite file".to_string())?;
    if &magic != b"SQLite format 3\0" {
        return Err("not an SQLite file".into());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    // The file is a stranger's: nothing in its schema may run our functions
    // with side effects, and what Anki never creates is refused outright.
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(|e| e.to_string())?;
    register_unicase(&conn).map_err(|e| e.to_string())?;
    let result = check_shape(&conn)
        .and_then(|()| super::legacy::upgrade(&conn))
        .and_then(|()| check_contents(&conn));
    let _ = conn.close();
    result
}

/// Anki's collections have tables and indexes only: a trigger would run on
/// the server's own writes, a view could hide anything.
fn check_shape(conn: &Connection) -> Result<(), String> {
    let odd: Option<(String, String)> = conn
        .query_row(
            "SELECT type, name FROM sqlite_master WHERE type NOT IN ('table', 'index') LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    match odd {
        Some((kind, name)) => Err(format!(
            "it holds a {kind} ('{name}'), which Anki never creates"
        )),
        None => Ok(()),
    }
}

fn check_contents(conn: &Connection) -> Result<(), String> {
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(format!("SQLite check: {check}"));
    }
    for table in schema::TABLES {
        let found: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        if !found {
            return Err(format!("table '{table}' is missing"));
        }
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM col", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if rows != 1 {
        return Err(format!("{rows} rows in table col"));
    }
    let version: i64 = conn
        .query_row("SELECT ver FROM col", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version != schema::SCHEMA_VERSION {
        return Err(format!(
            "schema version {version}, expected {}",
            schema::SCHEMA_VERSION
        ));
    }
    Ok(())
}

/// Puts a received, validated file in place of the collection in `dir`,
/// keeping the old one as a snapshot. The caller has closed every connection
/// to the old collection. Returns the snapshot to compress, if any. Blocking.
pub(crate) fn install(dir: &Path, received: &mut Received) -> io::Result<Option<PathBuf>> {
    let live = dir.join(FILE_NAME);
    let mut snapshot = None;
    if live.exists() {
        // A WAL left by a crash belongs to the old file: fold it in now, or it
        // would be replayed onto the new one.
        if sidecar(&live, "-wal").exists() {
            let conn = super::open(&live).map_err(io::Error::other)?;
            super::checkpoint(&conn).map_err(io::Error::other)?;
            conn.close().map_err(|(_, e)| io::Error::other(e))?;
        }
        snapshot = snapshots::keep(dir, &live)?;
    }
    for suffix in ["-wal", "-shm"] {
        durable::remove_if_present(&sidecar(&live, suffix))?;
    }
    let temp = received.path.take().expect("installed once");
    durable::commit_rename(&temp, &live)?;
    Ok(snapshot)
}
