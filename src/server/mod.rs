//! The server's lifecycle: accept connections, tell systemd how we are doing,
//! finish in-flight requests on SIGTERM, and exit when idle if systemd can
//! start us again.

use std::future::pending;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use sd_notify::NotifyState;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use smol::Timer;

use crate::server::listen::Listener;
use crate::service::activity::Activity;
use crate::service::config::Config;
use crate::service::Service;

mod chunked;
mod connection;
mod gate;
mod head;
mod http10;
pub mod listen;
mod wire;

/// How long SIGTERM waits for requests in flight before leaving anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// How long SIGHUP waits for a moment without syncs before leaving anyway.
const CALM_LIMIT: Duration = Duration::from_secs(600);

/// After this long without requests or background work, the memory kept
/// from them (database caches, the allocator's free lists) goes back.
const MEMORY_CALM: Duration = Duration::from_secs(20);

/// Why the server should stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM or SIGINT: finish the requests in flight, then exit.
    Now(&'static str),
    /// SIGHUP (`systemctl reload`, which a package upgrade sends): keep
    /// serving until no sync is in progress, then exit; systemd's socket
    /// keeps the port and starts the new binary on the next connection.
    WhenCalm,
}

/// Runs the server until SIGTERM/SIGINT, a calm moment after SIGHUP, or
/// until idle when socket-activated.
pub(crate) fn run(config: Config, listener: Listener) -> io::Result<()> {
    crate::ground::memory::configure();
    raise_open_files_limit();
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])?;
    let (tx, rx) = smol::channel::unbounded();
    let forward = async move {
        while let Some(Ok(signal)) = signals.next().await {
            let stop = match signal {
                Signal::Int => StopSignal::Now("SIGINT"),
                Signal::Hup => StopSignal::WhenCalm,
                _ => StopSignal::Now("SIGTERM"),
            };
            if tx.send(stop).await.is_err() {
                break;
            }
        }
    };
    smol::block_on(async {
        let _forward = smol::spawn(forward);
        serve(config, listener, rx).await
    })
}

enum Event {
    Connection(io::Result<(TcpStream, std::net::SocketAddr)>),
    Signal(StopSignal),
    Stop(&'static str),
}

/// Serves until `signals` says stop, or until idle when the listener came
/// from systemd.
pub async fn serve(
    config: Config,
    listener: Listener,
    signals: Receiver<StopSignal>,
) -> io::Result<()> {
    let activity = Arc::new(Activity::new());
    let idle_exit = if listener.activated {
        config.idle_exit
    } else {
        None
    };
    let addr = listener.local_addr()?;
    let origin = if listener.activated {
        "socket from systemd"
    } else {
        "bound"
    };
    // Nothing of the data directory is touched before its lock is ours: a
    // management command working without a server finishes first.
    let base = config.base.clone();
    let _lock = crate::ground::pool::blocking(move || {
        let lock = lock_data_dir(&base)?;
        crate::storage::data_dir::claim_format(&base)?;
        Ok::<_, io::Error>(lock)
    })
    .await?;
    let service = {
        let activity = activity.clone();
        Arc::new(crate::ground::pool::blocking(move || Service::new(config, activity)).await?)
    };
    let control = crate::service::control::bind(&service.config.base)?;
    let _control = smol::spawn(crate::service::control::serve(
        control,
        service.clone(),
        listener.activated,
    ));
    let socket = TcpListener::try_from(listener.socket)?;
    let mut calm_deadline: Option<Instant> = None;
    let mut accept_failures = 0u32;
    // Closing this channel tells every connection to stop taking requests.
    let (stop_tx, stop_rx): (Sender<()>, Receiver<()>) = smol::channel::bounded(1);
    let gate = gate::Gate::new(gate::PER_DEVICE, gate::TOTAL);

    log::info!(
        "leitner {} listening on http://{addr}/ ({origin}), {} user(s), data in {}",
        env!("CARGO_PKG_VERSION"),
        service.users.all().len(),
        service.config.base.display()
    );
    notify(&[NotifyState::Ready]);
    let _watchdog = watchdog();
    let _memory = smol::spawn(release_memory_when_settled(service.clone()));

    let reason = loop {
        let accept = async { Event::Connection(socket.accept().await) };
        let signal = async {
            match signals.recv().await {
                Ok(stop) => Event::Signal(stop),
                Err(_) => pending().await,
            }
        };
        let idle = async {
            if idle_exit.is_none() && calm_deadline.is_none() {
                return pending().await;
            }
            loop {
                Timer::after(Duration::from_secs(1)).await;
                let idle = activity.idle_for();
                if let (Some(limit), Some(idle)) = (idle_exit, idle) {
                    // Between two requests of a normal sync is not idle:
                    // exiting would roll the sync back.
                    if idle >= limit && !service.syncing() {
                        return Event::Stop("idle");
                    }
                }
                if let Some(deadline) = calm_deadline {
                    if idle.is_some() && !service.syncing() {
                        return Event::Stop("asked to restart between syncs");
                    }
                    if Instant::now() > deadline {
                        return Event::Stop("asked to restart; syncs went on too long");
                    }
                }
            }
        };
        match accept.or(signal).or(idle).await {
            Event::Connection(Ok((stream, peer))) => {
                accept_failures = 0;
                let proxy =
                    crate::http::forwarded::is_trusted(peer.ip(), &service.config.trusted_proxies);
                match gate.admit(peer.ip(), proxy) {
                    Ok(ticket) => {
                        let service = service.clone();
                        let stop = stop_rx.clone();
                        let serve = connection::serve(stream, peer.ip(), service, stop, ticket);
                        smol::spawn(serve).detach();
                    }
                    Err(_) => turn_away(stream),
                }
            }
            Event::Connection(Err(e)) => {
                // Out of file descriptors and the like: back off (up to a
                // second) instead of spinning, and say so once per spell.
                if accept_failures == 0 {
                    log::warn!("accept failed: {e}; backing off until it works again");
                }
                accept_failures += 1;
                let pause = 10u64 << accept_failures.min(7);
                Timer::after(Duration::from_millis(pause.min(1000))).await;
            }
            Event::Signal(StopSignal::Now(reason)) | Event::Stop(reason) => break reason,
            Event::Signal(StopSignal::WhenCalm) => {
                log::info!("asked to restart: exiting once no sync is in progress");
                calm_deadline.get_or_insert(Instant::now() + CALM_LIMIT);
            }
        }
    };

    notify(&[NotifyState::Stopping]);
    drop(socket);
    stop_tx.close();
    activity.stop();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while activity.in_flight() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(50)).await;
    }
    log::info!(
        "stopping ({reason}), {} request(s) still in flight",
        activity.in_flight()
    );
    let base = service.config.base.clone();
    let seen = service.seen();
    let saving = service.clone();
    crate::ground::pool::blocking(move || {
        let _ = crate::ground::durable::remove_if_present(
            &base.join(crate::storage::data_dir::CONTROL_SOCKET),
        );
        if seen != crate::storage::data_dir::load_seen(&base) {
            if let Err(e) = crate::storage::data_dir::save_seen(&base, &seen) {
                log::warn!("saving when users last synced: {e}");
            }
        }
        if let Err(e) = saving.users.devices.save() {
            log::warn!("saving when devices last synced: {e}");
        }
    })
    .await;
    Ok(())
}

