"""What one login costs: `/sync/hostKey` with the right password, timed
against leitner (target/release) and the native official server
(../shared/anchors, or OFFICIAL_SERVER=path; see common.py). A login is one PBKDF2 of
600,000 rounds on each side, so this compares the hashing code as built.
Prints medians and the ratio; asserts nothing. Usage:
    python benches/login.py [ROUNDS]"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from common import LEITNER, free_port, official_binary


def login(port: int) -> float:
    body = zstandard.ZstdCompressor().compress(json.dumps({"u": "alice", "p": "secret"}).encode())
    header = json.dumps({"v": 11, "k": "", "c": "bench", "s": ""})
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/sync/hostKey", body=body, headers={"anki-sync": header})
    res = conn.getresponse()
    res.read()
    conn.close()
    assert res.status == 200, res.status
    return time.perf_counter() - started


def measure(command: list[str], data: Path, rounds: int) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_USER1="alice:secret", SYNC_BASE=str(data), SYNC_HOST="127.0.0.1",
               SYNC_PORT=str(port), LEITNER_CONFIG="", RUST_LOG="error")
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                login(port)  # also the warm-up (leitner hashes a plain password on first use)
                break
            except (ConnectionRefusedError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return statistics.median(login(port) for _ in range(rounds))
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = measure([str(LEITNER)], work / "leitner", rounds)
        theirs = measure([str(official_binary())], work / "official", rounds)
    print(f"login (median of {rounds}): leitner {ours * 1000:.0f} ms, "
          f"official {theirs * 1000:.0f} ms, ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
