"""Backups on the image (issue 23): a USB drive (a second disk, plugged into
qemu's USB controller) takes the nightly backups; a second night writes
only what changed; a new card with an empty data partition and the same
drive plugged in comes back whole at its first start, and a device that
synced before the backup syncs on with no full sync; a drive pulled out in
the middle of a backup is a clear failure and the next run goes through.

Run by image/test. The tests share one USB drive and go in file order.
"""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from board import IMAGE, Pi, login  # noqa: E402
from anki.sync_pb2 import SyncCollectionResponse  # noqa: E402

from harness import Device, make_rich_collection, wait_for  # noqa: E402

Changes = SyncCollectionResponse.ChangesRequired
WORK = Path(__file__).resolve().parents[2] / "target" / "image-backups"
PASSPHRASE = "a long passphrase kept in a drawer"
MARK = "Ulaanbaatar is the capital of Mongolia"
LEITNER_TXT = (
    "hostname=leitner-test\r\n"
    "user=alice:secret\r\n"
    "ssh_key={ssh_key}\r\n"
    "backup=usb\r\n"
    f"backup_passphrase={PASSPHRASE}\r\n"
)
# The new card: the same drive and passphrase, no users of its own.
NEW_CARD_TXT = (
    "hostname=leitner-test\r\n"
    "ssh_key={ssh_key}\r\n"
    "backup=usb\r\n"
    f"backup_passphrase={PASSPHRASE}\r\n"
)
FIGURES: dict[str, object] = {}
pytestmark = pytest.mark.skipif(not IMAGE, reason="run by image/test")


def usb_disk(path: Path, megabytes=1024, label="LEITNER") -> Path:
    """A USB stick as shops sell them: one FAT32 partition."""
    start = 2048
    fat = path.with_suffix(".fat")
    fat.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", label, "-C", str(fat), str((megabytes - 2) * 1024)],
                   check=True, capture_output=True)
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", f"{megabytes}M", str(path)], check=True)
    subprocess.run(["sfdisk", "-q", str(path)], input=f"start={start},type=c\n", text=True, check=True)
    subprocess.run(["dd", f"if={fat}", f"of={path}", "bs=1M", f"seek={start * 512}", "oflag=seek_bytes",
                    "conv=notrunc,sparse", "status=none"], check=True)
    fat.unlink()
    return path


def add_pictures(dev: Device, count: int, seed: int, size=100_000) -> None:
    rng = random.Random(seed)
    for i in range(count):
        (dev.media_dir / f"photo-{seed}-{i}.jpg").write_bytes(rng.randbytes(size))


def status(pi: Pi) -> dict:
    return json.loads(pi.ssh("sudo leitner status --json").stdout)


def usb_sectors_written(pi: Pi) -> int:
    return int(pi.ssh("cat /sys/block/sda/stat").stdout.split()[6])


def nightly(pi: Pi) -> dict:
    """The timer's next night, brought forward: the clock jumps past it, the
    timer fires, the backup runs; the clock comes back. Returns the run's
    status entry."""
    before = pi.ssh("systemctl show -P InvocationID leitner-backup.service").stdout.strip()
    # Its night, exactly: without the random delay of up to an hour (which
    # systemd draws again when the clock jumps), for this boot only.
    pi.ssh("sudo mkdir -p /run/systemd/system/leitner-backup.timer.d && printf '[Timer]\\nRandomizedDelaySec=0\\n'"
           " | sudo tee /run/systemd/system/leitner-backup.timer.d/test.conf >/dev/null"
           " && sudo systemctl daemon-reload && sudo systemctl restart leitner-backup.timer")
    night = pi.ssh('date -d "$(systemctl show -P NextElapseUSecRealtime leitner-backup.timer)" +%s',
                   check=False).stdout.strip()
    assert night.isdigit(), pi.ssh("systemctl status leitner-backup.timer", check=False).stdout
    pi.ssh(f"sudo date -s @{int(night) + 30} >/dev/null")
    try:
        assert wait_for(lambda: pi.ssh("systemctl show -P InvocationID leitner-backup.service").stdout.strip()
                        not in ("", before), timeout=120, step=2), "the timer did not fire"
        assert wait_for(lambda: pi.ssh("systemctl is-active leitner-backup.service", check=False).stdout.strip()
                        in ("inactive", "failed"), timeout=900, step=3)
    finally:
        pi.ssh(f"sudo date -s @{int(time.time())} >/dev/null")
    return status(pi)["backups"][0]


