"""Managing a running server over ssh: `leitner user|status|snapshot|backup|
check` beside real clients (issue 9)."""

import hashlib
import os
import json
import signal
import sqlite3
import subprocess
import threading

import pytest
from anki.errors import SyncError, SyncErrorKind
from anki.sync_pb2 import SyncCollectionResponse

from harness import BINARY, Device, Server, dump, leitner, make_rich_collection, open_db

Changes = SyncCollectionResponse.ChangesRequired


def refused(fn) -> None:
    with pytest.raises(SyncError) as err:
        fn()
    assert err.value.kind == SyncErrorKind.AUTH


def add_media(dev: Device, count: int, prefix="pic") -> None:
    for i in range(count):
        (dev.media_dir / f"{prefix}{i}.jpg").write_bytes(hashlib.sha256(f"{prefix}{i}".encode()).digest() * (50 + i))


def test_users_change_while_the_server_runs(server_factory, tmp_path):
    server = server_factory(users=()).start()
    dev = Device(tmp_path / "a")
    refused(lambda: dev.login(server, "bob", "first"))

    # Added while serving: logs in at once, no restart.
    out = leitner(server, "user", "add", "bob", "--password-stdin", stdin="first\n")
    assert "added user 'bob'" in out.stdout
    auth = dev.login(server, "bob", "first")
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = "bob's note"
    dev.col.add_note(note, 1)
    assert dev.sync(auth) == Changes.FULL_UPLOAD
    dev.full_sync(auth, upload=True)
    assert dev.sync(auth) == Changes.NO_CHANGES

    # A new password retires the old host key: the device must log in again.
    leitner(server, "user", "passwd", "bob", "--password-stdin", stdin="second\n")
    refused(lambda: dev.sync(auth))
    refused(lambda: dev.login(server, "bob", "first"))
    auth = dev.login(server, "bob", "second")
    assert dev.sync(auth) == Changes.NO_CHANGES

    listed = leitner(server, "user", "list").stdout
    assert "bob" in listed and "store" in listed

    # Removed: the password and the host key stop working at once; the data stays.
    out = leitner(server, "user", "remove", "bob")
    assert "data stays" in out.stdout
    refused(lambda: dev.sync(auth))
    refused(lambda: dev.login(server, "bob", "second"))
    assert (server.data / "bob" / "collection.anki2").exists()

    # Bad input: one line, non-zero, nothing half-written.
    for args, stdin, needle in [
        (("user", "add", "../evil", "--password-stdin"), "pw\n", "cannot be a user"),
        (("user", "add", "leitner-users.json", "--password-stdin"), "pw\n", "cannot be a user"),
        (("user", "add", "carol", "--password-stdin"), "x" * 1025 + "\n", "longer than 1024"),
        (("user", "add", "carol", "--password-stdin"), "\n", "empty"),
        (("user", "passwd", "nobody", "--password-stdin"), "pw\n", "no user 'nobody'"),
        (("user", "remove", "nobody"), None, "no user 'nobody'"),
        (("user", "frobnicate", "x"), None, "unknown action"),
        (("snapshot", "list", "nobody"), None, "no user 'nobody'"),
        (("snapshot", "restore", "bob", "12345"), None, "no snapshot 12345"),
        (("snapshot", "restore", "bob", "latest"), None, "is a number"),
    ]:
        done = leitner(server, *args, stdin=stdin, check=False)
        assert done.returncode != 0, args
        assert needle in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
    assert not (server.data / "carol").exists()
    assert [p.name for p in server.data.iterdir() if "tmp" in p.name] == []
    dev.close()


def test_delete_data_while_the_server_holds_it(server_factory, tmp_path):
    server = server_factory(users=()).start()
    leitner(server, "user", "add", "dora", "--password-stdin", stdin="pw\n")
    dev = Device(tmp_path / "d")
    auth = dev.login(server, "dora", "pw")
    dev.col.add_note(dev.col.new_note(dev.col.models.by_name("Basic")), 1)
    dev.full_sync(auth, upload=True)
    assert dev.sync(auth) == Changes.NO_CHANGES  # the server has her collection open
    done = leitner(server, "user", "remove", "dora", "--delete-data", check=False)
    assert done.returncode != 0 and "--yes" in done.stderr  # no terminal to ask on
    assert (server.data / "dora").exists()
    leitner(server, "user", "remove", "dora", "--delete-data", "--yes")
    assert not (server.data / "dora").exists()
    refused(lambda: dev.sync(auth))
    # The name can come back, with a fresh, empty account.
    leitner(server, "user", "add", "dora", "--password-stdin", stdin="pw2\n")
    fresh = Device(tmp_path / "fresh")
    auth = fresh.login(server, "dora", "pw2")
    assert fresh.sync(auth) == Changes.NO_CHANGES
    dev.close()
    fresh.close()


