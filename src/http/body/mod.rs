//! Request bodies: read on the executor as bytes arrive, handed to the
//! blocking pool only once they are here, undone from zstd there, capped on
//! both sides of the decoder, and counted against one memory budget shared
//! by every request in flight.
//!
//! A device on the LAN may send anything, or send it slowly: a body that
//! trickles in holds a connection task (cheap), never a blocking thread, and
//! a body that decompresses to much more than it weighs stops at its
//! endpoint's limit, decided before a byte is read.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_types::Body;
use smol::io::AsyncReadExt;

mod frames;
mod sinks;

pub(crate) use frames::release_spares;

use sinks::{Capped, Charged, Decode};

use crate::ground::budget::{Budget, Charge, Spent};

/// Bytes handed to the blocking pool at once (and held per request while
/// they wait there).
const BATCH: usize = 64 * 1024;

/// Why a request body could not be taken.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the endpoint's limit, compressed or decompressed.
    TooLarge,
    /// Not a complete zstd stream, or the connection broke mid-body.
    Malformed(io::Error),
    /// Writing the output failed (disk full, ...).
    Output(io::Error),
    /// The memory budget for bodies in flight is spent: try again soon.
    Busy,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => write!(
                f,
                "request body is larger than this endpoint allows (for uploads: \
                 MAX_SYNC_PAYLOAD_MEGS)"
            ),
            BodyError::Malformed(e) => write!(f, "unreadable request body: {e}"),
            BodyError::Output(e) => write!(f, "storing request body: {e}"),
            BodyError::Busy => write!(f, "too many request bodies in memory at once"),
        }
    }
}

impl std::error::Error for BodyError {}

impl From<Spent> for BodyError {
    fn from(_: Spent) -> BodyError {
        BodyError::Busy
    }
}

/// A request body as it arrives, counting the bytes that cross the wire.
pub(crate) struct Incoming {
    body: Body,
    received: Arc<AtomicU64>,
    budget: Arc<Budget>,
}

impl Incoming {
    pub(crate) fn new(body: Body, received: Arc<AtomicU64>, budget: Arc<Budget>) -> Incoming {
        Incoming {
            body,
            received,
            budget,
        }
    }

    /// The body as it stands: what nobody has read of it.
    pub(crate) fn into_unread(self) -> Body {
        self.body
    }

