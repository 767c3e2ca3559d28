//! `leitner device list|revoke`: the devices that logged in, and cutting
//! one off. A revocation is a change to the devices store, which the server
//! reads again on its next request: the device is refused at once, and its
//! client asks for the password again.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use lexopt::Arg::{Long, Short, Value};
use serde::Serialize;

use super::{context, help, print_table, user_name, utc_time, Error, Outcome};
use crate::service::config::Config;
use crate::service::devices::{describe_client, fold, HeardMap};
use crate::storage::devices::{self, Device, DevicesError, Origin};

const HELP: &str = "\
usage: leitner device list [USER]
       leitner device revoke USER DEVICE|--all

list     every device that logged in (of USER, or of everyone): its id, the
         client and its version, when it logged in and last synced, from
         which address, and whether it may still sync
revoke   cuts a device off (a lost phone): its next sync is refused and Anki
         asks it to log in again; the user's other devices carry on. --all
         cuts off every device of the user. To let a device in again, log
         in on it with the password.

`leitner user passwd` retires every device of the user.
";

/// One device as the commands show it (`status --json` prints these; the
/// fields are in the README).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DeviceView {
    pub(crate) user: String,
    pub(crate) id: String,
    /// The client, as people name it: `Anki 26.9.3 (Linux)`.
    pub(crate) client: String,
    /// The client's own description, as it sent it.
    pub(crate) client_raw: String,
    /// `login`, or `moved` (a key the official server derived).
    pub(crate) origin: Origin,
    pub(crate) first_ms: i64,
    pub(crate) last_sync_ms: Option<i64>,
    pub(crate) address: String,
    /// `active`, `revoked`, or `retired` (its password was changed).
    pub(crate) state: &'static str,
}

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    let mut parser = lexopt::Parser::from_args(args);
    let mut action = None;
    let mut names: Vec<OsString> = Vec::new();
    let mut all = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(HELP),
            Long("all") => all = true,
            Value(v) if action.is_none() => action = Some(v.to_string_lossy().into_owned()),
            Value(v) if names.len() < 2 => names.push(v),
            other => return Err(other.unexpected().into()),
        }
    }
    let action = action.ok_or_else(|| Error::usage("device: list or revoke?"))?;
    let mut names = names.into_iter();
    match action.as_str() {
        "list" => {
            if all {
                return Err(Error::usage("--all is for revoke"));
            }
            let user = names.next().map(user_name).transpose()?;
            if names.next().is_some() {
                return Err(Error::usage("device list takes at most a user"));
            }
            list(&context()?, user.as_deref())
        }
        "revoke" => {
            let user = user_name(
                names
                    .next()
                    .ok_or_else(|| Error::usage("device revoke: which user?"))?,
            )?;
            let device = names.next().map(|d| d.to_string_lossy().into_owned());
            let target = match (device, all) {
                (Some(id), false) => Some(id),
                (None, true) => None,
                _ => return Err(Error::usage(
                    "device revoke USER takes a device id (from `leitner device list`) or --all",
                )),
            };
            revoke(&context()?, &user, target.as_deref())
        }
        other => Err(Error::usage(format!("device: unknown action '{other}'"))),
    }
}

/// Every device of the users the data folder serves, with what the
/// running server heard since it last saved, newest first per user.
pub(crate) fn views(config: &Config, heard: &HeardMap) -> Result<Vec<DeviceView>, Error> {
    let stored = devices::load(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let users =
        crate::storage::users::load(&config.base).map_err(|e| Error::failed(e.to_string()))?;
    let marks = crate::service::auth::password_marks(&config.users, &users);
    Ok(shape(stored, heard, &marks))
}

fn shape(
    mut stored: Vec<Device>,
    heard: &HeardMap,
    marks: &HashMap<String, String>,
) -> Vec<DeviceView> {
    fold(&mut stored, heard);
    stored.retain(|d| marks.contains_key(&d.user));
    stored.sort_by(|a, b| {
        a.user
            .cmp(&b.user)
            .then(b.last_heard().cmp(&a.last_heard()))
    });
    stored
        .into_iter()
        .map(|d| {
            let state = if d.revoked.is_some() {
                "revoked"
            } else if marks.get(&d.user) != Some(&d.password) {
                "retired"
            } else {
                "active"
            };
            DeviceView {
                client: describe_client(&d.client),
                client_raw: d.client,
                origin: d.origin,
                first_ms: d.first,
                last_sync_ms: (d.last > 0).then_some(d.last),
                address: d.address,
                state,
                user: d.user,
                id: d.id,
            }
        })
        .collect()
}

/// What the running server heard, if one runs.
pub(crate) fn heard_by_server(base: &Path) -> HeardMap {
    crate::service::control::server_status(base)
        .ok()
        .flatten()
        .map(|s| s.heard)
        .unwrap_or_default()
}

fn list(config: &Config, user: Option<&str>) -> Outcome {
    if let Some(user) = user {
        if !super::all_users(config)?
            .iter()
            .any(|(name, _)| name == user)
        {
            return Err(Error::failed(format!("there is no user '{user}'")));
        }
    }
    let views: Vec<DeviceView> = views(config, &heard_by_server(&config.base))?
        .into_iter()
        .filter(|v| user.map_or(true, |u| v.user == u))
        .collect();
    if views.is_empty() {
        println!("no devices have logged in yet");
        return Ok(());
    }
    print_devices(&views);
    Ok(())
}

pub(crate) fn print_devices(views: &[DeviceView]) {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.user.clone(),
                v.id.clone(),
                v.client.clone(),
                utc_time(v.first_ms),
                v.last_sync_ms
                    .map(utc_time)
                    .unwrap_or_else(|| "never".into()),
                v.address.clone(),
                match (v.state, v.origin) {
                    (state, Origin::Moved) => format!("{state} (key from the official server)"),
                    ("retired", _) => "retired (password changed)".into(),
                    (state, _) => state.to_owned(),
                },
            ]
        })
        .collect();
    print_table(
        &[
            "USER",
            "DEVICE",
            "CLIENT",
            "LOGGED IN",
            "LAST SYNC",
            "ADDRESS",
            "STATE",
        ],
        &rows,
    );
}

