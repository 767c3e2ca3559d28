//! leitner: a small, self-hosted Anki sync server for single-board computers.
//!
//! The modules form floors, each using only those below it:
//!
//! ```text
//! cli        the leitner command: serve, users, snapshots, backups, status
//! server     the socket (listen), connections, HTTP/1 framing, lifecycle
//! http       routes, request bodies, endpoints, errors as statuses, log lines
//! service    accounts, logins, configuration, a sync in progress, control
//! storage    collections, media, snapshots, the users store, backups
//! ground     time, durable files, the blocking pool, memory, passwords, logger
//! ```
//!
//! A request comes up from [`server`] (which finds the socket in
//! [`server::listen`]), is answered by [`http`] through the [`service`], and
//! reaches disk through [`storage`]. ARCHITECTURE.md follows one request
//! through all of them; `tests/layers.rs` keeps the floors one-way.

// Unsafe code is allowed in exactly two places: adopting the socket systemd
// hands over (see `server::listen`), and asking glibc to return free memory
// (see `ground::memory`).
#![deny(unsafe_code)]

pub mod cli;
pub mod ground;
pub mod http;
pub mod server;
pub mod service;
pub mod storage;
