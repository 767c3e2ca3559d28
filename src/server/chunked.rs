//! Keeps the end of a chunked request body in one piece on its way to
//! async-h1.
//!
//! async-h1's decoder reads what follows the last chunk (trailer fields and
//! the empty line that ends the body) with one read, and when that read
//! returns only part of it the decoder answers `Pending` without asking to be
//! woken: the request hangs until the client gives up. Whether a read ends
//! there depends on how the client's bytes were cut by the network, so
//! [`LastChunk`] watches the chunk framing as the bytes pass and holds the
//! end back until it is whole: async-h1 then gets it in the same read as its
//! first byte.
//!
//! It also keeps the body's end from running into the next request: a client
//! may send its next request as soon as it has a response, and async-h1
//! answers before it reads the rest of a body. Bytes past the body's end are
//! never handed to async-h1 (its decoder would take them for trailers and
//! fail); they wait in [`LastChunk::after`] for the next head.

/// async-h1 refuses trailers longer than this anyway; past it, bytes pass.
const MAX_HELD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Bytes of the head, played back before the body.
    Head(usize),
    /// In a chunk-size line: its size so far, and whether an extension
    /// (`;name=value`) began.
    Size { size: u64, ext: bool },
    /// In a chunk's data: how much is left.
    Data(u64),
    /// The line break after a chunk's data.
    DataEnd,
    /// After the last chunk's size line: trailer lines, then an empty line;
    /// `line` counts the current line's bytes (line breaks aside).
    End { line: usize },
    /// The body is over: what follows is the next request's.
    Done,
    /// The framing is not what we expect (async-h1 reports that), or the
    /// end is too long to hold: everything passes.
    Broken,
}

/// The chunk framing of one request body, followed byte by byte.
#[derive(Debug)]
pub(super) struct LastChunk {
    step: Step,
    /// The end of the body so far, held back until it is whole.
    held: Vec<u8>,
    /// How many bytes at the start of `held` may go.
    free: usize,
    /// What came after the body's end: the start of the next request.
    after: Vec<u8>,
}

impl LastChunk {
    /// Follows a body that comes after `head_len` bytes of head.
    pub(super) fn new(head_len: usize) -> LastChunk {
        LastChunk {
            step: if head_len > 0 {
                Step::Head(head_len)
            } else {
                Step::Size {
                    size: 0,
                    ext: false,
                }
            },
            held: Vec::new(),
            free: 0,
            after: Vec::new(),
        }
    }

    /// Whether the body is over and async-h1 has had all of it: no read
    /// may touch the socket for this request again.
    pub(super) fn finished(&self) -> bool {
        self.step == Step::Done && self.held.is_empty()
    }

    /// Takes what came after the body: the next request's first bytes.
    pub(super) fn take_after(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.after)
    }

    /// Moves held bytes that may go into `buf`; returns how many.
    pub(super) fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = self.free.min(buf.len());
        buf[..n].copy_from_slice(&self.held[..n]);
        self.held.drain(..n);
        self.free -= n;
        n
    }

    /// Frees whatever is held: no more bytes will come.
    pub(super) fn give_up(&mut self) {
        if self.step != Step::Done {
            self.step = Step::Broken;
        }
        self.free = self.held.len();
    }

    /// `buf` holds bytes just read, on their way to async-h1. Returns how
    /// many of them go now (the first ones); the rest are held, or kept for
    /// the next request when they follow the body. When it returns 0 the
    /// caller reads more, after [`take`](Self::take)ing anything that
    /// became free, unless the body is [`finished`](Self::finished).
    pub(super) fn admit(&mut self, buf: &[u8]) -> usize {
        if self.step == Step::Done {
            self.after.extend_from_slice(buf);
            return 0;
        }
        if !self.held.is_empty() {
            self.held.extend_from_slice(buf);
            let start = self.held.len() - buf.len();
            self.scan_held(start);
            return 0;
        }
        let mut i = 0;
        while i < buf.len() {
            if let Step::End { .. } = self.step {
                // The end begins here: it goes now only if it is all here.
                let rest = &buf[i..];
                let mut probe = self.step;
                let used = scan(&mut probe, rest);
                if probe == Step::Done {
                    self.step = probe;
                    self.after.extend_from_slice(&rest[used..]);
                    return i + used;
                }
                self.held.extend_from_slice(rest);
                self.scan_held(0);
                return i;
            }
            if self.step == Step::Broken {
                return buf.len();
            }
            i += advance(&mut self.step, &buf[i..]);
        }
        buf.len()
    }

    /// Follows `held[start..]`; frees the end once it is whole (moving what
    /// follows it to `after`), or all of `held` when it is too long to hold.
    fn scan_held(&mut self, start: usize) {
        let used = scan(&mut self.step, &self.held[start..]);
        if self.step == Step::Done {
            let end = start + used;
            self.after.extend_from_slice(&self.held[end..]);
            self.held.truncate(end);
            self.free = end;
        } else if self.step == Step::Broken || self.held.len() > MAX_HELD {
            self.step = Step::Broken;
            self.free = self.held.len();
        }
    }
}

