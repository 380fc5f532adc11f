"""Test harness for end-to-end tests of the `switchboard` executable.

Black-box: it starts real processes (`switchboard serve`, `redis-server`) on free local
ports and talks to them with off-the-shelf clients (`httpx`, `websockets`). Nothing here
imports or knows the server's code; everything follows PROTOCOL.md.

Reused by every integration test file (single node, clusters, Redis outages), so it is
deliberately general:

* `free_port()`
* `SwitchboardNode` — one `switchboard serve` process (optionally `--redis`, `--node-id`)
* `RedisServer` — one throw-away `redis-server` (kill / restart on the same port)
* `login()` / `login_response()` — `POST /api/login`
* `WSClient` — an async WebSocket client that records every event
* `CursorTracker` — builds the resume cursor a client would send
* `run()` — runs an async test body with a hard timeout (no pytest-asyncio needed)
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import ctypes
import itertools
import json
import os
import re
import secrets as _secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

DEFAULT_BIN = str(Path(__file__).resolve().parents[2] / ".build/debug/switchboard")
DEFAULT_SECRET = "integration-test-secret-0123456789abcdef"
DEFAULT_API_KEY = "integration-test-api-key"

MESSAGE_ID = re.compile(r"^[0-9]+-[0-9]+$")


def switchboard_bin() -> str:
    return os.environ.get("SWITCHBOARD_BIN", DEFAULT_BIN)


def redis_server_bin() -> str:
    return os.environ.get("REDIS_SERVER_BIN", "redis-server")


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

_LIVE_PROCESSES: "set[subprocess.Popen]" = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE_PROCESSES):
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except Exception:
                pass
        _LIVE_PROCESSES.discard(proc)


atexit.register(_kill_leftovers)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()
    _LIVE_PROCESSES.add(proc)
    return proc


def _terminate(proc: Optional[subprocess.Popen], grace: float = 5.0) -> Optional[int]:
    """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
    if proc is None:
        return None
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode
    finally:
        _LIVE_PROCESSES.discard(proc)


def _hard_kill(proc: Optional[subprocess.Popen]) -> Optional[int]:
    if proc is None:
        return None
    try:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        return proc.returncode
    finally:
        _LIVE_PROCESSES.discard(proc)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_index() -> Optional[int]:
    """pytest-xdist's worker number (PYTEST_XDIST_WORKER=gw0, gw1, …), None when not under xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


_PORT_SLICE = 1500
_PORT_BASE = 10000


def _port_candidates() -> Optional[Iterator[int]]:
    """Ports this process hands out: a slice of its own below the kernel's ephemeral range
    (so no client socket's local port can take one between `free_port()` and the
    server's bind), one slice per pytest-xdist worker (so parallel workers never pick the
    same port), walked from a random start (so concurrent runs rarely meet). None when
    the ephemeral range leaves no room below it: then the kernel picks (bind to port 0)."""
    slices = (_ephemeral_low() - _PORT_BASE) // _PORT_SLICE
    if slices < 2:
        return None
    index = _worker_index()
    # Slice 0 when not under xdist; workers gw0, gw1, … get slices 1, 2, …
    slot = 0 if index is None else 1 + index % (slices - 1)
    lo = _PORT_BASE + slot * _PORT_SLICE
    start = _secrets.randbelow(_PORT_SLICE)
    return itertools.cycle([lo + (start + i) % _PORT_SLICE for i in range(_PORT_SLICE)])


_ports: Optional[Iterator[int]] = None
_ports_ready = False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (see `_port_candidates`: with
    pytest-xdist every worker has its own range, outside the kernel's ephemeral ports)."""
    global _ports, _ports_ready
    if not _ports_ready:
        _ports, _ports_ready = _port_candidates(), True
    if _ports is not None:
        for _ in range(_PORT_SLICE):
            port = next(_ports)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CRASH_MARKERS = ("Fatal error", "Precondition failed", "Assertion failed", "*** Program crashed", "*** Signal")


def _tail(path: Path, limit: int = 6000) -> str:
    """The end of a log; when it holds a Swift crash report, its first lines (the
    reason and the crashed thread's top frames) instead of the other threads' stacks."""
    try:
        data = path.read_bytes()
    except OSError:
        return "<no log>"
    text = data.decode("utf-8", "replace")
    last_start = text.rfind("\n=== start ")
    if last_start > 0:  # only the current run of a restarted process
        text = text[last_start + 1:]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(marker in line for marker in _CRASH_MARKERS):
            start = max(0, i - 15)
            crashed = next((j for j in range(i, len(lines)) if lines[j].startswith("Thread ") and lines[j].rstrip().endswith("crashed:")), i)
            head = lines[start:i + 5] + ["…"] + lines[crashed:crashed + 25]
            return "\n".join(head)[: limit * 2]
    tail = text[-limit:]
    return tail if len(text) <= limit else "…" + tail


_log_dir: Optional[Path] = None


def log_dir() -> Path:
    global _log_dir
    if _log_dir is None:
        _log_dir = Path(tempfile.mkdtemp(prefix="switchboard-it-"))
    return _log_dir


_counter = itertools.count(1)

#: Every node created in this process (the conftest prints the logs of running ones
#: when a test fails).
ALL_NODES: "list[SwitchboardNode]" = []


