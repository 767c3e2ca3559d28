//! `/sync/meta`: the first request of every sync, and the client's periodic
//! "is there anything to sync?" check.

use std::sync::Arc;

use http_types::Response;
use serde::{Deserialize, Serialize};

use super::{blocking, reply_json, Call};
use crate::account::Account;
use crate::clock;
use crate::collection;
use crate::error::{Failure, Outcome};
use crate::framing::{MAX_VERSION, MIN_VERSION};

#[derive(Deserialize)]
struct MetaRequest {
    #[serde(rename = "v")]
    version: i64,
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "mod")]
    modified: i64,
    #[serde(rename = "scm")]
    schema_modified: i64,
    usn: i32,
    #[serde(rename = "ts")]
    server_time: i64,
    msg: String,
    cont: bool,
    #[serde(rename = "hostNum")]
    host_num: u32,
    empty: bool,
    media_usn: i64,
}

pub async fn meta(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let request: MetaRequest = call.json().await?;
    if !(MIN_VERSION as i64..=MAX_VERSION as i64).contains(&request.version) {
        return Err(Failure::too_old(format!(
            "sync version {} is not supported",
            request.version
        )));
    }
    let now = clock::now_secs();
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    let oversize = call.service.collection_limit();
    let session = call.header.session.clone();
    let idle = call.service.config.sync_idle;
    let status = blocking(move || -> Outcome<collection::Status> {
        state.expire_session(idle);
        // The same client starting over abandons its own sync; another
        // device's check (a phone in the background) leaves it running and
        // is answered from the last committed state.
        if state.session.as_ref().is_some_and(|s| s.key == session) {
            state.abort_session();
        }
        let mut status = if state.has_session() {
            collection::status(&collection::open(&dir.join(collection::FILE_NAME))?)?
        } else {
            collection::status(state.collection(&dir)?)?
        };
        // Like the official server: a collection too large to upload again is
        // only ever offered as a one-way sync.
        let len = std::fs::metadata(dir.join(collection::FILE_NAME))?.len();
        if len > oversize {
            status.schema_modified = clock::now_millis();
        }
        Ok(status)
    })
    .await?;
    let media_usn = super::media::current_usn(account).await?;

    let (cont, msg) = if clock::is_unset(now) {
        // Every client would refuse our timestamps anyway; say why instead.
        (
            false,
            "The sync server's clock is not set yet (it has no network time). \
             Check its internet connection and try again in a few minutes."
                .to_string(),
        )
    } else {
        (true, String::new())
    };
    let meta = Meta {
        modified: status.modified,
        schema_modified: status.schema_modified,
        usn: status.usn,
        server_time: now,
        msg,
        cont,
        host_num: 0,
        empty: status.empty,
        media_usn,
    };
    Ok(reply_json(meta, call.zstd()).await)
}