    /// Copies the body into `sink` on the blocking pool, undoing zstd when
    /// `zstd` is set and refusing more than `limit` bytes on either side of
    /// the decoder. Returns the sink (and so whatever it owns) when done.
    pub(crate) async fn copy_into<W: Write + Send + 'static>(
        &mut self,
        zstd: bool,
        limit: u64,
        sink: W,
    ) -> Result<W, BodyError> {
        self.copy_into_then(zstd, limit, sink, |sink| sink).await
    }

    /// [`Incoming::copy_into`], then `then` on the sink, in the blocking
    /// pool's last hop: a small body (most requests) takes one hop in all.
    pub(crate) async fn copy_into_then<W, R>(
        &mut self,
        zstd: bool,
        limit: u64,
        sink: W,
        then: impl FnOnce(W) -> R + Send + 'static,
    ) -> Result<R, BodyError>
    where
        W: Write + Send + 'static,
        R: Send + 'static,
    {
        // Memory is charged as bytes arrive, not ahead: a body that stalls
        // after its first bytes costs next to nothing, however many do. The
        // decoder charges its own, frame by frame.
        let mut charge = self.budget.charge();
        let mut raw_total = 0u64;
        let first = self.read_batch(limit, &mut raw_total, &mut charge).await?;
        self.hop_batches(zstd, limit, sink, then, first, charge, raw_total)
            .await
    }

    /// Feeds `batch` and the batches after it to the decoder, one hop to
    /// the blocking pool per batch, and runs `then` on the sink in the last.
    #[allow(clippy::too_many_arguments)]
    async fn hop_batches<W, R>(
        &mut self,
        zstd: bool,
        limit: u64,
        sink: W,
        then: impl FnOnce(W) -> R + Send + 'static,
        mut batch: (Vec<u8>, bool),
        mut charge: Charge,
        mut raw_total: u64,
    ) -> Result<R, BodyError>
    where
        W: Write + Send + 'static,
        R: Send + 'static,
    {
        let mut sink = Some(Capped {
            inner: sink,
            left: limit,
            hit: false,
            failed: false,
        });
        let mut decode: Option<Decode<W>> = None;
        let mut then = Some(then);
        loop {
            let (bytes, end) = batch;
            // The decoder, or on the first batch what makes one.
            let decoder = decode
                .take()
                .ok_or_else(|| (sink.take().expect("used once"), self.budget.charge()));
            // One hop per batch: start the decoder if need be, write, and
            // at the end finish and hand over.
            let last = if end { then.take() } else { None };
            let hop = crate::ground::pool::blocking(move || {
                let mut d = match decoder {
                    Ok(d) => d,
                    Err((capped, charge)) => Decode::new(capped, zstd, charge)?,
                };
                if let Err(e) = d.write_all(&bytes) {
                    return Err(d.classify(e));
                }
                if let Some(then) = last {
                    return d.finish().map(|sink| Hop::Done(then(sink)));
                }
                Ok(Hop::More(d))
            })
            .await?;
            match hop {
                Hop::Done(result) => return Ok(result),
                Hop::More(d) => decode = Some(d),
            }
            batch = self.read_batch(limit, &mut raw_total, &mut charge).await?;
        }
    }

    /// Reads up to [`BATCH`] bytes as they come; says whether the body
    /// ended. `charge` holds the batch's memory.
    async fn read_batch(
        &mut self,
        limit: u64,
        raw_total: &mut u64,
        charge: &mut Charge,
    ) -> Result<(Vec<u8>, bool), BodyError> {
        let mut chunk = [0u8; 8 * 1024];
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let n = self
                .body
                .read(&mut chunk)
                .await
                .map_err(BodyError::Malformed)?;
            if n == 0 {
                return Ok((batch, true));
            }
            self.received.fetch_add(n as u64, Ordering::Relaxed);
            *raw_total += n as u64;
            if *raw_total > limit {
                return Err(BodyError::TooLarge);
            }
            batch.reserve(n);
            charge.hold(batch.capacity() as u64)?;
            batch.extend_from_slice(&chunk[..n]);
        }
        Ok((batch, false))
    }

    /// Reads a legacy client's whole form (see `framing::multipart`): its
    /// fields, and its `data` part as it came (gzip or not), both in memory
    /// charged to the budget; at most `limit` bytes of body.
    pub(crate) async fn read_form(
        &mut self,
        content_type: &str,
        limit: u64,
    ) -> Result<(crate::http::framing::multipart::Fields, Vec<u8>), BodyError> {
        let mut form = crate::http::framing::multipart::Form::new(content_type)
            .map_err(|e| BodyError::Malformed(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        let mut data = Charged {
            data: Vec::new(),
            charge: self.budget.charge(),
        };
        let mut charge = self.budget.charge();
        let mut raw_total = 0u64;
        loop {
            let (batch, end) = self.read_batch(limit, &mut raw_total, &mut charge).await?;
            form.feed(&batch, &mut data).map_err(|e| {
                if e.get_ref().is_some_and(|inner| inner.is::<BodyError>()) {
                    BodyError::Busy
                } else {
                    BodyError::Malformed(e)
                }
            })?;
            if end {
                break;
            }
        }
        let fields = form
            .finish()
            .map_err(|e| BodyError::Malformed(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok((fields, data.data))
    }

    /// Reads the whole body, leaving a small one (one batch, most requests)
    /// undecoded: its decoding can then share the blocking-pool hop of the
    /// work it is for. A larger one is decoded as it comes.
    pub(crate) async fn read_all_later(
        &mut self,
        zstd: bool,
        limit: u64,
    ) -> Result<Whole, BodyError> {
        let mut charge = self.budget.charge();
        let mut raw_total = 0u64;
        let first = self.read_batch(limit, &mut raw_total, &mut charge).await?;
        if first.1 {
            return Ok(Whole::Undecoded(Undecoded {
                bytes: first.0,
                _charge: charge,
                zstd,
                limit,
                budget: self.budget.clone(),
            }));
        }
        let sink = Charged {
            data: Vec::new(),
            charge: self.budget.charge(),
        };
        let data = self
            .hop_batches(
                zstd,
                limit,
                sink,
                |sink| sink.data,
                first,
                charge,
                raw_total,
            )
            .await?;
        Ok(Whole::Decoded(data))
    }

    /// Reads the whole body into memory (JSON requests), charged to the
    /// budget as it grows.
    #[cfg(test)]
    pub(crate) async fn read_all(&mut self, zstd: bool, limit: u64) -> Result<Vec<u8>, BodyError> {
        self.read_all_then(zstd, limit, |bytes| bytes).await
    }

    /// [`Incoming::read_all`], then `then` (parsing, say) on the bytes in
    /// the same hop to the blocking pool.
    pub(crate) async fn read_all_then<R: Send + 'static>(
        &mut self,
        zstd: bool,
        limit: u64,
        then: impl FnOnce(Vec<u8>) -> R + Send + 'static,
    ) -> Result<R, BodyError> {
        let sink = Charged {
            data: Vec::new(),
            charge: self.budget.charge(),
        };
        self.copy_into_then(zstd, limit, sink, move |sink| then(sink.data))
            .await
    }

    /// Reads and throws away up to `limit` more bytes, so that a client still
    /// sending a refused body gets to read our answer instead of a reset.
    pub(crate) async fn drain(&mut self, limit: u64) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = limit;
        while left > 0 {
            match self.body.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    }
}

/// A whole request body from [`Incoming::read_all_later`].
pub(crate) enum Whole {
    Undecoded(Undecoded),
    Decoded(Vec<u8>),
}

impl Whole {
    /// The body's bytes, decoded if need be. Blocking.
    pub(crate) fn bytes(self) -> Result<Vec<u8>, BodyError> {
        match self {
            Whole::Decoded(data) => Ok(data),
            Whole::Undecoded(body) => body.decode(),
        }
    }
}

/// A small body as it came, and the memory it holds.
pub(crate) struct Undecoded {
    bytes: Vec<u8>,
    /// Held, not read: released when the body goes.
    _charge: Charge,
    zstd: bool,
    limit: u64,
    budget: Arc<Budget>,
}

impl Undecoded {
    fn decode(self) -> Result<Vec<u8>, BodyError> {
        let sink = Capped {
            inner: Charged {
                data: Vec::new(),
                charge: self.budget.charge(),
            },
            left: self.limit,
            hit: false,
            failed: false,
        };
        let mut d = Decode::new(sink, self.zstd, self.budget.charge())?;
        if let Err(e) = d.write_all(&self.bytes) {
            return Err(d.classify(e));
        }
        d.finish().map(|sink| sink.data)
    }
}

/// Where a batch left the body: more to come, or done (with what `then`
/// made of the sink).
enum Hop<W: Write, R> {
    More(Decode<W>),
    Done(R),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(bytes: Vec<u8>, budget: &Arc<Budget>) -> (Incoming, Arc<AtomicU64>) {
        let counter = Arc::new(AtomicU64::new(0));
        (
            Incoming::new(Body::from_bytes(bytes), counter.clone(), budget.clone()),
            counter,
        )
    }

    fn read(bytes: Vec<u8>, zstd: bool, limit: u64) -> Result<Vec<u8>, BodyError> {
        let budget = Budget::new(64 << 20);
        let (mut body, _) = incoming(bytes, &budget);
        let out = smol::block_on(body.read_all(zstd, limit));
        assert_eq!(budget.used(), 0, "every charge given back");
        out
    }

    #[test]
    fn zstd_bodies_are_decoded_and_counted() {
        let json = br#"{"u":"alice","p":"secret"}"#;
        let compressed = zstd::bulk::compress(json, 3).unwrap();
        let len = compressed.len() as u64;
        let budget = Budget::new(64 << 20);
        let (mut body, counter) = incoming(compressed, &budget);
        assert_eq!(smol::block_on(body.read_all(true, 1000)).unwrap(), json);
        assert_eq!(counter.load(Ordering::Relaxed), len);
    }

    #[test]
    fn limits_hold_on_both_sides_of_the_decoder() {
        // Decompressed too large, compressed tiny.
        let big = vec![b'a'; 100_000];
        let packed = zstd::bulk::compress(&big, 3).unwrap();
        assert!(matches!(
            read(packed.clone(), true, 99_999),
            Err(BodyError::TooLarge)
        ));
        assert_eq!(read(packed, true, 100_000).unwrap().len(), 100_000);
        // Plain body exactly at and over the limit.
        assert_eq!(read(vec![1; 10], false, 10).unwrap().len(), 10);
        assert!(matches!(
            read(vec![1; 11], false, 10),
            Err(BodyError::TooLarge)
        ));
        // Compressed side over the limit (incompressible data).
        let noise: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let packed = zstd::bulk::compress(&noise, 3).unwrap();
        assert!(matches!(
            read(packed, true, 20_000),
            Err(BodyError::TooLarge)
        ));
        // A bomb: a megabyte of zeros in a few hundred bytes, against a
        // login-sized limit.
        let bomb = zstd::bulk::compress(&vec![0u8; 50 << 20], 19).unwrap();
        assert!(bomb.len() < 10_000);
        assert!(matches!(
            read(bomb, true, 16 << 10),
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn broken_zstd_is_malformed() {
        assert!(matches!(
            read(b"this is not zstd".to_vec(), true, 1000),
            Err(BodyError::Malformed(_))
        ));
        let mut truncated = zstd::bulk::compress(&vec![7u8; 100_000], 3).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            read(truncated, true, 1 << 20),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn a_spent_budget_refuses_instead_of_allocating() {
        let budget = Budget::new(200 * 1024);
        let (mut body, _) = incoming(vec![1; 300 * 1024], &budget);
        assert!(matches!(
            smol::block_on(body.read_all(false, 1 << 20)),
            Err(BodyError::Busy)
        ));
        assert_eq!(budget.used(), 0);
        let mut a = budget.charge();
        a.grow(150 * 1024).unwrap();
        let mut b = budget.charge();
        assert!(matches!(
            b.grow(100 * 1024).map_err(BodyError::from),
            Err(BodyError::Busy)
        ));
        drop(a);
        b.grow(100 * 1024).unwrap();
    }

    #[test]
    fn a_sink_that_fails_is_an_output_error() {
        #[derive(Debug)]
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let budget = Budget::new(64 << 20);
        let (mut body, _) = incoming(zstd::bulk::compress(b"data", 3).unwrap(), &budget);
        match smol::block_on(body.copy_into(true, 1000, Full)) {
            Err(BodyError::Output(e)) => assert!(crate::ground::durable::is_disk_full(&e)),
            other => panic!("{other:?}"),
        }
    }
}