def test_a_name_in_both_places_stops_the_start(server_factory, tmp_path):
    server = server_factory(users=())
    server.data.mkdir(parents=True)
    leitner(server, "user", "add", "alice", "--password-stdin", stdin="pw\n")
    server.users = ("alice:other",)
    with pytest.raises(RuntimeError, match="defined twice"):
        server.start()
    # And the command refuses to shadow a SYNC_USERn user.
    done = leitner(server, "user", "add", "alice", "--password-stdin", stdin="pw\n", check=False)
    assert done.returncode == 1 and "SYNC_USER1" in done.stderr


def test_status_reports_the_server_and_each_user(server, tmp_path):
    dev = Device(tmp_path / "a")
    make_rich_collection(dev.col, notes=40, reviews=10)
    add_media(dev, 3)
    auth = dev.login(server)
    dev.full_sync(auth, upload=True)
    dev.sync_media(auth)

    status = json.loads(leitner(server, "status", "--json").stdout)
    assert status["server"] == "running" and status["server_pid"] == server.proc.pid
    assert status["disk_free_bytes"] > 0
    [alice] = status["users"]
    assert alice["name"] == "alice" and alice["source"] == "SYNC_USER1"
    assert (alice["notes"], alice["cards"], alice["reviews"]) == (40, dev.col.card_count(), 10)
    assert alice["media_files"] == 3 and alice["media_bytes"] > 0
    assert alice["collection_bytes"] > 0
    assert alice["last_sync_ms"] > 0 and alice["last_sync_client"]
    text = leitner(server, "status").stdout
    assert "running (pid" in text and "alice" in text and "SYNC_USER1" in text

    # Stopped, it still answers, from what the server saved when it stopped.
    server.stop()
    status = json.loads(leitner(server, "status", "--json").stdout)
    assert status["server"] in ("stopped", "idle")
    assert status["users"][0]["last_sync_client"] == alice["last_sync_client"]
    dev.close()


def test_snapshot_restore_undoes_a_wrong_full_upload(server_factory, tmp_path):
    server = server_factory().start()
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=100, reviews=30)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    assert a.sync(auth) == Changes.NO_CHANGES
    a.close()
    volatile = ("mod", "scm", "ls", "usn")  # a restore sets new times; a download resets usns
    good = dump(a.path, skip_columns=volatile)
    a = Device(tmp_path / "a")

    # The daily timer's job: a snapshot, then none while nothing changes.
    assert "alice: snapshot" in leitner(server, "snapshot", "take", "--all").stdout
    assert "unchanged" in leitner(server, "snapshot", "take", "alice").stdout

    # A wrong full upload from an empty client replaces everything.
    empty = Device(tmp_path / "empty")
    auth_e = empty.login(server)
    empty.col.mod_schema(check=False)
    empty.full_sync(auth_e, upload=True)
    assert a.sync(auth) == Changes.FULL_UPLOAD  # the server's collection is empty now

    listing = leitner(server, "snapshot", "list", "alice").stdout.splitlines()
    rows = [line.split() for line in listing[1:]]
    with_notes = [r for r in rows if r[5] == "100"]  # ID, date, time, UTC, KIND, NOTES, ...
    assert with_notes, listing
    snapshot_id = with_notes[-1][0]
    out = leitner(server, "snapshot", "restore", "alice", snapshot_id).stdout
    assert "choose Download" in out

    # Every device must do a full sync; downloading gives the collection back.
    assert a.sync(auth) == Changes.FULL_SYNC
    a.full_sync(auth, upload=False)
    assert a.sync(auth) == Changes.NO_CHANGES
    assert a.col.note_count() == 100
    assert a.col.db.scalar("pragma integrity_check") == "ok"
    fresh = Device(tmp_path / "fresh")
    auth_f = fresh.login(server)
    assert fresh.sync(auth_f) == Changes.FULL_DOWNLOAD
    fresh.full_sync(auth_f, upload=False)
    for dev in (a, fresh, empty):
        dev.close()
    for dev in (a, fresh):
        restored = dump(dev.path, skip_columns=volatile)
        for table in good:
            assert restored[table] == good[table], table

    # The collection the restore replaced (the empty one) is a snapshot too.
    kinds = [line.split()[4] for line in leitner(server, "snapshot", "list", "alice").stdout.splitlines()[1:]]
    assert kinds[-1] == "restore"


