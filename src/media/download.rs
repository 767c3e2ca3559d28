//! `downloadFiles`: the requested files, as a stored zip produced while it is
//! sent, one open file at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;

use super::store::Store;
use super::zip::{Download, Outgoing};
use crate::error::Failure;

/// Names one request may ask for, as the official server allows.
pub const MAX_NAMES: usize = 25;
/// A reply stops adding files once it holds more than this (so it always
/// holds at least one); the client asks again for the rest.
pub const REPLY_BYTES: u64 = 2_621_440;

/// Opens the files the client asks for, in its order, up to the reply size.
/// A name the server does not have fails the request (409), as with the
/// official server. Blocking.
pub fn prepare(store: &mut Store, names: Vec<String>) -> Result<Download, Failure> {
    if names.len() > MAX_NAMES {
        return Err(Failure::bad_request(format!(
            "asked for {} files at once (at most {MAX_NAMES})",
            names.len()
        )));
    }
    let mut entries = Vec::new();
    let mut listing = BTreeMap::new();
    let mut total = 0u64;
    for name in names {
        let Some(live) = store.live(&name)? else {
            return Err(Failure::conflict(
                "asked for a media file the server does not have",
            ));
        };
        let file = match File::open(&live.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!("a media file is missing from the folder; forgetting its entry");
                store.forget(&name)?;
                return Err(Failure::conflict("a media file is missing on the server"));
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
