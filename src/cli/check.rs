//! `leitner check [--repair]`: the integrity of every user's collection,
//! media database and media folder, and what a crash can leave behind.

use std::ffi::OsString;
use std::path::Path;

use lexopt::Arg::{Long, Short, Value};

use super::{context, help, user_name, Error, Outcome};
use crate::service::config::Config;
use crate::service::control::{Coordinator, Scope};
use crate::storage::collection::{self, snapshots};
use crate::storage::media::{self, audit::Audit};

const HELP: &str = "\
usage: leitner check [--repair] [USER...]

Checks every user (or the ones named): the collection's SQLite integrity,
the media database's, and every media file against it (present, same size
and checksum); and looks for what a crash leaves: media file operations still
owed by a committed batch, staged or temporary files, uncompressed snapshots.
Exits 0 when all is well, 1 when something is wrong.

--repair  fixes what can be fixed safely, with the server holding each user
          meanwhile: finishes owed media operations, removes staged and
          temporary files, compresses raw snapshots, and forgets media entries
          whose file is gone (a device that has the file uploads it again on
          its next Check Media). What it cannot fix it still reports.
";

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut repair = false;
    let mut only = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(HELP),
            Long("repair") => repair = true,
            Value(v) => only.push(user_name(v)?),
            other => return Err(other.unexpected().into()),
        }
    }
    let config = context()?;
    let mut names: Vec<String> = super::all_users(&config)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if !only.is_empty() {
        if let Some(unknown) = only.iter().find(|n| !names.contains(n)) {
            return Err(Error::failed(format!("there is no user '{unknown}'")));
        }
        names = only;
    }
    let coordinator = if repair {
        Some(Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?)
    } else {
        None
    };
    // A raw snapshot the running server is about to compress is work in
    // progress, not damage.
    let compressing = crate::service::control::server_status(&config.base)
        .ok()
        .flatten()
        .map(|s| s.compressing)
        .unwrap_or_default();
    let mut troubled = 0;
    for name in &names {
        let dir = crate::storage::data_dir::user_dir(&config.base, name);
        let busy = compressing.contains(name);
        let (mut problems, audit) = inspect(&dir, busy);
        if repair && !problems.is_empty() {
            let coordinator = coordinator.as_ref().expect("made for --repair");
            let _hold = coordinator
                .hold(name, Scope::All)
                .map_err(|e| Error::failed(format!("asking the server to hold {name}: {e}")))?;
            for done in mend(&config, &dir, &audit, busy) {
                println!("{name}: repaired: {done}");
            }
            problems = inspect(&dir, busy).0;
        }
        if problems.is_empty() {
            println!("{name}: ok");
        } else {
            troubled += 1;
            for problem in problems {
                println!("{name}: {problem}");
            }
        }
    }
    if troubled > 0 {
        let hint = if repair {
            ""
        } else {
            " (leitner check --repair fixes what it safely can)"
        };
        return Err(Error::failed(format!(
            "{troubled} user(s) have problems{hint}"
        )));
    }
    Ok(())
}

