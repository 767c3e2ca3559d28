//! Notetypes, decks, presets, tags and config in their schema-18 tables:
//! read as the schema-11 JSON the wire carries, and stored from its rows,
//! for a normal sync's `applyChanges` and for the schema-11 files of old
//! clients (`legacy`). Merge rules (which side wins) are the caller's.

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use super::schema11::{self, blob, DeckConfigRow, DeckRow, NotetypeRow};
use super::StoreError;

/// Notetypes changed at or after `min_usn` (all of them: -1).
pub(crate) fn notetypes(conn: &Connection, min_usn: i32) -> Result<Vec<Value>, StoreError> {
    let ids: Vec<(i64, i32)> = conn
        .prepare("SELECT id, usn FROM notetypes WHERE usn >= ?")?
        .query_map([min_usn], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    ids.into_iter()
        .map(|(id, usn)| Ok(schema11::notetype_to_json(&notetype(conn, id)?, usn)))
        .collect()
}

fn notetype(conn: &Connection, id: i64) -> Result<NotetypeRow, StoreError> {
    let (name, mtime, config): (String, i64, Vec<u8>) = conn.query_row(
        "SELECT name, mtime_secs, config FROM notetypes WHERE id = ?",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(NotetypeRow {
        id,
        name,
        mtime,
        config: decode(&config)?,
        fields: parts(conn, "fields", id)?,
        templates: parts(conn, "templates", id)?,
    })
}

/// A notetype's fields or templates (`table`), in order: names and their
/// stored configs.
fn parts<M: prost::Message + Default>(
    conn: &Connection,
    table: &str,
    ntid: i64,
) -> Result<Vec<(String, M)>, StoreError> {
    conn.prepare(&format!(
        "SELECT name, config FROM {table} WHERE ntid = ? ORDER BY ord"
    ))?
    .query_map([ntid], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .map(|(n, c)| Ok((n, decode(&c)?)))
    .collect()
}

/// Decks changed at or after `min_usn`.
pub(crate) fn decks(conn: &Connection, min_usn: i32) -> Result<Vec<Value>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, name, mtime_secs, usn, common, kind FROM decks WHERE usn >= ?")?;
    let mut rows = stmt.query([min_usn])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let row = DeckRow {
            id: r.get(0)?,
            human_name: schema11::human_deck_name(&r.get::<_, String>(1)?),
            mtime: r.get(2)?,
            common: decode(&r.get::<_, Vec<u8>>(4)?)?,
            kind: decode(&r.get::<_, Vec<u8>>(5)?)?,
        };
        out.push(schema11::deck_to_json(&row, r.get(3)?));
    }
    Ok(out)
}

/// Presets (deck options) changed at or after `min_usn`.
pub(crate) fn deck_configs(conn: &Connection, min_usn: i32) -> Result<Vec<Value>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, name, mtime_secs, usn, config FROM deck_config WHERE usn >= ?")?;
    let mut rows = stmt.query([min_usn])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let row = DeckConfigRow {
            id: r.get(0)?,
            name: r.get(1)?,
            mtime: r.get(2)?,
            config: decode(&r.get::<_, Vec<u8>>(4)?)?,
        };
        out.push(schema11::deck_config_to_json(&row, r.get(3)?));
    }
    Ok(out)
}

/// Tags changed at or after `min_usn`, with their usns.
pub(crate) fn tags(conn: &Connection, min_usn: i32) -> Result<Vec<(String, i32)>, StoreError> {
    Ok(conn
        .prepare("SELECT tag, usn FROM tags WHERE usn >= ?")?
        .query_map([min_usn], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// Every config entry; a value that is not JSON reads as null.
pub(crate) fn config(conn: &Connection) -> Result<Map<String, Value>, StoreError> {
    let mut conf = Map::new();
    let mut stmt = conn.prepare("SELECT key, val FROM config")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let val: Vec<u8> = r.get(1)?;
        conf.insert(
            r.get(0)?,
            serde_json::from_slice(&val).unwrap_or(Value::Null),
        );
    }
    Ok(conf)
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Unreadable(format!("stored protobuf: {e}")))
}

/// Stores a notetype with its fields and templates, replacing any of the
/// same id.
pub(crate) fn put_notetype(conn: &Connection, nt: &NotetypeRow, usn: i32) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO notetypes (id, name, mtime_secs, usn, config) VALUES (?, ?, ?, ?, ?)",
        params![nt.id, nt.name, nt.mtime, usn, blob(&nt.config)],
    )?;
    conn.execute("DELETE FROM fields WHERE ntid = ?", [nt.id])?;
    conn.execute("DELETE FROM templates WHERE ntid = ?", [nt.id])?;
    for (ord, (name, config)) in nt.fields.iter().enumerate() {
        conn.execute(
            "INSERT INTO fields (ntid, ord, name, config) VALUES (?, ?, ?, ?)",
            params![nt.id, ord, name, blob(config)],
        )?;
    }
    for (ord, (name, config)) in nt.templates.iter().enumerate() {
        conn.execute(
            "INSERT INTO templates (ntid, ord, name, mtime_secs, usn, config) VALUES (?, ?, ?, 0, 0, ?)",
            params![nt.id, ord, name, blob(config)],
        )?;
    }
    Ok(())
}

/// Stores a deck under `native_name` (components joined by `\x1f`).
pub(crate) fn put_deck(
    conn: &Connection,
    deck: &DeckRow,
    native_name: &str,
    mtime: i64,
    usn: i32,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO decks (id, name, mtime_secs, usn, common, kind) VALUES (?, ?, ?, ?, ?, ?)",
        params![deck.id, native_name, mtime, usn, blob(&deck.common), blob(&deck.kind)],
    )?;
    Ok(())
}

pub(crate) fn put_deck_config(
    conn: &Connection,
    dc: &DeckConfigRow,
    usn: i32,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO deck_config (id, name, mtime_secs, usn, config) VALUES (?, ?, ?, ?, ?)",
        params![dc.id, dc.name, dc.mtime, usn, blob(&dc.config)],
    )?;
    Ok(())
}

/// NFC; per `::` component no ASCII control characters or spaces, and an
/// empty component becomes "blank".
pub(crate) fn normalize_tag(tag: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    tag.split("::")
        .map(|part| {
            let part: String = part
                .nfc()
                .filter(|c| !c.is_ascii_control() && *c != ' ' && *c != '\u{3000}')
                .collect();
            if part.is_empty() {
                "blank".to_owned()
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("::")
}

/// Stores a new tag, collapsed as Anki stores new tags.
pub(crate) fn put_tag(conn: &Connection, tag: &str, usn: i32) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tags (tag, usn, collapsed, config) VALUES (?, ?, 1, NULL)",
        params![tag, usn],
    )?;
    Ok(())
}

/// Replaces the whole config with `conf`.
pub(crate) fn put_config(
    conn: &Connection,
    conf: &Map<String, Value>,
    usn: i32,
    mtime: i64,
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM config", [])?;
    for (key, value) in conf {
        conn.execute(
            "INSERT INTO config (KEY, usn, mtime_secs, val) VALUES (?, ?, ?, ?)",
            params![
                key,
                usn,
                mtime,
                serde_json::to_vec(value).expect("JSON values serialise")
            ],
        )?;
    }
    Ok(())
}
