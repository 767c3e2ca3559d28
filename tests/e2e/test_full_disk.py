"""A small SD card fills up (issue 12): snapshots give way, uploads that do
not fit are refused with a message the client shows, and the server keeps
starting and serving. The card is a 36 MiB tmpfs, mounted as root."""

import os
import subprocess
from pathlib import Path

import pytest
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, big_collection, make_rich_collection, wait_for

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


def test_meta_media_and_normal_syncs_on_a_full_card_say_why(server_factory, card, tmp_path):
    # Issue 27: each step a full card can stop says so in words the client
    # shows (or, where the client reads no words, in the status), and nothing
    # is kept of what was refused.
    server = server_factory(data=card / "leitner").start()
    dev = Device(tmp_path / "dev")
    make_rich_collection(dev.col, notes=20, reviews=5)
    auth = dev.login(server)
    dev.full_sync(auth, upload=True)
    dev.col.media.write_data("first.txt", b"first")
    dev.sync_media(auth)

    # A fresh process on a card filled to the last byte: nothing is open, and
    # SQLite cannot even create the files it reads through.
    server.stop()
    filler = card / "filler"
    fill(filler, leave=0)
    server.start()
    with pytest.raises(Exception, match="(?i)the server's disk is full"):
        dev.sync(auth)
    dev.col.media.write_data("second.bin", os.urandom(2 << 20))
    with pytest.raises(Exception, match="(?i)the server's disk is full"):
        dev.sync_media(auth)

    # Room to begin a media sync, not for the batch: the upload is refused
    # in words too.
    filler.unlink()
    fill(filler, leave=512 << 10)
    with pytest.raises(Exception, match="(?i)the server's disk is full") as refused:
        dev.sync_media(auth)
    print(f"\nthe client says: {refused.value}")
    assert "msync/uploadChanges" in server.log()

    # Room enough for meta's check, not for what the sync brings: the step
    # that meets the full card gets 507, and the sync is rolled back.
    filler.unlink()
    fill(filler, leave=(1 << 20) + (256 << 10))
    basic = dev.col.models.by_name("Basic")
    for i in range(400):
        note = dev.col.new_note(basic)
        note["Front"] = f"{i} " + os.urandom(4000).hex()
        dev.col.add_note(note, 1)
    with pytest.raises(Exception, match="507") as refused:
        dev.sync(auth)
    print(f"the client says: {refused.value}")
    assert "sync/finish 507" in server.log() or "applyChunk 507" in server.log()
    # The next sync stops at meta, in words, until there is more room.
    with pytest.raises(Exception, match="(?i)the server's disk is full"):
        dev.sync(auth)
    filler.unlink()

    # Room again: nothing of the refused steps was kept, and all syncs on.
    other = Device(tmp_path / "other")
    other_auth = other.login(server)
    other.full_sync(other_auth, upload=False)
    assert other.col.note_count() == 20
    assert dev.sync(auth) == Changes.NO_CHANGES
    dev.sync_media(auth)
    other.sync(other_auth)
    other.sync_media(other_auth)
    assert other.col.note_count() == 420
    assert sorted(other.media_files()) == ["first.txt", "second.bin"]
    dev.close()
    other.close()
