"""leitner against the native official server at a family's real size: a
collection of SCALE_NOTES notes (200,000 by default, about 100 MB: one card
each, most of them reviewed, with their review history) and SCALE_MEDIA
media files (20,000, about 1 GB, incompressible, 20-80 KB each, as photos
and sound clips are).

Each round starts both servers afresh, in turns, and runs, from real Anki
clients: a full upload and a full download, a normal sync of a day's
reviews (500), a media upload of everything and a media sync of everything
to an empty device. Then, on leitner's data (leitner only: the official
server has no such steps): `leitner check`, `leitner snapshot take` and
`leitner backup` into a folder, each as its own process beside the running
server. For every step: time, the process's peak RSS (the server's VmHWM,
reset before the step; a command's ru_maxrss) and bytes written.

The data is generated with SQL (not 200,000 client calls) and kept in
target/bench/scale-NOTES-MEDIA; the clients' copies live in /dev/shm
(BENCH_CLIENTS), the servers' data on disk (target/bench), or with
BENCH_DISK=card|slow on a card-like device whose own count of bytes is
reported (see compare.py). Prints medians with their range and the ratio
leitner / official; asserts nothing.

    benches/run scale                   # builds, then runs this
    SCALE_ROUNDS=3 SCALE_NOTES=200000 SCALE_MEDIA=20000 (the defaults)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from anki.collection import Collection

import common

ROUNDS = int(os.environ.get("SCALE_ROUNDS", "3"))
NOTES = int(os.environ.get("SCALE_NOTES", "200000"))
MEDIA = int(os.environ.get("SCALE_MEDIA", "20000"))
REVIEWS = 500
# The service's memory ceiling (systemd/leitner.service MemoryMax).
CEILING_MIB = 192

WORDS = [
    "".join(random.Random(i).choice("aeioukmnprstlgdbhyw") for _ in range(3 + i % 8))
    for i in range(3000)
]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build() -> Path:
    """The client's collection and media folder, built once."""
    built = common.CACHE / f"scale-{NOTES}-{MEDIA}"
    if (built / "done").exists():
        return built
    if built.exists():
        shutil.rmtree(built)
    (built / "media").mkdir(parents=True)
    path = built / "collection.anki2"
    col = Collection(str(path))
    mid = col.models.by_name("Basic")["id"]
    col.close()

    rng = random.Random(26)
    db = sqlite3.connect(path)
    now = int(time.time())
    crt = db.execute("SELECT crt FROM col").fetchone()[0]
    today = (now - crt) // 86400
    base = (now - 3 * 365 * 86400) * 1000

    def notes():
        for i in range(NOTES):
            front = f"{text(rng, 3 + i % 6)} ({i})"
            back = text(rng, 3 + i % 10)
            if i < MEDIA:
                back += f' <img src="scale-{i:05}.jpg">'
            guid = hashlib.sha1(f"scale {i}".encode()).hexdigest()[:10]
            csum = int(hashlib.sha1(front.encode()).hexdigest()[:8], 16)
            yield (base + i, guid, mid, now, -1, f" chapter{i % 40} ", f"{front}\x1f{back}",
                   front, csum, 0, "")

    db.executemany("INSERT INTO notes VALUES (?,?,?,?,?,?,?,?,?,?,?)", notes())

    revlog = []

    def cards():
        for i in range(NOTES):
            cid = base + i
            if rng.random() < 0.3:  # new
                yield (cid, cid, 1, 0, now, -1, 0, 0, i, 0, 0, 0, 0, 0, 0, 0, 0, "")
                continue
            reps = rng.randint(1, 8)
            ivl = rng.randint(1, 400)
            lapses = rng.randint(0, 3)
            yield (cid, cid, 1, 0, now, -1, 2, 2, today + rng.randint(-10, ivl), ivl, 2500,
                   reps, lapses, 0, 0, 0, 0, "")
            at = base + NOTES + i * 20
            last = 0
            for r in range(reps):
                nxt = max(1, last * 2 + rng.randint(0, 3))
                revlog.append((at + r, cid, -1, rng.choice((1, 3, 3, 3, 4)), nxt, last, 2500,
                               rng.randint(2000, 20000), 1 if r else 0))
                last = nxt

    db.executemany("INSERT INTO cards VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", cards())
    db.executemany("INSERT INTO revlog VALUES (?,?,?,?,?,?,?,?,?)", revlog)
    # The tags the notes carry; the column's collation is Anki's own.
    db.create_collation("unicase", lambda x, y: (x.lower() > y.lower()) - (x.lower() < y.lower()))
    db.executemany("INSERT OR IGNORE INTO tags VALUES (?, -1, 0, NULL)",
                   [(f"chapter{i}",) for i in range(40)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    col = Collection(str(path))
    assert col.note_count() == NOTES, col.note_count()
    col.close()

    for i in range(MEDIA):
        (built / "media" / f"scale-{i:05}.jpg").write_bytes(rng.randbytes(rng.randint(20_000, 80_000)))
    (built / "done").write_text(f"{NOTES} notes, {MEDIA} media files\n")
    return built


def one_round(name: str, argv: list[str], built: Path, work: Path, clients: Path,
              card: common.Card | None) -> dict:
    got: dict[str, float] = {}
    server = common.Proc(argv, work / "server")
    count = card.written if card else server.written
    try:
        a_dir, b_dir = clients / "a", clients / "b"
        a_dir.mkdir(parents=True)
        b_dir.mkdir()
        shutil.copy(built / "collection.anki2", a_dir / "collection.anki2")
        a = Collection(str(a_dir / "collection.anki2"))
        shutil.copytree(built / "media", a.media.dir(), dirs_exist_ok=True)
        b = Collection(str(b_dir / "collection.anki2"))
        auth = common.login(a, server.endpoint)

        def step(key: str, run) -> None:
            os.sync()
            server.reset_peak()
            before = count()
            got[key] = run()
            got[f"{key}_peak"] = server.rss_kib("VmHWM") / 1024
            time.sleep(1.5)
            got[f"{key}_written"] = (count() - before) / 1024

        step("upload", lambda: common.full_sync(a, auth, upload=True))
        step("download", lambda: common.full_sync(b, auth, upload=False))
        common.make_changes(a, 0, REVIEWS, 0)
        step("reviews", lambda: common.normal_sync(a, auth))
        step("media_up", lambda: common.media_sync(a, auth))
        step("media_down", lambda: common.media_sync(b, auth))
        assert len(os.listdir(b.media.dir())) == MEDIA, len(os.listdir(b.media.dir()))
        a.close()
        b.close()

        if name == "leitner":
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "LEITNER_"))}
            env.update(SYNC_BASE=str(work / "server"), SYNC_USER1="bench:bench", LEITNER_CONFIG="")
            (work / "backups").mkdir()
            for key, cmd in [("check", ["check"]), ("snapshot", ["snapshot", "take", "bench"]),
                             ("backup", ["backup", str(work / "backups")])]:
                before = count() if card else 0
                ran = common.run_command([str(common.LEITNER), *cmd], env)
                written = count() - before if card else ran["written"]
                got[key], got[f"{key}_peak"] = ran["seconds"], ran["rss_mib"]
                got[f"{key}_written"] = written / 1024
    finally:
        server.stop()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args()
    contenders = common.servers()
    names = [name for name, _ in contenders]
    built = build()
    size = (built / "collection.anki2").stat().st_size / 1e6
    media = sum(p.stat().st_size for p in (built / "media").iterdir()) / 1e9
    samples: dict[str, dict[str, list[float]]] = {}
    card = common.card()
    if card:
        card.size_gb = 8
    with (card or contextlib.nullcontext(),
          tempfile.TemporaryDirectory(dir=card.mountpoint if card else common.CACHE) as tmp,
          tempfile.TemporaryDirectory(dir=common.CLIENTS) as client_tmp):
        for n in range(ROUNDS):
            order = contenders if n % 2 == 0 else list(reversed(contenders))
            for name, argv in order:
                work, clients = Path(tmp) / f"{name}-{n}", Path(client_tmp) / f"{name}-{n}"
                got = one_round(name, argv, built, work, clients, card)
                shutil.rmtree(work)
                shutil.rmtree(clients)
                for key, value in got.items():
                    samples.setdefault(key, {}).setdefault(name, []).append(value)
                print(f"round {n + 1}/{ROUNDS} {name}: upload {got['upload']:.1f} s, "
                      f"media up {got['media_up']:.1f} s", flush=True)

    steps = [("full upload", "upload"), ("full download", "download"),
             (f"normal sync, {REVIEWS} reviews", "reviews"),
             ("media upload, everything", "media_up"),
             ("media download to an empty device", "media_down"),
             ("leitner check", "check"), ("leitner snapshot take", "snapshot"),
             ("leitner backup (first, into a folder)", "backup")]
    title = f"{NOTES:,} notes ({size:.0f} MB), {MEDIA:,} media files ({media:.2f} GB)"
    times = common.Table(f"Times at scale: {title}, median (min-max) of {ROUNDS} rounds", names)
    memory = common.Table(f"Peak RSS (the service's ceiling: {CEILING_MIB} MiB)", names)
    disk = common.Table("Written to the card's device (data, journal, metadata)" if card
                        else "Written to disk (the process's own count)", names)
    for label, key in steps:
        if key in samples:
            times.add(label, "s", samples[key])
            memory.add(label, "MiB", samples[f"{key}_peak"])
            disk.add(label, "KiB", samples[f"{key}_written"])
    tables = [times, memory, disk]
    for table in tables:
        table.print()
    common.write_json(args.json, tables)


if __name__ == "__main__":
    main()
