//! The HTTP surface, driven over a real socket on port 0 with hand-made
//! requests: the edge cases no real client sends. Real-client tests are in
//! tests/e2e (run by tests/run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use leitner::server::listen::Listener;
use leitner::service::config::Config;

struct Server {
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

fn start(extra: &[(&str, &str)]) -> Server {
    let data = tempfile::tempdir().unwrap();
    let base = data.path().to_str().unwrap().to_owned();
    let mut vars: Vec<(String, String)> = vec![
        ("SYNC_USER1".into(), "alice:secret".into()),
        ("SYNC_USER2".into(), "bob:hunter2".into()),
        ("SYNC_BASE".into(), base),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config =
        Config::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = Listener {
        socket,
        activated: false,
    };
    std::thread::spawn(move || {
        // No signals: the sender goes at once, which the server reads as
        // "none will come".
        let (_, signals) = smol::channel::unbounded();
        smol::block_on(leitner::server::serve(config, listener, signals))
    });
    Server { addr, _data: data }
}

const ALICE: &str = "6985e52cea44a28695d5c440bd42f57e9f50b7b1"; // sha1("alice:secret")

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body with zstd undone.
    fn payload(&self) -> Vec<u8> {
        zstd::decode_all(self.body.as_slice()).unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload()).unwrap()
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_reply(stream)
}

fn read_reply(stream: TcpStream) -> Reply {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.trim().to_lowercase(), v.trim().to_owned()));
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn sync_header(key: &str, version: u8) -> (&'static str, String) {
    (
        "anki-sync",
        format!(r#"{{"v":{version},"k":"{key}","c":"test,0,linux","s":"abc"}}"#),
    )
}

fn call(addr: SocketAddr, method: &str, key: &str, json: &str) -> Reply {
    let body = zstd::bulk::compress(json.as_bytes(), 3).unwrap();
    request(
        addr,
        "POST",
        &format!("/sync/{method}"),
        &[sync_header(key, 11)],
        &body,
    )
}

fn upload(addr: SocketAddr, key: &str, file: &[u8]) -> Reply {
    let body = zstd::bulk::compress(file, 3).unwrap();
    request(addr, "POST", "/sync/upload", &[sync_header(key, 11)], &body)
}

/// A valid collection file with some content, made with the server's own code.
fn collection_file(dir: &Path, notes: i64) -> Vec<u8> {
    let conn = leitner::storage::collection::open_or_create(dir).unwrap();
    for id in 1..=notes {
        conn.execute(
            "INSERT INTO cards VALUES (?, ?, 1, 0, 0, 0, 0, 0, ?, 0, 0, 0, 0, 0, 0, 0, 0, '{}')",
            [id, id, id],
        )
        .unwrap();
    }
    conn.execute("UPDATE col SET mod = 1000, scm = 2000, usn = 1", [])
        .unwrap();
    leitner::storage::collection::checkpoint(&conn).unwrap();
    drop(conn);
    std::fs::read(dir.join("collection.anki2")).unwrap()
}

#[test]
fn health_and_routing() {
    let s = start(&[]);
    assert_eq!(request(s.addr, "GET", "/health", &[], b"").status, 200);
    assert_eq!(request(s.addr, "GET", "/anki/health", &[], b"").status, 200);
    let r = request(s.addr, "POST", "/health", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // The welcome page; anything else not an endpoint is a 404.
    assert_eq!(request(s.addr, "GET", "/", &[], b"").status, 200);
    assert_eq!(request(s.addr, "GET", "/favicon.ico", &[], b"").status, 404);
    assert_eq!(
        request(
            s.addr,
            "POST",
            "/sync/bogus",
            &[sync_header(ALICE, 11)],
            b""
        )
        .status,
        404
    );
    assert_eq!(request(s.addr, "GET", "/sync/meta", &[], b"").status, 405);
}

#[test]
fn header_and_auth_errors() {
    let s = start(&[]);
    let meta = zstd::bulk::compress(br#"{"v":11,"cv":"test"}"#, 3).unwrap();
    let no_header = request(s.addr, "POST", "/sync/meta", &[], &meta);
    assert_eq!(no_header.status, 400);
    assert!(no_header.header("anki-original-size").is_none());
    let bad_header = request(
        s.addr,
        "POST",
        "/sync/meta",
        &[("anki-sync", "{".into())],
        &meta,
    );
    assert_eq!(bad_header.status, 400);
    let v12 = request(
        s.addr,
        "POST",
        "/sync/meta",
        &[sync_header(ALICE, 12)],
        &meta,
    );
    assert_eq!(v12.status, 400);
    assert_eq!(
        call(s.addr, "meta", "0000", r#"{"v":11,"cv":"x"}"#).status,
        403
    );
    assert_eq!(
        call(s.addr, "meta", ALICE, r#"{"v":7,"cv":"x"}"#).status,
        501
    );
    let not_zstd = request(
        s.addr,
        "POST",
        "/sync/meta",
        &[sync_header(ALICE, 11)],
        b"{\"v\":11}",
    );
    assert_eq!(not_zstd.status, 400);
    assert_eq!(call(s.addr, "meta", ALICE, "{not json").status, 400);
    assert_eq!(
        call(s.addr, "hostKey", "", r#"{"u":"alice","p":"wrong"}"#).status,
        403
    );
    assert_eq!(
        call(s.addr, "hostKey", "", r#"{"u":"nobody","p":"secret"}"#).status,
        403
    );
    let ok = call(s.addr, "hostKey", "", r#"{"u":"alice","p":"secret"}"#);
    assert_eq!(ok.status, 200);
    // A key of the device's own; the one the official server derives
    // (ALICE) works beside it.
    let key = ok.json()["key"].as_str().unwrap().to_owned();
    assert!(key.len() == 40 && key != ALICE);
    for key in [key.as_str(), ALICE] {
        assert_eq!(
            call(s.addr, "meta", key, r#"{"v":11,"cv":"x"}"#).status,
            200
        );
    }
}

#[test]
fn a_new_account_reports_no_changes_and_an_empty_collection() {
    let s = start(&[]);
    let first = call(s.addr, "meta", ALICE, r#"{"v":11,"cv":"x"}"#);
    assert_eq!(first.status, 200);
    let payload = first.payload();
    assert_eq!(
        first.header("anki-original-size").unwrap(),
        payload.len().to_string()
    );
    let meta = first.json();
    assert_eq!(meta["mod"], 0);
    assert_eq!(meta["usn"], 0);
    assert_eq!(meta["empty"], true);
    assert_eq!(meta["cont"], true);
    assert_eq!(meta["hostNum"], 0);
    assert_eq!(meta["media_usn"], 0);
    assert!(meta["ts"].as_i64().unwrap() > 1_700_000_000);
    // The same collection on every call, behind a proxy prefix too.
    let body = zstd::bulk::compress(br#"{"v":11,"cv":"x"}"#, 3).unwrap();
    let again = request(
        s.addr,
        "POST",
        "/anki/sync/meta",
        &[sync_header(ALICE, 11)],
        &body,
    )
    .json();
    assert_eq!(again["scm"], meta["scm"]);
}

#[test]
fn upload_then_download_returns_the_same_bytes() {
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 3);
    let r = upload(s.addr, ALICE, &file);
    assert_eq!(r.status, 200);
    assert_eq!(r.payload(), b"OK");
    let meta = call(s.addr, "meta", ALICE, r#"{"v":11,"cv":"x"}"#).json();
    assert_eq!(
        (
            meta["mod"].as_i64(),
            meta["scm"].as_i64(),
            meta["usn"].as_i64()
        ),
        (Some(1000), Some(2000), Some(1))
    );
    assert_eq!(meta["empty"], false);
    let d = call(s.addr, "download", ALICE, r#"{"_pad":null}"#);
    assert_eq!(d.status, 200);
    assert_eq!(
        d.header("anki-original-size").unwrap(),
        file.len().to_string()
    );
    assert_eq!(d.payload(), file);
}

#[test]
fn damaged_uploads_are_refused_and_change_nothing() {
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let good = collection_file(scratch.path(), 2);
    assert_eq!(upload(s.addr, ALICE, &good).payload(), b"OK");

    let garbage = upload(s.addr, ALICE, b"this is not a database at all");
    assert_eq!(garbage.status, 200);
    let text = String::from_utf8(garbage.payload()).unwrap();
    assert!(text.contains("damaged"), "{text}");

    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let text = String::from_utf8(upload(s.addr, ALICE, &truncated).payload()).unwrap();
    assert!(text.contains("damaged"), "{text}");

    let mut cut_stream = zstd::bulk::compress(&good, 3).unwrap();
    cut_stream.truncate(cut_stream.len() - 10);
    let r = request(
        s.addr,
        "POST",
        "/sync/upload",
        &[sync_header(ALICE, 11)],
        &cut_stream,
    );
    let text = String::from_utf8(r.payload()).unwrap();
    assert!(text.contains("damaged"), "{text}");

    let d = call(s.addr, "download", ALICE, r#"{"_pad":null}"#);
    assert_eq!(d.payload(), good);
}

#[test]
fn oversized_uploads_are_refused_with_a_message() {
    // 1 MiB payload limit: collections up to 3 MiB.
    let s = start(&[("MAX_SYNC_PAYLOAD_MEGS", "1")]);
    let zeros = vec![0u8; 3 * 1024 * 1024 + 1];
    let r = upload(s.addr, ALICE, &zeros);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.payload()).unwrap();
    assert!(text.contains("larger than this server accepts"), "{text}");
    // The account is untouched: still a new, empty one.
    let meta = call(s.addr, "meta", ALICE, r#"{"v":11,"cv":"x"}"#).json();
    assert_eq!(meta["mod"], 0);
}

#[test]
fn users_are_kept_apart() {
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 5);
    assert_eq!(upload(s.addr, ALICE, &file).payload(), b"OK");
    let bob = leitner::service::auth::host_key("bob:hunter2");
    let meta = call(s.addr, "meta", &bob, r#"{"v":11,"cv":"x"}"#).json();
    assert_eq!(meta["empty"], true);
    assert_eq!(meta["mod"], 0);
    let d = call(s.addr, "download", &bob, r#"{"_pad":null}"#);
    assert_ne!(d.payload(), file);
}

#[test]
fn a_step_with_bad_rows_rolls_the_whole_sync_back() {
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 3);
    assert_eq!(upload(s.addr, ALICE, &file).payload(), b"OK");

    let started = call(
        s.addr,
        "start",
        ALICE,
        r#"{"minUsn":0,"lnewer":false,"graves":null}"#,
    );
    assert_eq!(started.status, 200);
    assert_eq!(
        started.json(),
        serde_json::json!({"cards": [], "notes": [], "decks": []})
    );
    // A deletion that would apply, then a note whose notetype does not exist.
    let graves = call(
        s.addr,
        "applyGraves",
        ALICE,
        r#"{"chunk":{"cards":[1],"notes":[],"decks":[]}}"#,
    );
    assert_eq!(graves.status, 200);
    let bad = r#"{"chunk":{"done":true,"notes":[[5,"g",424242,1,0,"","a\u001fb","","",0,""]]}}"#;
    assert_eq!(call(s.addr, "applyChunk", ALICE, bad).status, 400);
    // The sync is gone (409, "another device") and nothing of it stayed.
    assert_eq!(call(s.addr, "chunk", ALICE, r#"{"_pad":null}"#).status, 409);
    let d = call(s.addr, "download", ALICE, r#"{"_pad":null}"#);
    assert_eq!(d.payload(), file);
}

#[test]
fn session_keys_decide_who_may_continue() {
    let s = start(&[]);
    let with_key = |method: &str, session: &str, json: &str| {
        let body = zstd::bulk::compress(json.as_bytes(), 3).unwrap();
        let header = (
            "anki-sync",
            format!(r#"{{"v":11,"k":"{ALICE}","c":"t","s":"{session}"}}"#),
        );
        request(s.addr, "POST", &format!("/sync/{method}"), &[header], &body)
    };
    let start_json = r#"{"minUsn":0,"lnewer":false,"graves":null}"#;
    assert_eq!(with_key("start", "", start_json).status, 400);
    assert_eq!(with_key("chunk", "A", "{}").status, 409);
    assert_eq!(with_key("start", "A", start_json).status, 200);
    assert_eq!(with_key("chunk", "", "{}").status, 400);
    assert_eq!(with_key("chunk", "B", "{}").status, 409);
    // Another device's background check does not end A's sync ...
    assert_eq!(with_key("meta", "B", r#"{"v":11,"cv":"x"}"#).status, 200);
    let chunk = with_key("chunk", "A", "{}");
    assert_eq!(chunk.status, 200);
    assert_eq!(chunk.json()["done"], true);
    // ... but a new start from it does.
    assert_eq!(with_key("start", "B", start_json).status, 200);
    assert_eq!(
        with_key("sanityCheck2", "A", r#"{"client":[[0,0,0],0,0,0,0,1,1,1]}"#).status,
        409
    );
    // Any key may abort.
    assert_eq!(with_key("abort", "C", "{}").status, 200);
    assert_eq!(with_key("finish", "B", "{}").status, 409);
}

#[test]
fn an_abandoned_sync_is_rolled_back() {
    let s = start(&[("LEITNER_SYNC_IDLE_SECS", "1")]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 3);
    assert_eq!(upload(s.addr, ALICE, &file).payload(), b"OK");
    assert_eq!(
        call(s.addr, "start", ALICE, r#"{"minUsn":0,"lnewer":false}"#).status,
        200
    );
    assert_eq!(
        call(s.addr, "applyGraves", ALICE, r#"{"chunk":{"cards":[1,2]}}"#).status,
        200
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The device vanished; its sync is gone and so are its deletions.
    assert_eq!(call(s.addr, "chunk", ALICE, "{}").status, 409);
    assert_eq!(call(s.addr, "download", ALICE, "{}").payload(), file);
}

/// Sends `bytes` and reads until the server closes the connection.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

/// Splits a response into its head (as text) and body.
fn split(response: &[u8]) -> (String, &[u8]) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    (
        String::from_utf8_lossy(&response[..end]).to_lowercase(),
        &response[end..],
    )
}

#[test]
fn http10_clients_get_a_body_ended_by_the_close() {
    // nginx talks HTTP/1.0 to its upstream unless told otherwise.
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 30);
    assert_eq!(upload(s.addr, ALICE, &file).status, 200);
    let json = zstd::bulk::compress(b"{}", 3).unwrap();
    let (name, value) = sync_header(ALICE, 11);
    let mut req = format!(
        "POST /anki/sync/download HTTP/1.0\r\nHost: up\r\nConnection: keep-alive\r\n\
         {name}: {value}\r\nContent-Length: {}\r\n\r\n",
        json.len()
    )
    .into_bytes();
    req.extend_from_slice(&json);
    // read_to_end returning at all says the server closed after one
    // response, keep-alive asked or not.
    let response = exchange(s.addr, &req);
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(zstd::decode_all(body).unwrap(), file);

    // Without a Host line (optional in HTTP/1.0), and an error reply.
    let response = exchange(s.addr, b"GET /nowhere HTTP/1.0\r\n\r\n");
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(!body.is_empty());
}

#[test]
fn expect_100_continue_is_met_when_the_body_is_wanted() {
    let s = start(&[]);
    let json = zstd::bulk::compress(br#"{"v":11,"cv":"x"}"#, 3).unwrap();
    let (name, value) = sync_header(ALICE, 11);
    let head = format!(
        "POST /sync/meta HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{name}: {value}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&json).unwrap();
    let reply = read_reply(stream);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["cont"], true);

    // Refused before the body is read: no 100, the final answer, and the
    // connection closes rather than wait for a body that will not come.
    let (name, value) = sync_header("nobody", 11);
    let head = format!(
        "POST /sync/meta HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{name}: {value}\r\n\
         Content-Length: 5000\r\n\r\n"
    );
    let response = exchange(s.addr, head.as_bytes());
    let (head, _) = split(&response);
    assert!(head.starts_with("http/1.1 403"), "{head}");
}

#[test]
fn heads_we_cannot_read_get_a_status_not_a_silent_close() {
    let s = start(&[]);
    let status = |bytes: &[u8]| {
        let response = exchange(s.addr, bytes);
        String::from_utf8_lossy(&response[..12.min(response.len())]).into_owned()
    };
    assert_eq!(status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "HTTP/1.1 505");
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
        "HTTP/1.1 400"
    );
    let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
    long.resize(9000, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status(&long), "HTTP/1.1 431");
}

#[test]
fn a_chunked_body_whose_end_arrives_in_pieces_is_read() {
    // async-h1's decoder hangs when one read ends inside what follows a
    // chunked body's last chunk; the network decides where reads end, so
    // every cut there is tried, with a pause for the bytes to arrive apart.
    let s = start(&[]);
    let json = zstd::bulk::compress(br#"{"v":11,"cv":"x"}"#, 3).unwrap();
    let (name, value) = sync_header(ALICE, 11);
    let mut body = format!("{:x}\r\n", json.len()).into_bytes();
    body.extend_from_slice(&json);
    body.extend_from_slice(b"\r\n0\r\n");
    let end: &[&[u8]] = &[b"\r\n", b"x-trailer: 1\r\n\r\n"];
    for tail in end {
        for cut in 0..tail.len() {
            let mut first = format!(
                "POST /sync/meta HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            first.extend_from_slice(&body);
            first.extend_from_slice(&tail[..cut]);
            let mut stream = TcpStream::connect(s.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(&first).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            stream.write_all(&tail[cut..]).unwrap();
            let reply = read_reply(stream);
            assert_eq!(reply.status, 200, "cut {cut} of {:?}", tail);
            assert_eq!(reply.json()["cont"], true);
        }
    }
}

/// Reads one response's head from `stream`: its status line and the whole
/// head, lower case.
fn read_status(stream: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed inside a head");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    (head.lines().next().unwrap().to_owned(), head)
}

/// Reads one response from `stream`, which stays open: its status line and
/// its body (which must have a length).
fn read_one(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let (_, head) = read_status(stream);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    (head.lines().next().unwrap().to_owned(), body)
}

#[test]
fn a_reply_waits_for_the_rest_of_a_small_body() {
    // Caddy stops sending a request body once the reply has begun, then
    // drops the connection in the middle of the reply: a download (which
    // needs no body) came to the client cut short.
    let s = start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let file = collection_file(scratch.path(), 3);
    assert_eq!(upload(s.addr, ALICE, &file).status, 200);
    let (name, value) = sync_header(ALICE, 11);
    let json = zstd::bulk::compress(b"{}", 3).unwrap();
    let mut chunk = format!("{:x}\r\n", json.len()).into_bytes();
    chunk.extend_from_slice(&json);
    chunk.extend_from_slice(b"\r\n0\r\n\r\n");
    let requests: [(String, Vec<u8>, &str); 3] = [
        (
            "POST /health HTTP/1.1\r\nContent-Length: 5".into(),
            b"hello".to_vec(),
            "405",
        ),
        (
            "POST /health HTTP/1.1\r\nTransfer-Encoding: chunked".into(),
            b"5\r\nhello\r\n0\r\n\r\n".to_vec(),
            "405",
        ),
        // A download needs nothing of its body; Caddy sends it chunked.
        (
            format!(
                "POST /sync/download HTTP/1.1\r\n{name}: {value}\r\nTransfer-Encoding: chunked"
            ),
            chunk,
            "200",
        ),
    ];
    for (head, body, want) in requests {
        let framing = head.clone();
        let mut stream = TcpStream::connect(s.addr).unwrap();
        let head = format!("{head}\r\nHost: x\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        let early = stream.read(&mut byte);
        assert!(early.is_err(), "{framing}: answered before the body came");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&body).unwrap();
        let (status, _) = read_status(&mut stream);
        assert!(
            status.starts_with(&format!("http/1.1 {want}")),
            "{framing}: {status}"
        );
    }
}

#[test]
fn a_request_sent_right_after_a_reply_is_not_taken_for_the_last_body() {
    // A reply to a large body can go before the body has all come (a
    // refusal); a client or proxy that has the reply may send its next
    // request at once, so the old body's end and the new head reach us in
    // one read, cut anywhere.
    let s = start(&[]);
    let next = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let large = vec![b'x'; 100_000];
    let mut chunked = format!("{:x}\r\n", large.len()).into_bytes();
    chunked.extend_from_slice(&large);
    chunked.extend_from_slice(b"\r\n0\r\nx-t: 1\r\n\r\n");
    let bodies = [
        ("Transfer-Encoding: chunked".to_owned(), chunked),
        (format!("Content-Length: {}", large.len()), large.clone()),
    ];
    for (framing, body) in &bodies {
        for cut in body.len() - 20..body.len() {
            let mut stream = TcpStream::connect(s.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut first =
                format!("POST /health HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n").into_bytes();
            first.extend_from_slice(&body[..cut]);
            stream.write_all(&first).unwrap();
            // Refused (405) before the body's end.
            let (status, _) = read_one(&mut stream);
            assert!(
                status.starts_with("http/1.1 405"),
                "{framing}, cut {cut}: {status}"
            );
            let mut rest = body[cut..].to_vec();
            rest.extend_from_slice(next);
            stream.write_all(&rest).unwrap();
            let (status, _) = read_one(&mut stream);
            assert!(
                status.starts_with("http/1.1 200"),
                "{framing}, cut {cut}: {status}"
            );
            // And the connection goes on.
            stream.write_all(next).unwrap();
            let (status, _) = read_one(&mut stream);
            assert!(
                status.starts_with("http/1.1 200"),
                "{framing}, cut {cut}: {status}"
            );
        }
    }
}

/// A legacy client's form: `data` first (gzip when `c` is 1), then the
/// fields, as Anki 2.1.54 sends it.
fn legacy_form(addr: SocketAddr, path: &str, json: &str, fields: &[(&str, &str)]) -> Reply {
    use std::io::Write as _;
    let boundary = "7a02a22b46df6406-9064f7e11f2505e9";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).unwrap();
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"data\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&gz.finish().unwrap());
    body.extend_from_slice(b"\r\n");
    for (name, value) in [("c", "1")].iter().chain(fields) {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    request(
        addr,
        "POST",
        path,
        &[(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )],
        &body,
    )
}

#[test]
fn legacy_forms_log_in_and_get_plain_replies() {
    let s = start(&[]);
    let login = legacy_form(
        s.addr,
        "/sync/hostKey",
        r#"{"u":"alice","p":"secret"}"#,
        &[],
    );
    assert_eq!(login.status, 200);
    assert_eq!(login.header("anki-original-size"), None);
    let key: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    assert!(key.len() == 40 && key != ALICE);

    let meta = legacy_form(
        s.addr,
        "/sync/meta",
        r#"{"v":10,"cv":"ankidroid,2.15.6,android"}"#,
        &[("k", &key), ("s", "abcd")],
    );
    assert_eq!(meta.status, 200);
    let meta: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
    assert_eq!(meta["cont"], true);
    assert_eq!(meta["empty"], true);

    // Clients older than what the collection uses are told so, in the
    // official server's words; older than version 8 gets 501.
    let v8 = legacy_form(s.addr, "/sync/meta", r#"{"v":8,"cv":"x"}"#, &[("k", ALICE)]);
    let v8: serde_json::Value = serde_json::from_slice(&v8.body).unwrap();
    assert_eq!(v8["cont"], false);
    assert_eq!(v8["msg"], "Your client does not support the v2 scheduler");
    let v9 = legacy_form(s.addr, "/sync/meta", r#"{"v":9,"cv":"x"}"#, &[("k", ALICE)]);
    let v9: serde_json::Value = serde_json::from_slice(&v9.body).unwrap();
    assert_eq!(v9["cont"], true, "a new collection has no creationOffset");
    let v7 = legacy_form(s.addr, "/sync/meta", r#"{"v":7,"cv":"x"}"#, &[("k", ALICE)]);
    assert_eq!(v7.status, 501);

    let wrong = legacy_form(s.addr, "/sync/meta", r#"{"v":10}"#, &[("k", "nobody")]);
    assert_eq!(wrong.status, 403);
    // A full upload whose file is no collection: a 200 whose text the
    // client shows, as for current clients, and nothing changes.
    let upload = legacy_form(s.addr, "/sync/upload", "", &[("k", ALICE)]);
    assert_eq!(upload.status, 200);
    let said = String::from_utf8_lossy(&upload.body);
    assert!(said.contains("not an SQLite file"), "{said}");
}
