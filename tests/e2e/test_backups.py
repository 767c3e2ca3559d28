"""Backups to a folder (what the package's owner sets in LEITNER_BACKUP_TO),
driven by real clients: an encrypted backup shows nothing on the drive and
opens only with its passphrase; a full destination is a clear failure in the
journal and in `status`, earlier backups intact, and the next run goes
through; a device that synced after the last backup loses nothing when the
server comes back from it. USB drives are tested on the image
(tests/image/test_backups.py)."""

import json
import os
import random
import subprocess

import pytest
from anki.errors import SyncError
from anki.sync import SyncOutput

from harness import Device, Server, leitner, make_rich_collection

Changes = SyncOutput.ChangesRequired

MARK = "Ulaanbaatar is the capital of Mongolia"


def add_pictures(dev: Device, count: int, seed: int, size=60_000) -> None:
    rng = random.Random(seed)
    for i in range(count):
        (dev.media_dir / f"photo-{seed}-{i}.jpg").write_bytes(rng.randbytes(size))


def synced_device(server, tmp_path, name="a") -> tuple[Device, object]:
    dev = Device(tmp_path / name)
    make_rich_collection(dev.col, notes=100, reviews=20)
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = MARK
    dev.col.add_note(note, 1)
    add_pictures(dev, 5, seed=1)
    auth = dev.login(server)
    dev.full_sync(auth, upload=True)
    dev.sync_media(auth)
    return dev, auth


def serves_what_it_restored(server, tmp_path, dev: Device, media=True) -> None:
    """Starts a server that restored `dev`'s backup; a new device downloads
    the note and (with `media`) every picture `dev` has."""
    server.users = ("alice:secret",)
    server.start()
    try:
        b = Device(tmp_path / "b")
        auth_b = b.login(server)
        b.full_sync(auth_b, upload=False)
        assert b.col.find_notes(f'"front:{MARK}"')
        if media:
            b.sync_media(auth_b)
            assert b.media_files() == dev.media_files()
        b.close()
    finally:
        server.stop()


def status(server) -> dict:
    return json.loads(leitner(server, "status", "--json").stdout)


def test_an_encrypted_backup_shows_nothing_and_opens_only_with_its_passphrase(server_factory, tmp_path):
    dest = tmp_path / "drive"
    dest.mkdir()
    passfile = tmp_path / "passphrase"
    passfile.write_text("correct horse battery staple\n")
    server = server_factory(env={"LEITNER_BACKUP_TO": str(dest),
                                 "LEITNER_BACKUP_PASSPHRASE_FILE": str(passfile)}).start()
    dev, auth = synced_device(server, tmp_path)
    picture = next(dev.media_dir.iterdir()).read_bytes()

    out = leitner(server, "backup").stdout
    assert "(encrypted)" in out, out
    # Nothing on the drive reads as a note, a picture or a user's name.
    for path in dest.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in [MARK.encode(), picture[:64], b"alice", b"SQLite format"]:
                assert secret not in content, (path, secret)
    got = status(server)["backups"]
    assert got[0]["destination"] == str(dest) and got[0]["configured"]
    assert got[0]["last_run"]["ok"] and not got[0]["stale"]

    # Restoring elsewhere: without the passphrase, and with a wrong one, a
    # clear refusal; with it, everything.
    other = Server(tmp_path / "restored", users=())
    other.data.mkdir()
    refused = leitner(other, "restore-backup", dest, check=False)
    assert refused.returncode == 1 and "encrypted" in refused.stderr and "passphrase" in refused.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple horse\n")
    refused = leitner(other, "restore-backup", dest, "--passphrase-file", wrong, check=False)
    assert refused.returncode == 1 and "does not open" in refused.stderr, refused.stderr
    assert list(other.data.iterdir()) == [] or all(p.name.startswith("leitner") for p in other.data.iterdir())
    leitner(other, "restore-backup", dest, "--passphrase-file", passfile)
    serves_what_it_restored(other, tmp_path, dev)
    dev.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs: run as root")
def test_a_full_destination_fails_clearly_and_the_next_run_goes_through(server_factory, tmp_path):
    dest = tmp_path / "small"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(dest)], check=True)
    try:
        server = server_factory(env={"LEITNER_BACKUP_TO": str(dest)}).start()
        dev, auth = synced_device(server, tmp_path)
        leitner(server, "backup")
        first = leitner(server, "restore-backup", "--list").stdout

        # Pictures that do not fit.
        add_pictures(dev, 60, seed=2)
        dev.sync_media(auth)
        full = leitner(server, "backup", check=False)
        assert full.returncode == 1
        assert "the destination is full" in full.stderr and "earlier backups" in full.stderr, full.stderr
        got = status(server)["backups"][0]
        assert not got["last_run"]["ok"] and "full" in got["last_run"]["message"]
        assert got["last_good"]["ok"] and not got["stale"]
        text = leitner(server, "status").stdout
        assert "FAILED: " in text and "full" in text, text
        # The earlier backup is intact (and still the only one).
        assert leitner(server, "restore-backup", "--list").stdout == first

        # Room made: the next run goes through.
        subprocess.run(["mount", "-o", "remount,size=30m", str(dest)], check=True)
        leitner(server, "backup")
        got = status(server)["backups"][0]
        assert got["last_run"]["ok"]
        dev.close()
    finally:
        subprocess.run(["umount", "-l", str(dest)], check=True)


