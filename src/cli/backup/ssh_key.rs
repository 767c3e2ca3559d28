//! The ssh key a backup to another machine logs in with, kept in the data
//! folder (`leitner-backup-ssh/`, with the host keys it has met, trusted on
//! first use).
//!
//! With a backup passphrase the key is derived from it (scrypt, then
//! Ed25519 from the result), so a new card given the same passphrase logs
//! in as the old one did and restores with no terminal; the passphrase
//! already guards everything in the backups. Without one, ssh-keygen makes
//! a random key, which a new card makes anew (and the host must be told
//! of before a restore).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64ct::{Base64, Encoding};

const FOLDER: &str = "leitner-backup-ssh";
/// Not secret, and the same on every card: the key must come out the same
/// from the passphrase alone.
const SALT: &[u8] = b"leitner backup ssh key 1";

pub(super) fn key_path(base: &Path) -> PathBuf {
    base.join(FOLDER).join("id_ed25519")
}

pub(super) fn known_hosts(base: &Path) -> PathBuf {
    base.join(FOLDER).join("known_hosts")
}

/// The public key (one line), made or brought up to date first.
pub(super) fn public_key(base: &Path, passphrase: Option<&str>) -> Result<String, String> {
    let key = key_path(base);
    let dir = base.join(FOLDER);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let comment = format!("leitner-backup@{}", super::run::host_name());
    match passphrase {
        Some(passphrase) => {
            let (private, public) = derive(passphrase, &comment)?;
            if std::fs::read_to_string(&key).ok().as_deref() != Some(private.as_str()) {
                crate::ground::durable::replace(&key, private.as_bytes())
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                crate::ground::durable::replace(
                    &key.with_extension("pub"),
                    format!("{public}\n").as_bytes(),
                )
                .map_err(|e| format!("{}: {e}", key.display()))?;
            }
            Ok(public)
        }
        None => {
            if !key.exists() {
                let made = Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
                    .arg(&key)
                    .output()
                    .map_err(|e| format!("ssh-keygen: {e}"))?;
                if !made.status.success() {
                    return Err(format!(
                        "ssh-keygen: {}",
                        String::from_utf8_lossy(&made.stderr).trim()
                    ));
                }
            }
            let public = key.with_extension("pub");
            std::fs::read_to_string(&public)
                .map(|k| k.trim().to_owned())
                .map_err(|e| format!("{}: {e}", public.display()))
        }
    }
}

/// The key pair a passphrase stands for: OpenSSH's private key file and the
/// public key line.
fn derive(passphrase: &str, comment: &str) -> Result<(String, String), String> {
    let params = scrypt::Params::new(15, 8, 1, 32).map_err(|e| e.to_string())?;
    let mut seed = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), SALT, &params, &mut seed).map_err(|e| e.to_string())?;
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    Ok(openssh_pair(&seed, &pair.pk, comment))
}

/// An unencrypted Ed25519 key in OpenSSH's own format
/// ("openssh-key-v1", as `ssh-keygen` writes it), and its public line.
fn openssh_pair(seed: &[u8; 32], public: &[u8; 32], comment: &str) -> (String, String) {
    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut public_blob = Vec::new();
    string(&mut public_blob, b"ssh-ed25519");
    string(&mut public_blob, public);
    // Two equal words that tell a right decryption; any value will do.
    let check = u32::from_be_bytes([seed[0], seed[1], seed[2], seed[3]]).to_be_bytes();
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    string(&mut private, b"ssh-ed25519");
    string(&mut private, public);
    string(&mut private, &[&seed[..], &public[..]].concat());
    string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut file = b"openssh-key-v1\0".to_vec();
    string(&mut file, b"none");
    string(&mut file, b"none");
    string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    string(&mut file, &public_blob);
    string(&mut file, &private);
    let encoded = Base64::encode_string(&file);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let public_line = format!(
        "ssh-ed25519 {} {comment}",
        Base64::encode_string(&public_blob)
    );
    (text, public_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_always_gives_the_same_key_and_ssh_reads_it() {
        let (private, public) = derive("a long passphrase kept in a drawer", "t@x").unwrap();
        assert_eq!(
            derive("a long passphrase kept in a drawer", "t@x")
                .unwrap()
                .0,
            private
        );
        assert_ne!(derive("another passphrase", "t@x").unwrap().1, public);
        assert!(
            public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
            "{public}"
        );
        // ssh-keygen reads the file back to the same public key.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, &private).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let Ok(out) = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&file)
            .output()
        else {
            return; // no ssh-keygen here
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            read.split_whitespace().take(2).collect::<Vec<_>>(),
            public.split_whitespace().take(2).collect::<Vec<_>>()
        );
    }
}
