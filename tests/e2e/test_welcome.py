"""The welcome page (issue 24): what a browser gets at the server's address,
directly and through real reverse proxies; and in a real browser (Debian's
headless Chromium) at phone and desktop widths in each language, with a
screenshot of each kept in target/test-artifacts/ for review."""

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, leitner
from reverse_proxy import PROXIES, TEST_CA, Caddy

Changes = SyncCollectionResponse.ChangesRequired
ARTIFACTS = Path(__file__).resolve().parents[2] / "target" / "test-artifacts"


def get(url: str, method="GET", **headers):
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.headers, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def shown_address(page: str) -> str:
    return re.search(r'<input id=address readonly value="([^"]*)"', page).group(1)


def test_the_page_shows_the_address_in_the_browsers_language(server):
    status, headers, page = get(server.endpoint)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert shown_address(page) == server.endpoint
    assert f"<code>{server.endpoint}msync/</code>" in page
    assert "<svg class=qr" in page and "<html lang=en>" in page
    assert "Self-hosted sync server" in page
    # What the page says of the server: its version and state.
    assert re.search(r"<td>\d+\.\d+\.\d+</td>", page)
    assert "plain http" in page

    for accept, lang, words in [
        ("ja-JP,ja;q=0.9,en;q=0.8", "ja", "セルフホスト同期サーバー"),
        ("ru-RU,ru;q=0.9", "ru", "Собственный сервер синхронизации"),
        ("de-DE,fr;q=0.9", "en", "Self-hosted sync server"),
        ("en;q=0.2, ru;q=0.8", "ru", "Собственный сервер"),
    ]:
        _, headers, page = get(server.endpoint, **{"Accept-Language": accept})
        assert f"<html lang={lang}>" in page, accept
        assert words in page, accept
        assert headers["Vary"] == "accept-language"
    _, _, page = get(server.endpoint + "?lang=ja", **{"Accept-Language": "ru"})
    assert "<html lang=ja>" in page

    # HEAD answers as GET without the page; other methods are refused.
    status, _, body = get(server.endpoint, method="HEAD")
    assert status == 200 and body == ""
    status, headers, _ = get(server.endpoint, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    # Only the page and its script: no outside resources, nothing else may run.
    policy = headers_of(server.endpoint)["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'")
    assert not re.search(r'(src|href|action)="?(https?:)?//', page) and "url(" not in page
    # Sync endpoints are where they were.
    assert get(server.endpoint + "sync/bogus")[0] == 404


def headers_of(url: str) -> dict:
    return get(url)[1]


def test_no_user_and_no_count_appears(server, tmp_path):
    """The page is the same before and after users sync: it tells nothing of
    them (not even how many there are)."""
    before = get(server.endpoint)[2]
    leitner(server, "user", "add", "bobby-tables", "--password-stdin", stdin="pw\n")
    dev = Device(tmp_path / "a")
    for i in range(37):
        note = dev.col.new_note(dev.col.models.by_name("Basic"))
        note["Front"] = f"secret card {i}"
        dev.col.add_note(note, 1)
    auth = dev.login(server)
    assert dev.sync(auth) == Changes.FULL_UPLOAD
    dev.full_sync(auth, upload=True)
    after = get(server.endpoint)[2]
    assert after == before
    for word in ("alice", "bobby", "secret card", ">37<", ">2<"):
        assert word not in after
    dev.close()


pytestmark_proxies = pytest.mark.skipif(
    not all(p.available() for p in PROXIES),
    reason="nginx, caddy and apache2 are not installed (tests/run installs them as root)")


@pytestmark_proxies
@pytest.mark.parametrize("subpath", [False, True], ids=["host", "subpath"])
@pytest.mark.parametrize("proxy_class", PROXIES, ids=[p.name for p in PROXIES])
def test_the_address_behind_a_proxy(proxy_class, subpath, server_factory):
    """The configurations the README shows: the page names the address the
    browser used, not leitner's own."""
    server = server_factory().start()
    proxy = proxy_class(server.port, subpath=subpath).start()
    try:
        status, _, page = get(proxy.endpoint)
        assert status == 200, page
        assert shown_address(page) == proxy.endpoint
    finally:
        proxy.stop()


@pytestmark_proxies
@pytest.mark.parametrize("subpath", [False, True], ids=["host", "subpath"])
def test_the_address_over_https_behind_caddy(subpath, server_factory):
    server = server_factory().start()
    proxy = Caddy(server.port, subpath=subpath, tls=TEST_CA).start()
    try:
        status, _, page = get(proxy.endpoint)
        assert status == 200, page
        assert proxy.endpoint.startswith("https://")
        assert shown_address(page) == proxy.endpoint
        assert "syncing away from home is safe" in page
    finally:
        proxy.stop()


def test_a_direct_client_cannot_pose_as_a_proxy(server_factory):
    """Forwarded headers count only from a trusted proxy."""
    server = server_factory(env={"LEITNER_TRUSTED_PROXIES": ""}).start()
    page = get(server.endpoint, **{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})[2]
    assert shown_address(page) == server.endpoint


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The first screen of a phone and of a desktop, and the whole page on a phone.
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900), "phone-whole": (390, 3600)}


def chromium(*args: str) -> subprocess.CompletedProcess:
    home = ARTIFACTS.parent / "chromium-home"
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={home}", *args],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HOME=str(home)),
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs it)")
@pytest.mark.parametrize("lang", ["en", "ja", "ru"])
def test_in_a_real_browser(lang, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expected = {
        "en": ("Sync address", "Anki on a computer"),
        "ja": ("同期アドレス", "パソコンの Anki"),
        "ru": ("Адрес синхронизации", "Anki на компьютере"),
    }[lang]
    for name, (width, height) in WIDTHS.items():
        size = f"--window-size={width},{height}"
        dom = chromium(size, f"--accept-lang={lang}", "--dump-dom", server.endpoint)
        assert dom.returncode == 0, dom.stderr
        html = dom.stdout
        assert f'<html lang="{lang}">' in html, html[:300]
        for words in expected:
            assert words in html
        assert f'value="{server.endpoint}"' in html
        # The script ran: 127.0.0.1 is a secure context, so the copy button shows.
        assert re.search(r'<button id="copy" type="button" data-done="[^"]+">', html), html
        shot = ARTIFACTS / f"welcome-{lang}-{name}.png"
        shot.unlink(missing_ok=True)
        done = chromium(size, f"--accept-lang={lang}", f"--screenshot={shot}", server.endpoint)
        assert shot.exists() and shot.stat().st_size > 10_000, done.stderr