/// Every problem found in a user's folder, in words; reads only. `busy`:
/// the server is compressing this user's new snapshot.
fn inspect(dir: &Path, busy: bool) -> (Vec<String>, Audit) {
    let mut problems = Vec::new();
    let mut found = Audit::default();
    let col = dir.join(collection::FILE_NAME);
    if col.exists() {
        match collection::integrity(&col) {
            Ok(None) => {}
            Ok(Some(why)) => problems.push(format!("collection: {why}")),
            Err(e) => problems.push(format!("collection cannot be read: {e}")),
        }
    }
    match media::audit::audit(dir) {
        Ok(None) => {}
        Ok(Some(audit)) => {
            problems.extend(describe(&audit));
            found = audit;
        }
        Err(e) => problems.push(format!("media database cannot be read: {e}")),
    }
    let temps = stale_temps(dir).len();
    if temps > 0 {
        problems.push(format!(
            "{temps} temporary file(s) left by an interrupted write"
        ));
    }
    let raw = snapshots::list(dir)
        .map(|all| all.iter().filter(|s| s.raw).count())
        .unwrap_or(0);
    if raw > 0 && busy {
        println!(
            "{}: the server is compressing {raw} snapshot(s) taken a moment ago (not a problem)",
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
    } else if raw > 0 {
        problems.push(format!("{raw} snapshot(s) not compressed yet"));
    }
    (problems, found)
}

fn describe(audit: &Audit) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = &audit.database {
        out.push(format!("media database: {why}"));
    }
    let some = |names: &[String]| {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = names.len().saturating_sub(shown.len());
        let mut text = format!("{shown:?}");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    if audit.owed > 0 {
        out.push(format!(
            "media: {} file operation(s) of a committed batch not done (a crash mid-batch)",
            audit.owed
        ));
    }
    if audit.staged > 0 {
        out.push(format!("media: {} staged file(s) left over", audit.staged));
    }
    if !audit.missing.is_empty() {
        out.push(format!(
            "media: {} file(s) listed but missing: {}",
            audit.missing.len(),
            some(&audit.missing)
        ));
    }
    if !audit.differing.is_empty() {
        out.push(format!(
            "media: {} file(s) differ from their checksum: {} (changed by hand? a device's \
             Check Media and a sync replace them)",
            audit.differing.len(),
            some(&audit.differing)
        ));
    }
    if !audit.strays.is_empty() {
        out.push(format!(
            "media: {} file(s) in the folder that the server does not list: {} (left alone)",
            audit.strays.len(),
            some(&audit.strays)
        ));
    }
    out
}

/// Temp files a dead process left in the user's folder and snapshots
/// (a live server's are writes in progress).
fn stale_temps(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = crate::ground::durable::stale_temps(dir);
    all.extend(crate::ground::durable::stale_temps(
        &dir.join(snapshots::DIR_NAME),
    ));
    all
}

/// Fixes what is safe to fix; the user is held. `audit` is what `inspect`
/// found, so the media folder is not hashed again here. Returns what was done.
fn mend(config: &Config, dir: &Path, audit: &Audit, busy: bool) -> Vec<String> {
    let mut done = Vec::new();
    let temps = stale_temps(dir);
    let removed = temps
        .iter()
        .filter(|t| crate::ground::durable::remove_if_present(t).is_ok())
        .count();
    if removed > 0 {
        done.push(format!("removed {removed} temporary file(s)"));
    }
    // The server compresses its own (two at once would race).
    let raw: Vec<_> = snapshots::list(dir)
        .map(|all| all.into_iter().filter(|s| s.raw && !busy).collect())
        .unwrap_or_default();
    for snapshot in &raw {
        match snapshots::pack(&snapshot.path, snapshots::Kind::Upload, config.snapshots) {
            Ok(()) => done.push(format!("compressed snapshot {}", snapshot.id)),
            Err(e) => done.push(format!("compressing snapshot {} failed: {e}", snapshot.id)),
        }
    }
    if media::Store::exists(dir) {
        // Opening the store finishes owed operations (or undoes a batch the
        // card lost part of, never answered) and empties staging.
        match media::Store::open(dir) {
            Ok(mut store) => {
                if audit.owed > 0 || audit.staged > 0 {
                    done.push("finished (or undid) the media batch a crash interrupted".into());
                }
                // Missing before, and still missing once owed renames are done.
                let folder = dir.join(media::store::FOLDER);
                for name in audit.missing.iter().filter(|n| !folder.join(n).exists()) {
                    if store.forget(name).is_ok() {
                        done.push(format!("forgot missing media file {name:?}"));
                    }
                }
            }
            Err(e) => done.push(format!("opening the media store failed: {e}")),
        }
    }
    done
}
