//! `leitner backup DEST` and `leitner restore-backup ARCHIVE`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lexopt::Arg::{Long, Short, Value};

use super::{context, help, human_bytes, Error, Outcome};
use crate::ground::durable;
use crate::service::config::Config;
use crate::service::control::{Coordinator, Scope};
use crate::storage::backup::{self, Manifest};
use crate::storage::{collection, data_dir, media};

const BACKUP_HELP: &str = "\
usage: leitner backup DEST

Writes a consistent copy of every user's collection, media database and media
files, and of the users store, to one zstd-compressed tar archive, while the
server runs: collections are copied in a read transaction (syncs go on), a
user's media while their media sync waits. DEST is a file to create, or a
folder to create leitner-backup-DATE-TIME.tar.zst in. Snapshots are left out.
The archive appears only once complete. A progress line is printed every few
seconds on long runs.
";

const RESTORE_HELP: &str = "\
usage: leitner restore-backup ARCHIVE [--replace]

Puts a backup made by `leitner backup` into the data folder (SYNC_BASE). The
folder must hold no users, or the server must be stopped and --replace given:
the users found there are then moved aside into SYNC_BASE/leitner-replaced-TIME/
(nothing is deleted). Every entry is checked before anything is moved in.

--replace  with the server stopped, move the present users aside first
";

pub(super) fn backup(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut dest = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(BACKUP_HELP),
            Value(v) if dest.is_none() => dest = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let dest = dest.ok_or_else(|| Error::usage("backup: where to? (leitner backup DEST)"))?;
    let config = context()?;
    let dest = if dest.is_dir() {
        let stamp = super::utc_time(crate::ground::clock::now_millis());
        let stamp: String = stamp
            .trim_end_matches(" UTC")
            .chars()
            .map(|c| if c.is_ascii_digit() { c } else { '-' })
            .collect();
        dest.join(format!("leitner-backup-{stamp}.tar.zst"))
    } else {
        dest
    };
    if dest.exists() {
        return Err(Error::failed(format!("{} exists already", dest.display())));
    }
    let users: Vec<String> = super::all_users(&config)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let manifest = Manifest {
        format: 1,
        version: env!("CARGO_PKG_VERSION").into(),
        created: crate::ground::clock::now_millis(),
        users: users.clone(),
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::failed(format!("{what}: {e}"));
    let mut writer = super::as_root(|| backup::Writer::create(&dest, &manifest))
        .map_err(|e| failed(&dest.display().to_string(), &e))?;
    let result = write_users(&config, &coordinator, &users, &mut writer);
    // The archive's own folder may be one only root can write to.
    let dest = super::as_root(|| match result {
        Ok(missing) => writer
            .finish()
            .map(|dest| (dest, missing))
            .map_err(|e| failed("finishing the archive", &e)),
        Err(e) => {
            drop(writer);
            Err(e)
        }
    });
    let (dest, (bytes, missing)) = dest?;
    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {} user(s) in {} ({} of data, {} compressed)",
        users.len(),
        dest.display(),
        human_bytes(bytes),
        human_bytes(size)
    );
    if missing > 0 {
        println!("{missing} media file(s) were missing (see above); `leitner check` tells more");
    }
    Ok(())
}

