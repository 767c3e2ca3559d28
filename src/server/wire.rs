//! The connection as async-h1 sees it: the socket with a stall timeout,
//! the head we already read (rewritten) played back first, `100 Continue`
//! sent when the body is first read, and, for an HTTP/1.0 client, the
//! response converted on its way out (see `http10`).
//!
//! async-h1 sees one request and no more: reads stop at the end of its body
//! (async-h1 answers before it reads a body's rest, and reads ahead of what
//! it needs, so a client's next request could otherwise be taken for part
//! of this one, or lost). What follows waits for the next head
//! ([`Wire::leftover`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use smol::Timer;

use super::chunked::LastChunk;
use super::head::{BodyFraming, Head};
use super::http10::Http10Response;

/// A connection that moves no byte either way for this long is dropped. It is
/// longer than any client's own stall timeout (60 s at most).
const STALL_LIMIT: Duration = Duration::from_secs(120);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One connection's socket, shared by async-h1's reading and writing halves
/// (clones) and the connection loop.
#[derive(Clone)]
pub(super) struct Wire {
    socket: Stalling,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The current request's head, as rewritten, and whatever of its body
    /// came with the head: read before the socket.
    replay: Vec<u8>,
    replayed: usize,
    /// The client waits for `100 Continue` before it sends the body.
    owe_continue: bool,
    /// The response began before the body was asked for: the body will not
    /// come, and the connection cannot be used again.
    body_declined: bool,
    responding: bool,
    /// Bytes that go out before anything else: `100 Continue`, or the
    /// converted response for an HTTP/1.0 client.
    out: Vec<u8>,
    sent: usize,
    http10: Option<Http10Response>,
    /// Where this request ends.
    end: RequestEnd,
}

/// Where the current request ends, followed as its bytes go to async-h1.
enum RequestEnd {
    /// After this many more bytes (head and body).
    Length(u64),
    /// After the last chunk, which reaches async-h1 whole (see `chunked`).
    Chunked(LastChunk),
}

impl Default for RequestEnd {
    fn default() -> Self {
        RequestEnd::Length(0)
    }
}

impl Wire {
    pub(super) fn new(stream: TcpStream) -> Wire {
        Wire {
            socket: Stalling::new(stream),
            state: Arc::default(),
        }
    }

    /// The socket itself, for reading heads.
    pub(super) fn socket(&self) -> Stalling {
        self.socket.clone()
    }

    /// Readies the wire for a request: its head and `body_start` are read
    /// first; an HTTP/1.0 request's response is converted.
    pub(super) fn begin(&self, head: Head, body_start: &[u8]) {
        let mut state = self.lock();
        let end = match head.body {
            BodyFraming::Chunked => RequestEnd::Chunked(LastChunk::new(head.bytes.len())),
            BodyFraming::Length(n) => {
                RequestEnd::Length((head.bytes.len() as u64).saturating_add(n))
            }
        };
        let mut replay = head.bytes;
        replay.extend_from_slice(body_start);
        *state = State {
            replay,
            owe_continue: head.expects_continue,
            http10: head.http10.then(Http10Response::new),
            end,
            ..State::default()
        };
    }

    /// Whether the client waits for `100 Continue` before it sends the
    /// body, which nothing has asked for yet.
    pub(super) fn awaits_continue(&self) -> bool {
        self.lock().owe_continue
    }

    /// What was read past the end of the request just answered: the start
    /// of the next one.
    pub(super) fn leftover(&self) -> Vec<u8> {
        let mut state = self.lock();
        let state = &mut *state;
        // Bytes the chunk framing kept came from reads before any left
        // unplayed.
        let mut rest = match &mut state.end {
            RequestEnd::Chunked(chunked) => chunked.take_after(),
            RequestEnd::Length(_) => Vec::new(),
        };
        rest.extend_from_slice(&state.replay[state.replayed..]);
        state.replay = Vec::new();
        state.replayed = 0;
        rest
    }