class SwitchboardNode:
    """One `switchboard serve` process.

    Call `start()` (done by the fixtures), which waits for `GET /healthz`. Always call
    `stop()` (SIGTERM, SIGKILL after 5 s) — the fixtures do it in their finalizers.
    """

    def __init__(
        self,
        port: Optional[int] = None,
        node_id: Optional[str] = None,
        redis: Optional[str] = None,
        extra_args: Iterable[str] = (),
        secret: Optional[str] = DEFAULT_SECRET,
        api_key: Optional[str] = DEFAULT_API_KEY,
        log_level: str = "info",
        env: Optional[dict[str, str]] = None,
        binary: Optional[str] = None,
        log_path: Optional[Path] = None,
    ) -> None:
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.node_id = node_id
        self.redis = redis
        self.extra_args = list(extra_args)
        self.secret = secret
        self.api_key = api_key
        self.log_level = log_level
        self.extra_env = dict(env or {})
        self.binary = binary or switchboard_bin()
        n = next(_counter)
        self.log_path = log_path or log_dir() / f"node-{n}-{node_id or 'anon'}.log"
        self.proc: Optional[subprocess.Popen] = None
        ALL_NODES.append(self)

    # -- addresses --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # -- process ----------------------------------------------------------------------
    def args(self) -> list[str]:
        args = [self.binary, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.node_id is not None:
            args += ["--node-id", self.node_id]
        if self.redis is not None:
            args += ["--redis", self.redis]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("HOST", "PORT", "REDIS_URL", "NODE_ID", "SWITCHBOARD_SECRET", "SWITCHBOARD_API_KEY", "LOG_LEVEL")
            and not k.startswith("SWITCHBOARD_")
        }
        if self.secret is not None:
            env["SWITCHBOARD_SECRET"] = self.secret
        if self.api_key is not None:
            env["SWITCHBOARD_API_KEY"] = self.api_key
        env["LOG_LEVEL"] = self.log_level
        env.update(self.extra_env)
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def start(self, timeout: float = 30.0) -> "SwitchboardNode":
        if not os.path.exists(self.binary):
            raise RuntimeError(f"switchboard binary not found at {self.binary} (set SWITCHBOARD_BIN)")
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            with open(self.log_path, "ab") as log:
                log.write(f"=== start {' '.join(self.args())}\n".encode())
            self.proc = _spawn(self.args(), self.environment(), self.log_path)
            try:
                self.wait_healthy(timeout)
                return self
            except _ExitedEarly:
                _hard_kill(self.proc)
                if attempt + 1 < attempts and "bind" in self.stderr().lower():
                    self.port = free_port()  # lost a race for the port
                    continue
                raise RuntimeError(
                    f"switchboard exited early (code {self.returncode}) on port {self.port}; log:\n{self.stderr()}"
                ) from None
            except BaseException:
                _hard_kill(self.proc)
                raise
        raise AssertionError("unreachable")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last_error: Any = None
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise _ExitedEarly()
                try:
                    r = client.get(self.url + "/healthz")
                    if r.status_code == 200:
                        if self.proc is not None and self.proc.poll() is not None:
                            raise _ExitedEarly()  # someone else answers on this port
                        if self.node_id is not None:
                            node = r.json().get("node") if "json" in r.headers.get("content-type", "") else None
                            if node not in (None, self.node_id):
                                raise RuntimeError(f"/healthz on {self.url} answered by node {node!r}, not {self.node_id!r}")
                        return
                    last_error = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last_error = e
                time.sleep(0.1)
        raise RuntimeError(
            f"switchboard on port {self.port} not healthy after {timeout}s (last: {last_error!r}); log:\n{self.stderr()}"
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits for `GET /readyz` 200 (the broker is connected)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                try:
                    r = client.get(self.url + "/readyz")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code} {r.text}"
                except httpx.HTTPError as e:
                    last = e
                time.sleep(0.1)
        raise AssertionError(f"/readyz of {self.url} not 200 after {timeout}s (last: {last!r}); log:\n{self.stderr()}")

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `grace` s. Returns the exit code."""
        return _terminate(self.proc, grace)

    def kill(self) -> Optional[int]:
        """SIGKILL (a crash)."""
        return _hard_kill(self.proc)

    def restart(self, timeout: float = 30.0) -> "SwitchboardNode":
        """Stops (if running) and starts again on the same port."""
        self.stop()
        self._fixed_port = True
        return self.start(timeout)

    def stderr(self) -> str:
        return _tail(self.log_path)

    def __repr__(self) -> str:
        return f"SwitchboardNode({self.node_id or '-'} @ {self.url}, running={self.running})"


class _ExitedEarly(Exception):
    pass


# --------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------


def conformance_bin() -> str:
    return os.environ.get("SOCKETIO_CONFORMANCE_BIN",
                          str(Path(__file__).resolve().parents[2] / ".build" / "debug" / "socketio-conformance"))


@contextlib.contextmanager
def conformance_server() -> Iterator[int]:
    """Runs `socketio-conformance` on 127.0.0.1 and a free port; yields the port; stops it
    and checks that it exited cleanly."""
    binary = conformance_bin()
    if not os.path.exists(binary):
        raise RuntimeError(f"socketio-conformance not found at {binary}; build it (swift build) or set SOCKETIO_CONFORMANCE_BIN")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="socketio-conformance-", suffix=".log", delete=False)
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"socketio-conformance did not start; log: {Path(log.name).read_text()[-4000:]}")
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, f"socketio-conformance exited with {proc.returncode}"


class RedisServer:
    """A throw-away `redis-server` without persistence on a free port.

    `kill()` simulates an outage; `restart()` starts it again on the same port (empty,
    since nothing is saved)."""

    def __init__(self, port: Optional[int] = None, extra_args: Iterable[str] = (), binary: Optional[str] = None):
        #: A port chosen here may move (once, before the first successful start) when
        #: something else took it meanwhile; restarts keep it.
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.binary = binary or redis_server_bin()
        self.log_path = log_dir() / f"redis-{next(_counter)}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            *self.extra_args,
        ]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        for attempt in range(1 if self._fixed_port else 3):
            with open(self.log_path, "ab") as log:
                log.write(f"=== start {' '.join(self.args())}\n".encode())
            self.proc = _spawn(self.args(), dict(os.environ), self.log_path)
            deadline = time.monotonic() + timeout
            last: Any = None
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if self.ping():
                        self._fixed_port = True  # restarts come back on this port
                        return self
                except OSError as e:
                    last = e
                time.sleep(0.05)
            else:
                _hard_kill(self.proc)
                raise RuntimeError(f"redis-server on {self.port} did not answer PING in {timeout}s ({last!r}); "
                                   f"log:\n{_tail(self.log_path)}")
            _LIVE_PROCESSES.discard(self.proc)
            if not self._fixed_port and "address already in use" in _tail(self.log_path).lower():
                self.port = free_port()  # lost a race for the port
                continue
            break
        raise RuntimeError(f"redis-server exited early (code {self.proc.returncode}); log:\n{_tail(self.log_path)}")

    def ping(self) -> bool:
        return self.command("PING") == "PONG"

    def command(self, *args: Any, timeout: float = 2.0) -> Any:
        """One command over a fresh raw connection (RESP2). Errors come back as RedisError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(_resp_encode(args))
            reader = _RespReader(s)
            return reader.read()

    def kill(self) -> None:
        _hard_kill(self.proc)

    def stop(self) -> None:
        _terminate(self.proc)

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        self.kill()
        return self.start(timeout)

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, running={self.running})"


class RedisError(Exception):
    pass


def _resp_encode(args: Iterable[Any]) -> bytes:
    parts = []
    items = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    parts.append(b"*%d\r\n" % len(items))
    for item in items:
        parts.append(b"$%d\r\n%s\r\n" % (len(item), item))
    return b"".join(parts)


class _RespReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


# --------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------


def http_client(timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=timeout)


def login_response(base_url: str, nickname: Any = None, avatar: Any = "1.jpg", *, body: Any = ..., raw: Optional[bytes] = None,
                   timeout: float = 10.0) -> httpx.Response:
    """`POST /api/login`; returns the response whatever its status."""
    with http_client(timeout) as client:
        if raw is not None:
            return client.post(base_url + "/api/login", content=raw, headers={"Content-Type": "application/json"})
        if body is ...:
            body = {"nickname": nickname, "avatar": avatar}
        return client.post(
            base_url + "/api/login",
            content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )


