"""Fixtures for the Switchboard end-to-end tests (see switchboard_harness.py).

Every process is started by a fixture and stopped in its finalizer (SIGTERM, then
SIGKILL after 5 s), whatever the test's outcome; processes also die with pytest.

Parallel runs (pytest-xdist): `-n 2 --dist loadgroup`. Nothing is shared between
workers — every test or module starts its own nodes, Redis and haproxy, on ports from
a range of the worker's own (switchboard_harness.free_port) — and the two browser
modules form one group (`xdist_group("browser")`), as do the CPU-bound hardening tests
(`xdist_group("heavy")`), so that neither runs twice at once.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Callable, Iterator

import pytest

import switchboard_harness as h


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too; registered here so that a run without xdist does not
    # warn about an unknown mark.
    config.addinivalue_line(
        "markers", "xdist_group(name): under pytest-xdist --dist loadgroup, tests of one group share a worker")


@pytest.fixture(scope="session")
def switchboard_binary() -> str:
    path = h.switchboard_bin()
    if not os.path.exists(path):
        pytest.fail(f"switchboard binary not found at {path}; build it (swift build) or set SWITCHBOARD_BIN")
    return path


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    path = shutil.which(h.redis_server_bin())
    if path is None:
        pytest.fail("redis-server not found on PATH (apt-get install redis-server)")
    return path


@pytest.fixture
def node_factory(switchboard_binary: str) -> Iterator[Callable[..., h.SwitchboardNode]]:
    """`node_factory(node_id=…, redis=…, extra_args=[…], secret=…, …)` → a started node;
    every node it made is stopped after the test."""
    nodes: list[h.SwitchboardNode] = []

    def make(**kwargs) -> h.SwitchboardNode:
        kwargs.setdefault("binary", switchboard_binary)
        node = h.SwitchboardNode(**kwargs)
        nodes.append(node)
        return node.start()

    yield make
    for node in reversed(nodes):
        node.stop()


@pytest.fixture(scope="module")
def node(switchboard_binary: str) -> Iterator[h.SwitchboardNode]:
    """One node on the in-process broker, shared by the tests of a module. Tests use
    unique nicknames and rooms (h.unique_name / h.unique_room)."""
    n = h.SwitchboardNode(node_id=f"it-{secrets.token_hex(3)}", binary=switchboard_binary)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(autouse=True)
def _node_still_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """The shared node must survive every test. A test that kills it fails (at
    teardown, with the crash report); the next test gets a restarted node instead of
    failing in cascade."""
    n: h.SwitchboardNode | None = None
    if "node" in request.fixturenames:
        n = request.getfixturevalue("node")
        if not n.running:
            n.restart()
    yield
    if n is not None:
        assert n.running, f"the shared node died during the test (code {n.returncode}); log:\n{n.stderr()}"


@pytest.fixture
def redis_factory(redis_server_binary: str) -> Iterator[Callable[..., h.RedisServer]]:
    servers: list[h.RedisServer] = []

    def make(**kwargs) -> h.RedisServer:
        kwargs.setdefault("binary", redis_server_binary)
        server = h.RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.kill()


@pytest.fixture
def redis_server(redis_factory: Callable[..., h.RedisServer]) -> h.RedisServer:
    return redis_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for n in h.ALL_NODES:
            if n.running or (n.proc is not None and n.proc.returncode not in (None, 0, -15, 143)):
                report.sections.append((f"switchboard log {n.node_id or ''} {n.url}", n.stderr()))
