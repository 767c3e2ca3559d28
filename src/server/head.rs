//! A request's head, read by us before async-h1 sees it, and rewritten into
//! what async-h1 accepts.
//!
//! async-h1 speaks only HTTP/1.1. Reverse proxies often speak HTTP/1.0 to
//! their upstream (nginx unless told otherwise), and some clients send
//! `Expect: 100-continue`, which async-h1 answers from a task on a second
//! executor. So each head is parsed here first: an HTTP/1.0 request becomes
//! an HTTP/1.1 one that closes the connection (its response is then
//! converted back, see `http10`), and the expectation is taken out of the
//! head, to be met by the connection itself when the body is first read.

/// The longest head we take. async-h1's own limit is 8 KiB; what we add to a
/// head (a `connection` and a `host` line) must still fit under it.
pub(super) const MAX_HEAD: usize = 8 * 1024 - 128;

/// async-h1's limit on header lines.
const MAX_HEADERS: usize = 128;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// The head as async-h1 will read it.
    pub(crate) bytes: Vec<u8>,
    /// Sent as HTTP/1.0: answer without chunked coding, then close.
    pub(crate) http10: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub(crate) expects_continue: bool,
    /// How the body ends, as async-h1 will read it.
    pub(crate) body: BodyFraming,
}

/// How a request's body ends, decided as async-h1 decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// In chunks (the first `transfer-encoding` value is `chunked`).
    Chunked,
    /// After this many bytes (the last `content-length`; none, or one
    /// async-h1 refuses, counts as 0: it then reads no body).
    Length(u64),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Longer than [`MAX_HEAD`], or too many lines: 431.
    TooLarge,
    /// Not an HTTP/1.x request head: 400.
    Malformed(String),
    /// HTTP/2 or later sent in clear: 505.
    Version,
}

/// Where the head in `buf` ends (just past its empty line), if it is all
/// there. Leading empty lines (which a client may send between requests)
/// belong to the head.
pub(super) fn end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut seen_line = false;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        let empty = line.is_empty() || line == b"\r";
        line_start = i + 1;
        if empty && seen_line {
            return Some(i + 1);
        }
        seen_line |= !empty;
    }
    None
}

/// Parses a complete head (as found by [`end`]) and rewrites it for async-h1.
pub(super) fn rewrite(head: &[u8]) -> Result<Head, Refused> {
    if head.len() > MAX_HEAD {
        return Err(Refused::TooLarge);
    }
    let skip = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let head = &head[skip..];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Refused::Malformed("incomplete request head".into()))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge),
        Err(httparse::Error::Version) if head.starts_with(b"PRI * HTTP/2") => {
            return Err(Refused::Version)
        }
        Err(e) => return Err(Refused::Malformed(format!("bad request head: {e}"))),
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refused::Malformed("incomplete request line".into()));
    };
    let http10 = version == 0;
    let mut bytes = Vec::with_capacity(head.len() + 64);
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(path.as_bytes());
    bytes.extend_from_slice(b" HTTP/1.1\r\n");
    let mut expects_continue = false;
    let mut has_host = false;
    let mut chunked = None;
    let mut length = None;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") && chunked.is_none() {
            // async-h1 looks at the first value only.
            chunked = Some(header.value.eq_ignore_ascii_case(b"chunked"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(header.value);
        }
        if name.eq_ignore_ascii_case("expect") {
            // Only `100-continue` is defined; HTTP/1.0 clients cannot expect.
            expects_continue |= !http10 && header.value.eq_ignore_ascii_case(b"100-continue");
            continue;
        }
        if http10 && name.eq_ignore_ascii_case("connection") {
            // One request per HTTP/1.0 connection: said below.
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(header.value);
        bytes.extend_from_slice(b"\r\n");
    }
    if http10 {
        bytes.extend_from_slice(b"connection: close\r\n");
        if !has_host {
            // HTTP/1.0 makes it optional; async-h1 needs one for the URL.
            bytes.extend_from_slice(b"host: localhost\r\n");
        }
    }
    bytes.extend_from_slice(b"\r\n");
    Ok(Head {
        bytes,
        http10,
        expects_continue,
        body: if chunked == Some(true) {
            BodyFraming::Chunked
        } else {
            BodyFraming::Length(
                length
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            )
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(head: &Head) -> &str {
        std::str::from_utf8(&head.bytes).unwrap()
    }

    #[test]
    fn the_end_of_a_head_is_its_first_empty_line() {
        assert_eq!(end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Some(22));
        assert_eq!(end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(end(b"\r\n"), None);
    }

    #[test]
    fn http10_becomes_http11_that_closes() {
        let head = rewrite(
            b"POST /anki/sync/meta HTTP/1.0\r\nHost: up\r\nConnection: keep-alive\r\n\
              Content-Length: 5\r\n\r\n",
        )
        .unwrap();
        assert!(head.http10);
        assert!(!head.expects_continue);
        assert_eq!(
            text(&head),
            "POST /anki/sync/meta HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\n\
             connection: close\r\n\r\n"
        );
        let bare = rewrite(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(
            text(&bare),
            "GET /health HTTP/1.1\r\nconnection: close\r\nhost: localhost\r\n\r\n"
        );
    }

    #[test]
    fn http11_passes_but_for_the_expectation() {
        let plain = b"POST /sync/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n";
        let head = rewrite(plain).unwrap();
        assert_eq!(head.bytes, plain.to_vec());
        assert!(!head.http10 && !head.expects_continue);
        let head = rewrite(
            b"POST /sync/upload HTTP/1.1\r\nhost: x\r\nExpect: 100-Continue\r\n\
              content-length: 3\r\n\r\n",
        )
        .unwrap();
        assert!(head.expects_continue);
        assert_eq!(
            text(&head),
            "POST /sync/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n"
        );
        // An HTTP/1.0 client cannot ask for it.
        let head = rewrite(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!head.expects_continue);
    }

    #[test]
    fn refusals() {
        let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long.resize(MAX_HEAD, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(rewrite(&long), Err(Refused::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("x{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(rewrite(&many), Err(Refused::TooLarge));
        assert_eq!(
            rewrite(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(Refused::Version)
        );
        assert!(matches!(
            rewrite(b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"),
            Err(Refused::Malformed(_))
        ));
        assert!(matches!(
            rewrite(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap fuzz: mutations of a real head are parsed or refused; what
        // is accepted is a head async-h1 reads as HTTP/1.1.
        let good = b"POST /anki/sync/meta HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\n\
                     Content-Length: 12\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        let mut seed = 4242u32;
        for _ in 0..20_000 {
            let mut h = good.to_vec();
            for _ in 0..3 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (seed >> 8) as usize % h.len();
                h[i] = (seed >> 16) as u8;
            }
            if let Some(end) = end(&h) {
                if let Ok(head) = rewrite(&h[..end]) {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    assert!(req.parse(&head.bytes).unwrap().is_complete());
                    assert_eq!(req.version, Some(1));
                }
            }
        }
    }
}
