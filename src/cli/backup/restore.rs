//! `leitner restore-backup`: a backup put back into the data folder, from a
//! repository (see `storage::backup`) or from an archive of leitner 0.2.
//!
//! Everything is unpacked into a staging folder beside the users and
//! checked (every collection opened and checked, every media database
//! opened) before anything moves in; the moves are renames, the users store
//! last.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use super::super::{human_bytes, Error};
use crate::ground::durable;
use crate::service::config::Config;
use crate::storage::backup::record::Record;
use crate::storage::backup::{archive, BackupError, Repository};
use crate::storage::{collection, data_dir, media};

/// What was restored, for the closing line.
pub(super) struct Restored {
    pub(super) users: Vec<String>,
    pub(super) created: i64,
    pub(super) version: String,
}

/// Where a restore comes from.
pub(super) enum Source<'a> {
    Archive(&'a Path, File),
    /// A repository, and the record to restore.
    Repository(&'a mut Repository, &'a str),
}

/// Restores `source` into the data folder; `present` are the users there
/// (moved aside first; the caller has checked that this is allowed).
pub(super) fn restore(
    config: &Config,
    source: Source,
    present: &[String],
) -> Result<Restored, Error> {
    let staging = config.base.join(format!(
        "leitner-restoring-{}",
        crate::ground::clock::now_millis()
    ));
    std::fs::create_dir(&staging)
        .map_err(|e| Error::failed(format!("{}: {e}", staging.display())))?;
    let result = unpack(source, &staging)
        .and_then(|restored| check(&staging, &restored).map(|()| restored))
        .and_then(|restored| {
            move_in(config, &staging, present, &restored.users)?;
            Ok(restored)
        });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn unpack(source: Source, staging: &Path) -> Result<Restored, Error> {
    let mut progress = Progress::new();
    match source {
        Source::Archive(path, file) => {
            let manifest = archive::extract(file, staging, |done| progress.tick(done))
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
            Ok(Restored {
                users: manifest.users,
                created: manifest.created,
                version: manifest.version,
            })
        }
        Source::Repository(repo, name) => {
            let failed = |what: &str, e: BackupError| Error::failed(format!("{what}: {e}"));
            let record = repo
                .read_record(name)
                .map_err(|e| failed(&format!("the backup {name}"), e))?;
            unpack_record(repo, &record, staging, &mut progress)
                .map_err(|(what, e)| failed(&what, e))?;
            Ok(Restored {
                users: record.users.iter().map(|u| u.name.clone()).collect(),
                created: record.created,
                version: record.version,
            })
        }
    }
}

/// Writes every file of `record` into `staging`, each name checked first.
fn unpack_record(
    repo: &mut Repository,
    record: &Record,
    staging: &Path,
    progress: &mut Progress,
) -> Result<(), (String, BackupError)> {
    let mut done = 0u64;
    let mut put = |path: &Path, stored: &crate::storage::backup::record::Stored, what: &str| {
        let fail = |e: BackupError| (what.to_owned(), e);
        let mut file = durable::create_private(path).map_err(|e| fail(BackupError::Source(e)))?;
        repo.restore_file(stored, &mut file).map_err(fail)?;
        done += stored.size;
        progress.tick(done);
        Ok(())
    };
    if let Some(users) = &record.users_file {
        put(
            &staging.join(data_dir::USERS_FILE),
            users,
            "the users store",
        )?;
    }
    if let Some(devices) = &record.devices_file {
        put(
            &staging.join(data_dir::DEVICES_FILE),
            devices,
            "the devices store",
        )?;
    }
    for user in &record.users {
        let name = &user.name;
        let invalid = |why: String| (format!("{name}'s files"), BackupError::Invalid(why));
        data_dir::check_username(name).map_err(|why| invalid(format!("user '{name}': {why}")))?;
        let dir = staging.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| (dir.display().to_string(), BackupError::Source(e)))?;
        if let Some(stored) = &user.collection {
            put(
                &dir.join(collection::FILE_NAME),
                stored,
                &format!("{name}'s collection"),
            )?;
        }
        if let Some(stored) = &user.media_db {
            put(
                &dir.join(media::store::DB_NAME),
                stored,
                &format!("{name}'s media database"),
            )?;
        }
        if !user.media.is_empty() {
            let folder = dir.join(media::store::FOLDER);
            std::fs::create_dir(&folder)
                .map_err(|e| (folder.display().to_string(), BackupError::Source(e)))?;
            for entry in &user.media {
                media::names::check(&entry.name)
                    .map_err(|why| invalid(format!("media file {:?}: {why}", entry.name)))?;
                put(
                    &folder.join(&entry.name),
                    &entry.stored,
                    &format!("{name}'s media file {:?}", entry.name),
                )?;
            }
        }
    }
    Ok(())
}

