"""A hostile device on the LAN (issue 12): bombs, stalled bodies, login
floods, a slow reader, a panicking step. Each time the server keeps serving
real clients (PyPI `anki`) promptly."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import zstandard
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, big_collection, make_rich_collection, sync_post, wait_for

Changes = SyncCollectionResponse.ChangesRequired
ALICE_KEY = "6985e52cea44a28695d5c440bd42f57e9f50b7b1"


def sync_header(key="", session="s") -> str:
    return json.dumps({"v": 11, "k": key, "c": "hostile", "s": session})


def post_from(server, source: str, path: str, body: bytes, key="") -> int:
    return sync_post(server, path, body, key, source=source, compressed=True, timeout=120)[0]


def at_once(count: int, request) -> list:
    """Sends `count` requests at the same time; their results once all ended."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(request())) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_zstd_bombs_before_login_stay_small(server):
    # 65 KB of zstd that would decompress to 2 GB; 20 at once.
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (2 << 30 >> 4)) * 16
    statuses = at_once(20, lambda: post_from(server, "127.0.0.1", "/sync/hostKey", bomb))
    assert statuses == [400] * 20
    peak = server.peak_rss_kib()
    print(f"\npeak RSS after 20 bombs: {peak} KiB")
    assert peak < 64 * 1024, peak


@pytest.mark.parametrize("path,key", [("/sync/hostKey", ""), ("/sync/meta", ALICE_KEY)])
@pytest.mark.parametrize("count", [200, 600])
def test_stalled_bodies_hold_no_thread(server, tmp_path, count, path, key):
    # 600: more than smol's blocking pool has threads (500). Logins from the
    # stalling addresses are also capped; requests with a host key are not.
    # 30 from each address: a device holds 32 connections at most.
    stalled = []
    for i in range(count):
        source = f"127.0.1.{2 + i // 30}"
        s = socket.create_connection(("127.0.0.1", server.port), source_address=(source, 0))
        s.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n".encode()
            + f"anki-sync: {sync_header(key)}\r\n\r\n".encode()
            + b"\x28\xb5"
        )
        stalled.append(s)
    try:
        started = time.monotonic()
        dev = Device(tmp_path / "dev")
        make_rich_collection(dev.col, notes=10, reviews=2)
        auth = dev.login(server)
        assert dev.sync(auth) == Changes.FULL_UPLOAD
        dev.full_sync(auth, upload=True)
        elapsed = time.monotonic() - started
        print(f"\nlogin and sync beside {count} stalled {path} bodies: {elapsed:.2f} s")
        assert elapsed < 10
        dev.close()
    finally:
        for s in stalled:
            s.close()


def test_a_login_flood_from_one_address_does_not_delay_others(server, tmp_path):
    body = zstandard.ZstdCompressor().compress(json.dumps({"u": "alice", "p": "wrong"}).encode())
    # 30: a device holds at most 32 connections (more are reset at once,
    # see test_connection_floods.py); these are all let in, and take turns.
    flood = threading.Thread(
        target=at_once, args=(30, lambda: post_from(server, "127.0.0.2", "/sync/hostKey", body)), daemon=True
    )
    flood.start()
    time.sleep(0.5)  # the flood is queued
    dev = Device(tmp_path / "dev")
    started = time.monotonic()
    auth = dev.login(server)
    elapsed = time.monotonic() - started
    print(f"\nreal login beside 30 wrong ones: {elapsed:.2f} s")
    assert elapsed < 3
    # Host keys never wait for logins.
    started = time.monotonic()
    assert dev.sync(auth) == Changes.NO_CHANGES
    assert time.monotonic() - started < 3
    dev.close()
    # The flood is slowed (its later logins pause), not refused for good.
    time.sleep(2)
    assert server.proc.poll() is None


