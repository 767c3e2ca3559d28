"""Devices (issue 24): each login is a device the owner can see and revoke,
with the real Anki client."""

import hashlib
import json
import signal

from anki.buildinfo import version as ANKI_VERSION
import pytest
from anki.errors import SyncError, SyncErrorKind
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, leitner

Changes = SyncCollectionResponse.ChangesRequired


def devices(server, user=None) -> list[dict]:
    status = json.loads(leitner(server, "status", "--json").stdout)
    return [d for u in status["users"] if user in (None, u["name"]) for d in u["devices"]]


def refused(dev: Device, auth) -> None:
    with pytest.raises(SyncError) as err:
        dev.sync(auth)
    assert err.value.kind == SyncErrorKind.AUTH


def test_two_devices_are_listed_and_one_is_revoked(server, tmp_path):
    phone, laptop = Device(tmp_path / "phone"), Device(tmp_path / "laptop")
    auth_p, auth_l = phone.login(server), laptop.login(server)
    assert auth_p.hkey != auth_l.hkey
    for dev, auth in ((phone, auth_p), (laptop, auth_l)):
        assert dev.sync(auth) == Changes.NO_CHANGES

    # Both listed, with the client's version (from its `meta`).
    listed = devices(server, "alice")
    assert len(listed) == 2, listed
    assert {d["state"] for d in listed} == {"active"}
    assert all(d["client"].startswith(f"Anki {ANKI_VERSION} (Linux") for d in listed), listed
    assert all(d["address"] == "127.0.0.1" and d["last_sync_ms"] for d in listed), listed
    table = leitner(server, "device", "list", "alice").stdout
    assert table.count(f"Anki {ANKI_VERSION}") == 2, table
    # No key, nor its hash, in what the owner sees.
    for key in (auth_p.hkey, auth_l.hkey):
        hashed = hashlib.sha256(key.encode()).hexdigest()
        for secret in (key, hashed):
            assert secret not in table and secret not in json.dumps(listed)

    # The phone is lost: revoked by its id (it logged in first), it must log
    # in again; the laptop syncs on.
    phone_id, laptop_id = (d["id"] for d in sorted(listed, key=lambda d: d["first_ms"]))
    out = leitner(server, "device", "revoke", "alice", phone_id).stdout
    assert "log in again" in out, out
    refused(phone, auth_p)
    note = laptop.col.new_note(laptop.col.models.by_name("Basic"))
    note["Front"] = "after the revocation"
    laptop.col.add_note(note, 1)
    assert laptop.sync(auth_l) == Changes.FULL_UPLOAD
    laptop.full_sync(auth_l, upload=True)
    state = {d["id"]: d["state"] for d in devices(server, "alice")}
    assert state == {phone_id: "revoked", laptop_id: "active"}
    again = leitner(server, "device", "revoke", "alice", phone_id, check=False)
    assert again.returncode == 1 and "no device" in again.stderr

    # Logging in again makes it a new device; it syncs and gets the note.
    auth_p = phone.login(server)
    assert phone.sync(auth_p) == Changes.FULL_DOWNLOAD
    phone.full_sync(auth_p, upload=False)
    assert phone.col.note_count() == 1
    assert len([d for d in devices(server, "alice") if d["state"] == "active"]) == 2

    # --all cuts every device off.
    leitner(server, "device", "revoke", "alice", "--all")
    refused(phone, auth_p)
    refused(laptop, auth_l)
    phone.close()
    laptop.close()


def test_a_new_password_retires_every_device(server, tmp_path):
    leitner(server, "user", "add", "bob", "--password-stdin", stdin="one\n")
    a, b = Device(tmp_path / "a"), Device(tmp_path / "b")
    auth_a, auth_b = a.login(server, "bob", "one"), b.login(server, "bob", "one")
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert b.sync(auth_b) == Changes.NO_CHANGES
    assert len(devices(server, "bob")) == 2
    leitner(server, "user", "passwd", "bob", "--password-stdin", stdin="two\n")
    refused(a, auth_a)
    refused(b, auth_b)
    assert devices(server, "bob") == []
    assert a.sync(a.login(server, "bob", "two")) == Changes.NO_CHANGES
    a.close()
    b.close()


