"""How leitner runs as an appliance: socket activation, idle exit, SIGTERM,
reverse proxies, an unset clock (issue 2)."""

import glob
import os
import signal
import socket
import time

import pytest
import zstandard
from anki.sync_pb2 import SyncCollectionResponse

from harness import BINARY, Device, open_db, wait_for

Changes = SyncCollectionResponse.ChangesRequired
ALICE_KEY = "6985e52cea44a28695d5c440bd42f57e9f50b7b1"


def activated(server, listener):
    """Starts `server` as systemd would: the listening socket as fd 3,
    LISTEN_FDS=1, and LISTEN_PID naming the process (bash's pid, kept
    across exec)."""
    argv = ["bash", "-c", 'exec 3<&"$1"; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0"', str(BINARY), str(listener.fileno())]
    return server.start(argv, pass_fds=(listener.fileno(),))


def test_socket_activation_and_idle_exit(server_factory, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = server_factory(env={"LEITNER_IDLE_EXIT_SECS": "2"}, port=9)  # SYNC_PORT must be ignored

    def activate():
        return activated(server, listener)

    activate()
    assert server.port == port
    assert "socket from systemd" in server.log()
    dev = Device(tmp_path / "a")
    auth = dev.login(server)
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = "through systemd's socket"
    dev.col.add_note(note, 1)
    assert dev.sync(auth) == Changes.FULL_UPLOAD
    dev.full_sync(auth, upload=True)

    # Idle: it exits by itself, cleanly.
    proc = server.proc
    assert wait_for(lambda: proc.poll() is not None, timeout=15)
    assert proc.returncode == 0
    assert "stopping (idle)" in server.log()

    # The socket stays open (systemd holds it): the next sync queues on it and
    # a new instance, started "by systemd", answers it.
    activate()
    assert dev.sync(auth) == Changes.NO_CHANGES
    dev.close()
    listener.close()


def test_sigterm_finishes_a_request_in_flight(server, tmp_path):
    dev = Device(tmp_path / "a")
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = "uploaded during shutdown"
    dev.col.add_note(note, 1)
    dev.col.mod_schema(check=False)
    dev.close()
    body = zstandard.ZstdCompressor().compress(dev.path.read_bytes())

    conn = socket.create_connection(("127.0.0.1", server.port))
    head = (
        "POST /sync/upload HTTP/1.1\r\nhost: x\r\n"
        f'anki-sync: {{"v":11,"k":"{ALICE_KEY}","c":"t","s":"s"}}\r\n'
        f"content-length: {len(body)}\r\n\r\n"
    )
    conn.sendall(head.encode() + body[: len(body) // 2])
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert server.proc.poll() is None, "exited with a request in flight"
    conn.sendall(body[len(body) // 2 :])
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.endswith(b""):
        chunk = conn.recv(65536)
        if not chunk:
            break
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert server.proc.wait(15) == 0
    assert "stopping (SIGTERM)" in server.log()

    server.start()
    other = Device(tmp_path / "b")
    auth = other.login(server)
    other.full_sync(auth, upload=False)
    assert other.col.find_notes("uploaded during shutdown")
    other.close()


def test_works_behind_a_reverse_proxy_subpath(server, tmp_path):
    endpoint = f"http://127.0.0.1:{server.port}/anki/"
    dev = Device(tmp_path / "a")
    auth = dev.login(server, endpoint=endpoint)
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = "via /anki/"
    dev.col.add_note(note, 1)
    assert dev.sync(auth) == Changes.FULL_UPLOAD
    dev.full_sync(auth, upload=True)
    assert dev.sync(auth) == Changes.NO_CHANGES
    assert "alice sync/upload 200" in server.log()
    dev.close()


def test_an_unset_clock_is_reported_to_the_user(server_factory, tmp_path):
    # libfaketime preloaded into leitner itself (the faketime wrapper would
    # fork, and our SIGTERM would not reach the server).
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert libs, "needs libfaketime: tests/run installs the faketime package"
    server = server_factory(env={
        "LD_PRELOAD": libs[0],
        "FAKETIME": "@2001-01-01 00:00:00",
        # Only the wall clock is wrong on a Pi without network time.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    })
    server.start()
    dev = Device(tmp_path / "a")
    auth = dev.login(server)
    # The client shows the server's message instead of syncing.
    with pytest.raises(Exception) as err:
        dev.sync(auth)
    assert "clock is not set" in str(err.value)
    dev.close()


def test_tells_systemd_ready_watchdog_and_stopping(server_factory, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    server = server_factory(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    # WATCHDOG_PID must name leitner itself: bash's pid, kept across exec.
    server.start(["bash", "-c", 'WATCHDOG_PID=$$ exec "$0"', str(BINARY)])
    messages = [notify.recv(4096).decode().strip() for _ in range(4)]
    assert messages == ["READY=1"] + ["WATCHDOG=1"] * 3
    assert server.stop() == 0
    for _ in range(10):
        if notify.recv(4096).decode().strip() == "STOPPING=1":
            break
    else:
        raise AssertionError("no STOPPING=1")
    notify.close()


def test_a_download_is_consistent_while_an_upload_waits(server, tmp_path):
    """The download streams the collection as it was; an upload arriving
    meanwhile waits for it, then replaces the collection."""
    import threading

    old = Device(tmp_path / "old")
    basic = old.col.models.by_name("Basic")
    for i in range(60):
        note = old.col.new_note(basic)
        note["Front"] = f"old {i} " + os.urandom(100_000).hex()  # ~12 MB, barely compressible
        old.col.add_note(note, 1)
    auth = old.login(server)
    old.full_sync(auth, upload=True)
    old.close()

    conn = socket.create_connection(("127.0.0.1", server.port))
    body = zstandard.ZstdCompressor().compress(b'{"_pad":null}')
    conn.sendall((
        "POST /sync/download HTTP/1.1\r\nhost: x\r\n"
        f'anki-sync: {{"v":11,"k":"{ALICE_KEY}","c":"t","s":"s"}}\r\n'
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body)
    first = conn.recv(65536)  # the download has started; we stop reading
    assert first.startswith(b"HTTP/1.1 200")

    new = Device(tmp_path / "new")
    note = new.col.new_note(new.col.models.by_name("Basic"))
    note["Front"] = "new collection"
    new.col.add_note(note, 1)
    new.col.mod_schema(check=False)
    auth_new = new.login(server)
    done = threading.Event()
    threading.Thread(target=lambda: (new.full_sync(auth_new, upload=True), done.set()), daemon=True).start()
    assert not done.wait(2), "the upload replaced the collection under a running download"

    # Read the rest of the download: it is the old collection, whole.
    received = first
    conn.settimeout(30)
    while not received.endswith(b"0\r\n\r\n"):
        chunk = conn.recv(1 << 20)
        assert chunk
        received += chunk
    head, _, chunked = received.partition(b"\r\n\r\n")
    payload, rest = b"", chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payload += rest[:size]
        rest = rest[size + 2:]
    downloaded = tmp_path / "downloaded.anki2"
    downloaded.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(payload))
    db = open_db(downloaded)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from notes").fetchone()[0] == 60
    db.close()
    conn.close()

    assert done.wait(30), "the upload did not finish after the download"
    check = Device(tmp_path / "check")
    check.full_sync(check.login(server), upload=False)
    assert check.col.find_notes("new collection")
    assert check.col.note_count() == 1
    new.close()
    check.close()


def test_sighup_exits_between_syncs_not_during_one(server, tmp_path):
    """A package upgrade sends SIGHUP (systemctl reload): the server finishes
    the sync in progress, then exits; systemd's socket starts the new binary."""
    start_a_normal_sync(server, tmp_path)
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(3)
    assert server.proc.poll() is None, "exited in the middle of a sync"
    end_the_normal_sync(server)
    assert wait_for(lambda: server.proc.poll() is not None, timeout=10)
    assert server.proc.returncode == 0
    assert "asked to restart between syncs" in server.log()


def test_idle_exit_waits_for_a_normal_sync_between_its_requests(server_factory, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = server_factory(env={"LEITNER_IDLE_EXIT_SECS": "1"})
    activated(server, listener)
    # A client computing its next chunk: no request in flight, a sync open.
    start_a_normal_sync(server, tmp_path)
    time.sleep(3)
    assert server.proc.poll() is None, "exited in the middle of a sync"
    end_the_normal_sync(server)
    proc = server.proc
    assert wait_for(lambda: proc.poll() is not None, timeout=10)
    assert "stopping (idle)" in server.log()
    listener.close()


def start_a_normal_sync(server, tmp_path):
    """Leaves a normal sync open by hand, between two of its requests (one
    transaction across requests, as a client computing its next chunk)."""
    import json

    from harness import sync_post

    dev = Device(tmp_path / "a")
    auth = dev.login(server)
    dev.col.add_note(dev.col.new_note(dev.col.models.by_name("Basic")), 1)
    dev.full_sync(auth, upload=True)
    dev.close()
    status, _ = sync_post(server, "/sync/start", json.dumps({"minUsn": 0, "lnewer": False}).encode(), ALICE_KEY)
    assert status == 200


def end_the_normal_sync(server):
    from harness import sync_post

    status, _ = sync_post(server, "/sync/abort", b"{}", ALICE_KEY)
    assert status == 200
