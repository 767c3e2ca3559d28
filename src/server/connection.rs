//! One connection: read each request's head, hand the request to async-h1,
//! and decide whether the connection carries another.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_h1::server::{ConnectionStatus, Server};
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

use super::gate::Ticket;
use super::head::{self, Refused};
use super::wire::{Stalling, Wire};
use crate::http::endpoints;
use crate::http::forwarded;
use crate::service::Service;

/// How long a connection may wait for the first byte of a request (the
/// first, or the next on a kept-alive connection).
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long a request's head may take once its first byte came. Clients send
/// a head in one write; a head that trickles in is a device holding a
/// connection open for nothing (nginx's `client_header_timeout`).
const HEAD_LIMIT: Duration = Duration::from_secs(10);

/// Serves requests on `stream` from `peer` until the client closes, a
/// request asks to close, the server stops (an idle connection closes at
/// once; a request being answered finishes first), or the gate wants its
/// place (see `gate`: an idle connection first; one carrying a request only
/// when its device holds many and every place is taken).
///
/// Between requests a connection holds no buffer and none of a request's
/// state: only what [`read_head`] needs (its task is about 1.2 KB; with the
/// socket's own bookkeeping an idle connection costs 3.4 KiB, measured).
pub(super) async fn serve(
    mut stream: TcpStream,
    peer: IpAddr,
    service: Arc<Service>,
    stop: Receiver<()>,
    ticket: Ticket,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        if stop.is_closed() {
            break;
        }
        ticket.idle();
        let ended = async {
            let _ = stop.recv().await;
            Ok::<_, std::io::Error>(Waited::Stopped)
        };
        let wanted = async {
            ticket.wanted().await;
            Ok(Waited::Wanted)
        };
        let reading = async {
            Ok(match read_head(&mut stream, &mut buf).await? {
                Some(end) => Waited::Head(end),
                None => Waited::Closed,
            })
        };
        let read = match reading.or(ended).or(wanted).await {
            Ok(Waited::Head(end)) => end,
            Ok(Waited::Closed | Waited::Stopped) => break,
            Ok(Waited::Wanted) => {
                log::debug!("{peer}: idle connection closed to make room");
                break;
            }
            Err(e) => {
                log::debug!("{peer}: connection ended: {e}");
                break;
            }
        };
        if !ticket.busy() {
            break;
        }
        let head = match head::rewrite(&buf[..read]) {
            Ok(head) => head,
            Err(refused) => {
                refuse(&mut Wire::new(stream.clone()).socket(), peer, refused).await;
                break;
            }
        };
        // Boxed: a request's state (async-h1's, the endpoint's) is many KB,
        // and only a connection carrying a request should hold it.
        let answering = Box::pin(answer(&stream, peer, &service, &ticket, head, &buf[read..]));
        // A device holding many connections may lose one mid-request when
        // every place is taken (see `gate`).
        let cut = async {
            ticket.wanted().await;
            log::debug!("{peer}: connection cut to make room");
            None
        };
        let answered = answering.or(cut).await;
        match answered {
            Some(leftover) => buf = leftover,
            None => break,
        }
    }
}

enum Waited {
    Head(usize),
    Closed,
    Stopped,
    Wanted,
}

