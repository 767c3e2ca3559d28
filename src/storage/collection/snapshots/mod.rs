//! Server-side snapshots of a user's collection, so a wrong full sync can be
//! undone: `SYNC_BASE/<user>/snapshots/<id>.anki2.zst`, where the id is the
//! time it was taken in milliseconds.
//!
//! A snapshot is taken when a full upload or a restore replaces the
//! collection (a hard link made before the new file is renamed in: instant,
//! no copy on the SD card; compressed afterwards, off the request path), and
//! by `leitner snapshot take` (a consistent copy read beside the server).
//! A crash before compressing leaves a raw `<id>.anki2`, which start-up
//! compresses.
//!
//! Each file starts with a zstd *skippable frame* holding what the snapshot
//! is (its kind, the collection's modification time, note and card counts),
//! so listing reads a few bytes per file, and any zstd tool still
//! decompresses it to the plain collection.
//!
//! Rotation suits an SD card: nothing is written when the collection has not
//! changed since the newest snapshot, and the oldest go first once a user has
//! more than [`Limits::count`] snapshots or more than [`Limits::bytes`].

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod packed;
mod upkeep;

pub(crate) use upkeep::{make_room, repair};

use packed::{describe, read_info, write_packed};
use upkeep::{prune, remove_oldest};

use super::StoreError;
use crate::ground::durable;

pub(crate) const DIR_NAME: &str = "snapshots";
const RAW_EXT: &str = "anki2";
const PACKED_EXT: &str = "anki2.zst";

/// How many snapshots a user keeps, and how many bytes they may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) count: usize,
    pub(crate) bytes: u64,
}

/// Why a snapshot exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// The collection a full upload replaced.
    Upload,
    /// Taken by `leitner snapshot take` (the daily timer, or by hand).
    Taken,
    /// The collection a `leitner snapshot restore` replaced.
    Restore,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Upload => "upload",
            Kind::Taken => "taken",
            Kind::Restore => "restore",
        }
    }
}

/// What a snapshot holds, stored in its first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Info {
    pub(crate) kind: Kind,
    /// `col.mod` of the collection it holds: equal means unchanged.
    pub(crate) modified: i64,
    pub(crate) notes: i64,
    pub(crate) cards: i64,
    pub(crate) reviews: i64,
    /// The size of the collection file it holds.
    pub(crate) bytes: u64,
}

/// One snapshot on disk.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// Milliseconds since 1970 when it was taken; also its name.
    pub(crate) id: i64,
    pub(crate) path: PathBuf,
    /// Bytes on disk.
    pub(crate) size: u64,
    /// Still uncompressed (a crash or a full disk came between).
    pub(crate) raw: bool,
    /// `None` for raw snapshots and for those written before leitner kept it.
    pub(crate) info: Option<Info>,
}

/// Keeps the live collection in the snapshot folder before it is replaced:
/// a hard link, or a copy on file systems without them (FAT, some network
/// shares). When even the copy finds no room, the replacement goes ahead
/// without a snapshot (`None`) and says so: a full disk must not stop syncs.
/// Blocking.
pub(crate) fn keep(account_dir: &Path, live: &Path) -> io::Result<Option<PathBuf>> {
    let dir = account_dir.join(DIR_NAME);
    fs::create_dir_all(&dir)?;
    let raw = dir.join(format!("{}.{RAW_EXT}", fresh_id(&dir)));
    if let Err(e) = fs::hard_link(live, &raw) {
        log::warn!(
            "{}: no hard links here ({e}); copying the collection for its snapshot",
            dir.display()
        );
        let temp = durable::temp_path(&dir, "keep");
        let copied = fs::copy(live, &temp)
            .and_then(|_| File::open(&temp)?.sync_all())
            .and_then(|_| fs::rename(&temp, &raw));
        if let Err(e) = copied {
            let _ = durable::remove_if_present(&temp);
            if durable::is_disk_full(&e) {
                log::warn!(
                    "{}: no room for a snapshot; replacing without one",
                    dir.display()
                );
                return Ok(None);
            }
            return Err(e);
        }
    }
    durable::sync_dir(&dir)?;
    Ok(Some(raw))
}

/// An id not yet taken in `dir`: now, or just after.
fn fresh_id(dir: &Path) -> i64 {
    let mut id = crate::ground::clock::now_millis();
    while dir.join(format!("{id}.{RAW_EXT}")).exists()
        || dir.join(format!("{id}.{PACKED_EXT}")).exists()
    {
        id += 1;
    }
    id
}

