"""`docker compose up`, for real: docker/docker-compose.yml on a container engine.

The engine is the shared script's (../shared/containers/setup.sh next to the project, or
CONTAINERS_SETUP): Podman with its Docker-compatible API socket and stand-ins for the
public images the Dockerfile and compose file name. The script is run here (idempotent;
its first run takes minutes); if the engine cannot come up, the tests fail — they never
skip. Everything else is the user's path, unmodified: Debian's `docker-compose` builds
the edge image from docker/Dockerfile and starts the cluster; clients talk to the LB's
published port only; containers are inspected and killed through the engine's Docker API
(the `docker` Python SDK), as they would be under Docker.

In order, on one compose project (module fixture):
1. build the edge image (release build; SwiftPM's .build in a build cache, see the
   Dockerfile), `up -d --scale edge=3`: the LB reaches exactly the three edge containers;
2. three users through the LB land on three edges: a whisper crosses edges and skips the
   third user, presence says 3 everywhere (4 with a Socket.IO user through the LB's
   round robin, no cookie); `up -d --scale edge=5` while they are
   connected: the LB reaches all five, the live sockets keep working; the container
   serving one user is killed: the user reconnects through the LB with its cursor and
   gets exactly what was said meanwhile;
3. `down -v` leaves no container, network or volume of the project.

Per run: an own project name and LB port (127.0.0.1), and an image tag per checkout
(`switchboard:test-<hash of the project path>`, so the image and its layers are the
cache of the next run in this checkout). Timings of each step are printed (pytest -s).
The engine set-up, the compose project and the LB helpers are compose_harness.py's
(shared with test_compose_redis_cluster.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Iterator

import aiohttp
import httpx
import pytest

from compose_harness import BUILD_TIMEOUT, ROOT, ComposeProject, connect_avoiding, lb_nodes, login, start_engine
from switchboard_harness import SIO, CursorTracker, WSClient, is_type, log_dir, run, wait_transport

# The image build takes both cores for minutes: not at the same time as the CPU-bound tests.
pytestmark = pytest.mark.xdist_group("heavy")

COMPOSE_FILE = ROOT / "docker/docker-compose.yml"
SECRET = "compose-test-secret-" + secrets.token_hex(8)
API_KEY = "compose-test-api-key-" + secrets.token_hex(4)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def engine() -> str:
    """Runs the shared setup script (idempotent) and returns the engine's DOCKER_HOST."""
    return start_engine(TIMINGS)


class Compose(ComposeProject):
    """One compose project of docker/docker-compose.yml on the engine."""

    def __init__(self, docker_host: str) -> None:
        super().__init__(COMPOSE_FILE, docker_host, TIMINGS, SECRET, API_KEY)


