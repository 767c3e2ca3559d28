//! `leitner backup` and `leitner restore-backup`.

mod destination;
mod restore;
mod run;
mod ssh_key;
mod usb;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::Arg::{Long, Short, Value};
use lexopt::ValueExt;

use super::{context, help, human_bytes, Error, Outcome};
use crate::service::backups::{Destination, Settings};
use crate::service::config::Config;
use crate::service::control::Coordinator;
use crate::storage::backup::{status, Repository};
use destination::{absolute, open, same_disk, source_destination, Opened};

const BACKUP_HELP: &str = "\
usage: leitner backup [DEST] [--passphrase-file FILE] [--if-set]

Backs up every user's collection, media database and media files, and the
users store, while the server runs. Without DEST, to every destination in
LEITNER_BACKUP_TO (what the nightly timer runs); with DEST, into the folder
DEST/leitner-backups (created if missing).

A backup adds only what changed since the one before: media files an earlier
backup has are not read again, and a collection's unchanged parts are shared.
Everything written is read back and checked before the backup counts. Old
backups are thinned to LEITNER_BACKUP_KEEP (7 daily, 4 weekly, 6 monthly).
Snapshots are left out.

--if-set                without DEST and LEITNER_BACKUP_TO, do nothing
                        (what the nightly timer runs)
--passphrase-file FILE  encrypt with the passphrase on FILE's first line
                        (default: LEITNER_BACKUP_PASSPHRASE_FILE). A new
                        repository is encrypted if a passphrase is given;
                        keep the passphrase somewhere else too: without it,
                        nothing can be restored.
";

const RESTORE_HELP: &str = "\
usage: leitner restore-backup [SOURCE...] [--at NAME] [--list] [--replace]
                              [--if-empty] [--passphrase-file FILE]

Puts a backup back into the data folder (SYNC_BASE). A SOURCE is a folder
holding leitner-backups/ (or that folder itself), usb, usb:LABEL,
user@host:path, or an archive (.tar.zst) made by leitner 0.2; without
one, the destinations in LEITNER_BACKUP_TO are searched. The newest backup
among them is restored unless --at names another.

The data folder must hold no users, or the server must be stopped and
--replace given: the users found there are then moved aside into
SYNC_BASE/leitner-replaced-TIME/ (nothing is deleted). Everything is
unpacked and checked before anything is moved in.

--list             list the backups and restore nothing
--at NAME          restore this backup (a name --list shows)
--replace          with the server stopped, move the present users aside first
--if-empty         only if no user has a collection or media here, and quietly
                   nothing if no backup is found (what a new card runs at its
                   first start); users without data stay unless the backup
                   has them
--passphrase-file  as for `leitner backup`
";