def login(base_url: str, nickname: str, avatar: str = "1.jpg") -> dict:
    """Logs in; asserts 200 and returns the JSON body ({token, nickname, avatar, node})."""
    r = login_response(base_url, nickname, avatar)
    assert r.status_code == 200, f"login {nickname!r} → HTTP {r.status_code}: {r.text}"
    return r.json()


_names = itertools.count(1)
_run_tag = _secrets.token_hex(2)


def unique_name(prefix: str = "u") -> str:
    """A nickname unique within this test run (≤ 32 characters)."""
    name = f"{prefix}-{_run_tag}{next(_names)}"
    assert len(name) <= 32, name
    return name


def unique_room(prefix: str = "room") -> str:
    return f"{prefix}-{_run_tag}-{next(_names)}"


def forge_token_payload(token: str, **changes: Any) -> str:
    """Returns `token` with its (base64url JSON) payload modified but the old MAC kept —
    what an attacker who edits a token would send."""
    body, _, mac = token.partition(".")
    padded = body + "=" * (-len(body) % 4)
    try:
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except Exception:
        payload = {}
    payload.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(payload, ensure_ascii=False).encode()).rstrip(b"=").decode()
    return new_body + "." + mac


# --------------------------------------------------------------------------------------
# WebSocket client
# --------------------------------------------------------------------------------------


def ws_address(ws_url: str, token: Optional[str] = None, rooms: Optional[Iterable[str]] = None,
               cursor: Optional[str] = None, **query: str) -> str:
    params: dict[str, str] = {}
    if token is not None:
        params["token"] = token
    if rooms:
        params["rooms"] = ",".join(rooms)
    if cursor is not None:
        params["cursor"] = cursor
    params.update(query)
    return ws_url + ("?" + urlencode(params) if params else "")


