//! leitner: a small, self-hosted Anki sync server for single-board computers.
//!
//! Modules follow a request's path: [`listen`] finds the socket, [`server`]
//! accepts connections and owns the lifecycle, [`route`] maps a path to an
//! endpoint, [`framing`] speaks the `anki-sync` header and zstd replies,
//! [`body`] reads request bodies within their limits and a memory budget,
//! [`auth`] turns a host key into an [`account::Account`], [`sync`] runs the
//! endpoint, and [`collection`] keeps the user's SQLite file on disk.
//! ARCHITECTURE.md follows one request through all of them.

// Unsafe code is allowed in exactly two places: adopting the socket systemd
// hands over (see `listen`), and asking glibc to return free memory (see
// `ground::memory`).
#![deny(unsafe_code)]

pub mod cli;
pub mod ground;
pub mod http;
pub mod listen;
pub mod server;
pub mod service;
pub mod storage;
