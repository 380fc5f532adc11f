"""HTTP/1 connection semantics (RFC 9112 §9.3, §9.6) on `switchboard serve` and
`socketio-conformance`: a response after which the server closes says `Connection:
close`; HTTP/1.0 is closed unless it asks for keep-alive; keep-alive and pipelining keep
working. Proven with raw sockets and with a real keep-alive client: node-fetch 3 on Node,
which sends `Connection: close` by default and pools the socket unless told otherwise
(before the fix, every second of its sequential requests failed with "socket hang up").
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import switchboard_harness as h

NODE_FETCH = Path("/usr/share/nodejs/node-fetch/src/index.js")


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Sends `raw`, reads until the server closes or stays quiet for a moment; returns
    (bytes read, whether the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout
        s.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return data, True
            except socket.timeout:
                if data.count(b"HTTP/1.") >= raw.count(b" HTTP/1."):
                    return data, False
                continue
            if not chunk:
                return data, True
            data += chunk
        return data, False


def heads(data: bytes) -> list[dict[str, str]]:
    """The response heads in `data` (status line as ':status', header names lowercased)."""
    result = []
    for block in data.split(b"HTTP/1.")[1:]:
        head = (b"HTTP/1." + block).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        fields = {":status": head[0]}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        result.append(fields)
    return result


@pytest.fixture(scope="module")
def conformance_port() -> Iterator[int]:
    with h.conformance_server() as port:
        yield port


def node_port(node: h.SwitchboardNode) -> int:
    return int(node.url.rsplit(":", 1)[1])


# Paths that answer a plain GET on each server.
TARGETS = {"switchboard": "/healthz", "conformance": "/socket.io/?EIO=4&transport=polling"}


@pytest.fixture(params=["switchboard", "conformance"])
def target(request: pytest.FixtureRequest, node: h.SwitchboardNode) -> tuple[int, str]:
    if request.param == "switchboard":
        return node_port(node), TARGETS["switchboard"]
    return request.getfixturevalue("conformance_port"), TARGETS["conformance"]


def test_connection_close_is_answered_with_connection_close_then_closed(target: tuple[int, str]) -> None:
    port, path = target
    for spelling in ("close", "Close", "keep-alive, close"):
        data, closed = exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: {spelling}\r\n\r\n".encode())
        [head] = heads(data)
        assert head[":status"].startswith("HTTP/1.1 200"), data
        assert head.get("connection", "").lower() == "close", f"Connection: {spelling} → {head}"
        assert closed, "the server closes after answering Connection: close"


def test_keep_alive_stays_open_and_pipelining_answers_in_order(target: tuple[int, str]) -> None:
    port, path = target
    data, closed = exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    [head] = heads(data)
    assert "connection" not in head and not closed, (head, closed)
    # Two pipelined keep-alive requests, then one that closes: three answers, only the last says close.
    one = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
    last = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, closed = exchange(port, (one + one + last).encode())
    answers = heads(data)
    assert len(answers) == 3, data
    assert [a.get("connection", "") for a in answers] == ["", "", "close"], answers
    assert closed


def test_http_1_0_is_closed_unless_it_asks_for_keep_alive(target: tuple[int, str]) -> None:
    port, path = target
    data, closed = exchange(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    [head] = heads(data)
    assert head[":status"].startswith("HTTP/1.0 200"), head
    assert head.get("connection", "").lower() == "close" and closed, (head, closed)
    assert "transfer-encoding" not in head, "no chunked body for HTTP/1.0"
    data, closed = exchange(port, f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
    [head] = heads(data)
    if "content-length" in head:
        assert head.get("connection", "").lower() == "keep-alive" and not closed, (head, closed)
    else:
        assert head.get("connection", "").lower() == "close" and closed, (head, closed)


def test_error_answers_followed_by_a_close_say_so(node: h.SwitchboardNode) -> None:
    port = node_port(node)
    cases = {
        "bad token upgrade (401)": b"GET /ws?token=nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "garbage (400)": b"\x16\x03\x01 this is not http\r\n\r\n",
        "headers too large (431)": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        "unknown route with close (404)": b"GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    }
    for name, raw in cases.items():
        data, closed = exchange(port, raw)
        answers = heads(data)
        assert answers, f"{name}: no answer ({data[:200]!r})"
        assert answers[0].get("connection", "").lower() == "close", f"{name}: {answers[0]}"
        assert closed, f"{name}: not closed"
    # A client's bad upgrade is not a server error (it is logged at debug, once).
    assert "Error handling upgrade result" not in node.stderr() and " error " not in node.stderr(), node.stderr()


NODE_SCRIPT = r"""
import fetch from 'node-fetch';
const results = [];
for (let i = 0; i < 6; i++) {
  try {
    const r = await fetch(process.argv[2]);
    await r.text();
    results.push(r.status);
  } catch (e) {
    results.push(String(e.message || e));
  }
}
console.log(JSON.stringify(results));
"""


def node_modules(tmp: Path) -> Path:
    """A folder whose node_modules links every Debian-packaged module (node-fetch and its
    dependencies live side by side in /usr/share/nodejs; ESM resolution needs them
    under a node_modules folder, and --preserve-symlinks keeps them there)."""
    modules = tmp / "node_modules"
    modules.mkdir()
    for package in Path("/usr/share/nodejs").iterdir():
        (modules / package.name).symlink_to(package)
    return tmp


@pytest.mark.skipif(shutil.which("node") is None or not NODE_FETCH.exists(), reason="node and node-fetch (apt) are installed by scripts/deps.sh test")
def test_node_fetch_sequential_requests_all_succeed(target: tuple[int, str], tmp_path: Path) -> None:
    port, path = target
    folder = node_modules(tmp_path)
    script = folder / "fetch6.mjs"
    script.write_text(NODE_SCRIPT)
    out = subprocess.run(
        ["node", "--preserve-symlinks", str(script), f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=60, cwd=folder)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[200,200,200,200,200,200]", f"node-fetch results: {out.stdout} {out.stderr}"
