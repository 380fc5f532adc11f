"""Delivery order under concurrent publishers, on every transport and both brokers.

The regression: with many concurrent publishers the in-process broker handed a stream's
events to the node out of id order, and the node's per-stream de-duplication ("drop what
is not newer than the last id delivered") then silently dropped the older ones —
subscribers missed events that had been acknowledged. Here, for the in-process broker
("memory": one node, no Redis), for Redis ("redis": a real redis-server and two nodes
sharing it, subscribers spread over both, publishers hitting both) and for Redis Cluster
("redis-cluster": six cluster-enabled redis-servers, three masters and three replicas,
shared by the module; two nodes on `redis+cluster://`, the room's events published with
SPUBLISH on the master owning its partition):

* one fresh room, subscribed to by native WebSocket clients, SSE streams, long-pollers
  (`GET /poll` following the returned cursor; in the Redis cluster some stay on one node,
  some alternate between the nodes) and python-socketio clients (over WebSocket and over
  Engine.IO polling) — all confirmed live by a first `POST /api/publish` marker that every
  one of them must receive before anything else is sent;
* then many concurrent publishers: 8 HTTP clients sending `POST /api/publish` at once
  (`test_concurrent_http_publishers`), or 16 WebSocket users each sending 25 `say`
  without waiting for the acks (`test_concurrent_websocket_says`; the senders are
  checked as subscribers too);
* then a closing marker, published once every publish was answered: since a stream's
  events reach a connection in id order and a connection never delivers an id not newer
  than its last one, nothing accepted before it can arrive after it. So each subscriber
  is complete once it has the closing marker (or the deadline passed);
* every subscriber must have received every accepted id (2xx answers / acks) exactly
  once, in strictly increasing id order, and nothing else; and no node may have counted
  a `switchboard_gate_drops_total` drop (an event dropped as "not newer").

A failure names, per transport and per subscriber, how many deliveries were missing,
duplicated, unexpected or out of order, with example ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import SIOs, Clients, Poller, SSEStream, id_key, run

#: Subscribers per transport (the say test adds its 16 senders as WebSocket subscribers).
WS_SUBSCRIBERS = 10
SSE_SUBSCRIBERS = 10
POLL_SUBSCRIBERS = 6
SIO_SUBSCRIBERS = 6  # half over WebSocket, half over Engine.IO long-polling

PUBLISHERS = 8
EVENTS_PER_PUBLISHER = 100  # 800 events, below the 1,000-per-stream history window

SAY_USERS = 16
SAYS_PER_USER = 25  # below the per-connection burst of 40

LIVE_TIMEOUT = 30.0  # every subscriber has the opening marker
DELIVERY_TIMEOUT = 60.0  # every subscriber has the closing marker
SEND_TIMEOUT = 45.0  # every publish answered / every say acked
TEST_TIMEOUT = 200.0  # a hard cap on a test body, above the sum of the deadlines

AUTH = {"Authorization": f"Bearer {h.DEFAULT_API_KEY}"}


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


# python-engineio's client refuses a polling answer of more than 16 packets
# (`Payload.max_decode_packets`) and drops the session; the server caps each polling
# answer at 16 packets (EngineIOConfiguration.maxPacketsPerPoll) so unmodified Python
# clients keep up in a busy room. The Socket.IO polling subscribers here run with the
# client's defaults, which proves it.


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def broker(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def ordering_redis_cluster(redis_server_binary: str) -> Iterator[Any]:
    from test_redis_cluster import RedisCluster
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def nodes(broker: str, node_factory: Callable[..., h.SwitchboardNode],
          request: pytest.FixtureRequest) -> list[h.SwitchboardNode]:
    """"memory": one node on the in-process broker; "redis": two nodes on one fresh
    redis-server; "redis-cluster": two nodes on the module's Redis Cluster. Every
    process is stopped by the factories' finalizers."""
    tag = h.unique_name("o")[2:]
    if broker == "memory":
        return [node_factory(node_id=f"ord-{tag}")]
    if broker == "redis-cluster":
        url = request.getfixturevalue("ordering_redis_cluster").url
    else:
        url = request.getfixturevalue("redis_factory")().url
    cluster = [node_factory(node_id=f"ord{i}-{tag}", redis=url) for i in (1, 2)]
    for n in cluster:
        n.wait_ready(30)
    return cluster


