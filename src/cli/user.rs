//! `leitner user add|passwd|remove|list`: the users store, changed while
//! the server runs; the server sees each change on its next request.

use std::ffi::OsString;

use lexopt::Arg::{Long, Short, Value};

use super::{context, help, terminal, user_name, Error, Outcome};
use crate::service::config::Config;
use crate::service::control::{Coordinator, Scope};
use crate::storage::users::{self, StoredUser, UsersError};

const HELP: &str = "\
usage: leitner user add NAME [--password-stdin]
       leitner user passwd NAME [--password-stdin]
       leitner user remove NAME [--delete-data [--yes]]
       leitner user list

add      adds a user to the users store; their devices log in with NAME and
         the password, at once, without a restart
passwd   changes the password; every device of the user must log in again
remove   removes the user; their devices are refused at once. Their data
         stays in SYNC_BASE/NAME unless --delete-data (which asks first,
         unless --yes)
list     every user: where they are defined (the users store, or SYNC_USERn
         in this command's environment), collection size, last sync

--password-stdin  read the password from the first line of standard input
                  instead of asking twice on the terminal
Passwords may be up to 1024 bytes. Users from SYNC_USERn are changed where
they are defined, not here.
";

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut action = None;
    let mut name = None;
    let (mut stdin, mut delete_data, mut yes) = (false, false, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(HELP),
            Long("password-stdin") => stdin = true,
            Long("delete-data") => delete_data = true,
            Long("yes") | Short('y') => yes = true,
            Value(v) if action.is_none() => action = Some(v.to_string_lossy().into_owned()),
            Value(v) if name.is_none() => name = Some(v),
            other => return Err(other.unexpected().into()),
        }
    }
    let action = action.ok_or_else(|| Error::usage("user: add, passwd, remove or list?"))?;
    if action == "list" {
        if name.is_some() {
            return Err(Error::usage("user list takes no name"));
        }
        return list(&context()?);
    }
    let name = user_name(name.ok_or_else(|| Error::usage(format!("user {action}: which user?")))?)?;
    if stdin && !matches!(action.as_str(), "add" | "passwd") {
        return Err(Error::usage("--password-stdin is for add and passwd"));
    }
    if (delete_data || yes) && action != "remove" {
        return Err(Error::usage("--delete-data and --yes are for remove"));
    }
    match action.as_str() {
        "add" => add(&context()?, &name, stdin),
        "passwd" => passwd(&context()?, &name, stdin),
        "remove" => remove(&context()?, &name, delete_data, yes),
        other => Err(Error::usage(format!("user: unknown action '{other}'"))),
    }
}

fn refuse_env_user(config: &Config, name: &str, action: &str) -> Outcome {
    if let Some(i) = config.users.iter().position(|u| u.name == name) {
        return Err(Error::failed(format!(
            "'{name}' is defined by SYNC_USER{}: {action} it there",
            i + 1
        )));
    }
    Ok(())
}

/// Asks for (or reads) a new password and hashes it.
fn new_hash(name: &str, stdin: bool) -> Result<String, Error> {
    let password = if stdin {
        terminal::password_from_stdin()?
    } else {
        terminal::new_password(name)?
    };
    users::check_password(&password).map_err(Error::failed)?;
    users::hash_password(&password).map_err(|e| Error::failed(e.to_string()))
}

/// Whether the users store holds `name`.
fn stored(config: &Config, name: &str) -> Result<bool, Error> {
    Ok(users::load(&config.base)
        .map_err(store_error)?
        .iter()
        .any(|u| u.name == name))
}

fn no_such_user(name: &str) -> Error {
    Error::failed(format!("there is no user '{name}' in the users store"))
}

fn store_error(e: UsersError) -> Error {
    Error::failed(e.to_string())
}

