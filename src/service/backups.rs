//! Where automatic backups go, read from the same variables as the rest of
//! the configuration, but apart from it: a wrong backup setting is the
//! backup command's failure to report, never a reason for the server not
//! to start.
//!
//! - `LEITNER_BACKUP_TO`: destinations, separated by commas or spaces:
//!   `usb` (a USB drive labelled `LEITNER`, or any USB drive with a
//!   `leitner-backups` folder at its top), `usb:LABEL`, an absolute folder
//!   (`/mnt/nas/leitner`), or another machine over SFTP
//!   (`sftp://user@host[:port]/path`, or `user@host:path`).
//! - `LEITNER_BACKUP_PASSPHRASE_FILE`: a file whose first line is the
//!   passphrase that encrypts the backups (none: checksummed, not
//!   encrypted).
//! - `LEITNER_BACKUP_KEEP`: backups kept per day, week and month
//!   (default `7,4,6`).

use std::fmt;
use std::path::PathBuf;

use crate::storage::backup::record::Keep;

/// The label a USB drive for backups has unless another is named.
pub(crate) const USB_LABEL: &str = "LEITNER";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Usb {
        label: Option<String>,
    },
    Folder(PathBuf),
    Sftp {
        user: String,
        host: String,
        port: u16,
        /// Relative paths are from the user's home on the host.
        path: String,
    },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Usb { label: None } => f.write_str("usb"),
            Destination::Usb { label: Some(l) } => write!(f, "usb:{l}"),
            Destination::Folder(path) => write!(f, "{}", path.display()),
            Destination::Sftp {
                user,
                host,
                port,
                path,
            } => {
                let path = if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/~/{path}")
                };
                if *port == 22 {
                    write!(f, "sftp://{user}@{host}{path}")
                } else {
                    write!(f, "sftp://{user}@{host}:{port}{path}")
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Settings {
    pub(crate) to: Vec<Destination>,
    pub(crate) passphrase_file: Option<PathBuf>,
    pub(crate) keep: Keep,
}

impl Settings {
    pub(crate) fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let to = match get("LEITNER_BACKUP_TO") {
            None => Vec::new(),
            Some(list) => list
                .split([',', ' '])
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_destination(s.trim()))
                .collect::<Result<_, _>>()
                .map_err(|why| format!("LEITNER_BACKUP_TO: {why}"))?,
        };
        let passphrase_file = get("LEITNER_BACKUP_PASSPHRASE_FILE")
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(p.trim()));
        let keep = match get("LEITNER_BACKUP_KEEP") {
            None => Keep::default(),
            Some(text) => parse_keep(&text).ok_or_else(|| {
                format!("LEITNER_BACKUP_KEEP: '{text}' is not DAILY,WEEKLY,MONTHLY (e.g. 7,4,6)")
            })?,
        };
        Ok(Settings {
            to,
            passphrase_file,
            keep,
        })
    }
}

pub(crate) fn parse_destination(text: &str) -> Result<Destination, String> {
    if text == "usb" {
        return Ok(Destination::Usb { label: None });
    }
    if let Some(label) = text.strip_prefix("usb:") {
        if label.is_empty() || label.len() > 32 || label.contains(['/', '\0']) {
            return Err(format!("'{label}' cannot be a drive's label"));
        }
        return Ok(Destination::Usb {
            label: Some(label.to_owned()),
        });
    }
    if text.starts_with('/') {
        return Ok(Destination::Folder(PathBuf::from(text)));
    }
    let (user_host, path, port) = if let Some(rest) = text.strip_prefix("sftp://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user_host, port) = match authority.rsplit_once(':') {
            Some((uh, port)) => (
                uh,
                port.parse::<u16>()
                    .map_err(|_| format!("'{port}' is not a port"))?,
            ),
            None => (authority, 22),
        };
        // sftp://host/~/dir is relative to the home folder; sftp://host/dir
        // is absolute.
        let path = match path.strip_prefix("~/").or((path == "~").then_some("")) {
            Some(relative) => relative.to_owned(),
            None => format!("/{path}"),
        };
        (user_host, path, port)
    } else if let Some((user_host, path)) = text.split_once(':') {
        (user_host, path.to_owned(), 22)
    } else {
        return Err(format!(
            "'{text}' is not usb, usb:LABEL, an absolute folder, or user@host:path"
        ));
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return Err(format!("'{text}': name the user on the host (user@host)"));
    };
    if user.is_empty()
        || host.is_empty()
        || host.contains(['/', ' '])
        || user.starts_with('-')
        || host.starts_with('-')
    {
        return Err(format!("'{text}': not a user@host"));
    }
    Ok(Destination::Sftp {
        user: user.to_owned(),
        host: host.to_owned(),
        port,
        path,
    })
}

fn parse_keep(text: &str) -> Option<Keep> {
    let numbers: Vec<usize> = text
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    match numbers[..] {
        [daily, weekly, monthly] if daily + weekly + monthly > 0 => Some(Keep {
            daily,
            weekly,
            monthly,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_vars(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn destinations_are_read() {
        let s = settings(&[(
            "LEITNER_BACKUP_TO",
            "usb, usb:FAMILY /mnt/nas/anki,pi@nas:backups sftp://me@host.lan:2222/srv/b sftp://me@h/~/b",
        )])
        .unwrap();
        assert_eq!(
            s.to,
            [
                Destination::Usb { label: None },
                Destination::Usb {
                    label: Some("FAMILY".into())
                },
                Destination::Folder("/mnt/nas/anki".into()),
                Destination::Sftp {
                    user: "pi".into(),
                    host: "nas".into(),
                    port: 22,
                    path: "backups".into()
                },
                Destination::Sftp {
                    user: "me".into(),
                    host: "host.lan".into(),
                    port: 2222,
                    path: "/srv/b".into()
                },
                Destination::Sftp {
                    user: "me".into(),
                    host: "h".into(),
                    port: 22,
                    path: "b".into()
                },
            ]
        );
        assert_eq!(s.to[4].to_string(), "sftp://me@host.lan:2222/srv/b");
        assert_eq!(s.to[3].to_string(), "sftp://pi@nas/~/backups");
        assert_eq!(s.keep, Keep::default());
        assert_eq!(settings(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn mistakes_are_named() {
        for bad in [
            "relative/dir",
            "nas:backups",
            "usb:",
            "-oProxyCommand=x@h:p",
            "sftp://u@h:port/x",
        ] {
            let e = settings(&[("LEITNER_BACKUP_TO", bad)]).unwrap_err();
            assert!(e.starts_with("LEITNER_BACKUP_TO: "), "{bad}: {e}");
        }
        assert!(settings(&[("LEITNER_BACKUP_KEEP", "7,4")]).is_err());
        assert_eq!(
            settings(&[("LEITNER_BACKUP_KEEP", "3, 0, 12")])
                .unwrap()
                .keep,
            Keep {
                daily: 3,
                weekly: 0,
                monthly: 12
            }
        );
    }
}
