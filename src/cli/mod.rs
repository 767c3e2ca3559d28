//! The `leitner` command: the server (`serve`, the default) and the commands
//! that manage it, one file each. Every command reads the same environment
//! as the server (`SYNC_BASE`, `SYNC_USERn`, ...), works whether or not a
//! server runs (see `control`), and fails with one line and a non-zero exit.

mod backup;
mod check;
mod device;
mod serve;
mod snapshot;
mod status;
mod system;
mod terminal;
mod user;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use crate::service::config::Config;

const USAGE: &str = "\
leitner: a small self-hosted Anki sync server

usage: leitner [COMMAND]

commands:
  serve                      run the sync server (the default)
  user add NAME              add a user; asks for the password
  user passwd NAME           change a user's password; their devices log in again
  user remove NAME           remove a user; their data stays unless --delete-data
  user list                  every user, where they come from, size, last sync
  device list [USER]         the devices that logged in, their clients and last syncs
  device revoke USER ID|--all  cut a device off (a lost phone); it must log in again
  status [--json]            the server, the disk and every user at a glance
  snapshot list USER         a user's snapshots of their collection
  snapshot take USER|--all   snapshot collections changed since their last snapshot
  snapshot restore USER ID   make a snapshot the user's collection again
  backup [DEST]              back up every user to DEST or LEITNER_BACKUP_TO (incremental)
  restore-backup [SOURCE]    put a backup into an empty or stopped data directory
  backup-key                 the ssh key for backups to another machine
  check [--repair]           check every collection, media database and media folder
  hash-password              read a password on stdin, print a PHC hash (PASSWORDS_HASHED)
  system status|update|rollback
                             the appliance image's system slots and updates
                             (`leitner system --help`; on the image only)
  data-format                print the data folder format this leitner reads and writes
  --version                  print the version

`leitner COMMAND --help` tells more. Run the commands as the user that owns
SYNC_BASE, or as root (they then act as that owner).

environment (the server's and the commands'):
  SYNC_USER1..N          user:password (or user:PHC-hash with PASSWORDS_HASHED set)
  PASSWORDS_HASHED       set (to anything) when SYNC_USERn carry PHC hashes
  SYNC_BASE              data folder, one subfolder per user (default: ./data)
  SYNC_HOST, SYNC_PORT   address to listen on (default: 0.0.0.0, 8080)
  MAX_SYNC_PAYLOAD_MEGS  request size limit in MiB; collections may be 3x this (default: 100)
  LEITNER_IDLE_EXIT_SECS when socket-activated, exit after this many idle seconds (default: 300; 0: never)
  LEITNER_SYNC_IDLE_SECS roll back a normal sync idle this long (default: 120)
  LEITNER_SNAPSHOTS      snapshots kept per user (default: 10)
  LEITNER_SNAPSHOT_MEGS  bytes of snapshots kept per user, in MiB (default: 512)
  LEITNER_TRUSTED_PROXIES proxies whose X-Forwarded-For is believed (default: 127.0.0.1, ::1)
  LEITNER_LOG            error, warn, info or debug (default: info)
  LEITNER_BACKUP_TO      backup destinations: usb, usb:LABEL, /folder, user@host:path
  LEITNER_BACKUP_PASSPHRASE_FILE  a file holding the passphrase that encrypts backups
  LEITNER_BACKUP_KEEP    backups kept per day, week, month (default: 7,4,6)
";

