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

mod changes;
mod chunks;
mod finish;
mod graves;
mod sanity;
mod start;

pub(crate) use changes::apply_changes;
pub(crate) use chunks::{apply_chunk, chunk};
pub(crate) use finish::{abort, finish};
pub(crate) use graves::apply_graves_step;
pub(crate) use sanity::sanity_check;
pub(crate) use start::start;

use std::sync::Arc;
use std::time::Instant;

use http_types::Response;
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{blocking, Call, Later};
use crate::http::error::{Failure, Outcome};
use crate::http::framing::{self, Json};
use crate::service::account::Account;
use crate::service::session::{Pending, Session};

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

#[derive(Deserialize)]
struct ChunkOf<T> {
    chunk: T,
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Outcome<M> {
    M::decode(bytes).map_err(|e| Failure::internal(format!("stored protobuf: {e}")))
}

fn bad(e: String) -> Failure {
    Failure::bad_request(e)
}
