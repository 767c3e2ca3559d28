//! The legacy clients' request body (sync versions 8 to 10): a
//! `multipart/form-data` form whose `data` part is the payload (gzip-
//! compressed when the `c` field says so) and whose other fields (`k`,
//! `sk`, `s`, `c`, `v`) are short strings, the host key among them.
//!
//! Clients send `data` first, so the payload passes before we know whose it
//! is: [`Form::feed`] hands its bytes to a sink as they come (memory, or a
//! spool file for an upload) and keeps only the small fields.

use std::io::{self, Write};

/// The longest part head (its `Content-Disposition` and friends) we take.
const MAX_PART_HEAD: usize = 1024;
/// The longest value of a field other than `data`.
const MAX_FIELD: usize = 1024;
/// More parts than any client sends (they send at most six).
const MAX_PARTS: usize = 16;

/// Why a form body was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FormError {
    /// No boundary in the `content-type` header.
    NoBoundary,
    /// The body is not the form it claims to be (the message says how).
    Malformed(&'static str),
    /// The body ended before the form's closing boundary.
    Truncated,
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::NoBoundary => write!(f, "multipart body without a boundary"),
            FormError::Malformed(why) => write!(f, "bad multipart body: {why}"),
            FormError::Truncated => write!(f, "multipart body cut short"),
        }
    }
}

impl std::error::Error for FormError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary (a preamble, which is ignored).
    Preamble,
    /// Just after a boundary: `--` ends the form, CRLF starts a part.
    AfterBoundary,
    /// In a part's head, up to its empty line.
    PartHead,
    /// In a part's content.
    Content,
    /// After the closing boundary (an epilogue, which is ignored).
    Done,
}

/// A form being read.
pub(crate) struct Form {
    /// `\r\n--<boundary>`: what ends every part.
    delimiter: Vec<u8>,
    state: State,
    /// Bytes that may be the start of a delimiter or a line, kept until the
    /// next input says.
    held: Vec<u8>,
    /// The current part's name, once its head is read.
    name: Option<String>,
    value: Vec<u8>,
    parts: usize,
    fields: Vec<(String, String)>,
    data_seen: bool,
}

/// What a finished form held besides `data`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) fields: Vec<(String, String)>,
    /// Whether the form had a `data` part (AnkiDroid leaves it out of an
    /// empty request).
    pub(crate) data: bool,
}

impl Fields {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Form {
    /// Reads the boundary from a `content-type` header value.
    pub(crate) fn new(content_type: &str) -> Result<Form, FormError> {
        let boundary = content_type
            .split(';')
            .skip(1)
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 200)
            .ok_or(FormError::NoBoundary)?;
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(Form {
            delimiter,
            state: State::Preamble,
            // The first boundary has no line break before it: pretend it had.
            held: b"\r\n".to_vec(),
            name: None,
            value: Vec::new(),
            parts: 0,
            fields: Vec::new(),
            data_seen: false,
        })
    }

    /// Reads more of the body; the `data` part's content goes to `data`.
    pub(crate) fn feed(&mut self, input: &[u8], data: &mut impl Write) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Done => return Ok(()),
                State::Preamble | State::Content => {
                    match find(rest, &self.delimiter) {
                        Some(i) => {
                            self.content(&rest[..i], data)?;
                            self.end_part()?;
                            self.state = State::AfterBoundary;
                            at += i + self.delimiter.len();
                        }
                        None => {
                            // All but what may begin a delimiter is content.
                            let keep = partial_suffix(rest, &self.delimiter);
                            let (content, tail) = rest.split_at(rest.len() - keep);
                            self.content(content, data)?;
                            self.held = tail.to_vec();
                            return Ok(());
                        }
                    }
                }
                State::AfterBoundary => {
                    if rest.len() < 2 {
                        self.held = rest.to_vec();
                        return Ok(());
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Done;
                        return Ok(());
                    }
                    // Transport padding (spaces, tabs) may precede the CRLF.
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > 64 {
                            return Err(malformed("junk after a boundary"));
                        }
                        self.held = rest.to_vec();
                        return Ok(());
                    };
                    if rest[..end]
                        .iter()
                        .any(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
                    {
                        return Err(malformed("junk after a boundary"));
                    }
                    self.parts += 1;
                    if self.parts > MAX_PARTS {
                        return Err(malformed("too many parts"));
                    }
                    self.state = State::PartHead;
                    at += end + 1;
                }
                State::PartHead => {
                    let Some(end) =
                        starts_empty(rest).or_else(|| find(rest, b"\r\n\r\n").map(|i| (i, i + 4)))
                    else {
                        if rest.len() > MAX_PART_HEAD {
                            return Err(malformed("part head too long"));
                        }
                        self.held = rest.to_vec();
                        return Ok(());
                    };
                    if end.0 > MAX_PART_HEAD {
                        return Err(malformed("part head too long"));
                    }
                    self.name = Some(part_name(&rest[..end.0])?);
                    self.state = State::Content;
                    at += end.1;
                }
            }
        }
    }

    /// The fields, once the closing boundary was read.
    pub(crate) fn finish(self) -> Result<Fields, FormError> {
        if self.state != State::Done {
            return Err(FormError::Truncated);
        }
        Ok(Fields {
            fields: self.fields,
            data: self.data_seen,
        })
    }

    fn content(&mut self, bytes: &[u8], data: &mut impl Write) -> io::Result<()> {
        if self.state != State::Content {
            return Ok(()); // the preamble
        }
        if self.name.as_deref() == Some("data") {
            return data.write_all(bytes);
        }
        if self.value.len() + bytes.len() > MAX_FIELD {
            return Err(malformed("form field too long"));
        }
        self.value.extend_from_slice(bytes);
        Ok(())
    }

    fn end_part(&mut self) -> io::Result<()> {
        let Some(name) = self.name.take() else {
            return Ok(()); // the preamble
        };
        let value = std::mem::take(&mut self.value);
        if name == "data" {
            if self.data_seen {
                return Err(malformed("two data parts"));
            }
            self.data_seen = true;
            return Ok(());
        }
        let value = String::from_utf8(value).map_err(|_| malformed("form field not UTF-8"))?;
        self.fields.push((name, value));
        Ok(())
    }
}

