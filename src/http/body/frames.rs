//! zstd decoding that charges each frame's memory to the budget before the
//! decoder allocates it.
//!
//! A zstd decoder allocates its window when it reads a frame's header, and
//! the header, not the body's size, says how large: a 30-byte frame may ask
//! for 8 MiB. So the header of every frame is read here first, its cost
//! charged (or refused), and only then is the frame fed to the decoder.

use std::io::{self, Write};

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::{BodyError, Charge};
use crate::ground::memory::Spares;

/// The largest zstd window we accept (8 MiB). Anki compresses with level 3,
/// whose window is 2 MiB; zstd's own default ceiling is 128 MiB, which a
/// small hostile frame could make a decoder allocate.
const WINDOW_LOG_MAX: u32 = 23;

/// What a decoder holds besides its window: its context (entropy tables,
/// literal buffers) and our output scratch.
const DECODER_BASE: u64 = 128 * 1024;

/// zstd's largest block: the unit its input buffer and window slack come in.
const BLOCK: u64 = 128 * 1024;

/// A frame header is at most this long (magic, descriptor, window byte,
/// dictionary id, content size).
const MAX_HEADER: usize = 18;

const SCRATCH: usize = 32 * 1024;

/// A decoder whose frames each decoded to less than this is kept for the
/// next body (see [`Kept`]); its window buffer is then mostly untouched
/// address space, not memory.
const KEEP_BELOW: u64 = 256 * 1024;

/// A decoder and its output scratch.
struct Parts {
    raw: Decoder<'static>,
    scratch: Box<[u8]>,
}

/// Decoders of earlier small bodies, ready for the next: making one (its
/// context, its scratch) costs more than decoding a small request.
static SPARES: Spares<Parts> = Spares::new(2);

/// Drops the spare decoders (memory given back after work).
pub(crate) fn release_spares() {
    SPARES.clear();
}

/// A decoder taken from the spares, or made; given back when dropped if
/// every frame it decoded was small.
struct Kept {
    parts: Option<Parts>,
    /// The most any one frame decoded to.
    largest: u64,
    failed: bool,
}

impl Kept {
    fn take() -> io::Result<Kept> {
        let parts = match SPARES.take() {
            Some(parts) => parts,
            None => {
                let mut raw = Decoder::new()?;
                // Our own check comes first; this one is zstd's, in case.
                raw.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
                Parts {
                    raw,
                    scratch: vec![0; SCRATCH].into_boxed_slice(),
                }
            }
        };
        Ok(Kept {
            parts: Some(parts),
            largest: 0,
            failed: false,
        })
    }

