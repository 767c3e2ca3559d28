//! Maps a request path to an endpoint.
//!
//! The endpoint is read from the end of the path, so the server works behind
//! a reverse proxy on a subpath (`http://host/anki/` -> leitner) without being
//! told the prefix: `/anki/sync/meta` and `/sync/meta` are the same endpoint.

use http_types::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Health,
    /// The page a browser gets at the server's address (`/`, or a proxy's
    /// `/anki/`): how to set up each client.
    Welcome,
    Sync(SyncMethod),
    Media(MediaMethod),
}

macro_rules! methods {
    ($name:ident { $($variant:ident = $wire:literal),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name { $($variant),* }

        impl $name {
            pub(crate) fn from_wire(name: &str) -> Option<$name> {
                match name { $($wire => Some($name::$variant),)* _ => None }
            }

            pub(crate) fn wire_name(self) -> &'static str {
                match self { $($name::$variant => $wire),* }
            }
        }
    };
}

methods!(SyncMethod {
    HostKey = "hostKey",
    Meta = "meta",
    Start = "start",
    ApplyGraves = "applyGraves",
    ApplyChanges = "applyChanges",
    Chunk = "chunk",
    ApplyChunk = "applyChunk",
    SanityCheck2 = "sanityCheck2",
    Finish = "finish",
    Abort = "abort",
    Upload = "upload",
    Download = "download",
});

methods!(MediaMethod {
    Begin = "begin",
    MediaChanges = "mediaChanges",
    UploadChanges = "uploadChanges",
    DownloadFiles = "downloadFiles",
    MediaSanity = "mediaSanity",
});

impl Endpoint {
    /// A short name for log lines: `sync/meta`, `msync/begin`, `health`.
    pub(crate) fn log_name(self) -> String {
        match self {
            Endpoint::Health => "health".into(),
            Endpoint::Welcome => "welcome".into(),
            Endpoint::Sync(m) => format!("sync/{}", m.wire_name()),
            Endpoint::Media(m) => format!("msync/{}", m.wire_name()),
        }
    }

    /// The most bytes its request body may have, compressed or not, decided
    /// before a byte is read. Only whole collections and media batches get
    /// the configured payload limit (`bulk`); everything else is small by
    /// nature, and a larger body is a mistake or an attack.
    pub(crate) fn body_limit(self, bulk: u64) -> u64 {
        match self {
            Endpoint::Sync(SyncMethod::Upload) | Endpoint::Media(MediaMethod::UploadChanges) => {
                bulk
            }
            // Up to 250 rows per chunk (Anki's CHUNK_SIZE), or every deck,
            // notetype and setting in `applyChanges`: notes with large
            // fields make these the biggest JSON bodies, with room to spare.
            Endpoint::Sync(
                SyncMethod::Start
                | SyncMethod::ApplyGraves
                | SyncMethod::ApplyChanges
                | SyncMethod::Chunk
                | SyncMethod::ApplyChunk
                | SyncMethod::SanityCheck2,
            ) => STEP_LIMIT.min(bulk),
            // A list of file names.
            Endpoint::Media(MediaMethod::DownloadFiles) => 1 << 20,
            // A name and a password, a version, a usn, a count.
            _ => SMALL_LIMIT,
        }
    }

    fn allows(self, method: Method) -> bool {
        match self {
            Endpoint::Health | Endpoint::Welcome => matches!(method, Method::Get | Method::Head),
            // Pre-v11 desktop clients start media syncs with a GET.
            Endpoint::Media(MediaMethod::Begin) => matches!(method, Method::Get | Method::Post),
            _ => method == Method::Post,
        }
    }
}

/// Body limit of the normal-sync steps.
const STEP_LIMIT: u64 = 32 << 20;
/// Body limit of logins, `meta` and the small media requests.
const SMALL_LIMIT: u64 = 16 << 10;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound(String),
    MethodNotAllowed { allow: &'static str },
}

pub(crate) fn route(method: Method, path: &str) -> Result<Endpoint, Refusal> {
    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or("");
    let parent = segments.next();
    let endpoint = match (parent, last) {
        (Some("sync"), name) => SyncMethod::from_wire(name)
            .map(Endpoint::Sync)
            .ok_or_else(|| Refusal::NotFound(format!("no sync method '{name}'")))?,
        (Some("msync"), name) => MediaMethod::from_wire(name)
            .map(Endpoint::Media)
            .ok_or_else(|| Refusal::NotFound(format!("no media sync method '{name}'")))?,
        (_, "health") => Endpoint::Health,
        // The address itself, with its slash: the page's own folder.
        (_, "") => Endpoint::Welcome,
        _ => {
            return Err(Refusal::NotFound(
                "not an Anki sync endpoint: point Anki at this server's base URL".into(),
            ))
        }
    };
    if !endpoint.allows(method) {
        let allow = match endpoint {
            Endpoint::Health | Endpoint::Welcome => "GET, HEAD",
            Endpoint::Media(MediaMethod::Begin) => "GET, POST",
            _ => "POST",
        };
        return Err(Refusal::MethodNotAllowed { allow });
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_found_with_or_without_a_prefix() {
        for path in ["/sync/meta", "/anki/sync/meta", "/a/b/sync/meta"] {
            assert_eq!(
                route(Method::Post, path),
                Ok(Endpoint::Sync(SyncMethod::Meta)),
                "{path}"
            );
        }
        assert_eq!(
            route(Method::Post, "/anki/msync/mediaChanges"),
            Ok(Endpoint::Media(MediaMethod::MediaChanges))
        );
        assert_eq!(route(Method::Get, "/health"), Ok(Endpoint::Health));
        assert_eq!(route(Method::Get, "/anki/health"), Ok(Endpoint::Health));
    }

    #[test]
    fn everything_else_is_refused_clearly() {
        assert!(matches!(
            route(Method::Post, "/sync/bogus"),
            Err(Refusal::NotFound(_))
        ));
        assert_eq!(route(Method::Get, "/"), Ok(Endpoint::Welcome));
        assert_eq!(route(Method::Head, "/anki/"), Ok(Endpoint::Welcome));
        assert_eq!(
            route(Method::Post, "/"),
            Err(Refusal::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert!(matches!(
            route(Method::Get, "/favicon.ico"),
            Err(Refusal::NotFound(_))
        ));
        assert!(matches!(
            route(Method::Get, "/sync"),
            Err(Refusal::NotFound(_))
        ));
        assert!(matches!(
            route(Method::Post, "/syncmeta"),
            Err(Refusal::NotFound(_))
        ));
        assert_eq!(
            route(Method::Get, "/sync/meta"),
            Err(Refusal::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(Method::Post, "/health"),
            Err(Refusal::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(
            route(Method::Get, "/msync/begin"),
            Ok(Endpoint::Media(MediaMethod::Begin))
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for name in ["hostKey", "sanityCheck2", "applyChunk", "download"] {
            assert_eq!(SyncMethod::from_wire(name).unwrap().wire_name(), name);
        }
        assert_eq!(SyncMethod::from_wire("HostKey"), None);
    }
}