pub(super) fn backup(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut dest = None;
    let mut passphrase_file = None;
    let mut if_set = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(BACKUP_HELP),
            Long("if-set") => if_set = true,
            Long("passphrase-file") => passphrase_file = Some(PathBuf::from(parser.value()?)),
            Value(v) if dest.is_none() => dest = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = context()?;
    let settings = settings()?;
    let destinations = match dest {
        Some(path) => vec![Destination::Folder(absolute(&path)?)],
        None if settings.to.is_empty() && if_set => {
            println!("no backup destination is set (LEITNER_BACKUP_TO, or backup= in leitner.txt)");
            return Ok(());
        }
        None if settings.to.is_empty() => return Err(Error::usage(
            "backup: where to? (leitner backup DEST, or LEITNER_BACKUP_TO in the configuration)",
        )),
        None => settings.to.clone(),
    };
    let passphrase = passphrase(
        passphrase_file
            .as_deref()
            .or(settings.passphrase_file.as_deref()),
    )?;
    let users: Vec<String> = super::all_users(&config)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let mut failures = Vec::new();
    for destination in &destinations {
        let started = crate::ground::clock::now_millis();
        let outcome =
            open(&config.base, destination, passphrase.as_deref(), true).and_then(|mut opened| {
                let mut report = run::run(
                    &config,
                    &coordinator,
                    &users,
                    &mut opened.repo,
                    settings.keep,
                )
                .map_err(|f| match &opened.drive {
                    Some(drive) if !drive.present() => {
                        format!("the USB drive went away during the backup (pulled out?): {f}")
                    }
                    _ => f.to_string(),
                })?;
                if let Destination::Folder(folder) = destination {
                    if same_disk(folder, &config.base) {
                        report.warnings.push(
                            "this folder is on the same disk as the data: the backups would not \
                         survive its loss"
                                .into(),
                        );
                    }
                }
                Ok(report)
            });
        let mut run = status::Run {
            started_ms: started,
            finished_ms: crate::ground::clock::now_millis(),
            ok: outcome.is_ok(),
            message: None,
            backup: None,
            size_bytes: 0,
            written_bytes: 0,
        };
        match &outcome {
            Ok(report) => {
                run.backup = Some(report.record.clone());
                run.size_bytes = report.size;
                run.written_bytes = report.stats.written;
                if !report.warnings.is_empty() {
                    run.message = Some(report.warnings.join("; "));
                }
            }
            Err(why) => run.message = Some(why.clone()),
        }
        if let Err(e) = status::record(&config.base, &destination.to_string(), run) {
            eprintln!("leitner: recording the backup's outcome: {e}");
        }
        match outcome {
            Ok(report) => {
                for warning in &report.warnings {
                    eprintln!("leitner: backup to {destination}: {warning}");
                }
                let s = report.stats;
                println!(
                    "backup {}{} to {destination}: {} user(s), {} of data; wrote {} ({} new \
                     chunks), read {}, {} unchanged media not read; removed {} old backup(s) \
                     and {} chunk(s) no backup needs",
                    report.record,
                    if report.encrypted { " (encrypted)" } else { "" },
                    report.users,
                    human_bytes(report.size),
                    human_bytes(s.written),
                    s.chunks_written,
                    human_bytes(s.read),
                    human_bytes(s.reused),
                    report.pruned_records,
                    report.pruned_chunks,
                );
            }
            Err(why) => {
                eprintln!("leitner: backup to {destination} failed: {why}");
                failures.push(destination.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "backup failed for {} (see above); earlier backups there are intact",
            failures.join(", ")
        )))
    }
}

pub(super) fn restore_backup(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut sources: Vec<OsString> = Vec::new();
    let mut at = None;
    let mut list = false;
    let mut replace = false;
    let mut if_empty = false;
    let mut passphrase_file = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(RESTORE_HELP),
            Long("replace") => replace = true,
            Long("if-empty") => if_empty = true,
            Long("list") => list = true,
            Long("at") => at = Some(parser.value()?.string()?),
            Long("passphrase-file") => passphrase_file = Some(PathBuf::from(parser.value()?)),
            Value(v) => sources.push(v),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = context()?;
    let settings = settings()?;
    let passphrase = passphrase(
        passphrase_file
            .as_deref()
            .or(settings.passphrase_file.as_deref()),
    )?;
    let mut keep_users = Vec::new();
    if if_empty {
        if let Some(name) = restore::user_with_data(&config)? {
            println!("{name} has a collection or media here: nothing restored");
            return Ok(());
        }
        // Users set up without data (from leitner.txt, say) stay, unless
        // the backup has them too.
        keep_users =
            crate::storage::users::load(&config.base).map_err(|e| Error::failed(e.to_string()))?;
        replace = true;
    }

    // An archive of leitner 0.2: one file.
    if let [source] = &sources[..] {
        let path = Path::new(source);
        if super::as_root(|| path.is_file()) {
            if list || at.is_some() {
                return Err(Error::usage(
                    "restore-backup: an archive holds one backup; --list and --at are for repositories",
                ));
            }
            let file = super::as_root(|| std::fs::File::open(path))
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
            let present = check_target_folder(&config, replace)?;
            let restored =
                restore::restore(&config, restore::Source::Archive(path, file), &present)?;
            restore::keep_users(&config, keep_users)?;
            return done(&restored, &path.display().to_string());
        }
    }

    let destinations = if sources.is_empty() {
        if settings.to.is_empty() {
            return Err(Error::usage(
                "restore-backup: from where? (a folder, usb, user@host:path or an archive; \
                 or LEITNER_BACKUP_TO in the configuration)",
            ));
        }
        settings.to.clone()
    } else {
        sources
            .iter()
            .map(source_destination)
            .collect::<Result<_, _>>()?
    };
    // The newest backup among the destinations (or the one --at names).
    let mut best: Option<(String, Opened, String)> = None;
    let mut complaints = Vec::new();
    for destination in &destinations {
        let mut opened = match open(&config.base, destination, passphrase.as_deref(), false) {
            Ok(opened) => opened,
            Err(why) => {
                complaints.push(format!("{destination}: {why}"));
                continue;
            }
        };
        let names = opened
            .repo
            .records()
            .map_err(|e| Error::failed(format!("{destination}: {e}")))?;
        if list {
            println!("{destination}:");
            list_records(&mut opened.repo, &names);
            continue;
        }
        let pick = match &at {
            Some(wanted) => names.iter().find(|n| *n == wanted).cloned(),
            None => names.last().cloned(),
        };
        if let Some(name) = pick {
            if best.as_ref().map_or(true, |(b, _, _)| name > *b) {
                best = Some((name, opened, destination.to_string()));
            }
        }
    }
    for complaint in &complaints {
        eprintln!("leitner: {complaint}");
    }
    if list {
        return Ok(());
    }
    let Some((name, mut opened, from)) = best else {
        if if_empty && at.is_none() {
            println!("no backup found: starting with an empty data folder");
            return Ok(());
        }
        return Err(Error::failed(match at {
            Some(at) => format!("no backup named {at} (see restore-backup --list)"),
            None => "no backup found".to_owned(),
        }));
    };
    let present = check_target_folder(&config, replace)?;
    let host = run::host_name();
    let repo = &mut opened.repo;
    repo.lock(&host)
        .map_err(|e| Error::failed(format!("{from}: {e}")))?;
    let restored = restore::restore(&config, restore::Source::Repository(repo, &name), &present)?;
    let _ = repo.unlock();
    restore::keep_users(&config, keep_users)?;
    done(&restored, &format!("{from} ({name})"))
}

