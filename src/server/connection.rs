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

use super::head::{self, Refused};
use super::wire::{Stalling, Wire};
use crate::http::endpoints;
use crate::http::forwarded;
use crate::service::Service;

/// How long a connection may sit between requests, or take to send a head
/// (async-h1's own default).
const HEAD_LIMIT: Duration = Duration::from_secs(60);

/// Serves requests on `stream` from `peer` until the client closes, a
/// request asks to close, or the server stops (an idle connection closes at
/// once; a request being answered finishes first).
pub(super) async fn serve(
    stream: TcpStream,
    peer: IpAddr,
    service: Arc<Service>,
    stop: Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let wire = Wire::new(stream);
    let mut socket = wire.socket();
    let mut buf = Vec::new();
    loop {
        if stop.is_closed() {
            break;
        }
        let stopped = async {
            let _ = stop.recv().await;
            None
        };
        let quiet = async {
            Timer::after(HEAD_LIMIT).await;
            None
        };
        let reading = async { Some(read_head(&mut socket, &mut buf).await) };
        let Some(read) = reading.or(stopped).or(quiet).await else {
            break;
        };
        let end = match read {
            Ok(Some(end)) => end,
            Ok(None) => break,
            Err(e) => {
                log::debug!("{peer}: connection ended: {e}");
                break;
            }
        };
        let head = match head::rewrite(&buf[..end]) {
            Ok(head) => head,
            Err(refused) => {
                refuse(&mut socket, peer, refused).await;
                break;
            }
        };
        wire.begin(head, &buf[end..]);
        buf.clear();

        let endpoint = |mut req: http_types::Request| {
            let trusted = &service.config.trusted_proxies;
            let from = endpoints::Peer {
                client: forwarded::client(peer, &req, trusted),
                proxied: forwarded::is_trusted(peer, trusted),
            };
            let service = service.clone();
            let wire = wire.clone();
            async move {
                let res = endpoints::handle(service, &mut req, Some(from)).await;
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
            break;
        }
        // The next request may have begun in what was read for this one.
        buf = wire.leftover();
    }
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
/// [`head::rewrite`] to refuse.
async fn read_head(socket: &mut Stalling, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    // As much as async-h1's own reader takes at once.
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = head::end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > head::MAX_HEAD {
            return Ok(Some(buf.len()));
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
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
