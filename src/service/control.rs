//! How management commands and a running server stay out of each other's
//! way.
//!
//! The server listens on a Unix socket in the data directory
//! (`SYNC_BASE/leitner.sock`, mode 0660 inside a folder only the service's
//! user can enter). A command that must change a user's files while the
//! server may have them open asks the server to *hold* that user: the server
//! takes the user's locks (waiting for a request in flight, and for a normal
//! sync in progress to finish while it keeps going, up to four minutes),
//! closes the collection and media database, and
//! answers; the command does its work; when the command closes the
//! connection (or dies), the server lets go and the user's next request
//! reopens the files from disk. The server never runs a command's logic, so
//! every command works the same with or without a server.
//!
//! When no server runs, the command takes the data directory's lock instead
//! (see `data_dir`): a server started meanwhile by socket activation waits
//! for the command to finish before it touches anything.
//!
//! One request per line, JSON: `{"op":"hold","user":"alice","scope":"all"}`
//! or `{"op":"status"}`; one JSON line back, `{"ok":true,...}`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use smol::lock::{MutexGuardArc, RwLockWriteGuardArc};
use smol::net::unix::{UnixListener, UnixStream as AsyncUnixStream};

use crate::service::account::{Account, AccountState};
use crate::service::Service;
use crate::storage::data_dir::{self, DirLock, SeenMap, CONTROL_SOCKET};

/// What a hold covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// The collection and the media: nothing of the user changes.
    All,
    /// Only the media: collection syncs go on.
    Media,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Hold { user: String, scope: Scope },
    Status,
}

/// What a running server says of itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ServerStatus {
    pub(crate) version: String,
    pub(crate) pid: u32,
    /// Started by systemd's socket activation (and so exits when idle).
    pub(crate) activated: bool,
    pub(crate) seen: SeenMap,
    /// Users with a snapshot the server is about to compress (just after a
    /// full upload).
    #[serde(default)]
    pub(crate) compressing: Vec<String>,
    /// What the server heard of each device since it last saved the devices
    /// store, by key hash.
    #[serde(default)]
    pub(crate) heard: crate::service::devices::HeardMap,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<ServerStatus>,
}

/// Runs `with` on a path to the control socket that fits in a socket
/// address (108 bytes): the plain path, or one through `/proc/self/fd` when
/// the data directory's path is long.
fn with_socket_path<T>(base: &Path, with: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    let plain = base.join(CONTROL_SOCKET);
    if plain.as_os_str().len() < 100 {
        return with(&plain);
    }
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(base)?;
    let short = PathBuf::from(format!(
        "/proc/self/fd/{}/{CONTROL_SOCKET}",
        dir.as_raw_fd()
    ));
    let result = with(&short);
    drop(dir);
    result
}

// ---- the server's side ----

/// Binds the control socket, replacing a stale one. The caller holds the
/// data directory's lock, so no other server uses it.
pub(crate) fn bind(base: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    crate::ground::durable::remove_if_present(&base.join(CONTROL_SOCKET))?;
    let listener = with_socket_path(base, |path| std::os::unix::net::UnixListener::bind(path))?;
    std::fs::set_permissions(
        base.join(CONTROL_SOCKET),
        std::fs::Permissions::from_mode(0o660),
    )?;
    UnixListener::try_from(listener)
}

/// Answers control connections until dropped.
pub(crate) async fn serve(listener: UnixListener, service: Arc<Service>, activated: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                smol::spawn(answer(stream, service.clone(), activated)).detach();
            }
            Err(e) => {
                log::warn!("control socket: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: AsyncUnixStream, service: Arc<Service>, activated: bool) {
    let mut reader = smol::io::BufReader::new(stream.clone());
    let mut writer = stream;
    let mut line = String::new();
    // A request line is small; a peer that sends more is not a command.
    if (&mut reader).take(4096).read_line(&mut line).await.is_err() {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = send(&mut writer, &failed(format!("bad control request: {e}"))).await;
            return;
        }
    };
    match request {
        Request::Status => {
            let status = ServerStatus {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                activated,
                seen: service.seen(),
                heard: service.users.devices.heard_now(),
                compressing: service
                    .users
                    .all()
                    .iter()
                    .filter(|k| k.account.is_compressing())
                    .map(|k| k.account.name.clone())
                    .collect(),
            };
            let _ = send(
                &mut writer,
                &Reply {
                    ok: true,
                    error: None,
                    status: Some(status),
                },
            )
            .await;
        }
        Request::Hold { user, scope } => {
            // Idle exit and SIGTERM wait for a command at work.
            let _job = service.activity.begin_job();
            let Some(known) = service.users.by_name(&user) else {
                // Nobody the server serves: nothing of theirs is open.
                if send(&mut writer, &ok()).await.is_ok() {
                    wait_for_close(&mut reader).await;
                }
                return;
            };
            let account = known.account;
            // A command replaces or reads the collection file whole: no
            // download may be streaming a pinned state of it meanwhile.
            let (files, state) = match scope {
                Scope::All => {
                    let (files, state) =
                        hold_between_syncs(&account, service.config.sync_idle).await;
                    (Some(files), Some(state))
                }
                Scope::Media => (None, None),
            };
            let mut media = account.lock_media().await;
            let (state, media) = crate::ground::pool::blocking(move || {
                let mut state = state;
                if let Some(state) = state.as_mut() {
                    if let Err(e) = state.close_collection() {
                        log::error!("closing a collection for a command: {e}");
                        state.collection = None;
                    }
                }
                *media = None;
                (state, media)
            })
            .await;
            account
                .media_usn
                .store(-1, std::sync::atomic::Ordering::Release);
            log::info!("{}: held for a command ({scope:?})", account.name);
            if send(&mut writer, &ok()).await.is_ok() {
                wait_for_close(&mut reader).await;
            }
            drop(media);
            drop(state);
            drop(files);
            log::info!("{}: released by the command", account.name);
        }
    }
}

