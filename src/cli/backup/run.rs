//! One backup of the data folder into a repository, while the server runs.
//!
//! Each user is read under a hold (see `control`): the collection with
//! everything held for as long as its file takes to read (its log folded in
//! first, so the file alone is the collection), then the media database and
//! the new media files with only media sync held. Nothing is copied on the
//! card on the way. Media files whose name, size and checksum an earlier
//! backup has are named again without being read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};

use sha1::{Digest, Sha1};

use crate::service::config::Config;
use crate::service::control::{Coordinator, Scope};
use crate::storage::backup::record::{self, Keep, MediaEntry, Record, UserRecord};
use crate::storage::backup::repository::Stats;
use crate::storage::backup::{BackupError, Repository};
use crate::storage::{collection, data_dir, media};

/// What a backup did.
pub(crate) struct Report {
    pub(crate) record: String,
    pub(crate) users: usize,
    pub(crate) encrypted: bool,
    /// Bytes of data the backup holds.
    pub(crate) size: u64,
    pub(crate) stats: Stats,
    pub(crate) pruned_records: usize,
    pub(crate) pruned_chunks: usize,
    /// Things the owner should know that did not stop the backup.
    pub(crate) warnings: Vec<String>,
}

/// A failed step: what was being done, and why it failed.
pub(crate) struct Failure {
    pub(crate) doing: String,
    pub(crate) error: BackupError,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.doing, self.error)
    }
}

fn at<T>(doing: impl Into<String>, result: Result<T, BackupError>) -> Result<T, Failure> {
    result.map_err(|error| Failure {
        doing: doing.into(),
        error,
    })
}

pub(crate) fn run(
    config: &Config,
    coordinator: &Coordinator,
    users: &[String],
    repo: &mut Repository,
    keep: Keep,
) -> Result<Report, Failure> {
    let host = host_name();
    at("taking the repository", repo.lock(&host))?;
    let (newest, complaints) = at("reading the earlier backups", repo.index())?;
    let mut warnings: Vec<String> = complaints
        .into_iter()
        .map(|c| format!("an earlier backup does not read: {c}"))
        .collect();
    let mut earlier: HashMap<String, Vec<MediaEntry>> = newest
        .map(|r| r.users.into_iter().map(|u| (u.name, u.media)).collect())
        .unwrap_or_default();

    let mut store_file = |path: &std::path::Path, what: &str| match File::open(path) {
        Ok(mut file) => Ok(Some(at(what, repo.store(&mut file))?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => at(what, Err(BackupError::Source(e))),
    };
    let users_file = store_file(
        &crate::storage::users::path(&config.base),
        "the users store",
    )?;
    let devices_file = store_file(
        &crate::storage::devices::path(&config.base),
        "the devices store",
    )?;
    let mut record = Record {
        format: record::FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        data_format: data_dir::FORMAT,
        created: crate::ground::clock::now_millis(),
        host,
        users_file,
        devices_file,
        users: Vec::new(),
    };
    for name in users {
        let earlier = earlier.remove(name).unwrap_or_default();
        let user = back_up_user(config, coordinator, name, earlier, repo, &mut warnings)?;
        record.users.push(user);
    }
    at("checking what was written", repo.flush_and_check())?;
    let written = at("writing the backup's record", repo.write_record(&record))?;
    let (pruned_records, pruned_chunks) = at("removing old backups", repo.prune(keep))?;
    at("letting go of the repository", repo.unlock())?;
    Ok(Report {
        record: written,
        users: record.users.len(),
        encrypted: repo.encrypted(),
        size: record.size(),
        stats: repo.stats,
        pruned_records,
        pruned_chunks,
        warnings,
    })
}

fn back_up_user(
    config: &Config,
    coordinator: &Coordinator,
    name: &str,
    earlier: Vec<MediaEntry>,
    repo: &mut Repository,
    warnings: &mut Vec<String>,
) -> Result<UserRecord, Failure> {
    let dir = data_dir::user_dir(&config.base, name);
    let hold = |scope| {
        coordinator.hold(name, scope).map_err(|e| Failure {
            doing: format!("asking the server to hold {name}'s files"),
            error: BackupError::Source(e),
        })
    };
    let mut user = UserRecord {
        name: name.to_owned(),
        collection: None,
        media_db: None,
        media: Vec::new(),
    };
    let live = dir.join(collection::FILE_NAME);
    if live.exists() {
        let doing = format!("{name}'s collection");
        let _hold = hold(Scope::All)?;
        let conn = collection::open(&live)
            .and_then(|conn| collection::checkpoint(&conn).map(|()| conn))
            .map_err(|e| Failure {
                doing: doing.clone(),
                error: BackupError::Source(io::Error::other(e)),
            })?;
        let mut file = File::open(&live).map_err(|e| Failure {
            doing: doing.clone(),
            error: BackupError::Source(e),
        })?;
        user.collection = Some(at(doing, repo.store(&mut file))?);
        drop(conn);
    }
    if media::Store::exists(&dir) {
        let doing = format!("{name}'s media");
        let _hold = hold(Scope::Media)?;
        let source = |e: &dyn std::fmt::Display| Failure {
            doing: doing.clone(),
            error: BackupError::Source(io::Error::other(e.to_string())),
        };
        // Opening finishes what a crash may have left owed.
        let store = media::Store::open(&dir).map_err(|e| source(&e))?;
        store.checkpoint().map_err(|e| source(&e))?;
        let files = store.live_files().map_err(|e| source(&e))?;
        let mut db = File::open(dir.join(media::store::DB_NAME)).map_err(|e| source(&e))?;
        user.media_db = Some(at(doing.clone(), repo.store(&mut db))?);
        let mut earlier: HashMap<String, MediaEntry> =
            earlier.into_iter().map(|m| (m.name.clone(), m)).collect();
        let folder = dir.join(media::store::FOLDER);
        for (file_name, sha1, size) in files {
            let sha1 = crate::storage::backup::seal::hex(&sha1);
            if let Some(old) = earlier.remove(&file_name) {
                if old.sha1 == sha1 && old.stored.size == size && repo.reuse(&old.stored) {
                    user.media.push(old);
                    continue;
                }
            }
            let file = match File::open(folder.join(&file_name)) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    warnings.push(format!(
                        "{name}: media file {file_name:?} is missing on the card; left out \
                         (`leitner check` tells more)"
                    ));
                    continue;
                }
                Err(e) => return Err(source(&format!("{file_name:?}: {e}"))),
            };
            let mut reader = Sha1Reader {
                inner: file,
                sum: Sha1::new(),
            };
            let stored = at(doing.clone(), repo.store(&mut reader))?;
            let read = crate::storage::backup::seal::hex(&reader.sum.finalize());
            if read != sha1 || stored.size != size {
                warnings.push(format!(
                    "{name}: media file {file_name:?} on the card is not what the media \
                     database says (changed on the card?); backed up as it is"
                ));
            }
            user.media.push(MediaEntry {
                name: file_name,
                sha1: read,
                stored,
            });
        }
    }
    Ok(user)
}

/// Reads through, hashing what passes.
struct Sha1Reader<R> {
    inner: R,
    sum: Sha1,
}

impl<R: Read> Read for Sha1Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

/// This machine's name, for the lock and the record.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
