"""Starting leitner (and the official server) and driving real Anki clients."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from anki.collection import Collection
from anki.sync_pb2 import SyncAuth

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("LEITNER_BIN", ROOT / "target" / "debug" / "leitner"))


class Server:
    """A leitner process on 127.0.0.1. Port 0 picks a free port on first start;
    restarts keep it, so clients keep their endpoint."""

    def __init__(self, data: Path, users=("alice:secret",), env=None, port=0):
        self.data = data
        self.users = users
        self.extra_env = dict(env or {})
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "LISTEN_"))}
        for i, user in enumerate(self.users, 1):
            env[f"SYNC_USER{i}"] = user
        env.update(SYNC_BASE=str(self.data), SYNC_HOST="127.0.0.1", SYNC_PORT=str(self.port))
        env["LEITNER_CONFIG"] = ""  # never this machine's /etc/leitner/leitner.conf
        env.update(self.extra_env)
        return env

    def start(self, argv=None, **popen) -> "Server":
        self.lines = []
        self._ready.clear()
        self.proc = subprocess.Popen(
            argv or [str(BINARY)],
            env=popen.pop("env", None) or self.env(),
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError("leitner did not start:\n" + "".join(self.lines))
        return self

    def _read_log(self, proc):
        for line in proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on http://(?:\[[^\]]*\]|[^:/]+):(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def auth(self, hkey: str, endpoint: str | None = None) -> SyncAuth:
        return SyncAuth(hkey=hkey, endpoint=endpoint or self.endpoint, io_timeout_secs=30)

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"leitner ignored {sig!r} for {timeout} s:\n{self.log()}")

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))

    def log(self) -> str:
        return "".join(self.lines)


def leitner(server: Server, *args, stdin: str | None = None, check=True) -> subprocess.CompletedProcess:
    """Runs a management command (`leitner user add ...`) with the server's
    environment, as an admin would beside it."""
    done = subprocess.run(
        [str(BINARY), *map(str, args)],
        env=server.env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"leitner {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


class OfficialServer(Server):
    """`python -m anki.syncserver` from the same pinned package, for
    differential tests: the same steps must give the same results."""

    def start(self, argv=None, **popen) -> "Server":
        import sys

        if not self.port:
            self.port = free_port()
        self.lines = []
        env = self.env()
        env.setdefault("RUST_LOG", "error")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anki.syncserver"], env=env, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()

        if not wait_for(lambda: accepting(self.port), timeout=60):
            self.stop(signal.SIGKILL)
            raise RuntimeError("the official server did not start:\n" + self.log())
        return self


class Device:
    """One client device: its own folder and collection, like a phone or a PC."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "collection.anki2"
        self.col = Collection(str(self.path))

    def login(self, server: Server, user="alice", password="secret", endpoint=None) -> SyncAuth:
        endpoint = endpoint or server.endpoint
        hkey = self.col.sync_login(username=user, password=password, endpoint=endpoint).hkey
        return server.auth(hkey, endpoint)

    def sync(self, auth: SyncAuth) -> int:
        return self.col.sync_collection(auth, sync_media=False).required

    def full_sync(self, auth: SyncAuth, upload: bool) -> None:
        self.col.close_for_full_sync()
        try:
            self.col.full_upload_or_download(auth=auth, server_usn=None, upload=upload)
        finally:
            self.col.reopen(after_full_sync=True)

    def sync_media(self, auth: SyncAuth, timeout=120) -> None:
        """A media sync to the end; raises what the client raised."""
        self.col.sync_media(auth)
        deadline = time.monotonic() + timeout
        while self.col.media_sync_status().active:
            if time.monotonic() > deadline:
                raise AssertionError("media sync did not finish")
            time.sleep(0.05)

    @property
    def media_dir(self) -> Path:
        return Path(self.col.media.dir())

    def media_files(self) -> dict[str, str]:
        return media_files(self.media_dir)

    def close(self) -> None:
        self.col.close()


def media_files(folder: Path) -> dict[str, str]:
    """name -> SHA-1 of every file in a media folder."""
    import hashlib

    return {
        p.name: hashlib.sha1(p.read_bytes()).hexdigest()
        for p in folder.iterdir()
        if p.is_file()
    }


def unicase_compare(a: str, b: str) -> int:
    # Close enough to the unicase crate for reading; we never rely on its order here.
    a, b = a.casefold(), b.casefold()
    return (a > b) - (a < b)


def open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.create_collation("unicase", unicase_compare)
    return db


TABLES = [
    "col", "notes", "cards", "revlog", "graves", "decks", "deck_config",
    "notetypes", "fields", "templates", "tags", "config",
]


def dump(path: Path, skip_columns=()) -> dict[str, list[tuple]]:
    """Every row of every collection table, in a stable order."""
    db = open_db(path)
    out = {}
    for table in TABLES:
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] not in skip_columns]
        rows = db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
        out[table] = sorted(rows, key=repr)
    db.close()
    return out


def synced_content(dev: "Device") -> dict[str, list[tuple]]:
    """What two synced devices must agree on: every table, less per-device
    bookkeeping: usn (pending changes are -1 on a client); col.mod/col.ls,
    the stamp of the last finish each device took part in (every finish moves
    the server's mod, as the official server's does); and config.mtime_secs,
    which each device stamps itself when it stores a value (config travels as
    a bare key/value map)."""
    tables = dump(dev.path, skip_columns=("usn", "ls"))
    tables["col"] = [row[:2] + row[3:] for row in tables["col"]]  # drop col.mod
    tables["config"] = [(key, val) for key, _mtime, val in tables["config"]]
    return tables


