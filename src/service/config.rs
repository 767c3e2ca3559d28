//! Configuration from the environment, with the official server's variable
//! names so an existing setup moves over unchanged.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a user's secret is given in `SYNC_USERn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Secret {
    /// The password itself (`PASSWORDS_HASHED` unset).
    Plain(String),
    /// A PHC string such as `$pbkdf2-sha256$i=600000,l=32$salt$hash`.
    Phc(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserSpec {
    pub(crate) name: String,
    pub(crate) secret: Secret,
    /// The whole `user:secret` value as written in the environment: the
    /// official server derives host keys from it, and so do we.
    pub(crate) raw: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) users: Vec<UserSpec>,
    pub(crate) base: PathBuf,
    pub(crate) host: IpAddr,
    pub(crate) port: u16,
    /// `MAX_SYNC_PAYLOAD_MEGS` in bytes.
    pub(crate) max_payload: u64,
    /// When socket-activated, exit after this long without a request.
    /// `None` keeps running forever.
    pub(crate) idle_exit: Option<Duration>,
    /// A normal sync untouched this long is rolled back.
    pub(crate) sync_idle: Duration,
    /// How many snapshots each user keeps, and how many bytes they may take.
    pub(crate) snapshots: crate::storage::collection::snapshots::Limits,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<Cidr>,
}

/// An address block, `192.168.1.0/24` or `fd00::/8`; a bare address is a
/// block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: u128,
    prefix: u8,
    v4: bool,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let (bits, v4) = bits(addr.parse().ok()?);
        let width = if v4 { 32 } else { 128 };
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return None;
        }
        let prefix = prefix + (128 - width);
        Some(Cidr {
            net: bits & mask(prefix),
            prefix,
            v4,
        })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let (bits, v4) = bits(ip);
        v4 == self.v4 && bits & mask(self.prefix) == self.net
    }
}

/// An address as 128 bits (IPv4, and IPv4 mapped into IPv6, in the low 32),
/// and whether it is IPv4.
fn bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4).into(), true),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u32::from(v4).into(), true),
            None => (u128::from(v6), false),
        },
    }
}

fn mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

pub(crate) const DEFAULT_PORT: u16 = 8080;
pub(crate) const DEFAULT_MAX_PAYLOAD_MEGS: u64 = 100;
pub(crate) const DEFAULT_IDLE_EXIT_SECS: u64 = 300;
/// Clients give up on a request after 60 s without traffic at most.
pub(crate) const DEFAULT_SYNC_IDLE_SECS: u64 = 120;
pub(crate) const DEFAULT_SNAPSHOTS: u64 = 10;
pub(crate) const DEFAULT_SNAPSHOT_MEGS: u64 = 512;
/// A proxy on the same machine (the usual setup) is believed; nothing else.
pub(crate) const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1, ::1";

impl Config {
    pub(crate) fn from_env() -> Result<Config, String> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the
    /// process environment.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let hashed = get("PASSWORDS_HASHED").is_some();
        let mut users: Vec<UserSpec> = Vec::new();
        // Like the official server: SYNC_USER1, SYNC_USER2, ... until the first gap.
        for n in 1.. {
            let var = format!("SYNC_USER{n}");
            let Some(raw) = get(&var) else { break };
            let user = parse_user(&var, &raw, hashed)?;
            if users.iter().any(|u| u.name == user.name) {
                return Err(format!("{var}: user '{}' is defined twice", user.name));
            }
            users.push(user);
        }

