"""The flashable image, booted under qemu-system-aarch64 (issue 11).

Run by image/test. The tests share one device and go in file order, as its
owner would: first boot from a card with leitner.txt filled in, syncing,
ssh, an idle spell, a reboot, a power cut in the middle of a sync.
"""

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from board import IMAGE, Pi, login  # noqa: E402
from anki.sync_pb2 import SyncCollectionResponse  # noqa: E402

from harness import Device, assert_same, make_rich_collection, wait_for  # noqa: E402

Changes = SyncCollectionResponse.ChangesRequired
WORK = Path(__file__).resolve().parents[2] / "target" / "image-test"
SETTLE_SECS = 120  # /data's commit=60 s, then the metadata written home
IDLE_EXIT_SECS = 300  # leitner's default LEITNER_IDLE_EXIT_SECS
IDLE_SECS = int(os.environ.get("LEITNER_IMAGE_IDLE_SECS", "150"))
FIGURES: dict[str, str] = {}
pytestmark = pytest.mark.skipif(not IMAGE, reason="run by image/test")


LEITNER_TXT = (
    "# edited on a laptop\r\n"
    "hostname=leitner-test\r\n"
    "user=alice:secret\r\n"
    "ssh_key={ssh_key}\r\n"
    "timezone=Europe/Berlin\r\n"
    "this line is a mistake\r\n"
    # qemu's board has no Wi-Fi: the first boot must say so, not go quiet.
    "wifi_country=DE\r\n"
    "wifi_ssid=Home\r\n"
    "wifi_password=home-passphrase\r\n"
)


@pytest.fixture(scope="module")
def pi():
    board = Pi(WORK)
    board.flash(LEITNER_TXT)
    yield board
    if board.proc and board.proc.poll() is None:
        board.cut_power()
    print("\nfigures:", FIGURES)


class State:
    pass


def test_first_boot_applies_leitner_txt(pi, tmp_path_factory):
    started = time.monotonic()
    FIGURES["first boot to ssh"] = f"{pi.power_on():.0f} s"
    assert pi.ssh("pgrep -x leitner", check=False).returncode != 0, "runs before any connection"
    assert pi.ssh("hostname").stdout.strip() == "leitner-test"
    assert pi.ssh("readlink -f /etc/localtime").stdout.strip().endswith("Europe/Berlin")
    journal = pi.ssh("sudo journalctl -b -u leitner-firstboot --no-pager").stdout
    assert "line 6: expected KEY=VALUE" in journal
    card = pi.ssh("sudo cat /boot/firmware/leitner.txt").stdout
    assert "secret" not in card and "user alice: set up on this device" in card
    assert "home-passphrase" not in card and "wifi_password: stored on this device" in card
    # The first sync, as soon as the board answers.
    State.tmp = tmp_path_factory.mktemp("devices")
    a = Device(State.tmp / "a")
    make_rich_collection(a.col, notes=200, reviews=100)
    for i in range(5):
        (a.media_dir / f"pic{i}.jpg").write_bytes(bytes([i]) * (2000 + i))
    State.auth = login(a, pi)
    assert a.sync(State.auth) == Changes.FULL_UPLOAD
    a.full_sync(State.auth, upload=True)
    FIGURES["power-on to first sync done"] = f"{time.monotonic() - started:.0f} s"
    a.sync_media(State.auth)
    State.a = a


def test_sync_download_incremental_and_media(pi):
    b = Device(State.tmp / "b")
    assert b.sync(State.auth) == Changes.FULL_DOWNLOAD
    b.full_sync(State.auth, upload=False)
    b.sync_media(State.auth)
    assert b.media_files() == State.a.media_files()
    note = b.col.new_note(b.col.models.by_name("Basic"))
    note["Front"] = "from b"
    b.col.add_note(note, 1)
    assert b.sync(State.auth) == Changes.NO_CHANGES
    time.sleep(1.1)
    # 100 reviews on a: what one ordinary sync writes to the card.
    a = State.a
    for did in a.col.decks.all_names_and_ids():
        a.col.decks.select(did.id)
        while (card := a.col.sched.getCard()) is not None and a.col.db.scalar("select count() from revlog") < 200:
            a.col.sched.answerCard(card, 3)
    before = pi.data_sectors_written()
    assert a.sync(State.auth) == Changes.NO_CHANGES
    # What the sync did not fsync itself (renames, removals) reaches the
    # card with ext4's next journal commit, and the metadata some 30 s
    # later: count it.
    time.sleep(SETTLE_SECS)
    FIGURES["data partition writes, one 100-review sync"] = f"{(pi.data_sectors_written() - before) * 512 // 1024} KiB"
    assert b.sync(State.auth) == Changes.NO_CHANGES
    State.last_request = time.monotonic()
    State.b = b


