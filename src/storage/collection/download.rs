//! Full download: the collection file, streamed out through zstd.
//!
//! Under the user's lock the WAL is folded into the main file; then a read
//! transaction on a connection of its own pins that state: while it is open
//! no checkpoint may write into the main file (SQLite needs the read slot it
//! holds), so the file streams out as a consistent copy without spending a
//! copy's worth of SD-card writes, and without holding the user's lock:
//! syncs of the user's other devices go on, into the WAL.
//! The HTTP layer encodes the file as it streams.

use std::fs::File;

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// The collection file as of one moment, and what keeps it so.
pub(crate) struct Pinned {
    pub(crate) file: File,
    pub(crate) len: u64,
    /// A read transaction; dropping it lets checkpoints go on.
    _reader: Connection,
}

/// Makes the main file complete (WAL folded in through `conn`, the only
/// connection that writes it), pins it and opens it. Fails with SQLite's
/// "busy" while another download pins an older state. Blocking.
pub(crate) fn open(conn: &Connection, account_dir: &Path) -> Result<Pinned, StoreError> {
    super::checkpoint(conn)?;
    let path = account_dir.join(super::FILE_NAME);
    let reader = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.execute_batch("BEGIN")?;
    let _: i64 = reader.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    let file = File::open(&path)?;
    let len = file.metadata()?.len();
    Ok(Pinned {
        file,
        len,
        _reader: reader,
    })
}

/// Whether `open` failed only because another download pins the file.
pub(crate) fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy))
}

impl std::io::Read for Pinned {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}