const KEY_HELP: &str = "\
usage: leitner backup-key

Prints the ssh public key this server logs in with for backups to another
machine (user@host:folder in LEITNER_BACKUP_TO). Add the line to that
user's ~/.ssh/authorized_keys on the other machine. With a backup
passphrase (LEITNER_BACKUP_PASSPHRASE_FILE) the key comes from it, so a new
system given the same passphrase has the same key and can restore at once;
without one it is a random key, made once. It is kept in
SYNC_BASE/leitner-backup-ssh/.
";

pub(super) fn backup_key(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    if let Some(arg) = parser.next()? {
        return match arg {
            Long("help") | Short('h') => help(KEY_HELP),
            other => Err(other.unexpected().into()),
        };
    }
    let config = context()?;
    let settings = settings()?;
    let passphrase = passphrase(settings.passphrase_file.as_deref())?;
    let key = ssh_key::public_key(&config.base, passphrase.as_deref()).map_err(Error::failed)?;
    println!("{key}");
    Ok(())
}

fn done(restored: &restore::Restored, from: &str) -> Outcome {
    println!(
        "restored {} user(s) from {from} (a backup of {} by leitner {})",
        restored.users.len(),
        super::utc_time(restored.created),
        restored.version
    );
    Ok(())
}

fn list_records(repo: &mut Repository, names: &[String]) {
    let mut rows = Vec::new();
    for name in names {
        match repo.read_record(name) {
            Ok(r) => rows.push(vec![
                name.clone(),
                super::utc_time(r.created),
                r.users
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                human_bytes(r.size()),
            ]),
            Err(e) => rows.push(vec![
                name.clone(),
                "-".into(),
                format!("does not read: {e}"),
                "-".into(),
            ]),
        }
    }
    super::print_table(&["NAME", "TIME", "USERS", "SIZE"], &rows);
}

/// The users in the data folder, if a restore may go there (none, or the
/// server stopped and `replace`).
fn check_target_folder(config: &Config, replace: bool) -> Result<Vec<String>, Error> {
    std::fs::create_dir_all(&config.base)
        .map_err(|e| Error::failed(format!("{}: {e}", config.base.display())))?;
    let coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let present = restore::present_users(config)?;
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
    Ok(present)
}

fn settings() -> Result<Settings, Error> {
    Settings::from_vars(super::config_var).map_err(Error::usage)
}

/// The passphrase on the first line of `file` (which may be root's alone).
fn passphrase(file: Option<&Path>) -> Result<Option<String>, Error> {
    let Some(file) = file else { return Ok(None) };
    let text = super::as_root(|| std::fs::read_to_string(file)).map_err(|e| {
        Error::failed(format!(
            "the backup passphrase file {}: {e}",
            file.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(Error::failed(format!(
            "the backup passphrase file {} is empty",
            file.display()
        )));
    }
    Ok(Some(line.to_owned()))
}
