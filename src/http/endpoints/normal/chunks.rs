//! `chunk` and `applyChunk`: reviews, cards and notes, 250 rows at a time.

use std::sync::Arc;

use http_types::Response;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::Value;

use super::{bad, decode, step, step_with, ChunkOf, Pending};
use crate::http::endpoints::Call;
use crate::http::error::Outcome;
use crate::http::framing::Json;
use crate::service::account::Account;
use crate::storage::collection::schema11::int;
use crate::storage::collection::text;
/// Rows per `chunk` reply, as the official server.
const CHUNK_BUDGET: i32 = 250;

fn ids(conn: &Connection, table: &str, min_usn: i32) -> rusqlite::Result<Vec<i64>> {
    conn.prepare(&format!("SELECT id FROM {table} WHERE usn >= ?"))?
        .query_map([min_usn], |r| r.get(0))?
        .collect()
}

pub(crate) async fn chunk(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    step(call, account, |conn, s| {
        if s.pending.is_none() {
            s.pending = Some(Pending {
                revlog: ids(conn, "revlog", s.client_usn)?,
                cards: ids(conn, "cards", s.client_usn)?,
                notes: ids(conn, "notes", s.client_usn)?,
            });
        }
        let pending = s.pending.as_mut().expect("set above");
        let (mut revlog, mut cards, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        let mut budget = CHUNK_BUDGET;
        while budget > 0
            && !(pending.revlog.is_empty() && pending.cards.is_empty() && pending.notes.is_empty())
        {
            for (from, to) in [
                (&mut pending.revlog, &mut revlog),
                (&mut pending.notes, &mut notes),
                (&mut pending.cards, &mut cards),
            ] {
                if let Some(id) = from.pop() {
                    to.push(id);
                    budget -= 1;
                }
            }
        }
        // In id order: the client adds rows in the order they come, and
        // its b-trees grow fastest at their end (sent in reverse, a pull of
        // 1,000 reviews took the client 10 ms longer).
        for ids in [&mut revlog, &mut cards, &mut notes] {
            ids.sort_unstable();
        }
        // Written as it is read: a chunk is 250 rows, and a JSON value per
        // cell cost more than reading them.
        let mut out = Vec::with_capacity(32 * 1024);
        out.extend_from_slice(if budget > 0 {
            b"{\"done\":true"
        } else {
            b"{\"done\":false"
        });
        write_rows(conn, &mut out, "revlog", &revlog)?;
        write_rows(conn, &mut out, "cards", &cards)?;
        write_notes(conn, &mut out, &notes)?;
        out.push(b'}');
        Ok(Json(out))
    })
    .await
}

/// `,"<table>":[rows]` for the rows of `table` with the given ids (nothing
/// when there are none), each row the wire's tuple: every column as it is
/// stored.
fn write_rows(conn: &Connection, out: &mut Vec<u8>, table: &str, ids: &[i64]) -> Outcome<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(&format!("SELECT * FROM {table} WHERE id = ?"))?;
    let columns = stmt.column_count();
    let mut list = JsonList::open(out, table);
    for id in ids {
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else { continue };
        let out = list.item();
        for i in 0..columns {
            out.push(if i == 0 { b'[' } else { b',' });
            write_cell(out, row.get_ref(i)?);
        }
        out.push(b']');
    }
    list.close();
    Ok(())
}

/// Notes as the wire carries them: sort field and checksum empty strings,
/// flags 0, data empty; the receiver computes its own.
fn write_notes(conn: &Connection, out: &mut Vec<u8>, ids: &[i64]) -> Outcome<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut stmt =
        conn.prepare_cached("SELECT id, guid, mid, mod, usn, tags, flds FROM notes WHERE id = ?")?;
    let mut list = JsonList::open(out, "notes");
    for id in ids {
        let mut rows = stmt.query([id])?;
        let Some(r) = rows.next()? else { continue };
        let note: (
            i64,
            String,
            i64,
            i64,
            i64,
            String,
            String,
            &str,
            &str,
            i64,
            &str,
        ) = (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            "",
            "",
            0,
            "",
        );
        serde_json::to_writer(list.item(), &note).expect("writing JSON into memory");
    }
    list.close();
    Ok(())
}

/// `,"<key>":[item,item...]` written into a reply under way.
struct JsonList<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonList<'a> {
    fn open(out: &'a mut Vec<u8>, key: &str) -> JsonList<'a> {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":[");
        JsonList { out, first: true }
    }

    /// Where the next item goes.
    fn item(&mut self) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out
    }

    fn close(self) {
        self.out.push(b']');
    }
}

/// One stored value as JSON: what `serde_json` makes of the same value
/// (text not valid UTF-8 is mended, blobs are null, as before).
fn write_cell(out: &mut Vec<u8>, cell: rusqlite::types::ValueRef<'_>) {
    use rusqlite::types::ValueRef;
    let written = match cell {
        ValueRef::Integer(n) => serde_json::to_writer(&mut *out, &n),
        ValueRef::Real(f) => serde_json::to_writer(&mut *out, &f),
        ValueRef::Text(t) => serde_json::to_writer(&mut *out, &*String::from_utf8_lossy(t)),
        ValueRef::Null | ValueRef::Blob(_) => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    };
    written.expect("writing JSON into memory");
}

