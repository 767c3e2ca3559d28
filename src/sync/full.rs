//! Full syncs: `/sync/upload` and `/sync/download`, and `/sync/abort`.

use std::sync::Arc;

use http_types::{Body, Response};
use smol::io::BufReader;
use smol::Unblock;

use super::{blocking, reply_json, Call};
use crate::account::Account;
use crate::collection::{download, snapshots, upload};
use crate::error::{Failure, Outcome};
use crate::framing;

pub async fn upload(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    let limit = call.service.collection_limit();
    let dir = account.dir.clone();
    let mut body = call.take_body();
    // Receiving and checking take the longest and touch only a temp file: the
    // user's other requests need not wait for them.
    let received = blocking(move || {
        let received = upload::receive(&dir, &mut body, zstd, limit)?;
        upload::validate(received.path()).map_err(upload::Refused::Damaged)?;
        Ok::<_, upload::Refused>(received)
    })
    .await;
    let mut received = match received {
        Ok(received) => received,
        Err(refused) => {
            log::warn!("{}: upload refused: {}", account.name, refused.message());
            // The client shows a 200's text to the user as the reason.
            return Ok(reply_text(refused.message(), zstd).await);
        }
    };

    let mut state = account.lock().await;
    let dir = account.dir.clone();
    let snapshot = blocking(move || -> Outcome<_> {
        state.close_collection()?;
        Ok(upload::install(&dir, &mut received)?)
    })
    .await?;
    if let Some(raw) = snapshot {
        // Compressing the old collection is not the client's business: do it
        // after answering, but keep the server alive until it is done.
        let job = call.service.activity.begin();
        let name = account.name.clone();
        smol::spawn(async move {
            if let Err(e) = blocking(move || snapshots::pack(&raw)).await {
                log::error!("{name}: compressing a snapshot failed: {e}");
            }
            drop(job);
        })
        .detach();
    }
    Ok(reply_text("OK".into(), zstd).await)
}

pub async fn download(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    let (file, len, state) = blocking(move || -> Outcome<_> {
        let (file, len) = download::open(&mut state, &dir)?;
        Ok((file, len, state))
    })
    .await?;
    if !zstd {
        return Err(Failure::bad_request("downloads need sync version 11"));
    }
    // The lock travels with the body: this user's next request waits until
    // the last byte is out, so the file cannot change under the stream.
    let reader = download::Compressed::new(file, state)?;
    let body = Body::from_reader(
        BufReader::new(SyncReader(std::sync::Mutex::new(Unblock::new(reader)))),
        None,
    );
    Ok(framing::reply_stream(body, len))
}

pub async fn abort(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    // Nothing to roll back until normal syncs hold state; still wait for any
    // request of this user in flight, as a later abort would.
    drop(account.lock().await);
    Ok(reply_json((), call.zstd()).await)
}

async fn reply_text(text: String, zstd: bool) -> Response {
    blocking(move || framing::reply(text.as_bytes(), zstd)).await
}

/// http-types wants a `Sync` body; a reader that is only `Send` becomes one
/// behind a mutex that is never contended (only the body's owner reads it).
struct SyncReader<R>(std::sync::Mutex<R>);

impl<R: smol::io::AsyncRead + Unpin> smol::io::AsyncRead for SyncReader<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        std::pin::Pin::new(inner).poll_read(cx, buf)
    }
}