fn malformed(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, FormError::Malformed(why))
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack.len() - at < needle.len() {
            return None;
        }
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// How many bytes at the end of `bytes` are a proper prefix of `needle`.
fn partial_suffix(bytes: &[u8], needle: &[u8]) -> usize {
    let longest = (needle.len() - 1).min(bytes.len());
    (1..=longest)
        .rev()
        .find(|&n| bytes[bytes.len() - n..] == needle[..n])
        .unwrap_or(0)
}

/// A part head with no lines at all: the content starts right after CRLF.
fn starts_empty(rest: &[u8]) -> Option<(usize, usize)> {
    rest.starts_with(b"\r\n").then_some((0, 2))
}

/// The `name` of a part's `Content-Disposition: form-data; name="..."`.
fn part_name(head: &[u8]) -> io::Result<String> {
    let head = std::str::from_utf8(head).map_err(|_| malformed("part head not UTF-8"))?;
    for line in head.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in value.split(';').skip(1) {
            if let Some((k, v)) = param.trim().split_once('=') {
                if k.trim().eq_ignore_ascii_case("name") {
                    return Ok(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    Err(malformed("a part without a name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "multipart/form-data; boundary=7a02a22b46df6406-9064f7e1";

    fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, value) in parts {
            body.extend_from_slice(b"--7a02a22b46df6406-9064f7e1\r\n");
            let file = if *name == "data" {
                "; filename=\"data\""
            } else {
                ""
            };
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--7a02a22b46df6406-9064f7e1--\r\n");
        body
    }

    fn read(body: &[u8], piece: usize) -> Result<(Fields, Vec<u8>), String> {
        let mut form = Form::new(TYPE).map_err(|e| e.to_string())?;
        let mut data = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            form.feed(chunk, &mut data).map_err(|e| e.to_string())?;
        }
        let fields = form.finish().map_err(|e| e.to_string())?;
        Ok((fields, data))
    }

    #[test]
    fn a_client_form_reads_the_same_in_any_pieces() {
        // The payload holds what looks like boundaries and line breaks.
        let payload: Vec<u8> = b"\x1f\x8b\r\n--7a02a22b46df6406-9064f7e\r\n--\r\n\r\n"
            .iter()
            .copied()
            .chain((0..3000u32).map(|i| (i * 7 % 256) as u8))
            .collect();
        let body = form(&[
            ("data", &payload),
            ("c", b"1"),
            ("k", b"abc123"),
            ("s", b""),
        ]);
        for piece in 1..=body.len() {
            let (fields, data) = read(&body, piece).unwrap();
            assert_eq!(data, payload, "piece {piece}");
            assert!(fields.data);
            assert_eq!(fields.get("c"), Some("1"));
            assert_eq!(fields.get("k"), Some("abc123"));
            assert_eq!(fields.get("s"), Some(""));
            assert_eq!(fields.get("v"), None);
        }
    }

    #[test]
    fn the_boundary_may_be_quoted_and_a_preamble_may_come_first() {
        let mut body = b"preamble to ignore\r\n".to_vec();
        body.extend_from_slice(&form(&[("k", b"key")]));
        body.extend_from_slice(b"epilogue");
        let mut form =
            Form::new("multipart/form-data; boundary=\"7a02a22b46df6406-9064f7e1\"").unwrap();
        let mut data = Vec::new();
        form.feed(&body, &mut data).unwrap();
        let fields = form.finish().unwrap();
        assert_eq!(fields.get("k"), Some("key"));
        assert!(!fields.data);
        assert!(data.is_empty());
    }

    #[test]
    fn broken_forms_are_refused() {
        assert_eq!(
            Form::new("multipart/form-data").err(),
            Some(FormError::NoBoundary)
        );
        let body = form(&[("data", b"x"), ("k", b"key")]);
        // Cut before the closing boundary.
        assert_eq!(
            read(&body[..body.len() - 10], 7).unwrap_err(),
            "multipart body cut short"
        );
        let long = vec![b'a'; MAX_FIELD + 1];
        assert!(read(&form(&[("k", &long)]), 100)
            .unwrap_err()
            .contains("too long"));
        let twice = form(&[("data", b"a"), ("data", b"b")]);
        assert!(read(&twice, 5).unwrap_err().contains("two data parts"));
        let many: Vec<(&str, &[u8])> = (0..MAX_PARTS + 1).map(|_| ("x", &b"1"[..])).collect();
        assert!(read(&form(&many), 50)
            .unwrap_err()
            .contains("too many parts"));
        let nameless = b"--7a02a22b46df6406-9064f7e1\r\nContent-Type: text/plain\r\n\r\nx\r\n\
                         --7a02a22b46df6406-9064f7e1--\r\n";
        assert!(read(nameless, 9).unwrap_err().contains("without a name"));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap fuzz: mutated forms are read or refused, in varied pieces.
        let good = form(&[
            ("data", b"\x1f\x8bpayload\r\n-"),
            ("c", b"1"),
            ("k", b"key"),
        ]);
        let mut seed = 99u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        };
        for _ in 0..20_000 {
            let mut body = good.clone();
            for _ in 0..3 {
                let i = next() as usize % body.len();
                body[i] = next() as u8;
            }
            let piece = 1 + next() as usize % body.len();
            let _ = read(&body, piece);
        }
    }
}
