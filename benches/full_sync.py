"""Full upload and download of a generated 30,000-note collection, against
leitner and against the official server from the same pinned `anki` package.
Prints times and peak memory side by side, as ratios. Not a test: nothing is
asserted. Run through benches/run."""

from __future__ import annotations

import os
import re
import shutil
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
LEITNER = ROOT / "target" / "release" / "leitner"
CACHE = ROOT / "target" / "bench"
NOTES = int(os.environ.get("BENCH_NOTES", "30000"))
# The two contenders: (name, command line).
SERVERS = [("leitner", [str(LEITNER)]), ("official", [sys.executable, "-m", "anki.syncserver"])]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))


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
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{argv} did not start")

    def rss_kib(self, field: str) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))

    def reset_peak(self) -> None:
        # "5" resets the peak resident set size (VmHWM) of the process.
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def full_sync(col: Collection, auth: SyncAuth, upload: bool) -> float:
    col.close_for_full_sync()
    start = time.perf_counter()
    try:
        col.full_upload_or_download(auth=auth, server_usn=None, upload=upload)
    finally:
        elapsed = time.perf_counter() - start
        col.reopen(after_full_sync=True)
    return elapsed


class Contender:
    """One server under test, with its samples."""

    def __init__(self, name: str, argv: list[str], work: Path):
        self.name = name
        self.work = work / name
        self.server = Proc(argv, self.work / "server")
        self.endpoint = f"http://127.0.0.1:{self.server.port}/"
        self.samples = {"upload": [], "download": [], "upload_peak": [], "download_peak": []}
        time.sleep(0.5)
        self.samples["idle"] = self.server.rss_kib("VmRSS")

    def round(self, n: int, source: Path) -> None:
        a_dir = self.work / f"a{n}"
        a_dir.mkdir(parents=True)
        shutil.copy(source, a_dir / "collection.anki2")
        a = Collection(str(a_dir / "collection.anki2"))
        hkey = a.sync_login(username="bench", password="bench", endpoint=self.endpoint).hkey
        auth = SyncAuth(hkey=hkey, endpoint=self.endpoint, io_timeout_secs=120)
        self.server.reset_peak()
        self.samples["upload"].append(full_sync(a, auth, upload=True))
        self.samples["upload_peak"].append(self.server.rss_kib("VmHWM"))
        a.close()

        b_dir = self.work / f"b{n}"
        b_dir.mkdir(parents=True)
        b = Collection(str(b_dir / "collection.anki2"))
        self.server.reset_peak()
        self.samples["download"].append(full_sync(b, auth, upload=False))
        self.samples["download_peak"].append(self.server.rss_kib("VmHWM"))
        assert b.note_count() == NOTES, b.note_count()
        b.close()
        shutil.rmtree(a_dir)
        shutil.rmtree(b_dir)


def main() -> None:
    if not LEITNER.exists():
        sys.exit(f"{LEITNER} is missing: run benches/run")
    source = template()
    size = source.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        contenders = [Contender(name, argv, work) for name, argv in SERVERS]
        try:
            # Both servers run side by side and take turns, so a slow moment
            # of the machine does not fall on one of them only.
            for n in range(ROUNDS):
                for c in contenders if n % 2 == 0 else reversed(contenders):
                    c.round(n, source)
                    # Let background work (leitner's snapshot compression)
                    # finish before the next server's turn.
                    time.sleep(3)
        finally:
            for c in contenders:
                c.server.stop()
        ours, theirs = contenders[0].samples, contenders[1].samples

    print(f"\nfull sync of a {NOTES}-note collection ({size / 2**20:.1f} MiB), "
          f"median of {ROUNDS} rounds; ratio = leitner / official (lower is better)\n")
    print(f"{'':28}{'leitner':>12}{'official':>12}{'ratio':>8}")
    rows = [
        ("upload time (s)", "upload", 1.0),
        ("download time (s)", "download", 1.0),
        ("peak RSS, upload (MiB)", "upload_peak", 1 / 1024),
        ("peak RSS, download (MiB)", "download_peak", 1 / 1024),
    ]
    for label, key, scale in rows:
        a, b = statistics.median(ours[key]) * scale, statistics.median(theirs[key]) * scale
        print(f"{label:28}{a:12.3f}{b:12.3f}{a / b:8.2f}")
    a, b = ours["idle"] / 1024, theirs["idle"] / 1024
    print(f"{'RSS after start (MiB)':28}{a:12.3f}{b:12.3f}{a / b:8.2f}")


if __name__ == "__main__":
    main()
