//! Where the listening socket comes from: systemd's socket activation, or a
//! bind to SYNC_HOST:SYNC_PORT. This is the only place that knows; the rest
//! of the server gets a listener and never asks.

use std::io;
use std::net::{SocketAddr, TcpListener};

use crate::service::config::Config;

pub struct Listener {
    pub socket: TcpListener,
    /// True when systemd handed us the socket: we may then exit when idle,
    /// because systemd keeps listening and starts us on the next connection.
    pub activated: bool,
}

impl Listener {
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Takes the socket systemd passed (LISTEN_FDS/LISTEN_PID), or binds one.
/// Call before any thread starts: it reads and clears environment variables.
pub(crate) fn open(config: &Config) -> io::Result<Listener> {
    if let Some(socket) = from_systemd()? {
        socket.set_nonblocking(true)?;
        return Ok(Listener {
            socket,
            activated: true,
        });
    }
    let socket = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
    // std listens with a queue of 128, which a device opening connections
    // in a loop fills in milliseconds; then the kernel drops new ones, a
    // real client's too, for a second each. Systemd's sockets get the
    // system's limit (net.core.somaxconn, 4096); so does ours: -1 asks for
    // it (musl's SOMAXCONN constant is 128).
    nix::sys::socket::listen(&socket, nix::sys::socket::Backlog::MAXALLOWABLE)?;
    socket.set_nonblocking(true)?;
    Ok(Listener {
        socket,
        activated: false,
    })
}

fn from_systemd() -> io::Result<Option<TcpListener>> {
    let Some(fd) = sd_notify::listen_fds()?.next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
    // matched) and nothing else in the process owns it; we take it once.
    #[allow(unsafe_code)]
    let socket = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Fail clearly if the unit passes something other than a TCP listener.
    socket.local_addr().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the socket from systemd is not a TCP listener: {e}"),
        )
    })?;
    Ok(Some(socket))
}
