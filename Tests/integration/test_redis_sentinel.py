"""Redis Sentinel and "accepted means replicated" (issue 15), end to end with real
processes: `redis-server` masters and replicas, `redis-server --sentinel` processes with
generated config files, `switchboard serve --redis redis+sentinel://… --redis-min-replicas 1`.

* a master, two replicas, three sentinels, three nodes: clients chat across nodes while
  twelve writers keep publishing; a manual `SENTINEL FAILOVER` (the old master stays up,
  demoted: the nodes must follow `+switch-master`) and then a SIGKILL of the new master,
  both under that live traffic → every writer is acked again after each failover, every
  acked message reaches every client exactly once, in id order, no node dies;
* `/readyz` is 503 while the sentinels name a master that is down (deterministic: nothing
  listens on its port) or do not know the master at all, and 200 once it is up;
* `--redis-min-replicas 1` on plain `redis://` with one replica: an ack means the replica
  has the message; with the replica stopped (SIGSTOP) or gone, the publish is refused
  (`unavailable`), while a node without the flag still acks;
* a malformed `redis+sentinel://` URL: exit non-zero with one clear line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import Clients, WSClient, run

MASTER = "mymaster"


# --------------------------------------------------------------------------------------
# Sentinel processes
# --------------------------------------------------------------------------------------


class SentinelServer(h.RedisServer):
    """`redis-server <config> --sentinel` on a free port; the config file is generated in
    the run's log directory (a sentinel rewrites it, so it must be its own)."""

    def __init__(self, master_port: int, quorum: int = 2, binary: Optional[str] = None):
        super().__init__(binary=binary)
        self.master_port = master_port
        self.quorum = quorum
        self.config = h.log_dir() / f"sentinel-{self.port}-{os.getpid()}-{id(self)}.conf"

    def args(self) -> list[str]:
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {h.log_dir()}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
            f"sentinel parallel-syncs {MASTER} 2\n")
        return [self.binary, str(self.config), "--sentinel"]

    def master(self) -> Optional[int]:
        """The master's port this sentinel names now."""
        reply = self.command("SENTINEL", "get-master-addr-by-name", MASTER)
        return int(reply[1]) if isinstance(reply, list) else None


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, h.RedisError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def replication_info(server: h.RedisServer) -> dict[str, str]:
    text = server.command("INFO", "replication")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def linked(replica: h.RedisServer) -> bool:
    return replication_info(replica).get("master_link_status") == "up"


class SentinelGroup:
    """A master, `replicas` replicas and three sentinels watching them."""

    def __init__(self, redis_factory, redis_server_binary: str, replicas: int = 2):
        # Every server may become a replica and then write dump.rdb: not into the clone.
        self.master = redis_factory(extra_args=["--dir", str(h.log_dir())])
        self.replicas = [redis_factory(extra_args=["--replicaof", "127.0.0.1", str(self.master.port),
                                                         "--dir", str(h.log_dir())])
                         for _ in range(replicas)]
        self.servers = [self.master] + self.replicas
        for replica in self.replicas:
            wait_until(lambda: linked(replica), 15, f"replica {replica.port} linked to the master")
        self.sentinels = [SentinelServer(self.master.port, binary=redis_server_binary) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        for sentinel in self.sentinels:
            wait_until(lambda: len(sentinel.command("SENTINEL", "replicas", MASTER)) == replicas
                       and len(sentinel.command("SENTINEL", "sentinels", MASTER)) == 2,
                       20, f"sentinel {sentinel.port} knows the replicas and the other sentinels")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}"

    def server(self, port: int) -> h.RedisServer:
        return next(s for s in self.servers if s.port == port)

    def current_master(self) -> int:
        ports = {s.master() for s in self.sentinels if s.running}
        assert len(ports) == 1, f"the sentinels disagree on the master: {ports}"
        return ports.pop()

    def wait_master_moved(self, old: int, timeout: float = 30) -> int:
        """Waits until every live sentinel names a master other than `old` that says ROLE master."""
        def moved() -> Optional[int]:
            ports = {s.master() for s in self.sentinels if s.running}
            if len(ports) != 1 or old in ports:
                return None
            port = ports.pop()
            role = self.server(port).command("ROLE")
            return port if isinstance(role, list) and role[0] == "master" else None
        return wait_until(moved, timeout, f"the sentinels promoting a replica instead of {old}")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()


