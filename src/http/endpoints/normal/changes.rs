//! `applyChanges`: notetypes, decks, presets, tags and config both ways.

use std::sync::Arc;

use http_types::Response;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{bad, step_with, Session};
use crate::ground::clock;
use crate::http::endpoints::Call;
use crate::http::error::Outcome;
use crate::http::framing::Json;
use crate::service::account::Account;
use crate::storage::collection::objects;
use crate::storage::collection::schema11;

#[derive(Deserialize)]
struct ChangesRequest {
    changes: Changes,
}

#[derive(Deserialize, Serialize, Default)]
struct Changes {
    #[serde(default)]
    models: Vec<Value>,
    #[serde(default = "empty_decks")]
    decks: (Vec<Value>, Vec<Value>),
    #[serde(default)]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    conf: Option<serde_json::Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    crt: Option<i64>,
}

fn empty_decks() -> (Vec<Value>, Vec<Value>) {
    (Vec::new(), Vec::new())
}

pub(crate) async fn apply_changes(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later().await?;
    step_with(call, account, body, |request: ChangesRequest, conn, s| {
        // Ours first: collected after the client's were merged, they would be
        // echoed back to it.
        let ours = server_changes(conn, s)?;
        merge_changes(conn, s, request.changes)?;
        Ok(Json::of(&ours))
    })
    .await
}

fn server_changes(conn: &Connection, s: &Session) -> Outcome<Changes> {
    let since = s.client_usn;
    let mut changes = Changes {
        models: objects::notetypes(conn, since)?,
        decks: (
            objects::decks(conn, since)?,
            objects::deck_configs(conn, since)?,
        ),
        tags: objects::tags(conn, since)?
            .into_iter()
            .map(|(tag, _)| tag)
            .collect(),
        ..Changes::default()
    };
    if !s.client_is_newer {
        changes.conf = Some(objects::config(conn)?);
        changes.crt = Some(conn.query_row("SELECT crt FROM col", [], |r| r.get(0))?);
    }
    Ok(changes)
}

/// Appends `+` while another row of `table` (another id) has the name,
/// compared as the `unicase` collation does. Returns whether it changed.
fn make_unique(conn: &Connection, table: &str, id: i64, name: &mut String) -> Outcome<bool> {
    let mut changed = false;
    let sql = format!("SELECT 1 FROM {table} WHERE name = ? AND id != ?");
    while conn
        .query_row(&sql, params![name.as_str(), id], |_| Ok(()))
        .optional()?
        .is_some()
    {
        name.push('+');
        changed = true;
    }
    Ok(changed)
}

/// The stored modification time of a notetype, deck or preset, if it exists.
/// These are replaced unless the stored one is strictly newer.
fn stored_mtime(conn: &Connection, table: &str, id: i64) -> Outcome<Option<i64>> {
    Ok(conn
        .query_row(
            &format!("SELECT mtime_secs FROM {table} WHERE id = ?"),
            [id],
            |r| r.get(0),
        )
        .optional()?)
}

fn merge_changes(conn: &Connection, s: &Session, changes: Changes) -> Outcome<()> {
    let usn = s.server_usn;
    let now = clock::now_secs();
    for json in &changes.models {
        let mut nt = schema11::notetype_from_json(json).map_err(bad)?;
        let existing = stored_mtime(conn, "notetypes", nt.id)?;
        if existing.is_some_and(|mtime| mtime > nt.mtime) {
            continue;
        }
        if existing.is_some() {
            let count = |table: &str| -> rusqlite::Result<usize> {
                conn.query_row(
                    &format!("SELECT count(*) FROM {table} WHERE ntid = ?"),
                    [nt.id],
                    |r| r.get(0),
                )
            };
            if count("fields")? != nt.fields.len() || count("templates")? != nt.templates.len() {
                return Err(bad(format!(
                    "notetype {} changed its fields or templates without a full sync",
                    nt.id
                )));
            }
        }
        if make_unique(conn, "notetypes", nt.id, &mut nt.name)? {
            nt.mtime = now;
        }
        objects::put_notetype(conn, &nt, usn)?;
    }
    for json in &changes.decks.0 {
        let deck = schema11::deck_from_json(json).map_err(bad)?;
        if stored_mtime(conn, "decks", deck.id)?.is_some_and(|mtime| mtime > deck.mtime) {
            continue;
        }
        let mut name = schema11::native_deck_name(&deck.human_name);
        let mut mtime = deck.mtime;
        if make_unique(conn, "decks", deck.id, &mut name)? {
            mtime = now;
        }
        objects::put_deck(conn, &deck, &name, mtime, usn)?;
    }
    for json in &changes.decks.1 {
        let dc = schema11::deck_config_from_json(json).map_err(bad)?;
        if stored_mtime(conn, "deck_config", dc.id)?.is_some_and(|mtime| mtime > dc.mtime) {
            continue;
        }
        objects::put_deck_config(conn, &dc, usn)?;
    }
    for tag in &changes.tags {
        let tag = objects::normalize_tag(tag);
        let exists = conn
            .query_row("SELECT 1 FROM tags WHERE tag = ?", [&tag], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            let tag = adopt_parent_case(conn, &tag)?;
            objects::put_tag(conn, &tag, usn)?;
        }
    }
    if let Some(crt) = changes.crt {
        conn.execute("UPDATE col SET crt = ?", [crt])?;
    }
    if let Some(conf) = changes.conf {
        // The newer side's config replaces the other's entirely.
        objects::put_config(conn, &conf, usn, now)?;
    }
    Ok(())
}

/// A new tag under an existing parent takes the parent's spelling.
fn adopt_parent_case(conn: &Connection, tag: &str) -> Outcome<String> {
    let parts: Vec<&str> = tag.split("::").collect();
    for n in (1..parts.len()).rev() {
        let parent = parts[..n].join("::");
        let stored: Option<String> = conn
            .query_row("SELECT tag FROM tags WHERE tag = ?", [&parent], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(stored) = stored {
            return Ok(format!("{stored}::{}", parts[n..].join("::")));
        }
    }
    Ok(tag.to_owned())
}
