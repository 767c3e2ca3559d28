"""A small SD card fills up (issue 12): snapshots give way, uploads that do
not fit are refused with a message the client shows, and the server keeps
starting and serving. The card is a 36 MiB tmpfs, mounted as root."""

import os
import subprocess
from pathlib import Path

import pytest
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, big_collection, wait_for

Changes = SyncCollectionResponse.ChangesRequired
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: run as root")


@pytest.fixture
def card(tmp_path):
    mount = tmp_path / "card"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=36m,mode=0755", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path, leave: int) -> None:
    """Fills the card with `path` until `leave` bytes are left."""
    import shutil

    with open(path, "wb") as out:
        try:
            while shutil.disk_usage(path.parent).free > leave:
                out.write(b"\0" * min(1 << 20, max(4096, shutil.disk_usage(path.parent).free - leave)))
                out.flush()
        except OSError:
            pass


def snapshot_files(data: Path) -> list[str]:
    folder = data / "alice" / "snapshots"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_full_card_refuses_clearly_and_the_server_keeps_serving(server_factory, card, tmp_path):
    server = server_factory(data=card / "leitner").start()
    # Two uploads of a 14 MB collection: the second leaves the first as a raw
    # snapshot that has no room to be compressed.
    first = Device(tmp_path / "first")
    big_collection(first, 14, seed=1)
    auth = first.login(server)
    assert first.sync(auth) == Changes.FULL_UPLOAD
    first.full_sync(auth, upload=True)
    second = Device(tmp_path / "second")
    big_collection(second, 14, seed=2)
    auth2 = second.login(server)
    second.full_sync(auth2, upload=True)
    assert wait_for(lambda: "compressing a snapshot failed" in server.log(), timeout=30), \
        "the compression had room after all: the test no longer tests the full card\n" + server.log()
    assert any(name.endswith(".anki2") for name in snapshot_files(card / "leitner"))

    # A restart (as systemd would after a crash) serves, leftovers and all,
    # even when compressing them finds no room.
    server.stop()
    squeeze = card / "squeeze"
    fill(squeeze, leave=1 << 20)
    server.start()
    squeeze.unlink()
    third = Device(tmp_path / "third")
    third_auth = third.login(server)
    third.full_sync(third_auth, upload=False)
    assert third.col.note_count() == second.col.note_count()

    # A third upload makes room by removing the oldest snapshot first.
    big_collection(first, 1, seed=3)
    first.col.mod_schema(check=False)
    first.full_sync(auth, upload=True)
    assert "removing the oldest snapshot" in server.log()

    # One that cannot fit at all is refused before anything is replaced.
    huge = Device(tmp_path / "huge")
    big_collection(huge, 30, seed=4)
    with pytest.raises(Exception, match="(?i)the server's disk is full"):
        huge.full_sync(huge.login(server), upload=True)
    fresh = Device(tmp_path / "fresh")
    fresh.full_sync(fresh.login(server), upload=False)
    assert fresh.col.note_count() == first.col.note_count()

    # A card filled to the last byte, with no snapshot left to give way: the
    # client is told why, not "disk I/O error".
    for name in snapshot_files(card / "leitner"):
        (card / "leitner" / "alice" / "snapshots" / name).unlink()
    filler = card / "filler"
    fill(filler, leave=0)
    note = first.col.new_note(first.col.models.by_name("Basic"))
    note["Front"] = "after the card filled up"
    first.col.add_note(note, 1)
    with pytest.raises(Exception, match="(?i)the server's disk is full"):
        first.sync(auth)
    filler.unlink()
    assert first.sync(auth) == Changes.NO_CHANGES
    for dev in (first, second, third, huge, fresh):
        dev.close()
