//! The collection in schema 11, for clients of sync versions 8 to 10 (Anki
//! before 2.1.57, old AnkiDroid and AnkiMobile builds), which keep
//! notetypes, decks, presets, tags and config as JSON in the `col` row.
//!
//! A download gets a copy: the user's file stays in schema 18 (a current
//! client may sync next), the copy is converted and streamed, and its name
//! is gone before a byte goes out, so nothing is left behind.

use std::fs::File;
use std::path::Path;

use rusqlite::Connection;
use serde_json::{Map, Value};

use super::{objects, register_unicase, StoreError};
use crate::durable;

/// Tables and indexes schema 11 does not have.
const SCHEMA18_ONLY: &str = "
    DROP TABLE config;
    DROP TABLE deck_config;
    DROP TABLE tags;
    DROP TABLE fields;
    DROP TABLE templates;
    DROP TABLE notetypes;
    DROP TABLE decks;
    DROP INDEX IF EXISTS idx_cards_odid;
    DROP INDEX IF EXISTS idx_notes_mid;
";

/// Schema 11's graves: no primary key, usn first.
const GRAVES11: &str = "
    CREATE TABLE graves11 (usn integer NOT NULL, oid integer NOT NULL, type integer NOT NULL);
    INSERT INTO graves11 (usn, oid, type) SELECT usn, oid, type FROM graves;
    DROP TABLE graves;
    ALTER TABLE graves11 RENAME TO graves;
";

/// A schema-11 copy of a collection, open for reading; it has no name.
pub struct Downgraded {
    pub file: File,
    pub len: u64,
}

impl std::io::Read for Downgraded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

/// Copies the collection open on `conn` (no transaction open) into a temp
/// file in `dir` and converts the copy to schema 11. Blocking.
pub fn downgraded_copy(conn: &Connection, dir: &Path) -> Result<Downgraded, StoreError> {
    let temp = durable::temp_path(dir, "schema11");
    let made = (|| {
        let path = temp.to_str().ok_or_else(|| {
            StoreError::Io(std::io::Error::other("the data folder's path is not UTF-8"))
        })?;
        // A consistent copy of the committed state, WAL included.
        conn.execute("VACUUM INTO ?", [path])?;
        let copy = Connection::open(&temp)?;
        register_unicase(&copy)?;
        downgrade(&copy)?;
        copy.pragma_update(None, "journal_mode", "delete")?;
        copy.close().map_err(|(_, e)| e)?;
        let file = File::open(&temp)?;
        let len = file.metadata()?.len();
        Ok(Downgraded { file, len })
    })();
    let _ = durable::remove_if_present(&temp);
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut side = temp.clone().into_os_string();
        side.push(suffix);
        let _ = durable::remove_if_present(Path::new(&side));
    }
    made
}

/// Converts a schema-18 collection on `conn` to schema 11, in one
/// transaction.
fn downgrade(conn: &Connection) -> Result<(), StoreError> {
    let all = i32::MIN;
    let by_id = |list: Vec<Value>| -> Map<String, Value> {
        list.into_iter().map(|v| (v["id"].to_string(), v)).collect()
    };
    let tx = conn.unchecked_transaction()?;
    let models = by_id(objects::notetypes(conn, all)?);
    let decks = by_id(objects::decks(conn, all)?);
    let dconf = by_id(objects::deck_configs(conn, all)?);
    let tags: Map<String, Value> = objects::tags(conn, all)?
        .into_iter()
        .map(|(tag, usn)| (tag, usn.into()))
        .collect();
    let conf = objects::config(conn)?;
    let text = |m: Map<String, Value>| Value::Object(m).to_string();
    conn.execute(
        "UPDATE col SET models = ?, decks = ?, dconf = ?, tags = ?, conf = ?",
        [
            text(models),
            text(decks),
            text(dconf),
            text(tags),
            text(conf),
        ],
    )?;
    conn.execute_batch(GRAVES11)?;
    conn.execute_batch(SCHEMA18_ONLY)?;
    conn.execute("UPDATE col SET ver = 11", [])?;
    tx.commit()?;
    Ok(())
}