class WSClient:
    """A recording WebSocket client.

    Every received event is appended to `events` (JSON decoded; binary frames as
    `{"__binary__": bytes}`, undecodable text as `{"__raw__": str}`). `recv*` consume
    events in arrival order; `expect_none` and `peek` only look.
    """

    def __init__(self, ws: Any, name: str = "") -> None:
        self.ws = ws
        self.name = name
        self.events: list[dict] = []
        self.pos = 0  # next event recv() returns
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    # -- connecting -------------------------------------------------------------------
    @classmethod
    async def connect(cls, ws_url: str, token: Optional[str] = None, rooms: Optional[Iterable[str]] = None,
                      cursor: Optional[str] = None, headers: Optional[dict] = None, name: str = "",
                      open_timeout: float = 10.0, **query: str) -> "WSClient":
        url = ws_address(ws_url, token, rooms, cursor, **query)
        ws = await ws_connect(
            url, proxy=None, open_timeout=open_timeout, additional_headers=headers, max_size=None, close_timeout=2,
        )
        return cls(ws, name=name)

    @classmethod
    async def session(cls, ws_url: str, token: str, rooms: Optional[Iterable[str]] = None,
                      cursor: Optional[str] = None, name: str = "", timeout: float = 10.0) -> "tuple[WSClient, dict]":
        """Connects and returns (client, welcome), asserting `welcome` is the first event."""
        client = await cls.connect(ws_url, token, rooms, cursor, name=name)
        try:
            welcome = await client.recv(timeout)
            assert welcome.get("type") == "welcome", f"{name}: first event is not welcome: {welcome}"
        except BaseException:
            await client.close()
            raise
        return client, welcome

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, (bytes, bytearray)):
                    event: dict = {"__binary__": bytes(message)}
                else:
                    try:
                        event = json.loads(message)
                        if not isinstance(event, dict):
                            event = {"__raw__": message}
                    except ValueError:
                        event = {"__raw__": message}
                self.events.append(event)
                self._arrived.set()
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - recorded for diagnostics
            self.events.append({"__reader_error__": repr(e)})
        finally:
            self.closed = True
            rcvd = getattr(self.ws, "close_rcvd", None)
            if rcvd is not None:
                self.close_code, self.close_reason = rcvd.code, rcvd.reason
            else:
                self.close_code = getattr(self.ws, "close_code", None)
                self.close_reason = getattr(self.ws, "close_reason", None)
            self._arrived.set()

    # -- sending ----------------------------------------------------------------------
    async def send(self, event: Any) -> None:
        """Sends a dict as JSON text; a str or bytes as is (for malformed input)."""
        if isinstance(event, (dict, list)):
            await self.ws.send(json.dumps(event, ensure_ascii=False))
        else:
            await self.ws.send(event)

    # -- receiving --------------------------------------------------------------------
    async def _wait_for_more(self, deadline: float) -> bool:
        """Waits until an event beyond `pos` exists; False on timeout or close."""
        while self.pos >= len(self.events):
            if self.closed:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._arrived.clear()
            if self.pos < len(self.events) or self.closed:
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return self.pos < len(self.events)
        return True

    async def recv(self, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        if not await self._wait_for_more(deadline):
            state = f"closed (code {self.close_code} {self.close_reason!r})" if self.closed else f"nothing in {timeout}s"
            raise AssertionError(f"{self.name}: no event: {state}")
        event = self.events[self.pos]
        self.pos += 1
        return event

    async def recv_until(self, predicate: Callable[[dict], bool], timeout: float = 5.0, what: str = "") -> dict:
        """Consumes events until one matches; returns it. Fails with what was seen."""
        deadline = time.monotonic() + timeout
        skipped: list[dict] = []
        while True:
            if not await self._wait_for_more(deadline):
                state = f"closed (code {self.close_code} {self.close_reason!r})" if self.closed else f"timeout {timeout}s"
                raise AssertionError(f"{self.name}: no event matching {what or predicate} ({state}); skipped: {skipped}")
            event = self.events[self.pos]
            self.pos += 1
            if predicate(event):
                return event
            skipped.append(event)

    async def recv_type(self, type_: str, timeout: float = 5.0, **fields: Any) -> dict:
        return await self.recv_until(lambda e: e.get("type") == type_ and all(e.get(k) == v for k, v in fields.items()),
                                     timeout, what=f"type={type_} {fields}")

    async def wait_seen(self, predicate: Callable[[dict], bool], timeout: float = 5.0, what: str = "") -> dict:
        """Waits until some event received on this connection (consumed or not, in any
        order) matches; returns the first match. Does not move the `recv` position —
        for events whose relative order is not specified (an `ack` and the message)."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                state = f"closed (code {self.close_code} {self.close_reason!r})" if self.closed else f"timeout {timeout}s"
                raise AssertionError(f"{self.name}: never got {what or predicate} ({state}); events: {self.events}")
            self._arrived.clear()
            if len(self.events) > checked:
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_type(self, type_: str, timeout: float = 5.0, **fields: Any) -> dict:
        """`wait_seen` for an event of `type_` with the given field values."""
        return await self.wait_seen(is_type(type_, **fields), timeout, what=f"type={type_} {fields}")

    def peek(self, predicate: Callable[[dict], bool] = lambda e: True) -> list[dict]:
        """Not yet consumed events matching `predicate`."""
        return [e for e in self.events[self.pos:] if predicate(e)]

    def seen(self, predicate: Callable[[dict], bool] = lambda e: True) -> list[dict]:
        """Every event received so far matching `predicate`."""
        return [e for e in self.events if predicate(e)]

    async def expect_none(self, predicate: Callable[[dict], bool], duration: float = 0.5, what: str = "",
                          everything: bool = False) -> None:
        """Asserts that no unconsumed event matching `predicate` arrives within
        `duration` s (events already waiting count too; with `everything`, so do
        events consumed earlier). Consumes nothing."""
        start = 0 if everything else self.pos
        await asyncio.sleep(duration)
        bad = [e for e in self.events[start:] if predicate(e)]
        assert not bad, f"{self.name}: unexpected {what or 'event'}: {bad}"

    async def recv_all(self, *predicates: Callable[[dict], bool], timeout: float = 5.0, what: str = "") -> list[dict]:
        """Consumes events until every predicate has matched one event, in any order
        (each event satisfies at most one predicate). Returns the matches in predicate
        order."""
        deadline = time.monotonic() + timeout
        found: list[Optional[dict]] = [None] * len(predicates)
        skipped: list[dict] = []
        while any(f is None for f in found):
            if not await self._wait_for_more(deadline):
                state = f"closed (code {self.close_code} {self.close_reason!r})" if self.closed else f"timeout {timeout}s"
                missing = [i for i, f in enumerate(found) if f is None]
                raise AssertionError(
                    f"{self.name}: {what or 'expected events'}: predicates {missing} unmatched ({state}); "
                    f"matched: {[f for f in found if f is not None]}; skipped: {skipped}")
            event = self.events[self.pos]
            self.pos += 1
            for i, predicate in enumerate(predicates):
                if found[i] is None and predicate(event):
                    found[i] = event
                    break
            else:
                skipped.append(event)
        return found  # type: ignore[return-value]

    async def ping(self, timeout: float = 5.0) -> None:
        """Sends `ping`, asserts a `pong` arrives (consuming up to it)."""
        await self.send({"type": "ping"})
        await self.recv_type("pong", timeout)

    async def wait_closed(self, timeout: float = 5.0) -> Optional[int]:
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: connection not closed within {timeout}s") from None
        return self.close_code

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass
        if not self._reader.done():
            self._reader.cancel()
        try:
            await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), 3)
        except Exception:
            pass

    async def __aenter__(self) -> "WSClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"WSClient({self.name}, {len(self.events)} events, pos={self.pos}, closed={self.closed})"


class Clients:
    """Closes every client it opened (use as `async with Clients() as c:`)."""

    def __init__(self) -> None:
        self.all: list[WSClient] = []

    async def session(self, node_or_url: Any, token: str, rooms: Optional[Iterable[str]] = None,
                      cursor: Optional[str] = None, name: str = "") -> "tuple[WSClient, dict]":
        ws_url = node_or_url.ws_url if hasattr(node_or_url, "ws_url") else node_or_url
        client, welcome = await WSClient.session(ws_url, token, rooms, cursor, name=name)
        self.all.append(client)
        return client, welcome

    async def user(self, node: Any, nickname: Optional[str] = None, avatar: str = "1.jpg",
                   rooms: Optional[Iterable[str]] = None) -> "tuple[WSClient, dict, dict]":
        """Logs in a fresh nickname and connects: (client, welcome, login body)."""
        nickname = nickname or unique_name()
        creds = login(node.url, nickname, avatar)
        client, welcome = await self.session(node, creds["token"], rooms, name=nickname)
        return client, welcome, creds

    def track(self, client: WSClient) -> WSClient:
        self.all.append(client)
        return client

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.gather(*(c.close() for c in self.all), return_exceptions=True)


# --------------------------------------------------------------------------------------
# Cursor
# --------------------------------------------------------------------------------------


class CursorTracker:
    """The cursor a client keeps (text form documented in the server's Cursor.swift /
    docs/protocol.md): comma-separated `r.<room>@<id>` and `u@<id>`. Seeded from
    `welcome.cursor`, advanced by the id of every `message` (its room) and `private`
    (the own stream)."""

    def __init__(self, text: str = "") -> None:
        self.rooms: dict[str, str] = {}
        self.user: Optional[str] = None
        for entry in filter(None, text.split(",")):
            name, _, ident = entry.rpartition("@")
            assert MESSAGE_ID.match(ident), f"bad cursor entry {entry!r} in {text!r}"
            if name == "u":
                self.user = ident
            else:
                assert name.startswith("r."), f"bad cursor entry {entry!r} in {text!r}"
                self.rooms[name[2:]] = ident

    @staticmethod
    def _key(ident: str) -> tuple[int, int]:
        a, b = ident.split("-")
        return int(a), int(b)

    def observe(self, event: dict) -> None:
        ident = event.get("id")
        if not isinstance(ident, str) or not MESSAGE_ID.match(ident):
            return
        if event.get("type") == "private" or ("to" in event and "room" not in event):
            if self.user is None or self._key(ident) > self._key(self.user):
                self.user = ident
        elif "room" in event:
            old = self.rooms.get(event["room"])
            if old is None or self._key(ident) > self._key(old):
                self.rooms[event["room"]] = ident

    def __str__(self) -> str:
        parts = [f"r.{room}@{ident}" for room, ident in sorted(self.rooms.items())]
        if self.user is not None:
            parts.append(f"u@{self.user}")
        return ",".join(parts)


def id_key(ident: str) -> tuple[int, int]:
    assert isinstance(ident, str) and MESSAGE_ID.match(ident), f"not a message id: {ident!r}"
    a, b = ident.split("-")
    return int(a), int(b)


# --------------------------------------------------------------------------------------
# Running async bodies from sync tests
# --------------------------------------------------------------------------------------


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Runs an async test body with a hard timeout, so a test can never hang."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def is_type(type_: str, **fields: Any) -> Callable[[dict], bool]:
    return lambda e: e.get("type") == type_ and all(e.get(k) == v for k, v in fields.items())


# --------------------------------------------------------------------------------------
# HTTP transports: SSE, iframe stream, (long/short) poll, JSONP, /api/send, /api/publish
# (appended for test_transports.py / test_browser_transports.py; PROTOCOL.md § Transports)
# --------------------------------------------------------------------------------------


def base_url(node_or_url: Any) -> str:
    return node_or_url.url if hasattr(node_or_url, "url") else str(node_or_url).rstrip("/")


def stored_key(event: dict) -> Optional[tuple[str, str]]:
    """(stream, id) of a stored event (`message`, `private`, application events), None
    for events without an id. The stream is `r.<room>` or `u` (ids are unique per stream)."""
    ident = event.get("id")
    if not isinstance(ident, str) or not MESSAGE_ID.match(ident):
        return None
    if "room" in event:
        return ("r." + str(event["room"]), ident)
    return ("u", ident)


class _Recorder:
    """The event-recording half of `WSClient` (recv, recv_until, wait_seen, …) for
    clients that are not WebSockets. Subclasses append decoded JSON events to
    `self.events` and call `self._arrived.set()`."""

    def _init_recorder(self, name: str) -> None:
        self.name = name
        self.events: list[dict] = []
        self.pos = 0
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._arrived = asyncio.Event()

    _wait_for_more = WSClient._wait_for_more
    recv = WSClient.recv
    recv_until = WSClient.recv_until
    recv_type = WSClient.recv_type
    recv_all = WSClient.recv_all
    wait_seen = WSClient.wait_seen
    wait_type = WSClient.wait_type
    peek = WSClient.peek
    seen = WSClient.seen
    expect_none = WSClient.expect_none

    def stored(self) -> list[dict]:
        """Every received event that has a message id, in arrival order."""
        return [e for e in self.events if stored_key(e) is not None]


class SSEFrame:
    __slots__ = ("id", "event", "data", "raw", "at")

    def __init__(self, id: Optional[str], event: Optional[str], data: str, raw: bytes, at: float) -> None:
        self.id, self.event, self.data, self.raw, self.at = id, event, data, raw, at

    def __repr__(self) -> str:
        return f"SSEFrame(id={self.id!r}, event={self.event!r}, data={self.data[:200]!r})"


class SSEStream(_Recorder):
    """`GET /sse` read with httpx and parsed by the text/event-stream rules. `events` holds
    each frame's JSON `data`; `frames` the full frames (id, event, data); `comments`
    (monotonic time, text) of comment lines; `retry` the last `retry:` value; `raw` every byte."""

    def __init__(self, name: str = "") -> None:
        self._init_recorder(name)
        self.frames: list[SSEFrame] = []
        self.comments: list[tuple[float, str]] = []
        self.retry: Optional[int] = None
        self.raw = bytearray()
        self.status: Optional[int] = None
        self.headers: Any = None
        self.opened_at: Optional[float] = None
        self._client: Optional[httpx.AsyncClient] = None
        self._task: Optional[asyncio.Task] = None

    @property
    def last_id(self) -> Optional[str]:
        """The last `id:` received (what a browser sends as Last-Event-ID)."""
        ids = [f.id for f in self.frames if f.id is not None]
        return ids[-1] if ids else None

    @classmethod
    async def connect(cls, node_or_url: Any, token: Optional[str], rooms: Optional[Iterable[str]] = None, *,
                      last_event_id: Optional[str] = None, params: Optional[dict] = None,
                      headers: Optional[dict] = None, name: str = "", timeout: float = 10.0) -> "SSEStream":
        """Opens the stream; returns once the response head arrived (status in `status`;
        a non-200 answer's body is in `raw`)."""
        self = cls(name)
        query: dict[str, str] = {}
        if token is not None:
            query["token"] = token
        if rooms:
            query["rooms"] = ",".join(rooms)
        query.update(params or {})
        hdrs = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = last_event_id
        hdrs.update(headers or {})
        self._client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(timeout, read=None))
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read(base_url(node_or_url) + "/sse", query, hdrs, opened))
        try:
            await asyncio.wait_for(asyncio.shield(opened), timeout)
        except BaseException:
            await self.close()
            raise
        return self

    @classmethod
    async def session(cls, node_or_url: Any, token: str, rooms: Optional[Iterable[str]] = None, *,
                      name: str = "", timeout: float = 10.0, **kwargs: Any) -> "tuple[SSEStream, dict]":
        """Connects, asserts 200 and `welcome` first; returns (stream, welcome)."""
        self = await cls.connect(node_or_url, token, rooms, name=name, timeout=timeout, **kwargs)
        try:
            assert self.status == 200, f"{name}: /sse → HTTP {self.status}: {bytes(self.raw)[:500]!r}"
            welcome = await self.recv(timeout)
            assert welcome.get("type") == "welcome", f"{name}: first SSE event is not welcome: {welcome}"
        except BaseException:
            await self.close()
            raise
        return self, welcome

    async def _read(self, url: str, query: dict, headers: dict, opened: asyncio.Future) -> None:
        assert self._client is not None
        try:
            async with self._client.stream("GET", url, params=query, headers=headers) as response:
                self.status = response.status_code
                self.headers = response.headers
                self.opened_at = time.monotonic()
                if not opened.done():
                    opened.set_result(None)
                buffer = b""
                async for chunk in response.aiter_raw():
                    self.raw += chunk
                    buffer += chunk
                    if response.status_code != 200:
                        continue
                    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                    while b"\n\n" in buffer:
                        block, buffer = buffer.split(b"\n\n", 1)
                        self._block(block + b"\n\n")
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        except Exception as e:  # noqa: BLE001 - recorded for diagnostics
            self.events.append({"__reader_error__": repr(e)})
        finally:
            if not opened.done():
                opened.set_result(None)
            self.closed = True
            self._arrived.set()

    def _block(self, block: bytes) -> None:
        now = time.monotonic()
        ident: Optional[str] = None
        event: Optional[str] = None
        data: list[str] = []
        for line in block.decode("utf-8").split("\n"):
            if line == "":
                continue
            if line.startswith(":"):
                self.comments.append((now, line[1:].strip()))
                continue
            field, sep, value = line.partition(":")
            if sep and value.startswith(" "):
                value = value[1:]
            if field == "id":
                ident = value
            elif field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "retry" and value.isdigit():
                self.retry = int(value)
        if not data:
            return
        text = "\n".join(data)
        self.frames.append(SSEFrame(ident, event, text, block, now))
        try:
            decoded = json.loads(text)
            if not isinstance(decoded, dict):
                decoded = {"__raw__": text}
        except ValueError:
            decoded = {"__raw__": text}
        self.events.append(decoded)
        self._arrived.set()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> "SSEStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


