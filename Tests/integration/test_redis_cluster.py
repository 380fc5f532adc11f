"""Redis Cluster with sharded pub/sub (issue 15, part A), end to end with real processes:
six `redis-server --cluster-enabled yes` (three masters, three replicas, joined by
`redis-cli --cluster create`, cluster-node-timeout 1000 ms) and three `switchboard serve
--redis redis+cluster://… --redis-min-replicas 1` nodes, shared by the module.

* a room broadcast crosses nodes exactly once per id; a whisper between two partitions;
  `nickname_taken` and presence across nodes;
* rooms spread over the masters: `PUBSUB SHARDCHANNELS` non-empty on more than one;
* Socket.IO on any node (issue 16) over the cluster: an Engine.IO polling session made on
  one edge is polled, POSTed to and upgraded through the others — forwarded over each
  node's sharded channel `sb:to-node:{id}`, which sits on the master owning its slot;
* a partition's slot migrated (CLUSTER SETSLOT IMPORTING/MIGRATING + MIGRATE) under live
  traffic from many writers: nothing acked is lost or duplicated, the subscriptions follow
  the slot to its new master;
* the master of a busy room's partition SIGKILLed under live traffic: traffic resumes after
  the replica's promotion, nothing acked is lost, no node crashes.

The tests run in file order on one cluster; the failover test runs last.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
from websockets.asyncio.client import connect as ws_connect

import switchboard_harness as h
from switchboard_harness import Clients, WSClient, is_type, login, login_response, run
from test_cluster import ack_or_error, assert_exactly_once, chat_of, ids_of, say_acked, wait_messages, wait_presence
from test_socketio_any_node import Alternating, event_named


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid too."""
    for _ in range(200):
        port = h.free_port()
        if port + 10000 <= 65535:
            return port
    raise RuntimeError("no free port below 55536")


