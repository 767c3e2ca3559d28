//! The collection in schema 11, for clients of sync versions 8 to 10 (Anki
//! before 2.1.57, old AnkiDroid and AnkiMobile builds), which keep
//! notetypes, decks, presets, tags and config as JSON in the `col` row.
//!
//! A download gets a copy: the user's file stays in schema 18 (a current
//! client may sync next), the copy is converted and streamed, and its name
//! is gone before a byte goes out, so nothing is left behind. An upload is
//! converted to schema 18 in its temp file, before the usual checks.

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::{objects, register_unicase, schema, schema11, StoreError};
use crate::ground::durable;

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
pub(crate) struct Downgraded {
    pub(crate) file: File,
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests only
    pub(crate) len: u64,
}

impl std::io::Read for Downgraded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

/// Copies the collection open on `conn` (no transaction open) into a temp
/// file in `dir` and converts the copy to schema 11. Blocking.
pub(crate) fn downgraded_copy(conn: &Connection, dir: &Path) -> Result<Downgraded, StoreError> {
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
        let _ = durable::remove_if_present(&super::sidecar(&temp, suffix));
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

/// Converts a schema-11 collection (an old client's upload, already open on
/// `conn` and checked for triggers and views) to schema 18, in one
/// transaction; a schema-18 one is left alone. Errors are the text the
/// client shows. Blocking.
pub(crate) fn upgrade(conn: &Connection) -> Result<(), String> {
    let ver: i64 = conn
        .query_row("SELECT ver FROM col", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if ver != 11 {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    upgrade_objects(conn)?;
    tx.commit().map_err(|e| e.to_string())?;
    // As a current client keeps its collection, and as this server writes.
    conn.pragma_update(None, "journal_mode", "wal")
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn upgrade_objects(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    let (models, decks, dconf, tags, conf): (String, String, String, String, String) = conn
        .query_row(
            "SELECT models, decks, dconf, tags, conf FROM col",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map_err(sql)?;
    let object = |what: &str, text: &str| -> Result<Map<String, Value>, String> {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) | Err(_) => Err(format!("col.{what} is not a JSON object")),
        }
    };
    let usn = |v: &Value| schema11::int(v.get("usn")).unwrap_or(0) as i32;
    conn.execute_batch("ALTER TABLE graves RENAME TO graves11")
        .map_err(sql)?;
    conn.execute_batch(schema::DDL_GRAVES).map_err(sql)?;
    conn.execute_batch(
        "INSERT OR IGNORE INTO graves (oid, type, usn) SELECT oid, type, usn FROM graves11;
         DROP TABLE graves11;",
    )
    .map_err(sql)?;
    conn.execute_batch(schema::DDL_SCHEMA18_ONLY).map_err(sql)?;

    for (_, json) in object("models", &models)? {
        let mut nt = schema11::notetype_from_json(&json)?;
        if nt.id == 0 {
            // Seen in the wild; Anki gives such a notetype a new id too.
            nt.id = crate::ground::clock::now_millis();
        }
        unique_name(conn, "notetypes", &mut nt.name)?;
        objects::put_notetype(conn, &nt, usn(&json)).map_err(sql)?;
    }
    for (_, json) in object("decks", &decks)? {
        let deck = schema11::deck_from_json(&json)?;
        let mut name = schema11::native_deck_name(&deck.human_name);
        unique_name(conn, "decks", &mut name)?;
        objects::put_deck(conn, &deck, &name, deck.mtime, usn(&json)).map_err(sql)?;
    }
    for (_, json) in object("dconf", &dconf)? {
        let dc = schema11::deck_config_from_json(&json)?;
        objects::put_deck_config(conn, &dc, usn(&json)).map_err(sql)?;
    }
    for (tag, tag_usn) in object("tags", &tags)? {
        let tag = objects::normalize_tag(&tag);
        let known = conn
            .query_row("SELECT 1 FROM tags WHERE tag = ?", [&tag], |_| Ok(()))
            .optional()
            .map_err(sql)?
            .is_some();
        if !known {
            let tag_usn = schema11::int(Some(&tag_usn)).unwrap_or(0) as i32;
            objects::put_tag(conn, &tag, tag_usn).map_err(sql)?;
        }
    }
    objects::put_config(conn, &object("conf", &conf)?, 0, 0).map_err(sql)?;
    conn.execute(
        "UPDATE col SET models = '', decks = '', dconf = '', tags = '', conf = '', ver = ?",
        [schema::SCHEMA_VERSION],
    )
    .map_err(sql)?;
    Ok(())
}

/// Appends `_` while another row of `table` has the name (as the `unicase`
/// collation compares), as Anki does when it upgrades such a file.
fn unique_name(conn: &Connection, table: &str, name: &mut String) -> Result<(), String> {
    let sql = format!("SELECT 1 FROM {table} WHERE name = ?");
    while conn
        .query_row(&sql, [name.as_str()], |_| Ok(()))
        .optional()
        .map_err(|e| e.to_string())?
        .is_some()
    {
        name.push('_');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Everything `objects` reads, as JSON, for comparing two files.
    fn everything(conn: &Connection) -> Value {
        let all = i32::MIN;
        let mut tags = objects::tags(conn, all).unwrap();
        tags.sort();
        serde_json::json!({
            "notetypes": objects::notetypes(conn, all).unwrap(),
            "decks": objects::decks(conn, all).unwrap(),
            "presets": objects::deck_configs(conn, all).unwrap(),
            "tags": tags,
            "config": objects::config(conn).unwrap(),
        })
    }

    #[test]
    fn a_collection_survives_schema_11_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::storage::collection::open_or_create(dir.path()).unwrap();
        conn.execute_batch(
            "INSERT INTO tags VALUES ('Verbs::irregular', 5, 1, NULL);
             INSERT INTO config VALUES ('leitnerTest', 3, 0, CAST('[1,2]' AS BLOB));
             INSERT INTO graves VALUES (12, 0, 4), (13, 1, -1);",
        )
        .unwrap();
        let before = everything(&conn);

        let mut copy = downgraded_copy(&conn, dir.path()).unwrap();
        let mut bytes = Vec::new();
        copy.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, copy.len);
        // Schema 11 in rollback-journal mode (header bytes 18 and 19), and
        // nothing left behind in the folder.
        assert_eq!(&bytes[18..20], &[1, 1]);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("schema11"))
            .collect();
        assert!(names.is_empty(), "{names:?}");

        let old = dir.path().join("old.anki2");
        std::fs::write(&old, &bytes).unwrap();
        let conn11 = Connection::open(&old).unwrap();
        register_unicase(&conn11).unwrap();
        let (ver, models): (i64, String) = conn11
            .query_row("SELECT ver, models FROM col", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(ver, 11);
        assert!(models.contains("\"Basic\""));
        let tables: i64 = conn11
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('notetypes', 'decks', 'config')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);

        upgrade(&conn11).unwrap();
        assert_eq!(everything(&conn11), before);
        let graves: Vec<(i64, i64, i64)> = conn11
            .prepare("SELECT oid, type, usn FROM graves ORDER BY oid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(graves, [(12, 0, 4), (13, 1, -1)]);
        let ver: i64 = conn11
            .query_row("SELECT ver FROM col", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ver, 18);
        // A file already in schema 18 is left alone.
        upgrade(&conn).unwrap();
        assert_eq!(everything(&conn), before);
    }
}
