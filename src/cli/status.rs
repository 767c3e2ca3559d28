//! `leitner status`: the server, the disk and every user at a glance.
//! Reads only; safe beside a running server.

use std::ffi::OsString;
use std::path::Path;

use lexopt::Arg::{Long, Short};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{context, help, human_bytes, print_table, utc_time, Error, Outcome};
use crate::service::control;
use crate::storage::backup::status as backup_status;
use crate::storage::data_dir::SeenMap;

const HELP: &str = "\
usage: leitner status [--json]

Prints the version, the data folder and the free space on its disk, whether
the server runs (socket-activated and idle counts as running), and for each
user: collection size, notes, cards, reviews, media files and bytes, when
they last synced and with which client, and its devices (as `leitner device
list` shows them); and each backup destination, with
its last backup's time, size and outcome (a warning when the newest good
backup is more than two days old).

--json  the same as one JSON object, for scripts (fields in the README)
";

/// What `status --json` prints. The field names are documented in the README.
#[derive(Serialize)]
struct Status {
    version: String,
    data_dir: String,
    disk_free_bytes: u64,
    disk_total_bytes: u64,
    /// `running` (a server process answers), `idle` (socket-activated, no
    /// process until the next connection) or `stopped`.
    server: &'static str,
    server_pid: Option<u32>,
    users: Vec<UserStatus>,
    backups: Vec<BackupStatus>,
}

#[derive(Serialize)]
struct BackupStatus {
    /// As `LEITNER_BACKUP_TO` names it, or the folder given to `leitner backup`.
    destination: String,
    /// In `LEITNER_BACKUP_TO` (backed up nightly), or only used by hand.
    configured: bool,
    last_run: Option<backup_status::Run>,
    last_good: Option<backup_status::Run>,
    /// No good backup there, or the newest is more than two days old.
    stale: bool,
}

#[derive(Serialize)]
struct UserStatus {
    name: String,
    /// `store` or `SYNC_USERn`.
    source: String,
    collection_bytes: Option<u64>,
    notes: Option<i64>,
    cards: Option<i64>,
    reviews: Option<i64>,
    media_files: Option<i64>,
    media_bytes: Option<i64>,
    snapshots: usize,
    /// Milliseconds since 1970.
    last_sync_ms: Option<i64>,
    last_sync_client: Option<String>,
    /// Every device that logged in, newest first (see `leitner device`).
    devices: Vec<super::device::DeviceView>,
}

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut json = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(HELP),
            Long("json") => json = true,
            other => return Err(other.unexpected().into()),
        }
    }
    let config = context()?;
    let server = control::server_status(&config.base).unwrap_or(None);
    let (state, pid) = match &server {
        Some(s) => ("running", Some(s.pid)),
        None if socket_unit_active() => ("idle", None),
        None => ("stopped", None),
    };
    let (seen, heard) = match server {
        Some(s) => (s.seen, s.heard),
        None => (
            crate::storage::data_dir::load_seen(&config.base),
            Default::default(),
        ),
    };
    // A damaged devices store must not hide the rest of the status.
    let devices = super::device::views(&config, &heard).unwrap_or_else(|e| {
        eprintln!("leitner: {}", e.message);
        Vec::new()
    });
    let (free, total) = crate::ground::durable::space(&config.base).unwrap_or((0, 0));
    let users = super::all_users(&config)?
        .into_iter()
        .map(|(name, source)| {
            let mine = devices.iter().filter(|d| d.user == name).cloned().collect();
            user_status(&config.base, name, source, &seen, mine)
        })
        .collect();
    let backups = backups(&config.base)?;
    let status = Status {
        backups,
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: config.base.display().to_string(),
        disk_free_bytes: free,
        disk_total_bytes: total,
        server: state,
        server_pid: pid,
        users,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| Error::failed(e.to_string()))?
        );
    } else {
        print_text(&status);
    }
    Ok(())
}

fn print_text(s: &Status) {
    println!("leitner {}", s.version);
    println!(
        "data     {} ({} free of {})",
        s.data_dir,
        human_bytes(s.disk_free_bytes),
        human_bytes(s.disk_total_bytes)
    );
    let server = match (s.server, s.server_pid) {
        ("running", Some(pid)) => format!("running (pid {pid})"),
        ("idle", _) => "running (socket-activated, idle: starts on the next sync)".into(),
        _ => "stopped".into(),
    };
    println!("server   {server}");
    print_backups(&s.backups);
    println!("users    {}", s.users.len());
    if s.users.is_empty() {
        return;
    }
    println!();
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = s
        .users
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.source.clone(),
                u.collection_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                num(u.notes),
                num(u.cards),
                num(u.reviews),
                match (u.media_files, u.media_bytes) {
                    (Some(files), Some(bytes)) => {
                        format!("{files} ({})", human_bytes(bytes.max(0) as u64))
                    }
                    _ => "-".into(),
                },
                u.snapshots.to_string(),
                u.last_sync_ms
                    .map(utc_time)
                    .unwrap_or_else(|| "never".into()),
                u.last_sync_client
                    .as_deref()
                    .map(crate::service::devices::describe_client)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "USER",
            "SOURCE",
            "COLLECTION",
            "NOTES",
            "CARDS",
            "REVIEWS",
            "MEDIA",
            "SNAPSHOTS",
            "LAST SYNC",
            "CLIENT",
        ],
        &rows,
    );
    let devices: Vec<_> = s.users.iter().flat_map(|u| u.devices.clone()).collect();
    if !devices.is_empty() {
        println!();
        super::device::print_devices(&devices);
    }
}

