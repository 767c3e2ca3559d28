//! `uploadChanges`: from the request body to a checked batch whose new files
//! wait, complete, in the staging folder (the store flushes them with the
//! batch's commit).
//!
//! The body (a zip) is kept in memory while it is small, which is every batch
//! of ordinary media: clients stop adding files at 2.5 MiB. A larger one (a
//! single big file) spills to an unlinked temp file, so memory stays bounded
//! whatever the size. Every name and every entry is checked before the first
//! staged file is written; anything wrong refuses the whole batch, as the
//! official server does, and the client shows the error.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha1::{Digest, Sha1};

use super::names;
use super::store::{staged_name, Upload};
use super::zip::{Archive, ZipError};
use crate::ground::durable;

/// Entries in one batch, as the official server allows.
pub(crate) const MAX_FILES: usize = 25;
/// Largest single file, as the official server allows.
pub(crate) const MAX_FILE_BYTES: u64 = 100 << 20;
/// The `_meta` list is small; more than this is not from a client.
const MAX_META_BYTES: u64 = 50 << 10;
/// Bodies up to this size stay in memory.
const IN_MEMORY: usize = 4 << 20;

/// Why a batch was not taken.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// The client sent something no client should (the message says what).
    Refused(String),
    /// Reading the body or staging a file failed on our side.
    Io(io::Error),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Refused(why) => write!(f, "media upload refused: {why}"),
            UploadError::Io(e) => write!(f, "staging a media upload: {e}"),
        }
    }
}

impl std::error::Error for UploadError {}

fn refuse(why: impl Into<String>) -> UploadError {
    UploadError::Refused(why.into())
}

/// Checks one batch (a spooled zip body) and stages its files. Blocking.
pub(crate) fn read_batch(body: Body, staging: &Path) -> Result<Vec<(String, Upload)>, UploadError> {
    let mut archive = Archive::open(body).map_err(refused)?;
    let list = read_list(&mut archive)?;
    let mut batch = Vec::with_capacity(list.len());
    let mut staged_files = Staged(Vec::new(), staging);
    for (name, entry) in list {
        let upload = match entry {
            None => Upload::Delete,
            Some(entry) => {
                let staged = staged_name();
                let path = staging.join(&staged);
                let file = durable::create_private(&path).map_err(UploadError::Io)?;
                staged_files.0.push(staged.clone());
                let mut out = Hashing {
                    file: io::BufWriter::with_capacity(64 << 10, file),
                    sha1: Sha1::new(),
                };
                let size = match archive.entry(&entry, MAX_FILE_BYTES, &mut out) {
                    Ok(Some(size)) => size,
                    Ok(None) => {
                        return Err(refuse(format!(
                            "zip has no entry '{entry}' for a media file"
                        )))
                    }
                    Err(e) => return Err(refused(e)),
                };
                if size == 0 {
                    return Err(refuse("a media file in the zip is empty"));
                }
                // Written, not yet flushed to the card: the store flushes the
                // whole batch at once, with its commit.
                let Hashing { file, sha1 } = out;
                file.into_inner()
                    .map_err(|e| UploadError::Io(e.into_error()))?;
                let sha1 = sha1.finalize().into();
                Upload::Put { staged, sha1, size }
            }
        };
        batch.push((name, upload));
    }
    // From here on the store owns the staged files.
    staged_files.0.clear();
    Ok(batch)
}

fn refused(e: ZipError) -> UploadError {
    match e {
        ZipError::Io(e) => UploadError::Io(e),
        e => refuse(e.to_string()),
    }
}

/// `_meta`: `[[name, entry or null or ""], ...]`, every name checked.
fn read_list<R: Read + Seek>(
    archive: &mut Archive<R>,
) -> Result<Vec<(String, Option<String>)>, UploadError> {
    #[derive(Deserialize)]
    struct Item(String, Option<String>);

    let mut meta = Vec::new();
    match archive.entry("_meta", MAX_META_BYTES, &mut meta) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(refuse("zip has no _meta")),
        Err(e) => return Err(refused(e)),
    }
    let items: Vec<Item> =
        serde_json::from_slice(&meta).map_err(|e| refuse(format!("bad _meta: {e}")))?;
    if items.len() > MAX_FILES {
        return Err(refuse(format!(
            "{} files in one batch (at most {MAX_FILES})",
            items.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut list = Vec::with_capacity(items.len());
    for Item(name, entry) in items {
        if let Err(why) = names::check(&name) {
            return Err(refuse(format!("the file name {:?} {why}", truncate(&name))));
        }
        if !seen.insert(name.clone()) {
            return Err(refuse(format!(
                "{:?} appears twice in one batch",
                truncate(&name)
            )));
        }
        // Older clients and AnkiDroid mark a deletion with "" instead of null.
        let entry = entry.filter(|e| !e.is_empty());
        if let Some(entry) = &entry {
            if !archive.has(entry) {
                return Err(refuse(format!("zip has no entry '{}'", truncate(entry))));
            }
        }
        list.push((name, entry));
    }
    Ok(list)
}

/// A name for an error message: whole if short, never a flood.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Removes the staged files of a batch that was refused halfway.
struct Staged<'a>(Vec<String>, &'a Path);

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = durable::remove_if_present(&self.1.join(name));
        }
    }
}

struct Hashing<W> {
    file: W,
    sha1: Sha1,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The body, in memory until it passes [`IN_MEMORY`] (or the memory budget
/// says no), then in a temp file that has no name (unlinked at once), so a
/// crash leaves nothing behind.
pub(crate) struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    dir: PathBuf,
    charge: crate::ground::budget::Charge,
}

pub(crate) enum Body {
    /// With the memory it is charged for.
    Memory(
        Cursor<Vec<u8>>,
        // Held, not read: dropping it gives the memory back.
        #[allow(dead_code)] crate::ground::budget::Charge,
    ),
    File(io::BufReader<File>),
}

impl Spool {
    pub(crate) fn new(dir: PathBuf, charge: crate::ground::budget::Charge) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            dir,
            charge,
        }
    }

    pub(crate) fn finish(self) -> io::Result<Body> {
        Ok(match self.file {
            None => Body::Memory(Cursor::new(self.memory), self.charge),
            Some(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                Body::File(io::BufReader::with_capacity(64 << 10, file))
            }
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            let want = self.memory.len() + buf.len();
            let room = want <= IN_MEMORY
                && self
                    .charge
                    .hold(want.max(self.memory.capacity()) as u64)
                    .is_ok();
            if !room {
                let path = durable::temp_path(&self.dir, "upload");
                let mut file = durable::create_private(&path)?;
                std::fs::remove_file(&path)?;
                file.write_all(&self.memory)?;
                self.memory = Vec::new();
                self.file = Some(file);
            }
        }
        match &mut self.file {
            Some(file) => file.write(buf),
            None => {
                self.memory.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Memory(c, _) => c.read(buf),
            Body::File(f) => f.read(buf),
        }
    }
}

impl Seek for Body {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Body::Memory(c, _) => c.seek(pos),
            Body::File(f) => f.seek(pos),
        }
    }
}
