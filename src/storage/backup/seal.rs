//! How every file of a backup repository is sealed on the destination:
//! compressed where that helps, checksummed, and, with a passphrase,
//! encrypted, so that a drive or host holding it learns nothing but sizes.
//!
//! Sealed bytes are `body || sha256(label || body)` without a passphrase and
//! `nonce || XChaCha20-Poly1305(body, aad = label)` with one, where body is
//! one byte (0 stored, 1 zstd) and the payload. The label is the name the
//! file is kept under, so a file moved or swapped to another name fails to
//! open rather than being read as the wrong thing.
//!
//! A chunk is named by its content: SHA-256 of the plain bytes, or with a
//! passphrase HMAC-SHA256 under a key derived from it (plain hashes would
//! tell whoever holds the drive which well-known files it has).

use std::fmt;
use std::io;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const STORED: u8 = 0;
const ZSTD: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SUM_LEN: usize = 32;

/// The name of a chunk: a keyed or plain SHA-256 of its plain bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkId(pub(crate) [u8; 32]);

impl ChunkId {
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }

    pub(crate) fn from_hex(text: &str) -> Option<ChunkId> {
        let bytes = unhex(text)?;
        Some(ChunkId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex()[..12])
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChunkId::from_hex(&text).ok_or_else(|| serde::de::Error::custom("not a chunk name"))
    }
}

pub(crate) use crate::ground::hex::{decode as unhex, encode as hex};

/// How a passphrase becomes keys: scrypt, with its cost and salt kept in the
/// repository's description (they are not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Kdf {
    pub(crate) scrypt_log_n: u8,
    pub(crate) scrypt_r: u32,
    pub(crate) scrypt_p: u32,
    pub(crate) salt: String,
}

impl Kdf {
    /// 2^15 x 8 x 128 bytes = 32 MiB and a fraction of a second on a Pi:
    /// well inside the backup's memory, and costly to guess at in bulk.
    pub(crate) fn new() -> io::Result<Kdf> {
        let mut salt = [0u8; 16];
        crate::ground::random::fill(&mut salt)?;
        Ok(Kdf {
            scrypt_log_n: 15,
            scrypt_r: 8,
            scrypt_p: 1,
            salt: hex(&salt),
        })
    }
}

/// Why sealed bytes did not open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Damaged {
    /// The checksum or the authentication tag does not match: changed on
    /// the destination, or (with a passphrase) a different passphrase.
    Checksum,
    /// Opened, but the content is not what the name says.
    WrongContent,
    /// Larger than anything this repository writes.
    TooLarge,
    Malformed(&'static str),
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damaged::Checksum => f.write_str("checksum mismatch (damaged, or another passphrase)"),
            Damaged::WrongContent => f.write_str("content does not match its name"),
            Damaged::TooLarge => f.write_str("larger than this format allows"),
            Damaged::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Damaged {}

/// The keys of one repository: none without a passphrase.
pub(crate) struct Keys {
    secret: Option<([u8; 32], XChaCha20Poly1305)>,
}

impl Keys {
    pub(crate) fn plain() -> Keys {
        Keys { secret: None }
    }

    /// Derives the keys from a passphrase. Blocking: scrypt takes a
    /// fraction of a second and 32 MiB.
    pub(crate) fn from_passphrase(passphrase: &str, kdf: &Kdf) -> io::Result<Keys> {
        let salt = unhex(&kdf.salt).ok_or_else(|| io::Error::other("the salt is not hex"))?;
        let params = scrypt::Params::new(kdf.scrypt_log_n, kdf.scrypt_r, kdf.scrypt_p, 64)
            .map_err(|e| io::Error::other(format!("scrypt parameters: {e}")))?;
        let mut out = [0u8; 64];
        scrypt::scrypt(passphrase.as_bytes(), &salt, &params, &mut out)
            .map_err(|e| io::Error::other(format!("scrypt: {e}")))?;
        let (id_key, seal_key) = out.split_at(32);
        let cipher = XChaCha20Poly1305::new_from_slice(seal_key).expect("32-byte key");
        Ok(Keys {
            secret: Some((id_key.try_into().expect("32 bytes"), cipher)),
        })
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.secret.is_some()
    }

    pub(crate) fn id_of(&self, data: &[u8]) -> ChunkId {
        match &self.secret {
            None => ChunkId(Sha256::digest(data).into()),
            Some((id_key, _)) => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(id_key).expect("any key length");
                mac.update(data);
                ChunkId(mac.finalize().into_bytes().into())
            }
        }
    }

    /// Compresses (when that saves something) and seals `data` for keeping
    /// under `label`.
    pub(crate) fn seal(&self, label: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
        let compressed = zstd::bulk::compress(data, 3)?;
        // Pictures and sounds are compressed already: keep them as they are
        // rather than pay for decompression on restore.
        let mut body = Vec::with_capacity(data.len().min(compressed.len()) + 1 + SUM_LEN);
        if compressed.len() + compressed.len() / 16 < data.len() {
            body.push(ZSTD);
            body.extend_from_slice(&compressed);
        } else {
            body.push(STORED);
            body.extend_from_slice(data);
        }
        drop(compressed);
        match &self.secret {
            None => {
                let sum = checksum(label, &body);
                body.extend_from_slice(&sum);
                Ok(body)
            }
            Some((_, cipher)) => {
                let mut nonce = [0u8; NONCE_LEN];
                crate::ground::random::fill(&mut nonce)?;
                let sealed = cipher
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &body,
                            aad: label,
                        },
                    )
                    .map_err(|_| io::Error::other("encryption failed"))?;
                let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
        }
    }

    /// Opens what [`Keys::seal`] made; the plain bytes may be at most
    /// `limit` long.
    pub(crate) fn open(
        &self,
        label: &[u8],
        sealed: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, Damaged> {
        let body = match &self.secret {
            None => {
                if sealed.len() < 1 + SUM_LEN {
                    return Err(Damaged::Malformed("too short"));
                }
                let (body, sum) = sealed.split_at(sealed.len() - SUM_LEN);
                if checksum(label, body)[..] != sum[..] {
                    return Err(Damaged::Checksum);
                }
                std::borrow::Cow::Borrowed(body)
            }
            Some((_, cipher)) => {
                if sealed.len() < NONCE_LEN + TAG_LEN + 1 {
                    return Err(Damaged::Malformed("too short"));
                }
                let (nonce, rest) = sealed.split_at(NONCE_LEN);
                let body = cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: rest,
                            aad: label,
                        },
                    )
                    .map_err(|_| Damaged::Checksum)?;
                std::borrow::Cow::Owned(body)
            }
        };
        let (kind, payload) = body.split_first().ok_or(Damaged::Malformed("empty"))?;
        match *kind {
            STORED if payload.len() <= limit => Ok(payload.to_vec()),
            STORED => Err(Damaged::TooLarge),
            ZSTD => zstd::bulk::decompress(payload, limit).map_err(|_| Damaged::TooLarge),
            _ => Err(Damaged::Malformed("unknown kind of body")),
        }
    }

    /// Opens a chunk and checks that its content is what its name says.
    pub(crate) fn open_chunk(
        &self,
        id: &ChunkId,
        sealed: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, Damaged> {
        let data = self.open(&id.0, sealed, limit)?;
        if self.id_of(&data) != *id {
            return Err(Damaged::WrongContent);
        }
        Ok(data)
    }
}