/// The user's file and state locks, taken between two normal syncs: a
/// hold would roll back a sync in progress (the device sees "only one copy
/// of Anki can sync"), so a command waits while the sync keeps going (a
/// request within `idle`: one untouched longer is abandoned and rolled
/// back), for at most [`SYNC_WAIT`], well inside the command's own patience
/// ([`HOLD_WAIT`]).
async fn hold_between_syncs(
    account: &Arc<Account>,
    idle: Duration,
) -> (RwLockWriteGuardArc<()>, MutexGuardArc<AccountState>) {
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        let files = account.replacing_files().await;
        let state = account.lock().await;
        if !state.syncing(idle) || Instant::now() >= deadline {
            return (files, state);
        }
        drop(state);
        drop(files);
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Waits until the command closes its end (or its process dies).
async fn wait_for_close(reader: &mut smol::io::BufReader<AsyncUnixStream>) {
    let mut sink = [0u8; 64];
    while let Ok(n) = reader.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

fn ok() -> Reply {
    Reply {
        ok: true,
        error: None,
        status: None,
    }
}

fn failed(error: String) -> Reply {
    Reply {
        ok: false,
        error: Some(error),
        status: None,
    }
}

async fn send(writer: &mut AsyncUnixStream, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

// ---- a command's side ----

/// A server's control socket, if one answers there now.
fn connect(base: &Path) -> io::Result<Option<UnixStream>> {
    match with_socket_path(base, |path| UnixStream::connect(path)) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn ask(
    mut stream: UnixStream,
    request: &Request,
    wait: Duration,
) -> io::Result<(Reply, UnixStream)> {
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.set_read_timeout(Some(wait))?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => return Err(io::Error::other("the server closed the control connection")),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(io::Error::other(format!(
                "the server did not answer within {} s",
                wait.as_secs()
            )))
        }
        Err(e) => return Err(e),
    }
    let reply: Reply = serde_json::from_str(&answer).map_err(io::Error::other)?;
    if !reply.ok {
        return Err(io::Error::other(reply.error.unwrap_or_default()));
    }
    Ok((reply, reader.into_inner()))
}

/// The running server's own account of itself, or `None` when no server runs
/// on `base`. Takes no lock.
pub(crate) fn server_status(base: &Path) -> io::Result<Option<ServerStatus>> {
    let Some(stream) = connect(base)? else {
        return Ok(None);
    };
    let (reply, _) = ask(stream, &Request::Status, Duration::from_secs(10))?;
    Ok(reply.status)
}

/// A command's standing towards the server: either a server runs (and holds
/// users on request), or none does and the command holds the data
/// directory's lock until it ends.
pub(crate) struct Coordinator {
    base: PathBuf,
    stopped: Option<DirLock>,
}

/// How long a command waits for a server that is starting or stopping.
const SETTLE: Duration = Duration::from_secs(120);
/// How long a hold may wait for the user's request in flight.
const HOLD_WAIT: Duration = Duration::from_secs(300);
/// How long a hold waits for a normal sync that keeps going (a first sync
/// of a large collection on a Pi takes minutes) before rolling it back.
const SYNC_WAIT: Duration = Duration::from_secs(240);

impl Coordinator {
    pub(crate) fn new(base: &Path) -> io::Result<Coordinator> {
        let deadline = Instant::now() + SETTLE;
        let mut said = false;
        loop {
            if let Some(stream) = connect(base)? {
                drop(stream);
                return Ok(Coordinator {
                    base: base.to_owned(),
                    stopped: None,
                });
            }
            if let Some(lock) = data_dir::try_lock(base)? {
                return Ok(Coordinator {
                    base: base.to_owned(),
                    stopped: Some(lock),
                });
            }
            // Locked but not listening: a server starting up or draining, or
            // another command at work.
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "the data directory stays locked by another leitner process",
                ));
            }
            if !said {
                eprintln!(
                    "leitner: waiting for the server (starting or stopping) or another command"
                );
                said = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a server was running when this command started.
    pub(crate) fn server_running(&self) -> bool {
        self.stopped.is_none()
    }

    /// Keeps the server off `user`'s files until the returned hold drops.
    pub(crate) fn hold(&self, user: &str, scope: Scope) -> io::Result<Hold> {
        if self.stopped.is_some() {
            return Ok(Hold { _stream: None });
        }
        let stream = connect(&self.base)?.ok_or_else(|| {
            io::Error::other("the server stopped while the command ran; run it again")
        })?;
        let request = Request::Hold {
            user: user.to_owned(),
            scope,
        };
        let (_, stream) = ask(stream, &request, HOLD_WAIT)?;
        Ok(Hold {
            _stream: Some(stream),
        })
    }
}

/// Held by a command while it changes a user's files; dropping it lets the
/// server go on.
pub(crate) struct Hold {
    _stream: Option<UnixStream>,
}