@pytest.fixture
def sentinel_group(redis_factory, redis_server_binary) -> Any:
    group = SentinelGroup(redis_factory, redis_server_binary)
    try:
        yield group
    finally:
        group.stop()


def http_get(url: str, timeout: float = 3.0) -> httpx.Response:
    with h.http_client(timeout) as client:
        return client.get(url)


async def ack_or_error(client: WSClient, ref: str, timeout: float = 10.0) -> dict:
    return await client.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"), timeout,
                                  what=f"ack/error for ref {ref!r}")


def room_ids(client: WSClient, room: str) -> list[str]:
    return [e["id"] for e in client.events if e.get("type") == "message" and e.get("room") == room]


def assert_delivered_once_in_order(client: WSClient, room: str, acked: set[str]) -> None:
    """Every acked id exactly once, no id twice, ids increasing in arrival order. (A
    publish refused because replication was not confirmed may still have been
    delivered: refused means "not guaranteed", so such ids are allowed, once.)"""
    ids = room_ids(client, room)
    dups = {i: n for i, n in Counter(ids).items() if n > 1}
    missing = acked - set(ids)
    keys = [h.id_key(i) for i in ids]
    disorder = [(ids[k], ids[k + 1]) for k in range(len(ids) - 1) if keys[k] >= keys[k + 1]]
    assert not dups and not missing and not disorder, (
        f"{client.name}: duplicates {dups}, missing {sorted(missing)[:20]} (of {len(missing)}), "
        f"out of order {disorder[:10]}")


# --------------------------------------------------------------------------------------
# 1. Failover under live traffic
# --------------------------------------------------------------------------------------


class Writer:
    """One connection that says a message, waits for its ack or error, and says the next
    (about 12 a second, under the per-connection rate limit)."""

    def __init__(self, client: WSClient, room: str):
        self.client, self.room = client, room
        self.acked: list[tuple[float, str]] = []  # (when, id)
        self.refused: list[dict] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            ref = f"w-{i}"
            await self.client.send({"type": "say", "room": self.room, "text": f"{self.client.name}-{i}", "ref": ref})
            answer = await ack_or_error(self.client, ref, timeout=15)
            if answer["type"] == "ack":
                self.acked.append((time.monotonic(), answer["id"]))
            else:
                assert answer.get("code") == "unavailable", f"{self.client.name}: {answer}"
                self.refused.append(answer)
            i += 1
            await asyncio.sleep(0.08)

    def acked_since(self, instant: float) -> int:
        return sum(1 for when, _ in self.acked if when > instant)


async def wait_traffic_resumed(writers: list[Writer], since: float, what: str, count: int = 3,
                               timeout: float = 40) -> float:
    """Waits until every writer has `count` acks after `since`; returns the seconds it took."""
    deadline = since + timeout
    while True:
        late = [w.client.name for w in writers if w.acked_since(since) < count]
        if not late:
            return time.monotonic() - since
        assert time.monotonic() < deadline, f"{what}: writers {late} not acked {count} times within {timeout}s"
        await asyncio.sleep(0.1)