def test_a_slow_download_does_not_block_the_users_other_devices(server, tmp_path):
    a = Device(tmp_path / "a")
    # About 13 MB that compresses little: more than the socket buffers hold.
    big_collection(a, 13, seed=1)
    basic = a.col.models.by_name("Basic")
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    a.col.media.write_data("pic.jpg", b"picture")
    a.sync_media(auth)

    # A phone on bad Wi-Fi: asks for the collection and reads 4 KB a second.
    phone = socket.socket()
    phone.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    phone.connect(("127.0.0.1", server.port))
    phone.sendall(
        b"POST /sync/download HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n"
        + f"anki-sync: {sync_header(auth.hkey)}\r\n\r\n".encode()
    )
    stop = threading.Event()

    def read_slowly():
        while not stop.is_set():
            if not phone.recv(1024):
                break
            time.sleep(0.25)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    time.sleep(1)
    assert "sync/download" not in server.log(), "the download ended at once"
    try:
        started = time.monotonic()
        status, _ = sync_post(server, "/sync/meta", json.dumps({"v": 11, "cv": "x"}).encode(), auth.hkey)
        assert status == 200
        meta_secs = time.monotonic() - started
        print(f"\nmeta beside a slow download: {meta_secs:.2f} s")
        assert meta_secs < 2
        # The desktop syncs, collection and media, while the phone still reads.
        b = Device(tmp_path / "b")
        auth_b = b.login(server)
        b.full_sync(auth_b, upload=False)
        note = b.col.new_note(basic)
        note["Front"] = "from the desktop"
        b.col.add_note(note, 1)
        assert b.sync(auth_b) == Changes.NO_CHANGES
        b.sync_media(auth_b)
        assert "pic.jpg" in b.media_files()
        assert reader.is_alive(), "the slow download finished early: the test proves nothing"
    finally:
        stop.set()
        phone.close()
    assert a.sync(auth) == Changes.NO_CHANGES
    assert a.col.find_notes("from the desktop")
    a.close()
    b.close()


def test_a_panicking_step_rolls_back_and_the_next_sync_works(server_factory, tmp_path):
    trigger = tmp_path / "panic-once"
    server = server_factory(env={"LEITNER_TEST_PANIC_FILE": str(trigger)}).start()
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=20, reviews=5)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    note = a.col.new_note(a.col.models.by_name("Basic"))
    note["Front"] = "survives a panic"
    a.col.add_note(note, 1)
    trigger.write_text("arm")
    with pytest.raises(Exception):
        a.sync(auth)
    assert not trigger.exists(), "the hook never fired"
    assert "panicked" in server.log()
    assert a.sync(auth) == Changes.NO_CHANGES
    b = Device(tmp_path / "b")
    b.full_sync(b.login(server), upload=False)
    assert b.col.find_notes("survives a panic")
    assert b.col.note_count() == a.col.note_count()
    a.close()
    b.close()


def test_an_oversized_head_gets_431(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"POST /sync/meta HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 9000 + b"\r\n\r\n")
    reply = s.recv(200)
    s.close()
    assert reply.startswith(b"HTTP/1.1 431"), reply
    assert wait_for(lambda: "431" in server.log())


def step(server, path: str, payload: dict, key: str, session: str) -> tuple[int, bytes]:
    return sync_post(server, path, json.dumps(payload).encode(), key, session=session)


def test_numbers_the_client_cannot_hold_are_refused(server, tmp_path):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=5, reviews=2)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    card = a.col.db.first("select id, nid, did from cards limit 1")
    assert step(server, "/sync/start", {"minUsn": 0, "lnewer": False}, auth.hkey, "x")[0] == 200
    row = [card[0], card[1], card[2], 70000, 1, -1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, ""]
    status, body = step(server, "/sync/applyChunk", {"chunk": {"done": True, "cards": [row]}}, auth.hkey, "x")
    assert status == 400, body
    assert b"out of range" in body
    # Nothing stored: the device syncs on as before, and a fresh one opens it.
    assert a.sync(auth) == Changes.NO_CHANGES
    b = Device(tmp_path / "b")
    b.full_sync(b.login(server), upload=False)
    assert b.col.db.scalar("select max(ord) from cards") < 10
    a.close()
    b.close()


def test_an_upload_with_a_trigger_is_refused(server, tmp_path):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=5, reviews=2)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    evil = Device(tmp_path / "evil")
    make_rich_collection(evil.col, notes=3, reviews=1)
    evil.col.db.execute("create trigger leitner_evil after insert on notes begin delete from cards; end")
    with pytest.raises(Exception, match="trigger"):
        evil.full_sync(evil.login(server), upload=True)
    b = Device(tmp_path / "b")
    b.full_sync(b.login(server), upload=False)
    assert b.col.note_count() == 5
    for dev in (a, b, evil):
        dev.close()