    fn parts(&mut self) -> &mut Parts {
        self.parts.as_mut().expect("present until dropped")
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(mut parts) = self.parts.take() {
            let keep = !self.failed && self.largest < KEEP_BELOW;
            if keep && parts.raw.reinit().is_ok() {
                SPARES.give(parts);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Header {
    /// At least this many bytes are needed to read the header.
    Short,
    /// A frame whose decoding needs about this many bytes of memory.
    Frame { memory: u64 },
    /// Not a zstd frame, or one asking for a window over our ceiling.
    Invalid(&'static str),
}

/// Reads the header at the start of `bytes` (see the zstd format, RFC 8878,
/// section 3.1.1) for what decoding the frame will allocate.
pub(super) fn header(bytes: &[u8]) -> Header {
    let Some(magic) = bytes.get(..4) else {
        return Header::Short;
    };
    let magic = u32::from_le_bytes(magic.try_into().expect("four bytes"));
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        // A skippable frame: read past, nothing allocated.
        return Header::Frame { memory: 0 };
    }
    if magic != 0xFD2F_B528 {
        return Header::Invalid("not a zstd frame");
    }
    let Some(&descriptor) = bytes.get(4) else {
        return Header::Short;
    };
    if descriptor & 0x08 != 0 {
        return Header::Invalid("reserved bit set in a zstd frame header");
    }
    let single_segment = descriptor & 0x20 != 0;
    let window_len = usize::from(!single_segment);
    let dictionary_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + window_len + dictionary_len;
    let Some(size_bytes) = bytes.get(at..at + size_len) else {
        return Header::Short;
    };
    let mut content_size = None;
    if size_len > 0 {
        let mut le = [0u8; 8];
        le[..size_len].copy_from_slice(size_bytes);
        let n = u64::from_le_bytes(le);
        content_size = Some(if size_len == 2 { n + 256 } else { n });
    }
    let window = if single_segment {
        content_size.unwrap_or(0)
    } else {
        let byte = bytes[5];
        let base = 1u64 << (10 + (byte >> 3));
        base + (base / 8) * u64::from(byte & 7)
    };
    if window > 1 << WINDOW_LOG_MAX {
        return Header::Invalid("zstd window over 8 MiB");
    }
    // The decoder's output buffer holds a window and some slack, or the
    // whole content when that is known and smaller; its input buffer a block.
    let output = (window + 2 * BLOCK).min(content_size.unwrap_or(u64::MAX));
    Header::Frame {
        memory: DECODER_BASE + output + BLOCK.min(window),
    }
}

/// A zstd stream decoder writing into `out`, frame by frame, each frame's
/// memory held in `charge` before the frame is decoded.
pub(super) struct FrameDecoder<W> {
    decoder: Kept,
    out: W,
    charge: Charge,
    /// The start of a frame's header, kept until the whole header is here.
    head: Vec<u8>,
    /// Between two frames: the next byte begins a header.
    between: bool,
    /// What the current frame has decoded to so far.
    frame_out: u64,
}

impl<W: Write> FrameDecoder<W> {
    pub(super) fn new(out: W, charge: Charge) -> io::Result<FrameDecoder<W>> {
        Ok(FrameDecoder {
            decoder: Kept::take()?,
            out,
            charge,
            head: Vec::with_capacity(MAX_HEADER),
            between: true,
            frame_out: 0,
        })
    }

    pub(super) fn get_ref(&self) -> &W {
        &self.out
    }

    /// The sink, once the input ended on a frame's end.
    pub(super) fn finish(self) -> io::Result<W> {
        if !self.between || !self.head.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the body ends inside a zstd frame",
            ));
        }
        Ok(self.out)
    }

    /// Feeds `input` to the decoder until it is used up or a frame ends;
    /// returns how much was used.
    fn feed(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut input = InBuffer::around(input);
        // A decoder that failed is not kept, whatever state it is in.
        self.decoder.failed = true;
        loop {
            let Parts { raw, scratch } = self.decoder.parts();
            let mut output = OutBuffer::around(&mut scratch[..]);
            let hint = raw.run(&mut input, &mut output)?;
            let produced = output.pos();
            self.out.write_all(&scratch[..produced])?;
            self.frame_out += produced as u64;
            self.decoder.largest = self.decoder.largest.max(self.frame_out);
            if hint == 0 {
                // The frame is decoded and flushed; a header may follow.
                self.between = true;
                self.frame_out = 0;
                self.decoder.failed = false;
                return Ok(input.pos());
            }
            if input.pos() == input.src.len() && produced < SCRATCH {
                self.decoder.failed = false;
                return Ok(input.pos());
            }
        }
    }
}

impl<W: Write> Write for FrameDecoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.between {
                self.head.push(rest[0]);
                rest = &rest[1..];
                match header(&self.head) {
                    Header::Short => continue,
                    Header::Invalid(why) => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why))
                    }
                    Header::Frame { memory } => {
                        self.charge
                            .hold(memory)
                            .map_err(|_| io::Error::other(BodyError::Busy))?;
                        self.between = false;
                        let head = std::mem::take(&mut self.head);
                        let used = self.feed(&head)?;
                        debug_assert_eq!(used, head.len(), "a header alone ends no frame");
                        self.head = head;
                        self.head.clear();
                    }
                }
            } else {
                let used = self.feed(rest)?;
                rest = &rest[used..];
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Budget;
    use super::*;

    #[test]
    fn headers_give_the_memory_their_frame_needs() {
        // Level 3 streamed without a known size, as the Anki client sends:
        // a 2 MiB window.
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        streamed.write_all(&[5u8; 1000]).unwrap();
        let streamed = streamed.finish().unwrap();
        assert_eq!(
            header(&streamed),
            Header::Frame {
                memory: DECODER_BASE + (2 << 20) + 2 * BLOCK + BLOCK
            }
        );
        // Size known up front: no more than the content.
        let bulk = zstd::bulk::compress(&[5u8; 1000], 3).unwrap();
        assert_eq!(
            header(&bulk),
            Header::Frame {
                memory: DECODER_BASE + 1000 + 1000
            }
        );
        for n in 0..bulk.len().min(MAX_HEADER) {
            if header(&bulk[..n]) != Header::Short {
                assert!(n >= 6, "read a header from {n} bytes");
            }
        }
        assert_eq!(header(b"PK\x03\x04"), Header::Invalid("not a zstd frame"));
        // A 1 GiB window asked for in six bytes.
        let greedy = [0x28, 0xB5, 0x2F, 0xFD, 0x00, (20 << 3) as u8];
        assert_eq!(header(&greedy), Header::Invalid("zstd window over 8 MiB"));
    }

    fn decode(input: &[u8], pieces: usize) -> io::Result<Vec<u8>> {
        let budget = Budget::new(64 << 20);
        let mut d = FrameDecoder::new(Vec::new(), budget.charge())?;
        for piece in input.chunks(pieces) {
            d.write_all(piece)?;
        }
        d.finish()
    }

    #[test]
    fn frames_decode_whole_or_in_pieces_one_after_another() {
        let a = vec![1u8; 100_000];
        let b: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut both = zstd::bulk::compress(&a, 3).unwrap();
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        streamed.write_all(&b).unwrap();
        both.extend(streamed.finish().unwrap());
        let want: Vec<u8> = a.iter().chain(&b).copied().collect();
        for pieces in [1, 3, 17, 4096, usize::MAX] {
            assert_eq!(decode(&both, pieces).unwrap(), want, "pieces of {pieces}");
        }
        assert_eq!(decode(&[], 1).unwrap(), b"");
        assert!(decode(&both[..both.len() - 1], 100).is_err());
        assert!(decode(&both[..3], 100).is_err());
    }

    #[test]
    fn a_frame_waits_for_its_memory() {
        let budget = Budget::new(1 << 20);
        let mut d = FrameDecoder::new(Vec::new(), budget.charge()).unwrap();
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        streamed
            .write_all(b"small, but its window is 2 MiB")
            .unwrap();
        let e = d.write_all(&streamed.finish().unwrap()).unwrap_err();
        assert!(e.get_ref().is_some_and(|inner| inner.is::<BodyError>()));
        assert_eq!(budget.used(), 0, "nothing held for a refused frame");
    }

    #[test]
    fn garbage_never_panics() {
        let mut good = zstd::bulk::compress(&[9u8; 5000], 3).unwrap();
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        streamed.write_all(b"second frame").unwrap();
        good.extend(streamed.finish().unwrap());
        let mut seed = 99u32;
        for _ in 0..5000 {
            let mut z = good.clone();
            for _ in 0..2 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (seed >> 8) as usize % z.len().min(40);
                z[i] = (seed >> 16) as u8;
            }
            let _ = header(&z);
            let _ = decode(&z, 1 + seed as usize % 50);
        }
    }
}