def test_backup_during_syncs_restores_intact(server_factory, tmp_path):
    server = server_factory().start()
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=200, reviews=50)
    add_media(a, 30)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    a.sync_media(auth)
    leitner(server, "user", "add", "bob", "--password-stdin", stdin="pw\n")

    # Syncs run while the backup is taken.
    stop = threading.Event()
    errors = []

    def keep_syncing():
        try:
            round = 0
            while not stop.is_set() and round < 20:
                note = a.col.new_note(a.col.models.by_name("Basic"))
                note["Front"] = f"during backup {round}"
                a.col.add_note(note, 1)
                add_media(a, 2, prefix=f"round{round}-")
                a.sync(auth)
                a.sync_media(auth)
                round += 1
        except Exception as e:  # reported below
            errors.append(f"{type(e).__name__}: {e}")

    syncing = threading.Thread(target=keep_syncing)
    syncing.start()
    dest = tmp_path / "backups"
    dest.mkdir()
    out = leitner(server, "backup", dest).stdout
    stop.set()
    syncing.join()
    assert not errors, (errors, server.log())
    assert (dest / "leitner-backups" / "repository.json").exists()
    assert " to " in out and "2 user(s)" in out, out
    # Nothing changed since the last one: nothing new is written, and no
    # media file is read again.
    leitner(server, "backup", dest)
    again = leitner(server, "backup", dest).stdout
    assert "(0 new chunks), read " in again, again
    # Three in one day: the newest of the day is kept.
    listed = leitner(server, "restore-backup", dest, "--list").stdout
    assert len(listed.splitlines()) == 1 + 1 + 1, listed

    # Restored into an empty data folder, served, and downloaded by a client.
    other = Server(tmp_path / "restored", users=("alice:secret",))
    other.data.mkdir()
    archive = dest
    leitner(other, "restore-backup", archive)
    check = leitner(other, "check")
    assert "alice: ok" in check.stdout and "bob: ok" in check.stdout
    other.start()
    try:
        b = Device(tmp_path / "b")
        auth_b = b.login(other)
        assert b.sync(auth_b) == Changes.FULL_DOWNLOAD
        b.full_sync(auth_b, upload=False)
        b.sync_media(auth_b)
        assert b.col.db.scalar("pragma integrity_check") == "ok"
        assert 200 <= b.col.note_count() <= 220
        # The media the restored server lists is exactly the files it has.
        db = sqlite3.connect(other.data / "alice" / "media.db")
        listed = {name: csum.hex() for name, csum in db.execute("select fname, csum from media where size > 0")}
        db.close()
        assert listed and b.media_files() == listed
        assert b.media_files().items() <= a.media_files().items()
        # bob came back from the users store with his password.
        Device(tmp_path / "bob").login(other, "bob", "pw")
        b.close()
    finally:
        other.stop()

    # Onto a data folder that has users, it needs the server stopped and --replace.
    done = leitner(server, "restore-backup", archive, check=False)
    assert done.returncode == 1 and "stop it first" in done.stderr
    a.close()


def test_check_repair_mends_a_half_applied_media_batch(server, tmp_path):
    a = Device(tmp_path / "a")
    add_media(a, 10)
    auth = a.login(server)
    a.sync(auth)
    a.sync_media(auth)
    expected = a.media_files()
    assert leitner(server, "check").stdout.strip() == "alice: ok"

    # A power cut after a batch committed, before its files were renamed in:
    # the committed rows name files still in the staging folder.
    server.stop(signal.SIGKILL)
    user = server.data / "alice"
    staged = ["pic3.jpg", "pic7.jpg"]
    db = sqlite3.connect(user / "media.db")
    db.execute("delete from leitner_owed")
    for i, name in enumerate(staged):
        (user / "media" / name).rename(user / "media.incoming" / f"crash-{i}")
        db.execute("insert into leitner_owed (batch, fname, staged, usn) "
                   "select 1000, fname, ?, usn from media where fname = ?", (f"crash-{i}", name))
    db.commit()
    db.close()
    # An old client's upload arrives in the data folder itself, before its
    # user is known; what a killed server left there goes at start.
    left = server.data / "upload.4194303-2.leitner-tmp"
    left.write_bytes(b"half an old client's upload")
    server.start()  # running, with the media store not yet opened
    assert not left.exists()
    # Litter of a process that died (its pid in the name), which a live
    # server's writes in progress never are.
    (user / "upload.4194303-1.leitner-tmp").write_bytes(b"half an upload")
    found = leitner(server, "check", check=False)
    assert found.returncode == 1
    assert "not done" in found.stdout and "missing" in found.stdout and "temporary" in found.stdout
    mended = leitner(server, "check", "--repair")
    assert "repaired" in mended.stdout and "alice: ok" in mended.stdout
    assert sorted(p.name for p in (user / "media").iterdir()) == sorted(expected)

    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)
    b.sync_media(auth_b)
    assert b.media_files() == expected
    a.close()
    b.close()


