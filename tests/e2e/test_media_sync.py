"""Media sync (issue 4) with the real client: files reach every device byte
for byte, deletions and replacements converge, users stay apart."""

import os
import random
import signal
import time
import unicodedata

from harness import Device, media_files, wait_for


def add_files(dev: Device, count: int, seed: int) -> dict[str, bytes]:
    """About `count` files through the client's API: unicode names, spaces,
    sizes from 1 byte to 5 MB. Returns what the client actually stored."""
    rng = random.Random(seed)
    stems = ["photo", "Straße", "日本語", "café", "with space", "ελληνικά", "emoji 🎉", "x"]
    sizes = [1, 2, 100, 1000, 20_000, 150_000]
    stored = {}
    for i in range(count):
        size = sizes[i % len(sizes)]
        if i == 0:
            size = 5_000_000
        elif i in (1, 2):
            size = 3_000_000
        name = f"{stems[i % len(stems)]} {seed}-{i}.{['jpg', 'mp3', 'png', 'ogg'][i % 4]}"
        data = rng.randbytes(size)
        stored[dev.col.media.write_data(name, data)] = data
    return stored


def add_unnormalised_files(dev: Device, seed: int) -> set[str]:
    """Files whose names the client normalises before storing and uploading
    them (NFD, forbidden characters, a device name, a trailing dot)."""
    names = [
        unicodedata.normalize("NFD", f"résumé {seed}.txt"),
        f"what? {seed}.txt",
        f"a:b*c {seed}.txt",
        "CON.txt" if seed == 1 else f"con {seed}.txt",
        f"trailing dot {seed}.",
    ]
    stored = {dev.col.media.write_data(name, f"unnormalised {seed} {i}".encode()) for i, name in enumerate(names)}
    assert not stored & set(names[1:])
    return stored


def replace_files(dev: Device, names) -> None:
    """New contents under the same names, as an editor saves them (a new file
    renamed over the old). The client notices changes by modification time,
    to the second, of the folder and then of each file: make both differ."""
    later = time.time() + 5
    for name in names:
        tmp = dev.media_dir.parent / "editing.tmp"
        tmp.write_bytes(os.urandom(777) + name.encode())
        os.utime(tmp, (later, later))
        os.replace(tmp, dev.media_dir / name)
    os.utime(dev.media_dir, (later, later))


def server_media(server, user="alice") -> dict[str, str]:
    return media_files(server.data / user / "media")


def test_media_converges_between_devices(server, tmp_path):
    a = Device(tmp_path / "a")
    auth_a = a.login(server)
    a.sync(auth_a)
    add_files(a, 200, seed=1)
    add_unnormalised_files(a, seed=1)
    a.sync_media(auth_a)
    files = a.media_files()
    assert len(files) == 205
    assert not any(unicodedata.normalize("NFC", n) != n for n in files)
    assert server_media(server) == files

    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.sync(auth_b)
    b.sync_media(auth_b)
    assert b.media_files() == files

    # A deletes some files and replaces others under the same names.
    names = sorted(files)
    deleted, replaced = names[:30], names[30:50]
    a.col.media.trash_files(deleted)
    replace_files(a, replaced)
    add_files(a, 10, seed=2)
    a.sync_media(auth_a)
    files = a.media_files()
    assert not set(deleted) & set(files)
    assert server_media(server) == files

    b.sync_media(auth_b)
    assert b.media_files() == files

    # The other way round, including re-adding a deleted name.
    b.col.media.trash_files(replaced[:5])
    replace_files(b, [deleted[0]])
    b.sync_media(auth_b)
    a.sync_media(auth_a)
    assert a.media_files() == b.media_files() == server_media(server)
    assert deleted[0] in a.media_files()

    # Nothing moves the next time, and both sanity checks passed (a failed
    # check raises).
    a.sync_media(auth_a)
    b.sync_media(auth_b)
    assert a.media_files() == b.media_files() == server_media(server)
    a.close()
    b.close()


def test_media_travels_with_a_normal_sync(server, tmp_path):
    """Desktop syncs media after the collection, starting from meta's
    media usn instead of asking `begin`."""
    a = Device(tmp_path / "a")
    auth_a = a.login(server)
    a.sync(auth_a)
    a.col.media.write_data("one.txt", b"one")
    a.col.sync_collection(auth_a, sync_media=True)
    assert wait_for(lambda: not a.col.media_sync_status().active, timeout=30)
    assert server_media(server) == a.media_files()

    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.col.sync_collection(auth_b, sync_media=True)
    assert wait_for(lambda: not b.col.media_sync_status().active, timeout=30)
    b.col.media_sync_status()  # raises if the media sync failed
    assert b.media_files() == {"one.txt": a.media_files()["one.txt"]}


def test_users_never_see_each_others_media(server_factory, tmp_path):
    server = server_factory(users=("alice:secret", "bob:hunter2")).start()
    a = Device(tmp_path / "a")
    auth_a = a.login(server)
    a.sync(auth_a)
    a.col.media.write_data("private.jpg", b"alice's")
    a.sync_media(auth_a)

    b = Device(tmp_path / "b")
    auth_b = b.login(server, user="bob", password="hunter2")
    b.sync(auth_b)
    b.sync_media(auth_b)
    assert b.media_files() == {}
    b.col.media.write_data("bobs.jpg", b"bob's")
    b.sync_media(auth_b)
    a.sync_media(auth_a)
    assert set(a.media_files()) == {"private.jpg"}
    assert set(server_media(server, "bob")) == {"bobs.jpg"}


