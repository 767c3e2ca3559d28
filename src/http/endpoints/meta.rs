//! `/sync/meta`: the first request of every sync, and the client's periodic
//! "is there anything to sync?" check.

use std::sync::Arc;

use http_types::Response;
use serde::{Deserialize, Serialize};

use super::{blocking, Call};
use crate::ground::clock;
use crate::http::error::{Failure, Outcome};
use crate::http::framing::{self, MAX_VERSION, MIN_VERSION};
use crate::service::account::Account;
use crate::storage::collection;

#[derive(Deserialize)]
struct MetaRequest {
    #[serde(rename = "v")]
    version: i64,
    /// The client's full description: `anki,26.9.3 (0b9d9a1),lin:debian:13`.
    #[serde(rename = "cv", default)]
    client: String,
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

pub(crate) async fn meta(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    match answer(call, account).await {
        // On a full disk the client is told why, as before any other sync,
        // not "server problem".
        Err(failure) if super::of_a_full_disk(&failure, account).await? => {
            log::warn!(
                "{}: meta failed on a full disk: {}",
                account.name,
                failure.message
            );
            Ok(disk_full(zstd))
        }
        answered => answered,
    }
}

/// The reply that stops a sync before it starts because the disk is full.
fn disk_full(zstd: bool) -> Response {
    let meta = Meta {
        modified: 0,
        schema_modified: 0,
        usn: 0,
        server_time: clock::now_secs(),
        msg: super::full::DISK_FULL.to_string(),
        cont: false,
        host_num: 0,
        empty: false,
        media_usn: 0,
    };
    framing::reply_json(&meta, zstd)
}

async fn answer(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let body = call.json_later::<MetaRequest>().await?;
    let described = call.client_described();
    // Known after the first request (kept by the account); read before the
    // hop so that the request takes one.
    let media_usn = super::media::current_usn(account).await?;
    let reply = Reply {
        zstd: call.zstd(),
        limit: call.service.collection_limit(),
        media_usn,
        now: clock::now_secs(),
    };
    // Answered at once: a download or a sync step of another device holds
    // the lock for as long as it takes, and then the committed state is the
    // answer anyway.
    let mut state = match account.try_lock() {
        Some(state) => state,
        None if account.collection_path().exists() => {
            let path = account.collection_path();
            let kept = account.clone();
            return blocking(move || {
                let version = check_version(body.parse()?, described)?;
                let status = collection::status(&collection::open(&path)?)?;
                let facts = Facts::read(status, &kept)?;
                Ok(reply.to(facts, version))
            })
            .await;
        }
        None => account.lock().await,
    };
    let dir = account.dir.clone();
    let session = call.header.session.clone();
    let idle = call.service.config.sync_idle;
    let kept = account.clone();
    blocking(move || {
        let version = check_version(body.parse()?, described)?;
        state.expire_session(idle);
        // The same client starting over abandons its own sync; another
        // device's check (a phone in the background) leaves it running and
        // is answered from the last committed state.
        if state.session.as_ref().is_some_and(|s| s.key == session) {
            state.abort_session();
        }
        let status = if state.has_session() {
            collection::status(&collection::open(&dir.join(collection::FILE_NAME))?)?
        } else {
            collection::status(state.collection(&dir)?)?
        };
        Ok(reply.to(Facts::read(status, &kept)?, version))
    })
    .await
}

/// The client's sync version, if we speak it (501 otherwise, which old
/// clients show as "please update").
fn check_version(request: MetaRequest, described: impl FnOnce(&str)) -> Outcome<i64> {
    described(&request.client);
    if !(MIN_VERSION as i64..=MAX_VERSION as i64).contains(&request.version) {
        return Err(Failure::too_old(format!(
            "sync version {} is not supported",
            request.version
        )));
    }
    Ok(request.version)
}

/// What `meta` reports, read on the blocking pool in one go.
struct Facts {
    status: collection::Status,
    /// The collection file's size.
    len: u64,
    disk_full: bool,
}

impl Facts {
    /// Blocking.
    fn read(status: collection::Status, account: &Account) -> Outcome<Facts> {
        Ok(Facts {
            status,
            len: std::fs::metadata(account.collection_path())?.len(),
            disk_full: !account.room_for_a_sync(),
        })
    }
}

/// What the reply needs besides the facts.
struct Reply {
    zstd: bool,
    /// The largest collection the server takes in an upload.
    limit: u64,
    media_usn: i64,
    now: i64,
}

impl Reply {
    /// The reply to a client of sync `version`, encoded. Blocking.
    fn to(self, facts: Facts, version: i64) -> Response {
        let Facts {
            mut status,
            len,
            disk_full,
        } = facts;
        // Like the official server: a collection too large to upload again
        // is only ever offered as a one-way sync.
        if len > self.limit {
            status.schema_modified = clock::now_millis();
        }
        let (cont, msg) = if clock::is_unset(self.now) {
            // Every client would refuse our timestamps anyway; say why
            // instead.
            (
                false,
                "The sync server's clock is not set yet (it has no network time). \
                 Check its internet connection and try again in a few minutes."
                    .to_string(),
            )
        } else if status.sched_v2 && version < 9 {
            // The official server's words, for clients that predate what
            // the collection uses.
            (
                false,
                "Your client does not support the v2 scheduler".to_string(),
            )
        } else if status.creation_offset && version < 10 {
            (
                false,
                "Your client does not support the new timezone handling.".to_string(),
            )
        } else if disk_full {
            // A sync would fail halfway with "disk I/O error": say why
            // instead.
            (false, super::full::DISK_FULL.to_string())
        } else {
            (true, String::new())
        };
        let meta = Meta {
            modified: status.modified,
            schema_modified: status.schema_modified,
            usn: status.usn,
            server_time: self.now,
            msg,
            cont,
            host_num: 0,
            empty: status.empty,
            media_usn: self.media_usn,
        };
        framing::reply_json(&meta, self.zstd)
    }
}