pub fn main() -> ExitCode {
    crate::ground::logging::init();
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args.first().map(|a| a.to_string_lossy().into_owned()) {
        None => "serve".to_owned(),
        Some(_) => args.remove(0).to_string_lossy().into_owned(),
    };
    let outcome = match command.as_str() {
        "serve" => serve::serve(args),
        "hash-password" => serve::hash_password(args),
        "user" => user::run(args),
        "device" => device::run(args),
        "status" => status::run(args),
        "snapshot" => snapshot::run(args),
        "backup" => backup::backup(args),
        "restore-backup" => backup::restore_backup(args),
        "backup-key" => backup::backup_key(args),
        "check" => check::run(args),
        "system" => system::run(args),
        "data-format" => {
            println!("{}", crate::storage::data_dir::FORMAT);
            Ok(())
        }
        "--version" | "-V" | "version" => {
            println!("leitner {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Error::usage(format!(
            "unknown command '{other}' (see leitner --help)"
        ))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leitner: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A command's failure: one line for the user and an exit code (2 for a
/// mistake in the command line, 1 for anything else).
#[derive(Debug)]
pub(crate) struct Error {
    message: String,
    code: u8,
}

impl Error {
    pub(crate) fn usage(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: 2,
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<lexopt::Error> for Error {
    fn from(e: lexopt::Error) -> Error {
        Error::usage(e.to_string())
    }
}

pub(crate) type Outcome = Result<(), Error>;

/// Prints a command's help and ends it successfully.
pub(crate) fn help(text: &str) -> Outcome {
    print!("{text}");
    Ok(())
}

/// The configuration for a management command: the server's own variables,
/// read the same way. Run as root on a data folder another user owns (the
/// service's), the command becomes that user first, so every file it
/// creates is the service's to read.
pub(crate) fn context() -> Result<Config, Error> {
    config_files()
        .as_ref()
        .map_err(|e| Error::failed(e.clone()))?;
    let config = Config::from_vars(config_var).map_err(Error::usage)?;
    become_owner(&config.base)?;
    Ok(config)
}

/// One configuration variable as the commands read it: this command's
/// environment first, then the service's configuration file, then the
/// files of its drop-in folder (`leitner.conf.d/*.conf`, in name order,
/// the last one that sets it winning). The appliance image keeps what
/// `leitner.txt` sets there.
pub(crate) fn config_var(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        config_files()
            .as_ref()
            .ok()?
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

fn config_files() -> &'static Result<Vec<(String, String)>, String> {
    static FILES: std::sync::OnceLock<Result<Vec<(String, String)>, String>> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        // LEITNER_CONFIG names another file; empty: none.
        let file = std::env::var("LEITNER_CONFIG")
            .unwrap_or_else(|_| crate::service::config::CONFIG_FILE.into());
        if file.is_empty() {
            return Ok(Vec::new());
        }
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => Ok(crate::service::config::parse_env_file(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        let mut vars = read(Path::new(&file))?;
        let drop_ins = Path::new(&format!("{file}.d")).to_owned();
        if let Ok(entries) = std::fs::read_dir(&drop_ins) {
            let mut paths: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            paths.sort();
            for path in paths {
                vars.extend(read(&path)?);
            }
        }
        Ok(vars)
    })
}

/// The owner a command started as root acts as (see [`as_root`]).
static ACTING_AS: std::sync::OnceLock<nix::unistd::Uid> = std::sync::OnceLock::new();

fn become_owner(base: &Path) -> Result<(), Error> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(base) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    // Root stays the saved user id, for what needs it: backup destinations
    // an admin names, wherever root may write.
    setgroups(&[gid])
        .and_then(|()| setresgid(gid, gid, gid))
        .and_then(|()| setresuid(uid, uid, Uid::from_raw(0)))
        .map_err(|e| {
            Error::failed(format!(
                "cannot act as the owner of {} (uid {uid}): {e}",
                base.display()
            ))
        })?;
    let _ = ACTING_AS.set(uid);
    Ok(())
}

/// Runs `work` with root's rights if the command was started as root (and
/// acts as the data folder's owner meanwhile); plainly otherwise. Only for
/// files outside the data folder: backup destinations and passphrases.
pub(crate) fn as_root<T>(work: impl FnOnce() -> T) -> T {
    use nix::unistd::{seteuid, Uid};
    let Some(&uid) = ACTING_AS.get() else {
        return work();
    };
    let _ = seteuid(Uid::from_raw(0));
    let result = work();
    seteuid(uid).expect("giving root's rights back");
    result
}

/// A name given on the command line that must be a user's: checked as a
/// folder name first, so a typo cannot reach outside the data folder.
pub(crate) fn user_name(arg: OsString) -> Result<String, Error> {
    let name = arg
        .into_string()
        .map_err(|_| Error::usage("the user name is not valid UTF-8"))?;
    crate::storage::data_dir::check_username(&name)
        .map_err(|why| Error::usage(format!("'{name}' cannot be a user: {why}")))?;
    Ok(name)
}

/// Every user the data folder serves: `SYNC_USERn` (from this command's
/// environment) and the users store, in name order, with their source.
pub(crate) fn all_users(config: &Config) -> Result<Vec<(String, String)>, Error> {
    let mut all: Vec<(String, String)> = config
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.clone(), format!("SYNC_USER{}", i + 1)))
        .collect();
    let stored =
        crate::storage::users::load(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    for user in stored {
        if !all.iter().any(|(name, _)| *name == user.name) {
            all.push((user.name, "store".into()));
        }
    }
    all.sort();
    Ok(all)
}

/// `1.2 MB`, in powers of 1000 like disk makers and file managers.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2026-11-26 03:51 UTC` for a time in milliseconds since 1970.
pub(crate) fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::ground::clock::civil(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// Prints rows as columns aligned on the widest cell, two spaces apart.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_time(1_795_665_052_642), "2026-11-26 03:50 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }
}