/// Adds the users store and every user to the archive; returns the bytes
/// added and how many media files were missing.
fn write_users(
    config: &Config,
    coordinator: &Coordinator,
    users: &[String],
    writer: &mut backup::Writer,
) -> Result<(u64, usize), Error> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::failed(format!("{what}: {e}"));
    // Copies wait in the data folder (the service's to write), each for a
    // moment, before they go into the archive.
    let scratch = config.base.clone();
    let mut progress = Progress::new();
    let users_file = crate::storage::users::path(&config.base);
    if users_file.exists() {
        writer
            .add_file(data_dir::USERS_FILE, &users_file)
            .map_err(|e| failed("the users store", &e))?;
    }
    let mut missing = 0;
    for name in users {
        let dir = data_dir::user_dir(&config.base, name);
        let live = dir.join(collection::FILE_NAME);
        if live.exists() {
            let copy = durable::temp_path(&scratch, "collection");
            let copied = collection::open(&live)
                .and_then(|conn| conn.execute("VACUUM INTO ?", [copy.to_string_lossy()]))
                .map_err(|e| failed(&format!("copying {name}'s collection"), &e))
                .and_then(|_| {
                    writer
                        .add_file(&format!("{name}/{}", collection::FILE_NAME), &copy)
                        .map_err(|e| failed(&format!("archiving {name}'s collection"), &e))
                });
            let _ = durable::remove_if_present(&copy);
            copied?;
            progress.tick(name, writer);
        }
        if media::Store::exists(&dir) {
            // The media database and folder change together: copy both
            // while the user's media sync waits. Opening the store first
            // finishes what a crash may have left owed.
            let _hold = coordinator
                .hold(name, Scope::Media)
                .map_err(|e| failed(&format!("asking the server to hold {name}'s media"), &e))?;
            let store =
                media::Store::open(&dir).map_err(|e| failed(&format!("{name}'s media"), &e))?;
            let copy = durable::temp_path(&scratch, "media");
            let result = (|| -> Result<(), Error> {
                store
                    .copy_to(&copy)
                    .map_err(|e| failed(&format!("copying {name}'s media database"), &e))?;
                let files = media::store::live_files(&copy)
                    .map_err(|e| failed(&format!("{name}'s media database"), &e))?;
                writer
                    .add_file(&format!("{name}/{}", media::store::DB_NAME), &copy)
                    .map_err(|e| failed("archiving", &e))?;
                let folder = dir.join(media::store::FOLDER);
                for (file, _) in files {
                    match writer.add_file(
                        &format!("{name}/{}/{file}", media::store::FOLDER),
                        &folder.join(&file),
                    ) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            eprintln!("leitner: {name}: media file {file:?} is missing; left out");
                            missing += 1;
                        }
                        Err(e) => return Err(failed(&format!("archiving {file:?}"), &e)),
                    }
                    progress.tick(name, writer);
                }
                Ok(())
            })();
            drop(store);
            let _ = durable::remove_if_present(&copy);
            result?;
        }
    }
    Ok((writer.added, missing))
}

/// A progress line every few seconds, once a run takes long enough to want one.
struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn tick(&mut self, user: &str, writer: &backup::Writer) {
        if self.last.elapsed() >= Duration::from_secs(3) {
            self.last = Instant::now();
            eprintln!(
                "backup: {} so far, now at {user} ({} s)",
                human_bytes(writer.added),
                self.started.elapsed().as_secs()
            );
        }
    }
}

pub(super) fn restore(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut archive = None;
    let mut replace = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(RESTORE_HELP),
            Long("replace") => replace = true,
            Value(v) if archive.is_none() => archive = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let archive = archive.ok_or_else(|| Error::usage("restore-backup: which archive?"))?;
    let config = context()?;
    // The archive may be where only root can read it.
    let file = super::as_root(|| std::fs::File::open(&archive))
        .map_err(|e| Error::failed(format!("{}: {e}", archive.display())))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::failed(format!(
            "{} is not a file",
            archive.display()
        )));
    }
    std::fs::create_dir_all(&config.base)
        .map_err(|e| Error::failed(format!("{}: {e}", config.base.display())))?;
    let coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let present = present_users(&config)?;
    if !present.is_empty() {
        if coordinator.server_running() {
            return Err(Error::failed(format!(
                "the server is running and {} holds users ({}): stop it first \
                 (sudo systemctl stop leitner.socket leitner.service), or restore into an \
                 empty data folder",
                config.base.display(),
                present.join(", ")
            )));
        }
        if !replace {
            return Err(Error::failed(format!(
                "{} holds users ({}): add --replace to move them aside first",
                config.base.display(),
                present.join(", ")
            )));
        }
    }

    let staging = config.base.join(format!(
        "leitner-restoring-{}",
        crate::ground::clock::now_millis()
    ));
    std::fs::create_dir(&staging)
        .map_err(|e| Error::failed(format!("{}: {e}", staging.display())))?;
    let result = unpack_and_check(file, &archive, &staging).and_then(|manifest| {
        move_in(&config, &staging, &present, &manifest)?;
        Ok(manifest)
    });
    let _ = std::fs::remove_dir_all(&staging);
    let manifest = result?;
    println!(
        "restored {} user(s) from {} (a backup of {} by leitner {})",
        manifest.users.len(),
        archive.display(),
        super::utc_time(manifest.created),
        manifest.version
    );
    Ok(())
}