fn checksum(label: &[u8], body: &[u8]) -> [u8; SUM_LEN] {
    let mut sum = Sha256::new();
    sum.update((label.len() as u64).to_le_bytes());
    sum.update(label);
    sum.update(body);
    sum.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_kdf() -> Kdf {
        Kdf {
            scrypt_log_n: 4,
            ..Kdf::new().unwrap()
        }
    }

    #[test]
    fn sealed_bytes_open_under_their_label_only() {
        for keys in [
            Keys::plain(),
            Keys::from_passphrase("horse", &quick_kdf()).unwrap(),
        ] {
            let text = b"the same words again and again and again and again".repeat(50);
            let noise: Vec<u8> = (0..4000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            for data in [&text[..], &noise[..], b""] {
                let id = keys.id_of(data);
                let sealed = keys.seal(&id.0, data).unwrap();
                assert_eq!(keys.open_chunk(&id, &sealed, 1 << 20).unwrap(), data);
                let other = keys.id_of(b"other");
                assert_eq!(
                    keys.open(&other.0, &sealed, 1 << 20),
                    Err(Damaged::Checksum)
                );
                let mut flipped = sealed.clone();
                let last = flipped.len() - 1;
                flipped[last] ^= 1;
                assert_eq!(keys.open(&id.0, &flipped, 1 << 20), Err(Damaged::Checksum));
            }
            let sealed = keys.seal(b"x", &text).unwrap();
            assert!(
                sealed.len() < text.len() / 4,
                "repetitive text is compressed"
            );
            assert_eq!(keys.open(b"x", &sealed, 100), Err(Damaged::TooLarge));
        }
    }

    #[test]
    fn a_passphrase_hides_the_content_and_its_hash() {
        let kdf = quick_kdf();
        let keys = Keys::from_passphrase("horse", &kdf).unwrap();
        let data = b"Tokyo is the capital of Japan. Tokyo is the capital of Japan.";
        let id = keys.id_of(data);
        assert_ne!(id, Keys::plain().id_of(data));
        let sealed = keys.seal(&id.0, data).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"Tokyo"));
        let wrong = Keys::from_passphrase("battery", &kdf).unwrap();
        assert_eq!(wrong.open(&id.0, &sealed, 1 << 20), Err(Damaged::Checksum));
        // The same passphrase gives the same keys: chunks dedupe across runs.
        let again = Keys::from_passphrase("horse", &kdf).unwrap();
        assert_eq!(again.id_of(data), id);
        assert_eq!(again.open_chunk(&id, &sealed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn chunk_names_round_trip_as_hex() {
        let id = Keys::plain().id_of(b"abc");
        assert_eq!(ChunkId::from_hex(&id.hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(ChunkId::from_hex("abcd"), None);
    }
}
