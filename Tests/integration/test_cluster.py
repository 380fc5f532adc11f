"""The cluster, end to end (issue 3, "Tests (real parts)"): one real `redis-server` on a
free loopback port and three real `switchboard serve --redis … --node-id …` processes.
Clients talk to the nodes over WebSocket, exactly as PROTOCOL.md and docs/protocol.md
describe; nothing here knows the server's code.

* a room broadcast crosses nodes, exactly once per id, and `echo:false` holds cluster-wide;
* a whisper reaches the addressee on another node and the sender's other tabs, nobody else;
* `nickname_taken` holds across nodes (login and WebSocket upgrade);
* presence counts are cluster-wide and drop when someone leaves; `/cluster` lists the nodes;
* Redis SIGKILLed and restarted on the same port: nodes survive, `/readyz` 503 then 200,
  `unavailable` (never an ack) during the outage, nothing acked is lost or duplicated,
  a resuming client gets everything acked;
* a SIGKILLed node's users leave every count within 15 s;
* `user_offline` only for a nickname nobody claims;
* one node cut off from Redis (a TCP proxy in between) gets, once healed, every message
  the others accepted meanwhile — also when its history read is slower than live pub/sub.

Every process is started by a fixture and stopped in its finalizer.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from typing import Callable, Iterable, Optional

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import switchboard_harness as h
from switchboard_harness import Clients, CursorTracker, WSClient, is_type, login, login_response, run

LOBBY = "lobby"


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


def start_cluster(redis: h.RedisServer, node_factory: Callable[..., h.SwitchboardNode], count: int = 3,
                  ) -> list[h.SwitchboardNode]:
    nodes = [node_factory(node_id=f"edge-{i}", redis=redis.url) for i in range(1, count + 1)]
    for n in nodes:
        n.wait_ready(30)
    return nodes


@pytest.fixture
def cluster(redis_server: h.RedisServer, node_factory) -> list[h.SwitchboardNode]:
    """Three nodes (edge-1, edge-2, edge-3) on one fresh redis-server."""
    return start_cluster(redis_server, node_factory)


def http_get(url: str, timeout: float = 3.0) -> httpx.Response:
    with h.http_client(timeout) as client:
        return client.get(url)


def chat_of(client: WSClient, type_: str = "message", room: Optional[str] = LOBBY) -> list[dict]:
    return [e for e in client.events
            if e.get("type") == type_ and (room is None or type_ != "message" or e.get("room") == room)]


def ids_of(events: Iterable[dict]) -> Counter:
    return Counter(e.get("id") for e in events)


async def ack_or_error(client: WSClient, ref, timeout: float = 5.0) -> dict:
    """The `ack` or `error` answering `ref` (whichever comes first; order relative to
    other events is not specified, so it does not consume)."""
    return await client.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"), timeout,
                                  what=f"ack/error for ref {ref!r}")


async def say_acked(client: WSClient, text: str, ref, room: str = LOBBY, echo: Optional[bool] = None,
                    timeout: float = 5.0) -> str:
    event = {"type": "say", "room": room, "text": text, "ref": ref}
    if echo is not None:
        event["echo"] = echo
    await client.send(event)
    answer = await ack_or_error(client, ref, timeout)
    assert answer["type"] == "ack", f"{client.name}: say {text!r} not acknowledged: {answer}"
    assert isinstance(answer.get("id"), str) and h.MESSAGE_ID.match(answer["id"]), answer
    return answer["id"]


def latest_presence(client: WSClient, room: str = LOBBY) -> Optional[int]:
    counts = [e.get("count") for e in client.events if e.get("type") == "presence" and e.get("room") == room]
    return counts[-1] if counts else None


async def wait_presence(clients: Iterable[WSClient], count: int, room: str = LOBBY, timeout: float = 5.0,
                        what: str = "") -> float:
    """Waits until the newest `presence` of `room` on every client says `count`.
    Returns the seconds it took."""
    clients = list(clients)
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if all(latest_presence(c, room) == count for c in clients):
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            report = {c.name: [e.get("count") for e in c.events if e.get("type") == "presence" and e.get("room") == room]
                      for c in clients}
            raise AssertionError(f"{what}presence of {room!r} not {count} on every client within {timeout}s; "
                                 f"presence counts seen per client: {report}")
        await asyncio.sleep(0.05)


async def wait_messages(clients: Iterable[WSClient], ids: Iterable[str], type_: str = "message",
                        room: Optional[str] = LOBBY, timeout: float = 10.0, what: str = "") -> None:
    """Waits until every client has received an event of `type_` for each id."""
    clients, wanted = list(clients), set(ids)
    deadline = time.monotonic() + timeout
    while True:
        missing = {c.name: sorted(wanted - set(ids_of(chat_of(c, type_, room)))) for c in clients}
        missing = {k: v for k, v in missing.items() if v}
        if not missing:
            return
        if time.monotonic() >= deadline:
            texts = {e.get("id"): e.get("text") for c in clients for e in chat_of(c, type_, room)}
            detail = {k: [(i, texts.get(i, "?")) for i in v] for k, v in missing.items()}
            order = {c.name: [(e.get("id"), e.get("text")) for e in chat_of(c, type_, room)][-12:] for c in clients}
            raise AssertionError(f"{what}: {type_} ids never delivered within {timeout}s: {detail}; "
                                 f"last {type_}s per client in arrival order: {order}")
        await asyncio.sleep(0.05)


def assert_exactly_once(client: WSClient, ids: Iterable[str], type_: str = "message", room: Optional[str] = LOBBY,
                        allowed_extra: Iterable[str] = ()) -> None:
    """`client` received every id exactly once, and no other id of that type (besides
    `allowed_extra`)."""
    got = ids_of(chat_of(client, type_, room))
    wanted = set(ids)
    dups = {i: n for i, n in got.items() if n > 1}
    missing = wanted - set(got)
    extra = set(got) - wanted - set(allowed_extra)
    assert not dups and not missing and not extra, (
        f"{client.name}: {type_} exactly once per id violated: duplicates {dups}, missing {sorted(missing)}, "
        f"unexpected {sorted(extra)}; texts received: {[(e.get('id'), e.get('text')) for e in chat_of(client, type_, room)]}")


def cluster_nodes(node: h.SwitchboardNode) -> dict[str, dict]:
    r = http_get(node.url + "/cluster")
    assert r.status_code == 200, f"GET /cluster on {node.node_id}: {r.status_code} {r.text}"
    body = r.json()
    nodes = body.get("nodes") if isinstance(body, dict) else body
    assert isinstance(nodes, list), f"/cluster on {node.node_id}: no node list: {body}"
    out = {}
    for entry in nodes:
        assert isinstance(entry, dict) and isinstance(entry.get("id"), str), f"/cluster entry {entry!r}"
        out[entry["id"]] = entry
    return out


def ws_connections(entry: dict) -> Optional[int]:
    per_transport = entry.get("connections")
    if not isinstance(per_transport, dict):
        return None
    return per_transport.get("websocket", 0)


async def wait_cluster(nodes: list[h.SwitchboardNode], expected_ws: dict[str, int], timeout: float = 15.0) -> None:
    """Waits until `/cluster` on every node lists exactly the nodes of `expected_ws`
    with those WebSocket connection counts."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while True:
        ok = True
        for n in nodes:
            listing = await asyncio.to_thread(cluster_nodes, n)
            last[n.node_id] = {k: v.get("connections") for k, v in listing.items()}
            if set(listing) != set(expected_ws) or any(ws_connections(listing[k]) != v for k, v in expected_ws.items()):
                ok = False
        if ok:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"/cluster never showed websocket connections {expected_ws} on every node within "
                                 f"{timeout}s; last answers (per asking node: id → connections): {last}")
        await asyncio.sleep(0.25)