def test_a_device_that_synced_after_the_backup_loses_nothing(server_factory, tmp_path):
    dest = tmp_path / "drive"
    dest.mkdir()
    server = server_factory(env={"LEITNER_BACKUP_TO": str(dest)}).start()
    a, auth_a = synced_device(server, tmp_path, "a")
    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)
    b.sync_media(auth_b)
    leitner(server, "backup")

    # After the backup, device a reviews and syncs; then the card dies.
    note = a.col.new_note(a.col.models.by_name("Basic"))
    note["Front"] = "learnt after the backup"
    a.col.add_note(note, 1)
    a.sync(auth_a)
    server.stop()
    for path in sorted(server.data.iterdir(), reverse=True):
        subprocess.run(["rm", "-rf", str(path)], check=True)

    # A new card: the backup restored.
    leitner(server, "restore-backup")
    server.start()
    # Device b, synced before the backup: a normal sync, nothing lost.
    assert b.sync(auth_b) == Changes.NO_CHANGES
    # Device a has what the backup lacks: its sync stops with the client's
    # usual advice, then the client asks its owner for a full sync, and
    # uploading keeps the newer note.
    with pytest.raises(SyncError):
        a.sync(auth_a)
    assert a.sync(auth_a) in (Changes.FULL_SYNC, Changes.FULL_UPLOAD)
    a.full_sync(auth_a, upload=True)
    assert b.sync(auth_b) in (Changes.FULL_SYNC, Changes.FULL_DOWNLOAD)
    b.full_sync(auth_b, upload=False)
    assert b.col.find_notes('"front:learnt after the backup"')
    a.close()
    b.close()


@pytest.fixture
def sshd(tmp_path):
    """A NAS: an ssh server on 127.0.0.1 (harness.start_sshd)."""
    from harness import start_sshd

    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and openssh-server (tests/run installs it)")
    port, authorized, proc = start_sshd(tmp_path / "sshd")
    yield port, authorized
    proc.terminate()
    proc.wait(10)


def test_backups_to_another_machine_over_ssh(server_factory, tmp_path, sshd):
    port, authorized = sshd
    remote = tmp_path / "on-the-nas"
    dest = f"sftp://root@127.0.0.1:{port}{remote}"
    server = server_factory(env={"LEITNER_BACKUP_TO": dest}).start()
    dev, auth = synced_device(server, tmp_path)

    # The host does not know this Pi's key yet: the message says what to do.
    refused = leitner(server, "backup", check=False)
    assert refused.returncode == 1 and "backup-key" in refused.stderr, refused.stderr
    key = leitner(server, "backup-key").stdout.strip()
    assert key.startswith("ssh-ed25519 ")
    authorized.write_text(key + "\n")
    out = leitner(server, "backup").stdout
    assert "1 user(s)" in out, out
    assert (remote / "leitner-backups" / "repository.json").exists()
    again = leitner(server, "backup").stdout
    assert "(0 new chunks)" in again, again
    assert status(server)["backups"][0]["last_run"]["ok"]

    # Restored elsewhere from the same host (with that server's own key).
    other = Server(tmp_path / "restored", users=())
    other.data.mkdir()
    authorized.write_text(key + "\n" + leitner(other, "backup-key").stdout)
    leitner(other, "restore-backup", dest)
    serves_what_it_restored(other, tmp_path, dev)
    dev.close()


def test_an_unreachable_host_is_a_clear_failure(server_factory, tmp_path):
    from harness import free_port

    closed = free_port()
    server = server_factory(env={"LEITNER_BACKUP_TO": f"sftp://root@127.0.0.1:{closed}/srv/x"}).start()
    dev, auth = synced_device(server, tmp_path)
    failed = leitner(server, "backup", check=False)
    assert failed.returncode == 1
    assert "Connection refused" in failed.stderr and "earlier backups" in failed.stderr, failed.stderr
    got = status(server)["backups"][0]
    assert not got["last_run"]["ok"] and "Connection refused" in got["last_run"]["message"]
    assert got["stale"]
    assert "warning" in leitner(server, "status").stdout
    dev.close()


def test_a_new_system_with_the_same_passphrase_restores_over_ssh_at_once(server_factory, tmp_path, sshd):
    """The key comes from the passphrase: a new card given it logs in as the
    old one did, so restore=yes needs no terminal."""
    port, authorized = sshd
    dest = f"sftp://root@127.0.0.1:{port}{tmp_path / 'nas'}"
    passfile = tmp_path / "passphrase"
    passfile.write_text("a long passphrase kept in a drawer\n")
    env = {"LEITNER_BACKUP_TO": dest, "LEITNER_BACKUP_PASSPHRASE_FILE": str(passfile)}
    server = server_factory(env=env).start()
    dev, auth = synced_device(server, tmp_path)
    authorized.write_text(leitner(server, "backup-key").stdout)
    assert "(encrypted)" in leitner(server, "backup").stdout

    new = Server(tmp_path / "new-card", users=(), env=env)
    new.data.mkdir()
    assert leitner(new, "backup-key").stdout == leitner(server, "backup-key").stdout
    out = leitner(new, "restore-backup", "--if-empty", dest).stdout
    assert "restored 1 user(s)" in out, out
    serves_what_it_restored(new, tmp_path, dev, media=False)
    dev.close()
