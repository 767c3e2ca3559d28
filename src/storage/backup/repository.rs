//! A backup repository: content-named chunks shared by every backup in it,
//! and one record per backup naming the chunks of each file.
//!
//! ```text
//! leitner-backups/
//!   repository.json      format, and how a passphrase makes keys (no secret)
//!   chunks/ab/ab12...    a sealed chunk of at most 1 MiB, named by its content
//!   backups/2026-12-04T031500Z   a sealed record (JSON)
//!   lock                 while a backup or a restore runs
//! ```
//!
//! A file is cut at fixed 1 MiB offsets. SQLite changes pages in place and
//! appends new ones, so a day's reviews change a few chunks of a collection
//! and leave the rest (the notes, mostly) to be shared; media files are
//! compared by the media database's checksum and not read again at all.
//!
//! A chunk is trusted when a record names it (records are written only
//! after their chunks were flushed and read back) or when this run wrote and
//! checked it. A chunk file that is there but unclaimed (a run cut short) is
//! read and checked before it is used, and rewritten if it fails.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::record::{self, Record, Stored};
use super::seal::{hex, ChunkId, Damaged, Kdf, Keys};
use super::target::Target;
use super::BackupError;

/// The folder a repository has on a drive or a host.
pub(crate) const FOLDER: &str = "leitner-backups";
pub(crate) const CHUNK_SIZE: usize = 1 << 20;

const DESCRIPTION: &str = "repository.json";
const CHUNKS: &str = "chunks";
const RECORDS: &str = "backups";
const LOCK: &str = "lock";
const FORMAT: u32 = 1;
/// What sealing adds to a chunk at most (kind, checksum or nonce and tag),
/// with room to spare: zstd may grow a chunk it cannot shrink, but then
/// the chunk is stored as it is.
const SEAL_SLACK: u64 = 4096;
/// A record names every media file: 200 bytes each, for a million files.
const RECORD_LIMIT: usize = 256 << 20;
const CHECK_TEXT: &[u8] = b"a leitner backup repository";
/// A lock older than this is a run that died without removing it.
const LOCK_STALE_SECS: i64 = 24 * 3600;

#[derive(Serialize, Deserialize)]
struct Description {
    format: u32,
    created: i64,
    /// None: no passphrase; chunks are checksummed, not encrypted.
    encryption: Option<Kdf>,
    /// [`CHECK_TEXT`] sealed under label "check": tells a wrong passphrase
    /// at once, before anything else is read.
    check: String,
}

#[derive(Serialize, Deserialize)]
struct LockNote {
    host: String,
    boot: String,
    pid: u32,
    started: i64,
}

/// What a run read and wrote, for its report and the measurements.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    /// Bytes read from the data folder.
    pub(crate) read: u64,
    /// Bytes written to the destination (sealed).
    pub(crate) written: u64,
    pub(crate) chunks_written: u64,
    /// Bytes of files taken from an earlier backup without reading them.
    pub(crate) reused: u64,
}

pub(crate) struct Repository {
    target: Box<dyn Target>,
    keys: Keys,
    /// Chunk files listed on the destination.
    present: HashSet<ChunkId>,
    /// Chunks known good: named by a record, or written and checked now.
    known: HashSet<ChunkId>,
    /// Written by this run and not yet read back.
    unchecked: Vec<ChunkId>,
    made_dirs: HashSet<u8>,
    locked: bool,
    pub(crate) stats: Stats,
}