IFRAME_EVENT = re.compile(rb"<script>parent\.([A-Za-z_$][A-Za-z0-9_$.]*)\((.*?)\);</script>\n", re.S)


class IframeStream(_Recorder):
    """`GET /iframe?…&callback=fn` read with httpx: every
    `<script>parent.fn(JSON);</script>` becomes an event; `payloads` keeps the raw JSON
    bytes of each, `raw` every byte of the response."""

    def __init__(self, callback: str, name: str = "") -> None:
        self._init_recorder(name)
        self.callback = callback
        self.payloads: list[bytes] = []
        self.raw = bytearray()
        self.status: Optional[int] = None
        self.headers: Any = None
        self._client: Optional[httpx.AsyncClient] = None
        self._task: Optional[asyncio.Task] = None

    @classmethod
    async def session(cls, node_or_url: Any, token: str, rooms: Optional[Iterable[str]] = None, *,
                      callback: str = "cb", cursor: Optional[str] = None, name: str = "",
                      timeout: float = 10.0) -> "tuple[IframeStream, dict]":
        self = cls(callback, name)
        query = {"token": token, "callback": callback}
        if rooms:
            query["rooms"] = ",".join(rooms)
        if cursor is not None:
            query["cursor"] = cursor
        self._client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(timeout, read=None))
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read(base_url(node_or_url) + "/iframe", query, opened))
        try:
            await asyncio.wait_for(asyncio.shield(opened), timeout)
            assert self.status == 200, f"{name}: /iframe → HTTP {self.status}: {bytes(self.raw)[:500]!r}"
            welcome = await self.recv(timeout)
            assert welcome.get("type") == "welcome", f"{name}: first iframe event is not welcome: {welcome}"
        except BaseException:
            await self.close()
            raise
        return self, welcome

    async def _read(self, url: str, query: dict, opened: asyncio.Future) -> None:
        assert self._client is not None
        try:
            async with self._client.stream("GET", url, params=query) as response:
                self.status = response.status_code
                self.headers = response.headers
                if not opened.done():
                    opened.set_result(None)
                scanned = 0
                async for chunk in response.aiter_raw():
                    self.raw += chunk
                    if response.status_code != 200:
                        continue
                    for match in IFRAME_EVENT.finditer(bytes(self.raw), scanned):
                        scanned = match.end()
                        payload = match.group(2)
                        self.payloads.append(payload)
                        try:
                            self.events.append(json.loads(payload))
                        except ValueError:
                            self.events.append({"__raw__": payload.decode("utf-8", "replace")})
                        self._arrived.set()
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        except Exception as e:  # noqa: BLE001
            self.events.append({"__reader_error__": repr(e)})
        finally:
            if not opened.done():
                opened.set_result(None)
            self.closed = True
            self._arrived.set()

    close = SSEStream.close

    async def __aenter__(self) -> "IframeStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


