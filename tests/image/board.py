"""The emulated board the image tests run on: a card (a copy of the image)
in qemu's virt machine, started by Debian's U-Boot for qemu running the
image's own boot script, as the Pi's U-Boot does (image/boot/boot.cmd).

Used by test_image.py and test_updates.py (run by image/test and
image/test-updates, which set LEITNER_IMAGE and LEITNER_UBOOT).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from anki.sync_pb2 import SyncAuth  # noqa: E402

from harness import Device, free_port, wait_for  # noqa: E402

IMAGE = os.environ.get("LEITNER_IMAGE")
UBOOT = os.environ.get("LEITNER_UBOOT")
ROOT = Path(__file__).resolve().parents[2]
BOOT_OFFSET = 8192 * 512  # the FAT partition, as image/build lays it out
DATA_PARTITION = "vda4"


class Pi:
    """The emulated board: its card and its power."""

    def __init__(self, work: Path, usb: Path | None = None):
        """`usb`: a disk image plugged in as a USB drive."""
        self.work = work
        self.usb = usb
        self.usb_plugs = 0
        self.monitor = work / "monitor.sock"
        work.mkdir(parents=True, exist_ok=True)
        self.card = work / "card.img"
        self.key = work / "id_ed25519"
        self.ssh_port, self.http_port = free_port(), free_port()
        self.proc = None
        self.boots = 0
        self.serial = work / "serial-0.log"

    def flash(self, leitner_txt: str | None = None):
        """As a user would: write the image, then edit leitner.txt on BOOT."""
        with open(self.card, "wb") as out:
            subprocess.run(["xz", "-dc", IMAGE], stdout=out, check=True)
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        pub = Path(f"{self.key}.pub").read_text().strip()
        config = self.work / "leitner.txt"
        config.write_text(leitner_txt.replace("{ssh_key}", pub) if leitner_txt else (
            "hostname=leitner-test\r\nuser=alice:secret\r\n" f"ssh_key={pub}\r\n"))
        self.mtools("mcopy", "-o", str(config), "::leitner.txt")
        # A card larger than the image: the data partition grows into it.
        subprocess.run(["qemu-img", "resize", "-q", "-f", "raw", str(self.card), "+1G"], check=True)

    def mtools(self, *args, text=False):
        command, *rest = args
        return subprocess.run([command, "-i", f"{self.card}@@{BOOT_OFFSET}", *rest], check=True,
                              capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
                              text=text).stdout

    def power_on(self, wait=True, timeout=600):
        """Power: U-Boot, the boot script, the slot it picks. Restarts (the
        boot script's resets, reboots) stay in this one qemu process, as on
        the board; poweroff ends it."""
        self.serial = self.work / f"serial-{self.boots}.log"
        self.boots += 1
        usb = []
        if self.usb:
            usb = ["-device", "qemu-xhci,id=xhci", "-drive", f"if=none,id=usb0,file={self.usb},format=raw",
                   "-device", "usb-storage,bus=xhci.0,drive=usb0,id=usbdisk"]
        self.proc = subprocess.Popen([
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024", *usb,
            "-accel", "tcg,thread=multi", "-bios", UBOOT,
            "-drive", f"if=none,file={self.card},format=raw,id=d0", "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.http_port}-:8080,"
                       f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-display", "none", "-serial", f"file:{self.serial}",
            "-monitor", f"unix:{self.monitor},server=on,wait=off",
        ])
        started = time.monotonic()
        if wait:
            self.wait_for_ssh(timeout)
        return time.monotonic() - started

    def wait_for_ssh(self, timeout=600):
        # The forwarder accepts before the guest listens: wait for real answers.
        assert wait_for(lambda: self.proc.poll() is None and self.ssh("true", check=False).returncode == 0,
                        timeout=timeout, step=2), self.console()[-4000:]

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=15).stdout.strip()

    def wait_for_restart(self, timeout=300, boot_id: str | None = None):
        """Until the running system has gone away (a reboot under way), or,
        given the boot id from before, until another boot answers: a board
        that restarts quickly may be back before anyone looked."""
        def restarted():
            done = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=15)
            return done.returncode != 0 or (boot_id is not None and done.stdout.strip() != boot_id)
        assert wait_for(restarted, timeout=timeout, step=2), "still up"

    def qemu(self, command: str) -> str:
        """One command to qemu's monitor (the board's hands: a plug pulled)."""
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.monitor))
            s.settimeout(10)
            out = b""
            while not out.endswith(b"(qemu) "):
                out += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            out = b""
            while not out.endswith(b"(qemu) "):
                out += s.recv(4096)
            return out.decode(errors="replace")

    def pull_usb(self):
        self.qemu("device_del usbdisk")

    def plug_usb(self):
        self.usb_plugs += 1
        drive = f"usb{self.usb_plugs}"
        self.qemu(f"drive_add 0 if=none,id={drive},file={self.usb},format=raw")
        self.qemu(f"device_add usb-storage,bus=xhci.0,drive={drive},id=usbdisk")

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def cut_power(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def shut_down(self):
        self.ssh("sudo systemctl poweroff", check=False)
        self.proc.wait(timeout=120)

    def ssh(self, command: str, check=True, timeout=900, forward: str | None = None) -> subprocess.CompletedProcess:
        extra = ["-R", forward] if forward else []
        try:
            done = subprocess.run(
                ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
                 "-i", str(self.key), "-p", str(self.ssh_port), *extra, "admin@127.0.0.1", command],
                capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            done = subprocess.CompletedProcess(e.cmd, 255, e.stdout or "", e.stderr or "timeout")
        if check and done.returncode != 0:
            raise AssertionError(f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def scp(self, local: Path, remote: str):
        subprocess.run(
            ["scp", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-i", str(self.key), "-P", str(self.ssh_port), str(local),
             f"admin@127.0.0.1:{remote}"], check=True, timeout=900)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.http_port}/"

    def data_sectors_written(self) -> int:
        return int(self.ssh(f"cat /sys/block/vda/{DATA_PARTITION}/stat").stdout.split()[6])


def login(dev: Device, pi: Pi, user="alice", password="secret") -> SyncAuth:
    hkey = dev.col.sync_login(username=user, password=password, endpoint=pi.endpoint).hkey
    return SyncAuth(hkey=hkey, endpoint=pi.endpoint, io_timeout_secs=120)