#[derive(Deserialize)]
struct IncomingChunk {
    #[serde(default)]
    revlog: Vec<Vec<Value>>,
    #[serde(default)]
    cards: Vec<Vec<Value>>,
    #[serde(default)]
    notes: Vec<Vec<Value>>,
}

pub(crate) async fn apply_chunk(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later().await?;
    step_with(
        call,
        account,
        body,
        |request: ChunkOf<IncomingChunk>, conn, s| {
            let chunk = request.chunk;
            let usn = s.server_usn;
            let num = |row: &[Value], i: usize| -> Outcome<i64> {
                int(row.get(i)).ok_or_else(|| bad(format!("column {i} is not a number")))
            };
            let txt = |row: &[Value], i: usize| -> Outcome<String> {
                row.get(i)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("column {i} is not text")))
            };
            // A number the client's own types cannot hold would be stored here
            // and break every device that downloads it: refuse it instead.
            let fits = |table: &str, ranges: &[(i64, i64)], row: &[Value]| -> Outcome<()> {
                for (i, (lo, hi)) in ranges.iter().enumerate() {
                    if let Some(v) = row.get(i).filter(|v| v.is_number() || v.is_string()) {
                        match int(Some(v)) {
                            Some(n) if (*lo..=*hi).contains(&n) => {}
                            _ => return Err(bad(format!("{table} column {i} out of range: {v}"))),
                        }
                    }
                }
                Ok(())
            };
            let mut shapes = std::collections::HashMap::new();
            for r in &chunk.revlog {
                fits("revlog", &REVLOG_RANGES, r)?;
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO revlog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    num(r, 0)?,
                    num(r, 1)?,
                    usn,
                    num(r, 3)?,
                    num(r, 4)?,
                    num(r, 5)?,
                    num(r, 6)?,
                    num(r, 7)?,
                    num(r, 8)?
                ])?;
            }
            for r in &chunk.cards {
                fits("cards", &CARD_RANGES, r)?;
                let exists = match server_has(conn, "cards", num(r, 0)?, num(r, 4)?, s.client_usn)?
                {
                    Held::Newer => continue,
                    Held::Older => true,
                    Held::None => false,
                };
                let mut values: Vec<i64> = Vec::with_capacity(17);
                for i in 0..17 {
                    values.push(if i == 5 { usn as i64 } else { num(r, i)? });
                }
                let data = txt(r, 17)?;
                // An UPDATE of one row, or a plain INSERT, needs no statement
                // journal inside the sync's transaction; INSERT OR REPLACE
                // journals every page it touches (see `UPDATE_CARD`).
                let sql = if exists { UPDATE_CARD } else { INSERT_CARD };
                conn.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(
                        values
                            .iter()
                            .map(|v| v as &dyn rusqlite::ToSql)
                            .chain([&data as &dyn rusqlite::ToSql]),
                    ))?;
            }
            for r in &chunk.notes {
                let id = num(r, 0)?;
                let exists = match server_has(conn, "notes", id, num(r, 3)?, s.client_usn)? {
                    Held::Newer => continue,
                    Held::Older => true,
                    Held::None => false,
                };
                let mid = num(r, 2)?;
                let (field_count, sort_idx) = match shapes.get(&mid) {
                    Some(shape) => *shape,
                    None => *shapes.entry(mid).or_insert(notetype_shape(conn, mid)?),
                };
                let flds: String = txt(r, 6)?
                    .chars()
                    .filter(|c| !c.is_ascii_control() || matches!(c, '\n' | '\t' | '\u{1f}'))
                    .collect();
                let fields: Vec<&str> = flds.split('\u{1f}').collect();
                if fields.len() != field_count {
                    return Err(bad(format!(
                        "note {id} has {} fields, its notetype {field_count}",
                        fields.len()
                    )));
                }
                let (sfld, csum) = text::sort_field_and_checksum(&fields, sort_idx);
                let sql = if exists { UPDATE_NOTE } else { INSERT_NOTE };
                conn.prepare_cached(sql)?.execute(params![
                    id,
                    txt(r, 1)?,
                    mid,
                    num(r, 3)?,
                    usn,
                    txt(r, 5)?,
                    flds,
                    sfld,
                    csum
                ])?;
            }
            Ok(Json::of(&()))
        },
    )
    .await
}

const I64: (i64, i64) = (i64::MIN, i64::MAX);
const I32: (i64, i64) = (i32::MIN as i64, i32::MAX as i64);
const U32: (i64, i64) = (0, u32::MAX as i64);
const U16: (i64, i64) = (0, u16::MAX as i64);
const U8: (i64, i64) = (0, u8::MAX as i64);