    /// Whether the connection must close after this request: HTTP/1.0, or
    /// a body the client never got to send.
    pub(super) fn must_close(&self) -> bool {
        let state = self.lock();
        state.http10.is_some() || state.body_declined
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends `state.out`.
fn drain(state: &mut State, socket: &mut Stalling, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while state.sent < state.out.len() {
        let n = ready!(Pin::new(&mut *socket).poll_write(cx, &state.out[state.sent..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        state.sent += n;
    }
    state.out.clear();
    state.sent = 0;
    Poll::Ready(Ok(()))
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut guard = this.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let chunked = match &mut state.end {
                RequestEnd::Length(left) => {
                    let cap = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if cap == 0 {
                        return Poll::Ready(Ok(0));
                    }
                    let n = ready!(read_next(state, &mut this.socket, cx, &mut buf[..cap]))?;
                    if let RequestEnd::Length(left) = &mut state.end {
                        *left -= n as u64;
                    }
                    return Poll::Ready(Ok(n));
                }
                RequestEnd::Chunked(chunked) => chunked,
            };
            let n = chunked.take(buf);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if chunked.finished() {
                return Poll::Ready(Ok(0));
            }
            let n = ready!(read_next(state, &mut this.socket, cx, buf))?;
            let RequestEnd::Chunked(chunked) = &mut state.end else {
                unreachable!("a request's framing does not change");
            };
            if n == 0 {
                // The client is gone: what was held goes, for async-h1 to
                // report the body cut short.
                chunked.give_up();
                return Poll::Ready(Ok(chunked.take(buf)));
            }
            let pass = chunked.admit(&buf[..n]);
            if pass > 0 {
                return Poll::Ready(Ok(pass));
            }
        }
    }
}

/// Reads the next bytes for async-h1: the replayed head, then the socket.
fn read_next(
    state: &mut State,
    socket: &mut Stalling,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    if state.replayed < state.replay.len() {
        let n = buf.len().min(state.replay.len() - state.replayed);
        buf[..n].copy_from_slice(&state.replay[state.replayed..state.replayed + n]);
        state.replayed += n;
        if state.replayed == state.replay.len() {
            state.replay = Vec::new();
            state.replayed = 0;
        }
        return Poll::Ready(Ok(n));
    }
    if std::mem::take(&mut state.owe_continue) {
        if state.responding {
            state.body_declined = true;
        } else {
            state.out.extend_from_slice(CONTINUE);
        }
    }
    if state.body_declined {
        return Poll::Ready(Ok(0));
    }
    ready!(drain(state, socket, cx))?;
    Pin::new(socket).poll_read(cx, buf)
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut guard = this.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        state.responding |= !buf.is_empty();
        ready!(drain(state, &mut this.socket, cx))?;
        if let Some(conversion) = state.http10.as_mut() {
            // `out` is empty: it holds at most one write's worth.
            conversion.convert(buf, &mut state.out)?;
            if let Poll::Ready(Err(e)) = drain(state, &mut this.socket, cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        drop(guard);
        Pin::new(&mut this.socket).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut guard = this.state.lock().unwrap_or_else(|p| p.into_inner());
        ready!(drain(&mut guard, &mut this.socket, cx))?;
        drop(guard);
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().socket).poll_close(cx)
    }
}

/// A TCP stream that fails a read or write which makes no progress for
/// [`STALL_LIMIT`], so a vanished client cannot pin a request (and the user's
/// lock) forever. Clones share the socket, each with its own timer.
pub(super) struct Stalling {
    stream: TcpStream,
    read_timer: Option<Timer>,
    write_timer: Option<Timer>,
}

impl Stalling {
    fn new(stream: TcpStream) -> Stalling {
        Stalling {
            stream,
            read_timer: None,
            write_timer: None,
        }
    }
}

impl Clone for Stalling {
    fn clone(&self) -> Self {
        Stalling::new(self.stream.clone())
    }
}

fn stall_check<T>(
    poll: Poll<io::Result<T>>,
    timer: &mut Option<Timer>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if poll.is_ready() {
        *timer = None;
        return poll;
    }
    let timer = timer.get_or_insert_with(|| Timer::after(STALL_LIMIT));
    match Pin::new(timer).poll(cx) {
        Poll::Ready(_) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection stalled",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        stall_check(poll, &mut this.read_timer, cx)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        stall_check(poll, &mut this.write_timer, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        stall_check(poll, &mut this.write_timer, cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
