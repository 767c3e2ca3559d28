//! Full download: the collection file, streamed out through zstd.
//!
//! The caller holds the user's lock for as long as the stream runs: nothing
//! of this user writes meanwhile, so the checkpointed main file is a
//! consistent copy without spending an extra copy's worth of SD-card writes.
//! The HTTP layer encodes the file as it streams.

use std::fs::File;

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Makes the main file complete (WAL folded in through `conn`, the only
/// connection that writes it) and opens it. Blocking.
pub fn open(conn: &Connection, account_dir: &Path) -> Result<(File, u64), StoreError> {
    super::checkpoint(conn)?;
    let file = File::open(account_dir.join(super::FILE_NAME))?;
    let len = file.metadata()?.len();
    Ok((file, len))
}