@pytest.fixture(scope="module")
def drive():
    WORK.mkdir(parents=True, exist_ok=True)
    return usb_disk(WORK / "usb.img")


@pytest.fixture(scope="module")
def pi(drive):
    board = Pi(WORK / "first", usb=drive)
    board.flash(LEITNER_TXT)
    board.power_on()
    yield board
    for each in [board, getattr(State, "new", None)]:
        if each and each.proc and each.proc.poll() is None:
            each.cut_power()
    print("\nfigures:", FIGURES)


class State:
    pass


def test_nightly_backups_to_a_usb_drive_add_only_what_changed(pi, drive, tmp_path_factory):
    dev = Device(tmp_path_factory.mktemp("device") / "a")
    make_rich_collection(dev.col, notes=3000, reviews=300)
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"] = MARK
    dev.col.add_note(note, 1)
    add_pictures(dev, 40, seed=1)
    auth = login(dev, pi)
    dev.full_sync(auth, upload=True)
    dev.sync_media(auth)
    # The drive is not mounted between backups: it may be pulled out.
    assert "/dev/sda" not in pi.ssh("cat /proc/mounts").stdout
    assert PASSPHRASE not in pi.mtools("mtype", "::leitner.txt", text=True)

    sectors = usb_sectors_written(pi)
    first = nightly(pi)
    assert first["last_run"]["ok"], first
    first_written = first["last_run"]["written_bytes"]
    FIGURES["first backup written"] = first_written
    FIGURES["first backup size"] = first["last_run"]["size_bytes"]
    assert "/dev/sda" not in pi.ssh("cat /proc/mounts").stdout

    # A day: reviews and two new pictures.
    done = 0
    while done < 100 and (card := dev.col.sched.getCard()) is not None:
        dev.col.sched.answerCard(card, 3)
        done += 1
    add_pictures(dev, 2, seed=2)
    assert dev.sync(auth) == Changes.NO_CHANGES  # a normal sync, done
    dev.sync_media(auth)
    sectors_between = usb_sectors_written(pi)
    second = nightly(pi)
    assert second["last_run"]["ok"], second
    written = second["last_run"]["written_bytes"]
    FIGURES["second backup written"] = written
    FIGURES["usb sectors written, first night"] = sectors_between - sectors
    FIGURES["usb sectors written, second night"] = usb_sectors_written(pi) - sectors_between
    FIGURES["collection bytes"] = status(pi)["users"][0]["collection_bytes"]
    # Two new pictures (200 kB) and the changed parts of the collection.
    assert written < first_written / 3, FIGURES
    assert written < 200_000 + FIGURES["collection bytes"], FIGURES

    listed = pi.ssh("sudo leitner restore-backup usb --list").stdout
    # Two nights (or one, if the clock's jumps met the same night).
    assert 1 <= listed.count("alice") <= 2, listed
    text = pi.ssh("sudo leitner status").stdout
    assert "usb: last" in text and ", ok (" in text, text
    assert "warning" not in text, text
    pi.shut_down()
    # Nothing on the drive reads: no note, no picture, no SQLite file.
    raw = drive.read_bytes()
    picture = next(dev.media_dir.iterdir()).read_bytes()
    for secret in [MARK.encode(), picture[1000:1064], b"SQLite format 3"]:
        assert secret not in raw, secret
    State.dev, State.auth = dev, auth


def test_a_new_card_comes_back_whole_from_the_drive(drive, tmp_path_factory):
    dev = State.dev
    new = Pi(WORK / "new-card", usb=drive)
    new.flash(NEW_CARD_TXT)
    new.power_on()
    State.new = new
    journal = new.ssh("sudo journalctl -b -u leitner-restore.service -o cat").stdout
    assert "restored 1 user(s)" in journal, journal + new.console()[-3000:]
    assert [u["name"] for u in status(new)["users"]] == ["alice"]

    # The device that synced before the backup: same key, no full sync,
    # nothing to exchange.
    auth = login_with(dev, State.auth, new)
    restored = status(new)["users"][0]
    local = {k: dev.col.db.scalar(f"select count() from {t}") for k, t in
             [("notes", "notes"), ("cards", "cards"), ("reviews", "revlog")]}
    assert {k: restored[k] for k in local} == local, (restored, local, journal)
    dev.sync_media(auth)
    # Another device downloads everything: the same reviews and pictures.
    other = Device(tmp_path_factory.mktemp("other") / "b")
    auth_b = login(other, new)
    other.full_sync(auth_b, upload=False)
    other.sync_media(auth_b)
    assert other.col.db.scalar("select count() from revlog") == dev.col.db.scalar("select count() from revlog")
    assert other.col.find_notes(f'"front:{MARK}"')
    assert other.media_files() == dev.media_files()
    other.close()
    State.auth_new = auth


