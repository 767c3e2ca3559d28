//! What the last backup runs did, per destination, kept in the data folder
//! (`leitner-backup-status.json`) for `leitner status`: one small file
//! rewritten once per run.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ground::durable;

pub(crate) const FILE: &str = "leitner-backup-status.json";

/// Older than this, the newest good backup is worth a warning.
pub(crate) const STALE_MS: i64 = 2 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Status {
    /// By destination, as `LEITNER_BACKUP_TO` names it.
    pub(crate) destinations: BTreeMap<String, Destination>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Destination {
    pub(crate) last_run: Option<Run>,
    pub(crate) last_good: Option<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    /// Milliseconds since 1970.
    pub(crate) started_ms: i64,
    pub(crate) finished_ms: i64,
    pub(crate) ok: bool,
    /// What went wrong, or what the owner should know.
    pub(crate) message: Option<String>,
    /// The backup's name in the repository, when it was made.
    pub(crate) backup: Option<String>,
    /// Bytes of data the backup holds.
    pub(crate) size_bytes: u64,
    /// Bytes this run wrote to the destination.
    pub(crate) written_bytes: u64,
}

pub(crate) fn load(base: &Path) -> Status {
    std::fs::read(base.join(FILE))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

/// Records a run's outcome for `destination`.
pub(crate) fn record(base: &Path, destination: &str, run: Run) -> io::Result<()> {
    let mut status = load(base);
    let entry = status
        .destinations
        .entry(destination.to_owned())
        .or_default();
    if run.ok {
        entry.last_good = Some(run.clone());
    }
    entry.last_run = Some(run);
    let json = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
    durable::replace(&base.join(FILE), &json)
}

impl Destination {
    /// Whether the newest good backup is missing or older than two days.
    pub(crate) fn stale(&self, now_ms: i64) -> bool {
        self.last_good
            .as_ref()
            .map_or(true, |good| now_ms - good.finished_ms > STALE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ok: bool, at: i64) -> Run {
        Run {
            started_ms: at - 10,
            finished_ms: at,
            ok,
            message: (!ok).then(|| "the destination is full".into()),
            backup: ok.then(|| "2026-12-04T033000Z".into()),
            size_bytes: 5,
            written_bytes: 1,
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "usb", run(true, 1_000)).unwrap();
        record(dir.path(), "usb", run(false, 2_000)).unwrap();
        let status = load(dir.path());
        let usb = &status.destinations["usb"];
        assert!(!usb.last_run.as_ref().unwrap().ok);
        assert_eq!(usb.last_good.as_ref().unwrap().finished_ms, 1_000);
        assert!(!usb.stale(1_000 + STALE_MS));
        assert!(usb.stale(1_001 + STALE_MS));
        assert!(Destination::default().stale(0));
    }
}