def test_sentinel_failovers_under_live_traffic_lose_nothing_acked(sentinel_group, node_factory):
    group = sentinel_group
    nodes = [node_factory(node_id=f"sentinel-edge-{i}", redis=group.url, extra_args=["--redis-min-replicas", "1"])
             for i in range(1, 4)]
    for n in nodes:
        n.wait_ready(30)
    room = h.unique_room("failover")

    async def body():
        async with Clients() as c:
            readers = [(await c.user(n, h.unique_name("reader"), rooms=[room]))[0] for n in nodes]
            writers = [Writer((await c.user(n, h.unique_name(f"w{k}"), rooms=[room]))[0], room)
                       for n in nodes for k in range(4)]
            tasks = [asyncio.create_task(w.run()) for w in writers]
            try:
                started = time.monotonic()
                await wait_traffic_resumed(writers, started, "before any failover")
                first = writers[0].acked[0][1]
                for reader in readers:  # cross-node chat works before anything happens
                    await reader.wait_seen(lambda e: e.get("id") == first, 10, what="a message from another node")

                # A manual failover: the old master stays up and is demoted; the nodes
                # must follow +switch-master (writes to it would fail READONLY).
                old = group.current_master()
                assert group.sentinels[0].command("SENTINEL", "FAILOVER", MASTER) == "OK"
                switched_at = time.monotonic()
                manual = await asyncio.to_thread(group.wait_master_moved, old)
                manual_resumed = await wait_traffic_resumed(writers, time.monotonic(), "after the manual failover")

                # SIGKILL the new master under live traffic.
                await asyncio.to_thread(wait_until, lambda: all(linked(s) for s in group.servers if s.port != manual),
                                        20, "both replicas linked to the new master")
                group.server(manual).kill()
                killed_at = time.monotonic()
                promoted = await asyncio.to_thread(group.wait_master_moved, manual)
                kill_resumed = await wait_traffic_resumed(writers, killed_at, "after SIGKILL of the master")
            finally:
                for w in writers:
                    w.stop.set()
                await asyncio.gather(*tasks)

            acked = {i for w in writers for _, i in w.acked}
            everyone = readers + [w.client for w in writers]
            deadline = time.monotonic() + 20
            while any(acked - set(room_ids(x, room)) for x in everyone) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            for client in everyone:
                assert not client.closed, f"{client.name} disconnected ({client.close_code} {client.close_reason})"
                assert_delivered_once_in_order(client, room, acked)
            refused = sum(len(w.refused) for w in writers)
            print(f"sentinel: {len(acked)} acked, {refused} refused; master {old} → {manual} (manual, traffic back "
                  f"{manual_resumed:.1f}s after the switch, {time.monotonic() - switched_at:.0f}s ago) → {promoted} "
                  f"(SIGKILL, traffic back after {kill_resumed:.1f}s)")

    run(body(), 150)
    for n in nodes:
        assert n.running, f"{n.node_id} died (code {n.returncode}):\n{n.stderr()}"
    for n in nodes:  # the whole log: the tail is full of refused calls
        log = Path(n.log_path).read_text(errors="replace")
        assert "sentinel failover started" in log and "sentinel switched the master" in log, (
            f"{n.node_id} did not follow the failovers through +selected-slave and +switch-master")


# --------------------------------------------------------------------------------------
# 2. /readyz while there is no master
# --------------------------------------------------------------------------------------


def test_readyz_503_while_the_sentinels_know_no_live_master(redis_factory, node_factory, redis_server_binary):
    """Deterministic: the sentinel monitors a port nothing listens on until the test starts
    a Redis there. A node asking for that master, and one asking for a master the sentinel
    does not monitor, stay not ready (and refuse to publish) until then."""
    down = h.free_port()
    sentinel = SentinelServer(down, quorum=1, binary=redis_server_binary).start()
    try:
        assert sentinel.master() == down
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}"
        waiting = node_factory(node_id="no-master", redis=f"{url}/{MASTER}")
        unknown = node_factory(node_id="unknown-master", redis=f"{url}/not-monitored")

        for _ in range(10):  # 2 s: not ready all along
            for n in (waiting, unknown):
                assert http_get(n.url + "/readyz").status_code == 503, f"{n.node_id} ready without a master"
                assert http_get(n.url + "/healthz").status_code == 200
            time.sleep(0.2)
        r = h.login_response(waiting.url, h.unique_name("x"))
        assert r.status_code == 503, f"login without a master answered {r.status_code} {r.text}"
        assert f"no master '{MASTER}' found" in waiting.stderr(), waiting.stderr()
        assert "does not know the master 'not-monitored'" in unknown.stderr() or "not-monitored" in unknown.stderr()

        redis = redis_factory(port=down)
        waiting.wait_ready(20)
        creds = h.login(waiting.url, h.unique_name("y"))
        room = h.unique_room("back")

        async def chat() -> None:
            async with Clients() as c:
                client, _ = await c.session(waiting, creds["token"], rooms=[room])
                await client.send({"type": "say", "room": room, "text": "master is here", "ref": "m"})
                answer = await ack_or_error(client, "m")
                assert answer["type"] == "ack", answer

        run(chat(), 20)
        assert http_get(unknown.url + "/readyz").status_code == 503, "ready with a master no sentinel monitors"
        assert redis.running
    finally:
        sentinel.kill()


