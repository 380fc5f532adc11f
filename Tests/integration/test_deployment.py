"""Deployment: the compose file validates and agrees with the Procfile and LB configs,
and the compose topology runs without Docker — Redis, three edges and the load balancer
each in its own network namespace with its own address on a bridge — with a cross-node
private chat through the LB.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from switchboard_harness import DEFAULT_SECRET, WSClient, run, switchboard_bin

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# Static agreement between compose, Procfile and the LB configs
# --------------------------------------------------------------------------------------


def test_compose_config_validates():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (scripts/deps.sh test installs Debian's docker-compose)"
    result = subprocess.run([compose, "-f", str(ROOT / "docker/docker-compose.yml"), "config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "edge:" in result.stdout and "redis:" in result.stdout and "lb:" in result.stdout


def test_compose_edge_is_scalable():
    text = (ROOT / "docker/docker-compose.yml").read_text()
    edge = text.split("\n  edge:\n", 1)[1].split("\n  lb:\n", 1)[0]
    assert "container_name" not in edge, "a fixed container_name prevents --scale edge=N"
    assert "ports:" not in edge, "fixed host ports prevent --scale edge=N (use expose)"
    assert "NODE_ID" not in edge.replace("# NODE_ID", ""), "node ids must come from the replica hostname"


def test_configs_agree_on_ports_and_environment():
    procfile = (ROOT / "Procfile").read_text()
    compose = (ROOT / "docker/docker-compose.yml").read_text()
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    local_lb = (ROOT / "deploy/haproxy.cfg").read_text()
    docker_lb = (ROOT / "docker/haproxy.cfg").read_text()
    # Every edge port of the Procfile is a server of the local LB, and the LB listens on 8080.
    edge_ports = re.findall(r"--port (\d+) --redis", procfile)
    assert edge_ports == ["8081", "8082", "8083"]
    for port in edge_ports:
        assert f"127.0.0.1:{port} check" in local_lb
    assert "bind 0.0.0.0:8080" in local_lb and "bind 0.0.0.0:8080" in docker_lb
    # The compose edge listens where the compose LB looks for it.
    compose_port = re.search(r'PORT: "(\d+)"', compose).group(1)
    assert f"edge:{compose_port}" in docker_lb
    assert f'- "{compose_port}"' in compose
    # The LB's host port: 8080 unless SWITCHBOARD_LB_PORT says otherwise (the engine test).
    assert '"${SWITCHBOARD_LB_PORT:-8080}:8080"' in compose
    # The LB resolves edges with the container's own resolver, on any engine.
    # (A `nameserver 127.0.0.11:53` exists only under Docker: under Podman every request was a 503.)
    assert "parse-resolv-conf" in docker_lb and not re.search(r"^\s*nameserver", docker_lb, re.M)
    # Redis: the Procfile's URL matches its redis port; compose uses the service name.
    assert re.search(r"redis-server --port 6379", procfile) and "redis://127.0.0.1:6379" in procfile
    assert "REDIS_URL: redis://redis:6379" in compose
    # Environment names are the ones `switchboard serve` reads.
    help_text = subprocess.run([switchboard_bin(), "serve", "--help"], capture_output=True, text=True).stdout
    for name in ["PORT", "REDIS_URL", "LOG_LEVEL"]:
        assert f"({name})" in help_text, f"serve --help does not document {name}"
    for name in ["SWITCHBOARD_SECRET", "SWITCHBOARD_API_KEY"]:
        assert name in compose
    # Both LB configs health-check /readyz and pin nothing: round robin for every path,
    # Socket.IO included (issue 16: a node forwards requests for another node's session).
    for lb in (local_lb, docker_lb):
        assert "option httpchk GET /readyz" in lb
        assert "timeout tunnel" in lb
        assert "cookie" not in lb and "balance roundrobin" in lb and "use_backend" not in lb
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "USER switchboard" in dockerfile and "libhiredis0.14" in dockerfile


# --------------------------------------------------------------------------------------
# The compose topology in network namespaces
# --------------------------------------------------------------------------------------


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


class Topology:
    """A bridge with Redis, three edges and haproxy, each in its own namespace."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"sbbr{tag}"
        self.subnet = f"10.{77 + int(tag[:1], 16)}.{int(tag[1:], 16) % 250}"
        self.hosts = {"redis": 10, "edge-1": 11, "edge-2": 12, "edge-3": 13, "lb": 20}
        self.namespaces = {name: f"sb{tag}{name.replace('-', '')}" for name in self.hosts}
        self.processes: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}
        self.workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sb-netns-{tag}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts[host]}"

    def create(self) -> None:
        probe = sh("ip", "netns", "add", f"{self.namespaces['redis']}", check=False)
        if probe.returncode != 0:
            pytest.fail(f"cannot create network namespaces (ip netns add): {probe.stderr.strip()}", pytrace=False)
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for index, (host, ns) in enumerate(self.namespaces.items()):
            if host != "redis":
                sh("ip", "netns", "add", ns)
            outside, inside = f"{self.bridge}v{index}", f"{self.bridge}p{index}"
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", outside, "master", self.bridge)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.address(host)}/24", "dev", inside)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", f"{self.subnet}.1")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def spawn(self, host: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.workdir / f"{host}.log"
        self.logs[host] = log
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespaces[host], *args],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env or dict(os.environ))
        self.processes.append(proc)
        return proc

    def destroy(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in self.namespaces.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def haproxy_config(self) -> Path:
        # The local LB config, pointed at the edges' namespace addresses.
        text = (ROOT / "deploy/haproxy.cfg").read_text()
        text = text.replace("bind 0.0.0.0:8080", f"bind {self.address('lb')}:8080")
        for n, port in ((1, 8081), (2, 8082), (3, 8083)):
            text = text.replace(f"127.0.0.1:{port}", f"{self.address(f'edge-{n}')}:8081")
        path = self.workdir / "haproxy.cfg"
        path.write_text(text)
        return path

    def tail(self) -> str:
        return "\n".join(f"--- {host}\n{path.read_text()[-1500:]}" for host, path in self.logs.items() if path.exists())


def wait_http(url: str, timeout: float = 30.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2, trust_env=False)
            if response.status_code == status:
                return
            last = response.status_code
        except httpx.HTTPError as error:
            last = error
        time.sleep(0.2)
    raise AssertionError(f"{url} not {status} after {timeout}s: {last}")


@pytest.fixture
def topology():
    if os.geteuid() != 0:
        pytest.fail("the namespace cluster test needs root (ip netns)", pytrace=False)
    for tool in ("ip", "haproxy", "redis-server"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed", pytrace=False)
    topo = Topology()
    try:
        topo.create()
        yield topo
    finally:
        topo.destroy()


def test_compose_topology_in_network_namespaces(topology: Topology):
    topo = topology
    env = dict(os.environ, SWITCHBOARD_SECRET=DEFAULT_SECRET, LOG_LEVEL="info")
    topo.spawn("redis", ["redis-server", "--bind", topo.address("redis"), "--port", "6379", "--save", "", "--appendonly", "no",
                         "--protected-mode", "no"])
    for n in (1, 2, 3):
        host = f"edge-{n}"
        topo.spawn(host, [switchboard_bin(), "serve", "--host", topo.address(host), "--port", "8081",
                          "--redis", f"redis://{topo.address('redis')}:6379", "--node-id", host], env)
    topo.spawn("lb", ["haproxy", "-db", "-f", str(topo.haproxy_config())])
    lb = f"http://{topo.address('lb')}:8080"
    try:
        for n in (1, 2, 3):
            wait_http(f"http://{topo.address(f'edge-{n}')}:8081/readyz")
        wait_http(f"{lb}/readyz")
        # haproxy may still count an edge down from a check made before it listened.
        seen: set = set()
        deadline = time.monotonic() + 15
        while len(seen) < 3 and time.monotonic() < deadline:
            response = httpx.get(f"{lb}/healthz", timeout=2, trust_env=False)
            if response.status_code == 200:
                seen.add(response.json().get("node"))
            time.sleep(0.05)
        assert len(seen) == 3, f"the LB reaches only {sorted(seen)}"
    except AssertionError as error:
        raise AssertionError(f"{error}\n{topo.tail()}") from None

    async def body() -> None:
        # Log in and connect through the LB until A and B sit on different edges.
        async def user(name: str, avoid: str | None = None):
            for _ in range(12):
                async with httpx.AsyncClient(trust_env=False) as http:
                    creds = (await http.post(f"{lb}/api/login", json={"nickname": name, "avatar": "1.jpg"})).json()
                client, welcome = await WSClient.session(f"ws://{topo.address('lb')}:8080/ws", creds["token"], ["lobby"], name=name)
                if welcome["node"] != avoid:
                    return client, welcome
                await client.close()
                name = name + "x"
                # Each try is two requests (login, upgrade): with an even number of edges
                # up (one still failing its first health checks) round robin would put
                # every upgrade on the same edge. One more request shifts the phase.
                async with httpx.AsyncClient(trust_env=False) as http:
                    await http.get(f"{lb}/healthz")
                await asyncio.sleep(0.3)
            raise AssertionError("round robin never placed the users on different edges")

        alice, wa = await user("alice")
        bob, wb = await user("bob", avoid=wa["node"])
        try:
            assert wa["node"] != wb["node"], (wa, wb)
            await alice.send({"type": "whisper", "to": wb["nickname"], "text": "across the bridge", "ref": 1})
            got = await bob.recv_until(lambda e: e.get("type") == "private", 10)
            assert got["text"] == "across the bridge" and got["from"]["nickname"] == wa["nickname"]
            ack = await alice.recv_until(lambda e: e.get("type") == "ack" and e.get("ref") == 1, 10)
            assert ack["id"]
            # And a room message the other way.
            await bob.send({"type": "say", "room": "lobby", "text": "hello from " + wb["node"]})
            message = await alice.recv_until(lambda e: e.get("type") == "message", 10)
            assert message["text"] == "hello from " + wb["node"]
            cluster = httpx.get(f"{lb}/cluster", timeout=5, trust_env=False).json()
            assert {n["id"] for n in cluster["nodes"]} >= {"edge-1", "edge-2", "edge-3"}, cluster
        finally:
            await alice.close()
            await bob.close()

    try:
        run(body(), 60)
    except BaseException:
        print(topo.tail())
        raise


# --------------------------------------------------------------------------------------
# The shipped LB config ends a stream on the edge when its client goes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["deploy/haproxy.cfg", "docker/haproxy.cfg"])
@pytest.mark.parametrize("path", ["/sse", "/iframe"])
def test_lb_ends_a_stream_on_the_edge_when_its_client_closes(config: str, path: str):
    """A browser that leaves a room on SSE or iframe closes its stream and opens another.
    Without `option abortonclose` haproxy keeps the edge side of a closed stream open
    (a FIN after a complete request may be a half-close) until the next keep-alive write
    fails — 15–30 s in which the user stays online in the rooms it left (a browser test's
    online count did not drop). With it, the edge sees the close at once."""
    import socket

    from switchboard_harness import HAProxy, SwitchboardNode, free_port, login, metric_sum, metrics, unique_name

    text = (ROOT / config).read_text()
    assert re.search(r"^\s*option abortonclose\s*$", text, re.M), f"{config}: no `option abortonclose`"
    node = SwitchboardNode(node_id="edge-lb").start()
    # Only the defaults' behaviour matters: the shipped defaults section, one local backend.
    defaults = re.search(r"^defaults\n(.*?)(?=^\S)", text, re.M | re.S).group(1)
    port = free_port()
    cfg = Path(os.environ.get("TMPDIR", "/tmp")) / f"sb-lb-{secrets.token_hex(3)}.cfg"
    cfg.write_text(f"global\n    maxconn 100\ndefaults\n{defaults}\nfrontend www\n    bind 127.0.0.1:{port}\n"
                   f"    default_backend edges\nbackend edges\n    server e1 127.0.0.1:{node.port}\n")
    lb = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    transport = path.lstrip("/")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        token = login(f"http://127.0.0.1:{port}", unique_name("leaver"))["token"]
        query = f"token={token}&rooms=lobby" + ("&callback=cb" if path == "/iframe" else "")
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(f"GET {path}?{query} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:300]
        deadline = time.monotonic() + 5
        while metric_sum(metrics(node), "switchboard_connections", transport=transport) != 1:
            assert time.monotonic() < deadline, "the stream never counted as open"
            time.sleep(0.05)
        sock.close()
        closed_at = time.monotonic()
        while metric_sum(metrics(node), "switchboard_connections", transport=transport) != 0:
            assert time.monotonic() - closed_at < 3, f"{config}: the edge still holds the {transport} stream 3 s after its client closed"
            time.sleep(0.05)
    finally:
        lb.terminate()
        lb.wait(5)
        cfg.unlink(missing_ok=True)
        node.stop()