async def refused_upgrade(node: h.SwitchboardNode, token: str, rooms: Optional[list[str]] = None):
    """Opens a WebSocket that the server must refuse; returns the HTTP response."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(h.ws_address(node.ws_url, token, rooms), proxy=None, open_timeout=10):
            pass
    return info.value.response


def login_after_lapse(redis: h.RedisServer, nickname: str, node: h.SwitchboardNode, timeout: float = 40.0) -> dict:
    """Logs `nickname` in on `node` as a new session although an older session's token
    for it exists, as if that session had lapsed: deletes its claim (ARCHITECTURE.md §3:
    `sb:nick:{nickname}`) — or, if the key is named otherwise, waits for the claim to
    lapse by itself (docs/protocol.md: 20 s after login)."""
    redis.command("DEL", f"sb:nick:{nickname}")
    deadline = time.monotonic() + timeout
    while True:
        r = login_response(node.url, nickname)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 409, f"login {nickname}: {r.status_code} {r.text}"
        assert time.monotonic() < deadline, f"the claim of {nickname} never lapsed"
        time.sleep(0.5)


class RedisLink:
    """A TCP proxy between one node and Redis, to cut that node off (a partition that
    the other nodes do not see) and to add latency to its command connection.

    Threads, not asyncio, so that it runs whatever the test's event loop does.
    `partition()` drops every connection and refuses new ones until `heal()`.
    `command_latency` (s) delays the node→Redis bytes of every connection that has not
    sent SUBSCRIBE/PSUBSCRIBE (so: the command connection), in order — pure latency, not
    a throughput limit."""

    def __init__(self, redis_port: int) -> None:
        import socket
        import threading
        self._socket, self._threading = socket, threading
        self.redis_port = redis_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.command_latency = 0.0
        self.stopped = False
        self.lock = threading.Lock()
        self.pairs: list[tuple] = []
        self.accepted = 0
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if self.blocked or self.stopped:
                client.close()
                continue
            try:
                upstream = self._socket.create_connection(("127.0.0.1", self.redis_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            state = {"subscriber": False}
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            self._threading.Thread(target=self._to_redis, args=(client, upstream, state), daemon=True).start()
            self._threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _close(self, *socks) -> None:
        for s in socks:
            try:
                s.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src, dst) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _to_redis(self, src, dst, state) -> None:
        import queue
        q: "queue.Queue" = queue.Queue()

        def sender() -> None:
            try:
                while True:
                    item = q.get()
                    if item is None:
                        break
                    due, data = item
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    dst.sendall(data)
            except OSError:
                pass
            self._close(src, dst)

        self._threading.Thread(target=sender, daemon=True).start()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if b"SUBSCRIBE" in data.upper():
                    state["subscriber"] = True
                latency = 0.0 if state["subscriber"] else self.command_latency
                q.put((time.monotonic() + latency, data))
        except OSError:
            pass
        q.put(None)

    def partition(self) -> None:
        self.blocked = True
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            self._close(client, upstream)

    def heal(self) -> None:
        self.blocked = False

    def stop(self) -> None:
        self.stopped = True
        self.partition()
        self._close(self.listener)


# --------------------------------------------------------------------------------------
# 1. Room broadcast across nodes
# --------------------------------------------------------------------------------------


def test_say_crosses_nodes_exactly_once_and_echo_false_holds_cluster_wide(cluster):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            acred = login(n1.url, h.unique_name("alice"))
            alice1, w1 = await c.session(n1, acred["token"], rooms=[LOBBY], name="alice@1")
            alice2, w2 = await c.session(n2, acred["token"], rooms=[LOBBY], name="alice@2")  # her other tab
            bob, wb, _ = await c.user(n2, h.unique_name("bob"), rooms=[LOBBY])
            carol, wc, _ = await c.user(n3, h.unique_name("carol"), rooms=[LOBBY])
            for welcome, node in ((w1, n1), (w2, n2), (wb, n2), (wc, n3)):
                assert welcome["node"] == node.node_id, welcome
            everyone = [alice1, alice2, bob, carol]

            # echo true (explicit): every connection of the room, on every node, once.
            mid = await say_acked(alice1, "hello cluster", "e1", echo=True)
            await wait_messages(everyone, [mid], what="say echo:true")
            for client in everyone:
                msg = [e for e in chat_of(client) if e["id"] == mid]
                assert msg[0]["text"] == "hello cluster" and msg[0]["room"] == LOBBY, msg
                assert msg[0]["from"]["nickname"] == acred["nickname"], msg
                assert isinstance(msg[0].get("ts"), int), msg

            # A burst of 10: in order, each exactly once, on every node.
            burst = [await say_acked(alice1, f"burst-{i}", f"b{i}") for i in range(10)]
            assert [h.id_key(i) for i in burst] == sorted(h.id_key(i) for i in burst) and len(set(burst)) == 10, burst
            await wait_messages(everyone, burst, what="burst")
            for client in (bob, carol, alice2):
                texts = [e["text"] for e in chat_of(client) if e["id"] in burst]
                assert texts == [f"burst-{i}" for i in range(10)], f"{client.name}: order {texts}"

            # echo false: bob (node 2) and carol (node 3) get it; no connection of alice
            # does (not the sender's, not her tab on node 2).
            quiet = await say_acked(alice1, "no echo please", "q1", echo=False)
            await wait_messages([bob, carol], [quiet], what="say echo:false")
            # A later echo:true message reaching alice's tabs proves the quiet one had
            # time to arrive there too.
            marker = await say_acked(carol, "marker from node 3", "m1")
            await wait_messages(everyone, [marker], what="marker")
            await asyncio.sleep(0.5)
            for client in (alice1, alice2):
                leaked = [e for e in chat_of(client) if e["id"] == quiet or e.get("text") == "no echo please"]
                assert not leaked, f"{client.name}: echo:false message delivered to the sender's connection: {leaked}"

            # Exactly once per id, everywhere.
            all_ids = [mid, *burst, marker]
            for client in (alice1, alice2):
                assert_exactly_once(client, all_ids)
            for client in (bob, carol):
                assert_exactly_once(client, all_ids + [quiet])

    run(body(), 90)


# --------------------------------------------------------------------------------------
# 2. Whisper across nodes
# --------------------------------------------------------------------------------------


def test_whisper_reaches_addressee_on_other_node_and_senders_other_tab_only(cluster):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            acred = login(n1.url, h.unique_name("alice"))
            alice1, _ = await c.session(n1, acred["token"], rooms=[LOBBY], name="alice@1")
            alice2, _ = await c.session(n2, acred["token"], rooms=[LOBBY], name="alice@2")
            bcred = login(n3.url, h.unique_name("bob"))
            bob3, _ = await c.session(n3, bcred["token"], rooms=[LOBBY], name="bob@3")
            bob1, _ = await c.session(n1, bcred["token"], name="bob@1")  # bob's second tab, other node
            carol, _, _ = await c.user(n2, h.unique_name("carol"), rooms=[LOBBY])  # bystander on node 2
            dave, _, _ = await c.user(n1, h.unique_name("dave"), rooms=[LOBBY])  # bystander on node 1
            erin, _, _ = await c.user(n3, h.unique_name("erin"), rooms=[LOBBY])  # bystander on node 3

            await alice1.send({"type": "whisper", "to": bcred["nickname"], "text": "psst, bob", "ref": "w1"})
            ack = await ack_or_error(alice1, "w1")
            assert ack["type"] == "ack", f"whisper across nodes not acknowledged: {ack}"

            got_bob3 = await bob3.wait_type("private", text="psst, bob", timeout=5)
            got_bob1 = await bob1.wait_type("private", text="psst, bob", timeout=5)
            got_alice2 = await alice2.wait_type("private", text="psst, bob", timeout=5)
            for e in (got_bob3, got_bob1, got_alice2):
                assert e["from"]["nickname"] == acred["nickname"], e
                assert e["to"] == bcred["nickname"], e
                assert h.MESSAGE_ID.match(e["id"]), e
                assert isinstance(e.get("ts"), int), e
            assert got_bob3["id"] == got_bob1["id"], (got_bob3, got_bob1)
            # The sender's copy lives in the sender's own private stream: the ack's id.
            assert got_alice2["id"] == ack["id"], (ack, got_alice2)

            # Settle, then: exactly once where due, nowhere else, not back to the sending tab.
            await asyncio.sleep(1.0)
            for client in (bob3, bob1, alice2):
                n = len(client.seen(is_type("private", text="psst, bob")))
                assert n == 1, f"{client.name}: whisper delivered {n} times: {client.seen(is_type('private'))}"
            for client in (alice1, carol, dave, erin):
                leaked = client.seen(lambda e: e.get("type") in ("private", "message") or "psst" in str(e))
                assert not leaked, f"{client.name}: got someone else's whisper: {leaked}"

            # And back: bob on node 3 answers alice; both her tabs (nodes 1, 2) get it, bob's other tab too.
            await bob3.send({"type": "whisper", "to": acred["nickname"], "text": "hi alice", "ref": "w2"})
            assert (await ack_or_error(bob3, "w2"))["type"] == "ack"
            for client in (alice1, alice2, bob1):
                await client.wait_type("private", text="hi alice", timeout=5)
            await asyncio.sleep(0.5)
            for client in (carol, dave, erin, bob3):
                assert not client.seen(is_type("private", text="hi alice")), f"{client.name}: got the reply"

    run(body(), 60)


# --------------------------------------------------------------------------------------
# 3. nickname_taken across nodes
# --------------------------------------------------------------------------------------


def test_nickname_taken_across_nodes(cluster, redis_server):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            nick = h.unique_name("holder")
            # An older session's token for the same nickname (that session lapses).
            stale = login(n2.url, nick)
            holder = login_after_lapse(redis_server, nick, n1)
            assert holder["token"] != stale["token"]
            assert holder["node"] == n1.node_id
            await c.session(n1, holder["token"], rooms=[LOBBY], name="holder@1")

            for node in (n2, n3, n1):
                r = login_response(node.url, nick, "2.jpg")
                assert r.status_code == 409, f"login {nick} on {node.node_id} while held on edge-1: {r.status_code} {r.text}"
                assert r.json().get("error") == "nickname_taken", r.text

            # A WebSocket with another session's token for the held nickname: 409 JSON,
            # on the holder's node and on the others.
            for node in (n2, n3, n1):
                response = await refused_upgrade(node, stale["token"], [LOBBY])
                assert response.status_code == 409, f"{node.node_id}: upgrade with a stale session's token: {response.status_code}"
                ctype = response.headers.get("content-type", "")
                assert ctype.startswith("application/json"), f"{node.node_id}: content-type {ctype!r}"
                assert json.loads(response.body).get("error") == "nickname_taken", response.body

            # The holder's own token still works on any other node (a second tab).
            await c.session(n3, holder["token"], name="holder@3")

    run(body(), 120)


# --------------------------------------------------------------------------------------
# 4. Cluster-wide counts, /cluster
# --------------------------------------------------------------------------------------


def test_presence_counts_are_cluster_wide_and_cluster_endpoint_lists_nodes(cluster):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            a, _, acred = await c.user(n1, h.unique_name("a"))
            b, _, bcred = await c.user(n2, h.unique_name("b"))
            cc, _, ccred = await c.user(n3, h.unique_name("c"))
            users = [a, b, cc]

            for i, client in enumerate(users):
                await client.send({"type": "join", "room": LOBBY, "ref": f"j{i}"})
                answer = await ack_or_error(client, f"j{i}")
                assert answer["type"] == "ack", answer
                await wait_presence(users[: i + 1], i + 1, timeout=5, what=f"after {i + 1} joined: ")
            await asyncio.sleep(0.5)
            assert [latest_presence(u) for u in users] == [3, 3, 3]

            # Cross-node membership events.
            await a.wait_type("joined", room=LOBBY, nickname=bcred["nickname"])
            await a.wait_type("joined", room=LOBBY, nickname=ccred["nickname"])
            await b.wait_type("joined", room=LOBBY, nickname=ccred["nickname"])

            # A second tab of a (on node 3) does not change the count of distinct nicknames.
            a3, _ = await c.session(n3, acred["token"], rooms=[LOBBY], name="a@3")
            await wait_presence([a3], 3, timeout=5, what="a's second tab: ")
            await asyncio.sleep(1.0)
            assert [latest_presence(u) for u in users] == [3, 3, 3], "a second tab of a present nickname changed the count"

            # /cluster on every node: the three nodes, with their WebSocket connection counts.
            await wait_cluster(cluster, {"edge-1": 1, "edge-2": 1, "edge-3": 2})

            # c (node 3) leaves: everyone else sees 2 and a `left`.
            await cc.send({"type": "leave", "room": LOBBY, "ref": "l1"})
            assert (await ack_or_error(cc, "l1"))["type"] == "ack"
            await wait_presence([a, b, a3], 2, timeout=5, what="after c left: ")
            await a.wait_type("left", room=LOBBY, nickname=ccred["nickname"])
            await b.wait_type("left", room=LOBBY, nickname=ccred["nickname"])

            # b (node 2) disconnects: 1 left (a, with two tabs).
            await b.close()
            await wait_presence([a, a3], 1, timeout=5, what="after b disconnected: ")

            # a closes one tab: still present through the other, count stays 1.
            await a3.close()
            await asyncio.sleep(1.0)
            assert latest_presence(a) == 1, [e for e in a.events if e.get("type") == "presence"]
            await wait_cluster(cluster, {"edge-1": 1, "edge-2": 0, "edge-3": 1})

    run(body(), 90)


# --------------------------------------------------------------------------------------
# 5. Redis outage
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["redis-with-aof", "redis-restarts-empty"])
def test_redis_outage_nodes_survive_and_nothing_acked_is_lost(redis_factory, node_factory, persistent):
    """SIGKILL redis-server while clients stay connected on all three nodes, restart it
    on the same port. With `redis-with-aof` the restarted Redis still has its data (a
    real deployment), so a client resuming from its cursor must get every acked message,
    including those acked before the outage; with `redis-restarts-empty` live clients
    must still get everything acked exactly once. Right after the restart each node's
    client retries a `say` until its node accepts it, without waiting for the other
    nodes: a message one node accepts before another has re-subscribed must still reach
    the other's clients (from history), once."""
    extra = ["--appendonly", "yes", "--appendfsync", "always", "--dir", tempfile.mkdtemp(prefix="sb-redis-")] if persistent else []
    redis = redis_factory(extra_args=extra)
    n1, n2, n3 = nodes = start_cluster(redis, node_factory)

    async def body():
        async with Clients() as c:
            a, _, acred = await c.user(n1, h.unique_name("a"), rooms=[LOBBY])
            b, _, bcred = await c.user(n2, h.unique_name("b"), rooms=[LOBBY])
            cc, _, ccred = await c.user(n3, h.unique_name("c"), rooms=[LOBBY])
            dcred = login(n2.url, h.unique_name("d"))
            d, dwelcome = await c.session(n2, dcred["token"], rooms=[LOBBY], name="d")
            live = [a, b, cc]

            # Before: 2 messages from each node, seen by everyone (d too).
            before = []
            for client in live:
                for i in range(2):
                    before.append(await say_acked(client, f"before-{client.name}-{i}", f"pre-{i}"))
            await wait_messages(live + [d], before, what="before the outage")
            cursor = CursorTracker(dwelcome["cursor"])
            for e in d.events:
                cursor.observe(e)
            d_cursor = str(cursor)
            await d.close()
            # d is away: 3 more messages acked before the outage.
            missed = [await say_acked(client, f"missed-{client.name}", "missed") for client in live]
            await wait_messages(live, missed, what="missed by d")

            # --- outage ---
            redis.kill()
            killed_at = time.monotonic()
            for n in nodes:
                deadline = killed_at + 5
                while True:
                    r = await asyncio.to_thread(http_get, n.url + "/readyz")
                    if r.status_code == 503:
                        break
                    assert time.monotonic() < deadline, f"{n.node_id}: /readyz still {r.status_code} {r.text} 5 s into the outage"
                    await asyncio.sleep(0.1)
                assert (await asyncio.to_thread(http_get, n.url + "/healthz")).status_code == 200, n.node_id

            refused_refs: dict[str, set] = {x.name: set() for x in live}  # per connection
            refused_texts: set[str] = set()
            for client in live:
                await client.ping()
                ref = f"outage-{client.name}"
                await client.send({"type": "say", "room": LOBBY, "text": f"during-outage-{client.name}", "ref": ref})
                answer = await ack_or_error(client, ref, timeout=10)
                assert answer["type"] == "error" and answer.get("code") == "unavailable", (
                    f"{client.name}: say during the Redis outage answered {answer} (expected error unavailable)")
                refused_refs[client.name].add(ref)
                refused_texts.add(f"during-outage-{client.name}")
            await a.send({"type": "whisper", "to": ccred["nickname"], "text": "whisper-during-outage", "ref": "wo"})
            answer = await ack_or_error(a, "wo", timeout=10)
            assert answer["type"] == "error" and answer.get("code") == "unavailable", f"whisper during outage: {answer}"
            await asyncio.sleep(3.0)  # a few reconnect attempts (backoff) against a dead Redis
            for n in nodes:
                assert n.running, f"{n.node_id} died during the Redis outage (code {n.returncode}):\n{n.stderr()}"
            for client in live:
                assert not client.closed, f"{client.name} was disconnected during the outage ({client.close_code})"

            # --- Redis back on the same port ---
            redis.start()
            # Each node's client retries a `say` until its node accepts it — without
            # waiting for the other nodes to be back: a message accepted before another
            # node has re-subscribed must reach that node's clients from history.
            async def first_accepted(client: WSClient) -> str:
                deadline = time.monotonic() + 30
                for attempt in range(1000):
                    ref = f"race-{attempt}"
                    text = f"race-{client.name}-{attempt}"
                    await client.send({"type": "say", "room": LOBBY, "text": text, "ref": ref})
                    answer = await ack_or_error(client, ref, timeout=10)
                    if answer["type"] == "ack":
                        return answer["id"]
                    refused_refs[client.name].add(ref)
                    refused_texts.add(text)
                    assert answer.get("code") == "unavailable", f"{client.name}: {answer}"
                    assert time.monotonic() < deadline, f"{client.name}: still unavailable 30 s after Redis came back"
                    await asyncio.sleep(0.1)
                raise AssertionError("unreachable")
            racing = list(await asyncio.gather(*(first_accepted(x) for x in live)))
            for n in nodes:
                await asyncio.to_thread(n.wait_ready, 30)
            back_after = time.monotonic() - killed_at

            after = []
            for client in live:
                for i in range(2):
                    after.append(await say_acked(client, f"after-{client.name}-{i}", f"post-{i}"))
            await a.send({"type": "whisper", "to": ccred["nickname"], "text": "whisper-after-outage", "ref": "wa"})
            wanswer = await ack_or_error(a, "wa", timeout=5)
            assert wanswer["type"] == "ack", f"whisper across nodes after the outage: {wanswer}"
            await cc.wait_type("private", text="whisper-after-outage", timeout=10)

            acked = before + missed + racing + after
            await wait_messages(live, acked, timeout=15, what="after the outage")
            await asyncio.sleep(1.0)
            for client in live:
                assert_exactly_once(client, acked)
                delivered_refused = client.seen(lambda e: e.get("text") in refused_texts)
                assert not delivered_refused, f"{client.name}: messages refused as unavailable were delivered: {delivered_refused}"
                late = client.seen(lambda e: e.get("type") == "ack" and e.get("ref") in refused_refs[client.name] | {"wo"})
                assert not late, f"{client.name}: events refused as unavailable were acked later: {late}"
                assert not client.closed, f"{client.name} disconnected ({client.close_code} {client.close_reason})"
            assert len(cc.seen(is_type("private", text="whisper-after-outage"))) == 1
            assert not cc.seen(is_type("private", text="whisper-during-outage"))

            # d resumes from its cursor on another node.
            d2, _ = await c.session(n3, dcred["token"], rooms=[LOBBY], cursor=d_cursor, name="d-resumed")
            due = (missed if persistent else []) + racing + after
            await wait_messages([d2], due, timeout=10, what=f"d resuming from {d_cursor}")
            await asyncio.sleep(1.0)
            assert_exactly_once(d2, due, allowed_extra=[] if persistent else missed)
            assert not set(ids_of(chat_of(d2))) & set(before), "resume replayed messages before the cursor"
            assert not d2.seen(lambda e: e.get("text") in refused_texts), "resume delivered refused messages"
            print(f"outage: Redis back and every node ready {back_after:.1f}s after the kill; "
                  f"{len(refused_texts) - len(live)} racing says refused before their node was back")

    run(body(), 150)
    for n in nodes:
        assert n.running, f"{n.node_id} died (code {n.returncode}):\n{n.stderr()}"