        let base = match get("SYNC_BASE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from("data"),
        };
        let host = match get("SYNC_HOST") {
            Some(h) => h
                .parse()
                .map_err(|_| format!("SYNC_HOST: '{h}' is not an IP address"))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let port = number("SYNC_PORT", get("SYNC_PORT"), DEFAULT_PORT as u64)?;
        let port = u16::try_from(port).map_err(|_| format!("SYNC_PORT: {port} is not a port"))?;
        let megs = number(
            "MAX_SYNC_PAYLOAD_MEGS",
            get("MAX_SYNC_PAYLOAD_MEGS"),
            DEFAULT_MAX_PAYLOAD_MEGS,
        )?;
        if megs == 0 || megs > 1 << 20 {
            return Err(format!("MAX_SYNC_PAYLOAD_MEGS: {megs} is out of range"));
        }
        let idle = number(
            "LEITNER_IDLE_EXIT_SECS",
            get("LEITNER_IDLE_EXIT_SECS"),
            DEFAULT_IDLE_EXIT_SECS,
        )?;
        let sync_idle = number(
            "LEITNER_SYNC_IDLE_SECS",
            get("LEITNER_SYNC_IDLE_SECS"),
            DEFAULT_SYNC_IDLE_SECS,
        )?;
        let snapshot_count = number(
            "LEITNER_SNAPSHOTS",
            get("LEITNER_SNAPSHOTS"),
            DEFAULT_SNAPSHOTS,
        )?;
        let snapshot_megs = number(
            "LEITNER_SNAPSHOT_MEGS",
            get("LEITNER_SNAPSHOT_MEGS"),
            DEFAULT_SNAPSHOT_MEGS,
        )?;
        let proxies = get("LEITNER_TRUSTED_PROXIES");
        let proxies = proxies.as_deref().unwrap_or(DEFAULT_TRUSTED_PROXIES);
        let trusted_proxies = proxies
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| {
                    format!("LEITNER_TRUSTED_PROXIES: '{s}' is not an address or address/bits")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            users,
            base,
            host,
            port,
            max_payload: megs << 20,
            idle_exit: (idle > 0).then(|| Duration::from_secs(idle)),
            sync_idle: Duration::from_secs(sync_idle.max(1)),
            snapshots: crate::storage::collection::snapshots::Limits {
                count: snapshot_count.min(100_000) as usize,
                bytes: snapshot_megs.saturating_mul(1 << 20),
            },
            trusted_proxies,
        })
    }
}

/// The configuration file the service reads (systemd's `EnvironmentFile=`)
/// and the management commands read beneath their own environment, so
/// `sudo leitner status` finds the service's data folder.
pub(crate) const CONFIG_FILE: &str = "/etc/leitner/leitner.conf";

/// `KEY=VALUE` lines as systemd's `EnvironmentFile=` reads them: blank lines
/// and `#` or `;` comments skipped, a value in matching quotes unquoted.
pub(crate) fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            (key.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

fn number(var: &str, value: Option<String>, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{var}: '{v}' is not a whole number")),
    }
}

