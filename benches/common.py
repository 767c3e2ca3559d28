"""What every benchmark shares: the contenders (leitner from target/release,
the native official server from ../shared/anchors, and with BENCH_PYTHON=1
the Python-wrapped one too), a server process with its memory and disk
counters, the generated collection, client steps, and the table of
medians, ranges and ratios."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
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
