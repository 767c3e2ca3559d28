//! Who is asking: logins (`/sync/hostKey`) and host keys on every other request.
//!
//! Host keys are `sha1_hex("user:secret")` over the `SYNC_USERn` value, exactly
//! as the official server derives them, so devices stay logged in when a user
//! moves from it to leitner, and across restarts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, Salt};
use pbkdf2::{Params, Pbkdf2};
use sha1::{Digest, Sha1};
use smol::lock::Semaphore;

use crate::account::Account;
use crate::config::{Secret, UserSpec};

/// The official server hashes plain passwords with this fixed salt and these
/// parameters; using the same keeps PHC strings interchangeable.
const PLAIN_SALT_B64: &str = "tonuvYGpksNFQBlEmm3lxg";
const PLAIN_ROUNDS: u32 = 600_000;

/// At most this many password checks run at once, so a flood of logins cannot
/// occupy every blocking thread (each check is ~1 s of CPU on a Pi).
const CONCURRENT_LOGINS: usize = 2;

pub fn host_key(raw_user_value: &str) -> String {
    let digest = Sha1::digest(raw_user_value.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a PHC string this server could not verify, at start-up rather than
/// at the first login.
pub fn check_phc(phc: &str) -> Result<(), String> {
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
pub fn hash_plain(password: &str) -> String {
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

struct Credential {
    secret: Secret,
    /// For plain passwords the PHC string is computed on first use, not at
    /// start-up: a socket-activated server starts often and must start fast.
    phc: OnceLock<String>,
}

impl Credential {
    fn phc(&self) -> &str {
        match &self.secret {
            Secret::Phc(phc) => phc,
            Secret::Plain(password) => self.phc.get_or_init(|| hash_plain(password)),
        }
    }

    /// Blocking: one PBKDF2 run (plus one more the first time for a plain password).
    fn verify(&self, password: &str) -> bool {
        match PasswordHash::new(self.phc()) {
            Ok(hash) => Pbkdf2.verify_password(password.as_bytes(), &hash).is_ok(),
            Err(_) => false,
        }
    }
}

pub struct Users {
    accounts: Vec<Arc<Account>>,
    credentials: Vec<Arc<Credential>>,
    by_name: HashMap<String, usize>,
    by_host_key: HashMap<String, usize>,
    login_slots: Semaphore,
}

impl Users {
    pub fn new(specs: &[UserSpec], accounts: Vec<Arc<Account>>) -> Users {
        assert_eq!(specs.len(), accounts.len());
        let mut by_name = HashMap::new();
        let mut by_host_key = HashMap::new();
        let mut credentials = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            by_name.insert(spec.name.clone(), i);
            by_host_key.insert(host_key(&spec.raw), i);
            credentials.push(Arc::new(Credential {
                secret: spec.secret.clone(),
                phc: OnceLock::new(),
            }));
        }
        Users {
            accounts,
            credentials,
            by_name,
            by_host_key,
            login_slots: Semaphore::new(CONCURRENT_LOGINS),
        }
    }

    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.accounts
    }

    pub fn by_host_key(&self, key: &str) -> Option<&Arc<Account>> {
        self.by_host_key.get(key).map(|&i| &self.accounts[i])
    }

    /// Checks a login on the blocking pool. An unknown user costs the same as
    /// a known one: the password is checked against the first user's hash and
    /// the answer thrown away.
    pub async fn login(&self, name: &str, password: &str) -> Option<Arc<Account>> {
        let _slot = self.login_slots.acquire().await;
        let known = self.by_name.get(name).copied();
        let credential = self.credentials[known.unwrap_or(0)].clone();
        let password = password.to_owned();
        let ok = smol::unblock(move || credential.verify(&password)).await;
        match known {
            Some(i) if ok => Some(self.accounts[i].clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_matches_the_official_derivation() {
        assert_eq!(
            host_key("alice:secret"),
            "6985e52cea44a28695d5c440bd42f57e9f50b7b1"
        );
    }

    #[test]
    fn plain_hash_has_the_official_shape_and_verifies() {
        let phc = hash_plain("secret");
        assert!(phc.starts_with("$pbkdf2-sha256$i=600000,l=32$tonuvYGpksNFQBlEmm3lxg$"));
        check_phc(&phc).unwrap();
        let c = Credential {
            secret: Secret::Phc(phc),
            phc: OnceLock::new(),
        };
        assert!(c.verify("secret"));
        assert!(!c.verify("Secret"));
    }

    #[test]
    fn phc_check_refuses_garbage() {
        assert!(check_phc("secret").is_err());
        assert!(check_phc("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g").is_err());
    }
}
