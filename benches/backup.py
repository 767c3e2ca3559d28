"""Backups at a family's size: leitner's own repository against restic (the
well-kept backup tool Debian ships, which issue 23 weighed against it).

The data folder holds one user with the generated collection (BENCH_NOTES
notes, 30,000 by default) and BACKUP_MEDIA_MB of media (2,000 by default:
incompressible files of 50 KB to 1 MB, as photos are), built once and kept
in target/bench. Each contender makes a first backup, then "a day" happens
(500 reviews written into the collection, 20 new pictures) and it makes a
nightly one. Both encrypt (restic always does; leitner with a passphrase).
Page caches are dropped before each run (root), so "read" is what came off
the disk.

For each run: seconds, peak RSS, bytes read from and written to the disk
(the kernel's counts for the process: getrusage's inblock/oublock), and how
much the repository grew.

    benches/backup.py            (as root; restic from Debian's package)
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from hashlib import sha1
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

MEDIA_MB = int(os.environ.get("BACKUP_MEDIA_MB", "2000"))
PASSPHRASE = "correct horse battery staple"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_data() -> Path:
    """The data folder, built once: data/bench/{collection.anki2, media.db, media/}."""
    built = common.CACHE / f"backup-data-{common.NOTES}-{MEDIA_MB}"
    if (built / "done").exists():
        return built / "data"
    if built.exists():
        shutil.rmtree(built)
    user = built / "data" / "bench"
    (user / "media").mkdir(parents=True)
    shutil.copy(common.template(), user / "collection.anki2")
    db = media_db(user)
    rng = random.Random(23)
    total, n = 0, 0
    while total < MEDIA_MB * 1_000_000:
        size = rng.randint(50_000, 1_000_000)
        add_media(db, user, f"photo-{n:05}.jpg", rng.randbytes(size), usn=n + 1)
        total += size
        n += 1
    db.commit()
    db.close()
    (built / "done").write_text(f"{n} files, {total} bytes\n")
    return built / "data"


def media_db(user: Path) -> sqlite3.Connection:
    db = sqlite3.connect(user / "media.db")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS media (fname TEXT NOT NULL PRIMARY KEY, csum BLOB NOT NULL,
            size INTEGER NOT NULL, usn INTEGER NOT NULL, mtime INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS ix_usn ON media (usn);
        CREATE TABLE IF NOT EXISTS meta (last_usn INTEGER NOT NULL, total_bytes INTEGER NOT NULL,
            total_nonempty_files INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS leitner_pending (fname TEXT NOT NULL PRIMARY KEY, staged TEXT);
        PRAGMA user_version = 4;
        """
    )
    return db


def add_media(db: sqlite3.Connection, user: Path, name: str, data: bytes, usn: int) -> None:
    (user / "media" / name).write_bytes(data)
    db.execute("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?)",
               (name, sha1(data).digest(), len(data), usn, int(time.time())))


def a_day(data: Path, day: int) -> None:
    """500 reviews and 20 new pictures, as a day of a family's use leaves them."""
    user = data / "bench"
    rng = random.Random(1000 + day)
    col = sqlite3.connect(user / "collection.anki2")
    ids = [r[0] for r in col.execute("SELECT id FROM cards")]
    now = int(time.time())
    for i, cid in enumerate(rng.sample(ids, min(500, len(ids)))):
        col.execute("UPDATE cards SET mod = ?, usn = -1, type = 2, queue = 2, due = ?, ivl = ?, "
                    "reps = reps + 1 WHERE id = ?", (now, 100 + rng.randint(1, 30), rng.randint(1, 30), cid))
        col.execute("INSERT INTO revlog VALUES (?, ?, -1, 3, 5, 1, 2500, 8000, 1)",
                    (now * 1000 + day * 1_000_000 + i, cid))
    col.execute("UPDATE col SET mod = ?", (now * 1000,))
    col.commit()
    col.close()
    db = media_db(user)
    for i in range(20):
        add_media(db, user, f"day{day}-{i}.jpg", rng.randbytes(rng.randint(100_000, 900_000)), usn=10**6 + day * 100 + i)
    db.commit()
    db.close()


def run(argv: list[str], env: dict, repo: Path) -> dict:
    """One run, with the kernel's counts for it (a child of its own)."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3")
    before = folder_size(repo) if repo.exists() else 0
    ran = common.run_command(argv, env)
    return {
        "seconds": ran["seconds"],
        "rss_mib": ran["rss_mib"],
        "read_mb": ran["read"] / 1e6,
        "written_mb": ran["written"] / 1e6,
        "grew_mb": (folder_size(repo) - before) / 1e6,
    }


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (it drops the page cache between runs)")
    if not shutil.which("restic"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True)
    source = build_data()
    work = common.CACHE / "backup-work"
    rows = []
    version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[1]
    for name in ["leitner", f"restic {version}"]:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        data = work / "data"
        subprocess.run(["cp", "-a", str(source), str(data)], check=True)
        dest = work / "dest"
        dest.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "LEITNER_"))}
        if name == "leitner":
            passfile = work / "passphrase"
            passfile.write_text(PASSPHRASE + "\n")
            env.update(SYNC_BASE=str(data), SYNC_USER1="bench:bench", LEITNER_CONFIG="")
            argv = [str(common.LEITNER), "backup", str(dest), "--passphrase-file", str(passfile)]
            repo = dest / "leitner-backups"
        else:
            repo = dest / "restic"
            env.update(RESTIC_PASSWORD=PASSPHRASE, RESTIC_CACHE_DIR=str(work / "restic-cache"))
            subprocess.run(["restic", "-q", "-r", str(repo), "init"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            argv = ["restic", "-q", "-r", str(repo), "backup", str(data)]
        first = run(argv, env, repo)
        a_day(data, 1)
        nightly = run(argv, env, repo)
        rows.append((name, first, nightly))
        print(f"{name}: first {first}\n{name}: nightly {nightly}", file=sys.stderr)
    shutil.rmtree(work)

    files = (source.parent / "done").read_text().strip()
    print(f"\ndata: {common.NOTES} notes, {files} of media; a day: 500 reviews, 20 new pictures")
    print(f"{'':24}{'seconds':>9}{'peak RSS MiB':>14}{'read MB':>10}{'written MB':>12}{'repo grew MB':>14}")
    for name, first, nightly in rows:
        for label, r in [("first", first), ("nightly", nightly)]:
            print(f"{name + ' ' + label:24}{r['seconds']:>9.1f}{r['rss_mib']:>14.1f}"
                  f"{r['read_mb']:>10.1f}{r['written_mb']:>12.1f}{r['grew_mb']:>14.1f}")


if __name__ == "__main__":
    main()
