"""Shared by the tests that run a compose file for real on a container engine
(test_compose_cluster.py: docker/docker-compose.yml; test_compose_redis_cluster.py:
docker/docker-compose.redis-cluster.yml).

The engine is the shared script's (../shared/containers/setup.sh next to the project, or
CONTAINERS_SETUP): Podman with its Docker-compatible API socket and stand-ins for the
public images the Dockerfile and compose files name. If it cannot come up, the tests
fail — they never skip. Each module runs its own compose project (own name, own LB port
on 127.0.0.1); both tag the edge image `switchboard:test-<hash of the project path>`, so
the image one module built is the other's build cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import httpx
import pytest

from switchboard_harness import WSClient, free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 45 * 60  # a cold release build on a loaded 2-core machine


def setup_script() -> Path:
    """CONTAINERS_SETUP, else the shared folder next to the project, else the
    workplace's shared folder (a clone made elsewhere on the same machine)."""
    configured = os.environ.get("CONTAINERS_SETUP")
    if configured:
        return Path(configured)
    candidates = [ROOT.parent / "shared/containers/setup.sh", Path("/work/shared/containers/setup.sh")]
    return next((path for path in candidates if path.is_file()), candidates[0])


def start_engine(timings: dict[str, float]) -> str:
    """Runs the shared setup script (idempotent) and returns the engine's DOCKER_HOST;
    fails the test (never skips) when the engine cannot come up."""
    script = setup_script()
    if not script.is_file():
        pytest.fail(f"container engine setup script not found at {script} "
                    "(the shared folder next to the project, or CONTAINERS_SETUP=path)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the container engine (rootful Podman) needs root", pytrace=False)
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed (scripts/deps.sh test installs it)", pytrace=False)
    started = time.monotonic()
    # The script starts the API service only when its recorded process is gone; a service
    # that dies right after that check (another run on the machine that ended and took its
    # process group with it) left the socket refusing. Up to three tries, each checked by
    # a ping of the API.
    stop_service_without_cwd(script)
    for attempt in range(3):
        # From "/": the API service it may start keeps its working directory for life, and
        # a checkout's directory can be removed while the service lives on.
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd="/")
        if result.returncode != 0:
            pytest.fail(f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
                        pytrace=False)
        match = re.search(r"export DOCKER_HOST=(\S+)", result.stdout)
        if not match:
            pytest.fail(f"{script} did not say its DOCKER_HOST:\n{result.stdout[-2000:]}", pytrace=False)
        host = match.group(1)
        if engine_answers(host):
            timings["engine setup"] = time.monotonic() - started
            return host
        time.sleep(1)
    pytest.fail(f"the container engine's API at {host} does not answer after {script} (3 tries)", pytrace=False)


def stop_service_without_cwd(script: Path) -> None:
    """Stops (`setup.sh stop`) an API service whose working directory was deleted: it
    still answers pings, but every container it starts fails ("conmon: Failed to get
    working directory" → "write child: broken pipe"). It happened after the checkout that
    had started the service was removed; the script then starts a fresh one."""
    pid_file = Path(os.environ.get("CONTAINERS_STATE", "/tmp/sb-containers")) / "service.pid"
    try:
        cwd = os.readlink(f"/proc/{int(pid_file.read_text().strip())}/cwd")
    except (OSError, ValueError):
        return
    if cwd.endswith(" (deleted)"):
        subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True, timeout=60, cwd="/")


def engine_answers(docker_host: str) -> bool:
    """Whether the engine's Docker API answers `GET /_ping` within 5 s (a unix:// host)."""
    import socket

    if not docker_host.startswith("unix://"):
        return True  # another kind of host: the SDK's own connection says the rest
    path = docker_host.removeprefix("unix://")
    for _ in range(10):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def image_tag() -> str:
    """The edge image's tag: one per checkout, the same for every compose test module."""
    digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
    return os.environ.get("SWITCHBOARD_IMAGE", f"switchboard:test-{digest}")


