//! The zip archives media sync moves, read and written here and nowhere else.
//!
//! Hand-written rather than a general zip library because of what the
//! protocol needs and what it must survive: a general reader parses the whole
//! central directory up front, so a hostile upload of 100 MB of tiny entries
//! would cost gigabytes before we could say no; and a general writer wants
//! the whole archive, or each file's CRC, before the first byte goes out.
//! Media sync needs only a sliver of the format: no encryption, no zip64, no
//! multi-disk, entries stored or deflated.
//!
//! Reading: [`Archive::open`] checks the end record and loads at most
//! [`MAX_ENTRIES`] directory entries; [`Archive::entry`] streams one entry's
//! bytes, capped, and fails if its size or CRC differ from the directory.
//!
//! Writing: [`Download`] is a `Read` that produces a stored archive from
//! readers (open files, and `_meta` from memory), one at a time; its length is known before the first byte
//! (sizes in the directory, CRCs after each file in a data descriptor).

use std::io::{self, Read, Seek, SeekFrom};

/// More entries than any client sends (25 files and `_meta`), with room.
pub const MAX_ENTRIES: usize = 100;

const EOCD_SIG: u32 = 0x0605_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const EOCD_LEN: u64 = 22;
const MAX_COMMENT: u64 = 0xFFFF;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;

/// What is wrong with an archive; the text reaches the client's error.
#[derive(Debug)]
pub enum ZipError {
    Malformed(&'static str),
    Unsupported(&'static str),
    TooManyEntries(usize),
    TooLarge { name: String, limit: u64 },
    Corrupt { name: String },
    Io(io::Error),
}

impl std::fmt::Display for ZipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZipError::Malformed(what) => write!(f, "not a valid zip archive: {what}"),
            ZipError::Unsupported(what) => write!(f, "zip feature not supported: {what}"),
            ZipError::TooManyEntries(n) => {
                write!(f, "zip has {n} entries (at most {MAX_ENTRIES})")
            }
            ZipError::TooLarge { name, limit } => {
                write!(f, "zip entry '{name}' is larger than {limit} bytes")
            }
            ZipError::Corrupt { name } => {
                write!(f, "zip entry '{name}' does not match its checksum or size")
            }
            ZipError::Io(e) => write!(f, "reading the zip: {e}"),
        }
    }
}

impl From<io::Error> for ZipError {
    fn from(e: io::Error) -> ZipError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return ZipError::Malformed("truncated");
        }
        ZipError::Io(e)
    }
}

struct Entry {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_offset: u64,
}

/// A zip archive being read; entries are looked up by name.
pub struct Archive<R> {
    reader: R,
    entries: Vec<Entry>,
}

