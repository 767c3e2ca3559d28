//! `leitner check` on a user's media: the database against the folder,
//! every file hashed, without changing anything (beside a running server).

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::store::{Store, DB_NAME, FOLDER, STAGING};
use crate::storage::collection::StoreError;

/// What `leitner check` finds in a user's media, read without changing
/// anything (beside a running server).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Audit {
    /// `PRAGMA integrity_check` of `media.db`, if not "ok".
    pub(crate) database: Option<String>,
    /// Live entries whose file is not in the folder.
    pub(crate) missing: Vec<String>,
    /// Live entries whose file has another size or checksum.
    pub(crate) differing: Vec<String>,
    /// Files in the folder that no live entry names.
    pub(crate) strays: Vec<String>,
    /// File operations a committed batch still owes the folder (a crash
    /// came between the commit and the renames).
    pub(crate) owed: usize,
    /// Files left in the staging folder.
    pub(crate) staged: usize,
}

impl Audit {
    /// Whether anything needs a repair or a person.
    #[cfg(test)]
    pub(crate) fn is_clean(&self) -> bool {
        *self == Audit::default()
    }
}

/// Checks a user's media database against their media folder, hashing every
/// file. `None` if the user has no media database. Blocking.
pub(crate) fn audit(account_dir: &Path) -> Result<Option<Audit>, StoreError> {
    use sha1::{Digest, Sha1};
    if !Store::exists(account_dir) {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        account_dir.join(DB_NAME),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut audit = Audit::default();
    let check: String = conn.query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        audit.database = Some(check);
    }
    // The rows of a batch whose operations all happened stay until a later
    // batch: only count what is still to do (in leitner 0.2's table too).
    for table in ["leitner_owed", "leitner_pending"] {
        let exists: bool = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?",
            [table],
            |r| r.get(0),
        )?;
        if !exists {
            continue;
        }
        // A name two batches changed: only the newer one's operation counts.
        let newest = if table == "leitner_owed" {
            " o WHERE batch = (SELECT max(batch) FROM leitner_owed p WHERE p.fname = o.fname)"
        } else {
            ""
        };
        let mut stmt = conn.prepare(&format!("SELECT fname, staged FROM {table}{newest}"))?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (name, staged) = row?;
            let undone = match staged {
                Some(staged) => account_dir.join(STAGING).join(staged).exists(),
                None => account_dir.join(FOLDER).join(&name).exists(),
            };
            audit.owed += usize::from(undone);
        }
    }
    let folder = account_dir.join(FOLDER);
    let mut live = std::collections::HashSet::new();
    let mut stmt =
        conn.prepare("SELECT fname, csum, size FROM media WHERE size > 0 ORDER BY fname")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (name, sha1, size) = row?;
        let path = folder.join(&name);
        live.insert(name.clone());
        match fs::File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => audit.missing.push(name),
            Err(e) => return Err(e.into()),
            Ok(mut file) => {
                let mut hasher = Sha1::new();
                let len = io::copy(&mut file, &mut hasher)?;
                if len != size as u64 || hasher.finalize().as_slice() != sha1.as_slice() {
                    audit.differing.push(name);
                }
            }
        }
    }
    if folder.exists() {
        for entry in fs::read_dir(&folder)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                audit.strays.push(name);
            }
        }
    }
    audit.strays.sort();
    if account_dir.join(STAGING).exists() {
        audit.staged = fs::read_dir(account_dir.join(STAGING))?.count();
    }
    Ok(Some(audit))
}
