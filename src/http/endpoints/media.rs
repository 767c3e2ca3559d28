//! Media sync: `/msync/begin`, `mediaChanges`, `uploadChanges`,
//! `downloadFiles`, `mediaSanity`. Stateless between requests; each takes the
//! user's media lock (never the collection's) for as long as it runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_types::{Body, Response};
use serde::{Deserialize, Serialize};

use super::{blocking, stream_body, Call};
use crate::ground::clock;
use crate::http::error::{Failure, Outcome};
use crate::http::framing;
use crate::service::account::{open_media, Account};
use crate::storage::media::{self, download, upload};

/// Most entries in one `mediaChanges` reply, as the official server sends.
const CHANGES_PER_REPLY: usize = 1000;

/// Media replies other than `downloadFiles` wrap their result; `err` must be
/// present (older clients insist) and empty.
#[derive(Serialize)]
struct Wrapped<T> {
    data: T,
    err: &'static str,
}

fn wrapped<T>(data: T) -> Wrapped<T> {
    Wrapped { data, err: "" }
}

/// A media step that failed because the disk is full says so in `err`,
/// which the client shows as it is, ending the media sync there; nothing
/// of the batch was kept.
pub(crate) async fn in_words_if_full(
    answered: Outcome<Response>,
    account: &Arc<Account>,
    zstd: bool,
) -> Outcome<Response> {
    let Err(failure) = answered else {
        return answered;
    };
    if !super::of_a_full_disk(&failure, account).await? {
        return Err(failure);
    }
    log::warn!("{}: media sync stopped: {}", account.name, failure.message);
    #[derive(Serialize)]
    struct Refused {
        data: Option<()>,
        err: &'static str,
    }
    let refused = Refused {
        data: None,
        err: super::full::DISK_FULL,
    };
    Ok(framing::reply_json(&refused, zstd))
}

/// The media usn for `/sync/meta` and `begin`: 0 for a user who never synced
/// media, without creating anything for them. Does not wait for a media
/// request in progress once the usn is known.
pub(crate) async fn current_usn(account: &Arc<Account>) -> Outcome<i64> {
    let known = account.media_usn.load(Ordering::Acquire);
    if known >= 0 {
        return Ok(known);
    }
    let mut slot = account.lock_media().await;
    let dir = account.dir.clone();
    let usn = blocking(move || -> Outcome<i64> {
        if slot.is_none() && !media::store::Store::exists(&dir) {
            return Ok(0);
        }
        Ok(open_media(&mut slot, &dir)?.last_usn()?)
    })
    .await?;
    account.media_usn.store(usn, Ordering::Release);
    Ok(usn)
}

/// `begin`: the media usn, and the host key as a media "session key" that
/// legacy clients echo back. Also answers the pre-v11 `GET ?k=..&v=..` form,
/// whose client version the router passes in `query_version`.
pub(crate) async fn begin(
    call: &mut Call,
    account: &Arc<Account>,
    query_version: Option<String>,
) -> Outcome<Response> {
    #[derive(Deserialize)]
    struct Request {
        #[serde(default)]
        v: String,
    }
    let body = match query_version {
        Some(v) => Err(v),
        None => Ok(call.json_later::<Request>().await?),
    };
    #[derive(Serialize)]
    struct Begin {
        usn: i64,
        sk: String,
    }
    let usn = current_usn(account).await?;
    let sk = call.header.host_key.clone();
    let zstd = call.zstd();
    blocking(move || {
        let version = match body {
            Err(v) => v,
            Ok(body) => body.parse()?.v,
        };
        if version.is_empty() {
            return Err(Failure::bad_request("media begin without a client version"));
        }
        Ok(framing::reply_json(&wrapped(Begin { usn, sk }), zstd))
    })
    .await
}

pub(crate) async fn changes(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        last_usn: i64,
    }
    let body = call.json_later::<Request>().await?;
    let zstd = call.zstd();
    let mut slot = account.lock_media().await;
    let dir = account.dir.clone();
    blocking(move || {
        let after = body.parse()?.last_usn;
        let store = open_media(&mut slot, &dir)?;
        let list: Vec<(String, i64, String)> = store
            .changes_after(after, CHANGES_PER_REPLY)?
            .into_iter()
            .map(|c| {
                (
                    c.name,
                    c.usn,
                    c.sha1
                        .map(|s| crate::ground::hex::encode(&s))
                        .unwrap_or_default(),
                )
            })
            .collect();
        Ok(framing::reply_json(&wrapped(list), zstd))
    })
    .await
}

pub(crate) async fn sanity(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    #[derive(Deserialize)]
    struct Request {
        local: i64,
    }
    let body = call.json_later::<Request>().await?;
    let zstd = call.zstd();
    let name = account.name.clone();
    let mut slot = account.lock_media().await;
    let dir = account.dir.clone();
    blocking(move || {
        let local = body.parse()?.local;
        let ours = open_media(&mut slot, &dir)?.live_count()?;
        let verdict = if ours == local {
            "OK"
        } else {
            log::warn!("{name}: media check: the client has {local} files, the server {ours}");
            "mediaSanity"
        };
        Ok(framing::reply_json(&wrapped(verdict), zstd))
    })
    .await
}

pub(crate) async fn upload_changes(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    let limit = call.body_limit();
    let mut body = call.take_body();
    // The whole body first, without the media lock: a phone on slow Wi-Fi
    // must not hold up the user's other devices while its batch trickles in.
    let spool = upload::Spool::new(account.dir.clone(), call.service.budget.charge());
    let spool = match body.copy_into(zstd, limit, spool).await {
        Ok(spool) => spool,
        Err(e) => {
            // Let a client still sending read the answer, not a reset.
            body.drain(limit).await;
            return Err(e.into());
        }
    };
    let mut slot = account.lock_media().await;
    let dir = account.dir.clone();
    let kept = account.clone();
    blocking(move || {
        let store = open_media(&mut slot, &dir)?;
        let body = spool
            .finish()
            .map_err(|e| Failure::internal(format!("spooling upload: {e}")))?;
        let batch = upload::read_batch(body, store.staging())?;
        let processed = batch.len();
        match store.apply(batch, clock::now_secs()) {
            Ok(usn) => {
                kept.media_usn.store(usn, Ordering::Release);
                Ok(framing::reply_json(&wrapped((processed, usn)), zstd))
            }
            Err(e) => {
                // The folder may be behind the database: reopening redoes
                // what the batch still owes before anything reads it. A
                // batch that failed after its commit moved the usn: ask
                // again.
                *slot = None;
                kept.media_usn.store(-1, Ordering::Release);
                Err(e.into())
            }
        }
    })
    .await
}

pub(crate) async fn download_files(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    #[derive(Deserialize)]
    struct Request {
        files: Vec<String>,
    }
    let body = call.json_later::<Request>().await?;
    let zstd = call.zstd();
    let mut slot = account.lock_media().await;
    let dir = account.dir.clone();
    let zip = blocking(move || -> Outcome<_> {
        let names = body.parse()?.files;
        Ok(download::prepare(open_media(&mut slot, &dir)?, names)?)
    })
    .await?;
    let len = zip.byte_len();
    // Every file is open now: an upload that replaces or deletes one renames
    // or unlinks it, and what streams is still the file as it was. So the
    // lock is not held while a slow device reads.
    let reader = framing::Encoded::new(zip, zstd, ())?;
    let body: Body = stream_body(reader);
    Ok(framing::reply_stream(body, len))
}