# --------------------------------------------------------------------------------------
# 6. SIGKILL a node
# --------------------------------------------------------------------------------------


def test_sigkilled_nodes_users_leave_counts_within_15s(cluster):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            a, _, _ = await c.user(n1, h.unique_name("a"), rooms=[LOBBY])
            b, _, _ = await c.user(n2, h.unique_name("b"), rooms=[LOBBY])
            c1, _, _ = await c.user(n3, h.unique_name("c"), rooms=[LOBBY])
            d, _, _ = await c.user(n3, h.unique_name("d"), rooms=[LOBBY])
            # A nickname with tabs on node 3 and node 2: stays present through node 2.
            ecred = login(n3.url, h.unique_name("e"))
            e3, _ = await c.session(n3, ecred["token"], rooms=[LOBBY], name="e@3")
            e2, _ = await c.session(n2, ecred["token"], rooms=[LOBBY], name="e@2")
            survivors = [a, b, e2]
            await wait_presence(survivors + [c1, d, e3], 5, timeout=5, what="before the kill: ")
            await asyncio.sleep(0.5)

            n3.kill()
            took = await wait_presence(survivors, 3, timeout=15, what="after SIGKILL of edge-3: ")
            print(f"counts correct {took:.1f}s after SIGKILL")
            for client in (c1, d, e3):
                await client.wait_closed(5)
            # And they stay correct (no flapping back to the dead node's users).
            await asyncio.sleep(4.0)
            assert [latest_presence(x) for x in survivors] == [3, 3, 3], \
                {x.name: [e.get("count") for e in x.events if e.get("type") == "presence"] for x in survivors}
            # The survivors still talk to each other across nodes.
            mid = await say_acked(a, "still here", "s1")
            await wait_messages(survivors, [mid])
            assert n1.running and n2.running

    run(body(), 60)


