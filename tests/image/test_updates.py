"""A/B system updates on the emulated board (issue 21).

Run by image/test-updates, which builds the test bundles. Each test starts
from a fresh copy of the image, syncs a real Anki client before and after,
and reads what happened from `leitner system status`, the boot state
(fw_printenv) and the console.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from board import IMAGE, Pi, login  # noqa: E402
from anki.sync_pb2 import SyncCollectionResponse  # noqa: E402

from harness import Device, make_rich_collection, wait_for  # noqa: E402

Changes = SyncCollectionResponse.ChangesRequired
BUNDLES = Path(os.environ.get("LEITNER_BUNDLES", "/nonexistent"))
WORK = Path(__file__).resolve().parents[2] / "target" / "update-test"
FIGURES: dict[str, str] = {}
pytestmark = pytest.mark.skipif(not (IMAGE and BUNDLES.is_dir()), reason="run by image/test-updates")


def version_of(name: str) -> str:
    return (BUNDLES / f"{name}.version").read_text().strip()


class Owner:
    """One card, its board, and a real Anki client syncing with it."""

    def __init__(self, name: str, leitner_txt: str | None = None):
        self.work = WORK / name
        shutil.rmtree(self.work, ignore_errors=True)
        self.pi = Pi(self.work)
        self.pi.flash(leitner_txt)
        self.pi.power_on()
        self.device = Device(self.work / "anki")
        make_rich_collection(self.device.col, notes=50, reviews=20)
        (self.device.media_dir / "kept.jpg").write_bytes(b"\xff\xd8" + bytes(3000))
        self.auth = login(self.device, self.pi)
        assert self.device.sync(self.auth) == Changes.FULL_UPLOAD
        self.device.full_sync(self.auth, upload=True)
        self.device.sync_media(self.auth)
        self.notes = self.device.col.note_count()
        self.checks = 0

    def still_syncs(self):
        """The same collection and login as before; a new note goes both ways."""
        assert self.device.sync(self.auth) == Changes.NO_CHANGES
        note = self.device.col.new_note(self.device.col.models.by_name("Basic"))
        note["Front"] = f"after {self.pi.boots} starts"
        self.device.col.add_note(note, 1)
        assert self.device.sync(self.auth) == Changes.NO_CHANGES
        self.notes += 1
        self.checks += 1
        other = Device(self.work / f"anki-check-{self.checks}")
        auth = login(other, self.pi)
        assert other.sync(auth) == Changes.FULL_DOWNLOAD
        other.full_sync(auth, upload=False)
        other.sync_media(auth)
        assert other.col.note_count() == self.notes
        assert other.media_files() == self.device.media_files()
        other.close()

    def slot(self) -> str:
        """The running slot ("" while the board restarts)."""
        found = re.search(r"rauc\.slot=([AB])", self.pi.ssh("cat /proc/cmdline", check=False).stdout)
        return found.group(1) if found else ""

    def boot_state(self) -> dict[str, str]:
        out = self.pi.ssh("sudo fw_printenv").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status(self) -> str:
        return self.pi.ssh("sudo leitner system status").stdout

    def last_update(self) -> str:
        return self.status().split("last update:", 1)[1]

    def wait_confirmed(self, timeout=600):
        """Until confirm-slot has ruled on this start."""
        def ruled():
            out = self.pi.ssh("systemctl show -p ExecMainExitTimestampMonotonic --value "
                              "leitner-confirm-slot.service", check=False).stdout.strip()
            return out not in ("", "0")
        assert wait_for(ruled, timeout=timeout, step=5)

    def upload(self, name: str) -> str:
        """Copies bundle NAME onto the data partition (/tmp is a small RAM
        disk); returns its path there."""
        self.pi.ssh("sudo mkdir -p /data/incoming && sudo chown admin /data/incoming")
        path = f"/data/incoming/{name}.raucb"
        self.pi.scp(BUNDLES / f"{name}.raucb", path)
        return path

    def update(self, source: str, *args, forward=None, expect_restart=True):
        started = time.monotonic()
        boot = self.pi.boot_id()
        done = self.pi.ssh(f"sudo leitner system update {source} {' '.join(args)}", check=False,
                           forward=forward, timeout=3600)
        if expect_restart:
            # It restarts the board at its end: ssh loses the connection.
            assert "restarting now" in done.stdout, done.stdout + done.stderr
            self.pi.wait_for_restart(boot_id=boot)
            FIGURES[f"{self.work.name}: update command"] = f"{time.monotonic() - started:.0f} s"
        return done

    def data_sectors(self) -> dict[str, int]:
        out = self.pi.ssh("for p in vda1 vda2 vda3 vda4; do echo $p $(cat /sys/block/vda/$p/stat); done").stdout
        return {line.split()[0]: int(line.split()[7]) for line in out.splitlines()}

    def close(self):
        self.device.close()
        if self.pi.proc and self.pi.proc.poll() is None:
            self.pi.cut_power()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A web server for bundles that answers byte ranges, as RAUC's streaming
    needs (Python's own serves whole files only)."""

    def log_message(self, *args):
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.range_left = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        left = getattr(self, "range_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            chunk = source.read(min(left, 1 << 16))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)


@pytest.fixture(scope="module")
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(RangeHandler, directory=str(BUNDLES)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    print("\nfigures:", FIGURES)


@pytest.fixture
def owner(request):
    o = Owner(request.node.name.removeprefix("test_"))
    yield o
    o.close()


GUEST_WEB = 18888  # the bundles' web server, as the board sees it (ssh -R)


def test_a_good_update_from_a_url(owner, web):
    assert owner.slot() == "A"
    status = owner.status()
    assert re.search(r"A  leitner \S+, Debian \S+, built \S+\n\s+running, good", status), status
    assert re.search(r"B  empty", status), status
    # Installed, not yet restarted: what the install wrote, per partition
    # (the counters start at this boot).
    before = owner.data_sectors()
    done = owner.update(f"http://127.0.0.1:{GUEST_WEB}/good.raucb", "--no-restart",
                        forward=f"{GUEST_WEB}:127.0.0.1:{web}", expect_restart=False)
    assert done.returncode == 0, done.stdout + done.stderr
    after = owner.data_sectors()
    FIGURES["written by a streamed update: slot B"] = f"{(after['vda3'] - before['vda3']) * 512 / 2**20:.0f} MiB"
    FIGURES["written by a streamed update: slot A, boot, data"] = (
        f"{after['vda2'] - before['vda2']}, {after['vda1'] - before['vda1']}, "
        f"{(after['vda4'] - before['vda4']) * 512 // 1024} KiB (sectors, sectors, data)")
    assert after["vda2"] == before["vda2"] and after["vda1"] == before["vda1"]
    assert "it starts at the next restart" in done.stdout
    boot = owner.pi.boot_id()
    owner.pi.ssh("sudo systemctl reboot", check=False)
    owner.pi.wait_for_restart(boot_id=boot)
    owner.pi.wait_for_ssh()
    owner.wait_confirmed()
    assert owner.slot() == "B"
    status = owner.status()
    assert re.search(rf"B  leitner {re.escape(version_of('good'))}, .*\n\s+running, good", status), status
    assert "done, slot B runs and answers" in owner.last_update()
    assert owner.boot_state()["BOOT_ORDER"] == "B A" and owner.boot_state()["BOOT_B_LEFT"] == "3"
    assert "alice" in owner.pi.ssh("sudo leitner user list").stdout
    owner.still_syncs()
    # Each collection got a snapshot before the switch.
    assert " taken " in owner.pi.ssh("sudo leitner snapshot list alice").stdout


def test_bad_bundles_are_refused(owner):
    state = owner.boot_state()
    for name, why in [("othersig", "signature"), ("truncated", ""), ("otherboard", "another board")]:
        done = owner.update(owner.upload(name), expect_restart=False)
        assert done.returncode != 0, done.stdout
        assert "refused; the running system is unchanged" in done.stderr, done.stderr
        assert why in owner.last_update(), owner.last_update()
        FIGURES[f"refused {name}"] = owner.last_update().strip()
        owner.pi.ssh(f"rm /data/incoming/{name}.raucb")
    assert owner.boot_state() == state
    assert owner.slot() == "A"
    assert re.search(r"B  empty", owner.status())
    owner.still_syncs()


def test_a_slot_that_does_not_start_is_tried_three_times(owner):
    owner.update(owner.upload("badinit"))
    owner.pi.wait_for_ssh(timeout=1800)
    owner.wait_confirmed()
    assert owner.slot() == "A"
    console = owner.pi.console()
    assert console.count("leitner: booting slot B") == 3, console[-3000:]
    assert "Kernel panic" in console
    last = owner.last_update()
    assert f"update to leitner {version_of('badinit')} failed: slot B did not start (3 tries); back on slot A" in last
    assert "bad" in owner.status().split("  B  ", 1)[1]
    owner.still_syncs()


def test_a_slot_whose_leitner_never_answers_is_left(owner):
    owner.update(owner.upload("unhealthy"))
    # B starts, its leitner does not answer, confirm-slot gives up and
    # restarts into A.
    owner.pi.wait_for_ssh(timeout=1800)
    assert wait_for(lambda: owner.slot() == "A", timeout=1200, step=10)
    owner.wait_confirmed()
    assert "did not answer within" in owner.last_update() and "going back to slot A" in owner.last_update()
    assert owner.boot_state()["BOOT_B_LEFT"] == "0"
    owner.still_syncs()


def test_a_power_cut_in_the_middle_of_an_install(owner):
    owner.pi.ssh(f"sudo sh -c 'nohup leitner system update {owner.upload('good')} --no-restart "
                 "> /data/incoming/log 2>&1 &'")
    assert wait_for(lambda: "Copying image" in owner.pi.ssh("cat /data/incoming/log").stdout,
                    timeout=900, step=1)
    time.sleep(2)
    owner.pi.cut_power()
    owner.pi.power_on()
    owner.wait_confirmed()
    assert owner.slot() == "A"
    assert "was cut short" in owner.last_update()
    assert owner.boot_state()["BOOT_ORDER"].startswith("A") or owner.boot_state()["BOOT_B_LEFT"] == "0"
    owner.still_syncs()


def test_a_rollback_by_hand_then_a_second_update(owner):
    owner.update(owner.upload("good"))
    owner.pi.wait_for_ssh()
    owner.wait_confirmed()
    assert owner.slot() == "B"
    owner.still_syncs()
    boot = owner.pi.boot_id()
    done = owner.pi.ssh("sudo leitner system rollback", check=False, timeout=1800)
    assert "restarting now" in done.stdout, done.stdout + done.stderr
    owner.pi.wait_for_restart(boot_id=boot)
    owner.pi.wait_for_ssh()
    owner.wait_confirmed()
    assert owner.slot() == "A"
    assert "going back to leitner" in owner.last_update() and "done" in owner.last_update()
    owner.still_syncs()
    owner.pi.ssh("rm /data/incoming/good.raucb")
    owner.update(owner.upload("good2"))
    owner.pi.wait_for_ssh()
    owner.wait_confirmed()
    assert owner.slot() == "B"
    assert re.search(rf"B  leitner {re.escape(version_of('good2'))}, .*\n\s+running, good", owner.status())
    owner.still_syncs()


def test_an_automatic_update_waits_for_a_quiet_moment(web):
    url = f"http://127.0.0.1:{GUEST_WEB}/good.raucb"
    o = Owner("automatic", "hostname=leitner-test\r\nuser=alice:secret\r\nssh_key={ssh_key}\r\n"
                           f"update_url={url}\r\n")
    try:
        assert o.pi.ssh("cat /data/etc/update-url").stdout.strip() == url
        assert "leitner-auto-update.timer" in o.pi.ssh("systemctl list-timers --all --no-legend").stdout
        # The daily timer's run, now (the bundles' web server reached through
        # ssh -R, which ends when the board restarts), its log followed
        # until then.
        ran = []
        boot = o.pi.boot_id()
        run = threading.Thread(target=lambda: ran.append(o.pi.ssh(
            "sudo journalctl -f -n 0 -o cat -u leitner-auto-update & follow=$!; "
            "sudo systemctl start leitner-auto-update.service; sleep 2; sudo kill $follow",
            check=False, forward=f"{GUEST_WEB}:127.0.0.1:{web}", timeout=3600)))
        run.start()
        # Installed (or installing) meanwhile: the device syncs again.
        time.sleep(90)
        assert o.device.sync(o.auth) == Changes.NO_CHANGES
        synced = time.monotonic()
        run.join()
        assert "restarting now" in ran[0].stdout, ran[0].stdout + ran[0].stderr
        o.pi.wait_for_restart(boot_id=boot)
        # Not before leitner had been idle for 5 minutes (its own idle exit).
        quiet = time.monotonic() - synced
        FIGURES["automatic update: last sync to restart"] = f"{quiet:.0f} s"
        assert quiet > 290, quiet
        o.pi.wait_for_ssh()
        o.wait_confirmed()
        assert o.slot() == "B"
        assert "done, slot B runs and answers" in o.last_update()
        o.still_syncs()
        again = o.pi.ssh("sudo leitner system auto", forward=f"{GUEST_WEB}:127.0.0.1:{web}")
        assert "up to date" in again.stdout, again.stdout
    finally:
        o.close()
