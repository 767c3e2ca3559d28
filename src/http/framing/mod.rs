//! Protocol v11 framing: the `anki-sync` request header, zstd bodies both ways,
//! `anki-original-size` on every 200; legacy (v8-10) requests come as forms
//! (`multipart`) and get plain replies without it. Nothing here knows what a
//! body means.

pub mod multipart;
pub mod spool;

use std::io::{self, Read};

use http_types::{Body, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::ground::memory::Spares;
use crate::http::error::Failure;

pub(crate) const SYNC_HEADER: &str = "anki-sync";
pub(crate) const ORIGINAL_SIZE: &str = "anki-original-size";

/// Oldest and newest protocol versions we answer.
pub(crate) const MIN_VERSION: u8 = 8;
pub(crate) const MAX_VERSION: u8 = 11;

/// The `anki-sync` header: `{"v":11,"k":"<host key>","c":"<client>","s":"<session>"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct SyncHeader {
    #[serde(rename = "v")]
    pub(crate) version: u8,
    #[serde(rename = "k")]
    pub(crate) host_key: String,
    #[serde(rename = "c")]
    pub(crate) client: String,
    #[serde(rename = "s")]
    pub(crate) session: String,
}

impl SyncHeader {
    pub(crate) fn parse(value: Option<&str>) -> Result<SyncHeader, Failure> {
        let value = value.ok_or_else(|| {
            Failure::bad_request("missing anki-sync header (and not a legacy multipart form)")
        })?;
        let header: SyncHeader = serde_json::from_str(value)
            .map_err(|e| Failure::bad_request(format!("bad anki-sync header: {e}")))?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&header.version) {
            return Err(Failure::bad_request(format!(
                "unsupported sync version {}",
                header.version
            )));
        }
        Ok(header)
    }

    /// A legacy client's form fields: `k` (or `sk`, media requests after
    /// `begin`) the host key, `s` the session, `v` the client. Legacy forms
    /// do not say their version; they are all answered as version 10.
    pub(crate) fn from_form(fields: &multipart::Fields) -> SyncHeader {
        let field = |name| fields.get(name).unwrap_or_default().to_owned();
        let host_key = fields.get("k").or(fields.get("sk")).unwrap_or_default();
        SyncHeader {
            version: 10,
            host_key: host_key.to_owned(),
            client: field("v"),
            session: field("s"),
        }
    }

    /// A pre-v11 request that names its user in the query string: plain bodies.
    pub(crate) fn legacy(host_key: String, client: String) -> SyncHeader {
        SyncHeader {
            version: 10,
            host_key,
            client,
            session: String::new(),
        }
    }

    /// Version 11 compresses both bodies with zstd; 8 to 10 send them plain.
    pub(crate) fn zstd(&self) -> bool {
        self.version >= 11
    }
}

/// A 200 carrying `payload`, compressed (and its size said) when the
/// client speaks zstd.
/// Compression is CPU work: call this on the blocking pool.
pub(crate) fn reply(payload: &[u8], zstd: bool) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    // Legacy replies are plain and carry no size header.
    if zstd {
        res.insert_header(ORIGINAL_SIZE, payload.len().to_string());
    }
    res.set_body(Body::from_bytes(encode(payload, zstd)));
    res
}

/// Compressors of earlier small replies, ready for the next: making one
/// costs more than compressing a small reply (9 us against 0.2 us).
static COMPRESSORS: Spares<zstd::bulk::Compressor<'static>> = Spares::new(2);

/// Replies up to this size use a kept compressor; its tables grow with the
/// largest reply it compressed (about 640 KiB at this size).
const KEEP_COMPRESSOR_UP_TO: usize = 64 * 1024;

/// A response body as it goes on the wire: zstd-compressed for v11 clients.
pub(crate) fn encode(payload: &[u8], zstd: bool) -> Vec<u8> {
    if !zstd {
        return payload.to_vec();
    }
    if payload.len() > KEEP_COMPRESSOR_UP_TO {
        return zstd::bulk::compress(payload, 0).expect("compressing into memory");
    }
    let mut compressor = match COMPRESSORS.take() {
        Some(c) => c,
        None => zstd::bulk::Compressor::new(0).expect("a zstd context"),
    };
    let packed = compressor
        .compress(payload)
        .expect("compressing into memory");
    COMPRESSORS.give(compressor);
    packed
}

/// Drops the kept compressors (memory given back after work).
pub(crate) fn release_spares() {
    COMPRESSORS.clear();
}

/// A 200 whose head goes out now and whose (encoded) body arrives on
/// `body` later. async-h1 writes the head before it first polls the body.
pub(crate) fn reply_later(body: smol::channel::Receiver<Vec<u8>>, original_size: u64) -> Response {
    let later = Later {
        body: Box::pin(body),
        ready: None,
    };
    reply_stream(
        Body::from_reader(smol::io::BufReader::new(later), None),
        original_size,
    )
}

