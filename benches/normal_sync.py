"""Normal syncs, leitner against the official server (same pinned package):
push and pull of 1,000 reviews and 500 note edits on a 30,000-note
collection, and 8 users syncing at once against one alone. Prints times as
ratios; asserts nothing. Run through benches/run."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from anki.collection import Collection
from anki.sync_pb2 import SyncAuth

import full_sync as common

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
USERS = 8


def login(col: Collection, endpoint: str, user: str) -> SyncAuth:
    hkey = col.sync_login(username=user, password=user, endpoint=endpoint).hkey
    return SyncAuth(hkey=hkey, endpoint=endpoint, io_timeout_secs=120)


def make_changes(col: Collection, n: int, reviews: int, edits: int) -> None:
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


def push_pull(name: str, argv: list[str], source: Path, work: Path) -> dict:
    data = work / name
    server = common.Proc(argv, data / "server")
    samples = {"push": [], "pull": []}
    try:
        endpoint = f"http://127.0.0.1:{server.port}/"
        (data / "a").mkdir(parents=True)
        shutil.copy(source, data / "a" / "collection.anki2")
        a = Collection(str(data / "a" / "collection.anki2"))
        b = Collection(str(data / "b.anki2"))
        hkey = a.sync_login(username="bench", password="bench", endpoint=endpoint).hkey
        auth = SyncAuth(hkey=hkey, endpoint=endpoint, io_timeout_secs=120)
        common.full_sync(a, auth, upload=True)
        common.full_sync(b, auth, upload=False)
        for n in range(ROUNDS):
            make_changes(a, n, 1000, 500)
            start = time.perf_counter()
            a.sync_collection(auth, sync_media=False)
            samples["push"].append(time.perf_counter() - start)
            start = time.perf_counter()
            b.sync_collection(auth, sync_media=False)
            samples["pull"].append(time.perf_counter() - start)
        a.close()
        b.close()
    finally:
        server.stop()
    return samples


def _user_sync(args) -> float:
    path, endpoint, user, barrier_dir = args
    col = Collection(path)
    auth = SyncAuth(hkey=open(path + ".hkey").read(), endpoint=endpoint, io_timeout_secs=120)
    # Wait for the others, then all sync at once.
    Path(barrier_dir, user).touch()
    while len(os.listdir(barrier_dir)) < int(os.environ["BENCH_PARTIES"]):
        time.sleep(0.001)
    start = time.perf_counter()
    try:
        col.sync_collection(auth, sync_media=False)
    except Exception as e:
        # Anki's errors do not survive pickling back to the parent: send text.
        raise RuntimeError(f"{user}: {type(e).__name__}: {e}") from None
    finally:
        elapsed = time.perf_counter() - start
        col.close()
    return elapsed


def many_users(name: str, argv: list[str], source: Path, work: Path) -> dict:
    data = work / f"{name}-many"
    users = [f"user{i}" for i in range(USERS)]
    server = common.Proc(argv, data / "server", users=[f"{u}:{u}" for u in users])
    samples = {"one": [], "eight": []}
    try:
        endpoint = f"http://127.0.0.1:{server.port}/"
        paths = []
        for u in users:
            (data / u).mkdir(parents=True)
            path = data / u / "collection.anki2"
            shutil.copy(source, path)
            col = Collection(str(path))
            auth = login(col, endpoint, u)
            common.full_sync(col, auth, upload=True)
            col.close()
            Path(str(path) + ".hkey").write_text(auth.hkey)
            paths.append(str(path))
        for n in range(ROUNDS):
            for label, parties in (("one", users[:1]), ("eight", users)):
                for u in parties:
                    col = Collection(str(data / u / "collection.anki2"))
                    make_changes(col, 2 * n + (label == "eight"), 200, 100)
                    col.close()
                barrier = tempfile.mkdtemp(dir=data)
                os.environ["BENCH_PARTIES"] = str(len(parties))
                with multiprocessing.get_context("spawn").Pool(len(parties)) as pool:
                    start = time.perf_counter()
                    pool.map(_user_sync, [(str(data / u / "collection.anki2"), endpoint, u, barrier) for u in parties])
                    samples[label].append(time.perf_counter() - start)
    finally:
        server.stop()
    return samples


def main() -> None:
    if not common.LEITNER.exists():
        sys.exit(f"{common.LEITNER} is missing: run benches/run")
    source = common.template()
    servers = common.SERVERS
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {}
        for name, argv in servers:
            results[name] = {} if os.environ.get("BENCH_SKIP_PUSH") else push_pull(name, argv, source, work)
            if not os.environ.get("BENCH_SKIP_MANY"):
                results[name] |= many_users(name, argv, source, work)
    ours, theirs = results["leitner"], results["official"]
    print(f"\nnormal syncs on a {common.NOTES}-note collection, median of {ROUNDS} rounds; "
          "ratio = leitner / official (lower is better)\n")
    print(f"{'':44}{'leitner':>10}{'official':>10}{'ratio':>8}")
    for label, key in [
        ("push 1,000 reviews + 500 edits (s)", "push"),
        ("pull 1,000 reviews + 500 edits (s)", "pull"),
        ("1 user, 200 reviews + 100 edits (s)", "one"),
        (f"{USERS} users at once, each the same (s)", "eight"),
    ]:
        if key not in ours:
            continue
        a, b = statistics.median(ours[key]), statistics.median(theirs[key])
        print(f"{label:44}{a:10.3f}{b:10.3f}{a / b:8.2f}")
    for name, r in (("leitner", ours), ("official", theirs)):
        if "one" in r:
            print(f"{name}: {USERS} users at once take {statistics.median(r['eight']) / statistics.median(r['one']):.2f}x one user's time")


if __name__ == "__main__":
    main()