def assert_same(a: "Device", b: "Device") -> None:
    ta, tb = synced_content(a), synced_content(b)
    for table in ta:
        only_a = [r for r in ta[table] if r not in tb[table]]
        only_b = [r for r in tb[table] if r not in ta[table]]
        assert ta[table] == tb[table], f"{table} differs:\n  only in a: {only_a}\n  only in b: {only_b}"


def make_rich_collection(col: Collection, notes: int = 1000, reviews: int = 200) -> None:
    """Decks (nested), presets, notetypes, tags, notes and real review history."""
    fast = col.decks.add_config_returning_id("Fast")
    conf = col.decks.get_config(fast)
    conf["new"]["perDay"] = 500
    conf["rev"]["perDay"] = 900
    col.decks.update_config(conf)
    decks = []
    for name in ["Languages::Spanish", "Languages::Français", "Science", "Science::Physics", "Ωmega"]:
        did = col.decks.id(name)
        decks.append(did)
        if name.startswith("Languages"):
            deck = col.decks.get(did)
            deck["conf"] = fast
            col.decks.save(deck)
    vocab = col.models.copy(col.models.by_name("Basic"))
    vocab["name"] = "Vocab"
    col.models.add_field(vocab, col.models.new_field("Example"))
    col.models.update_dict(vocab)
    vocab = col.models.by_name("Vocab")
    basic = col.models.by_name("Basic")
    reverse = col.models.by_name("Basic (and reversed card)")
    cloze = col.models.by_name("Cloze")
    for i in range(notes):
        kind = i % 4
        if kind == 0:
            note = col.new_note(basic)
            note["Front"], note["Back"] = f"<b>front {i}</b> &amp; ü", f"back {i}"
        elif kind == 1:
            note = col.new_note(reverse)
            note["Front"], note["Back"] = f"{i}", f"число {i}"
        elif kind == 2:
            note = col.new_note(vocab)
            note["Front"], note["Back"], note["Example"] = f"word {i}", f"mot {i}", "ex"
        else:
            note = col.new_note(cloze)
            note["Text"] = f"{{{{c1::cloze {i}}}}} and {{{{c2::two}}}}"
        note.tags = [f"tag{i % 7}", "Shared::Nested"]
        col.add_note(note, decks[i % len(decks)])
    for did in decks:
        col.decks.select(did)
        conf_new = col.decks.config_dict_for_deck_id(did)
        del conf_new
    # Real review history through the scheduler.
    done = 0
    for did in decks:
        col.decks.select(did)
        while done < reviews:
            card = col.sched.getCard()
            if card is None:
                break
            col.sched.answerCard(card, 1 + done % 4)
            done += 1
    col.set_config("leitnerTest", {"nested": [1, 2, 3]})


def big_collection(dev: Device, megabytes: int, seed: int) -> None:
    """Notes whose fields barely compress, `megabytes` of them in all."""
    import base64
    import random

    rng = random.Random(seed)
    basic = dev.col.models.by_name("Basic")
    for i in range(megabytes * 20):
        note = dev.col.new_note(basic)
        note["Front"] = f"note {seed}-{i}"
        note["Back"] = base64.b64encode(rng.randbytes(38_000)).decode()
        dev.col.add_note(note, 1)


def next_second() -> None:
    """Waits for the clock's next whole second. Anki merges decks, notetypes
    and config by modification time in seconds and keeps its own copy on a
    tie, with any server: two devices changing one deck within the same
    second never converge, so tests that change both make them a second apart."""
    time.sleep(1.02 - time.time() % 1)


def sync_post(server: Server, path: str, payload: bytes, host_key: str, session="s",
              source="127.0.0.1", compressed=False, timeout=60, port=None,
              headers: dict | None = None) -> tuple[int, bytes]:
    """One v11 request by hand (`path` like "/msync/begin"): zstd body (unless
    `payload` is `compressed` already) and `anki-sync` header (and any other
    `headers`), from address `source`, to the server's port or `port` (a
    proxy's). Returns the status and, for a 200, the decompressed body."""
    import http.client
    import json

    import zstandard

    conn = http.client.HTTPConnection("127.0.0.1", port or server.port, timeout=timeout,
                                      source_address=(source, 0))
    header = json.dumps({"v": 11, "k": host_key, "c": "test", "s": session})
    body = payload if compressed else zstandard.ZstdCompressor().compress(payload)
    conn.request("POST", path, body=body, headers={"anki-sync": header, **(headers or {})})
    res = conn.getresponse()
    data = res.read()
    conn.close()
    if res.status == 200:
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return res.status, data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepting(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(predicate, timeout=10.0, step=0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def start_sshd(folder: Path, listen="127.0.0.1"):
    """An OpenSSH server on a free port that lets root in with the keys in
    its authorized_keys file, SFTP included (as a NAS would), for backups
    to another machine. Needs root and /usr/sbin/sshd. Returns (port, the
    authorized_keys file, the process)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host")], check=True)
    authorized = folder / "authorized_keys"
    authorized.write_text("")
    port = free_port()
    (folder / "config").write_text(
        f"Port {port}\nListenAddress {listen}\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPidFile none\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nSubsystem sftp internal-sftp\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "config")],
                            stderr=subprocess.DEVNULL)
    assert wait_for(lambda: accepting(port), timeout=10)
    return port, authorized, proc