JSONP_BODY = re.compile(rb"^([A-Za-z_$][A-Za-z0-9_$.]*)\((.*)\);$", re.S)


def unwrap_jsonp(body: bytes, callback: str) -> Any:
    """`fn(JSON);` → the decoded JSON; asserts the shape and the callback name."""
    match = JSONP_BODY.match(body)
    assert match, f"not a JSONP body: {body[:300]!r}"
    assert match.group(1) == callback.encode(), f"callback {match.group(1)!r}, expected {callback!r}"
    return json.loads(match.group(2))


class Poller:
    """A polling client: `GET /poll` with the cursor it was last given. `events` is every
    event of every answer, in order; `answers` the raw answers (node url, status, bytes)."""

    def __init__(self, token: str, rooms: Iterable[str], name: str = "", callback: Optional[str] = None,
                 client: Optional[httpx.AsyncClient] = None) -> None:
        self.token = token
        self.rooms = list(rooms)
        self.name = name
        self.callback = callback
        self.cursor: Optional[str] = None
        self.events: list[dict] = []
        self.answers: list[tuple[str, int, bytes]] = []
        self._client = client or httpx.AsyncClient(trust_env=False, timeout=40.0)
        self._own_client = client is None

    async def poll(self, node_or_url: Any, wait: int = 0, cursor: Any = ..., **extra: str) -> list[dict]:
        """One poll; asserts 200, adopts the returned cursor, returns the new events."""
        params = {"token": self.token, "wait": str(wait)}
        if self.rooms:
            params["rooms"] = ",".join(self.rooms)
        cur = self.cursor if cursor is ... else cursor
        if cur is not None:
            params["cursor"] = cur
        if self.callback is not None:
            params["callback"] = self.callback
        params.update(extra)
        url = base_url(node_or_url)
        r = await self._client.get(url + "/poll", params=params)
        self.answers.append((url, r.status_code, r.content))
        assert r.status_code == 200, f"{self.name}: /poll on {url} → HTTP {r.status_code}: {r.text[:500]}"
        if self.callback is not None:
            assert r.headers.get("content-type", "").startswith("application/javascript"), r.headers
            body = unwrap_jsonp(r.content, self.callback)
        else:
            assert r.headers.get("content-type", "").startswith("application/json"), r.headers
            body = r.json()
        assert isinstance(body, dict) and {"cursor", "events"} <= set(body), f"{self.name}: poll body {body}"
        assert isinstance(body["cursor"], str) and isinstance(body["events"], list), body
        self.cursor = body["cursor"]
        self.events.extend(body["events"])
        return body["events"]

    def stored(self) -> list[dict]:
        return [e for e in self.events if stored_key(e) is not None]

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()


async def api_send(node_or_url: Any, token: Optional[str], event: Any, *, method: str = "POST",
                   callback: Optional[str] = None, client: Optional[httpx.AsyncClient] = None,
                   form_encoding: bool = False) -> httpx.Response:
    """`POST /api/send?token=…` (body = the event: dict → JSON, str/bytes as is) or
    `GET /api/send?token=…&event=…[&callback=…]`. GET parameters are percent-encoded
    (space = %20, like `encodeURIComponent`); with `form_encoding` as
    application/x-www-form-urlencoded (space = `+`, like `URLSearchParams` or jQuery)."""
    own = client is None
    client = client or httpx.AsyncClient(trust_env=False, timeout=10.0)
    try:
        params: dict[str, str] = {}
        if token is not None:
            params["token"] = token
        body = json.dumps(event, ensure_ascii=False) if isinstance(event, (dict, list)) else event
        url = base_url(node_or_url) + "/api/send"
        if method == "GET":
            if body is not None:
                params["event"] = body.decode() if isinstance(body, bytes) else body
            if callback is not None:
                params["callback"] = callback
            from urllib.parse import quote, quote_plus
            enc = quote_plus if form_encoding else quote
            query = "&".join(f"{enc(k, safe='')}={enc(v, safe='')}" for k, v in params.items())
            return await client.get(url + ("?" + query if query else ""))
        content = body.encode() if isinstance(body, str) else body
        return await client.post(url, params=params, content=content, headers={"Content-Type": "application/json"})
    finally:
        if own:
            await client.aclose()


def publish(node_or_url: Any, body: Any, api_key: Optional[str] = DEFAULT_API_KEY,
            headers: Optional[dict] = None) -> httpx.Response:
    """`POST /api/publish` with `Authorization: Bearer <api_key>` (none when None).
    `body` dict/list → JSON; str/bytes as is."""
    hdrs = {"Content-Type": "application/json"}
    if api_key is not None:
        hdrs["Authorization"] = f"Bearer {api_key}"
    hdrs.update(headers or {})
    content = json.dumps(body, ensure_ascii=False).encode() if isinstance(body, (dict, list)) else body
    with http_client() as client:
        return client.post(base_url(node_or_url) + "/api/publish", content=content, headers=hdrs)


