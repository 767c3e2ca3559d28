//! The endpoints: from an HTTP request to a response, for every route.

mod full;
mod legacy;
mod login;
mod media;
mod meta;
pub mod normal;

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http_types::{Body, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use smol::future::FutureExt;

use crate::ground::pool::blocking;
use crate::http::body::Incoming;
use crate::http::error::{Failure, Outcome};
use crate::http::framing::{self, SyncHeader};
use crate::http::request_log::{self, RequestLine};
use crate::http::route::{self, Endpoint, MediaMethod, Refusal, SyncMethod};
use crate::service::Service;

/// One sync request being answered.
pub(crate) struct Call {
    pub(crate) service: Arc<Service>,
    pub(crate) header: SyncHeader,
    /// Who sent it (the TCP peer, or the client a trusted proxy names), for
    /// login throttling.
    pub(crate) peer: Option<IpAddr>,
    body: Option<Incoming>,
    /// The endpoint's body limit (see [`Endpoint::body_limit`]).
    limit: u64,
    /// An old client's upload, received before its host key was read.
    pub(crate) legacy_upload: Option<crate::storage::collection::upload::Received>,
    /// The hash of the device's key, once authenticated.
    device: Option<String>,
}

impl Call {
    pub(crate) fn zstd(&self) -> bool {
        self.header.zstd()
    }

    pub(crate) fn body_limit(&self) -> u64 {
        self.limit
    }

    /// Keeps the client's full description (`cv` of `meta`: the header's is
    /// short, and a recent AnkiDroid names itself only in the full one) as
    /// its device's, for `leitner device list`.
    pub(crate) fn client_described(&self) -> impl FnOnce(&str) + Send + 'static {
        let (service, device, peer) = (self.service.clone(), self.device.clone(), self.peer);
        move |client: &str| {
            if let Some(device) = device {
                service.users.devices.heard(&device, peer, client);
            }
        }
    }

    /// The request body, once, for streaming it somewhere.
    pub(crate) fn take_body(&mut self) -> Incoming {
        self.body.take().expect("body taken once")
    }

    /// The JSON body, read now and parsed by [`Later::parse`] in the
    /// blocking-pool hop of the work it is for: a small request then takes
    /// one hop in all, not two.
    pub(crate) async fn json_later<T: DeserializeOwned>(&mut self) -> Outcome<Later<T>> {
        let mut body = self.take_body();
        let whole = body.read_all_later(self.zstd(), self.limit).await?;
        Ok(Later {
            whole,
            wanted: std::marker::PhantomData,
        })
    }

    /// The JSON body: read as it arrives, decoded and parsed on the blocking
    /// pool (in one hop when it came in one batch), within the endpoint's
    /// limit and the memory budget.
    pub(crate) async fn json<T: DeserializeOwned + Send + 'static>(&mut self) -> Outcome<T> {
        let mut body = self.take_body();
        body.read_all_then(self.zstd(), self.limit, |bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| Failure::bad_request(format!("bad request JSON: {e}")))
        })
        .await?
    }
}

/// A JSON body read but not yet parsed (see [`Call::json_later`]).
pub(crate) struct Later<T> {
    whole: crate::http::body::Whole,
    wanted: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Later<T> {
    /// Decodes and parses the body. Blocking.
    pub(crate) fn parse(self) -> Outcome<T> {
        let bytes = self.whole.bytes()?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::bad_request(format!("bad request JSON: {e}")))
    }
}

/// Who a request came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    /// The TCP peer, or the client a trusted proxy names.
    pub(crate) client: IpAddr,
    /// The TCP peer is a trusted proxy (whose `X-Forwarded-*` count).
    pub(crate) proxied: bool,
}

/// Answers one request. Never fails: every problem becomes a status code.
/// What the answer did not need of the body stays in `req`.
pub(crate) async fn handle(
    service: Arc<Service>,
    req: &mut Request,
    from: Option<Peer>,
) -> Response {
    let peer = from.map(|p| p.client);
    let activity = service.activity.begin();
    let mut line = RequestLine {
        from: peer,
        user: None,
        endpoint: req.url().path().to_owned(),
        started: Instant::now(),
        received: Arc::new(AtomicU64::new(0)),
        problem: None,
    };
    let outcome = AssertUnwindSafe(dispatch(&service, req, from, &mut line))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Failure::internal("the request handler panicked")));
    let res = match outcome {
        Ok(res) => res,
        Err(failure) => {
            line.problem = Some(failure.message.clone());
            framing::refuse(&failure)
        }
    };
    request_log::attach(res, line, activity)
}