/// Every configured destination, and any other a backup was made to.
fn backups(base: &Path) -> Result<Vec<BackupStatus>, Error> {
    let settings =
        crate::service::backups::Settings::from_vars(super::config_var).map_err(Error::usage)?;
    let mut recorded = backup_status::load(base).destinations;
    let now = crate::ground::clock::now_millis();
    let entry =
        |destination: String, configured: bool, d: backup_status::Destination| BackupStatus {
            stale: d.stale(now),
            destination,
            configured,
            last_run: d.last_run,
            last_good: d.last_good,
        };
    let mut all: Vec<BackupStatus> = settings
        .to
        .iter()
        .map(|to| {
            let name = to.to_string();
            let d = recorded.remove(&name).unwrap_or_default();
            entry(name, true, d)
        })
        .collect();
    all.extend(recorded.into_iter().map(|(name, d)| entry(name, false, d)));
    Ok(all)
}

fn print_backups(backups: &[BackupStatus]) {
    if backups.is_empty() {
        println!("backups  none set (LEITNER_BACKUP_TO, or backup= in leitner.txt)");
        return;
    }
    if backups
        .iter()
        .any(|b| b.configured && b.destination.starts_with("sftp://"))
    {
        println!(
            "ssh      backups to other machines log in with the key `leitner backup-key` prints"
        );
    }
    for (i, b) in backups.iter().enumerate() {
        let label = if i == 0 { "backups" } else { "" };
        let last = match &b.last_run {
            None => "never run".to_owned(),
            Some(run) if run.ok => format!(
                "last {}, ok ({}, wrote {})",
                utc_time(run.finished_ms),
                human_bytes(run.size_bytes),
                human_bytes(run.written_bytes)
            ),
            Some(run) => format!(
                "last {}, FAILED: {}",
                utc_time(run.finished_ms),
                run.message.as_deref().unwrap_or("?")
            ),
        };
        let by_hand = if b.configured { "" } else { " (by hand)" };
        println!("{label:<8} {}{by_hand}: {last}", b.destination);
        if b.configured && b.stale {
            let newest = match &b.last_good {
                Some(good) => format!(
                    "the newest good backup is from {} (more than two days ago)",
                    utc_time(good.finished_ms)
                ),
                None => "there is no good backup yet".to_owned(),
            };
            println!("warning  {}: {newest}", b.destination);
        }
    }
}

fn user_status(
    base: &Path,
    name: String,
    source: String,
    seen: &SeenMap,
    devices: Vec<super::device::DeviceView>,
) -> UserStatus {
    let dir = crate::storage::data_dir::user_dir(base, &name);
    let counts = read_only(&dir.join(crate::storage::collection::FILE_NAME)).and_then(|conn| {
        let count = |table: &str| -> Option<i64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .ok()
        };
        Some((count("notes")?, count("cards")?, count("revlog")?))
    });
    let media = read_only(&dir.join(crate::storage::media::store::DB_NAME)).and_then(|conn| {
        conn.query_row(
            "SELECT total_nonempty_files, total_bytes FROM meta",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .ok()
    });
    let last = seen.get(&name);
    UserStatus {
        collection_bytes: collection_bytes(&dir),
        notes: counts.map(|c| c.0),
        cards: counts.map(|c| c.1),
        reviews: counts.map(|c| c.2),
        media_files: media.map(|m| m.0),
        media_bytes: media.map(|m| m.1),
        snapshots: crate::storage::collection::snapshots::list(&dir)
            .map(|l| l.len())
            .unwrap_or(0),
        last_sync_ms: last.map(|s| s.at),
        last_sync_client: last.map(|s| s.client.clone()),
        devices,
        name,
        source,
    }
}

/// A database opened for reading beside the server; `None` if absent.
fn read_only(path: &Path) -> Option<Connection> {
    if !path.exists() {
        return None;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    crate::storage::collection::register_unicase(&conn).ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    Some(conn)
}

/// The collection's size on disk, its write-ahead log included.
pub(super) fn collection_bytes(dir: &Path) -> Option<u64> {
    let main = std::fs::metadata(dir.join(crate::storage::collection::FILE_NAME)).ok()?;
    let wal = std::fs::metadata(dir.join(format!("{}-wal", crate::storage::collection::FILE_NAME)))
        .map(|m| m.len())
        .unwrap_or(0);
    Some(main.len() + wal)
}

/// When each user last synced: the running server knows best; otherwise
/// what it saved when it last stopped.
pub(super) fn last_seen(base: &Path) -> SeenMap {
    match control::server_status(base) {
        Ok(Some(status)) => status.seen,
        _ => crate::storage::data_dir::load_seen(base),
    }
}

/// Whether systemd listens for leitner (so a stopped process is only idle).
fn socket_unit_active() -> bool {
    std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", "leitner.socket"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
