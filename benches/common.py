"""What every benchmark shares: the contenders (leitner from target/release,
the native official server from ../shared/anchors, and with BENCH_PYTHON=1
the Python-wrapped one too), a server process with its memory and disk
counters, the generated collection, client steps, and the table of
medians, ranges and ratios."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anki.collection import AddNoteRequest, Collection
from anki.sync_pb2 import SyncAuth

ROOT = Path(__file__).resolve().parents[1]
LEITNER = Path(os.environ.get("BENCH_LEITNER", ROOT / "target" / "release" / "leitner"))
# On disk, not tmpfs: the disk counters (/proc/PID/io) only see real writes.
CACHE = ROOT / "target" / "bench"
# The clients' collections and media folders, apart from the servers' disk:
# a server that flushes its file system (leitner's media batches do) would
# otherwise also flush, and be charged for, files the client just wrote.
CLIENTS = Path(os.environ.get("BENCH_CLIENTS", "/dev/shm"))
NOTES = int(os.environ.get("BENCH_NOTES", "30000"))
ANCHOR = Path(os.environ.get(
    "BENCH_ANCHOR", ROOT.parent / "shared" / "anchors" / "anki-sync-server-26.08.1-x86_64.zst"))


def official_binary() -> Path:
    """The native official server, unpacked once (OFFICIAL_SERVER: another)."""
    if os.environ.get("OFFICIAL_SERVER"):
        return Path(os.environ["OFFICIAL_SERVER"])
    out = CACHE / ANCHOR.name.removesuffix(".zst")
    if not out.exists():
        if not ANCHOR.exists():
            sys.exit(f"{ANCHOR} is missing (see ../shared/anchors/README.md), or set OFFICIAL_SERVER")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["zstd", "-q", "-f", "-d", str(ANCHOR), "-o", str(out)], check=True)
        out.chmod(0o755)
    return out


def servers() -> list[tuple[str, list[str]]]:
    """(name, command line) of each contender; leitner first, then the one
    its ratios are against."""
    if not LEITNER.exists():
        sys.exit(f"{LEITNER} is missing: run benches/run")
    found = [("leitner", [str(LEITNER)]), ("official", [str(official_binary())])]
    if os.environ.get("BENCH_PYTHON"):
        found.append(("python", [sys.executable, "-m", "anki.syncserver"]))
    return found


def template() -> Path:
    path = CACHE / f"collection-{NOTES}.anki2"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "building.anki2"
    for leftover in CACHE.glob("building.anki2*"):
        leftover.unlink()
    col = Collection(str(tmp))
    basic = col.models.by_name("Basic")
    requests = []
    for i in range(NOTES):
        note = col.new_note(basic)
        note["Front"] = f"question {i}: what is {i} times {i % 97}?"
        note["Back"] = f"<b>{i * (i % 97)}</b> because {i} x {i % 97}; see chapter {i % 31}"
        note.tags = [f"chapter{i % 31}"]
        requests.append(AddNoteRequest(note=note, deck_id=1))
    col.add_notes(requests)
    col.close()
    tmp.rename(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, argv, data: Path, users=("bench:bench",)):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
        env.update({f"SYNC_USER{i}": u for i, u in enumerate(users, 1)})
        env.update(SYNC_HOST="127.0.0.1",
                   SYNC_PORT=str(self.port), SYNC_BASE=str(data), LEITNER_LOG=os.environ.get("LEITNER_LOG", "warn"),
                   RUST_LOG="error")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{argv} did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def rss_kib(self, field: str = "VmRSS") -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))

    def reset_peak(self) -> None:
        # "5" resets the peak resident set size (VmHWM) of the process.
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def written(self) -> int:
        """Bytes the process has sent towards the disk so far (counted when
        pages are dirtied, so a write the kernel has not flushed yet counts)."""
        io = Path(f"/proc/{self.proc.pid}/io").read_text()
        return int(re.search(r"write_bytes:\s+(\d+)", io).group(1))

    def cpu_secs(self) -> float:
        """CPU time the process has used so far, user and system."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def run_command(argv: list[str], env: dict) -> dict[str, float]:
    """Runs a command to its end: seconds, peak RSS (MiB), and what it read
    and wrote (bytes; the kernel's counts for the process). The peak is the
    command's own VmHWM, read while it runs: ru_maxrss of a child of this
    process counts this (large, Anki-loaded) Python process's memory, which
    the child had until it exec'd."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while True:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                peak = max(peak, int(status.read_text().split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(code)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {err.read().decode()[-2000:]}")
    return {"seconds": seconds, "rss_mib": peak / 1024,
            "read": usage.ru_inblock * 512, "written": usage.ru_oublock * 512}


def login(col: Collection, endpoint: str, user: str = "bench") -> SyncAuth:
    hkey = col.sync_login(username=user, password=user, endpoint=endpoint).hkey
    return SyncAuth(hkey=hkey, endpoint=endpoint, io_timeout_secs=120)


def full_sync(col: Collection, auth: SyncAuth, upload: bool) -> float:
    col.close_for_full_sync()
    start = time.perf_counter()
    try:
        col.full_upload_or_download(auth=auth, server_usn=None, upload=upload)
    finally:
        elapsed = time.perf_counter() - start
        col.reopen(after_full_sync=True)
    return elapsed


def normal_sync(col: Collection, auth: SyncAuth) -> float:
    start = time.perf_counter()
    col.sync_collection(auth, sync_media=False)
    return time.perf_counter() - start


def media_sync(col: Collection, auth: SyncAuth) -> float:
    start = time.perf_counter()
    col.sync_media(auth)
    while col.media_sync_status().active:  # raises if the sync failed
        time.sleep(0.005)
    return time.perf_counter() - start


def make_changes(col: Collection, n: int, reviews: int, edits: int) -> None:
    """Answers `reviews` cards and edits `edits` notes, the `n`th such slice
    of the collection (so rounds do not repeat one another)."""
    cids = col.find_cards("")
    for cid in cids[n * reviews:(n + 1) * reviews]:
        card = col.get_card(cid)
        card.start_timer()
        col.sched.answerCard(card, 3)
    nids = col.find_notes("")
    for nid in nids[n * edits:(n + 1) * edits]:
        note = col.get_note(nid)
        note["Back"] += f" (edit {n})"
        col.update_note(note)


class Table:
    """Rows of samples per contender, printed as median (min-max) and the
    ratio of the first contender to the second (lower is better for leitner)."""

    def __init__(self, title: str, names: list[str]):
        self.title = title
        self.names = names
        self.rows: list[tuple[str, str, dict[str, list[float]]]] = []

    def add(self, label: str, unit: str, samples: dict[str, list[float]]) -> None:
        self.rows.append((label, unit, samples))

    def print(self) -> None:
        print(f"\n{self.title}; ratio = {self.names[0]} / {self.names[1]}\n")
        head = f"{'':50}" + "".join(f"{n:>28}" for n in self.names) + f"{'ratio':>8}"
        print(head)
        for label, unit, samples in self.rows:
            cells = []
            for name in self.names:
                xs = samples.get(name) or [float("nan")]
                digits = 3 if unit == "s" else 1
                cells.append(f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})")
            a = statistics.median(samples.get(self.names[0]) or [float("nan")])
            b = statistics.median(samples.get(self.names[1]) or [float("nan")])
            ratio = a / b if b else float("nan")
            print(f"{label + ' (' + unit + ')':50}" + "".join(f"{c:>28}" for c in cells) + f"{ratio:8.2f}")

    def as_json(self) -> dict:
        out = {}
        for label, unit, samples in self.rows:
            out[label] = {"unit": unit, **{
                name: {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs}
                for name, xs in samples.items() if xs}}
        return {"title": self.title, "rows": out}


def write_json(path: str | None, tables: list[Table]) -> None:
    if path:
        Path(path).write_text(json.dumps([t.as_json() for t in tables], indent=1))


# A card-like device: what a cheap A1 microSD card promises (class 10 /
# A1: 10 MB/s sequential writes, 500 random write IOPS), read faster.
SLOW_WRITE_MBPS = float(os.environ.get("BENCH_SLOW_WRITE_MBPS", "10"))
SLOW_WRITE_IOPS = int(os.environ.get("BENCH_SLOW_WRITE_IOPS", "500"))
SLOW_READ_MBPS = float(os.environ.get("BENCH_SLOW_READ_MBPS", "40"))


class Card:
    """An ext4 file system as the image formats and mounts its data
    partition (journal, noatime, commit=60), on a loop device of its own, so
    that what reaches the device is counted whoever writes it: the
    process's data, the journal, metadata, a flush of what another left.
    The image lives in RAM; with `slow`, qemu-storage-daemon's throttle
    filter stands between it and the loop device (bandwidth and IOPS
    limits that every write pays), exported as a file through FUSE, so the
    device is as slow as a card. Needs root."""

    def __init__(self, mountpoint: Path, slow: bool, size_gb: int = 4):
        if os.geteuid() != 0:
            sys.exit("BENCH_DISK needs root (a loop device, mount)")
        self.mountpoint, self.slow, self.size_gb = mountpoint, slow, size_gb
        self.image = Path("/dev/shm") / f"leitner-bench-{os.getpid()}.img"
        self.export = CACHE / f"card-export-{os.getpid()}"
        self.daemon = None
        self.loop = None

    def __enter__(self) -> "Card":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["truncate", "-s", f"{self.size_gb}G", str(self.image)], check=True)
        # Made unthrottled, all of it initialised now, so no lazy init runs later.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                        str(self.image)], check=True)
        backing = self.image
        if self.slow:
            self.export.touch()
            mbps = lambda x: str(int(x * 1_000_000))  # noqa: E731
            self.daemon = subprocess.Popen([
                "qemu-storage-daemon",
                "--object", f"throttle-group,id=card,x-bps-write={mbps(SLOW_WRITE_MBPS)},"
                            f"x-iops-write={SLOW_WRITE_IOPS},x-bps-read={mbps(SLOW_READ_MBPS)}",
                "--blockdev", f"driver=file,node-name=image,filename={self.image}",
                "--blockdev", "driver=throttle,node-name=card,throttle-group=card,file=image",
                "--export", f"type=fuse,id=card,node-name=card,mountpoint={self.export},writable=on",
            ])
            deadline = time.monotonic() + 20
            while self.export.stat().st_size == 0:
                if time.monotonic() > deadline or self.daemon.poll() is not None:
                    self.close()
                    raise RuntimeError("qemu-storage-daemon did not export the image")
                time.sleep(0.1)
            backing = self.export
        self.loop = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                                   capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", "-o", "noatime,commit=60", self.loop, str(self.mountpoint)],
                       check=True)
        return self

    def written(self) -> int:
        """Bytes the device has been sent so far, once everything dirty is
        flushed (a server's unflushed files count when they reach it)."""
        os.sync()
        stat = Path(f"/sys/block/{Path(self.loop).name}/stat").read_text().split()
        return int(stat[6]) * 512

    def close(self) -> None:
        if self.loop:
            subprocess.run(["umount", str(self.mountpoint)], check=False)
            subprocess.run(["losetup", "-d", self.loop], check=False)
            self.loop = None
        if self.daemon:
            self.daemon.terminate()
            self.daemon.wait(30)
            self.daemon = None
        self.image.unlink(missing_ok=True)
        self.export.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self.close()


def card() -> Card | None:
    """BENCH_DISK=card: the servers' data on a card-like device at RAM
    speed; slow: the same, throttled; unset: on the host's disk."""
    kind = os.environ.get("BENCH_DISK", "")
    if kind not in ("", "card", "slow"):
        sys.exit(f"BENCH_DISK={kind}: card, slow or unset")
    return Card(CACHE / "card", slow=kind == "slow") if kind else None