def test_ssh_status_read_only_root_and_grown_data(pi):
    status = pi.ssh("sudo leitner status").stdout
    assert "alice" in status and "running" in status
    assert pi.ssh("findmnt -no OPTIONS /").stdout.startswith("ro")
    assert pi.ssh("sudo touch /etc/leitner-was-here", check=False).returncode != 0
    size_kib = int(pi.ssh("df --output=size -k /data | tail -n1").stdout)
    assert size_kib > 900 * 1024, size_kib
    # No passwords: sshd's effective settings, not a login attempt (which
    # could fail for any reason).
    effective = pi.ssh("sudo sshd -T").stdout.lower().splitlines()
    assert "passwordauthentication no" in effective and "kbdinteractiveauthentication no" in effective
    # Wi-Fi set up on a board without it: said on the console and in the
    # journal, a minute into the start.
    said = "Wi-Fi: no Wi-Fi interface appeared: this board may have no Wi-Fi; use a cable"
    assert wait_for(lambda: said in pi.ssh("sudo journalctl -b -u leitner-wifi-check --no-pager").stdout,
                    timeout=180, step=5), pi.ssh("sudo systemctl status leitner-wifi-check", check=False).stdout
    assert said in pi.console()


def test_the_data_partition_rests_while_idle(pi):
    # What a sync or an exit writes reaches the card in a tail: ext4 commits
    # its journal within commit=60 s, and the kernel writes the journaled
    # metadata to its home blocks some 30 s after that. Idleness starts after.
    def settle_from(moment):
        time.sleep(max(0.0, moment + SETTLE_SECS - time.monotonic()))

    # The server process, running and idle until its idle exit.
    settle_from(State.last_request)
    before = pi.data_sectors_written()
    time.sleep(max(0.0, State.last_request + IDLE_EXIT_SECS - 15 - time.monotonic()))
    assert pi.ssh("pgrep -x leitner", check=False).returncode == 0, "exited early"
    running = pi.data_sectors_written() - before
    FIGURES["data partition writes, server idle until its exit"] = f"{running * 512} bytes"
    # Its exit saves when each user was last seen: once per start, not idleness.
    assert wait_for(lambda: pi.ssh("pgrep -x leitner", check=False).returncode != 0, timeout=120, step=2)
    exited = time.monotonic()
    settle_from(exited)
    FIGURES["data partition writes, the idle exit"] = \
        f"{(pi.data_sectors_written() - before - running) * 512 // 1024} KiB"
    # Nobody syncing, nothing running: LEITNER_IMAGE_IDLE_SECS=3600 measures an hour.
    before = pi.data_sectors_written()
    time.sleep(IDLE_SECS)
    after_exit = pi.data_sectors_written() - before
    FIGURES[f"data partition writes, {IDLE_SECS} s after the exit"] = f"{after_exit * 512} bytes"
    assert running == 0 and after_exit == 0


def test_data_survives_a_reboot(pi):
    host_key = pi.ssh("cat /data/ssh/ssh_host_ed25519_key.pub").stdout
    machine_id = pi.ssh("cat /etc/machine-id").stdout
    pi.shut_down()
    FIGURES["reboot to ssh"] = f"{pi.power_on():.0f} s"
    assert pi.ssh("cat /data/ssh/ssh_host_ed25519_key.pub").stdout == host_key
    assert pi.ssh("cat /etc/machine-id").stdout == machine_id
    assert State.a.sync(State.auth) == Changes.NO_CHANGES
    assert State.b.sync(State.auth) == Changes.NO_CHANGES
    State.a.close(), State.b.close()
    assert_same(State.a, State.b)
    State.a = Device(State.tmp / "a")
    State.b = Device(State.tmp / "b")


def test_a_power_cut_in_the_middle_of_a_sync(pi):
    big = Device(State.tmp / "big")
    make_rich_collection(big.col, notes=3000, reviews=10)
    big.col.mod_schema(check=False)
    auth = login(big, pi)
    upload = threading.Thread(target=lambda: _swallow(lambda: big.full_sync(auth, upload=True)))
    upload.start()
    # Cut while the body streams in.
    wait_for(lambda: pi.ssh("pgrep -x leitner", check=False).returncode == 0, timeout=60, step=0.5)
    time.sleep(2)
    pi.cut_power()
    upload.join()
    pi.power_on()
    # The server holds one whole collection, the old or the new; a device
    # that downloads it opens it intact. (Its start sweeps what the cut
    # upload left; `check` then finds nothing wrong.)
    c = Device(State.tmp / "c")
    auth = login(c, pi)
    c.full_sync(auth, upload=False)
    assert c.col.db.scalar("pragma integrity_check") == "ok"
    assert c.col.note_count() in (201, 3000), c.col.note_count()
    check = pi.ssh("sudo leitner check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for dev in (big, c, State.a, State.b):
        dev.close()
    pi.shut_down()
    # After a clean shutdown, the card's BOOT partition has no password either.
    assert "secret" not in pi.mtools("mtype", "::leitner.txt", text=True)
    shutil.rmtree(State.tmp, ignore_errors=True)


def _swallow(fn):
    try:
        fn()
    except Exception:  # the power went: the client's error is expected
        pass
