"""Hostile media uploads straight at the HTTP endpoints (issue 4): each is
refused with a clear error, nothing lands outside the user's media folder,
and nothing already stored is lost."""

import http.client
import io
import json
import os
import struct
import zipfile

import pytest

from harness import Device, media_files, sync_post

ALICE_KEY = "6985e52cea44a28695d5c440bd42f57e9f50b7b1"


def post(server, method: str, payload: bytes, key=ALICE_KEY) -> tuple[int, bytes]:
    return sync_post(server, f"/msync/{method}", payload, key)


def make_zip(files: dict[str, bytes], meta, compress=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compress) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("_meta", json.dumps(meta))
    return out.getvalue()


@pytest.fixture
def stored(server, tmp_path):
    """A server holding one good file, uploaded by the real client."""
    dev = Device(tmp_path / "dev")
    auth = dev.login(server)
    dev.col.media.write_data("keep.jpg", b"precious")
    dev.sync_media(auth)
    dev.close()
    before = snapshot(server)
    assert set(before["media"]) == {"keep.jpg"}
    return before


def snapshot(server) -> dict:
    """Every file under the server's data folder and the test's temp folder
    (where an escape would land), and the media listing."""
    root = server.data.parent
    tree = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "-wal" not in p.name and "-shm" not in p.name
        and "/dev/" not in str(p) and not p.name.startswith("collection.media")
    )
    return {"tree": tree, "media": media_files(server.data / "alice" / "media")}


def assert_untouched(server, before):
    after = snapshot(server)
    assert after["media"] == before["media"]
    assert [p for p in after["tree"] if p not in before["tree"]] == []
    status, data = post(server, "mediaChanges", b'{"lastUsn":0}')
    assert status == 200
    assert [e[0] for e in json.loads(data)["data"]] == ["keep.jpg"]


@pytest.mark.parametrize(
    "name",
    ["../escaped.txt", "../../escaped.txt", "/tmp/escaped.txt", "sub/escaped.txt",
     "..\\escaped.txt", "..", ".", "", "nul\x00.txt", "x" * 256,
     "cafe\u0301.txt", "CON.jpg", "what?.jpg", "trailing."],
)
def test_names_that_could_escape_or_no_client_sends_are_refused(server, stored, name):
    status, body = post(server, "uploadChanges", make_zip({"0": b"evil"}, [[name, "0"]]))
    assert status == 400, body
    assert b"refused" in body
    assert_untouched(server, stored)


def test_zip_entry_names_never_reach_the_disk(server, stored):
    # Entry names are only keys into _meta: a traversal there is harmless,
    # the file is stored under its (checked) real name, inside the folder.
    status, body = post(server, "uploadChanges", make_zip({"../../x": b"data"}, [["fine.txt", "../../x"]]))
    assert status == 200, body
    assert json.loads(body)["data"][0] == 1
    assert media_files(server.data / "alice" / "media").keys() == {"keep.jpg", "fine.txt"}
    assert not (server.data.parent / "x").exists()


