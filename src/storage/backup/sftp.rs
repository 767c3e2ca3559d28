//! A backup repository on another machine, over SFTP (version 3, as
//! OpenSSH's sftp-server speaks it) through the `ssh` command, so keys,
//! host keys and the network are ssh's business. Any host that lets a user
//! use SFTP will do, a NAS or a storage box without a shell included.
//!
//! Each file is written under a temp name, flushed on the host
//! (`fsync@openssh.com`, where offered) and renamed over its name
//! (`posix-rename@openssh.com`), so a record never names a chunk the host
//! could still lose. Requests are pipelined in 32 KiB pieces; a reply is at
//! most 256 KiB, so memory stays bounded whatever the host sends.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::target::Target;

const INIT: u8 = 1;
const VERSION: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const FSTAT: u8 = 8;
const OPENDIR: u8 = 11;
const READDIR: u8 = 12;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const STAT: u8 = 17;
const RENAME: u8 = 18;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED: u8 = 200;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;

const OPEN_READ: u32 = 0x01;
const OPEN_WRITE: u32 = 0x02;
const OPEN_CREATE: u32 = 0x08;
const OPEN_TRUNCATE: u32 = 0x10;
const OPEN_EXCLUSIVE: u32 = 0x20;

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Bytes per READ or WRITE request: what every server takes.
const PIECE: usize = 32 << 10;
/// The largest packet accepted from the host (OpenSSH sends at most 256 KiB).
const MAX_PACKET: usize = 256 << 10 | 1024;

/// How to reach the host: ssh's own options, with a key and a known-hosts
/// file of leitner's (the host's key is trusted on first use).
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) key: PathBuf,
    pub(crate) known_hosts: PathBuf,
}

pub(crate) struct Sftp {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
    /// What ssh says on stderr, read to its end, for the message when it
    /// fails.
    said: Option<std::thread::JoinHandle<String>>,
    root: String,
    place: String,
    next_id: u32,
    posix_rename: bool,
    fsync: bool,
}

/// A reply to one request.
enum Reply {
    Status(u32, String),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Name(Vec<(String, Option<u32>)>),
    Attrs(Attrs),
}

#[derive(Default)]
struct Attrs {
    size: Option<u64>,
    permissions: Option<u32>,
}

