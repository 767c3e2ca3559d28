//! Full syncs: `/sync/upload` and `/sync/download`, and `/sync/abort`.

use std::sync::Arc;

use http_types::Response;

use super::{blocking, stream_body, Call};
use crate::http::body::{BodyError, Incoming};
use crate::http::error::Outcome;
use crate::http::framing;
use crate::service::account::Account;
use crate::storage::collection::{download, legacy, snapshots, upload};

/// Why an upload was not taken. The client shows the message as is.
#[derive(Debug)]
enum Refused {
    TooLarge { limit: u64 },
    Damaged(String),
    DiskFull,
    Busy,
    Io(std::io::Error),
}

/// What the client shows when the server has no room left. Shared with
/// `meta`, which says it before a sync starts.
pub(crate) const DISK_FULL: &str = "The server's disk is full. Nothing was changed on the server. \
     Free some space on it (for example `sudo leitner snapshot list` shows what old \
     snapshots take), then sync again.";

impl From<std::io::Error> for Refused {
    fn from(e: std::io::Error) -> Refused {
        use framing::spool::SpoolError;
        match SpoolError::of(&e) {
            // Writing an old client's form to its file (`receive_form`).
            Some(SpoolError::TooLarge { limit }) => Refused::TooLarge { limit },
            Some(SpoolError::Damaged) => Refused::Damaged(e.to_string()),
            None if crate::ground::durable::is_disk_full(&e) => Refused::DiskFull,
            None => Refused::Io(e),
        }
    }
}

impl Refused {
    fn message(&self) -> String {
        match self {
            Refused::TooLarge { limit } => format!(
                "The collection is larger than this server accepts ({} MB; the limit is set \
                 with MAX_SYNC_PAYLOAD_MEGS). Nothing was changed on the server.",
                limit >> 20
            ),
            Refused::Damaged(why) => format!(
                "The uploaded collection is damaged or incomplete ({why}). Nothing was changed \
                 on the server. Use Tools > Check Database in Anki, then sync again."
            ),
            Refused::DiskFull => DISK_FULL.into(),
            Refused::Busy => "The server is busy receiving other uploads. Nothing was \
                changed on the server; sync again in a minute."
                .into(),
            Refused::Io(e) => format!("The server could not store the upload ({e})."),
        }
    }
}

/// Streams a request body through the decoder into a temp file in `dir`.
async fn receive(
    dir: std::path::PathBuf,
    body: &mut Incoming,
    zstd: bool,
    limit: u64,
) -> Result<upload::Received, Refused> {
    let (received, ()) =
        receive_through(dir, body, zstd, limit, |out| out, |out| out.finish()).await?;
    Ok(received)
}

/// Receives an old client's upload form (sync versions 8 to 10): the
/// collection in its `data` part, gzipped (as these clients send it) or
/// not, into a temp file in `dir`; its fields (the host key among them come
/// after the file) in memory. `limit` caps the form and the file alike.
pub(crate) async fn receive_form(
    dir: std::path::PathBuf,
    body: &mut Incoming,
    content_type: &str,
    limit: u64,
) -> Outcome<(upload::Received, framing::multipart::Fields)> {
    let form = framing::multipart::Form::new(content_type)
        .map_err(|e| crate::http::error::Failure::bad_request(e.to_string()))?;
    let spool = move |out| framing::spool::Spool::new(form, out, limit);
    let finish = |spool: framing::spool::Spool<upload::Writer>| {
        let (fields, out) = spool.finish()?;
        out.finish()?;
        Ok(fields)
    };
    receive_through(dir, body, false, limit, spool, finish)
        .await
        // The fields, the host key among them, come after the file: a
        // refused file leaves no user to answer as a current client is
        // answered (a 200 whose text is shown), so a plain 400 says why.
        .map_err(|refused| crate::http::error::Failure::bad_request(refused.message()))
}

/// Streams `body` (through zstd when `zstd`) into `wrap` of a new temp file
/// in `dir`, then `finish`es it on the blocking pool; on refusal, lets the
/// client finish sending so it reads the answer.
async fn receive_through<S, T>(
    dir: std::path::PathBuf,
    body: &mut Incoming,
    zstd: bool,
    limit: u64,
    wrap: impl FnOnce(upload::Writer) -> S,
    finish: impl FnOnce(S) -> std::io::Result<T> + Send + 'static,
) -> Result<(upload::Received, T), Refused>
where
    S: std::io::Write + Send + 'static,
    T: Send + 'static,
{
    let (received, out) = blocking(move || upload::Received::create(&dir)).await?;
    let refused = match body.copy_into(zstd, limit, wrap(out)).await {
        Ok(sink) => match blocking(move || finish(sink)).await {
            Ok(done) => return Ok((received, done)),
            Err(e) => Refused::from(e),
        },
        Err(BodyError::TooLarge) => Refused::TooLarge { limit },
        Err(BodyError::Malformed(e)) => return Err(Refused::Damaged(e.to_string())),
        Err(BodyError::Output(e)) => Refused::from(e),
        Err(BodyError::Busy) => Refused::Busy,
    };
    body.drain(limit).await;
    Err(refused)
}

