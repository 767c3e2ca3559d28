//! The request line: one per request (address, user, endpoint, status,
//! bytes both ways, milliseconds), written when the response has been sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_types::{Body, Response};
use smol::io::{AsyncBufRead, AsyncRead};

use crate::service::activity::ActivityGuard;

/// What the request line says, gathered while the request is handled.
pub(crate) struct RequestLine {
    /// The client's address (behind a trusted proxy, the one it forwards).
    pub(crate) from: Option<std::net::IpAddr>,
    pub(crate) user: Option<String>,
    pub(crate) endpoint: String,
    pub(crate) started: Instant,
    /// Request body bytes as they came over the wire.
    pub(crate) received: Arc<AtomicU64>,
    /// Why the request failed, when it did (never content).
    pub(crate) problem: Option<String>,
}

/// Replaces the response body with one that counts what is sent and writes
/// the request line when the response is done (or the client went away), so
/// a streamed download is logged with its real size and duration.
pub(crate) fn attach(mut res: Response, line: RequestLine, activity: ActivityGuard) -> Response {
    let body = res.take_body();
    let len = body.len();
    let status = res.status() as u16;
    let logged = Logged {
        inner: body,
        sent: 0,
        status,
        line,
        _activity: activity,
    };
    res.set_body(Body::from_reader(logged, len));
    res
}

struct Logged {
    inner: Body,
    sent: u64,
    status: u16,
    line: RequestLine,
    _activity: ActivityGuard,
}

impl AsyncRead for Logged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.sent += n as u64;
        }
        poll
    }
}

impl AsyncBufRead for Logged {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.sent += amt as u64;
        Pin::new(&mut self.inner).consume(amt)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let line = &self.line;
        let problem = line
            .problem
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let from = line.from.map(|ip| ip.to_string());
        log::info!(
            "{} {} {} {} in={} out={} {}ms{}",
            from.as_deref().unwrap_or("-"),
            line.user.as_deref().unwrap_or("-"),
            line.endpoint,
            self.status,
            line.received.load(Ordering::Relaxed),
            self.sent,
            line.started.elapsed().as_millis(),
            problem
        );
    }
}
