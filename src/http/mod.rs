//! The HTTP side: from a request to a response. `route` names the endpoint a
//! path asks for, `framing` speaks the `anki-sync` header and zstd replies,
//! `body` reads request bodies within their limits and the memory budget,
//! `endpoints` runs each step of the protocol over the service and storage,
//! `error` turns what went wrong into the status and message a client
//! shows, `request_log` writes one line per request; `forwarded` reads what a
//! trusted reverse proxy says, and `welcome` is the page a browser gets at
//! the server's address.

pub mod body;
pub mod endpoints;
pub mod error;
pub mod forwarded;
pub mod framing;
pub mod request_log;
pub mod route;
pub mod welcome;
