"""`docker compose up` on a Redis Cluster, for real: docker/docker-compose.redis-cluster.yml
on a container engine (issue 15).

Same engine and conventions as test_compose_cluster.py (compose_harness.py): Podman with
its Docker-compatible API socket, set up by the shared script; Debian's `docker-compose`
runs the compose file unmodified; clients talk to the LB's published port only; Redis is
inspected by `redis-cli` exec'd in its containers, containers are killed and started
through the engine's Docker API. If the engine cannot come up, the tests fail — they
never skip.

In order, on one compose project (module fixture):
1. `up -d --build --scale edge=3`: six Redis nodes, `cluster-init` exits 0 (once every
   replica is in sync), `cluster info` says ok with 3 masters + 3 replicas, the LB reaches
   the three edge containers;
2. three users through the LB on three edges: a whisper crosses edges and skips the
   third user, a room message reaches all, presence says 3 on every edge, and the
   sharded channels (`PUBSUB SHARDCHANNELS`) are spread over more than one master;
3. the master owning a busy room's partition is SIGKILLed while a user keeps sending
   acked messages: its replica is promoted (cluster-node-timeout 3 s), the killed
   container is started again (an engine's kill is a manual stop, which `restart:
   unless-stopped` does not undo, under Docker as under Podman) and rejoins as a replica,
   so `SWITCHBOARD_REDIS_MIN_REPLICAS=1` acks again; every acked message reaches every
   user exactly once, in id order, and is in the promoted master's history;
4. `stop` stops the edges before the Redis nodes (every container exits 0: no edge is
   SIGKILLed after the grace), `down -v` leaves no container, network or volume.

Per run: an own project name and LB port (127.0.0.1); the edge image tag is
test_compose_cluster.py's (`switchboard:test-<hash of the project path>`), so whichever
module runs first builds it and the other's build is a cache hit. Timings of each step
are printed (pytest -s).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Iterator, Optional

import httpx
import pytest

from compose_harness import BUILD_TIMEOUT, ROOT, ComposeProject, connect_avoiding, lb_nodes, login, start_engine
from switchboard_harness import MESSAGE_ID, WSClient, id_key, is_type, log_dir, run

# The image build takes both cores for minutes: not at the same time as the CPU-bound tests.
pytestmark = pytest.mark.xdist_group("heavy")

COMPOSE_FILE = ROOT / "docker/docker-compose.redis-cluster.yml"
SECRET = "compose-rc-test-secret-" + secrets.token_hex(8)
API_KEY = "compose-rc-test-api-key-" + secrets.token_hex(4)
REDIS = [f"redis-{i}" for i in range(1, 7)]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def engine() -> str:
    """Runs the shared setup script (idempotent) and returns the engine's DOCKER_HOST."""
    return start_engine(TIMINGS)


class RedisClusterCompose(ComposeProject):
    """One compose project of docker/docker-compose.redis-cluster.yml on the engine."""

    def __init__(self, docker_host: str) -> None:
        super().__init__(COMPOSE_FILE, docker_host, TIMINGS, SECRET, API_KEY)

    def container(self, service: str):
        found = self.containers(service, all=True)
        assert len(found) == 1, f"{len(found)} containers of {service}"
        return found[0]

    def redis_cli(self, service: str, *args: str) -> str:
        """`redis-cli <args>` exec'd in the container of `service` (raw output, no tty)."""
        code, output = self.container(service).exec_run(["redis-cli", *args])
        text = output.decode(errors="replace")
        assert code == 0, f"redis-cli {' '.join(args)} in {service}: exit {code}: {text}"
        return text

    def node_ids(self, services: list[str]) -> dict[str, str]:
        """Cluster node id → service, for the given (running) Redis services."""
        return {self.redis_cli(service, "cluster", "myid").strip(): service for service in services}

    def cluster_nodes(self, via: str) -> list[dict]:
        """CLUSTER NODES as `via` sees it: id, flags, master id, slot ranges."""
        nodes = []
        for line in self.redis_cli(via, "cluster", "nodes").strip().splitlines():
            parts = line.split()
            ranges = []
            for item in parts[8:]:
                if not item.startswith("["):
                    lo, _, hi = item.partition("-")
                    ranges.append((int(lo), int(hi or lo)))
            nodes.append({"id": parts[0], "address": parts[1], "flags": set(parts[2].split(",")),
                          "master": parts[3], "link": parts[7], "ranges": ranges})
        return nodes

    def masters(self, via: str) -> list[dict]:
        return [n for n in self.cluster_nodes(via) if "master" in n["flags"] and n["ranges"]
                and not n["flags"] & {"fail", "fail?"}]

    def owner(self, via: str, slot: int) -> Optional[dict]:
        return next((m for m in self.masters(via) if any(lo <= slot <= hi for lo, hi in m["ranges"])), None)