impl Sftp {
    /// Starts ssh and the SFTP session; the repository is the folder `root`
    /// on the host (relative to the login's home unless absolute), made if
    /// `create` and missing.
    pub(crate) fn connect(login: &Login, root: &str, create: bool) -> io::Result<Sftp> {
        let mut child = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "ConnectTimeout=20",
            ])
            .args([
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                login.known_hosts.display()
            ))
            .arg("-i")
            .arg(&login.key)
            .args(["-p", &login.port.to_string(), "-l", &login.user, "-s", "--"])
            .args([login.host.as_str(), "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting ssh: {e}")))?;
        let mut stderr = child.stderr.take().expect("piped");
        let said = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let to = BufWriter::new(child.stdin.take().expect("piped"));
        let from = BufReader::new(child.stdout.take().expect("piped"));
        let place = if login.port == 22 {
            format!("{}@{}:{root}", login.user, login.host)
        } else {
            format!("sftp://{}@{}:{}/{root}", login.user, login.host, login.port)
        };
        let mut sftp = Sftp {
            child,
            to,
            from,
            said: Some(said),
            root: root.trim_end_matches('/').to_owned(),
            place,
            next_id: 1,
            posix_rename: false,
            fsync: false,
        };
        sftp.init()?;
        if create {
            // Each part of the path, as `mkdir -p` would.
            let root = sftp.root.clone();
            let mut path = String::new();
            for part in root.split('/').filter(|p| !p.is_empty()) {
                if !path.is_empty() || root.starts_with('/') {
                    path.push('/');
                }
                path.push_str(part);
                sftp.mkdir_at(&path)?;
            }
        }
        match sftp.stat_at(&sftp.root.clone())? {
            Some(attrs) if attrs.permissions.map_or(true, |p| p & 0o170000 == 0o040000) => Ok(sftp),
            Some(_) => Err(io::Error::other(format!("{}: not a folder", sftp.place))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such folder", sftp.place),
            )),
        }
    }

    fn init(&mut self) -> io::Result<()> {
        let mut body = vec![INIT];
        body.extend_from_slice(&3u32.to_be_bytes());
        self.send_raw(&body)?;
        let packet = self.read_packet()?;
        let (&kind, mut rest) = packet.split_first().ok_or_else(|| bad("empty packet"))?;
        if kind != VERSION {
            return Err(bad("the host did not start SFTP"));
        }
        let version = take_u32(&mut rest)?;
        if version < 3 {
            return Err(io::Error::other(format!(
                "the host speaks SFTP version {version}, not 3"
            )));
        }
        while !rest.is_empty() {
            let name = take_string(&mut rest)?;
            let _data = take_string(&mut rest)?;
            match name {
                b"posix-rename@openssh.com" => self.posix_rename = true,
                b"fsync@openssh.com" => self.fsync = true,
                _ => {}
            }
        }
        Ok(())
    }

    fn at(&self, path: &str) -> String {
        if self.root.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.root)
        }
    }

    // ---- the wire ----

    fn send_raw(&mut self, body: &[u8]) -> io::Result<()> {
        let result = self
            .to
            .write_all(&(body.len() as u32).to_be_bytes())
            .and_then(|()| self.to.write_all(body));
        result.map_err(|e| self.gone(e))
    }

    /// Sends a request of `kind` with `args`; returns its id.
    fn send(&mut self, kind: u8, args: &[&[u8]]) -> io::Result<u32> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut body = Vec::with_capacity(5 + args.iter().map(|a| a.len()).sum::<usize>());
        body.push(kind);
        body.extend_from_slice(&id.to_be_bytes());
        for arg in args {
            body.extend_from_slice(arg);
        }
        self.send_raw(&body)?;
        Ok(id)
    }

    fn read_packet(&mut self) -> io::Result<Vec<u8>> {
        self.to.flush().map_err(|e| self.gone(e))?;
        let mut len = [0u8; 4];
        self.from.read_exact(&mut len).map_err(|e| self.gone(e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(bad("a packet of an impossible size"));
        }
        let mut packet = vec![0u8; len];
        self.from
            .read_exact(&mut packet)
            .map_err(|e| self.gone(e))?;
        Ok(packet)
    }

    /// The reply to request `id` (replies to others are kept in `early`).
    fn reply(&mut self, id: u32, early: &mut HashMap<u32, Reply>) -> io::Result<Reply> {
        if let Some(reply) = early.remove(&id) {
            return Ok(reply);
        }
        loop {
            let packet = self.read_packet()?;
            let (&kind, mut rest) = packet.split_first().ok_or_else(|| bad("empty packet"))?;
            let got = take_u32(&mut rest)?;
            let reply = match kind {
                STATUS => {
                    let code = take_u32(&mut rest)?;
                    let message = take_string(&mut rest).unwrap_or_default();
                    Reply::Status(code, String::from_utf8_lossy(message).into_owned())
                }
                HANDLE => Reply::Handle(take_string(&mut rest)?.to_vec()),
                DATA => Reply::Data(take_string(&mut rest)?.to_vec()),
                NAME => {
                    let count = take_u32(&mut rest)?;
                    let mut names = Vec::new();
                    for _ in 0..count {
                        let name = String::from_utf8_lossy(take_string(&mut rest)?).into_owned();
                        let _long = take_string(&mut rest)?;
                        let attrs = take_attrs(&mut rest)?;
                        names.push((name, attrs.permissions));
                    }
                    Reply::Name(names)
                }
                ATTRS => Reply::Attrs(take_attrs(&mut rest)?),
                _ => return Err(bad("an unknown reply")),
            };
            if got == id {
                return Ok(reply);
            }
            early.insert(got, reply);
        }
    }

    /// Sends one request and waits for its reply.
    fn call(&mut self, kind: u8, args: &[&[u8]]) -> io::Result<Reply> {
        let id = self.send(kind, args)?;
        self.reply(id, &mut HashMap::new())
    }

    /// ssh is gone (or going): its own words say why.
    fn gone(&mut self, e: io::Error) -> io::Error {
        let _ = self.child.wait();
        // ssh has exited: its stderr ends, and the reader with it.
        let said = self
            .said
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        if last.is_empty() {
            io::Error::new(
                e.kind(),
                format!("{}: the connection ended ({e})", self.place),
            )
        } else {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{}: {last}", self.place),
            )
        }
    }

    // ---- operations ----

    fn status(&self, reply: Reply, path: &str) -> io::Result<()> {
        match reply {
            Reply::Status(FX_OK, _) => Ok(()),
            Reply::Status(code, message) => Err(status_error(code, &message, path)),
            _ => Err(bad("an unexpected reply")),
        }
    }

    fn open(&mut self, path: &str, flags: u32, mode: Option<u32>) -> io::Result<Vec<u8>> {
        let attrs = match mode {
            Some(mode) => [ATTR_PERMISSIONS.to_be_bytes(), mode.to_be_bytes()].concat(),
            None => 0u32.to_be_bytes().to_vec(),
        };
        match self.call(
            OPEN,
            &[&string(path.as_bytes()), &flags.to_be_bytes(), &attrs],
        )? {
            Reply::Handle(handle) => Ok(handle),
            other => Err(self
                .status(other, path)
                .err()
                .unwrap_or_else(|| bad("no handle"))),
        }
    }

    fn close(&mut self, handle: &[u8]) -> io::Result<()> {
        let reply = self.call(CLOSE, &[&string(handle)])?;
        self.status(reply, "")
    }

    fn stat_at(&mut self, path: &str) -> io::Result<Option<Attrs>> {
        match self.call(STAT, &[&string(path.as_bytes())])? {
            Reply::Attrs(attrs) => Ok(Some(attrs)),
            Reply::Status(FX_NO_SUCH_FILE, _) => Ok(None),
            other => Err(self
                .status(other, path)
                .err()
                .unwrap_or_else(|| bad("no attributes"))),
        }
    }

    fn mkdir_at(&mut self, path: &str) -> io::Result<()> {
        let reply = self.call(MKDIR, &[&string(path.as_bytes()), &0u32.to_be_bytes()])?;
        match self.status(reply, path) {
            Ok(()) => Ok(()),
            // Servers answer "failure" for a folder that exists.
            Err(e) => match self.stat_at(path)? {
                Some(a) if a.permissions.map_or(true, |p| p & 0o170000 == 0o040000) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Writes `data` to the open `handle` in pipelined pieces.
    fn write_all_at(&mut self, handle: &[u8], data: &[u8], path: &str) -> io::Result<()> {
        let mut ids = Vec::new();
        for (i, piece) in data.chunks(PIECE).enumerate() {
            let offset = (i * PIECE) as u64;
            ids.push(self.send(
                WRITE,
                &[&string(handle), &offset.to_be_bytes(), &string(piece)],
            )?);
        }
        let mut early = HashMap::new();
        let mut first_error = None;
        for id in ids {
            let reply = self.reply(id, &mut early)?;
            if let Err(e) = self.status(reply, path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn extended(&mut self, name: &str, args: &[&[u8]], path: &str) -> io::Result<()> {
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        let name = string(name.as_bytes());
        all.push(&name);
        all.extend_from_slice(args);
        let reply = self.call(EXTENDED, &all)?;
        self.status(reply, path)
    }

    fn remove_at(&mut self, path: &str) -> io::Result<()> {
        match self.call(REMOVE, &[&string(path.as_bytes())])? {
            Reply::Status(FX_NO_SUCH_FILE, _) => Ok(()),
            other => self.status(other, path),
        }
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target for Sftp {
    fn describe(&self) -> String {
        self.place.clone()
    }

    fn read(&mut self, path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let full = self.at(path);
        let handle = self.open(&full, OPEN_READ, None)?;
        let result = (|| {
            let size = match self.call(FSTAT, &[&string(&handle)])? {
                Reply::Attrs(Attrs {
                    size: Some(size), ..
                }) => size,
                other => {
                    return Err(self
                        .status(other, &full)
                        .err()
                        .unwrap_or_else(|| bad("no size")))
                }
            };
            if size > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{path} is {size} bytes, more than {limit}"),
                ));
            }
            let mut ids = Vec::new();
            let mut offset = 0u64;
            while offset < size {
                let len = (size - offset).min(PIECE as u64) as u32;
                ids.push(self.send(
                    READ,
                    &[&string(&handle), &offset.to_be_bytes(), &len.to_be_bytes()],
                )?);
                offset += u64::from(len);
            }
            let mut data = Vec::with_capacity(size as usize);
            let mut early = HashMap::new();
            for id in ids {
                match self.reply(id, &mut early)? {
                    Reply::Data(piece) => data.extend_from_slice(&piece),
                    Reply::Status(FX_EOF, _) => {}
                    other => {
                        return Err(self
                            .status(other, &full)
                            .err()
                            .unwrap_or_else(|| bad("no data")))
                    }
                }
            }
            if data.len() as u64 != size {
                return Err(bad("a file came back short"));
            }
            Ok(data)
        })();
        let closed = self.close(&handle);
        let data = result?;
        closed?;
        Ok(data)
    }

    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let full = self.at(path);
        let temp = format!("{full}.tmp");
        let handle = self.open(&temp, OPEN_WRITE | OPEN_CREATE | OPEN_TRUNCATE, Some(0o600))?;
        let mut result = self.write_all_at(&handle, data, &temp);
        if result.is_ok() && self.fsync {
            result = self.extended("fsync@openssh.com", &[&string(&handle)], &temp);
        }
        let closed = self.close(&handle);
        let renamed = result.and(closed).and_then(|()| {
            if self.posix_rename {
                self.extended(
                    "posix-rename@openssh.com",
                    &[&string(temp.as_bytes()), &string(full.as_bytes())],
                    &full,
                )
            } else {
                // Plain SFTP renames refuse to replace: remove first.
                self.remove_at(&full)?;
                let reply = self.call(
                    RENAME,
                    &[&string(temp.as_bytes()), &string(full.as_bytes())],
                )?;
                self.status(reply, &full)
            }
        });
        if renamed.is_err() {
            let _ = self.remove_at(&temp);
        }
        renamed
    }

    fn create_new(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let full = self.at(path);
        let handle = match self.open(
            &full,
            OPEN_WRITE | OPEN_CREATE | OPEN_EXCLUSIVE,
            Some(0o600),
        ) {
            Ok(handle) => handle,
            // "Failure" is all SFTP 3 says of a file that exists.
            Err(e) => {
                return Err(if self.stat_at(&full)?.is_some() {
                    io::Error::new(io::ErrorKind::AlreadyExists, format!("{path} exists"))
                } else {
                    e
                })
            }
        };
        let mut result = self.write_all_at(&handle, data, &full);
        if result.is_ok() && self.fsync {
            result = self.extended("fsync@openssh.com", &[&string(&handle)], &full);
        }
        let closed = self.close(&handle);
        result.and(closed)
    }

    fn list(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let full = self.at(dir);
        let handle = match self.call(OPENDIR, &[&string(full.as_bytes())])? {
            Reply::Handle(handle) => handle,
            Reply::Status(FX_NO_SUCH_FILE, _) => return Ok(Vec::new()),
            other => {
                return Err(self
                    .status(other, &full)
                    .err()
                    .unwrap_or_else(|| bad("no handle")))
            }
        };
        let mut names = Vec::new();
        let result = loop {
            match self.call(READDIR, &[&string(&handle)]) {
                Ok(Reply::Name(batch)) => names.extend(
                    batch
                        .into_iter()
                        .filter(|(_, mode)| mode.map_or(true, |m| m & 0o170000 == 0o100000))
                        .map(|(name, _)| name)
                        .filter(|name| name != "." && name != ".."),
                ),
                Ok(Reply::Status(FX_EOF, _)) => break Ok(()),
                Ok(other) => break self.status(other, &full),
                Err(e) => break Err(e),
            }
        };
        let closed = self.close(&handle);
        result?;
        closed?;
        Ok(names)
    }

    fn make_dir(&mut self, dir: &str) -> io::Result<()> {
        let full = self.at(dir);
        self.mkdir_at(&full)
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        let full = self.at(path);
        self.remove_at(&full)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Each file was flushed on the host before its rename.
        Ok(())
    }
}

fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SFTP: {why}"))
}

fn take_u32(rest: &mut &[u8]) -> io::Result<u32> {
    let (head, tail) = rest
        .split_at_checked(4)
        .ok_or_else(|| bad("a packet cut short"))?;
    *rest = tail;
    Ok(u32::from_be_bytes(head.try_into().expect("4 bytes")))
}

fn take_u64(rest: &mut &[u8]) -> io::Result<u64> {
    let (head, tail) = rest
        .split_at_checked(8)
        .ok_or_else(|| bad("a packet cut short"))?;
    *rest = tail;
    Ok(u64::from_be_bytes(head.try_into().expect("8 bytes")))
}

fn take_string<'a>(rest: &mut &'a [u8]) -> io::Result<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    let (head, tail) = rest
        .split_at_checked(len)
        .ok_or_else(|| bad("a packet cut short"))?;
    *rest = tail;
    Ok(head)
}

