//! Server-side snapshots: every collection replaced by a full upload is kept,
//! zstd-compressed, so a wrong full sync can be undone. Newest few per user.
//!
//! Taking a snapshot is a hard link (instant, no copy on the SD card) made
//! before the new file is renamed in; compressing it happens afterwards, off
//! the request path. A crash in between leaves an uncompressed snapshot that
//! the start-up sweep compresses.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use crate::durable;

pub const DIR_NAME: &str = "snapshots";
pub const KEEP: usize = 5;
const RAW_EXT: &str = "anki2";
const PACKED_EXT: &str = "anki2.zst";

/// Links the live collection into the snapshot folder. Blocking.
pub fn keep(account_dir: &Path, live: &Path) -> io::Result<PathBuf> {
    let dir = account_dir.join(DIR_NAME);
    fs::create_dir_all(&dir)?;
    let mut stamp = crate::clock::now_millis();
    let raw = loop {
        let candidate = dir.join(format!("{stamp}.{RAW_EXT}"));
        if !candidate.exists() && !dir.join(format!("{stamp}.{PACKED_EXT}")).exists() {
            break candidate;
        }
        stamp += 1;
    };
    fs::hard_link(live, &raw)?;
    durable::sync_dir(&dir)?;
    Ok(raw)
}

/// Compresses one raw snapshot and prunes old ones. Blocking.
pub fn pack(raw: &Path) -> io::Result<()> {
    let dir = raw.parent().expect("snapshot has a folder");
    let packed = raw.with_extension(PACKED_EXT);
    let temp = durable::temp_path(dir, "snapshot");
    let result = (|| {
        let out = durable::create_private(&temp)?;
        let mut writer = BufWriter::new(&out);
        write_zstd(BufReader::new(File::open(raw)?), &mut writer)?;
        drop(writer);
        out.sync_all()?;
        durable::commit_rename(&temp, &packed)
    })();
    if result.is_err() {
        let _ = durable::remove_if_present(&temp);
        return result;
    }
    fs::remove_file(raw)?;
    prune(dir, KEEP)
}

/// Copies `from` into `to` as one zstd stream.
fn write_zstd(mut from: impl io::Read, to: impl io::Write) -> io::Result<()> {
    let mut encoder = zstd::stream::write::Encoder::new(to, 3)?;
    io::copy(&mut from, &mut encoder)?;
    io::Write::flush(&mut encoder.finish()?)
}

/// Finishes what a crash interrupted: stray temps go, raw snapshots are
/// compressed. Blocking; run at start-up.
pub fn repair(account_dir: &Path) -> io::Result<()> {
    let dir = account_dir.join(DIR_NAME);
    if !dir.exists() {
        return Ok(());
    }
    durable::sweep_temps(&dir)?;
    for raw in list(&dir, RAW_EXT)? {
        pack(&raw)?;
    }
    prune(&dir, KEEP)
}

/// The compressed snapshots of an account, oldest first.
pub fn packed(account_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = account_dir.join(DIR_NAME);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    list(&dir, PACKED_EXT)
}

fn prune(dir: &Path, keep: usize) -> io::Result<()> {
    let all = list(dir, PACKED_EXT)?;
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        fs::remove_file(old)?;
    }
    Ok(())
}

/// Snapshot files with the given extension, sorted by their timestamp.
fn list(dir: &Path, ext: &str) -> io::Result<Vec<PathBuf>> {
    let suffix = format!(".{ext}");
    let mut found: Vec<(i64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(stamp) = name.strip_suffix(&suffix).and_then(|s| s.parse().ok()) {
            found.push((stamp, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_packed_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("collection.anki2");
        for i in 0..7u8 {
            fs::write(&live, vec![i; 1000]).unwrap();
            let raw = keep(dir.path(), &live).unwrap();
            fs::remove_file(&live).unwrap(); // a new file replaces the live one
            pack(&raw).unwrap();
        }
        let kept = packed(dir.path()).unwrap();
        assert_eq!(kept.len(), KEEP);
        // The newest snapshot holds the last collection replaced.
        let newest = zstd::decode_all(File::open(kept.last().unwrap()).unwrap()).unwrap();
        assert_eq!(newest, vec![6u8; 1000]);
    }

    #[test]
    fn repair_packs_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("collection.anki2");
        fs::write(&live, b"old").unwrap();
        let raw = keep(dir.path(), &live).unwrap();
        fs::write(durable::temp_path(raw.parent().unwrap(), "snapshot"), b"x").unwrap();
        repair(dir.path()).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path().join(DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(".anki2.zst"), "{names:?}");
    }
}
