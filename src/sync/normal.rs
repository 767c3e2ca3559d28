//! Normal (incremental) sync: `start` ... `finish`, one SQLite transaction
//! spread over many requests, held on the user's own connection.
//!
//! A second device of the same user that calls `start` takes over: the first
//! sync is rolled back and its next request gets 409 ("another device is
//! syncing"), as with the official server. Unlike it, a `meta` from another
//! device (a phone's background check) does not kill a running sync; it is
//! answered from the last committed state. A sync left idle for
//! `LEITNER_SYNC_IDLE_SECS` (default 120) is rolled back when the user's next
//! request arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_types::Response;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{blocking, Call, Later};
use crate::account::{Account, AccountState};
use crate::clock;
use crate::collection::schema11::{self, blob, int};
use crate::collection::text;
use crate::error::{Failure, Outcome};
use crate::framing::{self, Json};

/// Rows per `chunk` reply, as the official server.
const CHUNK_BUDGET: i32 = 250;

pub struct Session {
    /// The client's session key (`s` of `start`).
    pub key: String,
    /// `col.usn` at `start`: stamped on everything this sync writes.
    pub server_usn: i32,
    /// The client's `minUsn`: rows with `usn >= client_usn` are news to it.
    pub client_usn: i32,
    pub client_is_newer: bool,
    /// Ids still to send in `chunk` replies, taken at the first `chunk`.
    pending: Option<Pending>,
    touched: Instant,
}

struct Pending {
    revlog: Vec<i64>,
    cards: Vec<i64>,
    notes: Vec<i64>,
}

impl AccountState {
    /// Rolls back a sync nobody has touched for `idle`.
    pub fn expire_session(&mut self, idle: Duration) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.touched.elapsed() > idle)
        {
            log::warn!("rolling back an abandoned sync");
            self.abort_session();
        }
    }

    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Whether a normal sync is under way: started, and touched within
    /// `idle` (an older one is abandoned and will be rolled back).
    pub fn syncing(&self, idle: Duration) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.touched.elapsed() <= idle)
    }
}

#[derive(Deserialize)]
struct StartRequest {
    #[serde(rename = "minUsn")]
    min_usn: i32,
    #[serde(rename = "lnewer")]
    client_is_newer: bool,
    #[serde(default)]
    graves: Option<Value>,
}

#[derive(Serialize, Default)]
struct Graves {
    cards: Vec<i64>,
    notes: Vec<i64>,
    decks: Vec<i64>,
}

pub async fn start(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later::<StartRequest>().await?;
    let key = session_key(call)?;
    let zstd = call.zstd();
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    blocking(move || {
        let request = body.parse()?;
        state.abort_session();
        let conn = state.collection(&dir)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Outcome<(i32, Graves)> {
            let server_usn: i32 = conn.query_row("SELECT usn FROM col", [], |r| r.get(0))?;
            let graves = collect_graves(conn, request.min_usn)?;
            if let Some(legacy) = request.graves.as_ref().filter(|g| !g.is_null()) {
                apply_graves(conn, legacy, server_usn)?;
            }
            Ok((server_usn, graves))
        })();
        match result {
            Ok((server_usn, graves)) => {
                state.session = Some(Session {
                    key,
                    server_usn,
                    client_usn: request.min_usn,
                    client_is_newer: request.client_is_newer,
                    pending: None,
                    touched: Instant::now(),
                });
                Ok(framing::reply_json(&graves, zstd))
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })
    .await
}

fn session_key(call: &Call) -> Outcome<String> {
    if call.header.session.is_empty() {
        return Err(Failure::bad_request("missing session key"));
    }
    Ok(call.header.session.clone())
}

/// Runs one step of the sync in progress on the blocking pool. No sync, or
/// another device's: 409. A step that fails rolls the whole sync back.
async fn step(
    call: &Call,
    account: &Arc<Account>,
    work: impl FnOnce(&Connection, &mut Session) -> Outcome<Json> + Send + 'static,
) -> Outcome<Response> {
    step_then(call, account, || Ok(()), |(), conn, s| work(conn, s)).await
}

/// [`step`] for a request with a JSON body, parsed in the same hop (a bad
/// body is refused before the sync is touched).
async fn step_with<T: DeserializeOwned + 'static>(
    call: &Call,
    account: &Arc<Account>,
    body: Later<T>,
    work: impl FnOnce(T, &Connection, &mut Session) -> Outcome<Json> + Send + 'static,
) -> Outcome<Response> {
    step_then(call, account, move || body.parse(), work).await
}