fn take_attrs(rest: &mut &[u8]) -> io::Result<Attrs> {
    let flags = take_u32(rest)?;
    let mut attrs = Attrs::default();
    if flags & ATTR_SIZE != 0 {
        attrs.size = Some(take_u64(rest)?);
    }
    if flags & ATTR_UIDGID != 0 {
        take_u32(rest)?;
        take_u32(rest)?;
    }
    if flags & ATTR_PERMISSIONS != 0 {
        attrs.permissions = Some(take_u32(rest)?);
    }
    if flags & ATTR_ACMODTIME != 0 {
        take_u32(rest)?;
        take_u32(rest)?;
    }
    if flags & ATTR_EXTENDED != 0 {
        for _ in 0..take_u32(rest)? {
            take_string(rest)?;
            take_string(rest)?;
        }
    }
    Ok(attrs)
}

fn status_error(code: u32, message: &str, path: &str) -> io::Error {
    let kind = match code {
        FX_NO_SUCH_FILE => io::ErrorKind::NotFound,
        FX_PERMISSION_DENIED => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let message = if message.is_empty() {
        "failure"
    } else {
        message
    };
    let hint = if code > FX_PERMISSION_DENIED {
        " (is the host's disk full?)"
    } else {
        ""
    };
    io::Error::new(kind, format!("{path}: {message}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_strings_are_read_with_their_bounds() {
        let mut packet = Vec::new();
        packet.extend_from_slice(&(ATTR_SIZE | ATTR_PERMISSIONS | ATTR_EXTENDED).to_be_bytes());
        packet.extend_from_slice(&1234u64.to_be_bytes());
        packet.extend_from_slice(&0o100600u32.to_be_bytes());
        packet.extend_from_slice(&1u32.to_be_bytes());
        packet.extend_from_slice(&string(b"k"));
        packet.extend_from_slice(&string(b"v"));
        let mut rest = &packet[..];
        let attrs = take_attrs(&mut rest).unwrap();
        assert_eq!(
            (attrs.size, attrs.permissions),
            (Some(1234), Some(0o100600))
        );
        assert!(rest.is_empty());
        // A string longer than what is left is refused, not read past.
        let short = [0, 0, 0, 9, b'a'];
        assert!(take_string(&mut &short[..]).is_err());
        let cut = [0u8, 0, 1];
        assert!(take_u32(&mut &cut[..]).is_err());
    }
}