def cluster_connections(node: Any) -> dict[str, int]:
    """This node's live connections per transport, from its own `GET /cluster`."""
    with http_client() as client:
        r = client.get(base_url(node) + "/cluster")
    assert r.status_code == 200, f"/cluster → HTTP {r.status_code}: {r.text}"
    body = r.json()
    me = body.get("node")
    for entry in body.get("nodes", []):
        if entry.get("id") == me:
            return dict(entry.get("connections") or {})
    raise AssertionError(f"/cluster of {base_url(node)} does not list its own node {me!r}: {body}")


# --------------------------------------------------------------------------------------
# haproxy in front of nodes (appended for test_browser_chat.py; reusable)
# --------------------------------------------------------------------------------------


def haproxy_bin() -> str:
    return os.environ.get("HAPROXY_BIN", "haproxy")


class HAProxy:
    """A throw-away haproxy on a free port in front of `SwitchboardNode`s (or "host:port"
    strings): round robin, no stickiness, health checks on `/readyz` every
    `check_interval_ms`, `timeout tunnel 1h` for WebSockets, `option redispatch` so a
    request to a dead node is retried on another. The config lives in a temp dir
    (`config_path`). `start()` waits until the LB answers `/healthz`; always `stop()`."""

    def __init__(self, backends: Iterable[Any], port: Optional[int] = None, binary: Optional[str] = None,
                 check_interval_ms: int = 500, deny_paths: Iterable[str] = (),
                 frontend_rules: Iterable[str] = (), bufsize: Optional[int] = None) -> None:
        self.backends = [f"127.0.0.1:{b.port}" if hasattr(b, "port") else str(b) for b in backends]
        #: Path prefixes answered 403 by the LB itself (e.g. "/ws": a proxy that blocks WebSockets).
        self.deny_paths = list(deny_paths)
        #: Extra lines for the frontend (e.g. `http-request return … file …`).
        self.frontend_rules = list(frontend_rules)
        #: `tune.bufsize` (haproxy's default, 16 KiB, also bounds request lines and headers).
        self.bufsize = bufsize
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.binary = binary or haproxy_bin()
        self.check_interval_ms = check_interval_ms
        self.dir = Path(tempfile.mkdtemp(prefix="haproxy-", dir=log_dir()))
        self.config_path = self.dir / "haproxy.cfg"
        self.log_path = self.dir / "haproxy.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def config(self) -> str:
        servers = "\n".join(f"    server n{i} {addr} check" for i, addr in enumerate(self.backends, 1))
        deny = "".join(f"    http-request deny deny_status 403 if {{ path_beg {p} }}\n" for p in self.deny_paths)
        deny += "".join(f"    {rule}\n" for rule in self.frontend_rules)
        tune = f"    tune.bufsize {self.bufsize}\n" if self.bufsize else ""
        return f"""global
    maxconn 4096
{tune}
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 10s
    option redispatch
    option abortonclose
    retries 3

frontend www
    bind 127.0.0.1:{self.port}
{deny}    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {self.check_interval_ms}ms fall 1 rise 1
{servers}
"""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> "HAProxy":
        for attempt in range(3):
            self._spawn_checked()
            if self.proc is not None and self._fixed_port:
                break
            # haproxy fails at once when its port was taken since `free_port()`.
            time.sleep(0.2)
            if self.proc is None or self.proc.poll() is None:
                break
            if "bind" not in _tail(self.log_path).lower() or attempt == 2:
                break
            _LIVE_PROCESSES.discard(self.proc)
            self.port = free_port()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Any = None
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited early (code {self.proc.returncode}); log:\n{_tail(self.log_path)}")
                try:
                    r = client.get(self.url + "/healthz")
                    if r.status_code == 200:
                        return self
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = e
                time.sleep(0.1)
        _hard_kill(self.proc)
        raise RuntimeError(f"haproxy on {self.port} not answering /healthz after {timeout}s ({last!r}); log:\n{_tail(self.log_path)}")

    def _spawn_checked(self) -> None:
        self.config_path.write_text(self.config())
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its config:\n{check.stderr}\n{self.config()}")
        self.proc = _spawn([self.binary, "-db", "-f", str(self.config_path)], dict(os.environ), self.log_path)

    def nodes_seen(self, requests: int = 8) -> set:
        """Node ids answering `/healthz` through the LB over `requests` requests."""
        seen = set()
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            for _ in range(requests):
                try:
                    r = client.get(self.url + "/healthz")
                    if r.status_code == 200:
                        seen.add(r.json().get("node"))
                except httpx.HTTPError:
                    pass
        return seen

    def wait_nodes(self, count: int, timeout: float = 15.0) -> set:
        """Waits until round robin reaches `count` distinct healthy nodes."""
        deadline = time.monotonic() + timeout
        seen: set = set()
        while time.monotonic() < deadline:
            seen = self.nodes_seen(2 * count + 2)
            if len(seen) >= count:
                return seen
            time.sleep(0.2)
        raise AssertionError(f"haproxy {self.url} reaches {seen}, not {count} nodes, after {timeout}s")

    def stop(self) -> Optional[int]:
        return _terminate(self.proc)

    def __repr__(self) -> str:
        return f"HAProxy({self.url} → {self.backends}, running={self.running})"


# --------------------------------------------------------------------------------------
# switchboard bench
# --------------------------------------------------------------------------------------


def run_bench(urls: Iterable[str], *args: str, api_key: Optional[str] = DEFAULT_API_KEY,
              binary: Optional[str] = None, timeout: float = 180.0) -> dict:
    """Runs `switchboard bench --json --no-progress --url … <args>` and returns its parsed
    JSON result (see BenchResult in Sources/SwitchboardBench). Fails with its stderr when
    it exits non-zero."""
    cmd = [binary or switchboard_bin(), "bench", "--json", "--no-progress"]
    for url in urls:
        cmd += ["--url", url]
    cmd += list(args)
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_API_KEY"}
    if api_key is not None:
        env["SWITCHBOARD_API_KEY"] = api_key
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------
# Process figures, metrics and a raw WebSocket (appended for test_hardening.py; reusable)
# --------------------------------------------------------------------------------------


