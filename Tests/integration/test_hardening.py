"""Hardening (issue 9): limits, security and faults, with real processes.

Black-box: real `switchboard serve` nodes (and `redis-server`, `haproxy`) on free loopback
ports, driven by off-the-shelf clients (`websockets`, `httpx`) and a raw RFC 6455 client
(`h.RawWebSocket`, or a blocking socket for a consumer that never reads). Nothing here
knows the server's code; expectations come from PROTOCOL.md, docs/protocol.md, issue 9
and `switchboard serve --help`.

* Limits: a WebSocket message over `--max-message-bytes` (also fragmented) closes with
  1009 and nothing else happens; HTTP bodies over it are `413` JSON on `/api/login`,
  `/api/send`, `/api/publish`; a huge header or request line is a 4xx, not a hang or a
  crash; `--max-rooms` → `too_many_rooms`; `--max-connections-per-ip` and
  `--max-connections` → `503 {"error":"too_many_connections"}`; `--rate/--burst` →
  `rate_limited` for the flooder only; a subscriber that never reads during a flood of
  2,000 × 50 KB messages is disconnected while node RSS grows < 100 MB and the other
  subscribers get every message.
* Security: expired tokens (`--token-ttl 2`) → 401 on every transport; secret rotation
  (`SWITCHBOARD_SECRET="new,old"`); `/api/publish` key checks; the Origin allow-list for
  WebSocket upgrades and CORS; whispers never reach a third session on any transport or
  node, live or on resume; forged cursors never yield someone else's private events; a
  later holder of a lapsed nickname does not inherit the previous holder's whispers.
* Faults: Redis SIGKILLed and restarted under 20 msg/s across three nodes; an edge node
  SIGKILLed under load (its clients resume through haproxy); 10,000 connections opened
  and closed (memory back to baseline, 0 connections reported); SIGTERM drains.

Every test prints a `[figures]` line (run pytest with `-s` to see them). Every process is
started by a fixture (or the test) and stopped in a finalizer; every async body runs under
`h.run(…, timeout)`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Iterable, Optional
from urllib.parse import quote, urlencode

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import (
    Clients,
    CursorTracker,
    HAProxy,
    Poller,
    RawWebSocket,
    SSEStream,
    WSClient,
    login,
    login_response,
    run,
)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def figures(title: str, **values: Any) -> None:
    """One quotable line of figures (visible with `pytest -s`)."""
    print(f"\n[figures] {title}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: Any = "") -> float:
    """Waits until `predicate()`; returns the seconds it took; fails after `timeout`
    (`what` may be a callable, to describe the state at the time of the failure)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start >= timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def answer_to(client: Any, ref: Any, timeout: float = 5.0) -> dict:
    return await client.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"), timeout,
                                  what=f"ack/error for ref {ref!r}")


async def say(client: WSClient, room: str, text: str, ref: Any, timeout: float = 5.0, **extra: Any) -> dict:
    """Sends `say`; returns its ack or error."""
    await client.send({"type": "say", "room": room, "text": text, "ref": ref, **extra})
    return await answer_to(client, ref, timeout)


async def say_acked(client: WSClient, room: str, text: str, ref: Any, **extra: Any) -> str:
    answer = await say(client, room, text, ref, **extra)
    assert answer["type"] == "ack", f"{client.name}: say {text[:40]!r} not acknowledged: {answer}"
    return answer["id"]


async def whisper_acked(client: WSClient, to: str, text: str, ref: Any) -> str:
    await client.send({"type": "whisper", "to": to, "text": text, "ref": ref})
    answer = await answer_to(client, ref)
    assert answer["type"] == "ack", f"{client.name}: whisper to {to} not acknowledged: {answer}"
    return answer["id"]


