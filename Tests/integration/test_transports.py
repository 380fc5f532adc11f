"""The HTTP transports across a two-node cluster on a real Redis (issue 4; PROTOCOL.md §
Transports, § Server API): SSE, long-poll, short poll, JSONP, iframe streaming,
`/api/send`, `/api/publish`.

Everything is black-box, with clients written by others (httpx for SSE/polling/iframe,
`websockets` for the WebSocket senders). A subscriber on node 2 must get what a WebSocket
client on node 1 sends, exactly once per id and in order; polls carrying their cursor may
land on any node; SSE resumes on the other node from `Last-Event-ID`; callback names and
event texts cannot inject script.

Durations: the keep-alive test waits ~16 s (the server has no flag to shorten its 15 s
keep-alive) and the polling-presence test ~20 s (15 s presence window).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import (
    Clients,
    IframeStream,
    Poller,
    SSEStream,
    api_send,
    is_type,
    login,
    publish,
    run,
    stored_key,
)

CALLBACK_ERROR = "invalid_callback"


# ------------------------------------------------------------------------------------
# Fixtures: one Redis and two nodes per test (~1 s): a node that crashes later (e.g. when
# an idle poll session expires 15 s after a test) cannot fail an unrelated test.
# ------------------------------------------------------------------------------------


@pytest.fixture
def cluster(switchboard_binary: str, redis_server_binary: str) -> Iterator[SimpleNamespace]:
    tag = secrets.token_hex(2)
    redis = h.RedisServer(binary=redis_server_binary).start()
    nodes = [
        h.SwitchboardNode(node_id=f"tr{i}-{tag}", redis=redis.url, binary=switchboard_binary)
        for i in (1, 2)
    ]
    dead: list[str] = []
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready()
        yield SimpleNamespace(redis=redis, n1=nodes[0], n2=nodes[1], nodes=nodes)
        dead = [f"node {n.node_id} died during the test (code {n.returncode}); log:\n{n.stderr()}"
                for n in nodes if not n.running]
    finally:
        for n in nodes:
            n.stop()
        redis.kill()
    assert not dead, "\n".join(dead)


# ------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------


def chat(events: list[dict]) -> list[dict]:
    """Stored chat events (`message`, `private`) in arrival order."""
    return [e for e in events if e.get("type") in ("message", "private")]


def assert_exactly_once(events: list[dict], what: str) -> None:
    keys = [stored_key(e) for e in events if stored_key(e) is not None]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    assert not dups, f"{what}: duplicated ids {dups}; events: {events}"


async def ws_say(ws: h.WSClient, room: str, text: str, ref: str) -> str:
    """`say` over WebSocket, returns the acked message id."""
    await ws.send({"type": "say", "room": room, "text": text, "ref": ref})
    ack = await ws.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"), 10,
                             what=f"answer to {ref}")
    assert ack["type"] == "ack" and h.MESSAGE_ID.match(ack.get("id") or ""), f"say {ref}: {ack}"
    return ack["id"]


async def ws_whisper(ws: h.WSClient, to: str, text: str, ref: str) -> str:
    await ws.send({"type": "whisper", "to": to, "text": text, "ref": ref})
    ack = await ws.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"), 10,
                             what=f"answer to {ref}")
    assert ack["type"] == "ack", f"whisper {ref}: {ack}"
    return ack["id"]


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def check_delivery(events: list[dict], *, room: str, texts: list[str], ids: list[str], sender: str,
                   whisper: str, to: str, what: str) -> None:
    """5 room messages in order with the acked ids, one whisper, nothing twice."""
    assert_exactly_once(events, what)
    got = chat(events)
    messages = [e for e in got if e["type"] == "message"]
    privates = [e for e in got if e["type"] == "private"]
    assert [m.get("room") for m in messages] == [room] * len(texts), f"{what}: {messages}"
    assert [m.get("text") for m in messages] == texts, f"{what}: messages out of order or missing: {messages}"
    assert [m.get("id") for m in messages] == ids, f"{what}: ids {[m.get('id') for m in messages]} != acked {ids}"
    assert all(m.get("from", {}).get("nickname") == sender for m in messages), messages
    assert len(privates) == 1, f"{what}: expected exactly one private, got {privates}"
    p = privates[0]
    assert p.get("text") == whisper and p.get("to") == to and p.get("from", {}).get("nickname") == sender, p
    assert h.MESSAGE_ID.match(p.get("id", "")), p


# ------------------------------------------------------------------------------------
# 1. Every transport on node 2 gets what a WebSocket client on node 1 sends
# ------------------------------------------------------------------------------------

TRANSPORTS = ["sse", "long-poll", "short-poll", "jsonp", "iframe"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_subscriber_on_node2_gets_room_messages_and_whisper_from_ws_on_node1(cluster, transport):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("t1")
    alice_nick, bob_nick = h.unique_name("alice"), h.unique_name("bob")
    texts = [f"{transport} message {i} ✓ 东东" for i in range(5)]
    whisper = f"{transport} whisper 🤫"

    async def body():
        alice_creds = login(n1.url, alice_nick)
        bob_creds = login(n2.url, bob_nick)
        async with Clients() as c:
            alice, _ = await c.session(n1, alice_creds["token"], rooms=[room], name="alice")
            events: list[dict]
            stop = asyncio.Event()

            async def send_all() -> list[str]:
                ids = []
                for i, t in enumerate(texts):
                    ids.append(await ws_say(alice, room, t, f"s{i}"))
                    await asyncio.sleep(random.uniform(0.05, 0.3))
                await ws_whisper(alice, bob_nick, whisper, "w")
                return ids

            def complete(evs: list[dict]) -> bool:
                got = chat(evs)
                return len([e for e in got if e["type"] == "message"]) >= 5 and any(e["type"] == "private" for e in got)

            if transport in ("sse", "iframe"):
                if transport == "sse":
                    stream, welcome = await SSEStream.session(n2, bob_creds["token"], [room], name="bob-sse")
                else:
                    stream, welcome = await IframeStream.session(n2, bob_creds["token"], [room], callback="onEvent",
                                                                  name="bob-iframe")
                async with stream:
                    assert welcome["transport"] == transport and welcome["node"] == n2.node_id, welcome
                    ids = await send_all()
                    await wait_until(lambda: complete(stream.events), 15, f"{transport}: 5 messages + whisper")
                    await asyncio.sleep(1.0)  # anything duplicated would arrive now
                    events = list(stream.events)
                    if transport == "sse":
                        for frame, event in zip(stream.frames, stream.events):
                            assert frame.event == event.get("type"), f"event: line {frame.event!r} for {event}"
                            key = stored_key(event)
                            if key is not None:
                                entry = f"{key[0]}@{key[1]}"
                                assert frame.id and entry in frame.id.split(","), f"id: line {frame.id!r} for {event}"
            else:
                wait = {"long-poll": 10, "short-poll": 0, "jsonp": 10}[transport]
                poller = Poller(bob_creds["token"], [room], name=f"bob-{transport}",
                                callback="jsonp_cb.x$1" if transport == "jsonp" else None)
                try:
                    first = await poller.poll(n2, wait=wait)
                    # The first poll: welcome, then the online count of each room.
                    assert [e.get("type") for e in first][:1] == ["welcome"], first
                    assert all(e.get("type") == "presence" for e in first[1:]), first
                    assert first[0]["transport"] == transport and first[0]["cursor"] == poller.cursor, first
                    assert first[0]["node"] == n2.node_id, first

                    async def poll_loop() -> None:
                        deadline = time.monotonic() + 30
                        while not stop.is_set() and time.monotonic() < deadline:
                            await poller.poll(n2, wait=wait)
                            if wait == 0:
                                await asyncio.sleep(0.15)

                    loop = asyncio.create_task(poll_loop())
                    ids = await send_all()
                    try:
                        await wait_until(lambda: complete(poller.events) or loop.done(), 20,
                                         f"{transport}: 5 messages + whisper")
                    finally:
                        stop.set()
                        if loop.done():
                            await loop  # re-raises a failed poll
                        else:  # a long-poll in progress: everything is in, the last poll checks the rest
                            loop.cancel()
                            await asyncio.gather(loop, return_exceptions=True)
                    # A last poll must bring nothing already seen.
                    extra = await poller.poll(n2, wait=1)
                    assert not chat(extra), f"{transport}: events delivered again: {extra}"
                    events = list(poller.events)
                finally:
                    await poller.close()

            check_delivery(events, room=room, texts=texts, ids=ids, sender=alice_nick, whisper=whisper,
                           to=bob_nick, what=transport)

    run(body(), 90)


def test_long_poll_returns_every_pending_event_in_one_batch(cluster):
    """Events sent while nobody polled come back in one answer, not one per request."""
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("batch")

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        bob = login(n2.url, h.unique_name("bob"))
        poller = Poller(bob["token"], [room])
        try:
            await poller.poll(n2, wait=0)
            ids = []
            for i in range(12):
                r = await api_send(n1, alice["token"], {"type": "say", "room": room, "text": f"b{i}", "ref": i})
                assert r.status_code == 200 and r.json()["type"] == "ack", r.text
                ids.append(r.json()["id"])
            events = await poller.poll(n1, wait=25)
            assert [e.get("id") for e in chat(events)] == ids, f"one poll should return all 12: {events}"
            t0 = time.monotonic()
            again = await poller.poll(n2, wait=1)
            assert not chat(again), again
            assert 0.8 <= time.monotonic() - t0 < 5, "an empty long-poll answers after its wait"
        finally:
            await poller.close()

    run(body(), 60)


def test_long_poll_answers_as_soon_as_an_event_arrives(cluster):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("lp")

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        bob = login(n2.url, h.unique_name("bob"))
        poller = Poller(bob["token"], [room])
        try:
            await poller.poll(n2, wait=0)
            await asyncio.sleep(0.5)

            async def until_chat() -> list[dict]:
                # Non-stored events (the poller's own `presence`) may end a poll too.
                while True:
                    events = await poller.poll(n2, wait=20)
                    if chat(events):
                        return events

            task = asyncio.create_task(until_chat())
            await asyncio.sleep(1.5)
            assert not task.done(), "a long-poll with no message to report must wait"
            t0 = time.monotonic()
            r = await api_send(n1, alice["token"], {"type": "say", "room": room, "text": "wake up"})
            assert r.json()["type"] == "ack", r.text
            events = await asyncio.wait_for(task, 10)
            elapsed = time.monotonic() - t0
            assert [e.get("text") for e in chat(events)] == ["wake up"], events
            # "As soon as": well before the poll's own 20 s; 5 s leaves room for a loaded machine.
            assert elapsed < 5, f"long-poll answered {elapsed:.1f}s after the message was sent"
        finally:
            await poller.close()

    run(body(), 60)


# ------------------------------------------------------------------------------------
# 2. Long-polls alternating between the nodes with the returned cursor
# ------------------------------------------------------------------------------------


def test_long_polls_alternating_nodes_lose_and_duplicate_nothing(cluster):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("alt")
    rng = random.Random()
    total = 20

    async def body():
        alice_creds = login(n1.url, h.unique_name("alice"))
        bob_creds = login(n2.url, h.unique_name("bob"))
        async with Clients() as c:
            alice, _ = await c.session(n1, alice_creds["token"], rooms=[room], name="alice")
            poller = Poller(bob_creds["token"], [room], name="bob")
            sent: list[str] = []
            try:
                await poller.poll(n1, wait=0)  # welcome + cursor
                done_sending = asyncio.Event()

                async def sender() -> None:
                    for i in range(total):
                        await asyncio.sleep(rng.choice([0.0, 0.05, rng.uniform(0.1, 0.9)]))
                        text = f"alt-{i}"
                        if i % 3 == 2:  # some through /api/send on node 2
                            r = await api_send(n2, alice_creds["token"],
                                               {"type": "say", "room": room, "text": text, "ref": i})
                            assert r.status_code == 200 and r.json().get("type") == "ack", r.text
                            sent.append(r.json()["id"])
                        else:
                            sent.append(await ws_say(alice, room, text, f"a{i}"))
                    done_sending.set()

                send_task = asyncio.create_task(sender())
                nodes = [n1, n2]
                i = 0
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    await poller.poll(nodes[i % 2], wait=rng.choice([1, 2, 3, 5]))
                    i += 1
                    if done_sending.is_set() and len(chat(poller.events)) >= total:
                        break
                    if rng.random() < 0.5:
                        await asyncio.sleep(rng.uniform(0.05, 0.6))  # messages arrive between polls
                await send_task
                # One more poll on each node: nothing new, nothing again.
                for n in nodes:
                    extra = await poller.poll(n, wait=1)
                    assert not chat(extra), f"delivered again by {n.node_id}: {extra}"
                got = [e["id"] for e in chat(poller.events)]
                assert_exactly_once(poller.events, "alternating long-polls")
                assert sorted(got, key=h.id_key) == got, f"out of order: {got}"
                assert got == sorted(sent, key=h.id_key), f"lost {sorted(set(sent) - set(got))}; received {got}"
                assert [e["text"] for e in chat(poller.events)] == [f"alt-{k}" for k in range(total)]
                assert i >= 6, f"only {i} polls"
                assert {url for url, _, _ in poller.answers} == {n1.url, n2.url}
            finally:
                await poller.close()

    run(body(), 120)


# ------------------------------------------------------------------------------------
# 3. SSE: resume on the other node from Last-Event-ID
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "lastEventId-query"])
def test_sse_resumes_on_other_node_from_last_event_id(cluster, how):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("sse-resume")
    alice_nick, bob_nick = h.unique_name("alice"), h.unique_name("bob")

    async def body():
        alice_creds = login(n1.url, alice_nick)
        bob_creds = login(n2.url, bob_nick)
        async with Clients() as c:
            alice, _ = await c.session(n1, alice_creds["token"], rooms=[room], name="alice")
            sse, welcome = await SSEStream.session(n2, bob_creds["token"], [room], name="bob-1")
            async with sse:
                assert sse.frames[0].id == welcome["cursor"], "the welcome's id: is the cursor"
                await ws_say(alice, room, "before-1", "b1")
                await ws_whisper(alice, bob_nick, "before-w", "bw")
                await ws_say(alice, room, "before-2", "b2")
                await wait_until(lambda: len(chat(sse.events)) >= 3, 10, "3 events before the close")
                await asyncio.sleep(0.3)
                last_id = sse.last_id
                seen_before = chat(sse.events)
            assert last_id and f"r.{room}@" in last_id and "u@" in last_id, last_id
            await asyncio.sleep(0.3)

            missed = ["missed-1", "missed-2", "missed-3"]
            missed_ids = [await ws_say(alice, room, t, f"m{i}") for i, t in enumerate(missed)]

            kwargs: dict[str, Any] = (
                {"last_event_id": last_id} if how == "header" else {"params": {"lastEventId": last_id}})
            sse2, welcome2 = await SSEStream.session(n1, bob_creds["token"], [room], name="bob-2", **kwargs)
            async with sse2:
                assert welcome2["node"] == n1.node_id
                await wait_until(lambda: len(chat(sse2.events)) >= 3, 10, "the 3 missed messages")
                # A barrier rather than a fixed quiet time: the resume's backlog comes before
                # live events, and the room's events in id order, so whatever else the
                # resume would replay is in before this live message.
                await ws_say(alice, room, "barrier", "barrier")
                await wait_until(lambda: any(e.get("text") == "barrier" for e in chat(sse2.events)), 10,
                                 "the live message after the resume")
                got = [e for e in chat(sse2.events) if e.get("text") != "barrier"]
                assert [e["text"] for e in got] == missed, (
                    f"after Last-Event-ID {last_id!r}: expected exactly {missed}, got {got} "
                    f"(before the close: {[e['text'] for e in seen_before]})")
                assert [e["id"] for e in got] == missed_ids
                assert sse2.events[0].get("type") == "welcome"
                others = {e.get("type") for e in sse2.events[1:]} - {"message", "private"}
                assert others <= {"presence", "members", "joined", "left"}, f"unexpected events: {sse2.events}"
                last_missed = next(f for f, e in zip(sse2.frames, sse2.events) if e.get("id") == missed_ids[-1])
                assert f"r.{room}@{missed_ids[-1]}" in (last_missed.id or "").split(","), last_missed

    run(body(), 60)


def test_sse_resume_from_any_id_line_loses_nothing(cluster):
    """PROTOCOL.md: SSE `id:` = cursor. A browser resumes from the last `id:` it saw,
    whichever event that was. So every id line, including those of the backlog sent
    after a resume, must name every stream's position: a connection that drops after
    the first backlog event and resumes from its id gets the rest, exactly once."""
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("sse-ids")
    alice_nick, bob_nick = h.unique_name("alice"), h.unique_name("bob")

    async def body():
        alice = login(n1.url, alice_nick)
        bob = login(n2.url, bob_nick)
        async with Clients() as c:
            ws, _ = await c.session(n1, alice["token"], rooms=[room], name="alice")
            sse, _ = await SSEStream.session(n2, bob["token"], [room], name="bob-1")
            async with sse:
                await ws_say(ws, room, "m0", "m0")
                await ws_whisper(ws, bob_nick, "w0", "w0")
                await wait_until(lambda: len(chat(sse.events)) >= 2, 10, "m0, w0")
                await asyncio.sleep(0.2)
                c0 = sse.last_id
            # Missed while away: one event in each stream.
            await ws_say(ws, room, "m1", "m1")
            await ws_whisper(ws, bob_nick, "w1", "w1")

            sse2, _ = await SSEStream.session(n1, bob["token"], [room], last_event_id=c0, name="bob-2")
            async with sse2:
                await wait_until(lambda: len(chat(sse2.events)) >= 2, 10, "m1, w1 after resume")
                backlog = [(f, e) for f, e in zip(sse2.frames, sse2.events) if e.get("type") in ("message", "private")]
            assert sorted(e["text"] for _, e in backlog) == ["m1", "w1"], backlog
            problems = []
            for frame, event in backlog:
                streams = {part.rpartition("@")[0] for part in (frame.id or "").split(",")}
                if not {f"r.{room}", "u"} <= streams:
                    problems.append(
                        f"after resuming with Last-Event-ID {c0!r}, the {event['type']} {event['text']!r} came with "
                        f"`id: {frame.id}` — not a full cursor (names only {sorted(streams)})")
            # The connection dropped right after the first backlog event: resume from its id.
            first_frame, first_event = backlog[0]
            rest = [e["text"] for _, e in backlog[1:]]
            sse3, _ = await SSEStream.session(n2, bob["token"], [room], last_event_id=first_frame.id, name="bob-3")
            async with sse3:
                # What is due arrives (or the wait ends), then a live message in each stream
                # as a barrier: the backlog comes before live events, so anything replayed
                # wrongly is in by the time both barriers are.
                try:
                    await wait_until(lambda: len(chat(sse3.events)) >= len(rest), 10, f"{rest} after the resume")
                except AssertionError:
                    pass  # reported below with what did arrive
                await ws_say(ws, room, "barrier-m", "bm")
                await ws_whisper(ws, bob_nick, "barrier-w", "bw")
                await wait_until(lambda: {"barrier-m", "barrier-w"} <= {e.get("text") for e in chat(sse3.events)}, 10,
                                 "the live barrier events after the resume")
                got = [e["text"] for e in chat(sse3.events) if not e["text"].startswith("barrier-")]
            if got != rest:
                problems.append(f"resumed with Last-Event-ID {first_frame.id!r} (the id of {first_event['text']!r}): "
                                f"expected exactly {rest}, got {got}")
            assert not problems, "\n".join(problems)

    run(body(), 60)


def test_sse_stream_format(cluster):
    """Content type, the retry hint, `event:` = type, `id:` on the welcome and stored events only."""
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("ssefmt")

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        bob = login(n2.url, h.unique_name("bob"))
        sse, welcome = await SSEStream.session(n2, bob["token"], [room], name="bob")
        async with sse:
            assert sse.headers["content-type"].startswith("text/event-stream"), sse.headers
            assert "no-cache" in sse.headers.get("cache-control", "") or "no-store" in sse.headers.get("cache-control", "")
            assert sse.retry is not None and sse.retry > 0, "a retry: hint"
            assert welcome["transport"] == "sse"
            r = await api_send(n1, alice["token"], {"type": "say", "room": room, "text": "fmt", "ref": 1})
            mid = r.json()["id"]
            await sse.wait_type("message", 10, text="fmt")
            frame = next(f for f in sse.frames if '"fmt"' in f.data)
            assert frame.event == "message" and frame.id is not None and f"r.{room}@{mid}" in frame.id.split(","), frame
            for f, e in zip(sse.frames, sse.events):
                if e.get("type") in ("presence", "joined", "left"):
                    assert f.id is None, f"a non-stored event must not move the cursor: {f}"

    run(body(), 30)


def test_iframe_stream_format(cluster):
    """Chunked text/html with ≥ 4 KiB of padding before the first event."""
    n2 = cluster.n2

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        stream, welcome = await IframeStream.session(n2, bob["token"], [h.unique_room("ifr")], callback="cb")
        async with stream:
            assert stream.headers["content-type"].startswith("text/html"), stream.headers
            assert stream.headers.get("transfer-encoding") == "chunked", stream.headers
            first = bytes(stream.raw).index(b"<script>")
            assert first >= 4096, f"only {first} bytes before the first event"
            assert welcome["transport"] == "iframe"

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 4. Injection: callback names and event texts
# ------------------------------------------------------------------------------------

BAD_CALLBACKS = ["alert(1)//", "a b", "1abc", "x;y", "a" * 65, "<script>", "", "a-b", "é", "a\nb", "cb)(", "$" + "x" * 64]
GOOD_CALLBACKS = ["cb", "$", "_", "a" * 64, "jQuery331_1700000000000", "$.x_y.Z9", "window.handlers.on$"]


@pytest.mark.parametrize("endpoint", ["/poll", "/iframe", "/api/send"])
def test_bad_callback_names_are_refused(cluster, endpoint):
    n2 = cluster.n2

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for name in BAD_CALLBACKS:
                params = {"token": bob["token"], "rooms": h.unique_room("cb"), "callback": name, "wait": "0",
                          "event": json.dumps({"type": "ping", "ref": 1}, separators=(",", ":"))}
                if endpoint == "/iframe":
                    async with client.stream("GET", n2.url + endpoint, params=params) as r:
                        raw = b""
                        async for chunk in r.aiter_raw():
                            raw += chunk
                            if len(raw) > 20000:
                                break
                else:
                    r = await client.get(n2.url + endpoint, params=params)
                    raw = r.content
                assert r.status_code == 400, f"{endpoint} callback={name!r} → HTTP {r.status_code}: {raw[:300]!r}"
                assert not r.headers.get("content-type", "").startswith(("application/javascript", "text/html")), r.headers
                body = json.loads(raw)
                assert body.get("error") == CALLBACK_ERROR, body
                if name:
                    assert name.encode() not in raw or name.isalnum(), f"the bad name is reflected: {raw!r}"

    run(body(), 60)


@pytest.mark.parametrize("endpoint", ["/poll", "/iframe", "/api/send"])
def test_good_callback_names_are_accepted(cluster, endpoint):
    n2 = cluster.n2

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for name in GOOD_CALLBACKS:
                params = {"token": bob["token"], "rooms": h.unique_room("cb"), "callback": name, "wait": "0",
                          "event": json.dumps({"type": "ping", "ref": 7}, separators=(",", ":"))}
                if endpoint == "/iframe":
                    async with client.stream("GET", n2.url + endpoint, params=params) as r:
                        raw = b""
                        async for chunk in r.aiter_raw():
                            raw += chunk
                            if b"</script>" in raw:
                                break
                    assert r.status_code == 200, f"callback={name!r} → {r.status_code} {raw[:200]!r}"
                    assert f"<script>parent.{name}(".encode() in raw, raw[-300:]
                else:
                    r = await client.get(n2.url + endpoint, params=params)
                    assert r.status_code == 200, f"{endpoint} callback={name!r} → {r.status_code} {r.text[:200]}"
                    assert r.headers["content-type"].startswith("application/javascript"), r.headers
                    assert r.headers.get("x-content-type-options") == "nosniff", r.headers
                    decoded = h.unwrap_jsonp(r.content, name)
                    if endpoint == "/api/send":
                        assert decoded == {"type": "ack", "ref": 7} or decoded.get("type") == "ack", decoded
                    else:
                        types = [e["type"] for e in decoded["events"]]
                        assert types[:1] == ["welcome"] and set(types[1:]) <= {"presence"}, decoded

    run(body(), 60)


EVIL = (
    'x</script><script>parent.__pwned=1</script><!-- y \u2028 z \u2029 '
    '</SCRIPT ><sCrIpT>alert(1)</sCrIpT> "q" \\ \' & <b>bold</b> --> <![CDATA[ ]]> end'
)
FORBIDDEN = [b"</", b"<!--", "\u2028".encode(), "\u2029".encode()]


def assert_no_forbidden(raw: bytes, what: str) -> None:
    for bad in FORBIDDEN:
        assert bad not in raw, f"{what}: raw bytes contain {bad!r}: {raw[:600]!r}"
    assert b"<script" not in raw.lower(), f"{what}: raw bytes contain <script: {raw[:600]!r}"


def test_script_breaking_text_is_neutralised_in_iframe_and_jsonp(cluster):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("evil")
    alice_nick, bob_nick = h.unique_name("alice"), h.unique_name("bob")
    app_event = {"html": EVIL, EVIL: ["nested", {"k": EVIL}], "type": "custom"}

    async def body():
        alice_creds = login(n1.url, alice_nick)
        bob_creds = login(n2.url, bob_nick)
        async with Clients() as c:
            alice, _ = await c.session(n1, alice_creds["token"], rooms=[room], name="alice")
            iframe, _ = await IframeStream.session(n2, bob_creds["token"], [room], callback="onEvt", name="bob-iframe")
            poller = Poller(bob_creds["token"], [room], name="bob-jsonp", callback="cb")
            async with iframe:
                try:
                    await poller.poll(n2, wait=0)
                    await ws_say(alice, room, EVIL, "evil")
                    await ws_whisper(alice, bob_nick, EVIL, "evil-w")
                    r = publish(n1, {"room": room, "event": app_event})
                    assert r.status_code == 200, f"publish → {r.status_code} {r.text}"

                    want = lambda evs: (len(chat(evs)) >= 2 and any(e.get("type") == "custom" for e in evs))  # noqa: E731
                    deadline = time.monotonic() + 15
                    while not want(poller.events) and time.monotonic() < deadline:
                        await poller.poll(n2, wait=3)
                    await wait_until(lambda: want(iframe.events), 10, "iframe: the evil events")

                    # JSONP: every answer, raw.
                    for url, status, raw in poller.answers:
                        inner = raw[len(b"cb("):-len(b");")]
                        assert_no_forbidden(inner, f"JSONP answer from {url}")
                    for what, events in (("iframe", iframe.events), ("jsonp", poller.events)):
                        msg = next(e for e in events if e.get("type") == "message")
                        prv = next(e for e in events if e.get("type") == "private")
                        app = next(e for e in events if e.get("type") == "custom")
                        assert msg["text"] == EVIL, f"{what}: message text changed: {msg['text']!r}"
                        assert prv["text"] == EVIL, f"{what}: private text changed: {prv['text']!r}"
                        assert app["html"] == EVIL and app[EVIL] == ["nested", {"k": EVIL}], f"{what}: {app}"
                        assert app["room"] == room and h.MESSAGE_ID.match(app["id"]), app

                    # iframe: each payload is clean, and the document is exactly: preamble,
                    # then `<script>parent.onEvt(…);</script>` frames and keep-alive comments.
                    for payload in iframe.payloads:
                        assert_no_forbidden(payload, "iframe payload")
                    raw = bytes(iframe.raw)
                    preamble_end = raw.index(b"-->\n") + 4
                    rest = h.IFRAME_EVENT.sub(b"", raw[preamble_end:])
                    rest = rest.replace(b"<!-- keep-alive -->\n", b"")
                    assert rest.strip() == b"", f"iframe document has unexpected markup: {rest[:600]!r}"
                    assert raw[preamble_end:].lower().count(b"<script") == len(iframe.payloads)
                    assert raw[preamble_end:].lower().count(b"</script") == len(iframe.payloads)
                finally:
                    await poller.close()

    run(body(), 60)


# ------------------------------------------------------------------------------------
# 5. /api/send: the same validation, limits, ack and errors as WebSocket
# ------------------------------------------------------------------------------------


def test_api_send_requires_a_valid_token(cluster):
    n1 = cluster.n1

    async def body():
        creds = login(n1.url, h.unique_name("tok"))
        forged = h.forge_token_payload(creds["token"], nickname="mallory")
        ev = {"type": "say", "room": "lobby", "text": "x"}
        for token in (None, "", "garbage", forged):
            for method in ("POST", "GET"):
                r = await api_send(n1, token, ev, method=method)
                assert r.status_code == 401, f"{method} /api/send token={token!r:.20} → {r.status_code} {r.text}"
                assert r.json().get("error") == "unauthorized", r.text
        # Bearer header works like ?token=
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            r = await client.post(n1.url + "/api/send", content=json.dumps({"type": "ping", "ref": "p"}),
                                  headers={"Authorization": f"Bearer {creds['token']}"})
            assert r.status_code == 200 and r.json() == {"type": "ack", "ref": "p"}, r.text

    run(body(), 30)


def test_api_send_validation_matches_websocket(cluster):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("send")

    async def body():
        # One session per way of sending: /api/send is rate-limited per session like a socket.
        alice = login(n1.url, h.unique_name("alice"))
        senders = {m: login(n1.url, h.unique_name(f"al{m}"))["token"] for m in ("POST", "GET", "JSONP")}
        async with Clients() as c:
            ws, _, _ = await c.user(n1, h.unique_name("wsref"), rooms=[room])
            cases = [
                ({"type": "say", "room": room, "text": "x" * 4097, "ref": "long"}, "text_too_long"),
                ({"type": "say", "room": "bad room!", "text": "x", "ref": "room"}, "invalid_room"),
                ({"type": "say", "room": "r" * 65, "text": "x", "ref": "room65"}, "invalid_room"),
                ({"type": "say", "text": "x", "ref": "noroom"}, "invalid_room"),
                ({"type": "whisper", "to": h.unique_name("nobody"), "text": "x", "ref": "off"}, "user_offline"),
                ({"type": "shout", "room": room, "text": "x", "ref": "type"}, "invalid_message"),
                ({"type": "say", "room": room, "text": 5, "ref": "int"}, "invalid_message"),
                ('{"type":"say","room":', "invalid_message"),
                ("not json at all", "invalid_message"),
                ("[1,2,3]", "invalid_message"),
            ]
            for event, code in cases:
                # WebSocket first: the reference behaviour.
                await ws.send(event)
                ws_answer = await ws.recv_until(lambda e: e.get("type") in ("error", "ack"), 5)
                for method in ("POST", "GET"):
                    r = await api_send(n2, senders[method], event, method=method)
                    answer = r.json()
                    assert answer.get("type") == "error" and answer.get("code") == code, (
                        f"{method} /api/send {event!r:.80} → HTTP {r.status_code} {answer}; expected error {code}")
                    assert ws_answer.get("type") == "error" and ws_answer.get("code") == code, ws_answer
                    if isinstance(event, dict) and "ref" in event:
                        assert answer.get("ref") == event["ref"] and ws_answer.get("ref") == event["ref"]
                    assert 400 <= r.status_code < 500, f"an error answer should carry a 4xx status: {r.status_code}"
                    # JSONP: always 200, the event says what happened.
                    if method == "GET":
                        j = await api_send(n2, senders["JSONP"], event, method="GET", callback="cb")
                        assert j.status_code == 200 and h.unwrap_jsonp(j.content, "cb") == answer, j.content

            # Accepted: exactly at the limit, in a room not joined (server-side say), ping.
            r = await api_send(n2, alice["token"], {"type": "say", "room": room, "text": "é" * 4096, "ref": 9})
            assert r.status_code == 200 and r.json()["type"] == "ack" and r.json()["ref"] == 9, r.text
            assert h.MESSAGE_ID.match(r.json()["id"]), r.text
            m = await ws.wait_type("message", 10, text="é" * 4096)
            assert m["id"] == r.json()["id"] and m["from"]["nickname"] == alice["nickname"], m
            r = await api_send(n2, alice["token"], {"type": "ping"})
            assert r.status_code == 200 and r.json() == {"type": "pong"}, r.text
            r = await api_send(n2, alice["token"], {"type": "join", "room": room, "ref": "j"})
            assert r.status_code == 200 and r.json()["type"] == "ack" and r.json()["ref"] == "j", r.text
            # The sender cannot forge `from`.
            r = await api_send(n2, alice["token"], {"type": "say", "room": room, "text": "me", "from": {"nickname": "x"}})
            assert r.json()["type"] == "ack", r.text
            m = await ws.wait_type("message", 10, text="me")
            assert m["from"]["nickname"] == alice["nickname"], m
            # GET without event=
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                r = await client.get(n2.url + "/api/send", params={"token": alice["token"]})
                assert r.status_code == 400, r.text

    run(body(), 60)


def test_api_send_get_accepts_form_encoded_event(cluster):
    """`GET /api/send?event=<url-encoded JSON>`: a query string encoded the way
    URLSearchParams, jQuery's $.param, an HTML form or Python's urlencode do it (space =
    `+`) must decode to the same event (and `%2B` to a literal +)."""
    n1 = cluster.n1
    room = h.unique_room("plus")

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        async with Clients() as c:
            ws, _, _ = await c.user(n1, h.unique_name("watch"), rooms=[room])
            text = "hello world 1+1=2"
            r = await api_send(n1, alice["token"], {"type": "say", "room": room, "text": text, "ref": 1},
                               method="GET", form_encoding=True)
            assert r.status_code == 200 and r.json().get("type") == "ack", (
                f"GET /api/send?event=<form-encoded {{\"type\": \"say\", …}}> → HTTP {r.status_code} {r.text}")
            m = await ws.wait_type("message", 10, room=room)
            assert m["text"] == text, f"text arrived as {m['text']!r}, sent {text!r}"

    run(body(), 30)


def test_api_send_whisper_reaches_websocket_user_on_other_node(cluster):
    n1, n2 = cluster.n1, cluster.n2

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        async with Clients() as c:
            bob, _, bcred = await c.user(n2, h.unique_name("bob"))
            r = await api_send(n1, alice["token"], {"type": "whisper", "to": bcred["nickname"], "text": "psst", "ref": 1},
                               method="GET")
            assert r.status_code == 200 and r.json()["type"] == "ack", r.text
            p = await bob.wait_type("private", 10, text="psst")
            assert p["from"]["nickname"] == alice["nickname"] and p["to"] == bcred["nickname"], p

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 5b. /api/publish
# ------------------------------------------------------------------------------------


def test_publish_requires_the_api_key(cluster):
    n1 = cluster.n1
    user = login(n1.url, h.unique_name("pk"))
    body = {"room": "lobby", "event": {"text": "x"}}
    for key, headers in ((None, None), ("wrong-key", None), (user["token"], None), (h.DEFAULT_API_KEY + "x", None),
                         (None, {"Authorization": h.DEFAULT_API_KEY}), (None, {"Authorization": f"Basic {h.DEFAULT_API_KEY}"})):
        r = publish(n1, body, api_key=key, headers=headers)
        assert r.status_code == 401, f"publish with key={key!r:.20} headers={headers} → {r.status_code} {r.text}"
        assert r.json().get("error") == "unauthorized", r.text
    r = publish(n1, body)
    assert r.status_code == 200, r.text


def test_publish_refused_when_node_has_no_api_key(node_factory):
    n = node_factory(node_id="nokey", api_key=None)
    for key in (None, h.DEFAULT_API_KEY):
        r = publish(n, {"room": "lobby", "event": {"text": "x"}}, api_key=key)
        assert r.status_code == 401, f"a node without SWITCHBOARD_API_KEY accepted key {key!r}: {r.status_code} {r.text}"


def test_publish_rejects_malformed_bodies(cluster):
    n1 = cluster.n1
    bad = [
        b"not json",
        b"",
        b"[1,2]",
        b'"room"',
        {"room": "lobby"},
        {"room": "lobby", "event": "text"},
        {"room": "lobby", "event": [1]},
        {"room": "lobby", "event": None},
        {"event": {"text": "x"}},
        {"room": "lobby", "to": "bob", "event": {"text": "x"}},
        {"room": "bad room!", "event": {"text": "x"}},
        {"room": 5, "event": {"text": "x"}},
        {"room": "lobby", "event": {"type": 5}},
    ]
    for body in bad:
        r = publish(n1, body)
        assert r.status_code == 400, f"publish {body!r} → {r.status_code} {r.text}"
        assert isinstance(r.json().get("error"), str), r.text


def test_publish_delivers_to_ws_and_sse_subscribers_unchanged(cluster):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("pub")

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        async with Clients() as c:
            ws, _, wcred = await c.user(n1, h.unique_name("carol"), rooms=[room])
            sse, _ = await SSEStream.session(n2, bob["token"], [room], name="bob-sse")
            async with sse:
                plain = {"score": [2, 1], "team": "东东", "nested": {"a": None, "b": True, "c": 1.5}, "text": "<b>"}
                typed = {"type": "goal", "minute": 90}
                r1 = publish(n2, {"room": room, "event": plain})
                assert r1.status_code == 200, r1.text
                r2 = publish(n1, {"room": room, "event": typed})
                assert r2.status_code == 200, r2.text
                id1, id2 = r1.json().get("id"), r2.json().get("id")
                assert h.MESSAGE_ID.match(id1 or "") and h.MESSAGE_ID.match(id2 or ""), (r1.text, r2.text)

                for client in (ws, sse):
                    e1 = await client.wait_seen(lambda e: e.get("score") == [2, 1], 10, what="plain event")
                    e2 = await client.wait_seen(lambda e: e.get("type") == "goal", 10, what="typed event")
                    assert e1 == {**plain, "type": "event", "id": id1, "room": room}, e1
                    assert e2 == {**typed, "id": id2, "room": room}, e2
                # SSE frames: event: type, id: cursor naming the event's id
                f1 = next(f for f in sse.frames if '"score"' in f.data)
                assert f1.event == "event" and f1.id and f"r.{room}@{id1}" in f1.id.split(","), f1
                f2 = next(f for f in sse.frames if '"goal"' in f.data)
                assert f2.event == "goal", f2

                # to a nickname: over SSE (node 2) and WS (node 1)
                r3 = publish(n1, {"to": bob["nickname"], "event": {"notice": 1}})
                assert r3.status_code == 200, r3.text
                e3 = await sse.wait_seen(lambda e: e.get("notice") == 1, 10, what="event to bob")
                assert e3 == {"notice": 1, "type": "event", "id": r3.json()["id"], "to": bob["nickname"]}, e3
                r4 = publish(n2, {"to": wcred["nickname"], "event": {"type": "dm", "x": "y"}})
                assert r4.status_code == 200, r4.text
                e4 = await ws.wait_seen(lambda e: e.get("type") == "dm", 10, what="event to carol")
                assert e4 == {"type": "dm", "x": "y", "id": r4.json()["id"], "to": wcred["nickname"]}, e4
                # a room event does not leak to others' private streams and vice versa
                await asyncio.sleep(0.5)
                assert not ws.seen(lambda e: e.get("notice") == 1), "carol got bob's event"

    run(body(), 60)


# ------------------------------------------------------------------------------------
# Poll / stream request validation, reset beyond the history window
# ------------------------------------------------------------------------------------


def test_poll_and_stream_parameter_validation(cluster):
    n2 = cluster.n2
    bob = login(n2.url, h.unique_name("bob"))
    t = bob["token"]
    cases = [
        ("/poll", {"rooms": "lobby"}, 401),
        ("/poll", {"token": "forged", "rooms": "lobby"}, 401),
        ("/poll", {"token": t, "wait": "31"}, 400),
        ("/poll", {"token": t, "wait": "-1"}, 400),
        ("/poll", {"token": t, "wait": "abc"}, 400),
        ("/poll", {"token": t, "cursor": "garbage"}, 400),
        ("/poll", {"token": t, "rooms": "bad room"}, 400),
        ("/sse", {"rooms": "lobby"}, 401),
        ("/sse", {"token": t, "rooms": "bad room"}, 400),
        ("/sse", {"token": t, "lastEventId": "garbage"}, 400),
        ("/iframe", {"rooms": "lobby", "callback": "cb"}, 401),
        ("/iframe", {"token": t}, 400),  # callback is required
    ]
    with h.http_client() as client:
        for path, params, status in cases:
            r = client.get(n2.url + path, params=params)
            assert r.status_code == status, f"GET {path} {params} → {r.status_code} {r.text[:200]}; expected {status}"
        r = client.get(n2.url + "/sse", params={"token": t}, headers={"Last-Event-ID": "garbage"})
        assert r.status_code == 400, f"/sse with a malformed Last-Event-ID header → {r.status_code}"


def test_cursor_older_than_history_window_gets_reset(node_factory, redis_server):
    """With --history 3: a poll and an SSE stream resuming from an evicted id are told
    (`reset`) and then get what is still in the window."""
    n = node_factory(node_id="hist", redis=redis_server.url, extra_args=["--history", "3"])
    room = h.unique_room("hist")

    async def body():
        alice = login(n.url, h.unique_name("alice"))
        bob = login(n.url, h.unique_name("bob"))
        ids = []
        for i in range(8):
            r = await api_send(n, alice["token"], {"type": "say", "room": room, "text": f"h{i}", "ref": i})
            ids.append(r.json()["id"])
            await asyncio.sleep(0.02)
        old_cursor = f"r.{room}@{ids[0]}"
        poller = Poller(bob["token"], [room])
        try:
            events = await poller.poll(n, wait=0, cursor=old_cursor)
            types = [e.get("type") for e in events]
            assert "reset" in types, f"poll from an evicted cursor: no reset in {events}"
            reset = next(e for e in events if e.get("type") == "reset")
            assert reset.get("room") == room, reset
            assert types.index("reset") < types.index("message") if "message" in types else True
            assert [e["text"] for e in chat(events)] == ["h5", "h6", "h7"], events
        finally:
            await poller.close()
        sse, _ = await SSEStream.session(n, bob["token"], [room], last_event_id=old_cursor, name="bob-sse")
        async with sse:
            await wait_until(lambda: len(chat(sse.events)) >= 3, 10, "the retained messages")
            assert any(e.get("type") == "reset" for e in sse.events), sse.events
            assert [e["text"] for e in chat(sse.events)] == ["h5", "h6", "h7"], sse.events

    run(body(), 40)


# ------------------------------------------------------------------------------------
# 6. Keep-alive and freeing a gone client
# ------------------------------------------------------------------------------------


def test_sse_and_iframe_keep_alive_within_15s(cluster):
    """No flag shortens the 15 s keep-alive: this test waits ~16.5 s."""
    n2 = cluster.n2

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        carol = login(n2.url, h.unique_name("carol"))
        room = h.unique_room("ka")
        sse, _ = await SSEStream.session(n2, bob["token"], [room], name="bob-sse")
        iframe, _ = await IframeStream.session(n2, carol["token"], [room], callback="cb", name="carol-iframe")
        async with sse, iframe:
            opened = sse.opened_at
            assert opened is not None
            iframe_before = len(iframe.raw)
            comments_before = len(sse.comments)  # the padding comment
            # Until both keep-alives are in (at most 25 s), then check when the SSE one came:
            # 15 s, plus up to 1.5 s of timer and delivery delay on a loaded machine.
            def iframe_comment() -> bool:
                tail = bytes(iframe.raw[iframe_before:])
                return b"<!--" in tail and b"-->" in tail

            try:
                # (The iframe may also get the room's presence meanwhile: wait for a comment.)
                await wait_until(lambda: len(sse.comments) > comments_before and iframe_comment(),
                                 25, "an SSE and an iframe keep-alive", interval=0.1)
            except AssertionError:
                pass  # reported below
            keepalives = sse.comments[comments_before:]
            assert keepalives, f"no SSE comment in 25 s of silence; comments: {sse.comments}"
            first_at = keepalives[0][0] - opened
            assert first_at <= 16.5, f"first SSE keep-alive after {first_at:.1f}s"
            assert not sse.closed and not iframe.closed
            assert len(iframe.raw) > iframe_before, "no iframe keep-alive chunk in 25 s"
            tail = bytes(iframe.raw[iframe_before:])
            assert b"<!--" in tail and b"-->" in tail, f"iframe keep-alive is not a comment: {tail!r}"

    run(body(), 40)


def _raw_get(node: h.SwitchboardNode, path: str, query: dict) -> socket.socket:
    """A bare socket that sent `GET path?query` (nothing read yet)."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    target = path + "?" + httpx.QueryParams(query).__str__()
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nAccept: */*\r\n\r\n".encode())
    return s


def _go_away(sock: socket.socket, how: str) -> None:
    """Closes `sock` with a FIN ("close") or an RST ("reset")."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _raw_stream(node: h.SwitchboardNode, path: str, query: dict) -> socket.socket:
    """A bare socket that sent `GET path?query` and read until the welcome arrived."""
    s = _raw_get(node, path, query)
    data = b""
    deadline = time.monotonic() + 10
    while b"welcome" not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no welcome on {path}: {data[:500]!r}")
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"{path} closed before the welcome: {data[:500]!r}")
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return s


@pytest.mark.parametrize("transport", ["sse", "iframe"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_gone_stream_client_frees_its_resources(node_factory, transport, how):
    """Open a stream, drop the socket (FIN, or RST): the node's connection count for the
    transport returns to 0 and the user leaves the room's presence within a few seconds."""
    n = node_factory(node_id=f"gone-{transport}-{how}")
    room = h.unique_room("gone")

    async def body():
        bob = login(n.url, h.unique_name("bob"))
        async with Clients() as c:
            watcher, _, _ = await c.user(n, h.unique_name("watch"), rooms=[room])
            await watcher.wait_type("presence", 5, room=room, count=1)
            query = {"token": bob["token"], "rooms": room}
            if transport == "iframe":
                query["callback"] = "cb"
            sock = await asyncio.to_thread(_raw_stream, n, "/" + transport, query)
            try:
                assert h.cluster_connections(n).get(transport) == 1, h.cluster_connections(n)
                await watcher.wait_type("presence", 5, room=room, count=2)
                # Let the stream go quiet (its own presence written and read), then go away:
                # nothing is being written when the client disappears.
                await asyncio.sleep(0.5)
                sock.settimeout(0.3)
                try:
                    while sock.recv(65536):
                        pass
                except (socket.timeout, BlockingIOError):
                    pass
            finally:
                _go_away(sock, how)
            t0 = time.monotonic()
            # Wait long enough to tell "never" from "only at the next keep-alive write (15 s)".
            await wait_until(lambda: h.cluster_connections(n).get(transport, 0) == 0, 20,
                             f"{transport} count back to 0 after the client went away ({how})", interval=0.2)
            freed = time.monotonic() - t0
            await watcher.wait_type("presence", 5, room=room, count=1)
            assert freed < 5, (
                f"{transport} client gone ({'FIN' if how == 'close' else 'RST'}) while the stream was idle: "
                f"the node freed it (GET /cluster count → 0, presence → 1) only after {freed:.1f}s")

    run(body(), 40)


# ------------------------------------------------------------------------------------
# 7. Presence of polling clients; expiry of idle poll sessions
# ------------------------------------------------------------------------------------


def test_polling_client_counts_in_presence_until_its_window_passes(cluster):
    """The polling client is online while it polls and for the presence window (15 s,
    `--poll-window`) after its last poll."""
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("pp")

    async def body():
        bob = login(n2.url, h.unique_name("bob"))
        async with Clients() as c:
            alice, _, _ = await c.user(n1, h.unique_name("alice"), rooms=[room])
            await alice.wait_type("presence", 5, room=room, count=1)
            poller = Poller(bob["token"], [room], name="bob-poll")
            try:
                await poller.poll(n2, wait=0)
                await alice.wait_type("presence", 10, room=room, count=2)
                mark = len(alice.events)
                joined = alice.seen(is_type("joined", room=room, nickname=bob["nickname"]))
                assert joined, f"no joined for the polling user: {alice.events}"
                # Keep polling for a few seconds (short polls), then stop.
                for _ in range(4):
                    await asyncio.sleep(1)
                    await poller.poll(n2, wait=0)
                stopped = time.monotonic()
            finally:
                await poller.close()
            def dropped() -> list[dict]:
                return [e for e in alice.events[mark:]
                        if e.get("type") == "presence" and e.get("room") == room and e.get("count") == 1]

            # Still online well inside the window.
            await asyncio.sleep(10)
            assert not dropped(), f"presence dropped within 10s of the last poll: {alice.events[mark:]}"
            # Gone after the window (15 s + sweep).
            await wait_until(lambda: bool(dropped()), 20, "presence back to 1 after the window", interval=0.1)
            after = time.monotonic() - stopped
            assert 13 <= after <= 25, f"presence dropped {after:.1f}s after the last poll"
            left = alice.seen(is_type("left", room=room, nickname=bob["nickname"]))
            assert left, "no left event for the polling user"

    run(body(), 90)


def _waiting_poll(node: h.SwitchboardNode, query: dict) -> socket.socket:
    """A bare socket that sent a long-poll `GET /poll?…&wait=25` and got no answer yet."""
    s = _raw_get(node, "/poll", query)
    s.settimeout(1.0)
    try:
        early = s.recv(65536)
        raise AssertionError(f"the long-poll was answered at once: {early[:300]!r}")
    except socket.timeout:
        return s


@pytest.mark.parametrize("how", ["close", "reset"])
def test_long_poll_client_gone_while_waiting_leaves_after_a_grace(node_factory, how):
    """A long-poller whose client goes away while its poll waits (a closed tab: FIN, or
    RST) leaves the room's presence after a grace of ~3 s, not after the rest of its wait
    (25 s) plus the 15 s window. A client that goes away and polls again at once (a page
    that changed its rooms) stays online."""
    n = node_factory(node_id=f"pollgone-{how}")
    room = h.unique_room("pollgone")

    async def body():
        bob = login(n.url, h.unique_name("bob"))
        async with Clients() as c:
            watcher, _, _ = await c.user(n, h.unique_name("watch"), rooms=[room])
            await watcher.wait_type("presence", 5, room=room, count=1)
            poller = Poller(bob["token"], [room], name="bob-poll")
            try:
                await poller.poll(n, wait=0)
                await watcher.wait_type("presence", 10, room=room, count=2)
                await asyncio.sleep(0.5)
                await poller.poll(n, wait=0)  # a cursor after the arrival's own events
                mark = len(watcher.events)

                def dropped() -> bool:
                    return any(e.get("type") == "presence" and e.get("room") == room and e.get("count") == 1
                               for e in watcher.events[mark:])

                query = {"token": bob["token"], "rooms": room, "cursor": poller.cursor, "wait": "25"}

                # Gone, and polling again at once, three times: still online.
                sock = await asyncio.to_thread(_waiting_poll, n, query)
                for _ in range(3):
                    _go_away(sock, how)
                    sock = await asyncio.to_thread(_waiting_poll, n, query)
                    await asyncio.sleep(1)
                await asyncio.sleep(4)
                assert not dropped(), f"a client that polled again at once dropped out: {watcher.events[mark:]}"

                # Gone for good while the poll waits.
                _go_away(sock, how)
                t0 = time.monotonic()
                await wait_until(dropped, 15, f"presence back to 1 after the long-poller went away ({how})",
                                 interval=0.1)
                after = time.monotonic() - t0
                print(f"\n[figures] long-poller gone ({how}) while waiting: out of presence after {after:.1f}s")
                assert 2.5 <= after <= 8, f"presence dropped {after:.1f}s after the client went away"
                assert watcher.seen(is_type("left", room=room, nickname=bob["nickname"])), "no left event"
            finally:
                await poller.close()

    run(body(), 60)


def test_long_poll_tab_gone_keeps_a_second_tab_of_the_same_session_online(node_factory):
    """Tokens the app mints (`POST /api/token`) share one session per nickname, so two
    tabs poll as one session. Tab B's waiting poll goes away after tab A polled during
    it: A is still there, so the session keeps the 15 s window, not B's 3 s grace."""
    n = node_factory(node_id="polltabs")
    room = h.unique_room("tabs")

    async def body():
        nickname = h.unique_name("ann")
        with h.http_client() as client:
            r = client.post(n.url + "/api/token", json={"nickname": nickname, "ttl": 600},
                            headers={"Authorization": f"Bearer {h.DEFAULT_API_KEY}"})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        async with Clients() as c:
            watcher, _, _ = await c.user(n, h.unique_name("watch"), rooms=[room])
            await watcher.wait_type("presence", 5, room=room, count=1)
            tab_a = Poller(token, [room], name="tab-a")
            try:
                await tab_a.poll(n, wait=0)
                await watcher.wait_type("presence", 10, room=room, count=2)
                await asyncio.sleep(0.5)
                await tab_a.poll(n, wait=0)
                mark = len(watcher.events)
                tab_b = await asyncio.to_thread(
                    _waiting_poll, n, {"token": token, "rooms": room, "cursor": tab_a.cursor, "wait": "25"})
                await tab_a.poll(n, wait=0)  # tab A polls while B's poll waits
                tab_b.close()
                await asyncio.sleep(7)  # past the grace, inside the window
                gone = [e for e in watcher.events[mark:] if e.get("type") == "presence" and e.get("room") == room]
                assert not any(e.get("count") == 1 for e in gone), (
                    f"tab B's close dropped the session tab A still polls: {watcher.events[mark:]}")
            finally:
                await tab_a.close()

    run(body(), 40)


def test_idle_long_poll_session_expires_without_crashing_the_node(cluster):
    """No flag shortens the 40 s window: this test waits ~46 s. A client long-polls, one
    poll is answered by a message, then it goes away. When its parked subscriber expires
    the node must stay up (and keep serving)."""
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("expire")

    async def body():
        alice = login(n1.url, h.unique_name("alice"))
        bob = login(n2.url, h.unique_name("bob"))
        poller = Poller(bob["token"], [room], name="bob")
        try:
            await poller.poll(n2, wait=0)
            await asyncio.sleep(0.5)

            async def until_chat() -> None:
                while not chat(poller.events):
                    await poller.poll(n2, wait=10)

            task = asyncio.create_task(until_chat())
            await asyncio.sleep(1.0)
            r = await api_send(n1, alice["token"], {"type": "say", "room": room, "text": "last one"})
            assert r.json()["type"] == "ack", r.text
            await asyncio.wait_for(task, 10)
        finally:
            await poller.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 46:
            await asyncio.sleep(1)
            assert n2.running, (
                f"node 2 died {time.monotonic() - t0:.0f}s after the client's last long-poll "
                f"(the poll session's expiry); log:\n{n2.stderr()}")
        with h.http_client() as client:
            assert client.get(n2.url + "/healthz").status_code == 200

    run(body(), 80)
