//! The `leitner` command line.

use std::io::BufRead;
use std::process::ExitCode;

use crate::config::Config;

const USAGE: &str = "\
leitner: a small self-hosted Anki sync server

usage:
  leitner [serve]        run the sync server (configured by environment variables)
  leitner hash-password  read a password on stdin, print its PHC hash for PASSWORDS_HASHED
  leitner --version

environment:
  SYNC_USER1..N          user:password (or user:PHC-hash with PASSWORDS_HASHED set); required
  PASSWORDS_HASHED       set (to anything) when SYNC_USERn carry PHC hashes
  SYNC_BASE              data folder, one subfolder per user (default: ./data)
  SYNC_HOST, SYNC_PORT   address to listen on (default: 0.0.0.0, 8080)
  MAX_SYNC_PAYLOAD_MEGS  request size limit in MiB; collections may be 3x this (default: 100)
  LEITNER_IDLE_EXIT_SECS when socket-activated, exit after this many idle seconds (default: 300; 0: never)
  LEITNER_SYNC_IDLE_SECS roll back a normal sync idle this long (default: 120)
  LEITNER_LOG            error, warn, info or debug (default: info)
";

pub fn main() -> ExitCode {
    crate::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => serve(),
        ["hash-password"] => hash_password(),
        ["--version" | "-V"] => {
            println!("leitner {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help" | "-h" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("leitner: unknown arguments {args:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(why) => {
            eprintln!("leitner: {why}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: this reads and clears systemd's variables.
    let listener = match crate::listen::open(&config) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "leitner: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::FAILURE;
        }
    };
    match crate::server::run(config, listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leitner: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("leitner: could not read a password from stdin");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("leitner: the password is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", crate::auth::hash_plain(password));
    ExitCode::SUCCESS
}
