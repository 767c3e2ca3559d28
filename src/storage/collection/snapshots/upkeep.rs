//! Keeping a user's snapshots within their limits, and tidying what a crash
//! left: the oldest go first, raw ones are packed at start-up.

use std::fs;
use std::io;
use std::path::Path;

use super::{list, list_dir, pack, Kind, Limits, Snapshot, DIR_NAME, PACKED_EXT, RAW_EXT};
use crate::ground::durable;

/// Frees room for `account_dir`'s user by removing their oldest snapshot,
/// raw or packed. Snapshots are a convenience: a sync the user asked for
/// comes first, even before the newest one. Returns whether anything went.
/// Blocking.
pub(crate) fn make_room(account_dir: &Path) -> io::Result<bool> {
    remove_oldest(&account_dir.join(DIR_NAME), None)
}

/// Removes the oldest snapshot in `dir` other than `except`.
pub(super) fn remove_oldest(dir: &Path, except: Option<&Path>) -> io::Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    let all = list_dir(dir)?;
    match all.iter().find(|s| Some(s.path.as_path()) != except) {
        Some(oldest) => {
            log::warn!(
                "{}: disk full; removing the oldest snapshot {}",
                dir.display(),
                oldest.id
            );
            durable::remove_if_present(&oldest.path)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Finishes what a crash or a full disk interrupted: stray temps go, raw
/// snapshots are compressed where there is room (a raw one that does not
/// fit stays, counted like any other, and is tried again at the next
/// start). Never fails: snapshots must not keep the server from serving.
/// Blocking; run at start-up.
pub(crate) fn repair(account_dir: &Path, limits: Limits) {
    let dir = account_dir.join(DIR_NAME);
    if !dir.exists() {
        return;
    }
    let _ = durable::sweep_temps(&dir);
    remove_packed_twins(&dir);
    for snapshot in list(account_dir).unwrap_or_default() {
        if snapshot.raw {
            // Only uploads leave raw snapshots behind long enough to crash.
            if let Err(e) = pack(&snapshot.path, Kind::Upload, limits) {
                log::warn!(
                    "{}: snapshot {} stays uncompressed: {e}",
                    dir.display(),
                    snapshot.id
                );
            }
        }
    }
    if let Err(e) = prune(&dir, limits) {
        log::warn!("{}: pruning snapshots: {e}", dir.display());
    }
}

/// Removes raw snapshots whose packed form is complete (a crash came
/// between the two).
fn remove_packed_twins(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let raw = path.extension().is_some_and(|e| e == RAW_EXT);
        if raw && path.with_extension(PACKED_EXT).exists() {
            let _ = durable::remove_if_present(&path);
        }
    }
}

/// Removes the oldest snapshots, raw or packed, until at most `limits.count`
/// remain and they take at most `limits.bytes`; the newest always stays.
pub(super) fn prune(dir: &Path, limits: Limits) -> io::Result<()> {
    let all: Vec<Snapshot> = list_dir(dir)?;
    let mut total: u64 = all.iter().map(|s| s.size).sum();
    let mut left = all.len();
    for old in &all[..all.len().saturating_sub(1)] {
        if left <= limits.count && total <= limits.bytes {
            break;
        }
        durable::remove_if_present(&old.path)?;
        total -= old.size;
        left -= 1;
    }
    Ok(())
}