fn add(config: &Config, name: &str, stdin: bool) -> Outcome {
    refuse_env_user(config, name, "change")?;
    if stored(config, name)? {
        return Err(Error::failed(format!(
            "user '{name}' exists (to change the password: leitner user passwd {name})"
        )));
    }
    let hash = new_hash(name, stdin)?;
    std::fs::create_dir_all(&config.base)
        .map_err(|e| Error::failed(format!("{}: {e}", config.base.display())))?;
    users::edit(&config.base, |list| {
        if list.iter().any(|u| u.name == name) {
            return Err(UsersError::Refused(format!("user '{name}' exists")));
        }
        list.push(StoredUser {
            name: name.to_owned(),
            password: hash,
            created: crate::ground::clock::now_secs(),
        });
        Ok(())
    })
    .map_err(store_error)?;
    let dir = crate::storage::data_dir::user_dir(&config.base, name);
    create_private_dir(&dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    println!("added user '{name}': their devices can log in now");
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn passwd(config: &Config, name: &str, stdin: bool) -> Outcome {
    refuse_env_user(config, name, "change")?;
    if !stored(config, name)? {
        return Err(no_such_user(name));
    }
    let hash = new_hash(name, stdin)?;
    users::edit(&config.base, |list| {
        let user = list
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| UsersError::Refused(format!("there is no user '{name}'")))?;
        user.password = hash;
        Ok(())
    })
    .map_err(store_error)?;
    // Their keys died with the old password; the records go too.
    let mark = users::load(&config.base)
        .map_err(store_error)?
        .iter()
        .find(|u| u.name == name)
        .map(crate::service::auth::stored_password_mark);
    super::device::forget_user(config, name, mark.as_deref())?;
    println!("changed the password of '{name}': each of their devices must log in again");
    Ok(())
}

fn remove(config: &Config, name: &str, delete_data: bool, yes: bool) -> Outcome {
    refuse_env_user(config, name, "remove")?;
    if !stored(config, name)? {
        return Err(no_such_user(name));
    }
    let dir = crate::storage::data_dir::user_dir(&config.base, name);
    if delete_data
        && !yes
        && !terminal::confirm(
            &format!(
                "This deletes {} with all of {name}'s collection, media and snapshots.",
                dir.display()
            ),
            name,
        )?
    {
        return Err(Error::failed("nothing was changed"));
    }
    // With the data going too, the server lets go of the user's files first.
    let coordinator = if delete_data {
        Some(Coordinator::new(&config.base).map_err(|e| Error::failed(e.to_string()))?)
    } else {
        None
    };
    let hold =
        match &coordinator {
            Some(c) => Some(c.hold(name, Scope::All).map_err(|e| {
                Error::failed(format!("asking the server to let go of {name}: {e}"))
            })?),
            None => None,
        };
    users::edit(&config.base, |list| {
        list.retain(|u| u.name != name);
        Ok(())
    })
    .map_err(store_error)?;
    super::device::forget_user(config, name, None)?;
    if !delete_data {
        println!(
            "removed user '{name}'; their data stays in {} (leitner user remove --delete-data \
             deletes it)",
            dir.display()
        );
        return Ok(());
    }
    if dir.exists() {
        // One rename takes the folder out of the way at once; a crash while
        // deleting leaves a folder no user can be named after.
        let doomed = config.base.join(format!(
            "leitner-deleting-{}-{name}",
            crate::ground::clock::now_millis()
        ));
        std::fs::rename(&dir, &doomed)
            .and_then(|()| crate::ground::durable::sync_dir(&config.base))
            .and_then(|()| std::fs::remove_dir_all(&doomed))
            .map_err(|e| Error::failed(format!("deleting {}: {e}", dir.display())))?;
    }
    drop(hold);
    println!("removed user '{name}' and deleted their data");
    Ok(())
}

fn list(config: &Config) -> Outcome {
    let seen = super::status::last_seen(&config.base);
    let rows: Vec<Vec<String>> = super::all_users(config)?
        .into_iter()
        .map(|(name, source)| {
            let dir = crate::storage::data_dir::user_dir(&config.base, &name);
            let size = super::status::collection_bytes(&dir);
            vec![
                name.clone(),
                source,
                size.map(super::human_bytes).unwrap_or_else(|| "-".into()),
                seen.get(&name)
                    .map(|s| super::utc_time(s.at))
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no users yet: leitner user add NAME");
        return Ok(());
    }
    super::print_table(&["USER", "SOURCE", "COLLECTION", "LAST SYNC"], &rows);
    Ok(())
}
