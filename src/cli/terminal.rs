//! Asking the person at the terminal: passwords without echo, and yes/no.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg};

use super::Error;

/// The controlling terminal, or a clear error when there is none (a script
/// must pass `--password-stdin` or `--yes` instead).
fn tty(instead: &str) -> Result<File, Error> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| Error::usage(format!("no terminal to ask on: use {instead}")))
}

/// Asks for a new password twice, without echo.
pub(super) fn new_password(name: &str) -> Result<String, Error> {
    let first = read_hidden(&format!("New password for {name}: "))?;
    let second = read_hidden("Again: ")?;
    if first != second {
        return Err(Error::failed("the passwords differ; nothing was changed"));
    }
    Ok(first)
}

fn read_hidden(prompt: &str) -> Result<String, Error> {
    let tty = tty("--password-stdin")?;
    let saved =
        termios::tcgetattr(tty.as_fd()).map_err(|e| Error::failed(format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| Error::failed(format!("terminal: {e}")))?;
    let answer = (|| {
        (&tty).write_all(prompt.as_bytes())?;
        let mut line = String::new();
        BufReader::new(&tty).read_line(&mut line)?;
        Ok::<_, io::Error>(line)
    })();
    let _ = termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &saved);
    let line = answer.map_err(|e| Error::failed(format!("terminal: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads the password from standard input: its first line.
pub(super) fn password_from_stdin() -> Result<String, Error> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .take(crate::storage::users::MAX_PASSWORD_BYTES as u64 + 2)
        .read_line(&mut line)
        .map_err(|e| Error::failed(format!("reading the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Asks the person to type `expected` to go ahead.
pub(super) fn confirm(question: &str, expected: &str) -> Result<bool, Error> {
    let tty = tty("--yes")?;
    (&tty)
        .write_all(format!("{question}\nType '{expected}' to go ahead: ").as_bytes())
        .map_err(|e| Error::failed(format!("terminal: {e}")))?;
    let mut line = String::new();
    BufReader::new(&tty)
        .read_line(&mut line)
        .map_err(|e| Error::failed(format!("terminal: {e}")))?;
    Ok(line.trim() == expected)
}