def test_every_command_has_help_that_matches_the_readme(server):
    from harness import ROOT

    readme = (ROOT / "README.md").read_text()
    for command in ["user", "status", "snapshot", "backup", "restore-backup", "backup-key", "check"]:
        out = leitner(server, command, "--help").stdout
        assert out.startswith("usage: leitner " + command), out
        for line in out.splitlines():
            if line.startswith(("usage:", "       leitner")):
                usage = line.replace("usage:", "").strip()
                assert usage in readme, f"README lacks: {usage}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo leitner` on the appliance")
def test_as_root_a_command_acts_as_the_data_owner(server_factory):
    # The service's user owns the data; the admin runs `sudo leitner ...`.
    import shutil
    import tempfile
    from pathlib import Path

    owner = 65534  # nobody
    # Like /var/lib: a folder the owner can reach (pytest's is root's alone).
    tmp_path = Path(tempfile.mkdtemp(prefix="leitner-owner-"))
    tmp_path.chmod(0o755)
    try:
        as_owner(server_factory, tmp_path, owner)
    finally:
        shutil.rmtree(tmp_path)


def as_owner(server_factory, tmp_path, owner):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, owner, owner)
    server = server_factory(users=(), data=data)
    leitner(server, "user", "add", "eve", "--password-stdin", stdin="pw\n")
    for path in [data / "leitner-users.json", data / "eve"]:
        assert path.stat().st_uid == owner, path
    # Backups go where only root may write, and the service's user cannot
    # change them; reading them back likewise.
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    leitner(server, "backup", vault)
    assert all(p.stat().st_uid == 0 for p in vault.rglob("*"))
    assert [p.name for p in data.iterdir() if "tmp" in p.name] == []
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, owner, owner)
    restored = Server(other, users=())
    leitner(restored, "restore-backup", vault)
    assert all(p.stat().st_uid == owner for p in other.rglob("*")), list(other.rglob("*"))


def test_a_data_folder_from_a_newer_leitner_is_not_touched(server_factory, tmp_path):
    """The guard behind going back to an older system (issue 21): the data
    format is recorded once, and a leitner older than the data refuses it."""
    server = server_factory().start()
    dev = Device(tmp_path / "a")
    make_rich_collection(dev.col, notes=20, reviews=5)
    auth = dev.login(server)
    assert dev.sync(auth) == Changes.FULL_UPLOAD
    dev.full_sync(auth, upload=True)
    server.stop()
    ours = leitner(server, "data-format").stdout.strip()
    assert (server.data / "leitner-format").read_text() == f"{ours}\n"

    # As if a newer leitner had used the folder, then the system went back.
    (server.data / "leitner-format").write_text(f"{int(ours) + 1}\n")
    before = dump(server.data / "alice" / "collection.anki2")
    refusal = subprocess.run([str(BINARY)], env=server.env(), capture_output=True, text=True, timeout=30)
    assert refusal.returncode != 0
    assert "written by a newer leitner" in refusal.stderr, refusal.stderr
    assert dump(server.data / "alice" / "collection.anki2") == before

    # Back in its own format, it serves the same collection.
    (server.data / "leitner-format").write_text(f"{ours}\n")
    server.start()
    assert dev.sync(auth) == Changes.NO_CHANGES


def test_the_system_command_needs_the_image(server_factory):
    server = server_factory()
    done = leitner(server, "system", "status", check=False)
    assert done.returncode == 1
    assert "update it with apt" in done.stderr