/// The answer to a device behind a trusted proxy that has more requests in
/// flight than one device may hold connections (503: the client's "server
/// problem, try again later"). The server's connection gate says it in the
/// log, once per device.
pub(crate) fn too_many_connections() -> Response {
    framing::refuse(&Failure::unavailable(
        "too many requests in flight from this device",
    ))
}

async fn dispatch(
    service: &Arc<Service>,
    req: &mut Request,
    from: Option<Peer>,
    line: &mut RequestLine,
) -> Outcome<Response> {
    let peer = from.map(|p| p.client);
    let endpoint = match route::route(req.method(), req.url().path()) {
        Ok(endpoint) => endpoint,
        Err(Refusal::NotFound(why)) => return Err(Failure::new(StatusCode::NotFound, why)),
        Err(Refusal::MethodNotAllowed { allow }) => {
            let mut res = framing::refuse(&Failure::new(
                StatusCode::MethodNotAllowed,
                format!("use {allow}"),
            ));
            res.insert_header("allow", allow);
            line.problem = Some("method not allowed".into());
            return Ok(res);
        }
    };
    line.endpoint = endpoint.log_name();
    if endpoint == Endpoint::Health {
        return Ok(Response::new(StatusCode::Ok));
    }
    if endpoint == Endpoint::Welcome {
        let proxied = from.is_some_and(|p| p.proxied);
        return Ok(crate::http::welcome::page(service, req, proxied).await);
    }

    // Pre-v11 desktop releases start media sync with `GET ?k=<host key>&v=..`.
    let mut query_version = None;
    // An old client's form; it holds its payload's memory until answered.
    let mut legacy = None;
    let header = if endpoint == Endpoint::Media(MediaMethod::Begin) && req.method() == Method::Get {
        let mut host_key = String::new();
        let mut version = String::new();
        for (key, value) in req.url().query_pairs() {
            match &*key {
                "k" => host_key = value.into_owned(),
                "v" => version = value.into_owned(),
                _ => {}
            }
        }
        query_version = Some(version.clone());
        SyncHeader::legacy(host_key, version)
    } else if let Some(content_type) = legacy::legacy_form(req) {
        let form = legacy::read_legacy_form(service, req, endpoint, &content_type, line).await?;
        if endpoint == Endpoint::Media(MediaMethod::Begin) {
            // The client's version is a field of the form, not in `data`.
            query_version = Some(form.fields.get("v").unwrap_or_default().to_owned());
        }
        let header = SyncHeader::from_form(&form.fields);
        legacy = Some(form);
        header
    } else {
        SyncHeader::parse(req.header(framing::SYNC_HEADER).map(|v| v.as_str()))?
    };
    let (body, received) = match legacy.as_mut() {
        // Its bytes were counted as the form arrived.
        Some(form) => (
            http_types::Body::from_bytes(std::mem::take(&mut form.payload)),
            Arc::default(),
        ),
        None => (req.take_body(), line.received.clone()),
    };
    let mut call = Call {
        service: service.clone(),
        header,
        peer,
        body: Some(Incoming::new(body, received, service.budget.clone())),
        limit: endpoint.body_limit(service.collection_limit()),
        legacy_upload: legacy.as_mut().and_then(|form| form.upload.take()),
        device: None,
    };
    let outcome = answer(service, &mut call, endpoint, query_version, line).await;
    if legacy.is_none() {
        // What the answer did not read goes back, for the connection to
        // finish reading before the answer goes (see `server::connection`).
        if let Some(unread) = call.body.take() {
            req.set_body(unread.into_unread());
        }
    }
    outcome
}

