"""Old clients (Anki 2.1.54 and 2.1.49: the legacy protocol, sync versions
8-10), driven in subprocesses from their own venvs (tests/venv legacy,
tests/venv legacy-2.1.49), against leitner and, for the same steps, the
official server. Every test runs with each of them."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from anki import deck_config_pb2, decks_pb2, notetypes_pb2
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, OfficialServer, make_rich_collection, media_files, next_second, synced_content

Changes = SyncCollectionResponse.ChangesRequired

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("legacy_client.py")


# The old client of the test running: version -> (venv name, variable).
OLD_CLIENTS = {
    "2.1.54": ("legacy", "LEGACY_PYTHON"),
    "2.1.49": ("legacy-2.1.49", "LEGACY_PYTHON_2_1_49"),
}
old_version = "2.1.54"


@pytest.fixture(autouse=True, params=list(OLD_CLIENTS))
def each_old_client(request):
    global old_version
    old_version = request.param
    yield
    old_version = "2.1.54"


def legacy_python() -> str:
    """tests/run exports it; run alone, the tests make the venv themselves
    rather than skip."""
    venv_name, variable = OLD_CLIENTS[old_version]
    if os.environ.get(variable):
        return os.environ[variable]
    venv = subprocess.run([str(ROOT / "tests" / "venv"), venv_name], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ[variable] = str(ROOT / venv / "bin" / "python")
    return os.environ[variable]


def old_client(server, folder: Path, *steps: str, user="alice", password="secret") -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["SYNC_ENDPOINT"] = server.endpoint + "sync/"
    env["SYNC_ENDPOINT_MEDIA"] = server.endpoint + "msync/"
    done = subprocess.run(
        [legacy_python(), str(CLIENT), str(folder / "collection.anki2"), user, password, *steps],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["leitner", "official"])
def either(request, server_factory, tmp_path):
    if request.param == "leitner":
        yield server_factory().start()
        return
    server = OfficialServer(data=tmp_path / "official")
    server.start()
    yield server
    server.stop(timeout=60)


def test_an_old_client_logs_in_and_a_wrong_password_is_refused(either, tmp_path):
    assert old_client(either, tmp_path / "a", "login") == {"login": True}
    wrong = old_client(either, tmp_path / "b", "login", password="wrong")
    assert "SyncError" in wrong["error"], wrong


def test_media_goes_both_ways_between_old_clients(either, tmp_path):
    first = old_client(either, tmp_path / "a", "login", "media-add:3", "media", "state")
    assert "error" not in first, first
    second = old_client(either, tmp_path / "b", "login", "media", "state")
    assert "error" not in second, second
    assert second["media"] == first["media"] == ["old 0.txt", "old 1.txt", "old 2.txt"]


def test_media_goes_both_ways_between_an_old_and_a_current_client(either, tmp_path):
    old = tmp_path / "old"
    got = old_client(either, old, "login", "media-add:2", "media", "state")
    assert got["media"] == ["old 0.txt", "old 1.txt"], got
    current = Device(tmp_path / "current")
    auth = current.login(either)
    current.sync_media(auth)
    current.col.media.write_data("current.txt", b"written by the current client")
    current.sync_media(auth)
    got = old_client(either, old, "login", "media", "state")
    assert got["media"] == ["current.txt", "old 0.txt", "old 1.txt"], got
    assert current.media_files() == media_files(old / "collection.media")
    current.close()


def test_an_old_client_uploads_and_syncs_beside_a_current_one(either, tmp_path):
    # An old client's collection arrives in schema 11 and is stored in schema
    # 18; a current client downloads it, then both sync incrementally.
    old = tmp_path / "old"
    up = old_client(either, old, "login", "add:5", "sync", "upload", "state")
    assert up == {"login": True, "sync": str(Changes.FULL_UPLOAD), "upload": True, "notes": 5,
                  "media": []}, up

    current = Device(tmp_path / "current")
    auth = current.login(either)
    assert current.sync(auth) == Changes.FULL_DOWNLOAD
    current.full_sync(auth, upload=False)
    assert current.col.note_count() == 5

    got = old_client(either, old, "login", "add:2", "sync", "state")
    assert got == {"login": True, "sync": str(Changes.NO_CHANGES), "notes": 7, "media": []}, got
    assert current.sync(auth) == Changes.NO_CHANGES
    add_and_sync(current, auth)
    got = old_client(either, old, "login", "sync", "state")
    assert got["notes"] == current.col.note_count() == 8, got

    # Deletions (graves) both ways.
    got = old_client(either, old, "login", "remove:2", "sync", "state")
    assert got["notes"] == 6, got
    assert current.sync(auth) == Changes.NO_CHANGES
    assert current.col.note_count() == 6
    current.col.remove_notes(current.col.find_notes("")[:1])
    assert current.sync(auth) == Changes.NO_CHANGES
    got = old_client(either, old, "login", "sync", "state")
    assert got["notes"] == current.col.note_count() == 5, got
    current.close()
    assert_converged(tmp_path / "current" / "collection.anki2", old / "collection.anki2")


def add_and_sync(current: Device, auth) -> None:
    """The current client adds a note and syncs it up."""
    next_second()
    note = current.col.new_note(current.col.models.by_name("Basic"))
    note["Front"] = "from the current client"
    current.col.add_note(note, 1)
    assert current.sync(auth) == Changes.NO_CHANGES


class Folder:
    """A collection file to compare, as `synced_content` takes it."""

    def __init__(self, path: Path):
        self.path = path


def test_an_old_client_downloads_and_syncs_beside_a_current_one(either, tmp_path):
    # A current client's collection (schema 18 on the server) goes to an old
    # client in schema 11; then both sync incrementally, each way.
    current = Device(tmp_path / "current")
    make_rich_collection(current.col, notes=60, reviews=30)
    auth = current.login(either)
    assert current.sync(auth) == Changes.FULL_UPLOAD
    current.full_sync(auth, upload=True)

    old = tmp_path / "old"
    got = old_client(either, old, "login", "sync", "download", "state")
    assert got == {"login": True, "sync": str(Changes.FULL_DOWNLOAD), "download": True,
                   "notes": current.col.note_count(), "media": []}, got
    # A client run per step from here: this client cannot add notes in the
    # process that downloaded (the same with the official server).
    got = old_client(either, old, "login", "add:3", "sync", "state")
    assert got == {"login": True, "sync": str(Changes.NO_CHANGES), "notes": current.col.note_count() + 3,
                   "media": []}, got
    assert current.sync(auth) == Changes.NO_CHANGES
    assert current.col.note_count() == got["notes"]

    add_and_sync(current, auth)
    got = old_client(either, old, "login", "sync", "state")
    assert got["notes"] == current.col.note_count(), got
    current.close()

    assert_converged(current.path, old / "collection.anki2")


def assert_converged(current: Path, old: Path) -> None:
    """Both collections hold the same, as far as the old client can hold it."""
    known = old_field_numbers()
    mine = representable(synced_content(Folder(current)), known)
    theirs = representable(synced_content(Folder(old)), known)
    differ = {t: ([r for r in mine[t] if r not in theirs[t]], [r for r in theirs[t] if r not in mine[t]])
              for t in mine if mine[t] != theirs[t]}
    assert not differ, differ


# The protobuf blobs, as (table, column index in `synced_content`'s rows,
# which have no usn, message name in this client and in the old one).
BLOBS = [
    ("notetypes", 3, "notetypes_pb2.Notetype.Config", "notetypes_pb2.Notetype.Config"),
    ("fields", 3, "notetypes_pb2.Notetype.Field.Config", "notetypes_pb2.Notetype.Field.Config"),
    ("templates", 4, "notetypes_pb2.Notetype.Template.Config", "notetypes_pb2.Notetype.Template.Config"),
    ("decks", 3, "decks_pb2.Deck.Common", "decks_pb2.Deck.Common"),
    ("deck_config", 3, "deck_config_pb2.DeckConfig.Config", "deckconfig_pb2.DeckConfig.Config"),
]


def message(name: str):
    module, *path = name.split(".")
    found = {"notetypes_pb2": notetypes_pb2, "decks_pb2": decks_pb2, "deck_config_pb2": deck_config_pb2}[module]
    for part in path:
        found = getattr(found, part)
    return found


def old_field_numbers() -> dict[str, list[int]]:
    """The fields each blob's message has in the old client."""
    code = ("import json, importlib\n"
            f"names = {[old for *_, old in BLOBS]!r}\n"
            "out = {}\n"
            "for name in names:\n"
            "    module, *path = name.split('.')\n"
            "    m = importlib.import_module('anki.' + module)\n"
            "    for part in path: m = getattr(m, part)\n"
            "    out[name] = [f.number for f in m.DESCRIPTOR.fields]\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([legacy_python(), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def representable(tables: dict, known: dict[str, list[int]]) -> dict:
    """What the old client can hold of each blob: the fields its version
    has, less `other`, where it keeps JSON keys it does not know (newer deck
    limits, a notetype's original stock kind). The official server hands
    them over the same way."""
    # Empty card data: 2.1.49 writes '', current clients '{}'.
    tables["cards"] = sorted((row[:-1] + ("{}" if row[-1] == "" else row[-1],) for row in tables["cards"]),
                             key=repr)
    for table, column, mine, old in BLOBS:
        rows = []
        for row in tables[table]:
            blob = message(mine).FromString(row[column])
            for field, _ in blob.ListFields():
                if field.number not in known[old] or field.name == "other":
                    blob.ClearField(field.name)
            rows.append(row[:column] + (blob.SerializeToString(deterministic=True),) + row[column + 1:])
        tables[table] = sorted(rows, key=repr)
    return tables