def test_a_zip_bomb_is_refused(server, stored):
    # 200 MiB of zeros deflate to a few hundred KiB.
    bomb = make_zip({"0": b"\0" * (200 << 20)}, [["bomb.bin", "0"]], compress=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 1 << 20
    status, body = post(server, "uploadChanges", bomb)
    assert status == 400
    assert b"larger than" in body
    assert_untouched(server, stored)


def test_a_zip_bomb_with_a_lying_directory_is_refused(server, stored):
    bomb = bytearray(make_zip({"0": b"\0" * (150 << 20)}, [["bomb.bin", "0"]], compress=zipfile.ZIP_DEFLATED))
    # Claim 10 bytes in the central directory and the local header. The
    # directory's first entry is the bomb's; its offset is in the end record.
    cd = struct.unpack_from("<I", bomb, len(bomb) - 22 + 16)[0]
    assert bomb[cd + 46:cd + 47] == b"0"
    struct.pack_into("<I", bomb, cd + 24, 10)
    struct.pack_into("<I", bomb, 22, 10)
    status, body = post(server, "uploadChanges", bytes(bomb))
    assert status == 400
    assert b"larger than" in body or b"checksum" in body
    assert_untouched(server, stored)


def test_a_checksum_mismatch_is_refused(server, stored):
    data = make_zip({"0": b"good data"}, [["new.txt", "0"]])
    damaged = data.replace(b"good data", b"evil data")
    status, body = post(server, "uploadChanges", damaged)
    assert status == 400
    assert b"checksum" in body
    assert_untouched(server, stored)


def test_a_truncated_zip_is_refused(server, stored):
    data = make_zip({"0": b"x" * 5000, "1": b"y" * 5000}, [["a.txt", "0"], ["b.txt", "1"]])
    for cut in (10, 100, len(data) // 2, len(data) - 5):
        status, body = post(server, "uploadChanges", data[:cut])
        assert status == 400, cut
        assert b"zip" in body
    assert_untouched(server, stored)


def test_batches_over_the_limits_are_refused(server, stored):
    files = {str(i): f"file {i}".encode() for i in range(26)}
    status, body = post(server, "uploadChanges", make_zip(files, [[f"f{i}.txt", str(i)] for i in range(26)]))
    assert status == 400
    assert b"at most 25" in body
    status, body = post(server, "uploadChanges", make_zip({"0": b""}, [["empty.txt", "0"]]))
    assert status == 400
    assert b"empty" in body
    status, body = post(server, "uploadChanges", make_zip({}, [["missing.txt", "0"]]))
    assert status == 400
    status, body = post(server, "uploadChanges", make_zip({"0": b"a"}, [["twice.txt", "0"], ["twice.txt", None]]))
    assert status == 400
    status, body = post(server, "uploadChanges", make_zip({"0": b"a"}, {"not": "a list"}))
    assert status == 400
    status, body = post(server, "downloadFiles", json.dumps({"files": [f"f{i}" for i in range(26)]}).encode())
    assert status == 400
    assert_untouched(server, stored)


def test_an_upload_over_the_size_limit_is_refused(server_factory, tmp_path):
    server = server_factory(env={"MAX_SYNC_PAYLOAD_MEGS": "1"}).start()
    # Four MiB: more than the three times MAX_SYNC_PAYLOAD_MEGS an upload may
    # decompress to.
    big = os.urandom(4 << 20)
    status, body = post(server, "uploadChanges", make_zip({"0": big}, [["big.bin", "0"]]))
    assert status == 400
    assert b"MAX_SYNC_PAYLOAD_MEGS" in body
    assert not (server.data / "alice" / "media" / "big.bin").exists()


def test_downloading_a_file_the_server_lacks_is_a_conflict(server, stored):
    status, _ = post(server, "downloadFiles", b'{"files":["nope.jpg"]}')
    assert status == 409
    status, data = post(server, "downloadFiles", b'{"files":["keep.jpg"]}')
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert json.loads(z.read("_meta")) == {"0": "keep.jpg"}
        assert z.read("0") == b"precious"


def test_legacy_get_begin(server, stored):
    """Pre-v11 desktop releases start media sync with a GET and read the
    answer uncompressed."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/msync/begin?k={ALICE_KEY}&v=anki,2.1.50,linux")
    res = conn.getresponse()
    assert res.status == 200
    assert json.loads(res.read()) == {"data": {"usn": 1, "sk": ALICE_KEY}, "err": ""}
    conn.request("GET", f"/msync/begin?k={ALICE_KEY}")
    res = conn.getresponse()
    res.read()
    assert res.status == 400
    conn.request("GET", "/msync/begin?k=wrong&v=x")
    res = conn.getresponse()
    res.read()
    assert res.status == 403