struct Later {
    body: std::pin::Pin<Box<smol::channel::Receiver<Vec<u8>>>>,
    ready: Option<io::Cursor<Vec<u8>>>,
}

impl smol::io::AsyncRead for Later {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use smol::stream::StreamExt;
        if self.ready.is_none() {
            match self.body.as_mut().poll_next(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(Some(bytes)) => self.ready = Some(io::Cursor::new(bytes)),
                std::task::Poll::Ready(None) => {
                    return std::task::Poll::Ready(Err(io::Error::other("the reply was lost")))
                }
            }
        }
        let cursor = self.ready.as_mut().expect("set above");
        std::task::Poll::Ready(cursor.read(buf))
    }
}

/// A response body read from `R`: zstd-compressed for v11 clients, plain
/// otherwise; keeps `hold` (a lock, typically) alive until dropped. Blocking:
/// wrap it for the reactor with `smol::Unblock`.
pub(crate) struct Encoded<R: Read, H> {
    inner: EncodedInner<R>,
    _hold: H,
}

enum EncodedInner<R: Read> {
    Zstd(zstd::stream::read::Encoder<'static, io::BufReader<R>>),
    Plain(R),
}

impl<R: Read, H> Encoded<R, H> {
    pub(crate) fn new(reader: R, zstd: bool, hold: H) -> io::Result<Encoded<R, H>> {
        let inner = if zstd {
            // Level 1: the Pi's CPU, not the LAN, is the bottleneck; a
            // collection still shrinks several times over.
            EncodedInner::Zstd(zstd::stream::read::Encoder::new(reader, 1)?)
        } else {
            EncodedInner::Plain(reader)
        };
        Ok(Encoded { inner, _hold: hold })
    }
}

impl<R: Read, H> Read for Encoded<R, H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // `Read` promises Ok(0) for an empty buffer, and `Unblock`'s pipe asks
        // with one whenever it is full; zstd's reader would spin forever.
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.inner {
            EncodedInner::Zstd(encoder) => encoder.read(buf),
            EncodedInner::Plain(reader) => reader.read(buf),
        }
    }
}

/// [`reply`] with a JSON payload.
/// A reply's JSON, already written.
pub(crate) struct Json(pub Vec<u8>);

impl Json {
    pub(crate) fn of(value: &impl Serialize) -> Json {
        Json(serde_json::to_vec(value).expect("serialising plain data"))
    }
}

pub(crate) fn reply_json(value: &impl Serialize, zstd: bool) -> Response {
    let payload = serde_json::to_vec(value).expect("serialising plain data");
    reply(&payload, zstd)
}

/// A 200 whose (already compressed) body is streamed; `original_size` is the
/// length before compression.
pub(crate) fn reply_stream(body: Body, original_size: u64) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.insert_header(ORIGINAL_SIZE, original_size.to_string());
    res.set_body(body);
    res
}

/// An error: the bare status with a one-line explanation. Clients look only at
/// the status; the text is for people with curl and for the log.
pub(crate) fn refuse(failure: &Failure) -> Response {
    let mut res = Response::new(failure.status);
    res.set_body(Body::from_string(format!("{}\n", failure.message)));
    res.set_content_type(http_types::mime::PLAIN);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_parsed_and_checked() {
        let h = SyncHeader::parse(Some(
            r#"{"v":11,"k":"abc","c":"26.09.3,x,linux","s":"dW0i"}"#,
        ))
        .unwrap();
        assert_eq!(h.version, 11);
        assert_eq!(h.host_key, "abc");
        assert_eq!(h.session, "dW0i");
        assert!(h.zstd());
        for bad in [
            None,
            Some("not json"),
            Some(r#"{"v":12,"k":"","c":"","s":""}"#),
            Some(r#"{"v":7,"k":"","c":"","s":""}"#),
            Some(r#"{"v":11,"k":""}"#),
        ] {
            let f = SyncHeader::parse(bad).unwrap_err();
            assert_eq!(f.status, StatusCode::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn replies_carry_the_original_size() {
        let res = reply(b"null", true);
        assert_eq!(res.status(), StatusCode::Ok);
        assert_eq!(res[ORIGINAL_SIZE].as_str(), "4");
    }

    #[test]
    fn an_empty_buffer_reads_nothing_and_the_stream_goes_on() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &vec![42u8; 100_000]).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).unwrap();
        let mut reader = Encoded::new(file, true, ()).unwrap();
        assert_eq!(reader.read(&mut []).unwrap(), 0);
        let mut compressed = Vec::new();
        reader.read_to_end(&mut compressed).unwrap();
        assert_eq!(
            zstd::decode_all(compressed.as_slice()).unwrap(),
            vec![42u8; 100_000]
        );
    }
}
