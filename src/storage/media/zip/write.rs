//! Writing a download: a stored archive produced as it is read, its length
//! known before the first byte (sizes in the directory, CRCs in a data
//! descriptor after each file).

use std::io::{self, Read};

use super::{put16, put32, CENTRAL_SIG, DESCRIPTOR_SIG, EOCD_LEN, EOCD_SIG, LOCAL_SIG, STORED};

/// A stored zip archive produced as it is read: each entry from a reader of
/// known length, then the directory.
pub(crate) struct Download {
    entries: Vec<Outgoing>,
    /// Bytes ready to go out before the next step.
    out: Vec<u8>,
    out_pos: usize,
    step: Step,
    written: u64,
}

/// One entry of a [`Download`]; `crc` and `offset` are learnt while writing.
pub(crate) struct Outgoing {
    name: String,
    reader: Box<dyn Read + Send>,
    len: u64,
    crc: u32,
    offset: u64,
}

impl Outgoing {
    /// An entry whose `reader` yields exactly `len` bytes.
    pub(crate) fn new(name: String, reader: Box<dyn Read + Send>, len: u64) -> Outgoing {
        Outgoing {
            name,
            reader,
            len,
            crc: 0,
            offset: 0,
        }
    }
}

#[derive(Clone, Copy)]
enum Step {
    Header(usize),
    Data(usize, u64),
    Descriptor(usize),
    Directory,
    Done,
}

const LOCAL_LEN: u64 = 30;
const DESCRIPTOR_LEN: u64 = 16;
const CENTRAL_LEN: u64 = 46;
/// General purpose flags: sizes and CRC follow the data (bit 3); the name is
/// UTF-8 (bit 11).
const WRITE_FLAGS: u16 = 1 << 3 | 1 << 11;

impl Download {
    pub(crate) fn new(entries: Vec<Outgoing>) -> Download {
        Download {
            entries,
            out: Vec::new(),
            out_pos: 0,
            step: Step::Header(0),
            written: 0,
        }
    }

    /// The archive's exact length, known before it is produced.
    pub(crate) fn byte_len(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| {
                let name = e.name.len() as u64;
                LOCAL_LEN + name + e.len + DESCRIPTOR_LEN + CENTRAL_LEN + name
            })
            .sum::<u64>()
            + EOCD_LEN
    }

    /// Moves to the next step, filling `out` with its bytes if it has any.
    fn advance(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        let out = &mut self.out;
        self.step = match self.step {
            Step::Header(i) if i == self.entries.len() => Step::Directory,
            Step::Header(i) => {
                let entry = &mut self.entries[i];
                entry.offset = self.written;
                put32(out, LOCAL_SIG);
                put16(out, 20);
                put16(out, WRITE_FLAGS);
                put16(out, STORED);
                put16(out, 0);
                put16(out, 0x21); // 1980-01-01
                put32(out, 0); // CRC and sizes: in the descriptor
                put32(out, 0);
                put32(out, 0);
                put16(out, entry.name.len() as u16);
                put16(out, 0);
                out.extend_from_slice(entry.name.as_bytes());
                Step::Data(i, 0)
            }
            // The entry's bytes were read straight into the caller's buffer.
            Step::Data(i, _) => Step::Descriptor(i),
            Step::Descriptor(i) => {
                let entry = &self.entries[i];
                put32(out, DESCRIPTOR_SIG);
                put32(out, entry.crc);
                put32(out, entry.len as u32);
                put32(out, entry.len as u32);
                Step::Header(i + 1)
            }
            Step::Directory => {
                for entry in &self.entries {
                    put32(out, CENTRAL_SIG);
                    put16(out, 20);
                    put16(out, 20);
                    put16(out, WRITE_FLAGS);
                    put16(out, STORED);
                    put16(out, 0);
                    put16(out, 0x21);
                    put32(out, entry.crc);
                    put32(out, entry.len as u32);
                    put32(out, entry.len as u32);
                    put16(out, entry.name.len() as u16);
                    for _ in 0..4 {
                        put16(out, 0); // extra, comment, disk, internal attributes
                    }
                    put32(out, 0);
                    put32(out, entry.offset as u32);
                    out.extend_from_slice(entry.name.as_bytes());
                }
                let cd_size = out.len() as u32;
                let count = self.entries.len() as u16;
                put32(out, EOCD_SIG);
                put32(out, 0);
                put16(out, count);
                put16(out, count);
                put32(out, cd_size);
                put32(out, self.written as u32);
                put16(out, 0);
                Step::Done
            }
            Step::Done => Step::Done,
        };
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                self.written += n as u64;
                return Ok(n);
            }
            match self.step {
                Step::Data(i, done) if done < self.entries[i].len => {
                    let entry = &mut self.entries[i];
                    let want = buf
                        .len()
                        .min((entry.len - done).min(usize::MAX as u64) as usize);
                    let n = entry.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        // The length went out in the directory already.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "a media file shrank while being sent",
                        ));
                    }
                    let mut crc = crc32fast::Hasher::new_with_initial(entry.crc);
                    crc.update(&buf[..n]);
                    entry.crc = crc.finalize();
                    self.step = Step::Data(i, done + n as u64);
                    self.written += n as u64;
                    return Ok(n);
                }
                Step::Done => return Ok(0),
                _ => self.advance(),
            }
        }
    }
}