async fn step_then<T>(
    call: &Call,
    account: &Arc<Account>,
    request: impl FnOnce() -> Outcome<T> + Send + 'static,
    work: impl FnOnce(T, &Connection, &mut Session) -> Outcome<Json> + Send + 'static,
) -> Outcome<Response> {
    let key = session_key(call)?;
    let zstd = call.zstd();
    let idle = call.service.config.sync_idle;
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    blocking(move || {
        let request = request()?;
        state.expire_session(idle);
        match &state.session {
            Some(s) if s.key == key => {}
            _ => return Err(Failure::conflict("no sync in progress for this device")),
        }
        let mut session = state.session.take().expect("checked above");
        let conn = state.collection(&dir)?;
        // A panic (a bug) in a step rolls the sync back like any failure, so
        // the user can start a new one at once.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let value = work(request, conn, &mut session)?;
            test_hook_panic();
            Ok(value)
        }))
        .unwrap_or_else(|_| {
            Err(Failure::internal(
                "a sync step panicked; the sync was rolled back",
            ))
        });
        match outcome {
            Ok(value) => {
                session.touched = Instant::now();
                state.session = Some(session);
                Ok(framing::reply(&value.0, zstd))
            }
            Err(failure) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(failure)
            }
        }
    })
    .await
}

/// Test-only: with `LEITNER_TEST_PANIC_FILE` set (debug builds), a step
/// panics once after its work when that file exists, removing it.
fn test_hook_panic() {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("LEITNER_TEST_PANIC_FILE") {
        if std::fs::remove_file(path).is_ok() {
            panic!("test hook: a sync step panics");
        }
    }
}