# --------------------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """One receiving connection, of any transport: `ids` are the ids of the room's
    stored events it received, in arrival order (updated by `scan`)."""

    transport: str
    name: str
    node: h.SwitchboardNode
    room: str
    #: The client's raw record (a list it appends to) and how to get an event dict from an item.
    record: Callable[[], list]
    extract: Callable[[Any], Optional[dict]]
    #: None while the connection is usable, else why not.
    state: Callable[[], Optional[str]]
    ids: list[str] = field(default_factory=list)
    #: `reset` / `error` events, a failed poll, … (diagnostics).
    notes: list[str] = field(default_factory=list)
    scanned: int = 0

    def scan(self) -> None:
        items = self.record()
        end = len(items)
        for item in items[self.scanned:end]:
            event = self.extract(item)
            if event is None:
                continue
            ident = event.get("id")
            if event.get("room") == self.room and isinstance(ident, str) and h.MESSAGE_ID.match(ident):
                self.ids.append(ident)
            elif event.get("type") in ("reset", "error") or "__reader_error__" in event:
                self.notes.append(repr(event)[:300])
        self.scanned = end

    def has(self, ident: str) -> bool:
        self.scan()
        return ident in self.ids

    @property
    def label(self) -> str:
        return f"{self.transport} {self.name} @ {self.node.node_id}"


def _dict_event(item: Any) -> Optional[dict]:
    return item if isinstance(item, dict) else None


def _sio_event(item: Any) -> Optional[dict]:
    namespace, name, args = item
    if namespace == "/" and args and isinstance(args[0], dict):
        return args[0] if name != "error" else {"type": "error", **args[0]}
    return None


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"{record.levelname} {record.getMessage()}"[:300])


def _recording_logger(name: str, sink: list[str]) -> logging.Logger:
    """A logger of its own for one client, keeping its warnings and errors in `sink`."""
    logger = logging.getLogger(f"test_ordering.{name}")
    logger.handlers[:] = [_ListHandler(sink)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger


async def login_async(client: httpx.AsyncClient, node: h.SwitchboardNode, prefix: str) -> dict:
    nickname = h.unique_name(prefix)
    r = await client.post(node.url + "/api/login", json={"nickname": nickname, "avatar": "1.jpg"})
    assert r.status_code == 200, f"login {nickname} on {node.node_id} → HTTP {r.status_code}: {r.text}"
    return r.json()


class Audience:
    """Every subscriber of one room, spread over the nodes; closes everything it opened."""

    def __init__(self, nodes: list[h.SwitchboardNode], room: str) -> None:
        self.nodes = nodes
        self.room = room
        self.subscribers: list[Subscriber] = []
        self.ws = Clients()
        self.sios = SIOs()
        self.sse: list[SSEStream] = []
        self.pollers: list[Poller] = []
        self.poll_tasks: list[asyncio.Task] = []
        self.http = httpx.AsyncClient(trust_env=False, timeout=30.0)
        #: The closing marker's id, once published: pollers stop when they have it.
        self.end: Optional[str] = None

    def node(self, i: int) -> h.SwitchboardNode:
        return self.nodes[i % len(self.nodes)]

    # -- opening ------------------------------------------------------------------------
    async def add_ws(self, i: int, prefix: str = "ws", transport: str = "websocket") -> h.WSClient:
        node = self.node(i)
        creds = await login_async(self.http, node, prefix)
        client, welcome = await self.ws.session(node, creds["token"], rooms=[self.room], name=creds["nickname"])
        assert welcome.get("transport") == "websocket", welcome
        self.subscribers.append(Subscriber(
            transport, creds["nickname"], node, self.room, lambda: client.events, _dict_event,
            lambda: f"closed (code {client.close_code} {client.close_reason!r})" if client.closed else None))
        return client

    async def add_sse(self, i: int) -> None:
        node = self.node(i)
        creds = await login_async(self.http, node, "sse")
        stream, welcome = await SSEStream.session(node, creds["token"], [self.room], name=creds["nickname"])
        self.sse.append(stream)
        assert welcome.get("transport") == "sse", welcome
        self.subscribers.append(Subscriber(
            "sse", creds["nickname"], node, self.room, lambda: stream.events, _dict_event,
            lambda: "stream ended" if stream.closed else None))

    async def add_poller(self, i: int) -> None:
        """Long-polls (`wait=10`) with the cursor of the previous answer until it has
        the closing marker (`self.end`) or is cancelled. In a cluster, odd pollers
        alternate between the nodes, even ones stay on theirs (both kinds on both nodes)."""
        node = self.node(i // 2)
        alternate = len(self.nodes) > 1 and i % 2 == 1
        creds = await login_async(self.http, node, "lp")
        poller = Poller(creds["token"], [self.room], name=creds["nickname"])
        self.pollers.append(poller)
        first = await poller.poll(node, wait=0)  # welcome (+ presence), and the cursor
        assert first and first[0].get("type") == "welcome", first
        failure: list[str] = []
        sub = Subscriber("long-poll" + (" (alternating nodes)" if alternate else ""), creds["nickname"], node,
                         self.room, lambda: poller.events, _dict_event,
                         lambda: failure[0] if failure else None)
        self.subscribers.append(sub)

        async def loop() -> None:
            n = 0
            try:
                while self.end is None or not sub.has(self.end):
                    n += 1
                    await poller.poll(self.node(i // 2 + n) if alternate else node, wait=10)
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # noqa: BLE001 - reported with the subscriber
                failure.append(f"poll failed: {e!r}"[:500])

        self.poll_tasks.append(asyncio.create_task(loop()))

    async def add_sio(self, i: int) -> None:
        node = self.node(i // 2)  # both kinds on both nodes
        transports = ["websocket"] if i % 2 == 0 else ["polling"]
        creds = await login_async(self.http, node, "sio")
        warnings: list[str] = []  # why python-socketio / -engineio gave up, if they did
        client = self.sios.new(creds["nickname"], logger=_recording_logger(f"sio.{creds['nickname']}", warnings),
                               engineio_logger=_recording_logger(f"eio.{creds['nickname']}", warnings))
        await client.connect(node.url, {"token": creds["token"]}, transports)
        await client.welcome()
        joined = await client.client.call("join", self.room, timeout=20)
        assert isinstance(joined, dict) and h.MESSAGE_ID.match(joined.get("id", "")), f"join → {joined}"
        self.subscribers.append(Subscriber(
            f"socket.io/{transports[0]}", creds["nickname"], node, self.room, lambda: client.events, _sio_event,
            lambda: None if client.client.connected else f"disconnected (client log: {warnings[-3:]})"))

    async def open_all(self) -> None:
        """Opens every subscriber (a transport's at once, one transport after the other)."""
        await asyncio.gather(*(self.add_ws(i) for i in range(WS_SUBSCRIBERS)))
        await asyncio.gather(*(self.add_sse(i) for i in range(SSE_SUBSCRIBERS)))
        await asyncio.gather(*(self.add_poller(i) for i in range(POLL_SUBSCRIBERS)))
        await asyncio.gather(*(self.add_sio(i) for i in range(SIO_SUBSCRIBERS)))

    # -- waiting ------------------------------------------------------------------------
    async def wait_all_have(self, ident: str, timeout: float) -> list[Subscriber]:
        """Waits until every subscriber received `ident`, or every one still without it
        can no longer get it (closed), or `timeout`; returns those without it."""
        deadline = time.monotonic() + timeout
        while True:
            lacking = [s for s in self.subscribers if not s.has(ident)]
            if not lacking or all(s.state() is not None for s in lacking) or time.monotonic() > deadline:
                return lacking
            await asyncio.sleep(0.05)

    async def confirm_live(self, publish_node: h.SwitchboardNode) -> str:
        """Publishes the opening marker; every subscriber must receive it."""
        marker = await publish_one(self.http, publish_node, {"room": self.room, "event": {"type": "mark", "at": "start"}})
        lacking = await self.wait_all_have(marker, LIVE_TIMEOUT)
        assert not lacking, (
            f"{len(lacking)} subscribers never got the opening marker {marker} (not live): "
            + "; ".join(f"{s.label}: {s.state() or 'open'} ids={s.ids[:5]} notes={s.notes[:3]}" for s in lacking))
        return marker

    async def close(self) -> None:
        for task in self.poll_tasks:
            task.cancel()
        await asyncio.gather(*self.poll_tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.pollers), *(s.close() for s in self.sse),
                             return_exceptions=True)
        await self.ws.__aexit__(None, None, None)
        await self.sios.__aexit__(None, None, None)
        await self.http.aclose()


