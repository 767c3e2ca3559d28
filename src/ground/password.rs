//! Password hashes: PHC strings (PBKDF2), as the official server writes and
//! checks them. CPU work: about a second per check on a Pi, so callers run
//! these on the blocking pool.

use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, Salt};
use pbkdf2::{Params, Pbkdf2};

/// The official server hashes plain passwords with this fixed salt and these
/// parameters; using the same keeps PHC strings interchangeable.
const PLAIN_SALT_B64: &str = "tonuvYGpksNFQBlEmm3lxg";
const PLAIN_ROUNDS: u32 = 600_000;

/// Refuses a PHC string this server could not verify, at start-up rather than
/// at the first login.
pub(crate) fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC string ({e})"))?;
    match hash.algorithm.as_str() {
        "pbkdf2-sha256" | "pbkdf2-sha512" | "pbkdf2" => {}
        other => return Err(format!("unsupported password hash '{other}'")),
    }
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("the PHC string lacks a salt or hash".into());
    }
    Ok(())
}

/// Hashes a plain password the way the official server does at start-up.
pub(crate) fn hash_plain(password: &str) -> String {
    let salt = Salt::from_b64(PLAIN_SALT_B64).expect("constant salt is valid");
    let params = Params {
        rounds: PLAIN_ROUNDS,
        output_length: 32,
    };
    Pbkdf2
        .hash_password_customized(password.as_bytes(), None, None, params, salt)
        .expect("pbkdf2 with valid parameters")
        .to_string()
}

/// Whether `password` is the one `phc` was made from. An unreadable PHC
/// string matches nothing.
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Pbkdf2.verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A PHC string no password matches, as costly to check as a plain
/// password's: checked for unknown users, so a login's time does not tell
/// whether the user exists.
pub(crate) fn unmatchable() -> String {
    format!(
        "$pbkdf2-sha256$i={PLAIN_ROUNDS},l=32${PLAIN_SALT_B64}$\
         AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    )
}