fn collect_graves(conn: &Connection, min_usn: i32) -> Outcome<Graves> {
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
fn apply_graves(conn: &Connection, graves: &Value, usn: i32) -> Outcome<()> {
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

#[derive(Deserialize)]
struct ChunkOf<T> {
    chunk: T,
}

pub async fn apply_graves_step(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later().await?;
    step_with(call, account, body, |request: ChunkOf<Value>, conn, s| {
        apply_graves(conn, &request.chunk, s.server_usn)?;
        Ok(Json::of(&()))
    })
    .await
}

// ------------------------------------------------------------ applyChanges

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

pub async fn apply_changes(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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
    let mut changes = Changes::default();
    let ids: Vec<(i64, i32)> = conn
        .prepare("SELECT id, usn FROM notetypes WHERE usn >= ?")?
        .query_map([s.client_usn], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, usn) in ids {
        changes
            .models
            .push(schema11::notetype_to_json(&load_notetype(conn, id)?, usn));
    }
    let mut stmt =
        conn.prepare("SELECT id, name, mtime_secs, usn, common, kind FROM decks WHERE usn >= ?")?;
    let mut rows = stmt.query([s.client_usn])?;
    while let Some(r) = rows.next()? {
        let row = schema11::DeckRow {
            id: r.get(0)?,
            human_name: schema11::human_deck_name(&r.get::<_, String>(1)?),
            mtime: r.get(2)?,
            common: decode(&r.get::<_, Vec<u8>>(4)?)?,
            kind: decode(&r.get::<_, Vec<u8>>(5)?)?,
        };
        changes
            .decks
            .0
            .push(schema11::deck_to_json(&row, r.get(3)?));
    }
    let mut stmt =
        conn.prepare("SELECT id, name, mtime_secs, usn, config FROM deck_config WHERE usn >= ?")?;
    let mut rows = stmt.query([s.client_usn])?;
    while let Some(r) = rows.next()? {
        let row = schema11::DeckConfigRow {
            id: r.get(0)?,
            name: r.get(1)?,
            mtime: r.get(2)?,
            config: decode(&r.get::<_, Vec<u8>>(4)?)?,
        };
        changes
            .decks
            .1
            .push(schema11::deck_config_to_json(&row, r.get(3)?));
    }
    changes.tags = conn
        .prepare("SELECT tag FROM tags WHERE usn >= ?")?
        .query_map([s.client_usn], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !s.client_is_newer {
        let mut conf = serde_json::Map::new();
        let mut stmt = conn.prepare("SELECT key, val FROM config")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let val: Vec<u8> = r.get(1)?;
            conf.insert(
                r.get(0)?,
                serde_json::from_slice(&val).unwrap_or(Value::Null),
            );
        }
        changes.conf = Some(conf);
        changes.crt = Some(conn.query_row("SELECT crt FROM col", [], |r| r.get(0))?);
    }
    Ok(changes)
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Outcome<M> {
    M::decode(bytes).map_err(|e| Failure::internal(format!("stored protobuf: {e}")))
}

fn load_notetype(conn: &Connection, id: i64) -> Outcome<schema11::NotetypeRow> {
    let (name, mtime, config): (String, i64, Vec<u8>) = conn.query_row(
        "SELECT name, mtime_secs, config FROM notetypes WHERE id = ?",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let fields = conn
        .prepare("SELECT name, config FROM fields WHERE ntid = ? ORDER BY ord")?
        .query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(n, c)| Ok((n, decode(&c)?)))
        .collect::<Outcome<_>>()?;
    let templates = conn
        .prepare("SELECT name, config FROM templates WHERE ntid = ? ORDER BY ord")?
        .query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(n, c)| Ok((n, decode(&c)?)))
        .collect::<Outcome<_>>()?;
    Ok(schema11::NotetypeRow {
        id,
        name,
        mtime,
        config: decode(&config)?,
        fields,
        templates,
    })
}

fn bad(e: String) -> Failure {
    Failure::bad_request(e)
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
        conn.execute(
            "INSERT OR REPLACE INTO decks (id, name, mtime_secs, usn, common, kind) VALUES (?, ?, ?, ?, ?, ?)",
            params![deck.id, name, mtime, usn, blob(&deck.common), blob(&deck.kind)],
        )?;
    }
    for json in &changes.decks.1 {
        let dc = schema11::deck_config_from_json(json).map_err(bad)?;
        if stored_mtime(conn, "deck_config", dc.id)?.is_some_and(|mtime| mtime > dc.mtime) {
            continue;
        }
        conn.execute(
            "INSERT OR REPLACE INTO deck_config (id, name, mtime_secs, usn, config) VALUES (?, ?, ?, ?, ?)",
            params![dc.id, dc.name, dc.mtime, usn, blob(&dc.config)],
        )?;
    }
    for tag in &changes.tags {
        let tag = normalize_tag(tag);
        let exists = conn
            .query_row("SELECT 1 FROM tags WHERE tag = ?", [&tag], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            let tag = adopt_parent_case(conn, &tag)?;
            conn.execute(
                "INSERT INTO tags (tag, usn, collapsed, config) VALUES (?, ?, 1, NULL)",
                params![tag, usn],
            )?;
        }
    }
    if let Some(crt) = changes.crt {
        conn.execute("UPDATE col SET crt = ?", [crt])?;
    }
    if let Some(conf) = changes.conf {
        // The newer side's config replaces the other's entirely.
        conn.execute("DELETE FROM config", [])?;
        for (key, value) in conf {
            conn.execute(
                "INSERT INTO config (KEY, usn, mtime_secs, val) VALUES (?, ?, ?, ?)",
                params![
                    key,
                    usn,
                    now,
                    serde_json::to_vec(&value).expect("JSON values serialise")
                ],
            )?;
        }
    }
    Ok(())
}

/// NFC; per `::` component no ASCII control characters or spaces, and an
/// empty component becomes "blank".
fn normalize_tag(tag: &str) -> String {
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

// ------------------------------------------------------------------ chunks

fn ids(conn: &Connection, table: &str, min_usn: i32) -> rusqlite::Result<Vec<i64>> {
    conn.prepare(&format!("SELECT id FROM {table} WHERE usn >= ?"))?
        .query_map([min_usn], |r| r.get(0))?
        .collect()
}

pub async fn chunk(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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

pub async fn apply_chunk(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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

/// Whether the server's row wins: changed here since the client last synced,
/// and at least as new.
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
    let config: crate::collection::proto::NotetypeConfig =
        decode(&config.ok_or_else(|| bad(format!("note refers to missing notetype {mid}")))?)?;
    let fields: usize =
        conn.query_row("SELECT count(*) FROM fields WHERE ntid = ?", [mid], |r| {
            r.get(0)
        })?;
    Ok((fields.max(1), config.sort_field_idx as usize))
}

// ------------------------------------------------------- sanity and finish

#[derive(Deserialize)]
struct SanityRequest {
    client: Vec<Value>,
}

#[derive(Serialize)]
struct SanityReply {
    status: &'static str,
    c: Value,
    s: Value,
}

pub async fn sanity_check(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later::<SanityRequest>().await?;
    let key = session_key(call)?;
    let zstd = call.zstd();
    let idle = call.service.config.sync_idle;
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    blocking(move || {
        let request = body.parse()?;
        state.expire_session(idle);
        if !state.session.as_ref().is_some_and(|s| s.key == key) {
            return Err(Failure::conflict("no sync in progress for this device"));
        }
        let conn = state.collection(&dir)?;
        let count = |table: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        };
        let pending: i64 = conn.query_row(
            "SELECT (SELECT count(*) FROM cards WHERE usn = -1) + (SELECT count(*) FROM notes WHERE usn = -1)
              + (SELECT count(*) FROM revlog WHERE usn = -1) + (SELECT count(*) FROM graves WHERE usn = -1)
              + (SELECT count(*) FROM decks WHERE usn = -1) + (SELECT count(*) FROM deck_config WHERE usn = -1)
              + (SELECT count(*) FROM tags WHERE usn = -1) + (SELECT count(*) FROM notetypes WHERE usn = -1)",
            [],
            |r| r.get(0),
        )?;
        let server = json!([[0, 0, 0], count("cards")?, count("notes")?, count("revlog")?, 0,
                            count("notetypes")?, count("decks")?, count("deck_config")?]);
        let mut client = Value::Array(request.client);
        if let Some(c) = client.as_array_mut() {
            if !c.is_empty() {
                c[0] = json!([0, 0, 0]);
            }
            if c.len() > 4 {
                c[4] = json!(0);
            }
        }
        let same = pending == 0 && client.as_array().map(|c| c.len()) == Some(8)
            && (1..8).all(|i| int(client.get(i)) == int(server.get(i)));
        if !same {
            // The client now rolls back and asks for a full sync; so do we.
            log::warn!("sanity check failed: client {client}, server {server}");
            state.abort_session();
        }
        let reply = SanityReply {
            status: if same { "ok" } else { "bad" },
            c: client,
            s: if pending == 0 { server } else { Value::Null },
        };
        Ok(framing::reply_json(&reply, zstd))
    })
    .await
}

pub async fn finish(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let key = session_key(call)?;
    let zstd = call.zstd();
    let idle = call.service.config.sync_idle;
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    blocking(move || {
        state.expire_session(idle);
        if !state.session.as_ref().is_some_and(|s| s.key == key) {
            return Err(Failure::conflict("no sync in progress for this device"));
        }
        state.session = None;
        let conn = state.collection(&dir)?;
        // The reply must be exactly the mod that later metas report.
        let now = clock::now_millis();
        let committed = conn
            .execute("UPDATE col SET ls = ?1, mod = ?1, usn = usn + 1", [now])
            .and_then(|_| conn.execute_batch("COMMIT"));
        if let Err(e) = committed {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(framing::reply_json(&now, zstd))
    })
    .await
}

pub async fn abort(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    // Any device may abort: a user cancelling on the desktop does it from a
    // new client object with a new session key.
    let zstd = call.zstd();
    let mut state = account.lock().await;
    Ok(blocking(move || {
        state.abort_session();
        framing::reply_json(&Value::Null, zstd)
    })
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

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