pub(crate) async fn upload(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    let limit = call.service.collection_limit();
    let dir = account.dir.clone();
    let received = match call.legacy_upload.take() {
        // An old client's form, spooled before its host key was known.
        Some(received) => received,
        None => {
            let mut body = call.take_body();
            // Receiving takes the longest and touches only a temp file: the
            // user's other requests need not wait for it.
            match receive(dir, &mut body, zstd, limit).await {
                Ok(received) => received,
                Err(refused) => return Ok(refuse_upload(account, refused, zstd).await),
            }
        }
    };

    // The body is in. Checking and installing it can take a while on an SD
    // card, and the client gives up after 30-60 s without traffic: send the
    // head now (which restarts its timer) and the verdict when it is known.
    // Every outcome from here on is a 200 whose text the client shows, so the
    // status can go first; the size header is "OK"'s, a hint the client uses
    // only to size a buffer.
    let (verdict_tx, verdict_rx) = smol::channel::bounded(1);
    let job = call.service.activity.begin_job();
    let activity = call.service.activity.clone();
    let service = call.service.clone();
    let account = account.clone();
    let compressing = account.compressing();
    smol::spawn(async move {
        let (verdict, snapshot) = check_and_install(&account, received).await;
        let _ = verdict_tx
            .send(blocking(move || framing::encode(verdict.as_bytes(), zstd)).await)
            .await;
        if let Some(raw) = snapshot {
            // Compressing the old collection is not the client's business:
            // after answering and once requests calm down (the snapshot is
            // already safe as a hard link), holding the job so we stay up.
            activity.quiet(SNAPSHOT_CALM).await;
            let limits = service.config.snapshots;
            let kind = snapshots::Kind::Upload;
            if let Err(e) = blocking(move || snapshots::pack(&raw, kind, limits)).await {
                log::error!("{}: compressing a snapshot failed: {e}", account.name);
            }
        }
        drop(compressing);
        drop(job);
    })
    .detach();
    Ok(framing::reply_later(verdict_rx, 2))
}

/// Validates a received upload and puts it in place. Returns the text for the
/// client and the snapshot of the replaced collection, if there was one.
async fn check_and_install(
    account: &Arc<Account>,
    mut received: upload::Received,
) -> (String, Option<std::path::PathBuf>) {
    let checked = blocking(move || {
        upload::validate(received.path()).map_err(Refused::Damaged)?;
        Ok::<_, Refused>(received)
    })
    .await;
    received = match checked {
        Ok(received) => received,
        Err(refused) => {
            log::warn!("{}: upload refused: {}", account.name, refused.message());
            return (refused.message(), None);
        }
    };
    let files = account.replacing_files().await;
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    let installed = blocking(move || -> Outcome<_> {
        state.close_collection()?;
        Ok(upload::install(&dir, &mut received)?)
    })
    .await;
    drop(files);
    match installed {
        Ok(snapshot) => ("OK".into(), snapshot),
        Err(failure) => {
            log::error!(
                "{}: installing an upload failed: {}",
                account.name,
                failure.message
            );
            (
                Refused::Io(std::io::Error::other(failure.message)).message(),
                None,
            )
        }
    }
}

async fn refuse_upload(account: &Account, refused: Refused, zstd: bool) -> Response {
    log::warn!("{}: upload refused: {}", account.name, refused.message());
    // The client shows a 200's text to the user as the reason.
    reply_text(refused.message(), zstd).await
}

pub(crate) async fn download(call: &mut Call, account: &Arc<Account>) -> Outcome<Response> {
    let zstd = call.zstd();
    if !zstd {
        return download_schema11(account).await;
    }
    let pinned = loop {
        let files = account.reading_files().await;
        let mut state = account.lock().await;
        let dir = account.dir.clone();
        let opened = blocking(move || {
            state.abort_session();
            download::open(state.collection(&dir)?, &dir)
        })
        .await;
        match opened {
            Ok(pinned) => break (pinned, files),
            // Another download pins an older state and the WAL has moved
            // on: wait for it to finish, then fold the WAL in.
            Err(e) if download::is_busy(&e) => {
                drop(files);
                drop(account.replacing_files().await);
            }
            Err(e) => return Err(e.into()),
        }
    };
    // The user's lock is free again: a phone reading slowly holds up none of
    // the user's other devices. The read guard keeps only an upload's install
    // waiting (it would replace the file under the pin).
    let (pinned, files) = pinned;
    let len = pinned.len;
    let reader = framing::Encoded::new(pinned, true, files)?;
    Ok(framing::reply_stream(stream_body(reader), len))
}

/// A download for a client of sync versions 8 to 10: a copy in schema 11,
/// made under the user's lock, sent plain.
async fn download_schema11(account: &Arc<Account>) -> Outcome<Response> {
    let mut state = account.lock().await;
    let dir = account.dir.clone();
    let copy = blocking(move || {
        state.abort_session();
        legacy::downgraded_copy(state.collection(&dir)?, &dir)
    })
    .await?;
    let mut res = Response::new(http_types::StatusCode::Ok);
    res.set_body(stream_body(copy));
    Ok(res)
}

/// How long requests must have stopped before a snapshot is compressed.
const SNAPSHOT_CALM: std::time::Duration = std::time::Duration::from_secs(2);

async fn reply_text(text: String, zstd: bool) -> Response {
    blocking(move || framing::reply(text.as_bytes(), zstd)).await
}