/// Compresses a raw snapshot into its packed form and removes the raw one;
/// a raw snapshot of the same collection as the newest packed one is only
/// removed. Then prunes to `limits`. Blocking.
pub(crate) fn pack(raw: &Path, kind: Kind, limits: Limits) -> Result<(), StoreError> {
    let dir = raw.parent().expect("snapshot has a folder");
    let info = describe(raw, kind)?;
    let newest = list(dir.parent().expect("account folder"))?
        .into_iter()
        .rev()
        .find(|s| !s.raw);
    let unchanged = newest
        .and_then(|s| s.info)
        .is_some_and(|newest| newest.modified == info.modified);
    if !unchanged {
        let packed = raw.with_extension(PACKED_EXT);
        match write_packed(raw, &packed, &info) {
            Err(e) if durable::is_disk_full(&e) && remove_oldest(dir, Some(raw))? => {
                write_packed(raw, &packed, &info)?
            }
            other => other?,
        }
    }
    durable::remove_if_present(raw)?;
    prune(dir, limits)?;
    Ok(())
}

/// What `take` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    New(i64),
    /// The collection is the same as in the newest snapshot.
    Unchanged,
    /// The user has no collection yet.
    NoCollection,
}

/// Takes a snapshot of the live collection if it changed since the newest
/// one: a consistent copy (`VACUUM INTO`, a read transaction beside whatever
/// the server is doing), compressed, then pruned to `limits`. Blocking.
pub(crate) fn take(account_dir: &Path, limits: Limits) -> Result<Taken, StoreError> {
    let live = account_dir.join(super::FILE_NAME);
    if !live.exists() {
        return Ok(Taken::NoCollection);
    }
    let conn = super::open(&live)?;
    let modified: i64 = conn.query_row("SELECT mod FROM col", [], |r| r.get(0))?;
    let newest = list(account_dir)?.into_iter().rev().find(|s| !s.raw);
    if newest
        .and_then(|s| s.info)
        .is_some_and(|s| s.modified == modified)
    {
        return Ok(Taken::Unchanged);
    }
    let dir = account_dir.join(DIR_NAME);
    fs::create_dir_all(&dir)?;
    let copy = durable::temp_path(&dir, "copy");
    let result = (|| -> Result<i64, StoreError> {
        conn.execute("VACUUM INTO ?", [copy.to_string_lossy()])?;
        let info = describe(&copy, Kind::Taken)?;
        let id = fresh_id(&dir);
        write_packed(&copy, &dir.join(format!("{id}.{PACKED_EXT}")), &info)?;
        Ok(id)
    })();
    drop(conn);
    let _ = durable::remove_if_present(&copy);
    let id = result?;
    prune(&dir, limits)?;
    Ok(Taken::New(id))
}