# --------------------------------------------------------------------------------------
# 7. user_offline only for unclaimed nicknames
# --------------------------------------------------------------------------------------


def test_whisper_to_claimed_but_unconnected_nickname_is_delivered_user_offline_only_if_unclaimed(cluster):
    n1, n2, n3 = cluster

    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(n1, h.unique_name("alice"))
            # bob logged in on node 3, no WebSocket yet: his nickname is claimed.
            bcred = login(n3.url, h.unique_name("bob"))
            await alice.send({"type": "whisper", "to": bcred["nickname"], "text": "are you there?", "ref": "w1"})
            answer = await ack_or_error(alice, "w1")
            assert answer["type"] == "ack", f"whisper to a claimed (logged-in, not yet connected) nickname: {answer}"

            # A never-seen nickname: user_offline, no ack.
            ghost = h.unique_name("ghost")
            await alice.send({"type": "whisper", "to": ghost, "text": "hello?", "ref": "w2"})
            answer = await ack_or_error(alice, "w2")
            assert answer["type"] == "error" and answer.get("code") == "user_offline", answer

            # Bob connects on node 3 from the start of his private stream: the whisper is there, once.
            bob, _ = await c.session(n3, bcred["token"], cursor="u@0-0", name="bob@3")
            got = await bob.wait_type("private", text="are you there?", timeout=5)
            assert got["to"] == bcred["nickname"] and got["from"]["nickname"] == alice.name, got
            await asyncio.sleep(0.5)
            assert len(bob.seen(is_type("private"))) == 1, bob.seen(is_type("private"))

            # Now connected: live delivery across nodes as well.
            await alice.send({"type": "whisper", "to": bcred["nickname"], "text": "live now", "ref": "w3"})
            assert (await ack_or_error(alice, "w3"))["type"] == "ack"
            await bob.wait_type("private", text="live now", timeout=5)
            # The ghost is still offline (nothing was created by the failed whisper).
            await alice.send({"type": "whisper", "to": ghost, "text": "again?", "ref": "w4"})
            answer = await ack_or_error(alice, "w4")
            assert answer["type"] == "error" and answer.get("code") == "user_offline", answer

    run(body(), 60)


