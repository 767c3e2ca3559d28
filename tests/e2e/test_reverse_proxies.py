"""Behind real reverse proxies (issue 13): nginx, Caddy and Apache from
Debian's packages, each with the plainest configuration plus only the
body-size setting, on the whole host and on a subpath, in front of leitner
and, for comparison, of the official server. Through each, the real client
logs in, uploads a collection over 20 MB, downloads it on a second device,
syncs incrementally both ways and syncs media. HTTPS through each with a
certificate the test makes (the client trusts it through SSL_CERT_FILE,
set in conftest before any client starts)."""

import json
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, OfficialServer, assert_same, big_collection, next_second, sync_post
from reverse_proxy import PROXIES, TEST_CA

Changes = SyncCollectionResponse.ChangesRequired

pytestmark = pytest.mark.skipif(
    not all(p.available() for p in PROXIES),
    reason="nginx, caddy and apache2 are not installed (tests/run installs them as root)")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A 21 MB collection, made once and copied for each run."""
    folder = tmp_path_factory.mktemp("template")
    dev = Device(folder)
    big_collection(dev, 21, seed=13)
    dev.close()
    assert (folder / "collection.anki2").stat().st_size > 20_000_000
    return folder / "collection.anki2"


def device(folder: Path, template: Path | None = None) -> Device:
    folder.mkdir(parents=True)
    if template:
        shutil.copy(template, folder / "collection.anki2")
    return Device(folder)


def add_media(dev: Device, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(5):
        dev.col.media.write_data(f"proxied {seed}-{i}.jpg", rng.randbytes(300_000 if i == 0 else 2_000))


def review_and_edit(dev: Device, seed: int) -> None:
    next_second()
    note = dev.col.new_note(dev.col.models.by_name("Basic"))
    note["Front"], note["Back"] = f"added behind a proxy {seed}", "back"
    dev.col.add_note(note, 1)
    card = dev.col.sched.getCard()
    dev.col.sched.answerCard(card, 3)


def sync_everything_through(endpoint: str, server, template: Path, work: Path) -> None:
    a = device(work / "a", template)
    auth_a = a.login(server, endpoint=endpoint)
    assert a.sync(auth_a) == Changes.FULL_UPLOAD
    a.full_sync(auth_a, upload=True)

    b = device(work / "b")
    auth_b = b.login(server, endpoint=endpoint)
    assert b.sync(auth_b) == Changes.FULL_DOWNLOAD
    b.full_sync(auth_b, upload=False)
    assert b.col.note_count() == a.col.note_count()

    review_and_edit(a, 1)
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert b.sync(auth_b) == Changes.NO_CHANGES
    review_and_edit(b, 2)
    assert b.sync(auth_b) == Changes.NO_CHANGES
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert_same(a, b)

    add_media(a, 1)
    a.sync_media(auth_a)
    b.sync_media(auth_b)
    add_media(b, 2)
    b.sync_media(auth_b)
    a.sync_media(auth_a)
    assert a.media_files() == b.media_files()
    assert len(a.media_files()) == 10
    a.close()
    b.close()


def start_server(kind: str, server_factory, tmp_path):
    if kind == "leitner":
        return server_factory().start()
    server = OfficialServer(tmp_path / "official")
    return server.start()


@pytest.mark.parametrize("kind", ["leitner", "official"])
@pytest.mark.parametrize("subpath", [False, True], ids=["host", "subpath"])
@pytest.mark.parametrize("proxy_class", PROXIES, ids=[p.name for p in PROXIES])
def test_a_client_syncs_everything_through_a_proxy(proxy_class, subpath, kind, server_factory, template, tmp_path,
                                                   request):
    if kind == "official" and proxy_class.name == "caddy":
        # Seen in packet captures: Caddy sends request bodies chunked and its
        # closing "0\r\n\r\n" sometimes lands after the official server has
        # begun its reply; the official server then resets the connection
        # mid-reply (a media zip without its end, or a full download the
        # client stores as a malformed database). Every other run passes.
        request.applymarker(pytest.mark.xfail(reason="the official server resets Caddy's connections now and then",
                                              strict=False))
    server = start_server(kind, server_factory, tmp_path)
    proxy = proxy_class(server.port, subpath=subpath).start()
    try:
        sync_everything_through(proxy.endpoint, server, template, tmp_path / "devices")
    except BaseException:
        print(proxy.log())
        print(server.log())
        raise
    finally:
        proxy.stop()
        if kind == "official":
            server.stop()


@pytest.mark.parametrize("proxy_class", PROXIES, ids=[p.name for p in PROXIES])
def test_https_through_a_proxy(proxy_class, server_factory, template, tmp_path):
    server = server_factory().start()
    proxy = proxy_class(server.port, subpath=True, tls=TEST_CA).start()
    try:
        assert proxy.endpoint.startswith("https://")
        sync_everything_through(proxy.endpoint, server, template, tmp_path / "devices")
    finally:
        proxy.stop()


@pytest.mark.parametrize("proxy_class", PROXIES, ids=[p.name for p in PROXIES])
def test_each_device_keeps_its_own_address_behind_a_proxy(proxy_class, server_factory, tmp_path):
    """A device guessing passwords through the proxy is throttled by its own
    address, which the proxy forwards, whatever it claims to be in its own
    forwarding headers; the owner's login through the same proxy does not
    wait behind it."""
    server = server_factory().start()
    proxy = proxy_class(server.port).start()
    try:
        guess = json.dumps({"u": "alice", "p": "wrong"}).encode()
        spoof = {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "203.0.113.9"}
        guesses = [threading.Thread(target=sync_post, args=(server, "/sync/hostKey", guess, ""),
                                    kwargs=dict(source="127.0.0.2", port=proxy.port, timeout=120,
                                                headers=spoof))
                   for _ in range(6)]
        for t in guesses:
            t.start()
        time.sleep(1.0)  # the first failures are in, the pauses have begun
        dev = Device(tmp_path / "owner")
        started = time.monotonic()
        dev.login(server, endpoint=proxy.endpoint)
        took = time.monotonic() - started
        for t in guesses:
            t.join()
        assert took < 3, f"the owner's login took {took:.1f} s"
        log = server.log()
        assert "127.0.0.2 - sync/hostKey 403" in log, log
        assert "203.0.113.9" not in log, log
        assert "127.0.0.1 alice sync/hostKey 200" in log or "127.0.0.1 - sync/hostKey 200" in log, log
    finally:
        proxy.stop()