@pytest.fixture(scope="module")
def cluster(engine: str) -> Iterator[RedisClusterCompose]:
    compose = RedisClusterCompose(engine)
    try:
        compose.timed("up -d --build --scale edge=3", "up", "-d", "--build", "--scale", "edge=3",
                      timeout=BUILD_TIMEOUT, log=log_dir() / f"{compose.project}-up.log")
        yield compose
    finally:
        if not compose.down_done:
            print(compose.logs())
            try:
                compose.down()
            except AssertionError as error:
                print(error)
        print("redis cluster compose timings: "
              + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in TIMINGS.items()))


def wait_until(what: str, check, timeout: float, interval: float = 0.2):
    """Polls `check()` until it returns something truthy (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except AssertionError as error:  # e.g. redis-cli failing on a node that is restarting
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


def replicas_in_sync(compose: RedisClusterCompose, via: str) -> bool:
    """Every master has a replica whose link to it is up (so `WAIT 1` succeeds)."""
    masters = compose.masters(via)
    if len(masters) != 3:
        return False
    services = compose.node_ids([s for s in REDIS if compose.container(s).status == "running"])
    for node in compose.cluster_nodes(via):
        if "slave" in node["flags"] and node["id"] in services:
            if "master_link_status:up" not in compose.redis_cli(services[node["id"]], "info", "replication"):
                return False
    linked = {n["master"] for n in compose.cluster_nodes(via) if "slave" in n["flags"]
              and not n["flags"] & {"fail", "fail?"}}
    return {m["id"] for m in masters} <= linked


def test_cluster_init_builds_the_cluster_and_the_lb_reaches_three_edges(cluster: RedisClusterCompose):
    init = cluster.container("cluster-init")
    state = init.attrs["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, (state, init.logs(tail=30).decode())
    info = cluster.redis_cli("redis-2", "-h", "redis-1", "cluster", "info")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info, info
    assert "cluster_size:3" in info and "cluster_known_nodes:6" in info, info

    def complete() -> Optional[list]:
        """redis-1's view once gossip has told it every replica and link (it may lag the
        init step by a moment)."""
        nodes = cluster.cluster_nodes("redis-1")
        replicas = [n for n in nodes if "slave" in n["flags"]]
        ok = len(replicas) == 3 and all(n["link"] == "connected" and not n["flags"] & {"fail", "fail?"}
                                        for n in nodes)
        return nodes if ok else None

    started = time.monotonic()
    nodes = wait_until("3 masters + 3 replicas, all connected, in redis-1's view", complete, 30)
    masters = [n for n in nodes if "master" in n["flags"]]
    replicas = [n for n in nodes if "slave" in n["flags"]]
    assert len(masters) == 3 and len(replicas) == 3, nodes
    assert sum(hi - lo + 1 for m in masters for lo, hi in m["ranges"]) == 16384, masters
    assert sorted(r["master"] for r in replicas) == sorted(m["id"] for m in masters), nodes
    assert set(cluster.node_ids(REDIS)) == {n["id"] for n in nodes}, "a container is not a cluster node"
    # cluster-init exits once every replica is in sync: the edges' first publishes (WAIT 1) are acked.
    wait_until("every master's replica in sync", lambda: replicas_in_sync(cluster, "redis-1"), 10)
    TIMINGS["cluster checks (redis-cli exec'd)"] = time.monotonic() - started

    edges = cluster.edge_nodes()
    assert len(edges) == 3, f"{len(edges)} edge containers running"
    started = time.monotonic()
    try:
        lb_nodes(cluster, set(edges), timeout=120)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster.logs()}") from None
    TIMINGS["LB reaches 3 edges"] = time.monotonic() - started
    running = {c.name: c.attrs["State"]["Status"] for c in cluster.containers() if c.id != init.id}
    assert set(running.values()) == {"running"} and len(running) == 6 + 3 + 1, running


async def three_users(compose: RedisClusterCompose, names: list[str], rooms: list[str]) -> "tuple[dict, dict]":
    """The users logged in and connected through the LB, each on its own edge."""
    clients: dict[str, WSClient] = {}
    nodes: dict[str, str] = {}
    try:
        for name in names:
            token = (await login(compose, name))["token"]
            clients[name], welcome = await connect_avoiding(compose, token, name, set(nodes.values()),
                                                            rooms=tuple(rooms))
            nodes[name] = welcome["node"]
    except BaseException:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)
        raise
    assert len(set(nodes.values())) == 3 and set(nodes.values()) == set(compose.edge_nodes()), nodes
    return clients, nodes


def shard_channels(compose: RedisClusterCompose, rooms: list[str]) -> dict[str, list[str]]:
    """`PUBSUB SHARDCHANNELS` of every master (service → channels); asserts each channel
    is on the master owning its slot and each of `rooms` has one channel."""
    services = compose.node_ids(REDIS)
    channels: dict[str, list[str]] = {}
    for master in compose.masters("redis-1"):
        service = services[master["id"]]
        listed = compose.redis_cli(service, "pubsub", "shardchannels").split()
        channels[service] = listed
        for channel in listed:
            slot = int(compose.redis_cli(service, "cluster", "keyslot", channel))
            assert any(lo <= slot <= hi for lo, hi in master["ranges"]), (service, channel, slot, master)
    ours = sorted(c for listed in channels.values() for c in listed if c.rsplit(":room:", 1)[-1] in rooms
                  and ":room:" in c)
    assert len(ours) == len(rooms), f"room channels {ours} (each of {rooms} once, on its master): {channels}"
    return channels


def test_chat_across_edges_and_sharded_channels_on_several_masters(cluster: RedisClusterCompose):
    spread = [f"spread{i}" for i in range(8)]

    async def body() -> None:
        names = ["alice", "小明", "carol"]
        clients, nodes = await three_users(cluster, names, ["lobby", *spread])
        try:
            alice, xiaoming, carol = (clients[n] for n in names)
            # Presence is cluster-wide: every user, on its own edge, is told 3.
            for name in names:
                await clients[name].wait_seen(lambda e: is_type("presence", room="lobby")(e) and e["count"] == 3, 20,
                                              what="presence 3 in lobby")
            # alice's whisper crosses edges to 小明 and does not reach carol.
            await alice.send({"type": "whisper", "to": "小明", "text": "只给小明", "ref": 1})
            ack = await alice.wait_seen(lambda e: e.get("ref") == 1 and e.get("type") in ("ack", "error"), 15,
                                        what="ack of the whisper")
            assert ack["type"] == "ack", ack
            got = await xiaoming.wait_seen(is_type("private", text="只给小明"), 15, what="the whisper")
            assert got["from"]["nickname"] == "alice" and got["id"] == ack["id"], (got, ack)
            await alice.send({"type": "whisper", "to": "carol", "text": "for carol", "ref": 2})
            await carol.wait_seen(is_type("private", text="for carol"), 15, what="carol's own whisper")
            assert not carol.seen(lambda e: e.get("text") == "只给小明"), carol.events
            # A room message reaches everyone, on every edge, with the acked id.
            await carol.send({"type": "say", "room": "lobby", "text": "hello all", "ref": 3})
            ack = await carol.wait_seen(lambda e: e.get("ref") == 3 and e.get("type") in ("ack", "error"), 15,
                                        what="ack of the room message")
            assert ack["type"] == "ack", ack
            for name in names:
                event = await clients[name].wait_seen(is_type("message", text="hello all"), 15,
                                                      what="the room message")
                assert event["id"] == ack["id"] and event["room"] == "lobby", event
            # One message per room: the rooms' partitions are spread over the masters.
            for i, room in enumerate(spread):
                await alice.send({"type": "say", "room": room, "text": f"in {room}", "ref": 10 + i})
            for i, room in enumerate(spread):
                answer = await alice.wait_seen(lambda e: e.get("ref") == 10 + i and e.get("type") in ("ack", "error"),
                                               15, what=f"ack in {room}")
                assert answer["type"] == "ack", answer
                await carol.wait_seen(is_type("message", room=room), 15, what=f"the message in {room}")
            # While the users are connected (an edge unsubscribes a room nobody on it is in),
            # the rooms' sharded channels are on more than one master.
            channels = await asyncio.to_thread(shard_channels, cluster, ["lobby", *spread])
            holders = [service for service, listed in channels.items() if listed]
            assert len(holders) >= 2, f"sharded channels on one master only: {channels}"
            print(f"users on {nodes}; sharded channels per master: "
                  + ", ".join(f"{s}: {len(listed)}" for s, listed in sorted(channels.items())))
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)

    try:
        run(body(), 180)
    except BaseException:
        print(cluster.logs())
        raise


def test_master_killed_under_traffic_loses_no_acked_message(cluster: RedisClusterCompose):
    room = "busy"
    report: dict[str, object] = {}

    async def body() -> None:
        names = ["dora", "eve", "frank"]
        clients, nodes = await three_users(cluster, names, [room])
        writer = clients["dora"]
        acked: list[str] = []
        refused: list[dict] = []
        stopping = asyncio.Event()

        async def write() -> None:
            i = 0
            while not stopping.is_set():
                ref = f"m{i}"
                await writer.send({"type": "say", "room": room, "text": ref, "ref": ref})
                answer = await writer.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("ack", "error"),
                                                30, what=f"ack/error for {ref}")
                if answer["type"] == "ack":
                    acked.append(answer["id"])
                else:
                    assert answer.get("code") in ("unavailable", "rate_limited"), answer
                    refused.append(answer)
                    await asyncio.sleep(0.2)
                i += 1
                await asyncio.sleep(0.07)  # under the edges' 20 events/s per connection

        async def acks_grow(count: int, timeout: float, what: str) -> None:
            target, deadline = len(acked) + count, time.monotonic() + timeout
            while len(acked) < target:
                assert not task.done(), f"the writer stopped: {task.exception() if task.done() else ''}"
                assert time.monotonic() < deadline, f"{what}: {len(acked) - target + count} of {count} acks in {timeout}s"
                await asyncio.sleep(0.05)

        task = asyncio.create_task(write())
        try:
            await acks_grow(20, 30, "traffic before the kill")
            # The busy room's channel, and the master that holds it.
            # Each master as a container. One clean run under a CPU hog once found a master
            # id in redis-1's view that no container answered to `cluster myid`: read both
            # again until they agree, and say what each said if they never do.
            def mapped() -> Optional[tuple[dict[str, str], list[dict]]]:
                ids, listed = cluster.node_ids(REDIS), cluster.masters("redis-1")
                if len(listed) == 3 and all(m["id"] in ids for m in listed):
                    return ids, listed
                raise AssertionError(f"containers' ids {ids}; redis-1's masters {[m['id'] for m in listed]}")
            services, masters = await asyncio.to_thread(wait_until, "every master is a container", mapped, 30)
            victim = None
            for master in masters:
                listed = (await asyncio.to_thread(cluster.redis_cli, services[master["id"]], "pubsub",
                                                  "shardchannels", f"*:room:{room}")).split()
                if listed:
                    victim, channel = master, listed[0]
            assert victim is not None, f"no master holds the channel of {room!r}"
            victim_service = services[victim["id"]]
            survivor = next(services[m["id"]] for m in masters if m["id"] != victim["id"])
            slot = int(await asyncio.to_thread(cluster.redis_cli, survivor, "cluster", "keyslot", channel))
            container = cluster.container(victim_service)
            before = len(acked)
            await asyncio.to_thread(container.kill)  # SIGKILL through the engine's API
            killed_at = time.monotonic()

            def promoted() -> Optional[dict]:
                owner = cluster.owner(survivor, slot)
                return owner if owner and owner["id"] != victim["id"] else None

            new_master = await asyncio.to_thread(wait_until, f"a replica promoted for slot {slot}", promoted, 60)
            report["promoted"] = time.monotonic() - killed_at
            # An engine's kill is a manual stop, which `restart: unless-stopped` does not undo:
            # start it again, as an operator would; it rejoins as the new master's replica.
            await asyncio.to_thread(container.start)
            await asyncio.to_thread(wait_until, "the old master back as a replica in sync",
                                    lambda: replicas_in_sync(cluster, survivor), 60)
            report["replica back"] = time.monotonic() - killed_at
            await acks_grow(20, 60, "traffic after the failover")
            report["traffic resumed"] = time.monotonic() - killed_at
            stopping.set()
            await task
            # Every acked message reaches every user exactly once, in id order.
            deadline = time.monotonic() + 30
            while True:
                missing = {n: set(acked) - {e["id"] for e in c.events if is_type("message", room=room)(e)}
                           for n, c in clients.items()}
                if not any(missing.values()):
                    break
                assert time.monotonic() < deadline, {n: sorted(m, key=id_key)[:5] for n, m in missing.items()}
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            for name, client in clients.items():
                got = [e["id"] for e in client.events if is_type("message", room=room)(e)]
                dups = sorted({i for i in got if got.count(i) > 1}, key=id_key)
                assert not dups, f"{name}: delivered twice: {dups[:10]}"
                assert got == sorted(got, key=id_key), f"{name}: delivered out of id order"
            report.update(acked=len(acked), before=before, refused=len(refused), nodes=nodes,
                          victim=victim_service, new_master=services.get(new_master["id"]), acked_ids=list(acked))
        finally:
            stopping.set()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)

    try:
        run(body(), 300)
    except BaseException:
        print(cluster.logs())
        raise
    TIMINGS["failover: replica promoted"] = report["promoted"]
    TIMINGS["failover: traffic resumed"] = report["traffic resumed"]

    # The promoted master's history holds every acked id.
    acked_ids = report.pop("acked_ids")
    master = report["new_master"]
    keys = cluster.redis_cli(master, "--scan", "--pattern", f"*hist:room:{room}").split()
    assert len(keys) == 1, (master, keys)
    stored = {line for line in cluster.redis_cli(master, "xrange", keys[0], "-", "+").split() if MESSAGE_ID.fullmatch(line)}
    lost = set(acked_ids) - stored
    assert not lost, f"{len(lost)} of {len(acked_ids)} acked ids missing on the promoted master: {sorted(lost)[:5]}"
    # No edge crashed (the restart policy would have hidden it: its restart count tells).
    edges = cluster.edge_nodes()
    assert len(edges) == 3 and all(c.attrs.get("RestartCount", 0) == 0 for c in edges.values()), \
        {n: (c.status, c.attrs.get("RestartCount")) for n, c in edges.items()}
    assert "cluster_state:ok" in cluster.redis_cli(master, "cluster", "info")
    print(f"failover: killed {report['victim']} (master of {room!r}), {report['new_master']} promoted "
          f"{report['promoted']:.1f} s after the kill, old master back in sync {report['replica back']:.1f} s, "
          f"traffic resumed {report['traffic resumed']:.1f} s; {report['acked']} acked ({report['before']} before "
          f"the kill), {report['refused']} refused; users on {report['nodes']}")


def test_stop_in_order_and_down_leaves_nothing_behind(cluster: RedisClusterCompose):
    assert cluster.containers(), "nothing is running before down"
    # `stop` stops the edges before the Redis nodes (they depend on them directly): every
    # edge drains and exits 0 within the grace instead of waiting for a vanished Redis.
    cluster.timed("stop", "stop", "--timeout", "10", timeout=180)
    exits = {c.name: (c.status, c.attrs["State"]["ExitCode"]) for c in cluster.containers(all=True)}
    assert all(status == "exited" and code == 0 for status, code in exits.values()), exits
    cluster.down()
    assert cluster.leftovers() == {"containers": [], "networks": [], "volumes": []}
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cluster.lb}/healthz", timeout=2, trust_env=False)
