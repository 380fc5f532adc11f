"""Smoke tests of the harness itself: Redis helper, node lifecycle."""

from __future__ import annotations

import socket

import httpx

import switchboard_harness as h


def test_free_port_is_bindable():
    port = h.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_redis_server_starts_pings_and_restarts_on_same_port(redis_server: h.RedisServer):
    assert redis_server.running
    assert redis_server.ping()
    assert redis_server.command("SET", "k", "v") == "OK"
    assert redis_server.command("GET", "k") == "v"
    port = redis_server.port
    redis_server.kill()
    assert not redis_server.running
    try:
        redis_server.ping()
        raise AssertionError("PING answered after kill")
    except OSError:
        pass
    redis_server.restart()
    assert redis_server.port == port and redis_server.ping()
    assert redis_server.command("GET", "k") is None  # nothing persisted
    assert redis_server.url == f"redis://127.0.0.1:{port}"


def test_node_serves_healthz_and_exits_0_on_sigterm(node_factory):
    n = node_factory(node_id="harness-node")
    r = httpx.get(n.url + "/healthz", trust_env=False, timeout=5)
    assert r.status_code == 200
    assert n.ws_url == f"ws://127.0.0.1:{n.port}/ws"
    code = n.stop()
    assert code == 0, f"SIGTERM should drain and exit 0, got {code}; log:\n{n.stderr()}"
    assert not n.running


def test_node_kill_is_sigkill(node_factory):
    n = node_factory()
    assert n.kill() == -9
    assert not n.running