/// Answers an authenticated endpoint (or a login).
async fn answer(
    service: &Arc<Service>,
    call: &mut Call,
    endpoint: Endpoint,
    query_version: Option<String>,
    line: &mut RequestLine,
) -> Outcome<Response> {
    if endpoint == Endpoint::Sync(SyncMethod::HostKey) {
        let admitted = call.peer.map(|peer| service.strangers.admit(peer));
        if matches!(admitted, Some(None)) {
            return Err(Failure::unavailable("too many logins at once"));
        }
        return login::host_key(call, line).await;
    }
    let found = service
        .users
        .by_host_key(&call.header.host_key)
        .ok_or_else(Failure::forbidden)?;
    let account = found.account.clone();
    line.user = Some(account.name.clone());
    account.saw(crate::storage::data_dir::Seen {
        at: crate::ground::clock::now_millis(),
        client: call.header.client.clone(),
    });
    if found.unrecorded.is_some() {
        let (service, client, peer) = (service.clone(), call.header.client.clone(), call.peer);
        let found = found.clone();
        blocking(move || service.users.record_moved(&found, &client, peer)).await;
    }
    service.users.devices.heard(&found.key_hash, call.peer, "");
    call.device = Some(found.key_hash);

    let outcome = match endpoint {
        Endpoint::Sync(SyncMethod::Meta) => meta::meta(call, &account).await,
        Endpoint::Sync(SyncMethod::Upload) => full::upload(call, &account).await,
        Endpoint::Sync(SyncMethod::Download) => full::download(call, &account).await,
        Endpoint::Sync(SyncMethod::Abort) => normal::abort(call, &account).await,
        Endpoint::Sync(SyncMethod::Start) => normal::start(call, &account).await,
        Endpoint::Sync(SyncMethod::ApplyGraves) => normal::apply_graves_step(call, &account).await,
        Endpoint::Sync(SyncMethod::ApplyChanges) => normal::apply_changes(call, &account).await,
        Endpoint::Sync(SyncMethod::Chunk) => normal::chunk(call, &account).await,
        Endpoint::Sync(SyncMethod::ApplyChunk) => normal::apply_chunk(call, &account).await,
        Endpoint::Sync(SyncMethod::SanityCheck2) => normal::sanity_check(call, &account).await,
        Endpoint::Sync(SyncMethod::Finish) => normal::finish(call, &account).await,
        Endpoint::Sync(SyncMethod::HostKey) => unreachable!("answered above"),
        Endpoint::Media(MediaMethod::DownloadFiles) => media::download_files(call, &account).await,
        Endpoint::Media(method) => {
            let zstd = call.zstd();
            let answered = match method {
                MediaMethod::Begin => media::begin(call, &account, query_version).await,
                MediaMethod::MediaChanges => media::changes(call, &account).await,
                MediaMethod::UploadChanges => media::upload_changes(call, &account).await,
                _ => media::sanity(call, &account).await,
            };
            media::in_words_if_full(answered, &account, zstd).await
        }
        Endpoint::Health | Endpoint::Welcome => unreachable!("answered above"),
    };
    if matches!(&outcome, Err(failure) if failure.disk_full) {
        // For the user's next `meta` (see `Account::room_for_a_sync`).
        let kept = account.clone();
        blocking(move || {
            kept.met_full_disk();
            Ok::<_, Failure>(())
        })
        .await?;
    }
    outcome
}

/// Whether `failure` came of a full disk: said so by its cause, or a server
/// error while the disk holding the user's folder has no room for a sync
/// (on a card filled to the last byte SQLite fails with "disk I/O error").
/// For the endpoints that can tell the client in words. Blocking hop.
pub(crate) async fn of_a_full_disk(
    failure: &Failure,
    account: &Arc<crate::service::account::Account>,
) -> Outcome<bool> {
    if failure.disk_full {
        return Ok(true);
    }
    if failure.status != StatusCode::InternalServerError {
        return Ok(false);
    }
    let account = account.clone();
    blocking(move || Ok(!account.room_for_a_sync())).await
}

/// A reply whose encoding (zstd) happens on the blocking pool.
pub(crate) async fn reply_json<T: serde::Serialize + Send + 'static>(
    value: T,
    zstd: bool,
) -> Response {
    blocking(move || framing::reply_json(&value, zstd)).await
}

/// Bytes per hand-off between the blocking pool and the socket when streaming
/// a body.
const STREAM_CHUNK: usize = 64 * 1024;

/// A response body read from a blocking reader on the blocking pool.
pub(crate) fn stream_body(reader: impl std::io::Read + Send + 'static) -> Body {
    Body::from_reader(
        // Large hand-offs: each read becomes one HTTP chunk and one thread switch.
        smol::io::BufReader::with_capacity(
            STREAM_CHUNK,
            SyncReader(std::sync::Mutex::new(smol::Unblock::with_capacity(
                STREAM_CHUNK,
                reader,
            ))),
        ),
        None,
    )
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