async def publish_one(client: httpx.AsyncClient, node: h.SwitchboardNode, body: dict) -> str:
    r = await client.post(node.url + "/api/publish", json=body, headers=AUTH)
    assert r.status_code // 100 == 2, f"publish on {node.node_id} → HTTP {r.status_code}: {r.text[:300]}"
    ident = r.json().get("id")
    assert isinstance(ident, str) and h.MESSAGE_ID.match(ident), f"publish on {node.node_id} → {r.text[:300]}"
    return ident


# --------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------


def _examples(ids: list[str], limit: int = 6) -> str:
    return ", ".join(ids[:limit]) + (f", … (+{len(ids) - limit})" if len(ids) > limit else "")


def node_counters(nodes: list[h.SwitchboardNode]) -> dict[str, dict[str, list[tuple[dict, float]]]]:
    """Per node, the samples of the counters that explain a lost delivery: gate drops
    (the regression's signature), server-side disconnects; and
    `published` (to know the scrape is what we think it is)."""
    names = ("switchboard_gate_drops_total", "switchboard_disconnects_total",
             "switchboard_published_total")
    out = {}
    for n in nodes:
        samples = h.metrics(n)
        out[n.node_id] = {name: [(dict(labels), v) for (m, labels), v in samples.items() if m == name] for name in names}
    return out


