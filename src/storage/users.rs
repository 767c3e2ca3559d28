//! The users store: users added with `leitner user add`, kept in the data
//! directory as PBKDF2 PHC strings (the format `PASSWORDS_HASHED` takes), in
//! one JSON file of mode 0600 that is only ever replaced whole.
//!
//! Commands change it; the running server notices the new file on its next
//! request (see `auth::Users`), so a change needs no restart. Each stored
//! hash has its own random salt, so the host key derived from it changes with
//! every password change and old logins stop working.

use std::io;
use std::path::{Path, PathBuf};

use pbkdf2::password_hash::{PasswordHasher, SaltString};
use pbkdf2::{Params, Pbkdf2};
use serde::{Deserialize, Serialize};

use crate::ground::durable;
use crate::storage::data_dir::USERS_FILE;

/// Longest password accepted; PBKDF2 takes any length, but nobody types more.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;
/// The rounds the official server uses for its own hashes.
const ROUNDS: u32 = 600_000;
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    pub(crate) name: String,
    /// A PHC string: `$pbkdf2-sha256$i=600000,l=32$<salt>$<hash>`.
    pub(crate) password: String,
    /// Unix seconds.
    pub(crate) created: i64,
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    users: Vec<StoredUser>,
}

/// Why the store cannot be read or changed as asked.
#[derive(Debug)]
pub(crate) enum UsersError {
    Io(io::Error),
    /// The file exists but is not a users store we understand.
    Damaged(String),
    /// The change asked for cannot be made (the message says why).
    Refused(String),
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsersError::Io(e) => write!(f, "users store: {e}"),
            UsersError::Damaged(why) => write!(f, "users store {USERS_FILE} is damaged: {why}"),
            UsersError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UsersError {}

impl From<io::Error> for UsersError {
    fn from(e: io::Error) -> Self {
        UsersError::Io(e)
    }
}

pub(crate) fn path(base: &Path) -> PathBuf {
    base.join(USERS_FILE)
}

/// The stored users, in the order they were added; none if there is no
/// store yet.
pub(crate) fn load(base: &Path) -> Result<Vec<StoredUser>, UsersError> {
    let bytes = match std::fs::read(path(base)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Result<Vec<StoredUser>, UsersError> {
    let file: StoreFile =
        serde_json::from_slice(bytes).map_err(|e| UsersError::Damaged(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(UsersError::Damaged(format!(
            "format version {} (this leitner reads {FORMAT_VERSION})",
            file.version
        )));
    }
    for user in &file.users {
        crate::storage::data_dir::check_username(&user.name)
            .and_then(|()| crate::ground::password::check_phc(&user.password))
            .map_err(|why| UsersError::Damaged(format!("user '{}': {why}", user.name)))?;
    }
    Ok(file.users)
}

/// Changes the store through `change`, which sees the current users; the
/// new list replaces the file atomically. Concurrent edits (two commands at
/// once) take turns on a lock, so neither change is lost. Blocking.
pub(crate) fn edit<T>(
    base: &Path,
    change: impl FnOnce(&mut Vec<StoredUser>) -> Result<T, UsersError>,
) -> Result<T, UsersError> {
    let _turn = durable::folder_turn(base)?;
    let mut users = load(base)?;
    let result = change(&mut users)?;
    let json = serde_json::to_vec_pretty(&StoreFile {
        version: FORMAT_VERSION,
        users,
    })
    .map_err(io::Error::other)?;
    durable::replace(&path(base), &json)?;
    Ok(result)
}

/// Checks a password before it is hashed.
pub(crate) fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Hashes a new password with a random salt. Blocking (one PBKDF2 run).
pub(crate) fn hash_password(password: &str) -> io::Result<String> {
    let mut salt = [0u8; 16];
    crate::ground::random::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| io::Error::other(e.to_string()))?;
    let params = Params {
        rounds: ROUNDS,
        output_length: 32,
    };
    Ok(Pbkdf2
        .hash_password_customized(password.as_bytes(), None, None, params, &salt)
        .map_err(|e| io::Error::other(e.to_string()))?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_kept_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let phc = crate::ground::password::hash_plain("pw");
        edit(dir.path(), |users| {
            users.push(StoredUser {
                name: "alice".into(),
                password: phc.clone(),
                created: 1,
            });
            Ok(())
        })
        .unwrap();
        let users = load(dir.path()).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].password, phc);
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A refused change leaves the file as it was.
        let err = edit(dir.path(), |users| -> Result<(), _> {
            users.clear();
            Err(UsersError::Refused("no".into()))
        })
        .unwrap_err();
        assert!(matches!(err, UsersError::Refused(_)));
        assert_eq!(load(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn damaged_stores_are_named_as_such() {
        for bad in [
            &b"{"[..],
            br#"{"version":2,"users":[]}"#,
            br#"{"version":1,"users":[{"name":"a/b","password":"x","created":0}]}"#,
            br#"{"version":1,"users":[{"name":"a","password":"plain","created":0}]}"#,
        ] {
            assert!(matches!(parse(bad), Err(UsersError::Damaged(_))));
        }
    }

    #[test]
    fn new_hashes_are_salted_and_verify() {
        use pbkdf2::password_hash::{PasswordHash, PasswordVerifier};
        let a = hash_password("secret").unwrap();
        let b = hash_password("secret").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$pbkdf2-sha256$i=600000,l=32$"));
        let hash = PasswordHash::new(&a).unwrap();
        assert!(Pbkdf2.verify_password(b"secret", &hash).is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
        assert!(check_password("").is_err());
    }
}