/// Gives memory back once after each spell of work, when things settle,
/// and once at start: reading the configuration, the users and the stores
/// brought in code (and the kernel's read-around of it) that serving does
/// not need; a server that then waits for its first sync holds 1.8 MB
/// instead of 4.8 (x86_64). Socket-activated, the first request maps back
/// the little it needs from the page cache.
async fn release_memory_when_settled(service: Arc<Service>) {
    release_memory(&service).await;
    let mut released_after = None;
    loop {
        let last = service.activity.settled(MEMORY_CALM).await;
        if released_after != Some(last) {
            released_after = Some(last);
            release_memory(&service).await;
        }
        Timer::after(MEMORY_CALM).await;
    }
}

async fn release_memory(service: &Arc<Service>) {
    let service = service.clone();
    crate::ground::pool::blocking(move || {
        service.release_memory();
        crate::http::body::release_spares();
        crate::http::framing::release_spares();
        crate::ground::memory::trim();
        crate::ground::memory::release_code_pages();
    })
    .await;
}

/// Closes a connection the gate refused, with a reset: nothing is read or
/// kept for it, and the kernel keeps no closing state either.
fn turn_away(stream: TcpStream) {
    use std::os::fd::AsFd;
    let linger = nix::sys::socket::sockopt::Linger;
    let now = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&stream.as_fd(), linger, &now);
}

/// Takes the data directory's lock, saying so if it must wait. Blocking.
fn lock_data_dir(base: &std::path::Path) -> io::Result<crate::storage::data_dir::DirLock> {
    std::fs::create_dir_all(base)?;
    if let Some(lock) = crate::storage::data_dir::try_lock(base)? {
        return Ok(lock);
    }
    log::warn!(
        "waiting for another leitner process using {} (a command, or a second server)",
        base.display()
    );
    crate::storage::data_dir::lock(base)
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("telling systemd failed: {e}");
    }
}

/// Pets systemd's watchdog at half its interval, when the unit sets one.
fn watchdog() -> Option<smol::Task<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(smol::spawn(async move {
        loop {
            notify(&[NotifyState::Watchdog]);
            Timer::after(period).await;
        }
    }))
}

/// Raises the soft limit on open files to the hard one: every connection,
/// collection and media file takes a descriptor, and the soft default (1024)
/// is a number a LAN device can reach on purpose.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("could not raise the open files limit from {soft}: {e}");
            }
        }
    }
}
