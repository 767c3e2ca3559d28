//! Storage: what is kept on disk for each user, and the users themselves.
//! Plain Rust over files and SQLite, with its own error types: nothing here
//! knows of HTTP, the server or the commands, so the same code serves a
//! sync, a command, and a backup.

pub mod backup;
pub mod collection;
pub mod data_dir;
pub mod devices;
pub mod media;
pub mod users;