class RedisCluster:
    """Six cluster-enabled redis-servers (3 masters + 3 replicas) on loopback."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sb-cluster-")
        self.servers: list[h.RedisServer] = []
        for _ in range(6):
            port = cluster_port()
            self.servers.append(h.RedisServer(port=port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", f"{self.dir}/nodes-{port}.conf",
                "--cluster-node-timeout", "1000", "--dir", self.dir]))

    def start(self) -> "RedisCluster":
        for server in self.servers:
            server.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok()
        self.wait_replicated()
        return self

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Every master has a replica in sync (`WAIT 1` can succeed)."""
        deadline = time.monotonic() + timeout
        while True:
            masters = self.masters()
            linked = [m for m in masters if "connected_slaves:1" in self.server(m["port"]).command("INFO", "replication")]
            replicas = [n for n in self.nodes() if "slave" in n["flags"] and "fail" not in n["flags"]]
            synced = [r for r in replicas if "master_link_status:up" in self.server(r["port"]).command("INFO", "replication")]
            if len(linked) == len(masters) == 3 and len(synced) == 3:
                return
            assert time.monotonic() < deadline, f"replicas not in sync after {timeout}s: {self.nodes()}"
            time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            server.kill()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2])

    def live(self) -> list[h.RedisServer]:
        return [s for s in self.servers if s.running]

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            infos = []
            for s in self.live():
                try:
                    infos.append(s.command("CLUSTER", "INFO"))
                except OSError:
                    infos.append("")
            if all(isinstance(i, str) and "cluster_state:ok" in i for i in infos):
                return
            assert time.monotonic() < deadline, f"cluster not ok after {timeout}s: {infos}"
            time.sleep(0.1)

    def nodes(self) -> list[dict]:
        """CLUSTER NODES as seen by a live server: id, port, flags, slot ranges."""
        text = self.live()[0].command("CLUSTER", "NODES")
        result = []
        for line in text.strip().splitlines():
            parts = line.split()
            ranges = []
            for item in parts[8:]:
                if item.startswith("["):
                    continue
                lo, _, hi = item.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            result.append({"id": parts[0], "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                           "flags": parts[2].split(","), "ranges": ranges})
        return result

    def server(self, port: int) -> h.RedisServer:
        return next(s for s in self.servers if s.port == port)

    def owner(self, slot: int) -> dict:
        for node in self.nodes():
            if "master" in node["flags"] and "fail" not in node["flags"] and any(lo <= slot <= hi for lo, hi in node["ranges"]):
                return node
        raise AssertionError(f"no master owns slot {slot}: {self.nodes()}")

    def masters(self) -> list[dict]:
        return [n for n in self.nodes() if "master" in n["flags"] and "fail" not in n["flags"] and n["ranges"]]

    def history_key(self, room: str) -> str:
        """The history key of `room`, found on whichever master holds it."""
        for master in self.masters():
            keys = scan(self.server(master["port"]), f"*hist:room:{room}")
            if keys:
                return keys[0]
        raise AssertionError(f"no history key for room {room!r} on any master")


def scan(server: h.RedisServer, pattern: str) -> list[str]:
    cursor, found = "0", []
    while True:
        cursor, keys = server.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        found += keys
        if cursor == "0":
            return found


@pytest.fixture(scope="module")
def redis_cluster(redis_server_binary) -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def edges(redis_cluster: RedisCluster, switchboard_binary) -> Iterator[list[h.SwitchboardNode]]:
    nodes = [h.SwitchboardNode(node_id=f"edge-{i}", redis=redis_cluster.url, binary=switchboard_binary,
                               extra_args=["--redis-min-replicas", "1", "--rate", "2000", "--burst", "2000",
                                           "--history", "50000"])  # the failover test reads back every acked id
             for i in (1, 2, 3)]
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready(30)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture(autouse=True)
def _edges_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "edges" in request.fixturenames:
        for n in request.getfixturevalue("edges"):
            assert n.running, f"{n.node_id} died (code {n.returncode}):\n{n.stderr()}"


# --------------------------------------------------------------------------------------


def test_malformed_cluster_url_exits_with_one_line(switchboard_binary):
    for url in ("redis+cluster://", "redis+cluster://127.0.0.1:7000,", "redis+cluster://:secret@h:1,h:x",
                "redis+cluster://h:1/0"):
        proc = subprocess.run([switchboard_binary, "serve", "--port", "0", "--redis", url],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0, (url, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and "Redis Cluster URL" in errors[0], (url, proc.stderr)
        assert "secret" not in proc.stderr, proc.stderr


def test_broadcast_whisper_nickname_taken_and_presence_across_nodes(edges):
    n1, n2, n3 = edges
    room = h.unique_room("lobby")

    async def body():
        async with Clients() as c:
            a, _, acred = await c.user(n1, h.unique_name("alice"), rooms=[room])
            b, _, bcred = await c.user(n2, h.unique_name("bob"), rooms=[room])
            cc, _, ccred = await c.user(n3, h.unique_name("carol"), rooms=[room])
            everyone = [a, b, cc]
            ids = [await say_acked(x, f"hi from {x.name}", f"s{i}", room=room) for i, x in enumerate(everyone)]
            burst = [await say_acked(a, f"burst-{i}", f"b{i}", room=room) for i in range(10)]
            await wait_messages(everyone, ids + burst, room=room, what="cluster broadcast")
            for client in everyone:
                assert_exactly_once(client, ids + burst, room=room)
                texts = [e["text"] for e in chat_of(client, room=room) if e["id"] in burst]
                assert texts == [f"burst-{i}" for i in range(10)], texts

            # Whispers both ways between nodes (the two users' streams sit in their own partitions).
            await a.send({"type": "whisper", "to": ccred["nickname"], "text": "psst", "ref": "w1"})
            ack = await ack_or_error(a, "w1")
            assert ack["type"] == "ack", ack
            got = await cc.wait_type("private", text="psst", timeout=5)
            assert got["from"]["nickname"] == acred["nickname"] and h.MESSAGE_ID.match(got["id"]), got
            assert got["id"] == ack["id"], "one id in both users' streams"
            await cc.send({"type": "whisper", "to": acred["nickname"], "text": "back", "ref": "w2"})
            assert (await ack_or_error(cc, "w2"))["type"] == "ack"
            await a.wait_type("private", text="back", timeout=5)
            await asyncio.sleep(0.5)
            assert not b.seen(is_type("private")), "a bystander got a whisper"

            # nickname_taken from every node while alice holds it.
            for node in edges:
                r = await asyncio.to_thread(login_response, node.url, acred["nickname"], "2.jpg")
                assert r.status_code == 409 and r.json().get("error") == "nickname_taken", (node.node_id, r.text)

            # Presence is cluster-wide.
            await wait_presence(everyone, 3, room=room, timeout=10)
            await b.close()
            await wait_presence([a, cc], 2, room=room, timeout=10, what="after bob left: ")

    run(body(), 90)


def test_rooms_spread_over_masters_with_sharded_channels(redis_cluster, edges):
    rooms = [h.unique_room(f"spread{i}") for i in range(16)]

    async def body():
        async with Clients() as c:
            client, _, _ = await c.user(edges[0], rooms=rooms)
            for i, room in enumerate(rooms):
                await say_acked(client, "x", f"r{i}", room=room)
            holders = {}
            for master in redis_cluster.masters():
                server = redis_cluster.server(master["port"])
                channels = server.command("PUBSUB", "SHARDCHANNELS", "*")
                assert not isinstance(channels, Exception), channels
                ours = [ch for ch in channels if any(ch.endswith(f":room:{r}") for r in rooms)]
                holders[master["port"]] = ours
                for channel in ours:
                    # A channel lives on the master owning its slot, in a partition's hash tag.
                    assert channel.startswith("sb:{") and "}:room:" in channel, channel
                    slot = server.command("CLUSTER", "KEYSLOT", channel)
                    assert any(lo <= slot <= hi for lo, hi in master["ranges"]), (channel, slot, master)
            assert sum(1 for v in holders.values() if v) >= 2, f"sharded channels on one master only: {holders}"
            assert sum(len(v) for v in holders.values()) == len(rooms), holders
            # Each room's history is in the same slot as its channel.
            for room in rooms[:4]:
                key = redis_cluster.history_key(room)
                tag = key[key.index("{"):key.index("}") + 1]
                assert any(tag in ch and ch.endswith(f":room:{room}") for v in holders.values() for ch in v), (key, holders)

    run(body(), 60)


def test_socketio_polling_forwarded_across_cluster_edges(redis_cluster, edges):
    """Issue 16 on redis+cluster://: a session made on edge-1 is used through edge-2 and
    edge-3 (every request to the next edge), then upgraded to WebSocket on an edge that
    does not hold it; each edge listens on its own sharded node channel."""
    # Every edge's node channel is an SSUBSCRIBE on the master owning its slot (the node
    # id is its hash tag), so forwarding needs no cluster-wide PUBLISH.
    for edge in edges:
        channel = f"sb:to-node:{{{edge.node_id}}}"
        slot = redis_cluster.live()[0].command("CLUSTER", "KEYSLOT", channel)
        assert slot == redis_cluster.live()[0].command("CLUSTER", "KEYSLOT", edge.node_id), (channel, slot)
        owner = redis_cluster.owner(slot)
        channels = redis_cluster.server(owner["port"]).command("PUBSUB", "SHARDCHANNELS", "sb:to-node:*")
        assert channel in channels, (channel, owner, channels)

    async def body() -> None:
        client = Alternating(edges)
        async with Clients() as natives:
            nickname = h.unique_name("sio")
            room = h.unique_room("sio")
            native, _, _ = await natives.user(edges[2], rooms=[room])
            owner = await client.handshake()  # edge-1
            assert owner.node_id == "edge-1"
            assert bytes.fromhex(client.sid.split(".")[1]).decode() == "edge-1", client.sid
            token = login(edges[1].url, nickname)["token"]
            assert (await client.post("40" + json.dumps({"token": token}))).text == "ok"  # edge-2
            await client.until(lambda p: p.startswith("40"))
            welcome = json.loads((await client.until(event_named("welcome")))[2:])[1]
            assert welcome["node"] == "edge-1" and welcome["nickname"] == nickname, welcome

            assert (await client.post('421["join",' + json.dumps(room) + "]")).text == "ok"
            await client.until(lambda p: p.startswith("431["))
            for i in range(9):  # three full rounds of the edges
                text = f"sio-{i}-{h.unique_name()}"
                posted = await client.post(f"42{10 + i}" + json.dumps(["chat", {"text": text, "room": room, "echo": True}]))
                assert posted.status_code == 200 and posted.text == "ok", posted.text
                ack = await client.until(lambda p, i=i: p.startswith(f"43{10 + i}["))
                assert h.MESSAGE_ID.match(json.loads(ack[4:])[0]["id"]), ack
                await client.until(event_named("chat", text=text))
                await native.wait_seen(lambda e, t=text: e.get("type") == "chat" and e["data"].get("text") == t,
                                       what="socket.io chat on a native client")
            # Native → the polling session, read through whichever edge is next.
            said = f"native-{h.unique_name()}"
            await native.send({"type": "say", "room": room, "text": said, "ref": 1})
            await client.until(lambda p: p.startswith("42") and said in p)

            # The upgrade on edge-3, which relays the frames to edge-1.
            ws_url = f"ws://127.0.0.1:{edges[2].port}/socket.io/?EIO=4&transport=websocket&sid={client.sid}"
            async with ws_connect(ws_url) as ws:
                await ws.send("2probe")
                assert await asyncio.wait_for(ws.recv(), 10) == "3probe"
                await client.poll()  # the pending poll is answered (noop) so the upgrade can finish
                await ws.send("5")
                text = f"ws-{h.unique_name()}"
                await ws.send("4220" + json.dumps(["chat", {"text": text, "room": room, "echo": True}]))
                seen: set[str] = set()
                deadline = time.monotonic() + 10
                while not {"ack", "echo"} <= seen:
                    assert time.monotonic() < deadline, seen
                    frame = await asyncio.wait_for(ws.recv(), 10)
                    if frame == "2":
                        await ws.send("3")
                    elif isinstance(frame, str) and frame.startswith("4320["):
                        seen.add("ack")
                    elif isinstance(frame, str) and event_named("chat", text=text)(frame):
                        seen.add("echo")
                await native.wait_seen(lambda e: e.get("type") == "chat" and e["data"].get("text") == text, what="ws chat")
                await ws.send("41")
                await ws.send("1")
        await client.close()

    run(body(), 90)


async def traffic(edges: list[h.SwitchboardNode], room: str, c: Clients, writers_per_node: int = 4):
    """Listeners (one per node) and writers (several per node) in `room`. Returns
    (listeners, writers, start(), stop()) where stop() returns (acked ids, refused count)."""
    listeners = [(await c.user(n, h.unique_name(f"listen{i}"), rooms=[room]))[0] for i, n in enumerate(edges)]
    writers = [(await c.user(n, h.unique_name(f"w{i}x{k}"), rooms=[room]))[0]
               for i, n in enumerate(edges) for k in range(writers_per_node)]
    acked: list[str] = []
    refused: list[dict] = []
    stopping = asyncio.Event()

    async def write(client: WSClient) -> None:
        i = 0
        while not stopping.is_set():
            ref = f"{client.name}-{i}"
            await client.send({"type": "say", "room": room, "text": ref, "ref": ref})
            answer = await ack_or_error(client, ref, timeout=20)
            if answer["type"] == "ack":
                acked.append(answer["id"])
            else:
                assert answer.get("code") == "unavailable", answer
                refused.append(answer)
                await asyncio.sleep(0.05)
            i += 1

    tasks: list[asyncio.Task] = []

    def start() -> None:
        tasks.extend(asyncio.create_task(write(w)) for w in writers)

    async def stop() -> tuple[list[str], int]:
        stopping.set()
        await asyncio.gather(*tasks)
        return acked, len(refused)

    return listeners, writers, start, stop, acked


def check_delivery(clients: list[WSClient], acked: list[str], room: str) -> None:
    """Every acked id reached every client exactly once, in id order."""
    for client in clients:
        got = [e["id"] for e in chat_of(client, room=room)]
        dups = {i for i in got if got.count(i) > 1}
        assert not dups, f"{client.name}: duplicates {sorted(dups)[:10]}"
        missing = set(acked) - set(got)
        assert not missing, f"{client.name}: {len(missing)} acked ids never delivered: {sorted(missing)[:10]}"
        keys = [h.id_key(i) for i in got]
        assert keys == sorted(keys), f"{client.name}: delivered out of id order"


def test_slot_migration_under_live_traffic_loses_nothing(redis_cluster, edges):
    room = h.unique_room("moving")

    async def body():
        async with Clients() as c:
            listeners, writers, start, stop, acked = await traffic(edges, room, c)
            start()
            await asyncio.sleep(1.0)
            key = redis_cluster.history_key(room)
            channel = key.replace(":hist:", ":")
            source = redis_cluster.owner(redis_cluster.live()[0].command("CLUSTER", "KEYSLOT", key))
            slot = redis_cluster.live()[0].command("CLUSTER", "KEYSLOT", key)
            target = next(m for m in redis_cluster.masters() if m["id"] != source["id"])
            src, dst = redis_cluster.server(source["port"]), redis_cluster.server(target["port"])
            before_move = len(acked)
            assert dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source["id"]) == "OK"
            assert src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target["id"]) == "OK"
            while True:
                keys = src.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                reply = src.command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
                assert not isinstance(reply, Exception) or "NOKEY" in str(reply), reply
                await asyncio.sleep(0.1)  # traffic goes on between steps
            for server in [dst, src] + [redis_cluster.server(m["port"]) for m in redis_cluster.masters()
                                        if m["id"] not in (source["id"], target["id"])]:
                assert server.command("CLUSTER", "SETSLOT", slot, "NODE", target["id"]) == "OK"
            moved_at = len(acked)
            deadline = time.monotonic() + 20
            while len(acked) < moved_at + 40:
                assert time.monotonic() < deadline, f"traffic did not resume after the move ({len(acked) - moved_at} acks)"
                await asyncio.sleep(0.1)
            acked_ids, refused = await stop()
            await wait_messages(listeners + writers, acked_ids, room=room, timeout=20, what="after the slot move")
            await asyncio.sleep(0.5)
            check_delivery(listeners + writers, acked_ids, room)
            # The subscriptions followed the slot.
            assert dst.command("PUBSUB", "SHARDCHANNELS", channel) == [channel]
            assert src.command("PUBSUB", "SHARDCHANNELS", channel) == []
            print(f"slot move: {len(acked_ids)} acked ({before_move} before the move), {refused} refused")

    run(body(), 120)


def test_master_failover_under_live_traffic_loses_nothing_acked(redis_cluster, edges):
    room = h.unique_room("busy")

    async def body():
        async with Clients() as c:
            listeners, writers, start, stop, acked = await traffic(edges, room, c)
            start()
            await asyncio.sleep(1.0)
            key = redis_cluster.history_key(room)
            slot = redis_cluster.live()[0].command("CLUSTER", "KEYSLOT", key)
            victim = redis_cluster.owner(slot)
            victim_server = redis_cluster.server(victim["port"])
            before = len(acked)
            assert before > 0, "no traffic before the kill"
            victim_server.kill()
            killed_at = time.monotonic()
            # The replica is promoted.
            while True:
                try:
                    owner = redis_cluster.owner(slot)
                    if owner["id"] != victim["id"]:
                        break
                except (AssertionError, OSError):
                    pass
                assert time.monotonic() - killed_at < 30, "no failover within 30 s"
                await asyncio.sleep(0.1)
            promoted_after = time.monotonic() - killed_at
            # The old master comes back as the new master's replica, so WAIT 1 succeeds again.
            victim_server.start()
            resumed_at = len(acked)
            deadline = time.monotonic() + 30
            while len(acked) < resumed_at + 40:
                assert time.monotonic() < deadline, f"traffic did not resume after failover ({len(acked) - resumed_at} acks)"
                await asyncio.sleep(0.1)
            resumed_after = time.monotonic() - killed_at
            acked_ids, refused = await stop()
            await wait_messages(listeners + writers, acked_ids, room=room, timeout=30, what="after failover")
            await asyncio.sleep(0.5)
            check_delivery(listeners + writers, acked_ids, room)
            for n in edges:
                assert n.running, f"{n.node_id} died:\n{n.stderr()}"
                await asyncio.to_thread(n.wait_ready, 30)
            # The promoted master holds every acked id.
            history = redis_cluster.server(redis_cluster.owner(slot)["port"]).command("XRANGE", key, "-", "+")
            stored = {entry[0] for entry in history}
            lost = set(acked_ids) - stored
            assert not lost, (f"{len(lost)} of {len(acked_ids)} acked ids missing on the promoted master, which holds "
                              f"{len(stored)} from {min(stored, key=h.id_key, default=None)}: {sorted(lost, key=h.id_key)[:5]}")
            print(f"failover: {len(acked_ids)} acked ({before} before the kill), {refused} refused; "
                  f"replica promoted {promoted_after:.1f}s, traffic resumed {resumed_after:.1f}s after the kill")

    run(body(), 150)