fn parse_user(var: &str, raw: &str, hashed: bool) -> Result<UserSpec, String> {
    let Some((name, secret)) = raw.split_once(':') else {
        return Err(format!("{var}: expected username:password"));
    };
    crate::storage::data_dir::check_username(name).map_err(|why| format!("{var}: {why}"))?;
    if secret.is_empty() {
        return Err(format!("{var}: the password is empty"));
    }
    let secret = if hashed {
        crate::ground::password::check_phc(secret).map_err(|why| format!("{var}: {why}"))?;
        Secret::Phc(secret.to_owned())
    } else {
        Secret::Plain(secret.to_owned())
    };
    Ok(UserSpec {
        name: name.to_owned(),
        secret,
        raw: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[("SYNC_USER1", "alice:pa:ss")]).unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].name, "alice");
        assert_eq!(c.users[0].secret, Secret::Plain("pa:ss".into()));
        assert_eq!(c.port, 8080);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.max_payload, 100 << 20);
        assert_eq!(c.base, PathBuf::from("data"));
        assert_eq!(c.idle_exit, Some(Duration::from_secs(300)));
    }

    #[test]
    fn users_stop_at_the_first_gap() {
        let c = config(&[
            ("SYNC_USER1", "a:1"),
            ("SYNC_USER2", "b:2"),
            ("SYNC_USER4", "d:4"),
        ])
        .unwrap();
        let names: Vec<_> = c.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_input_is_refused_with_the_variable_named() {
        // No SYNC_USERn at all is fine: users may all be in the users store.
        assert!(config(&[]).unwrap().users.is_empty());
        for bad in [
            "nocolon",
            ":pw",
            "../x:pw",
            "a/b:pw",
            "a:",
            "leitner-users.json:pw",
        ] {
            let err = config(&[("SYNC_USER1", bad)]).unwrap_err();
            assert!(err.starts_with("SYNC_USER1"), "{bad}: {err}");
        }
        let err = config(&[("SYNC_USER1", "a:1"), ("SYNC_PORT", "80x")]).unwrap_err();
        assert!(err.contains("SYNC_PORT"));
        let err = config(&[("SYNC_USER1", "a:1"), ("SYNC_PORT", "70000")]).unwrap_err();
        assert!(err.contains("SYNC_PORT"));
        let err = config(&[("SYNC_USER1", "a:1"), ("SYNC_HOST", "nowhere")]).unwrap_err();
        assert!(err.contains("SYNC_HOST"));
        let err = config(&[("SYNC_USER1", "a:1"), ("SYNC_USER2", "a:2")]).unwrap_err();
        assert!(err.contains("twice"));
        let err = config(&[("SYNC_USER1", "a:1"), ("MAX_SYNC_PAYLOAD_MEGS", "0")]).unwrap_err();
        assert!(err.contains("MAX_SYNC_PAYLOAD_MEGS"));
    }

    #[test]
    fn hashed_passwords_must_be_phc_strings() {
        let err = config(&[("SYNC_USER1", "a:secret"), ("PASSWORDS_HASHED", "1")]).unwrap_err();
        assert!(err.starts_with("SYNC_USER1"), "{err}");
        let phc = "$pbkdf2-sha256$i=1000,l=32$tonuvYGpksNFQBlEmm3lxg$Ld1Ez8g8bxN5j+9fzQgd3BHYa3kV3Ujkz5Fhj6s5S4U";
        let c = config(&[
            ("SYNC_USER1", &format!("a:{phc}")),
            ("PASSWORDS_HASHED", ""),
        ])
        .unwrap();
        assert_eq!(c.users[0].secret, Secret::Phc(phc.into()));
    }

    #[test]
    fn env_files_read_as_systemd_reads_them() {
        let vars = parse_env_file(
            "# leitner\n\nSYNC_BASE=/var/lib/leitner\n; other comment\n SYNC_PORT = 8080 \n\
             LEITNER_LOG=\"debug\"\nnot a line\n",
        );
        assert_eq!(
            vars,
            [
                ("SYNC_BASE".to_string(), "/var/lib/leitner".to_string()),
                ("SYNC_PORT".to_string(), "8080".to_string()),
                ("LEITNER_LOG".to_string(), "debug".to_string()),
            ]
        );
    }

    #[test]
    fn idle_exit_can_be_disabled() {
        let c = config(&[("SYNC_USER1", "a:1"), ("LEITNER_IDLE_EXIT_SECS", "0")]).unwrap();
        assert_eq!(c.idle_exit, None);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = config(&[]).unwrap();
        assert!(c
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip("127.0.0.1"))));
        assert!(c.trusted_proxies.iter().any(|n| n.contains(ip("::1"))));
        assert!(c
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip("::ffff:127.0.0.1"))));
        assert!(!c
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip("127.0.0.2"))));
        let c = config(&[(
            "LEITNER_TRUSTED_PROXIES",
            "192.168.1.0/24,fd00::/8 10.0.0.1",
        )])
        .unwrap();
        let trusted = |s| c.trusted_proxies.iter().any(|n| n.contains(ip(s)));
        assert!(trusted("192.168.1.254") && !trusted("192.168.2.1"));
        assert!(trusted("fd12::1") && !trusted("fe80::1"));
        assert!(trusted("10.0.0.1") && !trusted("10.0.0.2") && !trusted("127.0.0.1"));
        assert!(config(&[("LEITNER_TRUSTED_PROXIES", "")])
            .unwrap()
            .trusted_proxies
            .is_empty());
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::2")));
        for bad in ["nginx", "10.0.0.0/33", "::/129", "1.2.3.4/x"] {
            let e = config(&[("LEITNER_TRUSTED_PROXIES", bad)]).unwrap_err();
            assert!(e.contains("LEITNER_TRUSTED_PROXIES"), "{e}");
        }
    }
}