/// What Anki's own card type holds in each numeric column of a chunk's card
/// row: id, nid, did, ord, mod, usn, type, queue, due, ivl, factor, reps,
/// lapses, left, odue, odid, flags.
const CARD_RANGES: [(i64, i64); 17] = [
    I64,
    I64,
    I64,
    U16,
    I64,
    I32,
    (0, 3),
    (-3, 4),
    I32,
    U32,
    U16,
    U32,
    U32,
    U32,
    I32,
    I64,
    U8,
];

/// The same for a review: id, cid, usn, ease, ivl, lastIvl, factor, time,
/// type.
const REVLOG_RANGES: [(i64, i64); 9] = [I64, I64, I32, U8, I32, I32, U32, U32, U8];

/// What the server holds of a row the client sends.
enum Held {
    /// Nothing: the row is new.
    None,
    /// An older version: the client's replaces it.
    Older,
    /// A version changed since the client's last sync and at least as
    /// recent: the server's stays.
    Newer,
}

fn server_has(
    conn: &Connection,
    table: &str,
    id: i64,
    incoming_mod: i64,
    client_usn: i32,
) -> Outcome<Held> {
    let existing: Option<(i32, i64)> = conn
        .prepare_cached(&format!("SELECT usn, mod FROM {table} WHERE id = ?"))?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match existing {
        None => Held::None,
        Some((usn, modified)) if usn >= client_usn && modified >= incoming_mod => Held::Newer,
        Some(_) => Held::Older,
    })
}

// Rows written as UPDATE (one row, by id) or INSERT rather than INSERT OR
// REPLACE: inside a transaction SQLite gives every statement that may
// abort after writing (REPLACE, which deletes and reinserts) a statement
// journal of the pages it changes, which was a third of applyChunk's time.
// Neither table has a unique index besides the id, so the effect is the
// same.
const UPDATE_CARD: &str = "UPDATE cards SET nid = ?2, did = ?3, ord = ?4, mod = ?5, usn = ?6, \
    type = ?7, queue = ?8, due = ?9, ivl = ?10, factor = ?11, reps = ?12, lapses = ?13, \
    left = ?14, odue = ?15, odid = ?16, flags = ?17, data = ?18 WHERE id = ?1";
const INSERT_CARD: &str =
    "INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const UPDATE_NOTE: &str = "UPDATE notes SET guid = ?2, mid = ?3, mod = ?4, usn = ?5, tags = ?6, \
    flds = ?7, sfld = ?8, csum = ?9, flags = 0, data = '' WHERE id = ?1";
const INSERT_NOTE: &str = "INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')";

fn notetype_shape(conn: &Connection, mid: i64) -> Outcome<(usize, usize)> {
    let config: Option<Vec<u8>> = conn
        .query_row("SELECT config FROM notetypes WHERE id = ?", [mid], |r| {
            r.get(0)
        })
        .optional()?;
    let config: crate::storage::collection::proto::NotetypeConfig =
        decode(&config.ok_or_else(|| bad(format!("note refers to missing notetype {mid}")))?)?;
    let fields: usize =
        conn.query_row("SELECT count(*) FROM fields WHERE ntid = ?", [mid], |r| {
            r.get(0)
        })?;
    Ok((fields.max(1), config.sort_field_idx as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_written_as_serde_json_would_write_their_values() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE cards (id INTEGER PRIMARY KEY, a, b, c, d);
             INSERT INTO cards VALUES (1, 42, 1.5, 'quote \" and \\ and \u{1} and é', NULL);
             INSERT INTO cards VALUES (2, -9223372036854775808, 1e300, '', x'00ff');
             INSERT INTO cards VALUES (3, 0, -0.25, CAST(x'ff61' AS TEXT), 7);
             CREATE TABLE notes (id INTEGER PRIMARY KEY, guid, mid, mod, usn, tags, flds);
             INSERT INTO notes VALUES (5, 'g\"uid', 1, 2, -1, ' tag ', 'front\u{1f}back');",
        )
        .unwrap();
        let mut out = b"{\"done\":true".to_vec();
        // Id 9 is gone: it is left out.
        write_rows(&conn, &mut out, "cards", &[3, 9, 1, 2]).unwrap();
        write_notes(&conn, &mut out, &[5]).unwrap();
        write_rows(&conn, &mut out, "cards", &[]).unwrap();
        out.push(b'}');
        let expected = json!({
            "done": true,
            "cards": [
                [3, 0, -0.25, "\u{fffd}a", 7],
                [1, 42, 1.5, "quote \" and \\ and \u{1} and é", null],
                [2, i64::MIN, 1e300, "", null],
            ],
            "notes": [[5, "g\"uid", 1, 2, -1, " tag ", "front\u{1f}back", "", "", 0, ""]],
        });
        let written: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written, expected);
        // Keys in the order the client's own chunks have them.
        assert!(out.starts_with(b"{\"done\":true,\"cards\":[[3,0,-0.25,"));
    }
}
