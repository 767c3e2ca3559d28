//! The backup archive: one zstd-compressed tar file holding, for every user,
//! a consistent copy of their collection (`NAME/collection.anki2`), of their
//! media database (`NAME/media.db`) and their media files
//! (`NAME/media/FILE`), plus the users store (`leitner-users.json`) and a
//! manifest (`leitner-backup.json`, first). Snapshots are not included: they
//! are backups themselves, and would multiply the size.
//!
//! Writing never holds an archive in memory; reading checks every path
//! (one user folder deep, names a user and a media file may have) before
//! anything is written.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ground::durable;

pub(crate) const MANIFEST: &str = "leitner-backup.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    /// The leitner version that wrote it.
    pub(crate) version: String,
    /// Milliseconds since 1970.
    pub(crate) created: i64,
    pub(crate) users: Vec<String>,
}

/// An archive being written to a temp file beside its destination; it
/// appears under its name only when [`Writer::finish`] succeeds.
pub(crate) struct Writer {
    tar: Option<tar::Builder<zstd::stream::write::Encoder<'static, BufWriter<File>>>>,
    temp: PathBuf,
    dest: PathBuf,
    finished: bool,
    /// Bytes of content added so far, for progress lines.
    pub(crate) added: u64,
}

impl Writer {
    pub(crate) fn create(dest: &Path, manifest: &Manifest) -> io::Result<Writer> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let temp = durable::temp_path(dir, "backup");
        let file = durable::create_private(&temp)?;
        let encoder =
            zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)?;
        let mut writer = Writer {
            tar: Some(tar::Builder::new(encoder)),
            temp,
            dest: dest.to_owned(),
            finished: false,
            added: 0,
        };
        let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        writer.add(MANIFEST, json.len() as u64, &mut &json[..])?;
        Ok(writer)
    }

    /// Adds `len` bytes from `from` as `name` (a relative path with `/`).
    pub(crate) fn add(&mut self, name: &str, len: u64, from: &mut impl Read) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_mtime((crate::ground::clock::now_millis() / 1000).max(0) as u64);
        header.set_entry_type(tar::EntryType::Regular);
        // A file that shrank meanwhile must not leave the archive short.
        let mut exact = from.take(len).chain(io::repeat(0).take(len));
        self.tar.as_mut().expect("not finished").append_data(
            &mut header,
            name,
            (&mut exact).take(len),
        )?;
        self.added += len;
        Ok(())
    }

    /// Adds a file from disk.
    pub(crate) fn add_file(&mut self, name: &str, path: &Path) -> io::Result<()> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        self.add(name, len, &mut file)
    }

    /// Completes the archive: flushed, fsynced, renamed into place.
    pub(crate) fn finish(mut self) -> io::Result<PathBuf> {
        let tar = self.tar.take().expect("finished once");
        let encoder = tar.into_inner()?;
        let file = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        durable::commit_rename(&self.temp, &self.dest)?;
        self.finished = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Unfinished (an error on the way): no half-written archive stays.
        if !self.finished {
            let _ = durable::remove_if_present(&self.temp);
        }
    }
}

/// Why an archive cannot be restored.
#[derive(Debug)]
pub(crate) enum BackupError {
    Io(io::Error),
    /// Not an archive this leitner wrote, or damaged.
    Invalid(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Io(e) => e.fmt(f),
            BackupError::Invalid(why) => write!(f, "not a usable leitner backup: {why}"),
        }
    }
}

impl std::error::Error for BackupError {}

impl From<io::Error> for BackupError {
    fn from(e: io::Error) -> Self {
        BackupError::Io(e)
    }
}

fn invalid(why: impl Into<String>) -> BackupError {
    BackupError::Invalid(why.into())
}

