"""8 users syncing at once against one, measuring the server and not the
clients: on a small machine, eight real clients (each a Python process with
Anki's Rust backend) compete for the same cores as the server, and the
figure mostly says how fast the clients are.

So one real client's normal sync (200 reviews and 100 note edits on the
benchmark collection) is recorded request by request through a proxy, and
then replayed byte for byte, for 1 user and for 8 users at once, from
threads that only send and receive. Before every replay each user's server
collection is reset by a full upload of the same file the recording started
from, so the server sees exactly the recorded sync each time. Asserts
nothing; prints ratios. Run through benches/run."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zstandard
from anki.collection import Collection
from anki.sync_pb2 import SyncAuth

import common

USERS = 8
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def host_key(user: str) -> str:
    # Both servers derive it from the SYNC_USERn value.
    return hashlib.sha1(f"{user}:{user}".encode()).hexdigest()


class Recorder(http.server.ThreadingHTTPServer):
    """Forwards every request to the server and keeps the /sync/ ones."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.recorded: list[tuple[str, str, bytes]] = []
        super().__init__(("127.0.0.1", 0), RecordingHandler)


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
        header = self.headers.get("anki-sync", "")
        if "/sync/" in self.path and not self.path.endswith("hostKey"):
            self.server.recorded.append((self.path, header, body))
        conn = http.client.HTTPConnection("127.0.0.1", self.server.target_port, timeout=300)
        conn.request("POST", self.path, body=body, headers={"anki-sync": header})
        res = conn.getresponse()
        data = res.read()
        self.send_response(res.status)
        for key in ("anki-original-size", "content-type"):
            if res.getheader(key):
                self.send_header(key, res.getheader(key))
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()


def post(port: int, path: str, header: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", path, body=body, headers={"anki-sync": header})
    res = conn.getresponse()
    res.read()
    conn.close()
    return res.status


def with_key(header: str, key: str) -> str:
    value = json.loads(header)
    value["k"] = key
    return json.dumps(value)


def upload(port: int, user: str, compressed: bytes) -> None:
    header = json.dumps({"v": 11, "k": host_key(user), "c": "bench", "s": "reset"})
    status = post(port, "/sync/upload", header, compressed)
    assert status == 200, status


def replay(port: int, user: str, recorded) -> None:
    for path, header, body in recorded:
        status = post(port, path, with_key(header, host_key(user)), body)
        assert status == 200, (path, status)


def measure(name: str, argv: list[str], source: Path, work: Path) -> dict:
    data = work / name
    users = [f"user{i}" for i in range(USERS)]
    server = common.Proc(argv, data / "server", users=[f"{u}:{u}" for u in users])
    try:
        endpoint = f"http://127.0.0.1:{server.port}/"
        (data / "client").mkdir(parents=True)
        path = data / "client" / "collection.anki2"
        shutil.copy(source, path)
        col = Collection(str(path))
        hkey = col.sync_login(username="user0", password="user0", endpoint=endpoint).hkey
        auth = SyncAuth(hkey=hkey, endpoint=endpoint, io_timeout_secs=300)
        common.full_sync(col, auth, upload=True)
        col.close()
        # The state every replay starts from: this file, uploaded whole.
        start_state = zstandard.ZstdCompressor().compress(path.read_bytes())
        saved = data / "client" / "start.anki2"
        shutil.copy(path, saved)
        upload(server.port, "user0", start_state)

        shutil.copy(saved, path)
        col = Collection(str(path))
        common.make_changes(col, 0, 200, 100)
        recorder = Recorder(server.port)
        threading.Thread(target=recorder.serve_forever, daemon=True).start()
        proxied = SyncAuth(hkey=hkey, endpoint=f"http://127.0.0.1:{recorder.server_address[1]}/", io_timeout_secs=300)
        col.sync_collection(proxied, sync_media=False)
        col.close()
        recorder.shutdown()
        recorded = recorder.recorded
        assert any(p.endswith("/start") for p, _, _ in recorded), [p for p, _, _ in recorded]

        samples = {"one": [], "eight": []}
        for _ in range(ROUNDS):
            for label, parties in (("one", users[:1]), ("eight", users)):
                for u in parties:
                    upload(server.port, u, start_state)
                time.sleep(1)  # let the uploads' background work settle
                threads = [threading.Thread(target=replay, args=(server.port, u, recorded)) for u in parties]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                samples[label].append(time.perf_counter() - start)
        samples["requests"] = [p for p, _, _ in recorded]
    finally:
        server.stop()
    return samples


def main() -> None:
    source = common.template()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in common.servers():
            results[name] = measure(name, argv, source, Path(tmp))
    steps = ", ".join(p.rsplit("/", 1)[-1] for p in results["leitner"]["requests"])
    print(f"\nreplayed normal sync ({steps}), 200 reviews + 100 edits on a {common.NOTES}-note "
          f"collection; median of {ROUNDS} rounds\n")
    print(f"{'':36}{'leitner':>10}{'official':>10}{'ratio':>8}")
    for label, key in (("1 user (s)", "one"), (f"{USERS} users at once (s)", "eight")):
        a, b = statistics.median(results["leitner"][key]), statistics.median(results["official"][key])
        print(f"{label:36}{a:10.3f}{b:10.3f}{a / b:8.2f}")
    for name, r in results.items():
        print(f"{name}: {USERS} users at once take "
              f"{statistics.median(r['eight']) / statistics.median(r['one']):.2f}x one user's time")


if __name__ == "__main__":
    main()