def test_keys_from_the_official_server_keep_working(server_factory, tmp_path):
    """A user moving from the official server: their devices hold the key it
    derived from the password, and sync on without logging in."""
    server = server_factory(users=("alice:secret",)).start()
    leitner(server, "user", "add", "bob", "--password-stdin", stdin="pw\n")
    stored = json.loads((server.data / "leitner-users.json").read_text())
    bob_phc = next(u["password"] for u in stored["users"] if u["name"] == "bob")
    official = {
        # The official server's derivation: SHA-1 of "user:password" as
        # configured (with PASSWORDS_HASHED, the PHC string is the password).
        "alice": hashlib.sha1(b"alice:secret").hexdigest(),
        "bob": hashlib.sha1(f"bob:{bob_phc}".encode()).hexdigest(),
    }
    for user, key in official.items():
        dev = Device(tmp_path / user)
        auth = server.auth(key)
        assert dev.sync(auth) == Changes.NO_CHANGES
        assert dev.sync(auth) == Changes.NO_CHANGES
        moved = devices(server, user)
        assert [d["origin"] for d in moved] == ["moved"], moved
        assert "key from the official server" in leitner(server, "device", "list", user).stdout
        # Revoked like any other device.
        leitner(server, "device", "revoke", user, moved[0]["id"])
        refused(dev, auth)
        dev.close()


def test_devices_survive_a_restart_and_a_kill(server, tmp_path):
    dev = Device(tmp_path / "a")
    auth = dev.login(server)
    assert dev.sync(auth) == Changes.NO_CHANGES
    before = devices(server, "alice")
    server.stop()
    after = devices(server, "alice")
    assert [d["id"] for d in after] == [d["id"] for d in before]
    assert after[0]["last_sync_ms"], after  # saved at exit
    server.start()
    assert dev.sync(auth) == Changes.NO_CHANGES
    server.stop(signal.SIGKILL)
    server.start()
    # Killed: only the time of the last sync is lost, never the device.
    assert dev.sync(auth) == Changes.NO_CHANGES
    assert [d["id"] for d in devices(server, "alice")] == [d["id"] for d in before]
    dev.close()


def test_revoking_all_shuts_out_the_official_key_for_good(server_factory, tmp_path):
    """`--all` cuts off the official server's key even before any device
    used it, and the revocation holds however many devices come after, and
    across a restore of a backup taken before it."""
    dest = tmp_path / "drive"
    dest.mkdir()
    server = server_factory(env={"LEITNER_BACKUP_TO": str(dest)}).start()
    official = server.auth(hashlib.sha1(b"alice:secret").hexdigest())
    phone = Device(tmp_path / "phone")
    auth_phone = phone.login(server)
    assert phone.sync(auth_phone) == Changes.NO_CHANGES
    leitner(server, "backup")

    leitner(server, "device", "revoke", "alice", "--all")
    old = Device(tmp_path / "old")
    refused(old, official)
    refused(phone, auth_phone)
    # Eleven logins later (more revoked records than are kept), still out.
    for i in range(11):
        dev = Device(tmp_path / f"d{i}")
        dev.login(server)
        dev.close()
    leitner(server, "device", "revoke", "alice", "--all")
    refused(old, official)

    # The card dies and the backup (from before the revocation) comes back:
    # the lost phone and the official key stay out; a new login works.
    server.stop()
    out = leitner(server, "restore-backup", "--replace").stdout
    assert "logins and revocations since the backup stand" in out, out
    server.start()
    refused(phone, auth_phone)
    refused(old, official)
    assert old.sync(old.login(server)) == Changes.NO_CHANGES
    phone.close()
    old.close()
