//! async-h1's HTTP/1.1 response, turned into one an HTTP/1.0 client reads:
//! no chunked coding (the body then ends where the connection closes), and
//! `connection: close`.
//!
//! A streamed body (a download, compressed as it goes) has no length up
//! front, so async-h1 sends it in chunks; HTTP/1.0 has no chunks. Rather than
//! buffer a body to learn its length, the chunk framing is taken off as the
//! bytes pass, and the connection's close ends the body.

use std::io;

/// The longest response head we expect from async-h1 (ours are short).
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub(super) struct Http10Response {
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Collecting the head until its empty line.
    Head(Vec<u8>),
    /// Passing the body on as it is.
    Plain,
    /// Taking chunk framing off the body.
    Chunked(Chunk),
    /// The last chunk and any trailer went by: nothing more to send.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk's size in hex.
    Size { size: u64, digits: bool },
    /// Skipping a chunk extension up to the line's end.
    Extension { size: u64 },
    /// Passing on this many bytes of data.
    Data { left: u64 },
    /// The line break after a chunk's data.
    DataEnd,
    /// Skipping trailer lines up to the empty one; `empty` while the current
    /// line has nothing in it yet.
    Trailer { empty: bool },
}

fn broken(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Http10Response {
    pub(super) fn new() -> Http10Response {
        Http10Response {
            stage: Stage::Head(Vec::new()),
        }
    }

    /// The response has been sent whole (a chunked one; otherwise only the
    /// connection's close ends it).
    #[cfg(test)]
    fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Converts the next `input` bytes of the HTTP/1.1 response, appending
    /// what the HTTP/1.0 client gets to `out`.
    pub(super) fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !input.is_empty() {
            match &mut self.stage {
                Stage::Head(head) => {
                    let take = match input.iter().position(|&b| b == b'\n') {
                        Some(i) => i + 1,
                        None => input.len(),
                    };
                    head.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if head.len() > MAX_HEAD {
                        return Err(broken("response head too long"));
                    }
                    if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                        let head = std::mem::take(head);
                        self.stage = rewrite_head(&head, out)?;
                    }
                }
                Stage::Plain => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Stage::Chunked(chunk) => {
                    let (next, used) = dechunk(*chunk, input, out)?;
                    input = &input[used..];
                    self.stage = match next {
                        Some(chunk) => Stage::Chunked(chunk),
                        None => Stage::Done,
                    };
                }
                // Nothing follows a finished response on a closing connection.
                Stage::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Writes the head without `transfer-encoding` and `connection`, adding
/// `connection: close`; says how the body comes.
fn rewrite_head(head: &[u8], out: &mut Vec<u8>) -> io::Result<Stage> {
    let mut chunked = false;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().ok_or_else(|| broken("empty response head"))?;
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let (name, value) = (&line[..colon], line.get(colon + 1..).unwrap_or_default());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let value = String::from_utf8_lossy(value).to_ascii_lowercase();
            chunked |= value.contains("chunked");
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    Ok(if chunked {
        Stage::Chunked(Chunk::Size {
            size: 0,
            digits: false,
        })
    } else {
        Stage::Plain
    })
}

/// Takes chunk framing off `input`, data to `out`. Returns where it stopped
/// (`None` after the last chunk's trailer) and how many bytes it used.
fn dechunk(
    mut chunk: Chunk,
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<(Option<Chunk>, usize)> {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match chunk {
            Chunk::Data { left } => {
                let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                let left = left - n as u64;
                chunk = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data { left }
                };
                continue;
            }
            Chunk::Size { size, digits } => {
                chunk = match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).expect("a hex digit") as u64;
                        let size = size
                            .checked_mul(16)
                            .map(|s| s + digit)
                            .ok_or_else(|| broken("chunk size overflows"))?;
                        Chunk::Size { size, digits: true }
                    }
                    b';' | b' ' | b'\t' if digits => Chunk::Extension { size },
                    b'\r' if digits => chunk,
                    b'\n' if digits => after_size(size),
                    _ => return Err(broken("bad chunk size")),
                };
            }
            Chunk::Extension { size } => {
                if b == b'\n' {
                    chunk = after_size(size);
                }
            }
            Chunk::DataEnd => match b {
                b'\r' => {}
                b'\n' => {
                    chunk = Chunk::Size {
                        size: 0,
                        digits: false,
                    }
                }
                _ => return Err(broken("chunk data longer than its size")),
            },
            Chunk::Trailer { empty } => match b {
                b'\r' => {}
                b'\n' if empty => return Ok((None, i + 1)),
                b'\n' => chunk = Chunk::Trailer { empty: true },
                _ => chunk = Chunk::Trailer { empty: false },
            },
        }
        i += 1;
    }
    Ok((Some(chunk), i))
}

fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer { empty: true }
    } else {
        Chunk::Data { left: size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_in_pieces(response: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut conv = Http10Response::new();
        let mut out = Vec::new();
        for bytes in response.chunks(piece) {
            conv.convert(bytes, &mut out).unwrap();
        }
        (out, conv.done())
    }

    #[test]
    fn chunks_come_off_in_any_pieces() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
            transfer-encoding: chunked\r\ndate: x\r\n\r\n\
            5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        let want = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
            date: x\r\nconnection: close\r\n\r\nhello 0123456789";
        for piece in [1, 2, 7, 64, usize::MAX] {
            let (out, done) = convert_in_pieces(response, piece);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "pieces of {piece}"
            );
            assert!(done);
        }
    }

    #[test]
    fn trailers_are_dropped_and_the_end_is_known() {
        let response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n";
        let (out, done) = convert_in_pieces(response, 5);
        assert!(out.ends_with(b"connection: close\r\n\r\nabc"));
        assert!(done);
    }

    #[test]
    fn a_length_passes_as_it_is_and_connection_is_close() {
        let response =
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\nConnection: keep-alive\r\n\r\nnope";
        let (out, done) = convert_in_pieces(response, 3);
        assert_eq!(
            out,
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                .to_vec()
        );
        assert!(!done, "only the close ends a plain body");
    }

    #[test]
    fn broken_framing_is_an_error() {
        let mut conv = Http10Response::new();
        let mut out = Vec::new();
        let bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        assert!(conv.convert(bad, &mut out).is_err());
        let mut conv = Http10Response::new();
        let long = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n";
        assert!(conv.convert(long, &mut out).is_err());
        let mut conv = Http10Response::new();
        let huge = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n";
        assert!(conv.convert(huge, &mut out).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n3;x\r\nabc\r\n0\r\nt: 1\r\n\r\n";
        let mut seed = 777u32;
        for _ in 0..20_000 {
            let mut r = good.to_vec();
            for _ in 0..3 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (seed >> 8) as usize % r.len();
                r[i] = (seed >> 16) as u8;
            }
            let mut conv = Http10Response::new();
            let mut out = Vec::new();
            for piece in r.chunks(1 + seed as usize % 9) {
                if conv.convert(piece, &mut out).is_err() {
                    break;
                }
            }
            assert!(out.len() <= r.len() + 32);
        }
    }
}