/// Users with something in the data folder: in the users store, or a
/// folder of their own.
fn present_users(config: &Config) -> Result<Vec<String>, Error> {
    let mut present: Vec<String> = super::all_users(config)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| config.users.iter().all(|u| &u.name != n))
        .collect();
    let entries = std::fs::read_dir(&config.base)
        .map_err(|e| Error::failed(format!("{}: {e}", config.base.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !data_dir::is_reserved(&name) && !present.contains(&name) {
            present.push(name);
        }
    }
    present.sort();
    Ok(present)
}

fn unpack_and_check(
    file: std::fs::File,
    archive: &Path,
    staging: &Path,
) -> Result<Manifest, Error> {
    let mut last = Instant::now();
    let manifest = backup::extract(file, staging, |done| {
        if last.elapsed() >= Duration::from_secs(3) {
            last = Instant::now();
            eprintln!("restore-backup: {} unpacked", human_bytes(done));
        }
    })
    .map_err(|e| Error::failed(format!("{}: {e}", archive.display())))?;
    for name in &manifest.users {
        let dir = staging.join(name);
        let col = dir.join(collection::FILE_NAME);
        if col.exists() {
            collection::upload::validate(&col).map_err(|why| {
                Error::failed(format!("{name}'s collection in the backup: {why}"))
            })?;
        }
        if media::Store::exists(&dir) {
            media::Store::open(&dir)
                .map_err(|e| Error::failed(format!("{name}'s media in the backup: {e}")))?;
        }
    }
    // Everything written reaches the card before anything moves in.
    durable::sync_filesystem(staging).map_err(|e| Error::failed(e.to_string()))?;
    Ok(manifest)
}

/// Moves present users aside, then the restored ones in (each a rename in
/// one file system), the users store last.
fn move_in(
    config: &Config,
    staging: &Path,
    present: &[String],
    manifest: &Manifest,
) -> Result<(), Error> {
    let base = &config.base;
    let io = |what: &Path, e: std::io::Error| Error::failed(format!("{}: {e}", what.display()));
    if !present.is_empty() {
        let aside = base.join(format!(
            "leitner-replaced-{}",
            crate::ground::clock::now_millis()
        ));
        std::fs::create_dir(&aside).map_err(|e| io(&aside, e))?;
        for name in present
            .iter()
            .map(String::as_str)
            .chain([data_dir::USERS_FILE, data_dir::SEEN_FILE])
        {
            let from = base.join(name);
            if from.exists() {
                std::fs::rename(&from, aside.join(name)).map_err(|e| io(&from, e))?;
            }
        }
        println!(
            "moved the users that were there aside into {}",
            aside.display()
        );
    }
    for name in &manifest.users {
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, base.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    let users = staging.join(data_dir::USERS_FILE);
    if users.exists() {
        std::fs::rename(&users, base.join(data_dir::USERS_FILE)).map_err(|e| io(&users, e))?;
    }
    durable::sync_dir(base).map_err(|e| io(base, e))
}