/// Opens and checks what was unpacked, then flushes it to the card.
fn check(staging: &Path, restored: &Restored) -> Result<(), Error> {
    for name in &restored.users {
        let dir = staging.join(name);
        let col = dir.join(collection::FILE_NAME);
        if col.exists() {
            collection::upload::validate(&col).map_err(|why| {
                Error::failed(format!("{name}'s collection in the backup: {why}"))
            })?;
        }
        if media::Store::exists(&dir) {
            media::Store::open(&dir)
                .map_err(|e| Error::failed(format!("{name}'s media in the backup: {e}")))?;
        }
    }
    // Everything written reaches the card before anything moves in.
    durable::sync_filesystem(staging).map_err(|e| Error::failed(e.to_string()))
}

/// A progress line every few seconds, once a run takes long enough to want one.
struct Progress {
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            last: Instant::now(),
        }
    }

    fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_secs(3) {
            self.last = Instant::now();
            eprintln!("restore-backup: {} unpacked", human_bytes(done));
        }
    }
}

/// Users with something in the data folder: in the users store, or a
/// folder of their own.
pub(super) fn present_users(config: &Config) -> Result<Vec<String>, Error> {
    let mut present: Vec<String> = super::super::all_users(config)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| config.users.iter().all(|u| &u.name != n))
        .collect();
    let entries = std::fs::read_dir(&config.base)
        .map_err(|e| Error::failed(format!("{}: {e}", config.base.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !data_dir::is_reserved(&name) && !present.contains(&name) {
            present.push(name);
        }
    }
    present.sort();
    Ok(present)
}

/// The first user whose folder holds a collection or a media database.
pub(super) fn user_with_data(config: &Config) -> Result<Option<String>, Error> {
    for name in present_users(config)? {
        let dir = data_dir::user_dir(&config.base, &name);
        if dir.join(collection::FILE_NAME).exists() || media::Store::exists(&dir) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Puts back the users in `kept` that the restored store lacks.
pub(super) fn keep_users(
    config: &Config,
    kept: Vec<crate::storage::users::StoredUser>,
) -> Result<(), Error> {
    if kept.is_empty() {
        return Ok(());
    }
    crate::storage::users::edit(&config.base, |users| {
        for user in kept {
            if users.iter().all(|u| u.name != user.name) {
                users.push(user);
            }
        }
        Ok(())
    })
    .map_err(|e| Error::failed(e.to_string()))
}

/// Moves present users aside, then the restored ones in (each a rename in
/// one file system), the users store last.
fn move_in(
    config: &Config,
    staging: &Path,
    present: &[String],
    users: &[String],
) -> Result<(), Error> {
    let base = &config.base;
    let io = |what: &Path, e: std::io::Error| Error::failed(format!("{}: {e}", what.display()));
    // Which devices may sync is a fact of now, not of the backup's day: a
    // store here that reads stays, so a phone revoked since the backup stays
    // out and one that logged in since stays in (a store from another
    // password shows its devices as retired). Without one, the backup's.
    let keep_devices = match crate::storage::devices::load(base) {
        Ok(_) => base.join(data_dir::DEVICES_FILE).exists(),
        Err(e) => {
            eprintln!("leitner: {e}; the backup's devices store is used instead");
            false
        }
    };
    if keep_devices {
        println!("kept the devices store as it is: logins and revocations since the backup stand");
    }
    if !present.is_empty() {
        let aside = base.join(format!(
            "leitner-replaced-{}",
            crate::ground::clock::now_millis()
        ));
        std::fs::create_dir(&aside).map_err(|e| io(&aside, e))?;
        for name in present.iter().map(String::as_str).chain([
            data_dir::USERS_FILE,
            data_dir::DEVICES_FILE,
            data_dir::SEEN_FILE,
        ]) {
            if keep_devices && name == data_dir::DEVICES_FILE {
                continue;
            }
            let from = base.join(name);
            if from.exists() {
                std::fs::rename(&from, aside.join(name)).map_err(|e| io(&from, e))?;
            }
        }
        println!(
            "moved the users that were there aside into {}",
            aside.display()
        );
    }
    for name in users {
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, base.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    for name in [data_dir::USERS_FILE, data_dir::DEVICES_FILE] {
        if keep_devices && name == data_dir::DEVICES_FILE {
            continue;
        }
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, base.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    durable::sync_dir(base).map_err(|e| io(base, e))
}
