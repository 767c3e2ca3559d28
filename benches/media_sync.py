"""Media sync, leitner against the official server (same pinned package):
upload of 2,000 files of 20 KB from one device, and their download to a
fresh device, with the server's peak RSS during each. Prints times and
memory as ratios; asserts nothing. Run through benches/run."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from anki.collection import Collection
from anki.sync_pb2 import SyncAuth

import full_sync as common

FILES = int(os.environ.get("BENCH_MEDIA_FILES", "2000"))
SIZE = 20_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def media_sync(col: Collection, auth: SyncAuth) -> float:
    start = time.perf_counter()
    col.sync_media(auth)
    while col.media_sync_status().active:  # raises if the sync failed
        time.sleep(0.01)
    return time.perf_counter() - start


def one_round(name: str, argv: list[str], work: Path, n: int) -> dict:
    data = work / f"{name}-{n}"
    server = common.Proc(argv, data / "server")
    try:
        endpoint = f"http://127.0.0.1:{server.port}/"
        (data / "a").mkdir(parents=True)
        a = Collection(str(data / "a" / "collection.anki2"))
        folder = Path(a.media.dir())
        for i in range(FILES):
            (folder / f"file {i:05}.jpg").write_bytes(os.urandom(SIZE))
        hkey = a.sync_login(username="bench", password="bench", endpoint=endpoint).hkey
        auth = SyncAuth(hkey=hkey, endpoint=endpoint, io_timeout_secs=120)
        server.reset_peak()
        up = media_sync(a, auth)
        up_peak = server.rss_kib("VmHWM")

        (data / "b").mkdir()
        b = Collection(str(data / "b" / "collection.anki2"))
        server.reset_peak()
        down = media_sync(b, auth)
        down_peak = server.rss_kib("VmHWM")
        got = len(os.listdir(b.media.dir()))
        assert got == FILES, got
        a.close()
        b.close()
    finally:
        server.stop()
    return {"upload": up, "download": down, "upload_peak": up_peak, "download_peak": down_peak}


def main() -> None:
    if not common.LEITNER.exists():
        sys.exit(f"{common.LEITNER} is missing: run benches/run")
    servers = common.SERVERS
    samples = {name: [] for name, _ in servers}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(ROUNDS):
            # Take turns, so a slow moment of the machine is shared.
            for name, argv in servers if n % 2 == 0 else reversed(servers):
                samples[name].append(one_round(name, argv, Path(tmp), n))
    print(f"\nmedia sync of {FILES} files of {SIZE // 1000} KB, median of {ROUNDS} rounds; "
          "ratio = leitner / official (lower is better)\n")
    print(f"{'':30}{'leitner':>10}{'official':>10}{'ratio':>8}")
    for label, key, scale in [
        ("upload (s)", "upload", 1.0),
        ("download (s)", "download", 1.0),
        ("peak RSS, upload (MiB)", "upload_peak", 1 / 1024),
        ("peak RSS, download (MiB)", "download_peak", 1 / 1024),
    ]:
        a = statistics.median(s[key] for s in samples["leitner"]) * scale
        b = statistics.median(s[key] for s in samples["official"]) * scale
        print(f"{label:30}{a:10.3f}{b:10.3f}{a / b:8.2f}")


if __name__ == "__main__":
    main()
