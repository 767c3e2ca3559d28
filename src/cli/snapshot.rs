//! `leitner snapshot list|take|restore`: server-side copies of collections,
//! so a wrong full sync can be undone.

use std::ffi::OsString;

use lexopt::Arg::{Long, Short, Value};

use super::{context, help, human_bytes, print_table, user_name, utc_time, Error, Outcome};
use crate::service::config::Config;
use crate::service::control::{Coordinator, Scope};
use crate::storage::collection::{restore, snapshots, upload};

const HELP: &str = "\
usage: leitner snapshot list USER
       leitner snapshot take USER|--all
       leitner snapshot restore USER ID

list     the user's snapshots, oldest first: ID, when taken, why (upload: the
         collection a full upload replaced; taken: by snapshot take; restore:
         the collection a restore replaced), notes, cards, size
take     snapshots the collection of USER (or of every user) if it changed
         since its newest snapshot; the daily timer runs `take --all`
restore  makes snapshot ID the user's collection on the server. The collection
         it replaces is kept as a snapshot first, so a restore can be undone.
         Every device of the user must then do a full sync: choose Download

Each user keeps at most LEITNER_SNAPSHOTS snapshots (default 10) taking at
most LEITNER_SNAPSHOT_MEGS MiB (default 512); the oldest go first.
";

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut values = Vec::new();
    let mut all = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(HELP),
            Long("all") => all = true,
            Value(v) => values.push(v),
            other => return Err(other.unexpected().into()),
        }
    }
    let mut values = values.into_iter();
    let action = values
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .ok_or_else(|| Error::usage("snapshot: list, take or restore?"))?;
    let mut rest: Vec<OsString> = values.collect();
    if all && action != "take" {
        return Err(Error::usage("--all is for snapshot take"));
    }
    match (action.as_str(), rest.len()) {
        ("list", 1) => list(&context()?, &user_name(rest.remove(0))?),
        ("take", 0) if all => take(&context()?, None),
        ("take", 1) if !all => take(&context()?, Some(user_name(rest.remove(0))?)),
        ("restore", 2) => {
            let name = user_name(rest.remove(0))?;
            let id = rest[0]
                .to_str()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Error::usage("a snapshot ID is a number (see snapshot list)"))?;
            restore(&context()?, &name, id)
        }
        ("list" | "take" | "restore", _) => Err(Error::usage(format!(
            "snapshot {action}: wrong arguments (see leitner snapshot --help)"
        ))),
        (other, _) => Err(Error::usage(format!("snapshot: unknown action '{other}'"))),
    }
}

/// A user's folder, or an error naming the user if nobody by that name has
/// one.
fn existing_user(config: &Config, name: &str) -> Result<std::path::PathBuf, Error> {
    let dir = crate::storage::data_dir::user_dir(&config.base, name);
    let known = super::all_users(config)?.iter().any(|(n, _)| n == name);
    if !known && !dir.is_dir() {
        return Err(Error::failed(format!("there is no user '{name}'")));
    }
    Ok(dir)
}

fn list(config: &Config, name: &str) -> Outcome {
    let dir = existing_user(config, name)?;
    let all = snapshots::list(&dir).map_err(|e| Error::failed(e.to_string()))?;
    if all.is_empty() {
        println!("{name} has no snapshots yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let (kind, notes, cards) = match &s.info {
                Some(info) => (
                    info.kind.as_str().to_owned(),
                    info.notes.to_string(),
                    info.cards.to_string(),
                ),
                None if s.raw => ("(uncompressed)".into(), "-".into(), "-".into()),
                None => ("-".into(), "-".into(), "-".into()),
            };
            vec![
                s.id.to_string(),
                utc_time(s.id),
                kind,
                notes,
                cards,
                human_bytes(s.size),
            ]
        })
        .collect();
    print_table(&["ID", "TAKEN", "KIND", "NOTES", "CARDS", "SIZE"], &rows);
    Ok(())
}

fn take(config: &Config, only: Option<String>) -> Outcome {
    let names: Vec<String> = match only {
        Some(name) => {
            existing_user(config, &name)?;
            vec![name]
        }
        None => super::all_users(config)?
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    };
    // No hold: the copy is a read transaction beside the server. The
    // coordinator only keeps a server from starting (and sweeping the
    // snapshot folders) while no server runs.
    let _coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let mut failed = 0;
    for name in names {
        let dir = crate::storage::data_dir::user_dir(&config.base, &name);
        match snapshots::take(&dir, config.snapshots) {
            Ok(snapshots::Taken::New(id)) => println!("{name}: snapshot {id}"),
            Ok(snapshots::Taken::Unchanged) => {
                println!("{name}: unchanged since the newest snapshot")
            }
            Ok(snapshots::Taken::NoCollection) => println!("{name}: no collection yet"),
            Err(e) => {
                eprintln!("leitner: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Error::failed(format!("{failed} snapshot(s) failed")));
    }
    Ok(())
}

fn restore(config: &Config, name: &str, id: i64) -> Outcome {
    let dir = existing_user(config, name)?;
    let coordinator = Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    // Unpacked and checked before the server is asked to let go.
    let mut received = restore::prepare(&dir, id, crate::ground::clock::now_millis())
        .map_err(|e| Error::failed(e.to_string()))?;
    let replaced = {
        let _hold = coordinator
            .hold(name, Scope::All)
            .map_err(|e| Error::failed(format!("asking the server to let go of {name}: {e}")))?;
        upload::install(&dir, &mut received)
            .map_err(|e| Error::failed(format!("installing snapshot {id}: {e}")))?
    };
    println!(
        "{name}'s collection is now snapshot {id} ({}).",
        utc_time(id)
    );
    if let Some(raw) = replaced {
        let kept = raw
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        match snapshots::pack(&raw, snapshots::Kind::Restore, config.snapshots) {
            Ok(()) => println!("The collection it replaced is kept as a snapshot (ID {kept}, or an earlier one if it had not changed)."),
            Err(e) => eprintln!("leitner: compressing the replaced collection failed ({e}); it stays as {}", raw.display()),
        }
    }
    println!(
        "Every device of {name} must now do a full sync: when Anki asks whether to upload or \
         download, choose Download."
    );
    Ok(())
}