/// Answers one request whose head has been read; returns what was read
/// past its end (the next request's start), or `None` if the connection
/// carries no more.
async fn answer(
    stream: &TcpStream,
    peer: IpAddr,
    service: &Arc<Service>,
    ticket: &Ticket,
    head: head::Head,
    body_start: &[u8],
) -> Option<Vec<u8>> {
    let wire = Wire::new(stream.clone());
    wire.begin(head, body_start);
    let endpoint = |mut req: http_types::Request| {
        let trusted = &service.config.trusted_proxies;
        let from = endpoints::Peer {
            client: forwarded::client(peer, &req, trusted),
            proxied: forwarded::is_trusted(peer, trusted),
        };
        // A proxy's devices are each held to what one device may hold.
        let counted = from.proxied.then(|| ticket.forwarded(from.client));
        let over = matches!(counted, Some(None));
        let service = service.clone();
        let wire = wire.clone();
        async move {
            let res = if over {
                endpoints::too_many_connections()
            } else {
                endpoints::handle(service, &mut req, Some(from)).await
            };
            drop(counted);
            if !wire.awaits_continue() {
                finish_body(&mut req).await;
            }
            Ok(res)
        }
    };
    let status = Server::new(wire.clone(), endpoint).accept_one().await;
    let keep = matches!(status, Ok(ConnectionStatus::KeepAlive)) && !wire.must_close();
    if let Err(e) = status {
        log::debug!("{peer}: connection ended: {e}");
    }
    if !keep {
        // Ends a body delimited by the close (an HTTP/1.0 client's).
        let _ = wire.clone().close().await;
        return None;
    }
    Some(wire.leftover())
}

/// How much of a body the answer did not need is read before the answer
/// goes. Past it, the answer goes first (a refusal of a large upload).
const FINISH_LIMIT: u64 = 64 * 1024;

/// Reads the rest of a body the answer did not need (a download's, a
/// refusal's) before the answer begins. Go's HTTP/1 proxy (Caddy's
/// `reverse_proxy`) stops sending a request body once the response has
/// begun, and then drops its connection to us in the middle of our answer.
async fn finish_body(req: &mut http_types::Request) {
    let body = req.take_body();
    if body.len() == Some(0) {
        return;
    }
    // A failure here is async-h1's to report when it discards the rest.
    let _ = smol::io::copy(body.take(FINISH_LIMIT), smol::io::sink()).await;
}

/// Reads until `buf` holds a whole head; returns where it ends, or `None`
/// when the client closed first. A head too long is returned whole, for
/// [`head::rewrite`] to refuse. Waits up to [`IDLE_LIMIT`] for the first
/// byte, then [`HEAD_LIMIT`] for the rest.
///
/// Nothing is allocated until bytes arrive: it waits for them with a
/// one-byte peek, then reads what came into `buf`, grown each time by what
/// it holds (at least 1 KiB), never past the limit.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut head_deadline = None;
    loop {
        if let Some(end) = head::end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > head::MAX_HEAD {
            return Ok(Some(buf.len()));
        }
        // Blank lines between requests do not start a head.
        if head_deadline.is_none() && buf.iter().any(|b| *b != b'\r' && *b != b'\n') {
            head_deadline = Some(std::time::Instant::now() + HEAD_LIMIT);
        }
        let waiting = async {
            let mut one = [0u8; 1];
            stream.peek(&mut one).await
        };
        let limit = async {
            let why = match head_deadline {
                Some(at) => {
                    Timer::at(at).await;
                    "request head incomplete in time"
                }
                None => {
                    Timer::after(IDLE_LIMIT).await;
                    "idle"
                }
            };
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
        };
        if waiting.or(limit).await? == 0 {
            return Ok(None);
        }
        let old = buf.len();
        let room = old.max(1024).min(head::MAX_HEAD + 1 - old);
        buf.resize(old + room, 0);
        let read = stream.read(&mut buf[old..]).await;
        buf.truncate(old + *read.as_ref().unwrap_or(&0));
        if read? == 0 {
            return Ok(None);
        }
    }
}

async fn refuse(socket: &mut Stalling, peer: IpAddr, refused: Refused) {
    let (status, why) = match &refused {
        Refused::TooLarge => (
            "431 Request Header Fields Too Large",
            "request head over 8 KiB or 128 lines",
        ),
        Refused::Version => (
            "505 HTTP Version Not Supported",
            "HTTP/1.0 and HTTP/1.1 only",
        ),
        Refused::Malformed(why) => ("400 Bad Request", why.as_str()),
    };
    // Said here because async-h1 would close without a word; the sender (a
    // proxy, usually) deserves to know why.
    log::warn!("{peer}: {status} ({why})");
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{why}",
        why.len()
    );
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.close().await;
}