def verdict(audience: Audience, accepted: list[str], start: str, end: str, scenario: str,
            nodes: list[h.SwitchboardNode]) -> None:
    """Asserts every subscriber got start, every accepted id and end, each exactly once,
    in strictly increasing order, and nothing else; then that no node counted a gate drop."""
    expected = sorted([start, *accepted, end], key=id_key)
    assert expected[0] == start and expected[-1] == end, \
        f"accepted ids outside (start {start}, end {end}): {_examples([i for i in accepted if not id_key(start) < id_key(i) < id_key(end)])}"
    expected_set = set(expected)
    counters = node_counters(nodes)
    published = sum(v for c in counters.values() for _, v in c["switchboard_published_total"])
    assert published >= len(expected), f"/metrics counts {published} published events, fewer than " \
                                       f"{len(expected)} accepted: not the metrics expected: {counters}"

    per_transport: dict[str, Counter] = {}
    lines: list[str] = []
    for s in audience.subscribers:
        s.scan()
        counts = Counter(s.ids)
        missing = [i for i in expected if i not in counts]
        duplicated = sorted((i for i, c in counts.items() if c > 1), key=id_key)
        unexpected = sorted((i for i in counts if i not in expected_set), key=id_key)
        inversions = [(a, b) for a, b in zip(s.ids, s.ids[1:]) if id_key(b) <= id_key(a)]
        t = per_transport.setdefault(s.transport, Counter())
        t["subscribers"] += 1
        if not (missing or duplicated or unexpected or inversions):
            continue
        t["bad"] += 1
        t["missing"] += len(missing)
        t["duplicated"] += sum(counts[i] - 1 for i in duplicated)
        t["unexpected"] += len(unexpected)
        t["out of order"] += len(inversions)
        parts = [f"received {len(s.ids)} of {len(expected)}"]
        if missing:
            parts.append(f"missing {len(missing)}: {_examples(missing)}")
        if inversions:
            parts.append(f"out of order {len(inversions)}: " + ", ".join(f"{b} after {a}" for a, b in inversions[:4]))
        if duplicated:
            parts.append(f"duplicated {len(duplicated)}: {_examples(duplicated)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_examples(unexpected)}")
        if s.state():
            parts.append(s.state())
        if s.notes:
            parts.append(f"notes: {s.notes[:3]}")
        lines.append(f"    {s.label}: " + "; ".join(parts))

    if lines:
        summary = [
            f"  {transport}: {c['bad']} of {c['subscribers']} subscribers wrong — {c['missing']} deliveries missing, "
            f"{c['out of order']} out of order, {c['duplicated']} duplicated, {c['unexpected']} unexpected"
            for transport, c in per_transport.items() if c["bad"]
        ]
        raise AssertionError(
            f"{scenario}: {len(lines)} of {len(audience.subscribers)} subscribers did not get the "
            f"{len(expected)} ids ({len(accepted)} accepted + 2 markers, {start} … {end}) exactly once in order\n"
            + "\n".join(summary) + "\n  per subscriber:\n" + "\n".join(lines)
            + f"\n  node counters: {counters}")

    nonzero = {node: [(labels, v) for labels, v in c["switchboard_gate_drops_total"] if v > 0]
               for node, c in counters.items()}
    nonzero = {node: samples for node, samples in nonzero.items() if samples}
    assert not nonzero, f"{scenario}: every delivery arrived, yet nodes counted gate drops (events not newer " \
                        f"than the last delivered): {nonzero}"


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


async def finish(audience: Audience, room: str, nodes: list[h.SwitchboardNode], accepted: list[str], start: str,
                 scenario: str, what: str) -> None:
    """After the writers: every accepted id is distinct; an end mark is published, and once
    every subscriber has it (nothing older can follow it on a stream), the verdict."""
    assert len(set(accepted)) == len(accepted), \
        f"one id accepted twice: {[i for i, c in Counter(accepted).items() if c > 1][:5]}"
    end = await publish_one(audience.http, nodes[-1], {"room": room, "event": {"type": "mark", "at": "end"}})
    audience.end = end
    await audience.wait_all_have(end, DELIVERY_TIMEOUT)
    print(f"{scenario}: {len(accepted)} {what} to {len(audience.subscribers)} subscribers")
    verdict(audience, accepted, start, end, scenario, nodes)