def privates(events: Iterable[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "private"]


def connections_total(node: Any) -> int:
    return sum(h.cluster_connections(node).values())


def metric_connections(node: Any) -> float:
    return h.metric_sum(h.metrics(node), "switchboard_connections")


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[Optional[int], str, float, bytes]:
    """Sends `request` on a fresh TCP connection; returns (status or None, outcome, seconds,
    first bytes). outcome: "answered", "closed without answer", "reset", "no answer in Ns"."""
    start = time.monotonic()
    data = b""
    outcome = "answered"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            outcome = "reset while sending"
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    if not data:
                        outcome = "closed without answer"
                    break
                data += chunk
        except socket.timeout:
            if not data:
                outcome = f"no answer in {timeout:.0f}s"
        except ConnectionResetError:
            if not data:
                outcome = "reset"
    status = None
    if data.startswith(b"HTTP/1."):
        try:
            status = int(data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            pass
    return status, outcome, round(time.monotonic() - start, 2), data[:200]


def blocking_ws(node: Any, target: str, rcvbuf: int = 4096, timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """A WebSocket opened on a blocking socket with a tiny receive buffer, which the test
    then simply does not read (no asyncio transport reading behind its back). Returns
    (socket, bytes already received after the 101 head)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", node.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "closed during the upgrade"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return s, rest


def drain_ws_socket(s: socket.socket, already: bytes, timeout: float) -> dict:
    """Reads a (blocking) WebSocket until a close frame, EOF, reset or `timeout`; returns
    {text_frames, close_code, close_reason, end, seconds}."""
    start = time.monotonic()
    buf = bytearray(already)
    texts = 0
    result: dict = {"close_code": None, "close_reason": None, "end": None}
    s.settimeout(1.0)

    def parse() -> bool:
        nonlocal texts
        while True:
            if len(buf) < 2:
                return False
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return False
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return False
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                return False
            payload = bytes(buf[off:off + n])
            del buf[:off + n]
            opcode = b0 & 0x0F
            if opcode == 0x1:
                texts += 1
            elif opcode == 0x8:
                result["close_code"] = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                result["close_reason"] = payload[2:].decode("utf-8", "replace")
                result["end"] = "close frame"
                return True

    while time.monotonic() - start < timeout:
        if parse():
            break
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            result["end"] = "reset"
            break
        if not chunk:
            result["end"] = "EOF"
            break
        buf += chunk
    else:
        result["end"] = f"still open after {timeout}s"
    result["text_frames"] = texts
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def node_with(node_factory: Callable[..., h.SwitchboardNode], name: str, *args: str, **kwargs: Any) -> h.SwitchboardNode:
    return node_factory(node_id=f"{name}-{secrets.token_hex(2)}", extra_args=list(args), **kwargs)


@pytest.fixture
def cluster3(redis_server: h.RedisServer, node_factory) -> list[h.SwitchboardNode]:
    """Three nodes on one fresh redis-server."""
    tag = secrets.token_hex(2)
    nodes = [node_factory(node_id=f"hard{i}-{tag}", redis=redis_server.url) for i in (1, 2, 3)]
    for n in nodes:
        n.wait_ready(30)
    return nodes


# ======================================================================================
# 1. Limits
# ======================================================================================


def test_ws_message_over_max_message_bytes_closes_1009_and_nothing_else(node_factory):
    """A text message over --max-message-bytes (one frame, or fragments each under the
    limit) closes the connection with 1009; it is never acked, never delivered, and the
    other users of the room carry on."""
    node = node_with(node_factory, "lim1009", "--max-message-bytes", "4096", "--max-text", "60000")
    room = h.unique_room("big")
    problems: list[str] = []

    async def body() -> None:
        async with Clients() as c:
            sender, _, _ = await c.user(node, rooms=[room])
            watcher, _, _ = await c.user(node, rooms=[room])
            fits = "y" * 3000  # ~3.1 KB event: under the limit
            fits_id = await say_acked(sender, room, fits, "fits")
            await watcher.wait_seen(lambda e: e.get("id") == fits_id, 5, what="the message under the limit")

            big = "x" * 5000
            t0 = time.monotonic()
            await sender.send({"type": "say", "room": room, "text": big, "ref": "big"})
            code = await sender.wait_closed(5)
            one_frame_close = round(time.monotonic() - t0, 3)
            answers = [e for e in sender.events if e.get("ref") == "big"]

            # Fragmented: frames of 2,000 bytes, 6 KB in all.
            creds = login(node.url, h.unique_name("frag"))
            raw = await RawWebSocket.open(node, f"/ws?token={quote(creds['token'])}&rooms={room}")
            assert raw.status == 101, (raw.status, raw.body)
            assert (await raw.recv_event())["type"] == "welcome"
            payload = json.dumps({"type": "say", "room": room, "text": "z" * 6000, "ref": "frag"}).encode()
            chunks = [payload[i:i + 2000] for i in range(0, len(payload), 2000)]
            assert raw.writer is not None
            for i, chunk in enumerate(chunks):
                raw.writer.write(RawWebSocket.frame(0x1 if i == 0 else 0x0, chunk, fin=i == len(chunks) - 1))
            await raw.writer.drain()
            frag_events: list[Any] = []
            try:
                while True:
                    opcode, data = await raw.recv_frame(5)
                    if opcode == 0x8:
                        break
                    if opcode == 0x1:
                        frag_events.append(json.loads(data))
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                frag_events.append({"__end__": repr(e)})
            raw.abort()

            # Nobody else is affected: the watcher still works and a new message flows.
            await watcher.ping()
            later, _, _ = await c.user(node, rooms=[room])
            after_id = await say_acked(later, room, "after the oversized ones", "after")
            await watcher.wait_seen(lambda e: e.get("id") == after_id, 5, what="a message after the oversized ones")
            leaked = [e for e in watcher.events if e.get("type") == "message" and e.get("text") in (big, "z" * 6000)]

            figures("ws over --max-message-bytes 4096",
                    one_frame_close_code=code, one_frame_close_s=one_frame_close, answers_to_big=len(answers),
                    fragmented_close_code=raw.close_code,
                    fragmented_answers=[e for e in frag_events if e.get("ref") == "frag" or "__end__" in e],
                    oversized_delivered_to_watcher=len(leaked))
            if code != 1009:
                problems.append(f"one 5 KB frame: close code {code} (reason {sender.close_reason!r}), expected 1009")
            if answers:
                problems.append(f"one 5 KB frame: answered {answers}")
            if raw.close_code != 1009:
                problems.append(f"6 KB in 2 KB fragments: close code {raw.close_code}, expected 1009; got {frag_events}")
            if any(e.get("ref") == "frag" for e in frag_events):
                problems.append(f"6 KB in fragments was answered: {frag_events}")
            if leaked:
                problems.append(f"oversized message delivered to the watcher: {len(leaked)}")

    run(body(), 60)
    assert node.running
    assert not problems, "\n".join(problems)


def test_http_bodies_over_the_limit_are_413_json_and_nothing_happens(node_factory):
    node = node_with(node_factory, "lim413", "--max-message-bytes", "4096", "--max-text", "60000")
    room = h.unique_room("body")
    nick = h.unique_name("big")
    results: dict[str, tuple] = {}

    async def body() -> None:
        async with Clients() as c:
            watcher, _, _ = await c.user(node, rooms=[room])
            sender = login(node.url, h.unique_name("sender"))
            pad = "a" * 10_000
            with h.http_client() as client:
                r = client.post(node.url + "/api/login", headers={"Content-Type": "application/json"},
                                content=json.dumps({"nickname": nick, "avatar": "1.jpg", "pad": pad}).encode())
                results["login 10 KB"] = (r.status_code, r.headers.get("content-type"), r.text[:120])

                def chunks() -> Iterable[bytes]:
                    data = json.dumps({"nickname": nick, "pad": pad}).encode()
                    for i in range(0, len(data), 1000):
                        yield data[i:i + 1000]

                r = client.post(node.url + "/api/login", headers={"Content-Type": "application/json"}, content=chunks())
                results["login 10 KB chunked"] = (r.status_code, r.headers.get("content-type"), r.text[:120])
            r = await h.api_send(node, sender["token"], {"type": "say", "room": room, "text": "s" * 10_000, "ref": 1})
            results["api/send 10 KB"] = (r.status_code, r.headers.get("content-type"), r.text[:120])
            r = h.publish(node, {"room": room, "event": {"text": "p" * 10_000}})
            results["api/publish 10 KB"] = (r.status_code, r.headers.get("content-type"), r.text[:120])

            # Under the limit everything works (so the 413s are the limit, not a broken route).
            small = login_response(node.url, nick)
            r_pub = h.publish(node, {"room": room, "event": {"text": "small publish"}})
            await watcher.wait_seen(lambda e: e.get("text") == "small publish", 5, what="the small publish")
            await asyncio.sleep(0.5)
            leaked = [e for e in watcher.events if len(str(e.get("text", ""))) >= 10_000]
            figures("HTTP bodies over --max-message-bytes 4096",
                    **{k.replace(" ", "_").replace("/", "_"): v[0] for k, v in results.items()},
                    small_login=small.status_code, small_publish=r_pub.status_code, oversized_delivered=len(leaked))
            assert small.status_code == 200, f"the nickname of a refused login must not be claimed: {small.text}"
            assert r_pub.status_code == 200, r_pub.text
            assert not leaked, leaked

    run(body(), 60)
    bad = {k: v for k, v in results.items()
           if not (v[0] == 413 and "json" in (v[1] or "") and '"error"' in v[2])}
    assert not bad, f"expected 413 JSON with an error code for each; got {bad}"
    assert node.running


def test_huge_header_or_request_line_gets_4xx_and_node_survives(node_factory):
    node = node_with(node_factory, "limhdr")
    token = login(node.url, h.unique_name("hdr"))["token"]
    cases = {
        "one 40 KB header field": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
        "200 headers of 200 bytes": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 200) for i in range(200)) + b"\r\n",
        "100 KB request target": b"GET /healthz?q=" + b"c" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "40 KB header on a WebSocket upgrade": (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n").encode()
        + b"X-Big: " + b"d" * 40_000 + b"\r\n\r\n",
        "40 KB header after a first request (keep-alive)": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"e" * 40_000 + b"\r\n\r\n",
    }
    outcomes: dict[str, tuple] = {}
    fds_before = h.open_fds(node)
    for name, request in cases.items():
        status, outcome, seconds, head = raw_http(node.port, request, timeout=5.0)
        if name.endswith("(keep-alive)") and status == 200:
            # The first answer is the good request's; read the second one.
            with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
                s.sendall(request)
                data = b""
                t0 = time.monotonic()
                try:
                    while data.count(b"HTTP/1.1 ") < 2 and time.monotonic() - t0 < 5:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except (socket.timeout, ConnectionResetError):
                    pass
                second = data.split(b"HTTP/1.1 ")[2:3]
                status = int(second[0][:3]) if second else None
                outcome = "answered" if second else "second request not answered"
        outcomes[name] = (status, outcome, seconds)
        with h.http_client(3) as client:
            assert client.get(node.url + "/healthz").status_code == 200, f"node unhealthy after {name}"
    time.sleep(0.5)
    figures("huge headers", **{name.replace(" ", "_"): f"{v[0]}/{v[1]}/{v[2]}s" for name, v in outcomes.items()},
            fds_before=fds_before, fds_after=h.open_fds(node))
    assert node.running, f"node died: {node.stderr()}"
    bad = {name: v for name, v in outcomes.items() if v[0] is None or not 400 <= v[0] < 500}
    assert not bad, f"expected a 4xx answer (431/414/400) within 5 s; got (status, outcome, seconds): {bad}"


def test_rooms_per_connection_over_max_rooms_is_too_many_rooms(node_factory):
    node = node_with(node_factory, "limrooms", "--max-rooms", "3")
    rooms = [h.unique_room(f"r{i}") for i in range(4)]
    problems: list[str] = []

    async def body() -> None:
        async with Clients() as c:
            watcher, _, _ = await c.user(node, rooms=[rooms[3]])
            member, _, creds = await c.user(node, rooms=rooms[:2])
            await member.send({"type": "join", "room": rooms[2], "ref": "j3"})
            assert (await answer_to(member, "j3"))["type"] == "ack"
            await member.send({"type": "join", "room": rooms[3], "ref": "j4"})
            refused = await member.wait_seen(
                lambda e: e.get("type") == "error" and (e.get("ref") == "j4" or e.get("code") == "too_many_rooms"),
                5, what="the answer to the 4th join")
            await member.send({"type": "say", "room": rooms[3], "text": "not a member", "ref": "s4"})
            say_answer = await answer_to(member, "s4")
            await watcher.expect_none(lambda e: e.get("nickname") == creds["nickname"] or e.get("text") == "not a member",
                                      1.0, what="a trace of the refused join", everything=True)
            # The limit counts current rooms: leave one, the 4th join works.
            await member.send({"type": "leave", "room": rooms[0], "ref": "l1"})
            assert (await answer_to(member, "l1"))["type"] == "ack"
            await member.send({"type": "join", "room": rooms[3], "ref": "j4b"})
            rejoin = await answer_to(member, "j4b")
            await watcher.wait_type("joined", 5, nickname=creds["nickname"])
            # Four rooms at connect time.
            raw = await RawWebSocket.open(node, f"/ws?token={quote(creds['token'])}&rooms={','.join(rooms)}")
            connect_status, connect_body = raw.status, raw.body[:200]
            connect_events: list[dict] = []
            if raw.status == 101:
                try:
                    for _ in range(8):
                        connect_events.append(await raw.recv_event(1.0))
                except (asyncio.TimeoutError, AssertionError, asyncio.IncompleteReadError):
                    pass
            raw.abort()
            figures("--max-rooms 3", fourth_join=refused, say_in_refused_room=say_answer.get("code"),
                    join_after_leave=rejoin["type"], four_rooms_at_connect=f"{connect_status} {connect_body!r}",
                    connect_events=[e.get("type") + ":" + str(e.get("code", e.get("room", ""))) for e in connect_events])
            if refused.get("code") != "too_many_rooms":
                problems.append(f"4th join answered {refused}, expected code too_many_rooms")
            if refused.get("ref") != "j4":
                problems.append(f"the too_many_rooms error does not carry the join's ref 'j4': {refused} "
                                "(PROTOCOL.md: an error answering a ref'd event carries its ref)")
            if say_answer.get("code") != "not_joined":
                problems.append(f"say in the refused room answered {say_answer}, expected not_joined")
            if rejoin["type"] != "ack":
                problems.append(f"join after a leave refused: {rejoin}")
            joined4 = connect_status == 101 and sum(1 for e in connect_events if e.get("type") == "presence") > 3
            if joined4:
                problems.append(f"rooms= with 4 rooms accepted all 4 at connect: {connect_events}")

    run(body(), 60)
    assert not problems, "\n".join(problems)


def test_connection_limits_per_ip_and_per_node_refuse_with_503_json(node_factory):
    per_ip = node_with(node_factory, "limip", "--max-connections-per-ip", "3")
    per_node = node_with(node_factory, "limnode", "--max-connections", "2")

    async def body() -> None:
        token = login(per_ip.url, h.unique_name("ip"))["token"]
        async with Clients() as c:
            opened = [(await c.session(per_ip, token, name=f"ip-{i}"))[0] for i in range(3)]
            fourth = await RawWebSocket.open(per_ip, f"/ws?token={quote(token)}")
            fourth.abort()
            sse = await SSEStream.connect(per_ip, token, name="sse-4th")
            sse_status = sse.status
            await sse.close()
            await opened[0].close()
            t0 = time.monotonic()
            again = None
            while time.monotonic() - t0 < 10:
                again = await RawWebSocket.open(per_ip, f"/ws?token={quote(token)}")
                again.abort()
                if again.status == 101:
                    break
                await asyncio.sleep(0.1)
            freed_after = round(time.monotonic() - t0, 2)

            token2 = login(per_node.url, h.unique_name("node"))["token"]
            for i in range(2):
                await c.session(per_node, token2, name=f"node-{i}")
            third = await RawWebSocket.open(per_node, f"/ws?token={quote(token2)}")
            third.abort()
            figures("connection limits", per_ip_4th=f"{fourth.status} {fourth.body.decode(errors='replace')}",
                    per_ip_4th_content_type=fourth.headers.get("content-type"), per_ip_sse_while_full=sse_status,
                    per_ip_slot_freed_after_s=freed_after, per_node_3rd=f"{third.status} {third.body.decode(errors='replace')}")
            for what, refused in (("4th WebSocket from one IP (--max-connections-per-ip 3)", fourth),
                                  ("3rd WebSocket on a node (--max-connections 2)", third)):
                assert refused.status == 503, f"{what}: HTTP {refused.status} {refused.body!r}"
                assert "json" in refused.headers.get("content-type", ""), refused.headers
                assert refused.json_body().get("error") == "too_many_connections", refused.body
            assert again is not None and again.status == 101, f"a closed connection's slot is not freed within 10 s: {again.status}"

    run(body(), 60)


def test_rate_limit_hits_the_flooder_only(node_factory):
    node = node_with(node_factory, "limrate", "--rate", "5", "--burst", "5")
    room = h.unique_room("rate")

    async def body() -> None:
        async with Clients() as c:
            flooder, _, _ = await c.user(node, h.unique_name("flood"), rooms=[room])
            calm, _, _ = await c.user(node, h.unique_name("calm"), rooms=[room])
            watcher, _, _ = await c.user(node, rooms=[room])
            t0 = time.monotonic()
            for i in range(30):
                await flooder.send({"type": "say", "room": room, "text": f"flood {i}", "ref": f"f{i}"})
            flood_seconds = time.monotonic() - t0
            calm_ids = []
            for i in range(6):
                calm_ids.append(await say_acked(calm, room, f"calm {i}", f"c{i}"))
                await asyncio.sleep(0.3)
            answers = [await answer_to(flooder, f"f{i}") for i in range(30)]
            acked = {a["ref"]: a["id"] for a in answers if a["type"] == "ack"}
            limited = [a["ref"] for a in answers if a.get("code") == "rate_limited"]
            other = [a for a in answers if a["type"] == "error" and a.get("code") != "rate_limited"]
            await asyncio.sleep(1.2)  # the bucket refills
            refill = await say(flooder, room, "after the pause", "after")
            expected_texts = {f"flood {ref[1:]}" for ref in acked} | {f"calm {i}" for i in range(6)}
            if refill["type"] == "ack":
                expected_texts.add("after the pause")
            try:
                await wait_until(lambda: expected_texts <= {e.get("text") for e in watcher.events if e.get("type") == "message"},
                                 10, "every accepted message at the watcher")
            except AssertionError:
                seen = {e.get("text") for e in watcher.events if e.get("type") == "message"}
                raise AssertionError(
                    f"accepted messages never delivered to the watcher: {sorted(expected_texts - seen)}; acked refs "
                    f"{sorted(acked)}; flooder answers {answers}; watcher events {watcher.events}") from None
            await asyncio.sleep(0.5)
            got = [e.get("text") for e in watcher.events if e.get("type") == "message"]
            figures("--rate 5 --burst 5", flood_sent=30, flood_send_s=round(flood_seconds, 3), flood_acked=len(acked),
                    flood_rate_limited=len(limited), other_errors=len(other), calm_sent=6, calm_acked=len(calm_ids),
                    after_pause=refill.get("type"), watcher_messages=len(got))
            assert not other, other
            # The bucket refills while the server works through the flood; on a loaded
            # machine that can take longer than the client took to send it. The acked ids'
            # millisecond parts say how long the server spent between the first and the
            # last message it let through.
            stamps = sorted(h.id_key(i)[0] for i in acked.values())
            server_span = (stamps[-1] - stamps[0]) / 1000 + 0.05 if stamps else 0.0
            span = max(flood_seconds, server_span)
            figures("--rate 5 --burst 5 (span)", server_span_s=round(server_span, 3))
            assert 5 <= len(acked) <= 5 + 5 * span + 1, (
                f"{len(acked)} of 30 acked within {flood_seconds:.2f}s sent / {server_span:.2f}s on the server")
            assert len(limited) == 30 - len(acked) and len(limited) >= 30 - (5 + 5 * span + 1), limited
            assert refill["type"] == "ack", f"after 1.2 s the bucket should allow a say: {refill}"
            assert sorted(got) == sorted(expected_texts), (
                f"the watcher must get exactly the accepted messages; extra {set(got) - expected_texts}, "
                f"missing {expected_texts - set(got)}, duplicates {len(got) - len(set(got))}")

    run(body(), 60)


@pytest.mark.xdist_group("heavy")  # CPU-bound: one at a time under xdist --dist loadgroup
def test_slow_consumer_is_disconnected_and_memory_stays_flat(node_factory):
    """A subscriber whose socket never reads (4 KB receive buffer) in a room flooded with
    2,000 × 50 KB messages (--max-queued-frames 16): it is disconnected, the node's RSS
    grows < 100 MB, the two reading subscribers get every message."""
    node = node_with(node_factory, "slow", "--max-queued-frames", "16", "--max-text", "60000",
                     "--rate", "100000", "--burst", "100000", "--history", "100")
    room = h.unique_room("flood")
    count, size = 2000, 50_000
    figs: dict[str, Any] = {}
    problems: list[str] = []
    slow_sock: list[socket.socket] = []

    async def body() -> None:
        async with Clients() as c:
            readers = [(await c.user(node, h.unique_name("reader"), rooms=[room]))[0] for _ in range(2)]
            publisher, _, _ = await c.user(node, h.unique_name("pub"), rooms=[room])
            slow_token = login(node.url, h.unique_name("slow"))["token"]
            sock, rest = await asyncio.to_thread(blocking_ws, node, f"/ws?token={quote(slow_token)}&rooms={room}", 4096)
            slow_sock.append(sock)
            await wait_until(lambda: connections_total(node) == 4, 10, "4 connections")
            baseline = h.rss_kib(node)
            peak = [baseline]
            sampling = True

            async def sample() -> None:
                while sampling:
                    try:
                        peak[0] = max(peak[0], h.rss_kib(node))
                    except OSError:
                        return
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            text = "x" * size
            t0 = time.monotonic()
            for i in range(count):
                await publisher.send({"type": "say", "room": room, "text": text, "ref": i, "echo": False})
                if i % 100 == 99:  # a window of 100 in flight
                    await answer_to(publisher, i, 60)
            answers = [await answer_to(publisher, i, 60) for i in range(count)]
            acked = {a["id"] for a in answers if a["type"] == "ack"}
            figs["sent"], figs["acked"] = count, len(acked)
            figs["publish_s"] = round(time.monotonic() - t0, 1)

            def delivered(r: WSClient) -> set:
                return {e.get("id") for e in r.events if e.get("type") == "message"}

            try:
                await wait_until(lambda: all(acked <= delivered(r) for r in readers), 90, "every message at both readers")
            except AssertionError as e:
                problems.append(str(e))
            figs["flood_s"] = round(time.monotonic() - t0, 1)
            figs["delivered_per_reader"] = [len(delivered(r) & acked) for r in readers]
            figs["duplicates_per_reader"] = [sum(1 for e in r.events if e.get("type") == "message") - len(delivered(r))
                                             for r in readers]
            # Server side: the slow connection must be gone although it never read a byte.
            t1 = time.monotonic()
            gone = None
            while time.monotonic() - t1 < 10:
                if connections_total(node) <= 3:
                    gone = round(time.monotonic() - t1, 2)
                    break
                await asyncio.sleep(0.2)
            figs["server_closed_slow_within_10s_after_flood"] = gone
            figs["connections_after_flood"] = h.cluster_connections(node)
            figs["disconnects_slow_consumer"] = h.metric_sum(h.metrics(node), "switchboard_disconnects_total",
                                                             reason="slow_consumer")
            sampling = False
            await sampler
            figs["rss_baseline_mb"] = round(baseline / 1024, 1)
            figs["rss_peak_mb"] = round(peak[0] / 1024, 1)
            figs["rss_growth_mb"] = round((peak[0] - baseline) / 1024, 1)
            # Now read the slow socket: what did it get, and how did it end?
            drained = await asyncio.to_thread(drain_ws_socket, sock, rest, 15.0)
            figs["slow_read_frames"] = drained["text_frames"]
            figs["slow_end"] = f"{drained['end']} {drained['close_code']} {drained['close_reason']!r}"
            if gone is None:
                problems.append("the slow consumer's connection was still open on the server 10 s after the flood "
                                f"(/cluster: {figs['connections_after_flood']}); it is only closed once the client reads")
            if figs["disconnects_slow_consumer"] < 1:
                problems.append("/metrics counts no slow_consumer disconnect")
            if drained["end"] == "close frame" and drained["close_code"] not in (1008, 1013):
                problems.append(f"slow consumer closed with {drained['close_code']}, expected 1008 or 1013")
            if drained["end"] not in ("close frame", "EOF", "reset"):
                problems.append(f"the slow consumer's socket did not end: {drained}")
            if drained["text_frames"] >= count:
                problems.append(f"the slow consumer got all {count} messages: it was never cut off")
            if peak[0] - baseline >= 100 * 1024:
                problems.append(f"RSS grew {figs['rss_growth_mb']} MB (≥ 100 MB)")
            if len(acked) != count:
                problems.append(f"only {len(acked)} of {count} acked")

    try:
        run(body(), 240)
    finally:
        for s in slow_sock:
            s.close()
        figures("slow consumer, 2,000 × 50 KB, --max-queued-frames 16", **figs)
    assert node.running, node.stderr()
    assert not problems, "\n".join(problems)


@pytest.mark.xdist_group("heavy")  # CPU-bound: one at a time under xdist --dist loadgroup
def test_a_slow_consumer_does_not_slow_the_others(node_factory):
    """Twelve readers in a room get 400 paced 16 KB messages (100/s), once alone and once
    with a subscriber that never reads (it is cut off meanwhile). The readers' p99
    latency (server `ts` → arrival) with the slow consumer stays within 2× of the run
    without it (plus 15 ms: the resolution of a Python client on a shared 2-core box).

    Latency figures are at the mercy of whatever else the machine runs (another job, a
    parallel test worker): a pair of runs that misses the bound is measured again, with a
    new slow consumer, up to three pairs; one pair within the bound passes. A slow
    consumer that really slowed the others would miss it every time."""
    node = node_with(node_factory, "slowp99", "--max-queued-frames", "16", "--max-text", "20000",
                     "--rate", "100000", "--burst", "100000")
    room = h.unique_room("p99")
    # 400 × 16 KB = 6.4 MB: more than the kernel's socket buffers (4 MB send buffer at
    # most) and NIO's 256 KB, so the slow subscriber must be cut off during the run.
    count, size, readers_n, pairs = 400, 16000, 12, 3
    figs: dict[str, Any] = {}
    slow_sock: list[socket.socket] = []
    outcome: dict[str, Any] = {"passed": False}

    def p99(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    async def body() -> None:
        latencies: dict[str, list[float]] = {}
        received: dict[str, set] = {}

        async def read(ws: Any, name: str) -> None:
            try:
                async for message in ws:
                    now = time.time() * 1000
                    event = json.loads(message)
                    if event.get("type") == "message":
                        phase = event["text"][:2]
                        latencies.setdefault(phase, []).append(now - event["ts"])
                        received.setdefault(f"{name}/{phase}", set()).add(event["id"])
            except Exception:  # noqa: BLE001 - closed at the end
                pass

        sockets, tasks = [], []
        async with Clients() as c:
            for i in range(readers_n):
                token = login(node.url, h.unique_name("rd"))["token"]
                ws = await h.ws_connect(h.ws_address(node.ws_url, token, [room]), proxy=None, max_size=None)
                sockets.append(ws)
                tasks.append(asyncio.create_task(read(ws, f"r{i}")))
            publisher, _, _ = await c.user(node, h.unique_name("pub"), rooms=[room])

            async def phase(tag: str) -> None:
                acked: set = set()
                t0 = time.monotonic()
                for i in range(count):
                    # Paced: message i leaves at t0 + i/100 s.
                    delay = t0 + i / 100 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await publisher.send({"type": "say", "room": room, "text": tag + "-" + "x" * size, "ref": f"{tag}{i}",
                                          "echo": False})
                for i in range(count):
                    answer = await answer_to(publisher, f"{tag}{i}", 30)
                    if answer["type"] == "ack":
                        acked.add(answer["id"])
                figs[f"{tag}_acked"] = len(acked)
                await wait_until(lambda: all(acked <= received.get(f"r{i}/{tag}", set()) for i in range(readers_n)), 30,
                                 f"every reader to get every {tag} message")

            for pair in range(1, pairs + 1):
                without, with_slow = f"a{pair}", f"b{pair}"  # two characters: the phase tag
                await phase(without)  # without a slow consumer
                slow_token = login(node.url, h.unique_name("slow"))["token"]
                sock, _ = await asyncio.to_thread(blocking_ws, node, f"/ws?token={quote(slow_token)}&rooms={room}", 4096)
                slow_sock.append(sock)
                await phase(with_slow)  # with one
                figs[f"p99_without_ms_{pair}"] = round(p99(latencies[without]), 1)
                figs[f"p99_with_slow_ms_{pair}"] = round(p99(latencies[with_slow]), 1)
                figs[f"p50_without_ms_{pair}"] = round(sorted(latencies[without])[len(latencies[without]) // 2], 1)
                figs[f"p50_with_slow_ms_{pair}"] = round(sorted(latencies[with_slow])[len(latencies[with_slow]) // 2], 1)
                figs["pairs_measured"] = pair
                if figs[f"p99_with_slow_ms_{pair}"] <= 2 * figs[f"p99_without_ms_{pair}"] + 15:
                    outcome["passed"] = True
                    break
            figs["slow_consumer_disconnects"] = h.metric_sum(h.metrics(node), "switchboard_disconnects_total",
                                                             reason="slow_consumer")
            for ws in sockets:
                await ws.close()
            for t in tasks:
                t.cancel()

    try:
        run(body(), 420)
    finally:
        for sock in slow_sock:
            sock.close()
        figures("others' latency with a slow consumer", **figs)
    assert node.running, node.stderr()
    assert figs["slow_consumer_disconnects"] >= 1, f"the slow consumer was never cut off: {figs}"
    assert outcome["passed"], (f"others' p99 with a slow consumer over 2 × the p99 without + 15 ms in each of "
                               f"{figs.get('pairs_measured')} pairs of runs: {figs}")


# ======================================================================================
# 2. Security
# ======================================================================================


async def refusal(node: Any, token: str, transport: str) -> tuple[int, str]:
    """(status, body) of a request with `token` on `transport`."""
    if transport == "ws":
        raw = await RawWebSocket.open(node, f"/ws?token={quote(token)}")
        status, body = raw.status, raw.body.decode(errors="replace")
        if status == 101:
            try:
                body = json.dumps(await raw.recv_event(3))
            except Exception as e:  # noqa: BLE001
                body = repr(e)
        await raw.close()
        return status or 0, body
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        if transport == "sse":
            async with client.stream("GET", node.url + "/sse", params={"token": token}) as r:
                first = b""
                async for chunk in r.aiter_raw():
                    first += chunk
                    break
                return r.status_code, first.decode(errors="replace")[:200]
        if transport == "poll":
            r = await client.get(node.url + "/poll", params={"token": token, "wait": "0"})
        elif transport == "send":
            r = await client.post(node.url + "/api/send", params={"token": token}, content=b'{"type":"ping","ref":1}')
        elif transport == "bearer-send":
            r = await client.post(node.url + "/api/send", headers={"Authorization": f"Bearer {token}"},
                                  content=b'{"type":"ping","ref":1}')
        else:
            raise ValueError(transport)
        return r.status_code, r.text[:200]


def test_expired_token_is_refused_401_on_every_transport(node_factory):
    # Tokens carry whole seconds (`exp` = the second of issue + ttl, valid while the
    # current second is below it): with --token-ttl 1 a token lives between 0 and 1 s —
    # one issued late in a second is gone a few milliseconds later, before a loaded
    # machine gets to the "fresh" checks. --token-ttl 2 gives every token at least 1 s,
    # and each fresh check gets a token of its own, used at once; 2.2 s after its login
    # a token is surely expired.
    node = node_with(node_factory, "ttl", "--token-ttl", "2")
    transports = ["ws", "sse", "poll", "send", "bearer-send"]

    async def body() -> None:
        token = login(node.url, h.unique_name("ttl"))["token"]
        logged_in = time.monotonic()
        fresh = {t: (await refusal(node, login(node.url, h.unique_name("ttl"))["token"], t))[0] for t in ("send", "ws")}
        await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - logged_in)))
        expired = {t: await refusal(node, token, t) for t in transports}
        figures("--token-ttl 2, 2.2 s after the login", fresh=fresh, **{f"expired_{t}": v[0] for t, v in expired.items()})
        assert fresh == {"ws": 101, "send": 200}, f"a fresh token must work: {fresh}"
        bad = {t: v for t, v in expired.items() if v[0] != 401 or "unauthorized" not in v[1]}
        assert not bad, f"an expired token must get 401 {{\"error\":\"unauthorized\"}}; got {bad}"

    run(body(), 30)


def test_secret_rotation_new_and_old_verify_others_refused(node_factory):
    old, new, other = "old-secret-" + secrets.token_hex(8), "new-secret-" + secrets.token_hex(8), "other-" + secrets.token_hex(8)
    nodes = {
        "old": node_factory(node_id="sec-old", secret=old),
        "new,old": node_factory(node_id="sec-rotated", secret=f"{new},{old}"),
        "new": node_factory(node_id="sec-new", secret=new),
        "other": node_factory(node_id="sec-other", secret=other),
    }
    tokens = {
        "signed old (by node 'old')": login(nodes["old"].url, h.unique_name("o"))["token"],
        "signed by node 'new,old'": login(nodes["new,old"].url, h.unique_name("n"))["token"],
    }
    expected = {
        ("signed old (by node 'old')", "old"): 101, ("signed old (by node 'old')", "new,old"): 101,
        ("signed old (by node 'old')", "new"): 401, ("signed old (by node 'old')", "other"): 401,
        ("signed by node 'new,old'", "old"): 401, ("signed by node 'new,old'", "new,old"): 101,
        ("signed by node 'new,old'", "new"): 101, ("signed by node 'new,old'", "other"): 401,
    }

    async def body() -> dict:
        got = {}
        for (tname, nname) in expected:
            status, text = await refusal(nodes[nname], tokens[tname], "ws")
            send_status, _ = await refusal(nodes[nname], tokens[tname], "send")
            got[(tname, nname)] = (status, send_status, text[:80])
        return got

    got = run(body(), 60)
    figures("secret rotation (ws status, /api/send status)",
            **{f"{t.split(' ')[0]}_{t.split(chr(39))[1]}@{n}": f"{v[0]}/{v[1]}" for (t, n), v in got.items()})
    bad = {k: v for k, v in got.items()
           if v[0] != expected[k] or v[1] != (200 if expected[k] == 101 else 401)}
    assert not bad, f"expected ws/send {expected} — mismatches: {bad}"


def test_publish_refuses_missing_wrong_and_user_credentials(node_factory):
    node = node_with(node_factory, "pubkey")
    room = h.unique_room("pub")
    key = h.DEFAULT_API_KEY

    async def body() -> dict:
        async with Clients() as c:
            watcher, _, creds = await c.user(node, rooms=[room])
            cases = {
                "no Authorization": {},
                "Bearer wrong": {"Authorization": "Bearer wrong"},
                "Bearer key+x": {"Authorization": f"Bearer {key}x"},
                "Bearer key prefix": {"Authorization": f"Bearer {key[:-1]}"},
                "Bearer user token": {"Authorization": f"Bearer {creds['token']}"},
                "Basic key": {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()},
                "key without scheme": {"Authorization": key},
                "Bearer without key": {"Authorization": "Bearer"},
            }
            got = {}
            for name, headers in cases.items():
                r = h.publish(node, {"room": room, "event": {"text": f"forged {name}"}}, api_key=None, headers=headers)
                got[name] = (r.status_code, r.text[:80])
            with h.http_client() as client:
                r = client.post(node.url + "/api/publish", params={"key": key, "api_key": key, "token": key},
                                content=json.dumps({"room": room, "event": {"text": "forged query key"}}))
                got["key in the query"] = (r.status_code, r.text[:80])
            good = h.publish(node, {"room": room, "event": {"text": "the real one"}})
            await watcher.wait_seen(lambda e: e.get("text") == "the real one", 5, what="the keyed publish")
            await asyncio.sleep(0.5)
            forged = [e for e in watcher.events if str(e.get("text", "")).startswith("forged")]
            figures("/api/publish credentials", good=good.status_code, forged_delivered=len(forged),
                    **{k.replace(" ", "_"): v[0] for k, v in got.items()})
            assert good.status_code == 200, good.text
            assert not forged, forged
            return got

    got = run(body(), 30)
    bad = {k: v for k, v in got.items() if v[0] != 401}
    assert not bad, f"expected 401 for each; got {bad}"


def test_origin_allow_list_for_websocket_and_cors(node_factory):
    good, also = "https://chat.good.example", "http://also.example:8080"
    node = node_with(node_factory, "origin", "--allowed-origins", f"{good},{also}")
    plain = node_with(node_factory, "origin-default")
    evil = "https://evil.example"

    async def body() -> dict:
        token = login(node.url, h.unique_name("o"))["token"]
        token_plain = login(plain.url, h.unique_name("p"))["token"]
        ws_cases = {
            "listed origin": (node, token, good, 101),
            "second listed origin": (node, token, also, 101),
            "no Origin (non-browser)": (node, token, None, 101),
            "same origin": (node, token, f"http://127.0.0.1:{node.port}", 101),
            "foreign origin": (node, token, evil, 403),
            "listed origin + suffix": (node, token, good + ".evil.example", 403),
            "listed host, other scheme": (node, token, "http://chat.good.example", 403),
            "Origin: null": (node, token, "null", 403),
            "foreign origin, node without a list": (plain, token_plain, evil, 403),
            "listed elsewhere, node without a list": (plain, token_plain, good, 403),
            "same origin, node without a list": (plain, token_plain, f"http://127.0.0.1:{plain.port}", 101),
        }
        got: dict[str, Any] = {}
        for name, (n, tok, origin, want) in ws_cases.items():
            raw = await RawWebSocket.open(n, f"/ws?token={quote(tok)}", headers={"Origin": origin} if origin else None)
            got["ws " + name] = (raw.status, want, raw.body.decode(errors="replace")[:80])
            await raw.close()
        with h.http_client() as client:
            for name, origin, want in (("listed", good, good), ("foreign", evil, None)):
                r = client.get(node.url + "/healthz", headers={"Origin": origin})
                got[f"cors GET {name}"] = (r.headers.get("access-control-allow-origin"), want, r.status_code)
                r = client.options(node.url + "/api/login", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type"})
                got[f"cors preflight {name}"] = (r.headers.get("access-control-allow-origin"), want, r.status_code)
                r = client.post(node.url + "/api/login", headers={"Origin": origin, "Content-Type": "application/json"},
                                content=json.dumps({"nickname": h.unique_name("c")}))
                got[f"cors POST login {name}"] = (r.headers.get("access-control-allow-origin"), want, r.status_code)
            r = client.get(plain.url + "/healthz", headers={"Origin": good})
            got["cors GET listed elsewhere, node without a list"] = (r.headers.get("access-control-allow-origin"), None,
                                                                       r.status_code)
        return got

    got = run(body(), 60)
    figures("origin allow-list", **{k.replace(" ", "_"): v[0] for k, v in got.items()})
    bad = {k: v for k, v in got.items() if v[0] != v[1]}
    assert not bad, f"(got, expected, detail) mismatches: {bad}"


def test_whispers_never_reach_a_third_session_on_any_transport_or_node(cluster3):
    """alice ↔ bob whisper across nodes while eve — in the same room — listens with a
    WebSocket, an SSE stream and a poller on each of the three nodes, then resumes each of
    them from `r.<room>@0-0,u@0-0`: eve never sees a private event. Controls: eve does get
    the room message (live and from history) and bob's own resume gets the whispers."""
    n1, n2, n3 = cluster3
    room = h.unique_room("priv")
    alice_nick, bob_nick, eve_nick = h.unique_name("alice"), h.unique_name("bob"), h.unique_name("eve")
    figs: dict[str, Any] = {}

    async def body() -> None:
        alice_t = login(n1.url, alice_nick)["token"]
        bob_t = login(n2.url, bob_nick)["token"]
        eve_t = login(n3.url, eve_nick)["token"]
        streams: list[SSEStream] = []
        pollers: list[tuple[Poller, h.SwitchboardNode]] = []
        async with Clients() as c:
            try:
                alice, _ = await c.session(n1, alice_t, [room], name="alice")
                bob, _ = await c.session(n2, bob_t, [room], name="bob")
                eve_ws = [(await c.session(n, eve_t, [room], name=f"eve-ws-{n.node_id}"))[0] for n in cluster3]
                for n in cluster3:
                    s, _ = await SSEStream.session(n, eve_t, [room], name=f"eve-sse-{n.node_id}")
                    streams.append(s)
                for n in cluster3:
                    p = Poller(eve_t, [room], name=f"eve-poll-{n.node_id}")
                    await p.poll(n, wait=0)
                    pollers.append((p, n))
                to_bob = [await whisper_acked(alice, bob_nick, f"secret a→b {i}", f"ab{i}") for i in range(3)]
                to_alice = [await whisper_acked(bob, alice_nick, f"secret b→a {i}", f"ba{i}") for i in range(3)]
                control = await say_acked(alice, room, "public control", "pc")
                await bob.wait_seen(lambda e: len(privates(bob.events)) >= 3, 10, what="bob's 3 whispers")
                await alice.wait_seen(lambda e: len(privates(alice.events)) >= 3, 10, what="alice's 3 whispers")

                def has_control(events: list[dict]) -> bool:
                    return any(e.get("id") == control and e.get("type") == "message" for e in events)

                await wait_until(lambda: all(has_control(x.events) for x in [*eve_ws, *streams]), 10,
                                 "the control message on every eve stream")
                for p, n in pollers:
                    t0 = time.monotonic()
                    while not has_control(p.events) and time.monotonic() - t0 < 10:
                        await p.poll(n, wait=2)
                    assert has_control(p.events), f"{p.name}: no control message"
                await asyncio.sleep(1.0)
                for p, n in pollers:
                    await p.poll(n, wait=0)
                live_leaks = {x.name: privates(x.events) for x in [*eve_ws, *streams] + [p for p, _ in pollers]}
                live_leaks = {k: v for k, v in live_leaks.items() if v}

                # Resume every eve transport on every node from the start of every stream.
                cursor = f"r.{room}@0-0,u@0-0"
                resumed: dict[str, list[dict]] = {}
                for n in cluster3:
                    ws, _ = await c.session(n, eve_t, [room], cursor=cursor, name=f"eve-ws-resume-{n.node_id}")
                    s, _ = await SSEStream.session(n, eve_t, [room], last_event_id=cursor, name=f"eve-sse-resume-{n.node_id}")
                    streams.append(s)
                    p = Poller(eve_t, [room], name=f"eve-poll-resume-{n.node_id}")
                    await p.poll(n, wait=0, cursor=cursor)
                    pollers.append((p, n))
                    await wait_until(lambda: has_control(ws.events) and has_control(s.events), 10,
                                     f"the control message from history on {n.node_id}")
                    assert has_control(p.events), f"poll resumed on {n.node_id} lacks the history: {p.events}"
                    await asyncio.sleep(0.5)
                    resumed[f"ws@{n.node_id}"] = ws.events
                    resumed[f"sse@{n.node_id}"] = s.events
                    resumed[f"poll@{n.node_id}"] = p.events
                resume_leaks = {k: privates(v) for k, v in resumed.items() if privates(v)}

                # Control: bob's own resume does return his private stream.
                bob2, _ = await c.session(n3, bob_t, [room], cursor=f"r.{room}@0-0,u@0-0", name="bob-resume")
                await wait_until(lambda: {e.get("id") for e in privates(bob2.events)} >= set(to_bob) | set(to_alice),
                                 10, "bob's resume returning his 6 private events")
                figs.update(whispers_acked=len(to_bob) + len(to_alice), eve_live_connections=9, eve_resumed_connections=9,
                            eve_private_events_live=sum(len(v) for v in live_leaks.values()),
                            eve_private_events_resumed=sum(len(v) for v in resume_leaks.values()),
                            bob_resume_privates=len(privates(bob2.events)))
                assert not live_leaks, f"eve received private events live: {live_leaks}"
                assert not resume_leaks, f"eve received private events on resume: {resume_leaks}"
            finally:
                for s in streams:
                    await s.close()
                for p, _ in pollers:
                    await p.close()

    try:
        run(body(), 120)
    finally:
        figures("private isolation (3 nodes, ws/sse/poll)", **figs)


FORGED_CURSORS = [
    "u@0-0", "u.{bob}@0-0", "u:{bob}@0-0", "user:{bob}@0-0", "{bob}@0-0", "U@0-0", "u@0-0,u@0-0", "u @0-0",
    "u@0-0;{bob}", "u@18446744073709551616-0", "u@-1-0", "u@99999999999999-99", "r.{room}@0-0,u@0-0,{bob}@0-0",
    "r.user:{bob}@0-0", "r.{room}@0-0,r.{room}@0-0", "garbage", "%00", "u@0-0\x00{bob}", ",,,", "u@0-0,",
    "u@{bob_id}", "r.{room}@0-0,u@{bob_id}", "u@0-0,r.{room}@0-0,u.{alice}@0-0", "u@0-0 ,u@0-0",
]


def test_forged_cursors_never_yield_another_sessions_private_events(cluster3):
    """eve presents forged/altered cursors (naming bob's stream in every spelling, bob's
    real ids, duplicates, garbage, overflowing numbers) on WebSocket (?cursor), SSE
    (Last-Event-ID) and poll (?cursor): each is refused (400) or accepted, and whatever is
    accepted returns eve's own private event at most — never bob's."""
    n1, n2, _ = cluster3
    room = h.unique_room("forge")
    alice_nick, bob_nick, eve_nick = h.unique_name("alice"), h.unique_name("bob"), h.unique_name("eve")
    outcomes: dict[str, str] = {}
    leaks: dict[str, list] = {}

    async def body() -> None:
        alice_t = login(n1.url, alice_nick)["token"]
        bob_t = login(n1.url, bob_nick)["token"]
        eve_t = login(n2.url, eve_nick)["token"]
        async with Clients() as c:
            alice, _ = await c.session(n1, alice_t, [room], name="alice")
            bob, _ = await c.session(n1, bob_t, [room], name="bob")
            bob_ids = [await whisper_acked(alice, bob_nick, f"for bob only {i}", f"b{i}") for i in range(3)]
            bob_ids.append(await whisper_acked(bob, alice_nick, "bob to alice", "ba"))
            eve_id = await whisper_acked(alice, eve_nick, "for eve", "e1")
            await say_acked(alice, room, "public", "p")
            await bob.wait_seen(lambda e: len(privates(bob.events)) >= 3, 10)

            def foreign(events: list[dict]) -> list[dict]:
                """Private events that are not eve's own (neither to nor from her)."""
                return [e for e in privates(events)
                        if e.get("to") != eve_nick and (e.get("from") or {}).get("nickname") != eve_nick
                        or str(e.get("text", "")).startswith(("for bob only", "bob to alice"))]

            for template in FORGED_CURSORS:
                cursor = template.format(bob=bob_nick, alice=alice_nick, room=room, bob_id=bob_ids[0])
                key = repr(cursor)
                # WebSocket
                raw = await RawWebSocket.open(n2, "/ws?" + urlencode({"token": eve_t, "rooms": room, "cursor": cursor}))
                events: list[dict] = []
                if raw.status == 101:
                    try:
                        while True:
                            events.append(await raw.recv_event(1.0))
                    except (asyncio.TimeoutError, AssertionError, asyncio.IncompleteReadError, ConnectionError):
                        pass
                    ws_out = f"101 ({len(events)} events, privates {[e.get('text') for e in privates(events)]})"
                else:
                    ws_out = f"{raw.status} {raw.body.decode(errors='replace')[:60]}"
                await raw.close()
                if foreign(events):
                    leaks[f"ws {key}"] = foreign(events)
                # SSE with Last-Event-ID
                sse_events: list[dict] = []
                try:
                    sse = await SSEStream.connect(n2, eve_t, [room], last_event_id=cursor, name="eve-sse")
                except (httpx.HTTPError, UnicodeError, ValueError) as e:
                    sse_out = f"client refused to send it ({type(e).__name__})"
                else:
                    async with sse:
                        if sse.status == 200:
                            await asyncio.sleep(1.0)
                            sse_events = list(sse.events)
                            sse_out = f"200 ({len(sse_events)} events, privates {[e.get('text') for e in privates(sse_events)]})"
                        elif sse.status is None:
                            sse_out = "not sent (the HTTP client refuses a NUL in a header)"
                        else:
                            sse_out = f"{sse.status} {bytes(sse.raw)[:60]!r}"
                if foreign(sse_events):
                    leaks[f"sse {key}"] = foreign(sse_events)
                # Poll
                async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                    r = await client.get(n2.url + "/poll", params={"token": eve_t, "rooms": room, "cursor": cursor, "wait": "0"})
                poll_events = r.json().get("events", []) if r.status_code == 200 else []
                poll_out = (f"200 ({len(poll_events)} events, privates {[e.get('text') for e in privates(poll_events)]})"
                            if r.status_code == 200 else f"{r.status_code} {r.text[:60]}")
                if foreign(poll_events):
                    leaks[f"poll {key}"] = foreign(poll_events)
                outcomes[key] = f"ws {ws_out} | sse {sse_out} | poll {poll_out}"

    try:
        run(body(), 180)
    finally:
        print("\n[figures] forged cursors (eve on node 2):")
        for k, v in outcomes.items():
            print(f"    {k}: {v}")
        figures("forged cursors", cursors_tried=len(outcomes), transports=3, leaks=len(leaks))
    assert not leaks, f"another session's private events returned for forged cursors: {leaks}"


def test_new_holder_of_a_lapsed_nickname_does_not_get_the_previous_holders_whispers(node_factory):
    """bob gets a whisper and leaves; once the nickname claim lapses (~20 s) someone else
    logs in as "bob" — a different session — and resumes from `u@0-0`: the old whisper
    must not be handed to the new session (issue 9: "a session can never read another
    session's events by presenting a forged or altered cursor")."""
    node = node_with(node_factory, "lapse")
    bob_nick = h.unique_name("bob")
    figs: dict[str, Any] = {}

    async def body() -> None:
        async with Clients() as c:
            alice, _, _ = await c.user(node)
            bob_t = login(node.url, bob_nick)["token"]
            bob, _ = await c.session(node, bob_t, name="bob-1")
            wid = await whisper_acked(alice, bob_nick, "for the first bob", "w")
            await bob.wait_seen(lambda e: e.get("id") == wid, 5)
            await bob.close()
            t0 = time.monotonic()
            r = login_response(node.url, bob_nick)
            while r.status_code == 409 and time.monotonic() - t0 < 45:
                await asyncio.sleep(1.0)
                r = login_response(node.url, bob_nick)
            figs["claim_lapsed_after_s"] = round(time.monotonic() - t0, 1)
            assert r.status_code == 200, f"nickname not free 45 s after its last connection: {r.status_code} {r.text}"
            new_t = r.json()["token"]
            mallory, _ = await c.session(node, new_t, cursor="u@0-0", name="new-bob")
            # A live whisper as the barrier: the backlog after u@0-0 comes before it.
            barrier = await whisper_acked(alice, bob_nick, "for the new bob", "w2")
            await mallory.wait_seen(lambda e: e.get("id") == barrier, 10, what="the live whisper to the new bob")
            p = Poller(new_t, [], name="new-bob-poll")
            try:
                await p.poll(node, wait=0, cursor="u@0-0")
            finally:
                await p.close()
            got = [e.get("text") for e in privates(mallory.events) + privates(p.events) if e.get("text") != "for the new bob"]
            figs["old_whispers_given_to_new_session"] = len(got)
            assert not got, (f"a new session holding the lapsed nickname {bob_nick!r} read the previous session's "
                             f"whispers with cursor u@0-0: {got}")

    try:
        run(body(), 90)
    finally:
        figures("lapsed nickname reuse", **figs)


# ======================================================================================
# 3. Faults
# ======================================================================================


class Subscriber:
    """A WebSocket subscriber of one room that reconnects with its cursor whenever its
    connection ends: first to `first_url`, then to `reconnect_url` (a node or the LB).
    Records every message id (duplicates included), connects, closes and presence."""

    def __init__(self, name: str, token: str, room: str, first_url: str, reconnect_url: Optional[str] = None,
                 reconnect: bool = True) -> None:
        self.name, self.token, self.room = name, token, room
        self.first_url, self.reconnect_url = first_url, reconnect_url or first_url
        self.reconnect = reconnect
        self.tracker: Optional[CursorTracker] = None
        self.ids: list[str] = []
        self.arrivals: dict[str, float] = {}  # id → first arrival (monotonic)
        self.cursors: list[Optional[str]] = []  # the cursor each connection was opened with
        self.ids_by_connection: list[list[str]] = []
        self.connects: list[tuple[float, str]] = []  # (monotonic time, node of the welcome)
        self.closes: list[tuple[float, Optional[int]]] = []
        self.failed_attempts = 0
        self.resets = 0
        self.presence: Optional[int] = None
        self.client: Optional[WSClient] = None
        self.connected = asyncio.Event()

    def _observe(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "message" and event.get("room") == self.room:
            self.ids.append(event["id"])
            if self.ids_by_connection:
                self.ids_by_connection[-1].append(event["id"])
            self.arrivals.setdefault(event["id"], time.monotonic())
        elif kind == "presence" and event.get("room") == self.room:
            self.presence = event.get("count")
        elif kind == "reset":
            self.resets += 1
        if self.tracker is not None:
            self.tracker.observe(event)

    async def run(self, stop: asyncio.Event) -> None:
        url = self.first_url
        while not stop.is_set():
            cursor = str(self.tracker) if self.tracker is not None else None
            try:
                client, welcome = await WSClient.session(url, self.token, [self.room], cursor=cursor or None,
                                                         name=self.name, timeout=5)
            except Exception:  # noqa: BLE001 - refused / node down: try again
                self.failed_attempts += 1
                url = self.reconnect_url
                await asyncio.sleep(0.2)
                continue
            if self.tracker is None:
                self.tracker = CursorTracker(welcome.get("cursor", ""))
            self.client = client
            self.connects.append((time.monotonic(), welcome.get("node")))
            self.cursors.append(cursor)
            self.ids_by_connection.append([])
            self.connected.set()
            seen = 1
            while True:
                for event in client.events[seen:]:
                    self._observe(event)
                seen = len(client.events)
                if client.closed or stop.is_set():
                    break
                await asyncio.sleep(0.02)
            if stop.is_set():
                await client.close()
                return
            self.closes.append((time.monotonic(), client.close_code))
            await client.close()
            if not self.reconnect:
                return
            url = self.reconnect_url
            await asyncio.sleep(0.1)

    def unique(self) -> set:
        return set(self.ids)

    def duplicates(self) -> int:
        return len(self.ids) - len(set(self.ids))


class Publisher:
    """Sends `say` with a unique ref at `rate`/s over a WebSocket (reconnecting when it
    drops); `acked` maps ref → id, `errors` ref → code, `sent` ref → send time."""

    def __init__(self, url: str, token: str, room: str, rate: float = 20.0) -> None:
        self.url, self.token, self.room, self.rate = url, token, room, rate
        self.clients: list[WSClient] = []
        self.sent: dict[int, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        client: Optional[WSClient] = None
        ref = 0
        next_at = time.monotonic()
        while not stop.is_set():
            if client is None or client.closed:
                try:
                    client, _ = await WSClient.session(self.url, self.token, [self.room], name="publisher", timeout=5)
                    self.clients.append(client)
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
                    continue
            ref += 1
            try:
                await client.send({"type": "say", "room": self.room, "text": f"load {ref}", "ref": ref, "echo": False})
                self.sent[ref] = time.monotonic()
            except Exception:  # noqa: BLE001
                continue
            next_at += 1.0 / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def answers(self) -> dict[int, dict]:
        out = {}
        for c in self.clients:
            for e in c.events:
                if e.get("type") in ("ack", "error") and e.get("ref") in self.sent:
                    out[e["ref"]] = e
        return out

    @property
    def acked(self) -> dict[int, str]:
        return {ref: a["id"] for ref, a in self.answers().items() if a["type"] == "ack"}

    @property
    def errors(self) -> dict[int, str]:
        return {ref: a.get("code") for ref, a in self.answers().items() if a["type"] == "error"}

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def missing_report(subs: list[Subscriber], acked_ids: set, sent_at: dict[str, float], t_ref: float) -> dict:
    """Per subscriber with gaps: each missing id (with its send time relative to `t_ref`),
    the cursor each connection was opened with, and the first and last ids per connection."""
    out = {}
    for s in subs:
        missing = sorted(acked_ids - s.unique(), key=h.id_key)
        if missing:
            out[s.name] = {
                "missing": [(m, round(sent_at[m] - t_ref, 2) if m in sent_at else None) for m in missing[:10]],
                "connections": [{"node": node, "cursor": cur, "first_ids": ids[:4], "last_ids": ids[-3:], "count": len(ids)}
                                for (_, node), cur, ids in zip(s.connects, s.cursors, s.ids_by_connection)],
            }
    return out


def delivery_report(subs: list[Subscriber], acked_ids: set) -> dict[str, str]:
    return {s.name: f"{len(s.unique() & acked_ids)}/{len(acked_ids)} dup={s.duplicates()} "
                    f"connects={len(s.connects)} resets={s.resets}" for s in subs}


def test_redis_sigkill_and_restart_under_load(redis_server: h.RedisServer, cluster3):
    """20 msg/s from a WebSocket publisher on node 1, a subscriber on each node; Redis is
    SIGKILLed for ~5 s and restarted (empty) on the same port. Every acked message reaches
    every subscriber exactly once (they may reconnect with their cursor); every node's
    /readyz is 503 during the outage and 200 within 10 s of Redis being back."""
    n1, n2, n3 = cluster3
    room = h.unique_room("redisload")
    figs: dict[str, Any] = {}
    ready_log: list[tuple[float, str, int]] = []

    async def body() -> None:
        stop, stop_ready = asyncio.Event(), asyncio.Event()
        subs = [Subscriber(f"sub@{n.node_id}", login(n.url, h.unique_name("sub"))["token"], room, n.ws_url)
                for n in cluster3]
        pub = Publisher(n1.ws_url, login(n1.url, h.unique_name("pub"))["token"], room, rate=20)

        async def watch_ready() -> None:
            async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
                while not stop_ready.is_set():
                    for n in cluster3:
                        try:
                            status = (await client.get(n.url + "/readyz")).status_code
                        except httpx.HTTPError:
                            status = 0
                        ready_log.append((time.monotonic(), n.node_id, status))
                    await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(s.run(stop)) for s in subs]
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), 15)
        watcher = asyncio.create_task(watch_ready())
        pub_task = asyncio.create_task(pub.run(stop))
        try:
            await asyncio.sleep(5)
            t_kill = time.monotonic()
            redis_server.kill()
            await asyncio.sleep(5)
            t_restart = time.monotonic()
            redis_server.start()
            t_started = time.monotonic()
            await asyncio.sleep(10)
            stop_pub_at = time.monotonic()
            pub_task.cancel()
            await asyncio.gather(pub_task, return_exceptions=True)
            await asyncio.sleep(3)  # answers still in flight
            acked = pub.acked
            acked_ids = set(acked.values())
            try:
                await wait_until(lambda: all(acked_ids <= s.unique() for s in subs), 20, "every acked message at every subscriber")
            except AssertionError:
                pass
            all_delivered_at = time.monotonic()
            stop.set()
            stop_ready.set()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
            await pub.close()

            def first(node: str, after: float, pred: Callable[[int], bool]) -> Optional[float]:
                for t, n, status in ready_log:
                    if n == node and t >= after and pred(status):
                        return round(t - after, 2)
                return None

            ready_503 = {n.node_id: first(n.node_id, t_kill, lambda s: s == 503) for n in cluster3}
            ready_200 = {n.node_id: first(n.node_id, t_started, lambda s: s == 200) for n in cluster3}
            sent_during = [ref for ref, t in pub.sent.items() if t_kill <= t < t_started]
            acked_after = sorted(t - t_started for ref, t in pub.sent.items() if ref in acked and t >= t_started)
            restart_ids = [acked[ref] for ref, t in sorted(pub.sent.items()) if ref in acked and t >= t_started]
            delivery_resumed = None
            if restart_ids and all(restart_ids[0] in s.arrivals for s in subs):
                delivery_resumed = round(max(s.arrivals[restart_ids[0]] for s in subs) - t_started, 2)
            figs.update(
                sent=len(pub.sent), acked=len(acked), errors=dict(sorted(
                    {c: sum(1 for v in pub.errors.values() if v == c) for c in set(pub.errors.values())}.items())),
                unanswered=len(pub.sent) - len(acked) - len(pub.errors),
                sent_during_outage=len(sent_during), acked_during_outage=sum(1 for r in sent_during if r in acked),
                first_acked_send_after_restart_s=round(acked_after[0], 2) if acked_after else None,
                first_post_restart_message_at_every_subscriber_s=delivery_resumed,
                redis_restart_took_s=round(t_started - t_restart, 2),
                readyz_503_after_kill_s=ready_503, readyz_200_after_restart_s=ready_200,
                outage_s=round(t_started - t_kill, 1), load_s=round(stop_pub_at - t_kill + 5, 1),
                delivered=delivery_report(subs, acked_ids),
                publisher_connections=len(pub.clients),
                drain_wait_s=round(all_delivered_at - stop_pub_at, 1))
            sent_at = {acked[r]: t for r, t in pub.sent.items() if r in acked}
            missing = missing_report(subs, acked_ids, sent_at, t_kill)
            assert all(n.running for n in cluster3), "a node died during the Redis outage"
            assert len(acked) >= 150, f"the load did not run: only {len(acked)} acked of {len(pub.sent)}"
            assert acked_after, "nothing was acked after Redis came back"
            assert not missing, f"acked messages never delivered: {missing}"
            dups = {s.name: s.duplicates() for s in subs if s.duplicates()}
            assert not dups, f"duplicates delivered: {dups}"
            assert all(v is not None for v in ready_503.values()), f"/readyz never 503 during the outage: {ready_503}"
            slow = {k: v for k, v in ready_200.items() if v is None or v > 10}
            assert not slow, f"/readyz not 200 within 10 s of Redis being back: {ready_200}"
        finally:
            stop.set()
            stop_ready.set()
            for t in [*tasks, watcher, pub_task]:
                t.cancel()
            await asyncio.gather(*tasks, watcher, pub_task, return_exceptions=True)
            await pub.close()

    try:
        run(body(), 120)
    finally:
        figures("Redis SIGKILL + restart under 20 msg/s, 3 nodes", **figs)


def test_edge_node_sigkill_under_load_clients_resume_through_the_lb(redis_server: h.RedisServer, cluster3):
    """20 msg/s from node 1; subscribers on node 1, node 2 and three on node 3 (plus a
    "ghost" on node 3 that never comes back). Node 3 is SIGKILLed: its three clients
    reconnect through haproxy with their cursor and get everything they missed; presence
    on the survivors drops to the 6 live nicknames within 15 s."""
    n1, n2, n3 = cluster3
    room = h.unique_room("edgekill")
    lb = HAProxy(cluster3, check_interval_ms=300).start()
    figs: dict[str, Any] = {}

    async def body() -> None:
        lb.wait_nodes(3)
        stop = asyncio.Event()
        tok = {name: login(n1.url, h.unique_name(name))["token"] for name in ("pub", "s1", "s2", "v1", "v2", "v3", "ghost")}
        survivors = [Subscriber("s1@n1", tok["s1"], room, n1.ws_url), Subscriber("s2@n2", tok["s2"], room, n2.ws_url)]
        victims = [Subscriber(f"{v}@n3", tok[v], room, n3.ws_url, reconnect_url=lb.ws_url) for v in ("v1", "v2", "v3")]
        ghost = Subscriber("ghost@n3", tok["ghost"], room, n3.ws_url, reconnect=False)
        subs = [*survivors, *victims]
        pub = Publisher(n1.ws_url, tok["pub"], room, rate=20)
        tasks = [asyncio.create_task(s.run(stop)) for s in [*subs, ghost]]
        pub_task: Optional[asyncio.Task] = None
        try:
            await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in [*subs, ghost])), 15)
            t0 = time.monotonic()
            # Counts from other nodes arrive with the presence refresh (every 3 s) and the
            # recount after it: a loaded machine (the other worker's browsers) took more
            # than 10 s once in a clean CI run. Say what each client had.
            await wait_until(lambda: all(s.presence == 6 for s in subs), 20,
                             lambda: f"presence 6 before the publisher joins: {[(s.name, s.presence) for s in subs]}")
            pub_task = asyncio.create_task(pub.run(stop))
            await wait_until(lambda: all(s.presence == 7 for s in subs), 10, "presence 7 everywhere before the kill")
            figs["presence_7_after_s"] = round(time.monotonic() - t0, 2)
            await asyncio.sleep(4)
            t_kill = time.monotonic()
            n3.kill()
            presence_ok_at = None
            while time.monotonic() - t_kill < 20:
                if all(s.presence == 6 and s.client is not None and not s.client.closed for s in subs) \
                        and all(len(v.connects) >= 2 for v in victims):
                    presence_ok_at = round(time.monotonic() - t_kill, 2)
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, 8 - (time.monotonic() - t_kill)))
            pub_task.cancel()
            await asyncio.gather(pub_task, return_exceptions=True)
            await asyncio.sleep(2)
            acked = pub.acked
            acked_ids = set(acked.values())
            try:
                await wait_until(lambda: all(acked_ids <= s.unique() for s in subs), 20, "every acked message everywhere")
            except AssertionError:
                pass
            sent_after_kill = [r for r, t in pub.sent.items() if t >= t_kill]
            sent_at_all = {acked[r]: t for r, t in pub.sent.items() if r in acked}
            figs.update(
                sent=len(pub.sent), acked=len(acked), errors=len(pub.errors),
                sent_after_kill=len(sent_after_kill), acked_after_kill=sum(1 for r in sent_after_kill if r in acked),
                victims_reconnected_after_s={v.name: round(v.connects[1][0] - t_kill, 2) if len(v.connects) > 1 else None
                                             for v in victims},
                victims_now_on={v.name: v.connects[-1][1] for v in victims},
                victims_failed_attempts={v.name: v.failed_attempts for v in victims},
                victims_missed_then_got_from_history={
                    v.name: sum(1 for i in (v.ids_by_connection[1] if len(v.ids_by_connection) > 1 else [])
                                if sent_at_all.get(i, 1e18) < v.connects[1][0]) for v in victims},
                presence_6_everywhere_after_kill_s=presence_ok_at,
                presence_now={s.name: s.presence for s in subs},
                delivered=delivery_report(subs, acked_ids),
                cluster_nodes_seen_by_n1=[e.get("id") for e in h.http_client().get(n1.url + "/cluster").json().get("nodes", [])])
            sent_at = {acked[r]: t for r, t in pub.sent.items() if r in acked}
            missing = missing_report(subs, acked_ids, sent_at, t_kill)
            assert n1.running and n2.running
            assert len(sent_after_kill) >= 100 and len(acked) >= 200, figs
            assert all(len(v.connects) >= 2 and v.connects[-1][1] in (n1.node_id, n2.node_id) for v in victims), \
                f"victims did not reconnect to a survivor: {[(v.name, v.connects) for v in victims]}"
            assert not missing, f"acked messages never delivered: {missing}"
            dups = {s.name: s.duplicates() for s in subs if s.duplicates()}
            assert not dups, f"duplicates delivered: {dups}"
            assert presence_ok_at is not None and presence_ok_at <= 15, (
                f"presence not 6 on every live client within 15 s of the kill: {figs['presence_now']}")
        finally:
            stop.set()
            rest = [*tasks, *([pub_task] if pub_task else [])]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await pub.close()

    try:
        run(body(), 120)
    finally:
        lb.stop()
        figures("edge node SIGKILL under 20 msg/s, clients resume via haproxy", **figs)