def test_a_server_killed_mid_upload_loses_nothing(server, tmp_path):
    """kill -9 while a large media upload is under way; after a restart the
    next sync completes and folder, database and client agree."""
    a = Device(tmp_path / "a")
    auth_a = a.login(server)
    a.sync(auth_a)
    rng = random.Random(7)
    for i in range(60):
        a.col.media.write_data(f"big {i}.bin", rng.randbytes(600_000))
    a.col.sync_media(auth_a)
    # Some batches in, not all.
    folder = server.data / "alice" / "media"
    assert wait_for(lambda: folder.exists() and len(media_files(folder)) >= 5, timeout=60)
    server.stop(signal.SIGKILL)
    assert len(media_files(folder)) < 60, "the upload finished before the kill"
    try:
        while a.col.media_sync_status().active:
            pass
    except Exception:
        pass  # the interrupted sync fails, as it would against any server
    server.start()
    a.sync_media(auth_a)
    assert server_media(server) == a.media_files()
    assert len(a.media_files()) == 60

    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.sync(auth_b)
    b.sync_media(auth_b)
    assert b.media_files() == a.media_files()
    # Nothing is left in the staging folder.
    assert list((server.data / "alice" / "media.incoming").iterdir()) == []


def media_history(server, auth) -> tuple[list, int]:
    """The server's whole change list (name, usn, sha1) and its media usn, as
    a client would read them."""
    import json

    from harness import sync_post

    def call(method: str, payload: dict):
        status, body = sync_post(server, f"/msync/{method}", json.dumps(payload).encode(), auth.hkey)
        assert status == 200, status
        return json.loads(body)["data"]

    changes = sorted(call("mediaChanges", {"lastUsn": 0}), key=lambda c: c[1])
    return changes, call("begin", {"v": "test"})["usn"]


def run_media_steps(server, tmp_path) -> tuple[list, int, dict]:
    a = Device(tmp_path / "a")
    b = Device(tmp_path / "b")
    auth_a, auth_b = a.login(server), b.login(server)
    for i in range(8):
        a.col.media.write_data(f"f{i}.txt", f"first {i}".encode())
    a.sync_media(auth_a)
    b.sync_media(auth_b)
    # Delete two, replace two, and on the other device re-add a deleted one
    # with new contents and delete one that the first replaced.
    a.col.media.trash_files(["f0.txt", "f1.txt"])
    replace_files(a, ["f2.txt", "f3.txt"])
    a.sync_media(auth_a)
    b.sync_media(auth_b)
    (b.media_dir / "f0.txt").write_bytes(b"back with new contents")
    b.col.media.trash_files(["f2.txt"])
    os.utime(b.media_dir, (time.time() + 10, time.time() + 10))
    b.sync_media(auth_b)
    a.sync_media(auth_a)
    # An upload of what the server already has changes nothing.
    c = Device(tmp_path / "c")
    auth_c = c.login(server)
    (c.media_dir / "f4.txt").write_bytes(b"first 4")
    c.sync_media(auth_c)
    history = media_history(server, auth_a)
    files = a.media_files()
    assert b.media_files() == files == c.media_files()
    for dev in (a, b, c):
        dev.close()
    return history[0], history[1], files


def test_media_usns_match_the_official_server(server_factory, tmp_path):
    """Deletions, re-adds and new contents under the same name: the same
    steps against both servers give the same change list, usn for usn."""
    from harness import OfficialServer

    ours = run_media_steps(server_factory().start(), tmp_path / "leitner")
    official = OfficialServer(tmp_path / "official-data", users=("alice:secret",)).start()
    try:
        theirs = run_media_steps(official, tmp_path / "official")
    finally:
        official.stop()
    # Contents are random where files were replaced; compare names, usns,
    # and which entries are deletions.
    shape = lambda changes: [(name, usn, bool(sha1)) for name, usn, sha1 in changes]
    assert shape(ours[0]) == shape(theirs[0])
    assert ours[1] == theirs[1]
    assert sorted(ours[2]) == sorted(theirs[2])


def test_a_collection_sync_does_not_wait_for_a_media_upload(server, tmp_path):
    """A media upload holds the user's media lock while its body arrives; the
    user's collection sync (whose meta reports the media usn) goes on."""
    import io
    import json
    import socket
    import zipfile

    import zstandard

    a = Device(tmp_path / "a")
    auth = a.login(server)
    a.sync(auth)
    a.col.media.write_data("first.txt", b"first")
    a.sync_media(auth)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("0", os.urandom(3 << 20))
        z.writestr("_meta", json.dumps([["slow.bin", "0"]]))
    body = zstandard.ZstdCompressor().compress(buf.getvalue())
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.sendall((
        "POST /msync/uploadChanges HTTP/1.1\r\nhost: x\r\n"
        f'anki-sync: {{"v":11,"k":"{auth.hkey}","c":"t","s":""}}\r\n'
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body[: len(body) // 2])
    time.sleep(0.3)  # the upload now holds the media lock, waiting for bytes

    note = a.col.new_note(a.col.models.by_name("Basic"))
    note["Front"] = "while media uploads"
    a.col.add_note(note, 1)
    start = time.monotonic()
    a.sync(auth)
    assert time.monotonic() - start < 10
    conn.sendall(body[len(body) // 2:])
    assert b"200 OK" in conn.recv(4096)
    conn.close()
    a.sync_media(auth)
    assert "slow.bin" in a.media_files()
