//! The single-file backup archive that `leitner backup` wrote up to 0.2,
//! still restored: one zstd-compressed tar file holding, for every user, a
//! copy of their collection (`NAME/collection.anki2`), media database
//! (`NAME/media.db`) and media files (`NAME/media/FILE`), plus the users
//! store (`leitner-users.json`) and a manifest (`leitner-backup.json`,
//! first).
//!
//! Reading checks every path (one user folder deep, names a user and a
//! media file may have) before anything is written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BackupError;
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
            (&mut entry)
                .take(1 << 20)
                .read_to_end(&mut json)
                .map_err(BackupError::Source)?;
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
            std::fs::create_dir_all(parent).map_err(BackupError::Source)?;
        }
        let mut out = durable::create_private(&target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                invalid(format!("{} appears twice", path.display()))
            } else {
                BackupError::Source(e)
            }
        })?;
        // The data folder's side: a failure here is not the archive's.
        done += io::copy(&mut entry, &mut out).map_err(BackupError::Source)?;
        out.flush().map_err(BackupError::Source)?;
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

    /// An archive as leitner 0.2 wrote it.
    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let json = serde_json::to_vec(&manifest()).unwrap();
        for (name, data) in [(MANIFEST, &json[..])].iter().chain(entries) {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn an_archive_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("alice/media/{}.jpg", "é".repeat(100));
        let dest = dir.path().join("b.tar.zst");
        std::fs::write(
            &dest,
            archive(&[("alice/collection.anki2", b"col"), (&long, b"jp")]),
        )
        .unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let read = extract(File::open(&dest).unwrap(), &out, |_| {}).unwrap();
        assert_eq!(read.users, ["alice"]);
        assert_eq!(
            std::fs::read(out.join("alice/collection.anki2")).unwrap(),
            b"col"
        );
        assert_eq!(std::fs::read(out.join(&long)).unwrap(), b"jp");
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