@pytest.fixture(scope="module")
def cluster(engine: str) -> Iterator[Compose]:
    compose = Compose(engine)
    try:
        compose.timed("build edge image", "build", "edge", timeout=BUILD_TIMEOUT,
                      log=log_dir() / f"{compose.project}-build.log")
        compose.timed("up --scale edge=3", "up", "-d", "--scale", "edge=3", timeout=300)
        yield compose
    finally:
        if not compose.down_done:
            print(compose.logs())
            try:
                compose.down()
            except AssertionError as error:
                print(error)
        print("compose timings: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in TIMINGS.items()))


def test_lb_reaches_the_three_edges(cluster: Compose):
    edges = cluster.edge_nodes()
    assert len(edges) == 3, f"{len(edges)} edge containers running"
    started = time.monotonic()
    try:
        lb_nodes(cluster, set(edges), timeout=120)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster.logs()}") from None
    TIMINGS["LB reaches 3 edges"] = time.monotonic() - started
    assert {c.attrs["State"]["Status"] for c in cluster.containers()} == {"running"}
    page = httpx.get(f"{cluster.lb}/", timeout=10, trust_env=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page


def test_chat_across_edges_scaling_and_a_killed_edge(cluster: Compose):
    async def body() -> None:
        names = ["alice", "小明", "carol"]
        creds = {name: await login(cluster, name) for name in names}
        clients: dict[str, WSClient] = {}
        nodes: dict[str, str] = {}
        cursors: dict[str, CursorTracker] = {}
        try:
            for name in names:
                clients[name], welcome = await connect_avoiding(cluster, creds[name]["token"], name,
                                                                set(nodes.values()))
                nodes[name] = welcome["node"]
                cursors[name] = CursorTracker(welcome["cursor"])
            assert len(set(nodes.values())) == 3, nodes
            assert set(nodes.values()) == set(cluster.edge_nodes()), (nodes, list(cluster.edge_nodes()))

            # Presence is cluster-wide: every user, on its own edge, is told 3.
            for name in names:
                await clients[name].wait_seen(lambda e: is_type("presence", room="lobby")(e) and e["count"] == 3, 20,
                                              what="presence 3 in lobby")

            # alice's whisper crosses edges to 小明 and does not reach carol.
            alice, xiaoming, carol = clients["alice"], clients["小明"], clients["carol"]
            await alice.send({"type": "whisper", "to": "小明", "text": "只给小明", "ref": 1})
            ack = await alice.wait_seen(is_type("ack", ref=1), 15, what="ack of the whisper")
            got = await xiaoming.wait_seen(is_type("private", text="只给小明"), 15, what="the whisper")
            assert got["from"]["nickname"] == "alice" and got["id"] == ack["id"], (got, ack)
            cursors["小明"].observe(got)
            await alice.send({"type": "whisper", "to": "carol", "text": "for carol", "ref": 2})
            await carol.wait_seen(is_type("private", text="for carol"), 15, what="carol's own whisper")
            assert not carol.seen(lambda e: e.get("text") == "只给小明"), carol.events

            # Socket.IO through the LB's round robin (polling, then the upgrade), without a
            # cookie jar: a fourth user in the lobby, counted on every edge.
            session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            dave = SIO("dave", http_session=session)
            try:
                await dave.connect(cluster.lb, {"nickname": "dave", "avatar": "2.jpg"}, None)
                assert (await dave.welcome())["nickname"] == "dave"
                await wait_transport(dave, None)
                await dave.client.call("join", "lobby", timeout=10)
                await dave.wait("presence", lambda a: a[0].get("room") == "lobby" and a[0].get("count") == 4, 20)
                await carol.wait_seen(lambda e: is_type("presence", room="lobby")(e) and e["count"] == 4, 20,
                                      what="presence 4 with the Socket.IO user")
            finally:
                await dave.close()
                await session.close()

            # Scale out while everyone is connected: the LB reaches five edges, and the
            # three sockets still work.
            started = time.monotonic()
            await asyncio.to_thread(cluster.run, "up", "-d", "--no-recreate", "--scale", "edge=5")
            TIMINGS["up --scale edge=5"] = time.monotonic() - started
            edges = cluster.edge_nodes()
            assert len(edges) == 5 and set(nodes.values()) <= set(edges), (nodes, list(edges))
            await asyncio.to_thread(lb_nodes, cluster, set(edges), 120)
            TIMINGS["LB reaches 5 edges"] = time.monotonic() - started
            await carol.send({"type": "say", "room": "lobby", "text": "after scaling", "ref": 3})
            for name in names:
                event = await clients[name].wait_seen(is_type("message", text="after scaling"), 15,
                                                      what="the room message after scaling")
                cursors[name].observe(event)

            # Kill the edge container serving 小明: the socket drops; what is said
            # meanwhile reaches 小明 after a reconnect through the LB with the cursor.
            victim = edges[nodes["小明"]]
            victim.kill()
            await xiaoming.wait_closed(30)
            said = []
            for n in range(3):
                await alice.send({"type": "say", "room": "lobby", "text": f"while away {n}", "ref": 10 + n})
                said.append((await alice.wait_seen(is_type("ack", ref=10 + n), 15, what=f"ack {n}"))["id"])
            started = time.monotonic()
            others = {nodes["alice"], nodes["carol"]}
            xiaoming, welcome = await connect_avoiding(cluster, creds["小明"]["token"], "小明 again",
                                                       set(), cursor=str(cursors["小明"]), timeout=90)
            clients["小明"] = xiaoming
            TIMINGS["reconnect after kill"] = time.monotonic() - started
            resumed = [await xiaoming.recv_until(is_type("message", text=f"while away {n}"), 20, what=f"missed {n}")
                       for n in range(3)]
            assert [e["id"] for e in resumed] == said, (resumed, said)
            await alice.send({"type": "say", "room": "lobby", "text": "welcome back", "ref": 20})
            await xiaoming.wait_seen(is_type("message", text="welcome back"), 15, what="a live message after resume")
            repeated = [e["id"] for e in xiaoming.seen(lambda e: e.get("type") == "message")]
            assert len(repeated) == len(set(repeated)), f"an id delivered twice after the resume: {repeated}"
            victim.reload()
            print(f"killed edge {nodes['小明']}: {victim.attrs['State']['Status']}; "
                  f"小明 resumed on {welcome['node']} (alice, carol on {sorted(others)})")
            # The whisper still crosses edges from wherever 小明 is now.
            await carol.send({"type": "whisper", "to": "小明", "text": "still there?", "ref": 21})
            await xiaoming.wait_seen(is_type("private", text="still there?"), 15, what="a whisper after resume")
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)

    try:
        run(body(), 600)
    except BaseException:
        print(cluster.logs())
        raise


def test_down_leaves_nothing_behind(cluster: Compose):
    assert cluster.containers(), "nothing is running before down"
    cluster.down()
    assert cluster.leftovers() == {"containers": [], "networks": [], "volumes": []}
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cluster.lb}/healthz", timeout=2, trust_env=False)
