"""Socket.IO reconnect (issue 5): python-socketio's AsyncClient behind a round-robin
haproxy without affinity (issue 16: no cookie; a node forwards requests for another
node's session) in front of two real nodes on one real `redis-server`. The client's node
is SIGKILLed; its session is answered `Session ID unknown` by the survivor, and the
client reconnects through the balancer to the survivor and goes on talking with a
native client there — over `['polling']`, `['websocket']` and the default upgrade.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import aiohttp
import pytest

import switchboard_harness as h
from switchboard_harness import SIOs, Clients, login, run, text_is, wait_transport

TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": None}
NAMESPACES = ["--socketio-namespaces", "/chat"]


@pytest.fixture(params=list(TRANSPORTS), ids=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Optional[list[str]]:
    return TRANSPORTS[request.param]


# --------------------------------------------------------------------------------------
# Reconnect after the node dies, behind a round-robin load balancer
# --------------------------------------------------------------------------------------

HAPROXY_CONFIG = """
global
    maxconn 1000
defaults
    mode http
    option http-server-close
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend www
    bind 127.0.0.1:{port}
    default_backend edges
backend edges
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 1 rise 1
    server edge-1 127.0.0.1:{port1} check
    server edge-2 127.0.0.1:{port2} check
"""


@pytest.fixture
def balanced(redis_factory, node_factory) -> Iterator[tuple[str, list[h.SwitchboardNode]]]:
    """Two fresh nodes behind a round-robin haproxy without affinity: (LB url, nodes)."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed")
    redis = redis_factory()
    nodes = [node_factory(node_id=f"edge-{i}", redis=redis.url, extra_args=NAMESPACES) for i in (1, 2)]
    for node in nodes:
        node.wait_ready(30)
    port = h.free_port()
    config = Path(tempfile.mkdtemp(prefix="sio-haproxy-")) / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, port1=nodes[0].port, port2=nodes[1].port))
    log = open(config.with_suffix(".log"), "wb")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if h.http_client(1).get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except Exception:
                pass
            assert proc.poll() is None, config.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "haproxy did not come up"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", nodes
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


def test_reconnect_after_node_killed(balanced: tuple[str, list[h.SwitchboardNode]],
                                     transport: Optional[list[str]]) -> None:
    lb, nodes = balanced

    async def body() -> None:
        # No cookie jar: nothing pins the client to a node.
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        async with SIOs() as sios, Clients() as natives:
            nickname = h.unique_name("sio")
            token = login(nodes[0].url, nickname)["token"]
            client = sios.new(nickname, reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1,
                              http_session=session)
            await client.connect(lb, {"token": token}, transport)
            first = await client.welcome()
            await wait_transport(client, transport)
            # Every request may go to either node.
            for i in range(3):
                text = f"warmup-{i}-{h.unique_name()}"
                await client.client.emit("chat", {"text": text, "echo": True})
                await client.wait("chat", text_is(text))
            dead = next(n for n in nodes if n.node_id == first["node"])
            alive = next(n for n in nodes if n is not dead)
            native, _, native_creds = await natives.user(alive, rooms=["lobby"])

            client.events.clear()
            dead.kill()
            welcome = await client.welcome()  # the reconnect's
            assert welcome["node"] == alive.node_id and welcome["nickname"] == nickname
            await wait_transport(client, transport)
            said = f"after-{h.unique_name()}"
            await native.send({"type": "say", "room": "lobby", "text": said})
            await client.wait("message", text_is(said))
            text = f"back-{h.unique_name()}"
            await client.client.emit("chat", {"text": text})
            await native.wait_seen(lambda e: e.get("type") == "chat" and e["data"].get("text") == text, what="chat")
        await session.close()

    run(body(), timeout=90)