# --------------------------------------------------------------------------------------
# 3. --redis-min-replicas on plain redis://
# --------------------------------------------------------------------------------------


def test_min_replicas_acks_only_what_the_replica_has(redis_factory, node_factory):
    master = redis_factory(extra_args=["--dir", str(h.log_dir())])
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(master.port), "--dir", str(h.log_dir())])
    wait_until(lambda: linked(replica), 15, "replica linked")
    safe = node_factory(node_id="wait-1", redis=master.url, extra_args=["--redis-min-replicas", "1"])
    fast = node_factory(node_id="wait-0", redis=master.url)
    for n in (safe, fast):
        n.wait_ready(20)
    room = h.unique_room("wait")
    history = f"sb:hist:room:{room}"

    async def body():
        async with Clients() as c:
            a, _, _ = await c.user(safe, h.unique_name("a"), rooms=[room])
            b, _, _ = await c.user(fast, h.unique_name("b"), rooms=[room])

            async def say(client: WSClient, text: str, ref: str) -> dict:
                await client.send({"type": "say", "room": room, "text": text, "ref": ref})
                return await ack_or_error(client, ref, timeout=10)

            # Many concurrent writers, each ack checked on the replica right away.
            async def acked_and_replicated(k: int) -> None:
                answer = await say(a, f"replicated-{k}", f"r-{k}")
                assert answer["type"] == "ack", answer
                entry = await asyncio.to_thread(replica.command, "XRANGE", history, answer["id"], answer["id"])
                assert entry, f"acked {answer['id']} is not on the replica yet"
            await asyncio.gather(*(acked_and_replicated(k) for k in range(30)))

            # The replica stopped: the node with the flag refuses, the one without acks.
            os.kill(replica.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                answer = await say(a, "while the replica is stopped", "stopped")
                waited = time.monotonic() - started
                assert answer["type"] == "error" and answer.get("code") == "unavailable", answer
                assert 0.8 <= waited < 5, f"refused after {waited:.2f}s (WAIT timeout is 1 s)"
                unsafe = await say(b, "unreplicated but acked", "fast")
                assert unsafe["type"] == "ack", unsafe
            finally:
                os.kill(replica.proc.pid, signal.SIGCONT)
            assert "not replicated" in safe.stderr() and "0 of 1 replicas" in safe.stderr(), safe.stderr()

            answer = await say(a, "replica back", "back")
            assert answer["type"] == "ack", answer
            assert await asyncio.to_thread(replica.command, "XRANGE", history, answer["id"], answer["id"])

            # The replica gone for good: refused again.
            replica.kill()
            answer = await say(a, "replica gone", "gone")
            assert answer["type"] == "error" and answer.get("code") == "unavailable", answer

    run(body(), 60)
    assert safe.running and fast.running


def test_malformed_sentinel_url_exits_with_one_clear_line(switchboard_binary):
    result = subprocess.run(
        [switchboard_binary, "serve", "--port", str(h.free_port()), "--redis", "redis+sentinel://:hunter2@h1,,h2/mymaster"],
        capture_output=True, text=True, timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")})
    assert result.returncode != 0
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "a sentinel address is empty" in lines[0], lines
    assert "hunter2" not in result.stderr + result.stdout
