"""The Debian package installed into a booted Debian trixie system (issue 10).

Run by cross/test-package, which boots the guest and sets the LEITNER_GUEST_*
variables; each test builds on the previous one, in file order, as an admin
would go: install, add a user, sync, idle, snapshot, upgrade, remove, purge.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from anki.sync_pb2 import SyncCollectionResponse  # noqa: E402

from harness import Device, assert_same, make_rich_collection, wait_for  # noqa: E402

Changes = SyncCollectionResponse.ChangesRequired
SSH_PORT = os.environ.get("LEITNER_GUEST_SSH_PORT")
HTTP_PORT = os.environ.get("LEITNER_GUEST_HTTP_PORT")
KEY = os.environ.get("LEITNER_GUEST_KEY")
DEB = Path(os.environ.get("LEITNER_DEB", "missing"))
ENDPOINT = f"http://127.0.0.1:{HTTP_PORT}/"
GUEST_DEB = f"/root/{DEB.name}"
FIGURES: dict[str, str] = {}

pytestmark = pytest.mark.skipif(not SSH_PORT, reason="run by cross/test-package")
SSH = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-i", str(KEY)]


def guest(command: str, check=True, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs a shell command as root in the guest."""
    done = subprocess.run(["ssh", *SSH, "-p", str(SSH_PORT), "root@127.0.0.1", command],
                          input=stdin, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"guest: {command} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def active(unit: str) -> str:
    return guest(f"systemctl is-active {unit}", check=False).stdout.strip()


def leitner_running() -> bool:
    return guest("pgrep -x leitner", check=False).returncode == 0


class Auth:
    pass


@pytest.fixture(scope="module", autouse=True)
def booted():
    started = time.monotonic()
    assert wait_for(lambda: guest("true", check=False).returncode == 0, timeout=180, step=1), \
        Path(os.environ["LEITNER_GUEST_SERIAL"]).read_text()[-3000:]
    assert wait_for(lambda: guest("systemctl is-system-running --wait", check=False).stdout.strip()
                    in ("running", "degraded"), timeout=120, step=1)
    FIGURES["boot to ssh"] = f"{time.monotonic() - started:.0f} s"
    subprocess.run(["scp", *SSH, "-P", str(SSH_PORT), str(DEB), f"root@127.0.0.1:{GUEST_DEB}"], check=True)
    yield
    print("\nfigures:", FIGURES)


def test_install_listens_without_a_process():
    started = time.monotonic()
    guest(f"apt-get install -y -q {GUEST_DEB}")
    FIGURES["apt install"] = f"{time.monotonic() - started:.1f} s"
    assert active("leitner.socket") == "active"
    assert active("leitner-snapshot.timer") == "active"
    assert active("leitner-backup.timer") == "active"
    assert active("leitner.service") == "inactive"
    assert not leitner_running()
    listening = guest("ss -Htln 'sport = :8080'").stdout
    assert "*:8080" in listening or "[::]:8080" in listening, listening  # IPv4 and IPv6
    assert guest("stat -c '%U %a' /var/lib/leitner").stdout.split() == ["leitner", "700"]
    assert guest("getent passwd leitner").stdout.strip()
    assert guest("systemd-analyze verify leitner.socket leitner.service "
                 "leitner-snapshot.service leitner-snapshot.timer "
                 "leitner-backup.service leitner-backup.timer").returncode == 0
    score = guest("systemd-analyze security leitner.service --no-pager | tail -n1").stdout.strip()
    FIGURES["exposure"] = score
    print(score)


def test_user_add_as_root_creates_what_the_service_reads():
    guest("leitner user add alice --password-stdin", stdin="secret\n")
    owners = guest("stat -c %U /var/lib/leitner/leitner-users.json /var/lib/leitner/alice").stdout.split()
    assert owners == ["leitner", "leitner"]
    # Short idle exit for the test, in the conffile an admin would edit.
    guest("echo LEITNER_IDLE_EXIT_SECS=5 >> /etc/leitner/leitner.conf")


def test_a_real_client_syncs_through_the_socket(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    a = Device(tmp / "a")
    # LEITNER_PACKAGE_TEST_NOTES=20000 measures the memory peak for MemoryMax.
    make_rich_collection(a.col, notes=int(os.environ.get("LEITNER_PACKAGE_TEST_NOTES", "300")), reviews=60)
    # Notes made faster than one a millisecond run the id clock ahead of
    # time; a note added before time catches up would reuse an id (the
    # client does this with any server).
    ahead = a.col.db.scalar("select max(id) from notes") / 1000 - time.time()
    time.sleep(max(0.0, ahead) + 0.1)
    for i in range(5):
        (a.media_dir / f"pic{i}.jpg").write_bytes(bytes([i]) * (1000 + i))
    hkey = a.col.sync_login(username="alice", password="secret", endpoint=ENDPOINT).hkey
    from anki.sync_pb2 import SyncAuth
    auth = SyncAuth(hkey=hkey, endpoint=ENDPOINT, io_timeout_secs=60)
    assert a.sync(auth) == Changes.FULL_UPLOAD
    a.full_sync(auth, upload=True)
    a.sync_media(auth)
    assert leitner_running()

    b = Device(tmp / "b")
    assert b.sync(auth) == Changes.FULL_DOWNLOAD
    b.full_sync(auth, upload=False)
    b.sync_media(auth)
    assert b.media_files() == a.media_files()
    # Incremental, both ways.
    note = b.col.new_note(b.col.models.by_name("Basic"))
    note["Front"] = "from b"
    b.col.add_note(note, 1)
    assert b.sync(auth) == Changes.NO_CHANGES
    time.sleep(1.1)
    note = a.col.new_note(a.col.models.by_name("Basic"))
    note["Front"] = "from a"
    a.col.add_note(note, 1)
    assert a.sync(auth) == Changes.NO_CHANGES
    assert b.sync(auth) == Changes.NO_CHANGES
    a.close()
    b.close()
    assert_same(a, b)
    peak = guest("systemctl show -P MemoryPeak leitner.service").stdout.strip()
    FIGURES["service memory peak"] = f"{int(peak) / 2**20:.1f} MiB" if peak.isdigit() else peak
    Auth.auth, Auth.tmp = auth, tmp


def test_idle_exit_and_the_next_sync_starts_it_again():
    assert wait_for(lambda: not leitner_running(), timeout=30, step=1)
    assert active("leitner.service") == "inactive"
    assert active("leitner.socket") == "active"
    c = Device(Auth.tmp / "c")
    assert c.sync(Auth.auth) == Changes.FULL_DOWNLOAD
    c.full_sync(Auth.auth, upload=False)
    assert c.col.find_notes("from a") and c.col.find_notes("from b")
    c.close()
    status = guest("leitner status").stdout
    assert "alice" in status and "running" in status


def test_the_snapshot_timer_job_runs_hardened():
    guest("systemctl start leitner-snapshot.service")
    listing = guest("leitner snapshot list alice").stdout
    assert "taken" in listing, listing


def test_a_nightly_backup_to_a_folder_and_a_restore_onto_a_new_system():
    # Before anything is set, the timer's job has nothing to do, and says so.
    guest("systemctl start leitner-backup.service")
    assert "no backup destination is set" in guest("journalctl -u leitner-backup.service -o cat").stdout
    # A folder (a mounted disk, say) and a passphrase only root reads.
    guest("install -d -m700 /srv/backups && (umask 077 && echo 'a passphrase in a drawer' "
          "> /etc/leitner/backup-passphrase)")
    guest("printf 'LEITNER_BACKUP_TO=/srv/backups\\nLEITNER_BACKUP_PASSPHRASE_FILE=/etc/leitner/backup-passphrase\\n'"
          " >> /etc/leitner/leitner.conf")
    guest("systemctl start leitner-backup.service")
    log = guest("journalctl -u leitner-backup.service -o cat").stdout
    assert "(encrypted) to /srv/backups: 1 user(s)" in log, log
    assert "/srv/backups: last" in guest("leitner status").stdout
    assert guest("stat -c %U /srv/backups/leitner-backups/repository.json").stdout.strip() == "root"

    # A new system: the data folder empty, the backup restored, and the
    # device syncs on with nothing to exchange.
    guest("systemctl stop leitner.socket leitner.service && mv /var/lib/leitner /var/lib/leitner.old "
          "&& install -d -o leitner -g leitner -m700 /var/lib/leitner")
    out = guest("leitner restore-backup /srv/backups").stdout
    assert "restored 1 user(s)" in out, out
    guest("systemctl start leitner.socket")
    c = Device(Auth.tmp / "c")
    assert c.sync(Auth.auth) == Changes.NO_CHANGES
    assert c.col.find_notes("from a") and c.col.find_notes("from b")
    c.close()
    assert guest("stat -c %U /var/lib/leitner/alice/collection.anki2").stdout.strip() == "leitner"


def test_upgrade_and_reinstall_keep_everything():
    # With the server running, a reinstall (an upgrade's path) asks it to exit
    # between syncs; the socket keeps the port.
    c = Device(Auth.tmp / "c")
    assert c.sync(Auth.auth) == Changes.NO_CHANGES
    assert leitner_running()
    guest(f"dpkg -i {GUEST_DEB}")
    assert wait_for(lambda: not leitner_running(), timeout=30, step=1)
    assert c.sync(Auth.auth) == Changes.NO_CHANGES
    # Stopped by hand, then reinstalled: data, user and settings stay.
    guest("systemctl stop leitner.socket leitner.service")
    guest(f"apt-get install -y -q --reinstall {GUEST_DEB}")
    assert "LEITNER_IDLE_EXIT_SECS=5" in guest("cat /etc/leitner/leitner.conf").stdout
    guest("systemctl start leitner.socket")
    assert c.sync(Auth.auth) == Changes.NO_CHANGES
    assert c.col.find_notes("from a")
    c.close()


def test_remove_keeps_the_data_and_purge_removes_it():
    guest("apt-get remove -y -q leitner")
    assert not leitner_running()
    assert active("leitner.socket") != "active"
    assert guest("ss -Htln 'sport = :8080'").stdout.strip() == ""
    assert guest("test -f /var/lib/leitner/alice/collection.anki2", check=False).returncode == 0
    guest("apt-get purge -y -q leitner")
    assert guest("test -e /var/lib/leitner", check=False).returncode != 0
    assert guest("test -e /etc/leitner", check=False).returncode != 0
    assert guest("getent passwd leitner", check=False).returncode != 0