def login_with(dev: Device, old, pi: Pi):
    from anki.sync_pb2 import SyncAuth

    return SyncAuth(hkey=old.hkey, endpoint=pi.endpoint, io_timeout_secs=120)


def test_a_new_card_restores_from_another_machine_over_ssh():
    """restore=yes, no USB drive: the new card restores from the ssh
    destination at its first start, logging in with the key its passphrase
    gives (the same key the old card had), with no terminal."""
    import shutil

    from harness import start_sshd

    new, dev = State.new, State.dev
    nas = WORK / "nas"
    shutil.rmtree(nas, ignore_errors=True)
    # The guest reaches the host's loopback as 10.0.2.2 (qemu's user network).
    port, authorized, sshd = start_sshd(nas / "sshd")
    third = None
    try:
        dest = f"sftp://root@10.0.2.2:{port}{nas / 'backups'}"
        authorized.write_text(new.ssh("sudo leitner backup-key").stdout)
        out = new.ssh(f"sudo env LEITNER_BACKUP_TO={dest} leitner backup").stdout
        assert f"to {dest}: 1 user(s)" in out, out
        third = Pi(WORK / "third-card")
        third.flash(f"hostname=leitner-test\r\nssh_key={{ssh_key}}\r\nbackup={dest}\r\n"
                    f"backup_passphrase={PASSPHRASE}\r\nrestore=yes\r\n")
        third.power_on()
        journal = third.ssh("sudo journalctl -b -u leitner-restore.service -o cat").stdout
        assert "restored 1 user(s)" in journal and dest in journal, journal
        auth = login_with(dev, State.auth, third)
        assert dev.sync(auth) == Changes.NO_CHANGES
    finally:
        if third and third.proc and third.proc.poll() is None:
            third.cut_power()
        sshd.terminate()
        sshd.wait(10)


def test_a_drive_pulled_out_mid_backup_fails_clearly_and_the_next_run_goes_through(tmp_path_factory):
    new, dev, auth = State.new, State.dev, State.auth_new
    # Enough new pictures that the backup takes a while.
    add_pictures(dev, 120, seed=3, size=500_000)
    dev.sync_media(auth)
    before = pi_backups(new)
    new.ssh("sudo systemctl start --no-block leitner-backup.service")
    # Mounted in the service's own mount namespace.
    assert wait_for(lambda: "/dev/sda" in new.ssh(
        "sudo cat /proc/$(systemctl show -P MainPID leitner-backup.service)/mounts", check=False).stdout,
        timeout=120, step=1)
    time.sleep(3)
    new.pull_usb()
    assert wait_for(lambda: new.ssh("systemctl is-active leitner-backup.service", check=False).stdout.strip()
                    in ("inactive", "failed"), timeout=600, step=3)
    journal = new.ssh("sudo journalctl -b -u leitner-backup.service -o cat").stdout
    assert "backup to usb failed" in journal and "earlier backups there are intact" in journal, journal
    assert "went away" in journal, journal
    got = status(new)["backups"][0]
    assert not got["last_run"]["ok"], got
    FIGURES["pulled out"] = got["last_run"]["message"]

    new.plug_usb()
    assert wait_for(lambda: "LEITNER" in new.ssh("lsblk -o LABEL", check=False).stdout, timeout=60, step=1)
    # The earlier backups read as they did.
    assert pi_backups(new) == before
    again = new.ssh("sudo systemctl start leitner-backup.service", check=False)
    assert again.returncode == 0, new.ssh("sudo journalctl -b -u leitner-backup.service -o cat").stdout
    got = status(new)["backups"][0]
    assert got["last_run"]["ok"], got
    # The new one is the newest (on the same night, the only one kept).
    after = pi_backups(new)
    assert after and after[-1] > before[-1], (before, after)
    new.cut_power()
    dev.close()


def pi_backups(pi: Pi) -> list[str]:
    out = pi.ssh("sudo leitner restore-backup usb --list").stdout
    assert "does not read" not in out, out
    return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
