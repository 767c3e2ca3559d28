//! `start`: the transaction begins; the server's graves go back.

use std::sync::Arc;
use std::time::Instant;

use http_types::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{session_key, Session};
use crate::http::endpoints::{blocking, Call};
use crate::http::error::Outcome;
use crate::http::framing::{self};
use crate::service::account::Account;

use super::graves::{apply_graves, collect_graves, Graves};
#[derive(Deserialize)]
struct StartRequest {
    #[serde(rename = "minUsn")]
    min_usn: i32,
    #[serde(rename = "lnewer")]
    client_is_newer: bool,
    #[serde(default)]
    graves: Option<Value>,
}

pub(crate) async fn start(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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