class ComposeProject:
    """One compose project of `compose_file` on the engine; step durations go to `timings`."""

    def __init__(self, compose_file: Path, docker_host: str, timings: dict[str, float], secret: str,
                 api_key: str) -> None:
        import docker  # the Docker SDK for Python (scripts/deps.sh test)

        self.compose_file = compose_file
        self.timings = timings
        self.project = f"sbtest{secrets.token_hex(4)}"
        self.port = free_port()
        self.lb = f"http://127.0.0.1:{self.port}"
        self.lb_ws = f"ws://127.0.0.1:{self.port}/ws"
        self.image = image_tag()
        self.env = dict(
            os.environ,
            DOCKER_HOST=docker_host,
            # The engine builds (Buildah under Podman), not a `docker` CLI that may be absent.
            COMPOSE_DOCKER_CLI_BUILD="0",
            SWITCHBOARD_IMAGE=self.image,
            SWITCHBOARD_LB_PORT=f"127.0.0.1:{self.port}",
            SWITCHBOARD_SECRET=secret,
            SWITCHBOARD_API_KEY=api_key,
        )
        self.api = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
        self.down_done = False

    def run(self, *args: str, timeout: float = 300, log: Optional[Path] = None) -> subprocess.CompletedProcess:
        command = ["docker-compose", "-p", self.project, "-f", str(self.compose_file), *args]
        if log is not None:
            with log.open("w") as out:
                result = subprocess.run(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                        timeout=timeout)
            output = log.read_text()
        else:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
            output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(command[3:])} failed ({result.returncode}):\n{output[-4000:]}"
        return result

    def timed(self, step: str, *args: str, timeout: float = 300, log: Optional[Path] = None) -> None:
        started = time.monotonic()
        self.run(*args, timeout=timeout, log=log)
        self.timings[step] = time.monotonic() - started

    def labelled(self, service: Optional[str] = None) -> dict:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return {"label": labels}

    def containers(self, service: Optional[str] = None, all: bool = False) -> list:
        return self.api.containers.list(all=all, filters=self.labelled(service))

    def edge_nodes(self) -> dict[str, object]:
        """Node id → running edge container. NODE_ID is unset in the compose files: a node's
        id is its container's hostname and port (`serve`'s default)."""
        nodes = {}
        for container in self.containers("edge"):
            env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"] or [] if "=" in item)
            nodes[f"{container.attrs['Config']['Hostname']}-{env.get('PORT')}"] = container
        return nodes

    def leftovers(self) -> dict[str, list[str]]:
        return {
            "containers": [c.name for c in self.containers(all=True)],
            "networks": [n.name for n in self.api.networks.list()
                         if n.name.startswith(self.project + "_")
                         or (n.attrs.get("Labels") or {}).get("com.docker.compose.project") == self.project],
            "volumes": [v.name for v in self.api.volumes.list(filters=self.labelled())],
        }

    def logs(self, tail: int = 40) -> str:
        try:
            result = subprocess.run(["docker-compose", "-p", self.project, "-f", str(self.compose_file), "logs",
                                     "--no-color", "--tail", str(tail)], env=self.env, capture_output=True, text=True,
                                    timeout=60)
            return result.stdout[-8000:]
        except Exception as error:  # noqa: BLE001 - diagnostics only
            return f"(logs unavailable: {error!r})"

    def down(self) -> None:
        self.timed("down", "down", "-v", "--remove-orphans", "--timeout", "10", timeout=180)
        self.down_done = True


def lb_nodes(compose: ComposeProject, expected: set, timeout: float) -> set:
    """Node ids answering /healthz through the LB, until they are `expected` or the deadline."""
    seen: set = set()
    last: object = None
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, trust_env=False) as http:
        while seen != expected and time.monotonic() < deadline:
            try:
                response = http.get(f"{compose.lb}/healthz")
                last = response.status_code
                if response.status_code == 200:
                    seen.add(response.json().get("node"))
            except httpx.HTTPError as error:
                last = error
            time.sleep(0.05)
    assert seen == expected, f"the LB reaches {sorted(seen)}, the edges are {sorted(expected)} (last: {last})"
    return seen


async def login(compose: ComposeProject, nickname: str) -> dict:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        response = await http.post(f"{compose.lb}/api/login", json={"nickname": nickname, "avatar": "1.jpg"})
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


async def connect_avoiding(compose: ComposeProject, token: str, name: str, taken: set, cursor: Optional[str] = None,
                           timeout: float = 60, rooms: tuple = ("lobby",)) -> "tuple[WSClient, dict]":
    """A WebSocket through the LB on an edge not in `taken` (round robin decides; a refused
    or failed connection — an edge just killed — is tried again until the deadline)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            client, welcome = await WSClient.session(compose.lb_ws, token, list(rooms), cursor=cursor, name=name)
        except Exception as error:  # noqa: BLE001 - refused, reset, 503 from the LB, no welcome
            last = error
            await asyncio.sleep(0.2)
            continue
        if welcome["node"] not in taken:
            return client, welcome
        await client.close()
        # One more request through the LB shifts round robin's phase for the next try.
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            await http.get(f"{compose.lb}/healthz")
    raise AssertionError(f"{name}: no connection through the LB to an edge outside {sorted(taken)} "
                         f"within {timeout}s (last: {last!r})")
