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

use std::io;

mod read;
mod write;

pub(crate) use read::Archive;
pub(crate) use write::{Download, Outgoing};

/// More entries than any client sends (25 files and `_meta`), with room.
pub(crate) const MAX_ENTRIES: usize = 100;

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
pub(crate) enum ZipError {
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
    use std::io::Read;

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
