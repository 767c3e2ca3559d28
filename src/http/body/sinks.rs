//! What a body's bytes are written through on the blocking pool: the zstd
//! decoder (or none), a cap at the endpoint's limit, and, for bodies kept in
//! memory, a `Vec` whose growth is charged to the budget. Each remembers why
//! it failed, so a failure can be told apart from a broken body.

use std::io::{self, Write};

use super::frames::FrameDecoder;
use super::BodyError;
use crate::ground::budget::Charge;

/// A `Vec` sink whose growth is charged to the budget.
pub(super) struct Charged {
    pub(super) data: Vec<u8>,
    pub(super) charge: Charge,
}

impl Write for Charged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Charged before growing, by what a growing Vec asks for (twice its
        // capacity, or what is needed), not by its length.
        let (len, cap) = (self.data.len(), self.data.capacity());
        let want = if len + buf.len() <= cap {
            cap
        } else {
            (len + buf.len()).max(cap * 2)
        };
        self.charge
            .hold(want as u64)
            .map_err(|_| io::Error::other(BodyError::Busy))?;
        self.data.reserve_exact(want - len);
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body on its way to the sink: through the zstd decoder, or as it came.
pub(super) enum Decode<W: Write> {
    Zstd(FrameDecoder<Capped<W>>),
    Plain(Capped<W>),
}

impl<W: Write> Decode<W> {
    pub(super) fn new(
        capped: Capped<W>,
        zstd: bool,
        charge: Charge,
    ) -> Result<Decode<W>, BodyError> {
        if !zstd {
            return Ok(Decode::Plain(capped));
        }
        let decoder = FrameDecoder::new(capped, charge).map_err(BodyError::Malformed)?;
        Ok(Decode::Zstd(decoder))
    }

    fn capped(&self) -> &Capped<W> {
        match self {
            Decode::Zstd(d) => d.get_ref(),
            Decode::Plain(c) => c,
        }
    }

    /// What a failed write means: over the limit, the sink's own failure, or
    /// a body that is not what it claims to be.
    pub(super) fn classify(&self, e: io::Error) -> BodyError {
        let capped = self.capped();
        if capped.hit {
            BodyError::TooLarge
        } else if e.get_ref().is_some_and(|inner| inner.is::<BodyError>()) {
            BodyError::Busy
        } else if capped.failed {
            BodyError::Output(e)
        } else {
            BodyError::Malformed(e)
        }
    }

    pub(super) fn finish(self) -> Result<W, BodyError> {
        match self {
            Decode::Zstd(d) => match d.finish() {
                Ok(capped) => Ok(capped.inner),
                Err(e) => Err(BodyError::Malformed(e)),
            },
            Decode::Plain(c) => Ok(c.inner),
        }
    }
}

impl<W: Write> Write for Decode<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Decode::Zstd(d) => d.write(buf),
            Decode::Plain(c) => c.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Decode::Zstd(d) => d.flush(),
            Decode::Plain(c) => c.flush(),
        }
    }
}

/// Refuses to pass on more than `left` bytes, and remembers which of its
/// own failures happened, so the caller can tell them from broken input.
pub(super) struct Capped<W> {
    pub(super) inner: W,
    pub(super) left: u64,
    pub(super) hit: bool,
    pub(super) failed: bool,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.hit = true;
            return Err(io::Error::other("body over the size limit"));
        }
        let n = self.inner.write(buf).inspect_err(|_| self.failed = true)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}
