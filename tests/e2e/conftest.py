import atexit
import os
import shutil

import pytest

from harness import BINARY, Server
from reverse_proxy import TEST_CA, self_signed


def pytest_configure(config):
    if not BINARY.exists():
        raise pytest.UsageError(f"{BINARY} is missing: run `cargo build` first (tests/run does)")
    # HTTPS tests: the client trusts our own authority (and only it).
    self_signed(TEST_CA)
    atexit.register(shutil.rmtree, TEST_CA, ignore_errors=True)
    os.environ["SSL_CERT_FILE"] = str(TEST_CA / "ca.pem")


@pytest.fixture
def server_factory(tmp_path):
    started = []

    def make(**kwargs) -> Server:
        kwargs.setdefault("data", tmp_path / "server")
        server = Server(**kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(timeout=60)


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory().start()
