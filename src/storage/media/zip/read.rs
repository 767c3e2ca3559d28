//! Reading an uploaded archive: the end record, at most `MAX_ENTRIES`
//! directory entries, then one entry at a time, capped and checked against
//! the directory's size and CRC.

use std::io::{self, Read, Seek, SeekFrom};

use super::{
    ZipError, CENTRAL_SIG, DEFLATED, EOCD_LEN, EOCD_SIG, LOCAL_SIG, MAX_COMMENT, MAX_ENTRIES,
    STORED,
};

struct Entry {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_offset: u64,
}

/// A zip archive being read; entries are looked up by name.
pub(crate) struct Archive<R> {
    reader: R,
    entries: Vec<Entry>,
}

impl<R: Read + Seek> Archive<R> {
    pub(crate) fn open(mut reader: R) -> Result<Archive<R>, ZipError> {
        let len = reader.seek(SeekFrom::End(0))?;
        if len < EOCD_LEN {
            return Err(ZipError::Malformed("too short"));
        }
        // The end record is the last thing in the file, before a comment of
        // at most 64 KiB; search that tail from the end.
        let tail_len = len.min(EOCD_LEN + MAX_COMMENT);
        reader.seek(SeekFrom::Start(len - tail_len))?;
        let mut tail = vec![0u8; tail_len as usize];
        reader.read_exact(&mut tail)?;
        let at = (0..=tail.len() - EOCD_LEN as usize)
            .rev()
            .find(|&i| le32(&tail[i..]) == EOCD_SIG)
            .ok_or(ZipError::Malformed("no end of central directory"))?;
        let eocd = &tail[at..];
        let eocd_offset = len - tail_len + at as u64;
        if le16(&eocd[4..]) != 0 || le16(&eocd[6..]) != 0 {
            return Err(ZipError::Unsupported("multi-disk archives"));
        }
        let count = le16(&eocd[10..]) as usize;
        let cd_size = le32(&eocd[12..]) as u64;
        let cd_offset = le32(&eocd[16..]) as u64;
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            return Err(ZipError::Unsupported("zip64"));
        }
        if count > MAX_ENTRIES {
            return Err(ZipError::TooManyEntries(count));
        }
        if cd_offset + cd_size > eocd_offset {
            return Err(ZipError::Malformed("central directory out of bounds"));
        }
        // Bounded: at most MAX_ENTRIES entries of at most 46 + 3 * 64 KiB.
        if cd_size > (MAX_ENTRIES as u64) * (46 + 3 * 0xFFFF) {
            return Err(ZipError::Malformed("central directory too large"));
        }
        reader.seek(SeekFrom::Start(cd_offset))?;
        let mut cd = (&mut reader).take(cd_size);
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let mut fixed = [0u8; 46];
            cd.read_exact(&mut fixed)?;
            if le32(&fixed) != CENTRAL_SIG {
                return Err(ZipError::Malformed("bad central directory entry"));
            }
            let flags = le16(&fixed[8..]);
            let method = le16(&fixed[10..]);
            let name_len = le16(&fixed[28..]) as usize;
            let skip = le16(&fixed[30..]) as u64 + le16(&fixed[32..]) as u64;
            let mut name = vec![0u8; name_len];
            cd.read_exact(&mut name)?;
            io::copy(&mut (&mut cd).take(skip), &mut io::sink())?;
            if flags & 1 != 0 {
                return Err(ZipError::Unsupported("encryption"));
            }
            if method != STORED && method != DEFLATED {
                return Err(ZipError::Unsupported(
                    "compression other than stored or deflate",
                ));
            }
            let entry = Entry {
                name: String::from_utf8_lossy(&name).into_owned(),
                method,
                crc: le32(&fixed[16..]),
                compressed: le32(&fixed[20..]) as u64,
                size: le32(&fixed[24..]) as u64,
                local_offset: le32(&fixed[42..]) as u64,
            };
            if entry.compressed == 0xFFFF_FFFF
                || entry.size == 0xFFFF_FFFF
                || entry.local_offset == 0xFFFF_FFFF
            {
                return Err(ZipError::Unsupported("zip64"));
            }
            if entry.local_offset + entry.compressed > cd_offset {
                return Err(ZipError::Malformed("entry out of bounds"));
            }
            entries.push(entry);
        }
        Ok(Archive { reader, entries })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Copies the entry `name` into `out`, refusing more than `limit` bytes
    /// whatever the directory claims, and checking size and CRC at the end.
    /// Returns the number of bytes written, or `None` if there is no such entry.
    pub(crate) fn entry(
        &mut self,
        name: &str,
        limit: u64,
        out: &mut impl io::Write,
    ) -> Result<Option<u64>, ZipError> {
        let Some(entry) = self.entries.iter().find(|e| e.name == name) else {
            return Ok(None);
        };
        let too_large = || ZipError::TooLarge {
            name: name.to_owned(),
            limit,
        };
        if entry.size > limit {
            return Err(too_large());
        }
        if entry.method == STORED && entry.compressed != entry.size {
            return Err(ZipError::Corrupt { name: name.into() });
        }
        self.reader.seek(SeekFrom::Start(entry.local_offset))?;
        let mut local = [0u8; 30];
        self.reader.read_exact(&mut local)?;
        if le32(&local) != LOCAL_SIG {
            return Err(ZipError::Malformed("bad local header"));
        }
        let skip = le16(&local[26..]) as i64 + le16(&local[28..]) as i64;
        self.reader.seek(SeekFrom::Current(skip))?;
        let raw = (&mut self.reader).take(entry.compressed);
        let mut counted = Checked {
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        // The directory's size is already within the limit, and more bytes
        // than it says are damage: one byte past it is as far as a lying
        // entry (a deflate bomb) gets.
        let cap = entry.size + 1;
        let copied = match entry.method {
            STORED => copy_through(raw.take(cap), &mut counted, out),
            _ => copy_through(
                flate2::read::DeflateDecoder::new(raw).take(cap),
                &mut counted,
                out,
            ),
        };
        copied.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
                ZipError::Corrupt { name: name.into() }
            }
            _ => ZipError::from(e),
        })?;
        if counted.len != entry.size || counted.crc.finalize() != entry.crc {
            return Err(ZipError::Corrupt { name: name.into() });
        }
        Ok(Some(counted.len))
    }
}

struct Checked {
    crc: crc32fast::Hasher,
    len: u64,
}

fn copy_through(
    mut from: impl Read,
    check: &mut Checked,
    out: &mut impl io::Write,
) -> io::Result<()> {
    let mut buf = [0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        check.crc.update(&buf[..n]);
        check.len += n as u64;
        out.write_all(&buf[..n])?;
    }
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
