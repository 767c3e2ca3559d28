//! `leitner serve` (the default) and `leitner hash-password`.

use std::ffi::OsString;
use std::io::BufRead;

use super::{help, Error, Outcome};
use crate::service::config::Config;

const SERVE_HELP: &str = "\
usage: leitner [serve]

Runs the sync server, configured by environment variables (leitner --help
lists them). Users come from SYNC_USERn and from the users store that
`leitner user add` keeps in SYNC_BASE.
";

const HASH_HELP: &str = "\
usage: leitner hash-password

Reads a password on standard input and prints its PHC hash, for SYNC_USERn
with PASSWORDS_HASHED set.
";

pub(super) fn serve(args: Vec<OsString>) -> Outcome {
    if no_arguments(args, SERVE_HELP)? {
        return Ok(());
    }
    let config = Config::from_env().map_err(Error::usage)?;
    // Before any thread exists: this reads and clears systemd's variables.
    let listener = crate::server::listen::open(&config).map_err(|e| {
        Error::failed(format!(
            "cannot listen on {}:{}: {e}",
            config.host, config.port
        ))
    })?;
    crate::server::run(config, listener).map_err(|e| Error::failed(e.to_string()))
}

pub(super) fn hash_password(args: Vec<OsString>) -> Outcome {
    if no_arguments(args, HASH_HELP)? {
        return Ok(());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|_| Error::failed("could not read a password from stdin"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    crate::storage::users::check_password(password).map_err(Error::failed)?;
    println!("{}", crate::ground::password::hash_plain(password));
    Ok(())
}

/// True when `--help` was asked (and printed); an error for any argument.
fn no_arguments(args: Vec<OsString>, text: &str) -> Result<bool, Error> {
    let mut parser = lexopt::Parser::from_args(args);
    match parser.next()? {
        None => Ok(false),
        Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h')) => help(text).map(|()| true),
        Some(other) => Err(other.unexpected().into()),
    }
}
