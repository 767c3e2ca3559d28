//! An old client's upload form (sync versions 8 to 10) written out as it
//! arrives: the collection in its `data` part, un-gzipped when gzipped (as
//! these clients send it), to a writer; the fields (the host key among them,
//! after the file) kept. Runs on the blocking pool, batch by batch.

use std::io::{self, Write};

use super::multipart::{Fields, Form};

/// Why a spool's write failed, carried inside the `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpoolError {
    /// The file grew past the limit.
    TooLarge { limit: u64 },
    /// The form or its gzip is broken.
    Damaged,
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::TooLarge { limit } => write!(f, "the file is over {limit} bytes"),
            SpoolError::Damaged => write!(f, "the form or its gzip is damaged"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl SpoolError {
    /// The spool's own reason inside `e`, if it is one.
    pub(crate) fn of(e: &io::Error) -> Option<SpoolError> {
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<SpoolError>()) {
            return Some(*inner);
        }
        // The parser's and the decoder's own failures; the file's (OS
        // errors) are not the data's fault.
        let parsing = matches!(
            e.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
        );
        (parsing && e.raw_os_error().is_none()).then_some(SpoolError::Damaged)
    }
}

/// The form parser, writing the `data` part through [`Gunzip`] into `W`.
pub(crate) struct Spool<W: Write> {
    form: Form,
    data: Gunzip<W>,
}

impl<W: Write> Spool<W> {
    /// Writes the data part into `out`, at most `limit` bytes of it.
    pub(crate) fn new(form: Form, out: W, limit: u64) -> Spool<W> {
        Spool {
            form,
            data: Gunzip::new(Capped {
                out,
                left: limit,
                limit,
            }),
        }
    }

    /// The form's fields and the writer, once the whole form has come.
    pub(crate) fn finish(self) -> io::Result<(Fields, W)> {
        let damaged = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", SpoolError::Damaged),
            )
        };
        let fields = self.form.finish().map_err(|e| damaged(&e))?;
        let capped = self.data.finish()?;
        Ok((fields, capped.out))
    }
}

impl<W: Write> Write for Spool<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.form.feed(buf, &mut self.data)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Undoes gzip when the data begins with its magic bytes (a SQLite file
/// never does); passes anything else as it is.
struct Gunzip<W: Write> {
    /// The first bytes, until there are two to look at.
    start: Vec<u8>,
    out: Option<Capped<W>>,
    decided: Option<Decided<W>>,
}

enum Decided<W: Write> {
    Gzip(Box<flate2::write::GzDecoder<Capped<W>>>),
    Plain(Capped<W>),
}

impl<W: Write> Gunzip<W> {
    fn new(out: Capped<W>) -> Gunzip<W> {
        Gunzip {
            start: Vec::new(),
            out: Some(out),
            decided: None,
        }
    }

    fn finish(mut self) -> io::Result<Capped<W>> {
        match self.decided.take() {
            Some(Decided::Gzip(decoder)) => decoder.finish().map_err(gzip_error),
            Some(Decided::Plain(out)) => Ok(out),
            None => {
                let mut out = self.out.take().expect("undecided keeps its output");
                out.write_all(&self.start)?;
                Ok(out)
            }
        }
    }
}

impl<W: Write> Write for Gunzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.decided {
            Some(Decided::Gzip(decoder)) => decoder.write(buf).map_err(gzip_error),
            Some(Decided::Plain(out)) => out.write(buf),
            None => {
                self.start.extend_from_slice(buf);
                if self.start.len() >= 2 {
                    let out = self.out.take().expect("undecided keeps its output");
                    let start = std::mem::take(&mut self.start);
                    let gzip = start.starts_with(&[0x1f, 0x8b]);
                    match self.decided.insert(if gzip {
                        Decided::Gzip(Box::new(flate2::write::GzDecoder::new(out)))
                    } else {
                        Decided::Plain(out)
                    }) {
                        Decided::Gzip(decoder) => decoder.write_all(&start)?,
                        Decided::Plain(out) => out.write_all(&start)?,
                    }
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The decoder's own failures (a cut or corrupt stream) say the data is
/// damaged; the writer's pass as they are.
fn gzip_error(e: io::Error) -> io::Error {
    let from_writer =
        e.raw_os_error().is_some() || e.get_ref().is_some_and(|i| i.is::<SpoolError>());
    if from_writer {
        return e;
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {e}"))
}

/// A writer refusing to take more than `limit` bytes in all.
struct Capped<W: Write> {
    out: W,
    left: u64,
    limit: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(SpoolError::TooLarge { limit: self.limit }));
        }
        let n = self.out.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "Anki-sync-boundary";

    fn form(data: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"data\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(
            format!(
                "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nkey\r\n\
                 --{BOUNDARY}--\r\n"
            )
            .as_bytes(),
        );
        body
    }

    fn spool(body: &[u8], piece: usize, limit: u64) -> io::Result<(Fields, Vec<u8>)> {
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let mut s = Spool::new(Form::new(&content_type).unwrap(), Vec::new(), limit);
        for chunk in body.chunks(piece) {
            s.write_all(chunk)?;
        }
        s.finish()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_undone_and_plain_data_passes_in_any_pieces() {
        let file: Vec<u8> = b"SQLite format 3\0"
            .iter()
            .cycle()
            .take(50_000)
            .copied()
            .collect();
        for data in [gzip(&file), file.clone()] {
            for piece in [1, 2, 3, 7, 4096, 1 << 20] {
                let (fields, out) = spool(&form(&data), piece, 1 << 20).unwrap();
                assert_eq!(out, file, "piece {piece}");
                assert_eq!(fields.get("k"), Some("key"));
            }
        }
        // A data part of one byte has nothing to sniff but still arrives.
        assert_eq!(spool(&form(b"x"), 1, 10).unwrap().1, b"x");
    }

    #[test]
    fn a_file_over_the_limit_and_broken_gzip_are_refused() {
        let file = vec![7u8; 10_000];
        let e = spool(&form(&gzip(&file)), 512, 9_999).unwrap_err();
        assert_eq!(
            SpoolError::of(&e),
            Some(SpoolError::TooLarge { limit: 9_999 })
        );
        let e = spool(&form(&file), 512, 9_999).unwrap_err();
        assert_eq!(
            SpoolError::of(&e),
            Some(SpoolError::TooLarge { limit: 9_999 })
        );
        let mut broken = gzip(&file);
        broken.truncate(broken.len() / 2);
        let e = spool(&form(&broken), 512, 1 << 20).unwrap_err();
        assert_eq!(SpoolError::of(&e), Some(SpoolError::Damaged), "{e}");
    }
}
