//! The ssh key a backup to another machine logs in with: made once, kept in
//! the data folder (`leitner-backup-ssh/`, the service's user's, like the
//! rest), with the host keys it has met (trusted on first use). It is not
//! itself backed up: a new card makes a new key, which the other machine
//! must be told of before it restores from there.

use std::path::{Path, PathBuf};
use std::process::Command;

const FOLDER: &str = "leitner-backup-ssh";

pub(super) fn key_path(base: &Path) -> PathBuf {
    base.join(FOLDER).join("id_ed25519")
}

pub(super) fn known_hosts(base: &Path) -> PathBuf {
    base.join(FOLDER).join("known_hosts")
}

/// The public key (one line), made first if there is none.
pub(super) fn public_key(base: &Path) -> Result<String, String> {
    let key = key_path(base);
    if !key.exists() {
        let dir = base.join(FOLDER);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let host = super::run::host_name();
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("leitner-backup@{host}"))
            .arg("-f")
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
