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

With BENCH_DISK=card (as root) the servers' data is on a file system
formatted and mounted as the image's data partition, on a loop device of
its own, and "written" is what reached that device (data, journal and
metadata, including what a server left unflushed): the card's view. With
BENCH_DISK=slow that device is throttled as a cheap SD card is
(common.Card). Both also count what stopping the server writes (an idle
exit).

    benches/run                          # everything (benches/run builds first)
    python benches/compare.py --json out.json
    BENCH_ROUNDS=5 BENCH_IDLE_SECS=600 BENCH_SETTLE_SECS=60 (the defaults)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
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


def one_round(argv: list[str], source: Path, work: Path, clients: Path, n: int,
              settle: bool, card: common.Card | None) -> dict[str, float]:
    got: dict[str, float] = {}
    server = common.Proc(argv, work / "server")
    count = card.written if card else server.written

    def settled_writes(before: int) -> int:
        """Bytes written since `before`, counting what follows the reply
        (a checkpoint, a snapshot) for a moment."""
        time.sleep(1.5)
        return count() - before

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
            before = count()
            cpu = server.cpu_secs()
            got[key] = run()
            if card and key == "media_up":
                # The official server answers before its files are on the
                # card; leitner after. Both, until they are.
                start = time.perf_counter()
                subprocess.run(["sync", "-f", str(card.mountpoint)], check=True)
                got["media_up_on_card"] = got[key] + time.perf_counter() - start
            got[f"{key}_cpu"] = server.cpu_secs() - cpu
            got[f"{key}_peak"] = server.rss_kib("VmHWM") / 1024
            if written:
                got[f"{key}_written"] = settled_writes(before) / 1024

        step("upload", lambda: common.full_sync(a, auth, upload=True), written=True)
        step("download", lambda: common.full_sync(b, auth, upload=False))
        assert b.note_count() == common.NOTES, b.note_count()

        common.make_changes(a, n, 1000, 500)
        step("push", lambda: common.normal_sync(a, auth))
        step("pull", lambda: common.normal_sync(b, auth))

        # What a typical day's sync costs the card: 100 reviews.
        common.make_changes(a, 20 + n, 100, 0)
        before = count()
        common.normal_sync(a, auth)
        got["reviews100_written"] = settled_writes(before) / 1024

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
        if card:
            # What an exit writes (leitner's idle exit: the last-seen record
            # and the devices' last syncs): SIGTERM, as systemd sends.
            before = count()
            server.stop()
            got["stop_written"] = (count() - before) / 1024
    finally:
        if server.proc.poll() is None:
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
    card = common.card()
    with (card or contextlib.nullcontext(),
          tempfile.TemporaryDirectory(dir=card.mountpoint if card else common.CACHE) as tmp,
          tempfile.TemporaryDirectory(dir=common.CLIENTS) as client_tmp):
        work, clients = Path(tmp), Path(client_tmp)
        for n in range(ROUNDS):
            order = contenders if n % 2 == 0 else list(reversed(contenders))
            for name, argv in order:
                folder = work / f"{name}-{n}"
                client_folder = clients / f"{name}-{n}"
                got = one_round(argv, source, folder, client_folder, n,
                                settle=n == 0 and SETTLE_SECS > 0, card=card)
                shutil.rmtree(folder)
                shutil.rmtree(client_folder)
                for key, value in got.items():
                    samples.setdefault(key, {}).setdefault(name, []).append(value)
                print(f"round {n + 1}/{ROUNDS} {name}: push {got['push']:.3f} s, media up "
                      f"{got['media_up']:.3f} s", flush=True)
        # All servers idle at once: only each process's own count tells them
        # apart.
        idle = (idle_writes(contenders, source, work / "idle", clients / "idle")
                if IDLE_SECS > 0 else {})

    size = source.stat().st_size / 2**20
    where = ""
    if card:
        where = (f"; data on a throttled device ({common.SLOW_WRITE_MBPS:g} MB/s, "
                 f"{common.SLOW_WRITE_IOPS} IOPS writes)" if card.slow
                 else "; data on a card-like device at RAM speed")
    times = common.Table(f"Sync times, {common.NOTES}-note collection ({size:.1f} MiB), "
                         f"median (min-max) of {ROUNDS} rounds{where}", names)
    for label, key in [
        ("full upload", "upload"),
        ("full download", "download"),
        ("normal sync push, 1,000 reviews + 500 edits", "push"),
        ("normal sync pull, the same", "pull"),
        (f"media upload, {MEDIA_FILES} files of 20 KB", "media_up"),
        ("media download, the same", "media_down"),
    ]:
        times.add(label, "s", samples[key])
        if key == "media_up" and "media_up_on_card" in samples:
            times.add("media upload, until on the card (answer, then flush)", "s",
                      samples["media_up_on_card"])
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
    disk = common.Table("Written to the card's device (data, journal, metadata)" if card
                        else "Written to disk (/proc/PID/io write_bytes)", names)
    disk.add("per full upload", "KiB", samples["upload_written"])
    disk.add("per 100-review normal sync", "KiB", samples["reviews100_written"])
    disk.add(f"per media batch ({MEDIA_FILES} x 20 KB)", "KiB", samples["media_up_written"])
    if "stop_written" in samples:
        disk.add("per exit (SIGTERM, as an idle exit)", "KiB", samples["stop_written"])
    if idle:
        disk.add(f"idle {IDLE_SECS} s (the process's own count)", "KiB",
                 {name: [kib] for name, kib in idle.items()})
    tables = [times, cpu, memory, disk]
    for table in tables:
        table.print()
    common.write_json(args.json, tables)


if __name__ == "__main__":
    main()