impl Repository {
    /// Opens the repository on `target`, or with `create` starts one there
    /// (encrypted if a passphrase is given).
    pub(crate) fn open(
        mut target: Box<dyn Target>,
        passphrase: Option<&str>,
        create: bool,
    ) -> Result<Repository, BackupError> {
        let description = match target.read(DESCRIPTION, 64 << 10) {
            Ok(json) => serde_json::from_slice::<Description>(&json)
                .map_err(|e| BackupError::Invalid(format!("{DESCRIPTION}: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                return Repository::create(target, passphrase);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BackupError::NoRepository(target.describe()))
            }
            Err(e) => return Err(BackupError::Io(e)),
        };
        if description.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "repository format {} (this leitner reads {FORMAT})",
                description.format
            )));
        }
        let keys = match (&description.encryption, passphrase) {
            (None, None) => Keys::plain(),
            (Some(kdf), Some(passphrase)) => Keys::from_passphrase(passphrase, kdf)?,
            (Some(_), None) => return Err(BackupError::NeedsPassphrase),
            (None, Some(_)) => return Err(BackupError::NotEncrypted),
        };
        let check = super::seal::unhex(&description.check)
            .ok_or_else(|| BackupError::Invalid(format!("{DESCRIPTION}: check is not hex")))?;
        match keys.open(b"check", &check, 1024) {
            Ok(text) if text == CHECK_TEXT => {}
            Err(Damaged::Checksum) if keys.encrypted() => return Err(BackupError::WrongPassphrase),
            _ => {
                return Err(BackupError::Damaged {
                    what: DESCRIPTION.into(),
                    why: Damaged::WrongContent,
                })
            }
        }
        Ok(Repository::with(target, keys))
    }

    fn create(
        mut target: Box<dyn Target>,
        passphrase: Option<&str>,
    ) -> Result<Repository, BackupError> {
        let (encryption, keys) = match passphrase {
            Some(passphrase) => {
                let kdf = Kdf::new()?;
                let keys = Keys::from_passphrase(passphrase, &kdf)?;
                (Some(kdf), keys)
            }
            None => (None, Keys::plain()),
        };
        let description = Description {
            format: FORMAT,
            created: crate::ground::clock::now_millis(),
            encryption,
            check: hex(&keys.seal(b"check", CHECK_TEXT)?),
        };
        target.make_dir(CHUNKS)?;
        target.make_dir(RECORDS)?;
        let json = serde_json::to_vec_pretty(&description).map_err(io::Error::other)?;
        target.create_new(DESCRIPTION, &json)?;
        Ok(Repository::with(target, keys))
    }

    fn with(target: Box<dyn Target>, keys: Keys) -> Repository {
        Repository {
            target,
            keys,
            present: HashSet::new(),
            known: HashSet::new(),
            unchecked: Vec::new(),
            made_dirs: HashSet::new(),
            locked: false,
            stats: Stats::default(),
        }
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.keys.encrypted()
    }

    /// Takes the repository for this run: one backup or restore at a time.
    /// A lock left by a run that died (on this machine since, or a day old)
    /// is taken over.
    pub(crate) fn lock(&mut self, host: &str) -> Result<(), BackupError> {
        let note = LockNote {
            host: host.to_owned(),
            boot: boot_id(),
            pid: std::process::id(),
            started: crate::ground::clock::now_millis() / 1000,
        };
        let json = serde_json::to_vec(&note).map_err(io::Error::other)?;
        for _ in 0..2 {
            match self.target.create_new(LOCK, &json) {
                Ok(()) => {
                    self.locked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let held = self
                        .target
                        .read(LOCK, 4096)
                        .ok()
                        .and_then(|j| serde_json::from_slice::<LockNote>(&j).ok());
                    match held {
                        Some(other) if !other.is_stale(host) => {
                            return Err(BackupError::Locked(format!(
                                "{} (process {}) since {}",
                                other.host, other.pid, other.started
                            )))
                        }
                        _ => self.target.remove(LOCK)?,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackupError::Locked("another run, just now".into()))
    }

    /// Lets go of the lock taken by [`Repository::lock`].
    pub(crate) fn unlock(&mut self) -> Result<(), BackupError> {
        if self.locked {
            self.target.remove(LOCK)?;
            self.target.flush()?;
            self.locked = false;
        }
        Ok(())
    }

    /// The names of the records, oldest first.
    pub(crate) fn records(&mut self) -> Result<Vec<String>, BackupError> {
        let mut names: Vec<String> = self
            .target
            .list(RECORDS)?
            .into_iter()
            .filter(|n| record::time_of(n).is_some())
            .collect();
        names.sort();
        Ok(names)
    }

    pub(crate) fn read_record(&mut self, name: &str) -> Result<Record, BackupError> {
        let label = format!("{RECORDS}/{name}");
        let sealed = self.target.read(&label, RECORD_LIMIT as u64 + SEAL_SLACK)?;
        let json = self
            .keys
            .open(label.as_bytes(), &sealed, RECORD_LIMIT)
            .map_err(|why| BackupError::Damaged {
                what: format!("the backup of {name}"),
                why,
            })?;
        let record: Record = serde_json::from_slice(&json)
            .map_err(|e| BackupError::Invalid(format!("the backup of {name}: {e}")))?;
        if record.format != record::FORMAT {
            return Err(BackupError::Invalid(format!(
                "the backup of {name} has format {} (this leitner reads {})",
                record.format,
                record::FORMAT
            )));
        }
        Ok(record)
    }

    /// Learns which chunks are on the destination and which records claim
    /// them, before a backup. Returns the newest readable record, whose
    /// media entries the backup may reuse, and complaints about records
    /// that did not read.
    pub(crate) fn index(&mut self) -> Result<(Option<Record>, Vec<String>), BackupError> {
        self.present.clear();
        for prefix in 0..=255u8 {
            let dir = format!("{CHUNKS}/{prefix:02x}");
            for name in self.target.list(&dir)? {
                if let Some(id) = ChunkId::from_hex(&name) {
                    if id.0[0] == prefix {
                        self.present.insert(id);
                        self.made_dirs.insert(prefix);
                    }
                }
            }
        }
        let mut newest = None;
        let mut complaints = Vec::new();
        for name in self.records()? {
            match self.read_record(&name) {
                Ok(record) => {
                    for id in record.chunks() {
                        if self.present.contains(id) {
                            self.known.insert(*id);
                        }
                    }
                    newest = Some(record);
                }
                Err(e) => complaints.push(format!("{name}: {e}")),
            }
        }
        Ok((newest, complaints))
    }

    /// Whether every chunk of `stored` is known good, so a new record may
    /// name it again without reading the file; counted as reused if so.
    pub(crate) fn reuse(&mut self, stored: &Stored) -> bool {
        let whole = stored.chunks.iter().all(|id| self.known.contains(id));
        if whole {
            self.stats.reused += stored.size;
        }
        whole
    }

    /// Stores everything `from` yields, as chunks.
    pub(crate) fn store(&mut self, from: &mut impl Read) -> Result<Stored, BackupError> {
        let mut stored = Stored::default();
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let mut filled = 0;
            while filled < CHUNK_SIZE {
                match from.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(BackupError::Source(e)),
                }
            }
            if filled == 0 {
                // The end (an empty file is no chunks).
                break;
            }
            self.stats.read += filled as u64;
            stored.size += filled as u64;
            stored.chunks.push(self.store_chunk(&buf[..filled])?);
            if filled < CHUNK_SIZE {
                break;
            }
        }
        Ok(stored)
    }

    fn store_chunk(&mut self, data: &[u8]) -> Result<ChunkId, BackupError> {
        let id = self.keys.id_of(data);
        if self.known.contains(&id) {
            return Ok(id);
        }
        let path = chunk_path(&id);
        if self.present.contains(&id) && self.fetch(&id).is_ok() {
            // Left by a run cut short, and whole.
            self.known.insert(id);
            return Ok(id);
        }
        if self.made_dirs.insert(id.0[0]) {
            self.target.make_dir(&format!("{CHUNKS}/{:02x}", id.0[0]))?;
        }
        let sealed = self.keys.seal(&id.0, data)?;
        self.target.write(&path, &sealed)?;
        self.stats.written += sealed.len() as u64;
        self.stats.chunks_written += 1;
        self.present.insert(id);
        self.known.insert(id);
        self.unchecked.push(id);
        Ok(id)
    }

    /// One chunk's plain bytes, checked against its name.
    pub(crate) fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, BackupError> {
        let sealed = self
            .target
            .read(&chunk_path(id), CHUNK_SIZE as u64 + SEAL_SLACK)?;
        self.keys
            .open_chunk(id, &sealed, CHUNK_SIZE)
            .map_err(|why| BackupError::Damaged {
                what: format!("chunk {}", id.hex()),
                why,
            })
    }

    /// Writes the file `stored` describes to `to`.
    pub(crate) fn restore_file(
        &mut self,
        stored: &Stored,
        to: &mut impl Write,
    ) -> Result<(), BackupError> {
        let mut size = 0u64;
        for id in &stored.chunks {
            let data = self.fetch(id)?;
            size += data.len() as u64;
            to.write_all(&data).map_err(BackupError::Source)?;
        }
        if size != stored.size {
            return Err(BackupError::Invalid(format!(
                "a file of {} bytes came back as {size}",
                stored.size
            )));
        }
        Ok(())
    }

    /// Makes every chunk written so far durable, then reads each back from
    /// the disk and checks it.
    pub(crate) fn flush_and_check(&mut self) -> Result<(), BackupError> {
        self.target.flush()?;
        for id in std::mem::take(&mut self.unchecked) {
            self.target.uncache(&chunk_path(&id));
            if let Err(e) = self.fetch(&id) {
                self.known.remove(&id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes `record` (after [`Repository::flush_and_check`]), makes it
    /// durable and reads it back. Returns its name.
    pub(crate) fn write_record(&mut self, record: &Record) -> Result<String, BackupError> {
        // Names only grow, so the newest backup is always the last name,
        // whatever the clock did (set back by hand, or a Pi without a
        // battery starting before it has the time): a second after the
        // last one when the clock says otherwise.
        let mut name = record::name_for(record.created);
        if let Some(last) = self.records()?.last() {
            if name <= *last {
                name = record::name_for(record::time_of(last).unwrap_or(0) * 1000 + 1000);
            }
        }
        let label = format!("{RECORDS}/{name}");
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let sealed = self.keys.seal(label.as_bytes(), &json)?;
        self.target.write(&label, &sealed)?;
        self.stats.written += sealed.len() as u64;
        self.target.flush()?;
        self.target.uncache(&label);
        self.read_record(&name)?;
        Ok(name)
    }

    /// Removes the records `keep` lets go, then every chunk no kept record
    /// names. Returns how many records and chunks went.
    pub(crate) fn prune(&mut self, keep: record::Keep) -> Result<(usize, usize), BackupError> {
        let names = self.records()?;
        let kept = record::to_keep(&names, keep);
        let mut records_removed = 0;
        for name in names.iter().filter(|n| !kept.contains(*n)) {
            self.target.remove(&format!("{RECORDS}/{name}"))?;
            records_removed += 1;
        }
        let mut claimed: BTreeSet<ChunkId> = BTreeSet::new();
        for name in &kept {
            // A record that does not read cannot be restored; its chunks
            // are not kept for it.
            if let Ok(record) = self.read_record(name) {
                claimed.extend(record.chunks().copied());
            }
        }
        let unclaimed: Vec<ChunkId> = self
            .present
            .iter()
            .filter(|id| !claimed.contains(id))
            .copied()
            .collect();
        for id in &unclaimed {
            self.target.remove(&chunk_path(id))?;
            self.present.remove(id);
            self.known.remove(id);
        }
        self.target.flush()?;
        Ok((records_removed, unclaimed.len()))
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        // A run that failed still lets go, where the destination is there.
        let _ = self.unlock();
    }
}

impl LockNote {
    fn is_stale(&self, host: &str) -> bool {
        let age = crate::ground::clock::now_millis() / 1000 - self.started;
        if age > LOCK_STALE_SECS {
            return true;
        }
        self.host == host
            && (self.boot != boot_id()
                || !std::path::Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn chunk_path(id: &ChunkId) -> String {
    format!("{CHUNKS}/{:02x}/{}", id.0[0], id.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backup::record::UserRecord;
    use crate::storage::backup::target::Folder;

    fn folder(dir: &std::path::Path) -> Box<dyn Target> {
        Box::new(Folder::open(&dir.join(FOLDER)).unwrap())
    }

    fn record(created: i64, collection: Stored) -> Record {
        Record {
            format: record::FORMAT,
            version: "test".into(),
            data_format: 1,
            created,
            host: "test".into(),
            users_file: None,
            devices_file: None,
            users: vec![UserRecord {
                name: "alice".into(),
                collection: Some(collection),
                media_db: None,
                media: Vec::new(),
            }],
        }
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_second_backup_writes_only_the_chunks_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = bytes(3 * CHUNK_SIZE + 100, 1);
        let mut repo = Repository::open(folder(dir.path()), None, true).unwrap();
        repo.lock("test").unwrap();
        repo.index().unwrap();
        let first = repo.store(&mut &data[..]).unwrap();
        assert_eq!(first.chunks.len(), 4);
        repo.flush_and_check().unwrap();
        repo.write_record(&record(1_000_000, first.clone()))
            .unwrap();
        repo.unlock().unwrap();
        let written_first = repo.stats.written;
        drop(repo);

        data[CHUNK_SIZE + 7] ^= 0xff;
        let mut repo = Repository::open(folder(dir.path()), None, false).unwrap();
        repo.lock("test").unwrap();
        let (newest, complaints) = repo.index().unwrap();
        assert!(complaints.is_empty());
        assert_eq!(newest.unwrap().users[0].collection.as_ref(), Some(&first));
        let second = repo.store(&mut &data[..]).unwrap();
        repo.flush_and_check().unwrap();
        assert_eq!(repo.stats.chunks_written, 1);
        assert!(repo.stats.written < written_first / 3);
        repo.write_record(&record(2_000_000, second.clone()))
            .unwrap();
        let mut back = Vec::new();
        repo.restore_file(&second, &mut back).unwrap();
        assert_eq!(back, data);
        // Keeping only the newest lets the changed chunk's old copy go.
        assert_eq!(
            repo.prune(record::Keep {
                daily: 1,
                weekly: 0,
                monthly: 0
            })
            .unwrap(),
            (1, 1)
        );
        let mut back = Vec::new();
        repo.restore_file(&second, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_backup_made_with_the_clock_set_back_is_still_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repository::open(folder(dir.path()), None, true).unwrap();
        let first = repo.store(&mut &b"first"[..]).unwrap();
        let second = repo.store(&mut &b"second"[..]).unwrap();
        repo.flush_and_check().unwrap();
        let a = repo.write_record(&record(2_000_000_000, first)).unwrap();
        let b = repo
            .write_record(&record(1_000_000_000, second.clone()))
            .unwrap();
        assert!(b > a, "{b} after {a}");
        repo.prune(record::Keep {
            daily: 1,
            weekly: 0,
            monthly: 0,
        })
        .unwrap();
        assert_eq!(repo.records().unwrap(), std::slice::from_ref(&b));
        let kept = repo.read_record(&b).unwrap();
        assert_eq!(kept.users[0].collection.as_ref(), Some(&second));
    }

    #[test]
    fn a_passphrase_is_needed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repository::open(folder(dir.path()), Some("horse"), true).unwrap();
        let stored = repo
            .store(&mut &b"the capital of Japan is Tokyo"[..])
            .unwrap();
        repo.flush_and_check().unwrap();
        repo.write_record(&record(1_000_000, stored)).unwrap();
        drop(repo);
        assert!(matches!(
            Repository::open(folder(dir.path()), None, false),
            Err(BackupError::NeedsPassphrase)
        ));
        assert!(matches!(
            Repository::open(folder(dir.path()), Some("battery"), false),
            Err(BackupError::WrongPassphrase)
        ));
        // Nothing on the drive reads as the content.
        let mut stack = vec![dir.path().to_owned()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                let content = std::fs::read(&path).unwrap();
                assert!(!content.windows(5).any(|w| w == b"Tokyo"), "{path:?}");
            }
        }
        let mut repo = Repository::open(folder(dir.path()), Some("horse"), false).unwrap();
        let (newest, _) = repo.index().unwrap();
        let stored = newest.unwrap().users[0].collection.clone().unwrap();
        let mut back = Vec::new();
        repo.restore_file(&stored, &mut back).unwrap();
        assert_eq!(back, b"the capital of Japan is Tokyo");
    }

    #[test]
    fn a_damaged_chunk_is_found_and_a_lock_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repository::open(folder(dir.path()), None, true).unwrap();
        repo.lock("test").unwrap();
        let stored = repo.store(&mut &bytes(1000, 3)[..]).unwrap();
        repo.flush_and_check().unwrap();
        let path = dir.path().join(FOLDER).join(chunk_path(&stored.chunks[0]));
        let mut content = std::fs::read(&path).unwrap();
        content[10] ^= 1;
        std::fs::write(&path, content).unwrap();
        assert!(matches!(
            repo.restore_file(&stored, &mut Vec::new()),
            Err(BackupError::Damaged { .. })
        ));
        // Another host's fresh lock stands.
        let mut other = Repository::open(folder(dir.path()), None, false).unwrap();
        assert!(matches!(
            other.lock("elsewhere"),
            Err(BackupError::Locked(_))
        ));
        drop(other);
        drop(repo);
        let mut again = Repository::open(folder(dir.path()), None, false).unwrap();
        again.lock("elsewhere").unwrap();
    }
}
