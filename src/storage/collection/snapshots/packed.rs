//! A packed snapshot's file: a zstd skippable frame holding its [`Info`] as
//! JSON, then the collection compressed. Any zstd tool decompresses it to
//! the plain collection; listing reads only the first frame.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Info, Kind};
use crate::ground::durable;
use crate::storage::collection::StoreError;

/// The first magic number of zstd's skippable frames.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// A metadata frame larger than this is not ours.
const MAX_INFO_BYTES: u32 = 64 << 10;
/// Reads what a collection file holds, without changing it (not even a WAL
/// or a journal beside it). Blocking.
pub(super) fn describe(path: &Path, kind: Kind) -> Result<Info, StoreError> {
    let conn = Connection::open_with_flags(
        format!("file:{}?immutable=1", path.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )?;
    let count = |table: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
    };
    Ok(Info {
        kind,
        modified: conn.query_row("SELECT mod FROM col", [], |r| r.get(0))?,
        notes: count("notes")?,
        cards: count("cards")?,
        reviews: count("revlog")?,
        bytes: fs::metadata(path)?.len(),
    })
}
/// Writes `from` compressed, after its info frame, to `to` (write-temp,
/// fsync, rename).
pub(super) fn write_packed(from: &Path, to: &Path, info: &Info) -> io::Result<()> {
    let dir = to.parent().expect("snapshot has a folder");
    let temp = durable::temp_path(dir, "snapshot");
    let result = (|| {
        let out = durable::create_private(&temp)?;
        let mut writer = BufWriter::new(&out);
        let json = serde_json::to_vec(info).map_err(io::Error::other)?;
        writer.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
        writer.write_all(&(json.len() as u32).to_le_bytes())?;
        writer.write_all(&json)?;
        let mut encoder = zstd::stream::write::Encoder::new(&mut writer, 3)?;
        io::copy(&mut BufReader::new(File::open(from)?), &mut encoder)?;
        encoder.finish()?;
        writer.flush()?;
        drop(writer);
        out.sync_all()?;
        durable::commit_rename(&temp, to)
    })();
    if result.is_err() {
        let _ = durable::remove_if_present(&temp);
    }
    result
}
/// Reads the info frame at the start of a packed snapshot, if it has one.
pub(super) fn read_info(path: &Path) -> io::Result<Option<Info>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 8];
    if file.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if magic != SKIPPABLE_MAGIC || len > MAX_INFO_BYTES {
        return Ok(None);
    }
    let mut json = vec![0u8; len as usize];
    file.read_exact(&mut json)?;
    Ok(serde_json::from_slice(&json).ok())
}