/// Follows `bytes` until the body ends; returns how many were consumed.
fn scan(step: &mut Step, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() && !matches!(*step, Step::Done | Step::Broken) {
        i += advance(step, &bytes[i..]);
    }
    i
}

/// Follows the first bytes of `bytes` (never none); returns how many.
fn advance(step: &mut Step, bytes: &[u8]) -> usize {
    match *step {
        Step::Head(left) => {
            let n = bytes.len().min(left);
            *step = if n == left {
                Step::Size {
                    size: 0,
                    ext: false,
                }
            } else {
                Step::Head(left - n)
            };
            n
        }
        Step::Data(left) => {
            let n = (bytes.len() as u64).min(left);
            *step = if n == left {
                Step::DataEnd
            } else {
                Step::Data(left - n)
            };
            n as usize
        }
        Step::Size { size, ext } => {
            *step = match bytes[0] {
                b'\n' if size == 0 => Step::End { line: 0 },
                b'\n' => Step::Data(size),
                b'\r' => Step::Size { size, ext },
                _ if ext => Step::Size { size, ext },
                b';' | b' ' | b'\t' => Step::Size { size, ext: true },
                b => match (b as char).to_digit(16) {
                    Some(d) => match size.checked_mul(16) {
                        Some(s) => Step::Size {
                            size: s + u64::from(d),
                            ext,
                        },
                        None => Step::Broken,
                    },
                    None => Step::Broken,
                },
            };
            1
        }
        Step::DataEnd => {
            *step = match bytes[0] {
                b'\r' => Step::DataEnd,
                b'\n' => Step::Size {
                    size: 0,
                    ext: false,
                },
                _ => Step::Broken,
            };
            1
        }
        Step::End { line } => {
            *step = match bytes[0] {
                b'\n' if line == 0 => Step::Done,
                b'\n' => Step::End { line: 0 },
                b'\r' => Step::End { line },
                _ => Step::End { line: line + 1 },
            };
            1
        }
        Step::Done | Step::Broken => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut at `cuts` (read sizes, repeated) and returns what
    /// the reader gets in each read, as async-h1 would see it, then what was
    /// kept for the next request.
    fn reads(head_len: usize, input: &[u8], cut: usize) -> Vec<Vec<u8>> {
        let mut tracker = LastChunk::new(head_len);
        let mut out = reads_with(&mut tracker, input, cut);
        out.push(tracker.take_after());
        out
    }

    fn reads_with(tracker: &mut LastChunk, input: &[u8], cut: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(cut) {
            let n = tracker.admit(piece);
            if n > 0 {
                pending.extend_from_slice(&piece[..n]);
                out.push(std::mem::take(&mut pending));
            }
            let mut buf = vec![0u8; 64 * 1024];
            let taken = tracker.take(&mut buf);
            if taken > 0 {
                out.push(buf[..taken].to_vec());
            }
        }
        // At the end of input, whatever is held is given up.
        let mut buf = vec![0u8; 64 * 1024];
        tracker.give_up();
        let taken = tracker.take(&mut buf);
        if taken > 0 {
            out.push(buf[..taken].to_vec());
        }
        out
    }

    /// Where the part after the last chunk begins and ends in `input`.
    fn end_span(input: &[u8], from: &[u8]) -> (usize, usize) {
        let start = input.windows(from.len()).position(|w| w == from).unwrap() + from.len();
        (start, input.len())
    }

    fn check_whole(head_len: usize, input: &[u8], last: &[u8]) {
        let (start, end) = end_span(input, last);
        for cut in 1..=input.len() {
            let got = reads(head_len, input, cut);
            assert_eq!(got.concat(), input, "cut {cut}: bytes change");
            // The read holding the end's first byte holds all of it.
            let mut at = 0;
            for piece in &got {
                let (a, b) = (at, at + piece.len());
                if a <= start && start < b {
                    assert!(b >= end, "cut {cut}: the end split at {b} ({start}..{end})");
                }
                if start < a && a < end {
                    panic!("cut {cut}: a read starts inside the end");
                }
                at = b;
            }
        }
    }

    #[test]
    fn the_end_of_a_body_reaches_the_reader_whole() {
        let head = b"POST /msync/uploadChanges HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut input = head.to_vec();
        input.extend_from_slice(b"5\r\nhello\r\n1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n");
        check_whole(head.len(), &input, b"\r\n0\r\n");
    }

    #[test]
    fn trailers_stay_with_the_end() {
        let input = b"3\r\nabc\r\n0;ext\r\nx-check: 1\r\nx-more: two\r\n\r\n";
        check_whole(0, input, b"0;ext\r\n");
    }

    #[test]
    fn bare_line_feeds_and_upper_case_sizes_are_followed() {
        let input = b"A\nabcdefghij\n0\n\n";
        check_whole(0, input, b"j\n0\n");
    }

    #[test]
    fn bytes_before_the_end_are_not_held() {
        let mut tracker = LastChunk::new(0);
        assert_eq!(tracker.admit(b"3\r\nabc\r\n0\r\n\r"), 11);
        assert_eq!(tracker.take(&mut [0u8; 8]), 0);
        assert_eq!(tracker.admit(b"\n"), 0);
        let mut buf = [0u8; 8];
        assert_eq!(tracker.take(&mut buf), 2);
        assert_eq!(&buf[..2], b"\r\n");
        // What follows the body is the next request's: kept for its head.
        assert!(tracker.finished());
        assert_eq!(tracker.admit(b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(tracker.take(&mut buf), 0);
        assert_eq!(tracker.take_after(), b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn the_next_request_never_reaches_the_body() {
        // A client sends its next request as soon as it has a response, and
        // async-h1 answers before it reads a body's end: the end and the next
        // head can come in one read, cut anywhere.
        let body = b"3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
        let next = b"POST /sync/applyChunk HTTP/1.1\r\ncontent-length: 3\r\n\r\n";
        let input = [&body[..], &next[..]].concat();
        for cut in 1..=input.len() {
            let mut tracker = LastChunk::new(0);
            let got = reads_with(&mut tracker, &input, cut).concat();
            assert_eq!(got, body, "cut {cut}");
            assert!(tracker.finished(), "cut {cut}");
            assert_eq!(tracker.take_after(), next, "cut {cut}");
        }
    }

    #[test]
    fn framing_we_cannot_follow_passes_unchanged() {
        let mut tracker = LastChunk::new(0);
        assert_eq!(tracker.admit(b"zz\r\n0\r\n"), 7);
        let mut tracker = LastChunk::new(0);
        assert_eq!(tracker.admit(b"ffffffffffffffffff\r\n"), 20);
        // Trailers past what async-h1 takes are given up, not held forever.
        let mut tracker = LastChunk::new(0);
        assert_eq!(tracker.admit(b"0\r\n"), 3);
        let long = vec![b'x'; MAX_HELD + 1];
        assert_eq!(tracker.admit(&long), 0);
        let mut buf = vec![0u8; 2 * MAX_HELD];
        assert_eq!(tracker.take(&mut buf), long.len());
    }

    #[test]
    fn held_bytes_go_in_pieces_as_small_as_the_reader_asks() {
        let mut tracker = LastChunk::new(0);
        assert_eq!(tracker.admit(b"0\r\nx: 1\r"), 3);
        assert_eq!(tracker.admit(b"\n\r\n"), 0);
        let mut buf = [0u8; 4];
        assert_eq!(tracker.take(&mut buf), 4);
        assert_eq!(&buf, b"x: 1");
        assert_eq!(tracker.take(&mut buf), 4);
        assert_eq!(&buf, b"\r\n\r\n");
        assert_eq!(tracker.take(&mut buf), 0);
    }

    #[test]
    fn garbage_passes_unchanged_and_never_panics() {
        // A cheap fuzz: mutated bodies cut in varied reads; every byte comes
        // out once, in order.
        let good = b"4\r\nWiki\r\n5;a=b\r\npedia\r\n0\r\nx-t: 1\r\n\r\n";
        let mut seed = 777u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        };
        for _ in 0..20_000 {
            let mut body = good.to_vec();
            for _ in 0..3 {
                let i = next() as usize % body.len();
                body[i] = next() as u8;
            }
            let cut = 1 + next() as usize % body.len();
            assert_eq!(reads(0, &body, cut).concat(), body);
        }
    }
}