/// Decompresses snapshot `id` into `out` (a file the caller then validates
/// and installs). Blocking.
pub(crate) fn unpack(account_dir: &Path, id: i64, out: impl Write) -> Result<(), SnapshotError> {
    let snapshot = list(account_dir)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(SnapshotError::NotFound(id))?;
    let mut out = out;
    let file = BufReader::new(File::open(&snapshot.path)?);
    if snapshot.raw {
        io::copy(&mut { file }, &mut out)?;
    } else {
        // The decoder passes over the skippable info frame by itself.
        zstd::stream::copy_decode(file, &mut out)?;
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) enum SnapshotError {
    NotFound(i64),
    Store(StoreError),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::NotFound(id) => write!(f, "there is no snapshot {id}"),
            SnapshotError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl<E: Into<StoreError>> From<E> for SnapshotError {
    fn from(e: E) -> Self {
        SnapshotError::Store(e.into())
    }
}

/// Every snapshot of the user in `account_dir`, oldest first.
pub(crate) fn list(account_dir: &Path) -> io::Result<Vec<Snapshot>> {
    let dir = account_dir.join(DIR_NAME);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    list_dir(&dir)
}

fn list_dir(dir: &Path) -> io::Result<Vec<Snapshot>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, raw) = if let Some(stem) = name.strip_suffix(&format!(".{PACKED_EXT}")) {
            (stem, false)
        } else if let Some(stem) = name.strip_suffix(&format!(".{RAW_EXT}")) {
            (stem, true)
        } else {
            continue;
        };
        let Ok(id) = stem.parse::<i64>() else {
            continue;
        };
        let path = entry.path();
        // Gone since the listing (pruned by another process): skip it.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let info = if raw { None } else { read_info(&path)? };
        found.push(Snapshot {
            id,
            path,
            size: meta.len(),
            raw,
            info,
        });
    }
    // Between packing a snapshot and removing its raw form, both exist for
    // a moment (or until the next start, after a crash): one snapshot, the
    // packed form, or a concurrent prune would count it twice.
    found.sort_by_key(|s| (s.id, s.raw));
    found.dedup_by_key(|s| s.id);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        count: 5,
        bytes: u64::MAX,
    };

    /// A real collection in `dir` whose `col.mod` is `modified`.
    fn collection(dir: &Path, modified: i64) -> PathBuf {
        let conn = super::super::open_or_create(dir).unwrap();
        conn.execute("UPDATE col SET mod = ?", [modified]).unwrap();
        super::super::checkpoint(&conn).unwrap();
        drop(conn);
        dir.join(super::super::FILE_NAME)
    }

    fn replace(dir: &Path, modified: i64) -> PathBuf {
        let live = dir.join(super::super::FILE_NAME);
        let raw = keep(dir, &live).unwrap().unwrap();
        fs::remove_file(&live).unwrap(); // a new file replaces the live one
        let _ = fs::remove_file(dir.join("collection.anki2-wal"));
        collection(dir, modified);
        raw
    }

    #[test]
    fn snapshots_are_packed_with_their_info_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        collection(dir.path(), 100);
        for i in 1..=7 {
            let raw = replace(dir.path(), 100 + i);
            pack(&raw, Kind::Upload, LIMITS).unwrap();
        }
        let kept = list(dir.path()).unwrap();
        assert_eq!(kept.len(), 5);
        let newest = kept.last().unwrap();
        let info = newest.info.clone().unwrap();
        assert_eq!((info.kind, info.modified), (Kind::Upload, 106));
        // Plain zstd tools (and our decoder) read it as the collection.
        let mut out = Vec::new();
        unpack(dir.path(), newest.id, &mut out).unwrap();
        assert_eq!(&out[..16], b"SQLite format 3\0");
        assert_eq!(out.len() as u64, info.bytes);
        assert!(matches!(
            unpack(dir.path(), 1, Vec::new()),
            Err(SnapshotError::NotFound(1))
        ));
    }

    #[test]
    fn take_writes_only_when_something_changed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take(dir.path(), LIMITS).unwrap(), Taken::NoCollection);
        collection(dir.path(), 5);
        let Taken::New(first) = take(dir.path(), LIMITS).unwrap() else {
            panic!("no snapshot")
        };
        assert_eq!(take(dir.path(), LIMITS).unwrap(), Taken::Unchanged);
        let conn = super::super::open(&dir.path().join(super::super::FILE_NAME)).unwrap();
        conn.execute("UPDATE col SET mod = 6", []).unwrap();
        // Taken beside an open connection, as beside a running server.
        assert!(matches!(take(dir.path(), LIMITS).unwrap(), Taken::New(id) if id > first));
        // An upload replacing the same state adds nothing either.
        drop(conn);
        let raw = replace(dir.path(), 7);
        pack(&raw, Kind::Upload, LIMITS).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        let names: Vec<_> = fs::read_dir(dir.path().join(DIR_NAME)).unwrap().collect();
        assert_eq!(names.len(), 2, "no temps or raw files left");
    }

    #[test]
    fn pruning_keeps_count_and_bytes_and_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join(DIR_NAME);
        fs::create_dir_all(&snaps).unwrap();
        for id in 1..=4 {
            fs::write(snaps.join(format!("{id}.{PACKED_EXT}")), vec![0; 100]).unwrap();
        }
        prune(
            &snaps,
            Limits {
                count: 3,
                bytes: 250,
            },
        )
        .unwrap();
        let ids: Vec<i64> = list(dir.path()).unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, [3, 4]);
        prune(&snaps, Limits { count: 0, bytes: 0 }).unwrap();
        let ids: Vec<i64> = list(dir.path()).unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, [4]);
    }

    #[test]
    fn repair_packs_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        collection(dir.path(), 1);
        let raw = replace(dir.path(), 2);
        fs::write(durable::temp_path(raw.parent().unwrap(), "snapshot"), b"x").unwrap();
        repair(dir.path(), LIMITS);
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].raw);
        assert_eq!(fs::read_dir(dir.path().join(DIR_NAME)).unwrap().count(), 1);
    }

    #[test]
    fn a_snapshot_caught_between_packed_and_raw_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join(DIR_NAME);
        fs::create_dir_all(&snaps).unwrap();
        for id in 1..=5 {
            fs::write(snaps.join(format!("{id}.{PACKED_EXT}")), vec![0; 100]).unwrap();
        }
        // Packed, its raw form not yet removed (another job, or a crash).
        fs::write(snaps.join(format!("5.{RAW_EXT}")), vec![0; 100]).unwrap();
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|s| !s.raw));
        prune(&snaps, LIMITS).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 5, "nothing pruned");
        repair(dir.path(), LIMITS);
        assert!(!snaps.join(format!("5.{RAW_EXT}")).exists());
        assert_eq!(fs::read_dir(&snaps).unwrap().count(), 5);
    }
}
