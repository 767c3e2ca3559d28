//! `applyGraves`: the client's deletions.

use std::sync::Arc;

use http_types::Response;
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use super::{step_with, ChunkOf};
use crate::http::endpoints::Call;
use crate::http::error::Outcome;
use crate::http::framing::Json;
use crate::service::account::Account;
use crate::storage::collection::schema11::int;
#[derive(Serialize, Default)]
pub(super) struct Graves {
    cards: Vec<i64>,
    notes: Vec<i64>,
    decks: Vec<i64>,
}

pub(super) fn collect_graves(conn: &Connection, min_usn: i32) -> Outcome<Graves> {
    let mut graves = Graves::default();
    let mut stmt = conn.prepare("SELECT oid, type FROM graves WHERE usn >= ?")?;
    let mut rows = stmt.query([min_usn])?;
    while let Some(row) = rows.next()? {
        let (oid, kind): (i64, i64) = (row.get(0)?, row.get(1)?);
        match kind {
            0 => graves.cards.push(oid),
            1 => graves.notes.push(oid),
            _ => graves.decks.push(oid),
        }
    }
    Ok(graves)
}

/// Deletes what the client deleted and records the graves. Nothing cascades:
/// the client sends the graves of a deleted note's cards itself.
pub(super) fn apply_graves(conn: &Connection, graves: &Value, usn: i32) -> Outcome<()> {
    let ids = |key: &str| -> Vec<i64> {
        graves
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| int(Some(v))).collect())
            .unwrap_or_default()
    };
    for (key, table, kind) in [
        ("notes", "notes", 1),
        ("cards", "cards", 0),
        ("decks", "decks", 2),
    ] {
        for id in ids(key) {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?"))?
                .execute([id])?;
            conn.prepare_cached("INSERT OR IGNORE INTO graves (oid, type, usn) VALUES (?, ?, ?)")?
                .execute(params![id, kind, usn])?;
        }
    }
    Ok(())
}

pub(crate) async fn apply_graves_step(
    call: &mut Call,
    account: &Arc<Account>,
) -> Outcome<Response> {
    let body = call.json_later().await?;
    step_with(call, account, body, |request: ChunkOf<Value>, conn, s| {
        apply_graves(conn, &request.chunk, s.server_usn)?;
        Ok(Json::of(&()))
    })
    .await
}
