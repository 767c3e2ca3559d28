import pytest

from harness import BINARY, Server


def pytest_configure(config):
    if not BINARY.exists():
        raise pytest.UsageError(f"{BINARY} is missing: run `cargo build` first (tests/run does)")


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