impl<R: Read + Seek> Archive<R> {
    pub fn open(mut reader: R) -> Result<Archive<R>, ZipError> {
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

    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Copies the entry `name` into `out`, refusing more than `limit` bytes
    /// whatever the directory claims, and checking size and CRC at the end.
    /// Returns the number of bytes written, or `None` if there is no such entry.
    pub fn entry(
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

/// A stored zip archive produced as it is read: each entry from a reader of
/// known length, then the directory.
pub struct Download {
    entries: Vec<Outgoing>,
    /// Bytes ready to go out before the next step.
    out: Vec<u8>,
    out_pos: usize,
    step: Step,
    written: u64,
}

/// One entry of a [`Download`]; `crc` and `offset` are learnt while writing.
pub struct Outgoing {
    name: String,
    reader: Box<dyn Read + Send>,
    len: u64,
    crc: u32,
    offset: u64,
}

impl Outgoing {
    /// An entry whose `reader` yields exactly `len` bytes.
    pub fn new(name: String, reader: Box<dyn Read + Send>, len: u64) -> Outgoing {
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
    pub fn new(entries: Vec<Outgoing>) -> Download {
        Download {
            entries,
            out: Vec::new(),
            out_pos: 0,
            step: Step::Header(0),
            written: 0,
        }
    }

    /// The archive's exact length, known before it is produced.
    pub fn byte_len(&self) -> u64 {
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

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn download(files: &[(&str, &[u8])], meta: &[u8]) -> Vec<u8> {
        let entries = files
            .iter()
            .chain([&("_meta", meta)])
            .map(|(n, d)| {
                let reader: Box<dyn Read + Send> = Box::new(Cursor::new(d.to_vec()));
                Outgoing::new(n.to_string(), reader, d.len() as u64)
            })
            .collect();
        let mut zip = Download::new(entries);
        let expected = zip.byte_len();
        let mut out = Vec::new();
        // Small reads, to cross every boundary.
        let mut buf = [0u8; 7];
        loop {
            let n = zip.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len() as u64, expected);
        out
    }

    fn read(archive: &mut Archive<Cursor<Vec<u8>>>, name: &str, limit: u64) -> Vec<u8> {
        let mut out = Vec::new();
        archive.entry(name, limit, &mut out).unwrap().unwrap();
        out
    }

    #[test]
    fn what_we_write_we_read_back() {
        let big = vec![7u8; 100_000];
        let bytes = download(&[("0", b"hello"), ("1", &big)], br#"{"0":"a.txt"}"#);
        let mut archive = Archive::open(Cursor::new(bytes)).unwrap();
        assert_eq!(read(&mut archive, "0", 10), b"hello");
        assert_eq!(read(&mut archive, "1", 100_000), big);
        assert_eq!(read(&mut archive, "_meta", 100), br#"{"0":"a.txt"}"#);
        assert!(archive.entry("2", 10, &mut Vec::new()).unwrap().is_none());
    }

    /// A hand-assembled archive with one entry, for damaging on purpose.
    fn one_entry(name: &str, method: u16, data: &[u8], size: u32, crc: u32) -> Vec<u8> {
        let mut z = Vec::new();
        put32(&mut z, LOCAL_SIG);
        for v in [20, 0, method, 0, 0] {
            put16(&mut z, v);
        }
        put32(&mut z, crc);
        put32(&mut z, data.len() as u32);
        put32(&mut z, size);
        put16(&mut z, name.len() as u16);
        put16(&mut z, 0);
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(data);
        let cd = z.len();
        put32(&mut z, CENTRAL_SIG);
        for v in [20, 20, 0, method, 0, 0] {
            put16(&mut z, v);
        }
        put32(&mut z, crc);
        put32(&mut z, data.len() as u32);
        put32(&mut z, size);
        put16(&mut z, name.len() as u16);
        for _ in 0..4 {
            put16(&mut z, 0);
        }
        put32(&mut z, 0);
        put32(&mut z, 0);
        z.extend_from_slice(name.as_bytes());
        let cd_size = z.len() - cd;
        put32(&mut z, EOCD_SIG);
        put32(&mut z, 0);
        put16(&mut z, 1);
        put16(&mut z, 1);
        put32(&mut z, cd_size as u32);
        put32(&mut z, cd as u32);
        put16(&mut z, 0);
        z
    }

    fn crc(data: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(data);
        h.finalize()
    }

    #[test]
    fn deflated_entries_are_read() {
        use std::io::Write;
        let data = b"deflate me ".repeat(1000);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let z = one_entry("0", DEFLATED, &packed, data.len() as u32, crc(&data));
        let mut archive = Archive::open(Cursor::new(z)).unwrap();
        assert_eq!(read(&mut archive, "0", 1 << 20), data);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        use std::io::Write;
        let data = vec![0u8; 50 << 20];
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        // The directory claims 10 bytes; the stream inflates to 50 MiB.
        let z = one_entry("0", DEFLATED, &packed, 10, 0);
        let mut archive = Archive::open(Cursor::new(z)).unwrap();
        let mut out = Vec::new();
        let err = archive.entry("0", 1 << 20, &mut out).unwrap_err();
        assert!(matches!(err, ZipError::Corrupt { .. }), "{err}");
        assert!(out.len() <= 11);
        // Honest about its 50 MiB: refused before inflating anything.
        let z = one_entry("0", DEFLATED, &packed, 50 << 20, 0);
        let mut archive = Archive::open(Cursor::new(z)).unwrap();
        let mut out = Vec::new();
        let err = archive.entry("0", 1 << 20, &mut out).unwrap_err();
        assert!(matches!(err, ZipError::TooLarge { .. }), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn damage_is_refused() {
        let good = one_entry("0", STORED, b"abc", 3, crc(b"abc"));
        assert!(Archive::open(Cursor::new(good.clone())).is_ok());

        let bad_crc = one_entry("0", STORED, b"abc", 3, crc(b"abd"));
        let mut a = Archive::open(Cursor::new(bad_crc)).unwrap();
        assert!(matches!(
            a.entry("0", 10, &mut Vec::new()),
            Err(ZipError::Corrupt { .. })
        ));

        let too_big = one_entry("0", STORED, b"abc", 3, crc(b"abc"));
        let mut a = Archive::open(Cursor::new(too_big)).unwrap();
        assert!(matches!(
            a.entry("0", 2, &mut Vec::new()),
            Err(ZipError::TooLarge { .. })
        ));

        for cut in [1, 10, 22, good.len() - 10] {
            let truncated = good[..good.len() - cut].to_vec();
            assert!(Archive::open(Cursor::new(truncated)).is_err(), "cut {cut}");
        }
        assert!(Archive::open(Cursor::new(b"not a zip at all, not at all".to_vec())).is_err());
        assert!(Archive::open(Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn too_many_entries_are_refused_before_reading_them() {
        let mut z = Vec::new();
        put32(&mut z, EOCD_SIG);
        put32(&mut z, 0);
        put16(&mut z, 60_000);
        put16(&mut z, 60_000);
        put32(&mut z, 0);
        put32(&mut z, 0);
        put16(&mut z, 0);
        assert!(matches!(
            Archive::open(Cursor::new(z)),
            Err(ZipError::TooManyEntries(60_000))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap fuzz: every prefix and many one-byte mutations of a valid
        // archive are answered with Ok or Err, never a panic or a hang.
        let good = download(&[("0", b"hello"), ("1", b"world")], b"[]");
        for cut in 0..good.len() {
            let _ = Archive::open(Cursor::new(good[..cut].to_vec()))
                .map(|mut a| a.entry("0", 100, &mut Vec::new()).map(|_| ()));
        }
        let mut seed = 12345u32;
        for _ in 0..5000 {
            let mut z = good.clone();
            for _ in 0..3 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (seed >> 8) as usize % z.len();
                z[i] = (seed >> 16) as u8;
            }
            if let Ok(mut a) = Archive::open(Cursor::new(z)) {
                for name in ["0", "1", "_meta"] {
                    let _ = a.entry(name, 100, &mut Vec::new());
                }
            }
        }
    }
}
