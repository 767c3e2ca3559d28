//! The server's side of the devices store (`storage::devices`): a record
//! for each login and for each key moved from the official server, and when
//! and from where each device was last heard, kept in memory and folded into
//! the store when the server exits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::storage::devices::{self, Device, DevicesError, Origin};

/// What the server heard of a device since the store was last written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heard {
    /// Unix milliseconds.
    pub(crate) at: i64,
    pub(crate) address: String,
    pub(crate) client: String,
}

/// Keyed by the hash of the device's key (as records are).
pub(crate) type HeardMap = HashMap<String, Heard>;

pub(crate) struct Devices {
    base: PathBuf,
    heard: Mutex<HeardMap>,
}

/// Who a new record is for.
pub(crate) struct NewDevice<'a> {
    pub(crate) user: &'a str,
    /// [`devices::password_mark`] of the user's password now.
    pub(crate) password: String,
    pub(crate) client: &'a str,
    pub(crate) address: Option<IpAddr>,
}

impl Devices {
    pub(crate) fn new(base: PathBuf) -> Devices {
        Devices {
            base,
            heard: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a request of the device whose key hashes to `key`.
    pub(crate) fn heard(&self, key: &str, address: Option<IpAddr>, client: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let entry = heard.entry(key.to_owned()).or_default();
        entry.at = crate::ground::clock::now_millis();
        if let Some(address) = address {
            entry.address = address.to_string();
        }
        if !client.is_empty() {
            entry.client = clean(client);
        }
    }

    /// A copy of what was heard, for `leitner status`.
    pub(crate) fn heard_now(&self) -> HeardMap {
        self.heard.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A login: a new random key and its record. Blocking (one file write).
    pub(crate) fn log_in(&self, who: NewDevice) -> Result<String, DevicesError> {
        let key = devices::new_host_key()?;
        let hash = devices::key_hash(&key);
        self.add(who, hash, Origin::Login)?;
        Ok(key)
    }

    /// The first request with a key the official server derived: recorded
    /// as a device, once. Blocking.
    pub(crate) fn moved(&self, who: NewDevice, key_hash: &str) -> Result<(), DevicesError> {
        self.add(who, key_hash.to_owned(), Origin::Moved)
    }

    fn add(&self, who: NewDevice, key: String, origin: Origin) -> Result<(), DevicesError> {
        let heard = self.take_heard();
        let now = crate::ground::clock::now_millis();
        let result = devices::edit(&self.base, |all| {
            fold(all, &heard);
            if all.iter().any(|d| d.key == key) {
                return Ok(());
            }
            let id = devices::new_id(all, who.user)?;
            all.push(Device {
                user: who.user.to_owned(),
                id,
                key: key.clone(),
                password: who.password.clone(),
                origin,
                client: clean(who.client),
                first: now,
                last: 0,
                address: who.address.map(|a| a.to_string()).unwrap_or_default(),
                revoked: None,
            });
            Ok(())
        });
        if result.is_err() {
            self.give_back(heard);
        }
        result
    }

    /// Folds what was heard into the store (at exit). Blocking.
    pub(crate) fn save(&self) -> Result<(), DevicesError> {
        let heard = self.take_heard();
        if heard.is_empty() {
            return Ok(());
        }
        let result = devices::edit(&self.base, |all| {
            fold(all, &heard);
            Ok(())
        });
        if result.is_err() {
            self.give_back(heard);
        }
        result
    }

    fn take_heard(&self) -> HeardMap {
        std::mem::take(&mut *self.heard.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back what a failed write took, unless newer news came meanwhile.
    fn give_back(&self, old: HeardMap) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        for (key, h) in old {
            heard.entry(key).or_insert(h);
        }
    }
}

/// A client's own description as people name it. Clients describe
/// themselves twice: shortly in every request's header
/// (`VERSION,BUILDHASH,OS`, e.g. `26.9.3,0b9d9a1,linux`), and fully in
/// `meta` (`anki,VERSION (BUILDHASH),PLATFORM`, where an AnkiDroid's
/// platform is `android:ITS_VERSION:ANDROID_RELEASE:MODEL`; AnkiDroid up
/// to 2.16 wrote `ankidroid,VERSION,android:RELEASE:MODEL`). Anything
/// else is shown as it came.
pub(crate) fn describe_client(raw: &str) -> String {
    let parts: Vec<&str> = raw.splitn(3, ',').map(str::trim).collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or_default();
    // `2.16.5 (abc123)`: the build in brackets says nothing to people.
    let version = |v: &str| v.split(" (").next().unwrap_or(v).to_owned();
    let first = field(0);
    if first.is_empty() {
        return "unknown client".into();
    }
    if first.starts_with(|c: char| c.is_ascii_digit()) {
        return match field(2) {
            "android" => format!("AnkiDroid (Anki {first} inside)"),
            "ios" => format!("AnkiMobile (Anki {first} inside)"),
            "windows" => format!("Anki {first} (Windows)"),
            "macos" => format!("Anki {first} (macOS)"),
            "linux" => format!("Anki {first} (Linux)"),
            "" => format!("Anki {first}"),
            os => format!("Anki {first} ({os})"),
        };
    }
    let platform: Vec<&str> = field(2).split(':').collect();
    let android = |version: &str, release: Option<&&str>, model: Option<&&str>| {
        let mut about = Vec::new();
        if let Some(release) = release.filter(|r| !r.is_empty()) {
            about.push(format!("Android {release}"));
        }
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            about.push(model.to_string());
        }
        match about.is_empty() {
            true => format!("AnkiDroid {version}"),
            false => format!("AnkiDroid {version} ({})", about.join(", ")),
        }
    };
    match first.to_ascii_lowercase().as_str() {
        "ankidroid" => android(&version(field(1)), platform.get(1), platform.get(2)),
        "anki" | "ankidesktop" => {
            let v = version(field(1));
            let rest = platform[1..].join(" ");
            match platform[0] {
                "android" if platform.len() > 1 => {
                    android(platform[1], platform.get(2), platform.get(3))
                }
                "ios" => format!("AnkiMobile (Anki {v} inside)"),
                "win" => format!("Anki {v} (Windows {rest})").replace(" )", ")"),
                "mac" => format!("Anki {v} (macOS {rest})").replace(" )", ")"),
                "lin" => format!("Anki {v} (Linux, {rest})").replace(", )", ")"),
                "" => format!("Anki {v}"),
                "linux" => format!("Anki {v} (Linux)"),
                "windows" => format!("Anki {v} (Windows)"),
                "macos" => format!("Anki {v} (macOS)"),
                other => format!("Anki {v} ({other})"),
            }
        }
        _ => raw.to_owned(),
    }
}

/// A client's description as it may be kept and shown: anyone with a
/// password chooses it, so no control characters (a terminal's escapes),
/// and at most 200 characters.
fn clean(client: &str) -> String {
    client
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// Writes what was heard into the records it is about.
pub(crate) fn fold(all: &mut [Device], heard: &HeardMap) {
    for device in all.iter_mut() {
        if let Some(h) = heard.get(&device.key) {
            if h.at > device.last {
                device.last = h.at;
                if !h.address.is_empty() {
                    device.address = h.address.clone();
                }
                if !h.client.is_empty() {
                    device.client = h.client.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_named_as_people_name_them() {
        let cases = [
            ("26.9.3,0b9d9a1,linux", "Anki 26.9.3 (Linux)"),
            ("25.02.5,0b9d9a1,android", "AnkiDroid (Anki 25.02.5 inside)"),
            ("anki,2.1.49 (7a232b70),win:10", "Anki 2.1.49 (Windows 10)"),
            (
                "anki,2.1.66 (70506aeb),lin:debian:13",
                "Anki 2.1.66 (Linux, debian 13)",
            ),
            (
                "anki,25.02.5 (abc),android:2.21.0:14:Pixel 7",
                "AnkiDroid 2.21.0 (Android 14, Pixel 7)",
            ),
            (
                "ankidroid,2.16.5,android:13:Pixel 7",
                "AnkiDroid 2.16.5 (Android 13, Pixel 7)",
            ),
            ("ankidroid,2.15.6,android", "AnkiDroid 2.15.6"),
            ("anki,25.09 (x),ios", "AnkiMobile (Anki 25.09 inside)"),
            ("anki,26.09.3 (29bb700b),linux", "Anki 26.09.3 (Linux)"),
            ("", "unknown client"),
            ("curl/8.1", "curl/8.1"),
        ];
        for (raw, shown) in cases {
            assert_eq!(describe_client(raw), shown, "{raw}");
        }
    }

    #[test]
    fn what_clients_say_of_themselves_is_kept_tame() {
        assert_eq!(clean("anki\u{1b}[31m,2\n"), "anki[31m,2");
        assert_eq!(clean(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn logins_are_recorded_and_what_is_heard_is_saved_once() {
        let dir = tempfile::tempdir().unwrap();
        let devices = Devices::new(dir.path().to_owned());
        let who = || NewDevice {
            user: "alice",
            password: devices::password_mark("k"),
            client: "26.9.3,0b9d9a1,linux",
            address: Some("192.0.2.7".parse().unwrap()),
        };
        let key = devices.log_in(who()).unwrap();
        let hash = devices::key_hash(&key);
        let stored = devices::load(dir.path()).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].key, hash);
        assert_eq!(stored[0].address, "192.0.2.7");
        assert!(!std::fs::read_to_string(devices::path(dir.path()))
            .unwrap()
            .contains(&key));
        // A moved key is recorded once, however often it is seen first.
        devices.moved(who(), "feed").unwrap();
        devices.moved(who(), "feed").unwrap();
        assert_eq!(devices::load(dir.path()).unwrap().len(), 2);

        devices.heard(&hash, Some("192.0.2.8".parse().unwrap()), "25.9,x,mac");
        devices.save().unwrap();
        let stored = devices::load(dir.path()).unwrap();
        let first = stored.iter().find(|d| d.key == hash).unwrap();
        assert!(first.last > 0);
        assert_eq!(first.address, "192.0.2.8");
        assert_eq!(first.client, "25.9,x,mac");
        // Nothing new heard: no write.
        let before = std::fs::metadata(devices::path(dir.path())).unwrap();
        devices.save().unwrap();
        let after = std::fs::metadata(devices::path(dir.path())).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino());
    }
}
