//! `finish` commits; `abort` rolls back.

use std::sync::Arc;

use http_types::Response;
use serde_json::Value;

use super::session_key;
use crate::ground::clock;
use crate::http::endpoints::{blocking, Call};
use crate::http::error::{Failure, Outcome};
use crate::http::framing::{self};
use crate::service::account::Account;
pub(crate) async fn finish(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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

pub(crate) async fn abort(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
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
