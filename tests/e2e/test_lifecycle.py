"""How leitner runs as an appliance: socket activation, idle exit, SIGTERM,
reverse proxies, an unset clock (issue 2)."""

import glob
import signal
import socket
import time

import pytest
import zstandard
from anki.sync_pb2 import SyncCollectionResponse

from harness import BINARY, Device, wait_for

Changes = SyncCollectionResponse.ChangesRequired
ALICE_KEY = "6985e52cea44a28695d5c440bd42f57e9f50b7b1"


def test_socket_activation_and_idle_exit(server_factory, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = server_factory(env={"LEITNER_IDLE_EXIT_SECS": "2"}, port=9)  # SYNC_PORT must be ignored

    def activate():
        # Like systemd: the listening socket as fd 3, LISTEN_FDS=1, and
        # LISTEN_PID naming the process (bash's pid, kept across exec).
        argv = ["bash", "-c", 'exec 3<&"$1"; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0"', str(BINARY), str(listener.fileno())]
        return server.start(argv, pass_fds=(listener.fileno(),))

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
