//! Full download: the collection file, streamed out through zstd.
//!
//! The caller holds the user's lock for as long as the stream runs: nothing
//! of this user writes meanwhile, so the checkpointed main file is a
//! consistent copy without spending an extra copy's worth of SD-card writes.
//! The file goes out through [`crate::framing::Encoded`].

use std::fs::File;

use std::path::Path;

use super::StoreError;
use crate::account::AccountState;

/// Makes the main file complete (WAL folded in) and opens it. Blocking.
pub fn open(state: &mut AccountState, account_dir: &Path) -> Result<(File, u64), StoreError> {
    state.abort_session();
    let conn = state.collection(account_dir)?;
    super::checkpoint(conn)?;
    let file = File::open(account_dir.join(super::FILE_NAME))?;
    let len = file.metadata()?.len();
    Ok((file, len))
}