@pytest.mark.xdist_group("heavy")  # CPU-bound: one at a time under xdist --dist loadgroup
def test_10000_connections_opened_and_closed_memory_returns_to_baseline(redis_server: h.RedisServer, node_factory):
    """10,000 WebSocket connections, in batches of 500, each joining a shared room and a
    room of its own (10,000 distinct rooms), half closed with a close handshake, half
    dropped: RSS returns to its baseline ±10 %, and grows by less than 5 % of it over the
    last 5,000; /cluster and /metrics report 0 connections, file descriptors are released.
    The baseline is taken after a warm-up of 10,000 sessions and a settle: glibc's heap
    grows in steps to a plateau about 7 MB up over the node's first ~8,000 sessions and
    stays there (30,000 sessions measured; jemalloc's profiler shows the live heap back
    at its starting size). A leak of even 1 KB per session would add 10 MB here."""
    limit = h.raise_fd_limit(20000)
    node = node_factory(node_id=f"churn-{secrets.token_hex(2)}", redis=redis_server.url)
    node.wait_ready(30)
    batch_size, batches, warmup_batches = 500, 20, 20
    tokens = [login(node.url, h.unique_name("churn"))["token"] for _ in range(10)]
    figs: dict[str, Any] = {"fd_limit": limit}
    failures: list[str] = []

    async def one(i: int, sem: asyncio.Semaphore) -> Optional[RawWebSocket]:
        async with sem:
            try:
                ws = await RawWebSocket.open(node, f"/ws?token={quote(tokens[i % len(tokens)])}&rooms=churn-all,churn-{i}")
                if ws.status != 101:
                    failures.append(f"{i}: HTTP {ws.status} {ws.body[:80]!r}")
                    ws.abort()
                    return None
                event = await ws.recv_event(10)
                if event.get("type") != "welcome":
                    failures.append(f"{i}: first event {event}")
                return ws
            except Exception as e:  # noqa: BLE001
                failures.append(f"{i}: {e!r}")
                return None

    async def batch(start: int) -> None:
        sem = asyncio.Semaphore(100)
        opened = await asyncio.gather(*(one(i, sem) for i in range(start, start + batch_size)))
        live = [ws for ws in opened if ws is not None]
        clean, dropped = live[::2], live[1::2]
        await asyncio.gather(*(ws.close() for ws in clean))
        for ws in dropped:
            ws.abort()

    async def settle(timeout: float = 20) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if metric_connections(node) == 0 and connections_total(node) == 0:
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(3)
        return round(time.monotonic() - t0, 1)

    async def body() -> None:
        for w in range(warmup_batches):  # connection numbers -10000…-1
            await batch(-(w + 1) * batch_size)
        figs["warmup_connections"] = warmup_batches * batch_size
        figs["warmup_settle_s"] = await settle()
        baseline, fds0 = h.rss_kib(node), h.open_fds(node)
        figs["rss_baseline_mb"], figs["fds_baseline"] = round(baseline / 1024, 1), fds0
        per_batch = []
        t0 = time.monotonic()
        for b in range(batches):
            await batch(b * batch_size)
            per_batch.append(round(h.rss_kib(node) / 1024, 1))
        elapsed = time.monotonic() - t0
        figs["connections"] = batches * batch_size
        figs["elapsed_s"] = round(elapsed, 1)
        figs["connections_per_s"] = round(batches * batch_size / elapsed)
        figs["rss_after_each_batch_mb"] = per_batch
        figs["final_settle_s"] = await settle()
        final, fds1 = h.rss_kib(node), h.open_fds(node)
        figs["rss_final_mb"] = round(final / 1024, 1)
        figs["rss_change_pct"] = round(100 * (final - baseline) / baseline, 1)
        figs["fds_final"] = fds1
        figs["cluster_connections"] = h.cluster_connections(node)
        figs["metrics_connections"] = metric_connections(node)
        figs["failed_connections"] = len(failures)
        assert node.running, node.stderr()
        assert not failures, f"{len(failures)} connections failed, e.g. {failures[:5]}"
        assert figs["metrics_connections"] == 0, f"/metrics still counts connections: {figs['metrics_connections']}"
        assert sum(figs["cluster_connections"].values()) == 0, f"/cluster still counts {figs['cluster_connections']}"
        assert abs(final - baseline) <= 0.10 * baseline, (
            f"RSS {final / 1024:.1f} MB vs baseline {baseline / 1024:.1f} MB ({figs['rss_change_pct']} %)")
        late_growth = per_batch[-1] - per_batch[batches // 2 - 1]
        figs["rss_growth_last_half_mb"] = round(late_growth, 1)
        assert late_growth <= 0.05 * baseline / 1024, (
            f"RSS still grows: +{late_growth:.1f} MB over the last {batches // 2 * batch_size} sessions: {per_batch}")
        assert fds1 <= fds0 + 20, f"file descriptors leaked: {fds0} → {fds1}"

    try:
        run(body(), 500)
    finally:
        figures("10,000 connections opened and closed", **figs)


def test_sigterm_drains_ws_1012_sse_ends_long_poll_answered_exit_0(node_factory):
    node = node_with(node_factory, "drain")
    room = h.unique_room("drain")
    figs: dict[str, Any] = {}

    async def body() -> None:
        token = login(node.url, h.unique_name("drain"))["token"]
        ws, _ = await WSClient.session(node.ws_url, token, [room], name="ws")
        sse, _ = await SSEStream.session(node, token, [room], name="sse")
        poller = Poller(token, [room], name="poll")
        await poller.poll(node, wait=0)
        client = httpx.AsyncClient(trust_env=False, timeout=40)
        try:
            # The long-poll must be waiting (nothing pending after its cursor) when the
            # SIGTERM comes. Right after the room fills, the node's first coalesced recount
            # of it (≤ 100 ms later) sends `presence` to every member — the poller's parked
            # subscriber included — and wakes a waiting poll even though the count (1) is
            # the one the poll already got (see the report: a duplicate presence). So:
            # poll again from each early answer's cursor until one stays unanswered for a
            # quiet second; an early answer may carry nothing but the room's presence.
            early: list[list[dict]] = []
            cursor = poller.cursor
            deadline = time.monotonic() + 20
            while True:
                long_poll = asyncio.create_task(client.get(node.url + "/poll", params={
                    "token": token, "rooms": room, "cursor": cursor, "wait": "25"}))
                quiet_until = time.monotonic() + 1.0
                while not long_poll.done() and time.monotonic() < quiet_until:
                    await asyncio.sleep(0.05)
                if not long_poll.done():
                    break
                answer = long_poll.result()
                assert answer.status_code == 200, f"long-poll before the SIGTERM: HTTP {answer.status_code} {answer.text}"
                events = answer.json()["events"]
                early.append(events)
                unexpected = [e for e in events if not (e.get("type") == "presence" and e.get("room") == room
                                                        and e.get("count") == 1)]
                assert not unexpected, f"the long-poll answered before the SIGTERM with {unexpected} (answers: {early})"
                assert time.monotonic() < deadline, f"the long-poll never stayed waiting for 1 s; early answers: {early}"
                cursor = answer.json()["cursor"]
            figs["early_presence_answers"] = len(early)
            done_at: dict[str, float] = {}

            def mark(name: str) -> Callable[[Any], None]:
                return lambda _: done_at.setdefault(name, time.monotonic())

            long_poll.add_done_callback(mark("long_poll"))
            sse_task = asyncio.create_task(wait_until(lambda: sse.closed, 12, "the SSE stream to end"))
            sse_task.add_done_callback(mark("sse"))
            ws_task = asyncio.create_task(ws.wait_closed(12))
            ws_task.add_done_callback(mark("ws"))
            t0 = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            exit_task = asyncio.create_task(asyncio.to_thread(node.proc.wait, 15))  # type: ignore[union-attr]
            exit_task.add_done_callback(mark("exit"))
            await asyncio.gather(ws_task, sse_task, long_poll, exit_task, return_exceptions=True)

            def after(name: str) -> Optional[float]:
                return round(done_at[name] - t0, 2) if name in done_at else None

            code = ws.close_code
            figs["ws_close"] = f"{code} {ws.close_reason!r}"
            figs["ws_closed_after_s"] = after("ws")
            figs["sse_ended_after_s"] = after("sse") if sse.closed else f"still open after {after('sse')}"
            figs["sse_retry_hint_ms"] = sse.retry
            figs["sse_frames"] = [f.event for f in sse.frames]
            figs["sse_tail"] = bytes(sse.raw[-120:])
            figs["long_poll_answered_after_s"] = after("long_poll")
            r = long_poll.result() if not long_poll.exception() else None
            figs["long_poll_answer"] = f"{r.status_code} {r.text[:120]}" if r is not None else repr(long_poll.exception())
            rc = exit_task.result() if not exit_task.exception() else None
            figs["exit_code"] = rc
            figs["exit_after_s"] = after("exit")
            problems = []
            if code != 1012:
                problems.append(f"WebSocket close {code} {ws.close_reason!r}, expected 1012")
            def late(name: str, limit: float) -> bool:
                # 0.0 s (answered at once) is on time: compare with None, not truthiness.
                seconds = after(name)
                return seconds is None or seconds > limit

            if not sse.closed or late("sse", 6):
                problems.append(f"the SSE stream did not end with the drain (ended after {after('sse')} s)")
            if r is None or r.status_code not in (200, 503) or late("long_poll", 6):
                problems.append(f"the waiting long-poll was not answered with the drain: {figs['long_poll_answer']} "
                                f"after {after('long_poll')} s")
            if rc != 0:
                problems.append(f"exit code {rc}")
            if late("exit", 10):
                problems.append(f"exit after {after('exit')} s (> 10 s)")
            # Everything measured and the node's last log lines, so a failure in CI explains itself.
            assert not problems, "\n".join(problems) + f"\nfigures: {figs}\nnode log:\n{node.stderr()[-3000:]}"
        finally:
            await client.aclose()
            await sse.close()
            await poller.close()
            await ws.close()

    try:
        run(body(), 60)
    finally:
        figures("SIGTERM drain", **figs)
