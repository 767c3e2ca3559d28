"""leitner against the native official server, workload by workload, on a
generated 30,000-note collection: full upload and download, a normal sync
pushing and pulling 1,000 reviews and 500 note edits, media upload and
download of 500 files of 20 KB; each server's CPU time and peak RSS during
each, RSS after the workload and a minute later, and what each wrote to
disk (per full upload, per 100-review normal sync, per media batch, and
while idle).

Every round starts both servers afresh and runs them in turns (the order
alternating), so a slow moment of the machine is shared. The servers' data
is on disk (target/bench), the clients' in /dev/shm (BENCH_CLIENTS), so
each server's disk counters see only what it writes. Prints medians
with their range and the ratio leitner / official; asserts nothing.

    benches/run                          # everything (benches/run builds first)
    python benches/compare.py --json out.json
    BENCH_ROUNDS=5 BENCH_IDLE_SECS=600 BENCH_SETTLE_SECS=60 (the defaults)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from anki.collection import Collection

import common

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MEDIA_FILES = int(os.environ.get("BENCH_MEDIA_FILES", "500"))
MEDIA_SIZE = 20_000
IDLE_SECS = int(os.environ.get("BENCH_IDLE_SECS", "600"))
SETTLE_SECS = int(os.environ.get("BENCH_SETTLE_SECS", "60"))


def settled_writes(server: common.Proc, before: int) -> int:
    """Bytes written since `before`, counting what follows the reply
    (a checkpoint, a snapshot) for a moment."""
    time.sleep(1.5)
    return server.written() - before


def one_round(argv: list[str], source: Path, work: Path, clients: Path, n: int,
              settle: bool) -> dict[str, float]:
    got: dict[str, float] = {}
    server = common.Proc(argv, work / "server")
    try:
        time.sleep(0.3)
        got["rss_start"] = server.rss_kib() / 1024
        a_dir, b_dir = clients / "a", clients / "b"
        a_dir.mkdir(parents=True)
        b_dir.mkdir()
        shutil.copy(source, a_dir / "collection.anki2")
        a = Collection(str(a_dir / "collection.anki2"))
        b = Collection(str(b_dir / "collection.anki2"))
        auth = common.login(a, server.endpoint)

        def step(key: str, run, written: bool = False) -> None:
            # What earlier steps (of either server) left unwritten goes to
            # disk now, so no step pays for another's: leitner's media
            # batches flush the whole file system.
            os.sync()
            server.reset_peak()
            before = server.written()
            cpu = server.cpu_secs()
            got[key] = run()
            got[f"{key}_cpu"] = server.cpu_secs() - cpu
            got[f"{key}_peak"] = server.rss_kib("VmHWM") / 1024
            if written:
                got[f"{key}_written"] = settled_writes(server, before) / 1024

        step("upload", lambda: common.full_sync(a, auth, upload=True), written=True)
        step("download", lambda: common.full_sync(b, auth, upload=False))
        assert b.note_count() == common.NOTES, b.note_count()

        common.make_changes(a, n, 1000, 500)
        step("push", lambda: common.normal_sync(a, auth))
        step("pull", lambda: common.normal_sync(b, auth))

        # What a typical day's sync costs the card: 100 reviews.
        common.make_changes(a, 20 + n, 100, 0)
        before = server.written()
        common.normal_sync(a, auth)
        got["reviews100_written"] = settled_writes(server, before) / 1024

        folder = Path(a.media.dir())
        for i in range(MEDIA_FILES):
            (folder / f"file {n}-{i:05}.jpg").write_bytes(os.urandom(MEDIA_SIZE))
        step("media_up", lambda: common.media_sync(a, auth), written=True)
        step("media_down", lambda: common.media_sync(b, auth))
        assert len(os.listdir(b.media.dir())) == MEDIA_FILES
        a.close()
        b.close()

        got["rss_after"] = server.rss_kib() / 1024
        if settle:
            time.sleep(SETTLE_SECS)
            got["rss_settled"] = server.rss_kib() / 1024
    finally:
        server.stop()
    return got


def idle_writes(contenders: list[tuple[str, list[str]]], source: Path, work: Path,
                clients: Path) -> dict[str, float]:
    """Bytes each server writes in IDLE_SECS with nothing to do, after one
    small sync, all servers idling at the same time."""
    procs, before = {}, {}
    try:
        for name, argv in contenders:
            procs[name] = server = common.Proc(argv, work / name / "server")
            (clients / name / "a").mkdir(parents=True)
            shutil.copy(source, clients / name / "a" / "collection.anki2")
            col = Collection(str(clients / name / "a" / "collection.anki2"))
            auth = common.login(col, server.endpoint)
            common.full_sync(col, auth, upload=True)
            common.make_changes(col, 0, 10, 0)
            common.normal_sync(col, auth)
            col.close()
        time.sleep(5)
        for name, server in procs.items():
            before[name] = server.written()
        time.sleep(IDLE_SECS)
        return {name: (server.written() - before[name]) / 1024 for name, server in procs.items()}
    finally:
        for server in procs.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args()
    contenders = common.servers()
    names = [name for name, _ in contenders]
    source = common.template()
    samples: dict[str, dict[str, list[float]]] = {}
    common.CACHE.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(dir=common.CACHE) as tmp,
          tempfile.TemporaryDirectory(dir=common.CLIENTS) as client_tmp):
        work, clients = Path(tmp), Path(client_tmp)
        for n in range(ROUNDS):
            order = contenders if n % 2 == 0 else list(reversed(contenders))
            for name, argv in order:
                folder = work / f"{name}-{n}"
                client_folder = clients / f"{name}-{n}"
                got = one_round(argv, source, folder, client_folder, n,
                                settle=n == 0 and SETTLE_SECS > 0)
                shutil.rmtree(folder)
                shutil.rmtree(client_folder)
                for key, value in got.items():
                    samples.setdefault(key, {}).setdefault(name, []).append(value)
                print(f"round {n + 1}/{ROUNDS} {name}: push {got['push']:.3f} s, media up "
                      f"{got['media_up']:.3f} s", flush=True)
        idle = (idle_writes(contenders, source, work / "idle", clients / "idle")
                if IDLE_SECS > 0 else {})

    size = source.stat().st_size / 2**20
    times = common.Table(f"Sync times, {common.NOTES}-note collection ({size:.1f} MiB), "
                         f"median (min-max) of {ROUNDS} rounds", names)
    for label, key in [
        ("full upload", "upload"),
        ("full download", "download"),
        ("normal sync push, 1,000 reviews + 500 edits", "push"),
        ("normal sync pull, the same", "pull"),
        (f"media upload, {MEDIA_FILES} files of 20 KB", "media_up"),
        ("media download, the same", "media_down"),
    ]:
        times.add(label, "s", samples[key])
    steps = [("full upload", "upload"), ("full download", "download"), ("normal sync push", "push"),
             ("normal sync pull", "pull"), ("media upload", "media_up"), ("media download", "media_down")]
    cpu = common.Table("Server CPU time (user + system), per workload", names)
    for label, key in steps:
        cpu.add(label, "s", samples[f"{key}_cpu"])
    memory = common.Table("Memory (RSS)", names)
    for label, key in steps:
        memory.add(f"peak, {label}", "MiB", samples[f"{key}_peak"])
    for label, key in [
        ("after start", "rss_start"),
        ("after the workload", "rss_after"),
        (f"{SETTLE_SECS} s after the workload", "rss_settled"),
    ]:
        if key in samples:
            memory.add(label, "MiB", samples[key])
    disk = common.Table("Written to disk (/proc/PID/io write_bytes)", names)
    disk.add("per full upload", "KiB", samples["upload_written"])
    disk.add("per 100-review normal sync", "KiB", samples["reviews100_written"])
    disk.add(f"per media batch ({MEDIA_FILES} x 20 KB)", "KiB", samples["media_up_written"])
    if idle:
        disk.add(f"idle {IDLE_SECS} s", "KiB", {name: [kib] for name, kib in idle.items()})
    tables = [times, cpu, memory, disk]
    for table in tables:
        table.print()
    common.write_json(args.json, tables)


if __name__ == "__main__":
    main()
