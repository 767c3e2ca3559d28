//! `downloadFiles`: the requested files, as a stored zip produced while it is
//! sent, one open file at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;

use super::store::Store;
use super::zip::{Download, Outgoing};
use crate::storage::collection::StoreError;

/// Why the asked-for files cannot be sent.
#[derive(Debug)]
pub(crate) enum DownloadError {
    /// More names than one request may carry.
    TooMany(usize),
    /// A name the server has no live file for.
    Unknown,
    /// A live entry whose file is gone from the folder (its row is forgotten).
    Missing,
    Store(StoreError),
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::TooMany(n) => {
                write!(f, "asked for {n} files at once (at most {MAX_NAMES})")
            }
            DownloadError::Unknown => write!(f, "asked for a media file the server does not have"),
            DownloadError::Missing => write!(f, "a media file is missing on the server"),
            DownloadError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DownloadError {}

impl<E: Into<StoreError>> From<E> for DownloadError {
    fn from(e: E) -> Self {
        DownloadError::Store(e.into())
    }
}

/// Names one request may ask for, as the official server allows.
pub(crate) const MAX_NAMES: usize = 25;
/// A reply stops adding files once it holds more than this (so it always
/// holds at least one); the client asks again for the rest.
pub(crate) const REPLY_BYTES: u64 = 2_621_440;

/// Opens the files the client asks for, in its order, up to the reply size.
/// A name the server does not have fails the request (409), as with the
/// official server. Blocking.
pub(crate) fn prepare(store: &mut Store, names: Vec<String>) -> Result<Download, DownloadError> {
    if names.len() > MAX_NAMES {
        return Err(DownloadError::TooMany(names.len()));
    }
    let mut entries = Vec::new();
    let mut listing = BTreeMap::new();
    let mut total = 0u64;
    for name in names {
        let Some(live) = store.live(&name)? else {
            return Err(DownloadError::Unknown);
        };
        let file = match File::open(&live.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!("a media file is missing from the folder; forgetting its entry");
                store.forget(&name)?;
                return Err(DownloadError::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let entry = entries.len().to_string();
        listing.insert(entry.clone(), name);
        entries.push(Outgoing::new(entry, Box::new(file), len));
        total += len;
        if total > REPLY_BYTES {
            break;
        }
    }
    let meta = serde_json::to_vec(&listing).expect("a map of strings serialises");
    let meta_len = meta.len() as u64;
    entries.push(Outgoing::new(
        "_meta".into(),
        Box::new(io::Cursor::new(meta)),
        meta_len,
    ));
    Ok(Download::new(entries))
}