# --------------------------------------------------------------------------------------
# 8. One node cut off from Redis (partition), healed while the room keeps talking
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [0.0, 0.5], ids=["fast-commands", "slow-commands"])
def test_node_partitioned_from_redis_gets_what_others_accepted_meanwhile(redis_server, node_factory, latency):
    """edge-2 reaches Redis through a proxy; edge-1 and edge-3 directly. edge-2 is cut off
    while edge-1 accepts messages; then it heals while edge-3 keeps talking — with
    `slow-commands`, under 0.5 s latency on edge-2's command connection only (its history
    read is slow, live pub/sub is not). Its
    client must still get every acked message exactly once (ARCHITECTURE.md §2, §4: fill
    the gap from history, de-duplicate by id — a live message that overtakes the history
    read must not make the gap's older messages look like duplicates)."""
    link = RedisLink(redis_server.port)
    try:
        n1 = node_factory(node_id="edge-1", redis=redis_server.url)
        n2 = node_factory(node_id="edge-2", redis=link.url)
        n3 = node_factory(node_id="edge-3", redis=redis_server.url)
        for n in (n1, n2, n3):
            n.wait_ready(30)

        async def body():
            async with Clients() as c:
                a, _, _ = await c.user(n1, h.unique_name("a"), rooms=[LOBBY])
                b, _, _ = await c.user(n2, h.unique_name("b"), rooms=[LOBBY])
                cc, _, _ = await c.user(n3, h.unique_name("c"), rooms=[LOBBY])
                everyone = [a, b, cc]
                warm = await say_acked(a, "warm-up", "w0")
                await wait_messages(everyone, [warm], what="warm-up")

                link.partition()
                deadline = time.monotonic() + 10
                while (await asyncio.to_thread(http_get, n2.url + "/readyz")).status_code != 503:
                    assert time.monotonic() < deadline, "edge-2 still ready 10 s after losing Redis"
                    await asyncio.sleep(0.1)
                for n in (n1, n3):
                    assert (await asyncio.to_thread(http_get, n.url + "/readyz")).status_code == 200, n.node_id

                gap = [await say_acked(a, f"gap-{i}", f"g{i}") for i in range(3)]
                await wait_messages([a, cc], gap, what="gap, on the connected nodes")
                await b.ping()  # b's connection is alive, it just cannot get room traffic

                link.command_latency = latency
                link.heal()
                live: list[str] = []
                healed_at = None
                stop_at = time.monotonic() + 30
                while time.monotonic() < stop_at:
                    live.append(await say_acked(cc, f"live-{len(live)}", f"l{len(live)}"))
                    if healed_at is None and (await asyncio.to_thread(http_get, n2.url + "/readyz")).status_code == 200:
                        healed_at = time.monotonic()
                    if healed_at is not None and time.monotonic() > healed_at + 3:
                        break
                    await asyncio.sleep(0.15)
                assert healed_at is not None, "edge-2 never became ready again after the partition healed"

                acked = [warm, *gap, *live]
                await wait_messages(everyone, acked, timeout=15, what="after the partition healed")
                await asyncio.sleep(1.0)
                for client in everyone:
                    assert_exactly_once(client, acked)

        run(body(), 90)
    finally:
        link.stop()