/// Where an entry of the archive goes under the target folder, if it is one
/// a backup may hold.
fn place(path: &Path) -> Result<PathBuf, BackupError> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .ok_or_else(|| invalid("a name that is not UTF-8"))?
                    .to_owned(),
            ),
            _ => {
                return Err(invalid(format!(
                    "entry {} leaves its folder",
                    path.display()
                )))
            }
        }
    }
    let user = |name: &str| {
        crate::storage::data_dir::check_username(name)
            .map_err(|why| invalid(format!("user folder '{name}': {why}")))
    };
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [crate::storage::data_dir::USERS_FILE] | [MANIFEST] => {}
        [name, crate::storage::collection::FILE_NAME | crate::storage::media::store::DB_NAME] => {
            user(name)?
        }
        [name, crate::storage::media::store::FOLDER, file] => {
            user(name)?;
            crate::storage::media::names::check(file)
                .map_err(|why| invalid(format!("media file {file:?}: {why}")))?;
        }
        _ => return Err(invalid(format!("unexpected entry {}", path.display()))),
    }
    Ok(parts.iter().collect())
}

/// Unpacks `archive` into `into` (an empty folder), checking every entry's
/// place first. Files are written, not yet flushed: the caller flushes the
/// file system once. Returns the manifest. Blocking.
pub(crate) fn extract(
    archive: File,
    into: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Manifest, BackupError> {
    let decoder =
        zstd::stream::read::Decoder::new(archive).map_err(|e| invalid(format!("not zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut manifest = None;
    let mut done = 0u64;
    for entry in tar.entries().map_err(|e| invalid(e.to_string()))? {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid("an entry that is not a plain file"));
        }
        let path = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .into_owned();
        let relative = place(&path)?;
        if relative == Path::new(MANIFEST) {
            let mut json = Vec::new();
            (&mut entry).take(1 << 20).read_to_end(&mut json)?;
            let read: Manifest =
                serde_json::from_slice(&json).map_err(|e| invalid(format!("manifest: {e}")))?;
            if read.format != FORMAT {
                return Err(invalid(format!(
                    "format {} (this leitner reads {FORMAT})",
                    read.format
                )));
            }
            manifest = Some(read);
            continue;
        }
        if manifest.is_none() {
            return Err(invalid("no manifest at the start"));
        }
        let target = into.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = durable::create_private(&target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                invalid(format!("{} appears twice", path.display()))
            } else {
                e.into()
            }
        })?;
        done += io::copy(&mut entry, &mut out)?;
        out.flush()?;
        progress(done);
    }
    manifest.ok_or_else(|| invalid("empty archive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            version: "test".into(),
            created: 1,
            users: vec!["alice".into()],
        }
    }

    #[test]
    fn an_archive_round_trips_and_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b.tar.zst");
        let mut writer = Writer::create(&dest, &manifest()).unwrap();
        writer
            .add("alice/collection.anki2", 3, &mut &b"col"[..])
            .unwrap();
        let long = format!("alice/media/{}.jpg", "é".repeat(100));
        writer.add(&long, 2, &mut &b"jp"[..]).unwrap();
        // A source that comes up short is padded, not a broken archive.
        writer.add("alice/media.db", 5, &mut &b"db"[..]).unwrap();
        assert!(!dest.exists());
        writer.finish().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let read = extract(File::open(&dest).unwrap(), &out, |_| {}).unwrap();
        assert_eq!(read.users, ["alice"]);
        assert_eq!(
            std::fs::read(out.join("alice/collection.anki2")).unwrap(),
            b"col"
        );
        assert_eq!(std::fs::read(out.join(&long)).unwrap(), b"jp");
        assert_eq!(
            std::fs::read(out.join("alice/media.db")).unwrap(),
            b"db\0\0\0"
        );
        // Only the archive is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn entries_outside_their_places_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "alice/../../x",
            "alice/media/a/b",
            "alice/other",
            "leitner.lock",
            "alice/media/..",
            "a/b/c/d",
        ] {
            assert!(place(Path::new(bad)).is_err(), "{bad}");
        }
        for good in [
            "leitner-users.json",
            "alice/collection.anki2",
            "alice/media/x.jpg",
        ] {
            assert!(place(Path::new(good)).is_ok(), "{good}");
        }
    }
}