fn revoke(config: &Config, user: &str, id: Option<&str>) -> Outcome {
    if !super::all_users(config)?
        .iter()
        .any(|(name, _)| name == user)
    {
        return Err(Error::failed(format!("there is no user '{user}'")));
    }
    let now = crate::ground::clock::now_millis();
    // --all also shuts out the official server's key, used yet or not.
    let moved = match id {
        None => {
            let users = crate::storage::users::load(&config.base)
                .map_err(|e| Error::failed(e.to_string()))?;
            crate::service::auth::password_marks(&config.users, &users)
                .remove(user)
                .map(|mark| (devices::moved_key(user, &mark), mark))
        }
        Some(_) => None,
    };
    let revoked = devices::edit(&config.base, |all| {
        if let Some((key, mark)) = &moved {
            if !all.iter().any(|d| d.key == *key) {
                all.push(Device {
                    user: user.to_owned(),
                    id: devices::new_id(all, user)?,
                    key: key.clone(),
                    password: mark.clone(),
                    origin: Origin::Moved,
                    client: String::new(),
                    first: now,
                    last: 0,
                    address: String::new(),
                    revoked: None,
                });
            }
        }
        let mut revoked = Vec::new();
        for d in all.iter_mut() {
            let matches = d.user == user && id.map_or(true, |id| d.id == id);
            if matches && d.revoked.is_none() {
                d.revoked = Some(now);
                revoked.push(describe_client(&d.client));
            }
        }
        if revoked.is_empty() {
            return Err(DevicesError::Refused(match id {
                Some(id) => format!(
                    "{user} has no device '{id}' that may sync (see `leitner device list {user}`)"
                ),
                None => format!("{user} has no device that may sync"),
            }));
        }
        Ok(revoked)
    })
    .map_err(|e| Error::failed(e.to_string()))?;
    match id {
        Some(id) => println!(
            "revoked {user}'s device {id} ({}): its next sync is refused and Anki asks it to log in again",
            revoked[0]
        ),
        None => println!(
            "revoked all {} device(s) of {user}: each must log in again",
            revoked.len()
        ),
    }
    Ok(())
}

/// Forgets the device records of `user` but those of the password of
/// `keep` (the user went: `None`; or their password changed, and every key
/// of the old one is dead anyway, while a device may already have logged in
/// with the new one).
pub(crate) fn forget_user(config: &Config, user: &str, keep: Option<&str>) -> Result<(), Error> {
    devices::edit(&config.base, |all| {
        all.retain(|d| d.user != user || keep == Some(d.password.as_str()));
        Ok(())
    })
    .map_err(|e| Error::failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(user: &str, id: &str, mark: &str) -> Device {
        Device {
            user: user.into(),
            id: id.into(),
            key: devices::key_hash(id),
            password: mark.into(),
            origin: Origin::Login,
            client: "26.9.3,0b9d9a1,linux".into(),
            first: 10,
            last: 0,
            address: String::new(),
            revoked: None,
        }
    }

    #[test]
    fn states_follow_revocation_and_the_password() {
        let marks: HashMap<String, String> = [("alice".to_owned(), "m2".to_owned())].into();
        let mut revoked = device("alice", "c", "m2");
        revoked.revoked = Some(20);
        let stored = vec![
            device("alice", "a", "m2"),
            device("alice", "b", "m1"),
            revoked,
            device("gone", "d", "m"),
        ];
        let mut heard = HeardMap::new();
        heard.insert(
            devices::key_hash("a"),
            crate::service::devices::Heard {
                at: 99,
                address: "192.0.2.3".into(),
                client: String::new(),
            },
        );
        let views = shape(stored, &heard, &marks);
        let state: Vec<(&str, &str)> = views.iter().map(|v| (v.id.as_str(), v.state)).collect();
        assert_eq!(state, [("a", "active"), ("b", "retired"), ("c", "revoked")]);
        assert_eq!(views[0].last_sync_ms, Some(99));
        assert_eq!(views[0].address, "192.0.2.3");
        assert_eq!(views[0].client, "Anki 26.9.3 (Linux)");
        assert_eq!(views[1].last_sync_ms, None);
    }
}