def rss_kib(pid_or_node: Any) -> int:
    """VmRSS of a process (a pid, or anything with `.proc`), in KiB, from /proc/PID/status."""
    pid = pid_or_node.proc.pid if hasattr(pid_or_node, "proc") else int(pid_or_node)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def open_fds(pid_or_node: Any) -> int:
    """Number of open file descriptors of a process (sockets included)."""
    pid = pid_or_node.proc.pid if hasattr(pid_or_node, "proc") else int(pid_or_node)
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit(wanted: int) -> int:
    """Raises this process's RLIMIT_NOFILE soft limit towards `wanted` (up to the hard
    limit); returns the soft limit now in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_METRIC_LINE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_METRIC_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(node_or_url: Any) -> dict[tuple, float]:
    """`GET /metrics` parsed: {(name, ((label, value), …sorted)): value}."""
    with http_client(5.0) as client:
        r = client.get(base_url(node_or_url) + "/metrics")
    assert r.status_code == 200, f"/metrics → HTTP {r.status_code}: {r.text[:300]}"
    out: dict[tuple, float] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_METRIC_LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def metric_sum(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


class RawWebSocket:
    """A minimal RFC 6455 client over asyncio streams, for what `websockets` hides: the
    exact refusal of an upgrade (status, headers, body), oversized or hand-made frames,
    a socket with a tiny receive buffer, and thousands of cheap connections.

    `await RawWebSocket.open(url_or_node, path_and_query, headers=…, rcvbuf=…)`; when the
    upgrade is refused `status != 101` and `body` holds the answer."""

    def __init__(self) -> None:
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.status: Optional[int] = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.close_code: Optional[int] = None
        self.close_reason: str = ""

    @classmethod
    async def open(cls, node_or_url: Any, target: str, headers: Optional[dict] = None, rcvbuf: Optional[int] = None,
                   timeout: float = 10.0) -> "RawWebSocket":
        from urllib.parse import urlsplit
        self = cls()
        parts = urlsplit(base_url(node_or_url))
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
            self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=2 ** 22)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            for line in header_lines:
                if ":" in line:
                    k, _, v = line.partition(":")
                    self.headers[k.strip().lower()] = v.strip()
            if self.status != 101:
                length = int(self.headers.get("content-length", "0") or 0)
                if length:
                    self.body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except BaseException:
            self.abort()
            raise
        return self

    def json_body(self) -> Any:
        return json.loads(self.body)

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        """A masked client frame."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        return head + mask + masked

    async def send_text(self, text: Any) -> None:
        data = json.dumps(text, ensure_ascii=False) if isinstance(text, (dict, list)) else text
        assert self.writer is not None
        self.writer.write(self.frame(0x1, data.encode() if isinstance(data, str) else data))
        await self.writer.drain()

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (fragments are not reassembled)."""
        assert self.reader is not None

        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
            return opcode, payload

        return await asyncio.wait_for(read(), timeout)

    async def recv_event(self, timeout: float = 5.0) -> dict:
        """The next text frame as JSON (skipping pings); fails on a close frame."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise AssertionError(f"closed by the server: {self.close_code} {self.close_reason!r}")

    async def close(self, code: int = 1000, wait: float = 2.0) -> None:
        """Sends a close frame and waits (briefly) for the server's, then closes the socket."""
        if self.writer is None:
            return
        try:
            self.writer.write(self.frame(0x8, code.to_bytes(2, "big")))
            await asyncio.wait_for(self.writer.drain(), wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                opcode, _ = await self.recv_frame(max(0.01, deadline - time.monotonic()))
                if opcode == 0x8:
                    break
        except (Exception, asyncio.TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        """Closes the TCP connection without a close handshake."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


# --------------------------------------------------------------------------------------
# Socket.IO clients (appended for test_socketio*.py; PROTOCOL.md § Socket.IO)
# --------------------------------------------------------------------------------------


def _socketio():
    import socketio  # python-socketio[asyncio_client]; only the Socket.IO tests need it
    return socketio


class SIO:
    """A python-socketio AsyncClient that records every event, per namespace."""

    def __init__(self, name: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("reconnection", False)
        self.name = name
        self.client = _socketio().AsyncClient(**kwargs)
        self.events: list[tuple[str, str, tuple]] = []  # (namespace, event, args)
        self.errors: dict[str, Any] = {}
        self._arrived = asyncio.Event()
        self.client.on("*", self._on_event, namespace="*")
        self.client.on("connect_error", self._on_connect_error, namespace="*")

    async def _on_event(self, event: str, namespace: str, *args: Any) -> None:
        self.events.append((namespace, event, args))
        self._arrived.set()

    async def _on_connect_error(self, namespace: str, data: Any = None) -> None:
        self.errors[namespace] = data
        self._arrived.set()

    async def connect(self, url: str, auth: Any, transports: Optional[list[str]], namespaces: Optional[list[str]] = None,
                      ) -> "SIO":
        await self.client.connect(url, auth=auth, transports=transports, namespaces=namespaces or ["/"],
                                  wait_timeout=10)
        return self

    async def wait(self, event: str, predicate: Callable[[tuple], bool] = lambda args: True, timeout: float = 10.0,
                   namespace: str = "/") -> tuple:
        """The arguments of the first event `event` (seen so far or arriving) matching."""
        deadline = time.monotonic() + timeout
        while True:
            for ns, name, args in self.events:
                if ns == namespace and name == event and predicate(args):
                    return args
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {event!r} matching in {timeout}s; events: {self.events}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def seen(self, event: str, predicate: Callable[[tuple], bool] = lambda args: True, namespace: str = "/") -> list:
        return [args for ns, name, args in self.events if ns == namespace and name == event and predicate(args)]

    async def welcome(self, namespace: str = "/") -> dict:
        return (await self.wait("welcome", namespace=namespace))[0]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.disconnect(), 5)
        except Exception:
            pass


class SIOs:
    """Disconnects every client it made."""

    def __init__(self) -> None:
        self.all: list[SIO] = []

    def new(self, name: str = "", **kwargs: Any) -> SIO:
        client = SIO(name, **kwargs)
        self.all.append(client)
        return client

    async def user(self, node: SwitchboardNode, transports: Optional[list[str]], nickname: Optional[str] = None,
                   namespaces: Optional[list[str]] = None) -> tuple[SIO, str]:
        """A fresh nickname logged in over HTTP, connected with its token: (client, nickname)."""
        nickname = nickname or unique_name("sio")
        token = login(node.url, nickname)["token"]
        client = self.new(nickname)
        await client.connect(node.url, {"token": token}, transports, namespaces)
        return client, nickname

    async def __aenter__(self) -> "SIOs":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.gather(*(c.close() for c in self.all), return_exceptions=True)


def text_is(text: str) -> Callable[[tuple], bool]:
    return lambda args: bool(args) and isinstance(args[0], dict) and args[0].get("text") == text


async def wait_transport(client: SIO, transports: Optional[list[str]]) -> None:
    """The transport the client must end up on: the upgrade completes by itself."""
    expected = "websocket" if transports is None else transports[0]
    deadline = time.monotonic() + 10
    while client.client.transport() != expected:
        assert time.monotonic() < deadline, f"{client.name}: transport {client.client.transport()}, expected {expected}"
        await asyncio.sleep(0.05)