def test_concurrent_http_publishers(nodes: list[h.SwitchboardNode], broker: str) -> None:
    """8 HTTP clients at once send 800 `POST /api/publish` (in a cluster each alternates
    between the nodes); every subscriber gets all 800 once, in id order."""
    room = h.unique_room("ord-pub")
    scenario = f"{broker} broker, {len(nodes)} node(s), {PUBLISHERS} concurrent /api/publish clients"

    async def body() -> None:
        audience = Audience(nodes, room)
        try:
            await audience.open_all()
            start = await audience.confirm_live(nodes[0])

            go = asyncio.Event()
            errors: list[str] = []

            async def publisher(p: int) -> list[str]:
                ids: list[str] = []
                async with httpx.AsyncClient(trust_env=False, timeout=SEND_TIMEOUT) as client:
                    await go.wait()
                    for n in range(EVENTS_PER_PUBLISHER):
                        node = nodes[(p + n) % len(nodes)]
                        try:
                            ids.append(await publish_one(client, node, {
                                "room": room, "event": {"type": "tick", "publisher": p, "n": n}}))
                        except (AssertionError, httpx.HTTPError) as e:
                            errors.append(f"publisher {p} event {n}: {e!r}"[:300])
                return ids

            tasks = [asyncio.create_task(publisher(p)) for p in range(PUBLISHERS)]
            t0 = time.monotonic()
            go.set()
            accepted = [i for ids in await asyncio.gather(*tasks) for i in ids]
            sent_in = time.monotonic() - t0
            assert not errors, f"{len(errors)} publishes not accepted: {errors[:5]}"
            assert len(accepted) == PUBLISHERS * EVENTS_PER_PUBLISHER
            await finish(audience, room, nodes, accepted, start, scenario, f"events accepted in {sent_in:.1f}s")
        finally:
            await audience.close()

    run(body(), TEST_TIMEOUT)


def test_concurrent_websocket_says(nodes: list[h.SwitchboardNode], broker: str) -> None:
    """16 WebSocket users (spread over the nodes) each send 25 `say` at once without
    waiting for acks; every subscriber — the senders too — gets every acked id once, in
    id order."""
    room = h.unique_room("ord-say")
    scenario = f"{broker} broker, {len(nodes)} node(s), {SAY_USERS} users × {SAYS_PER_USER} concurrent says"

    async def body() -> None:
        audience = Audience(nodes, room)
        try:
            senders = await asyncio.gather(*(audience.add_ws(i, "say", "websocket (sender)") for i in range(SAY_USERS)))
            await audience.open_all()
            start = await audience.confirm_live(nodes[0])

            go = asyncio.Event()

            async def sender(u: int, client: h.WSClient) -> tuple[list[str], list[str]]:
                refs = [f"s{u}-{k}" for k in range(SAYS_PER_USER)]
                await go.wait()
                for k, ref in enumerate(refs):
                    await client.send({"type": "say", "room": room, "text": f"u{u} #{k}", "ref": ref})
                answers: dict[str, dict] = {}
                deadline = time.monotonic() + SEND_TIMEOUT
                while len(answers) < len(refs) and time.monotonic() < deadline and not client.closed:
                    for e in client.events:
                        if e.get("type") in ("ack", "error") and e.get("ref") in refs:
                            answers[e["ref"]] = e
                    await asyncio.sleep(0.05)
                ids = [answers[r]["id"] for r in refs if answers.get(r, {}).get("type") == "ack"]
                problems = [f"{client.name} {r}: {answers.get(r, 'no answer')}" for r in refs
                            if answers.get(r, {}).get("type") != "ack"]
                return ids, problems

            tasks = [asyncio.create_task(sender(u, c)) for u, c in enumerate(senders)]
            t0 = time.monotonic()
            go.set()
            results = await asyncio.gather(*tasks)
            sent_in = time.monotonic() - t0
            accepted = [i for ids, _ in results for i in ids]
            problems = [p for _, ps in results for p in ps]
            assert not problems, f"{len(problems)} says not acked: {problems[:5]}"
            assert len(accepted) == SAY_USERS * SAYS_PER_USER
            await finish(audience, room, nodes, accepted, start, scenario, f"says acked in {sent_in:.1f}s")
        finally:
            await audience.close()

    run(body(), TEST_TIMEOUT)
