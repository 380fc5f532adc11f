"""The live cluster dashboard (issue 17, part 1): `GET /dashboard` and its data,
`GET /api/dashboard` (API key), on a real cluster — two `switchboard serve --redis …`
nodes on one real `redis-server` — under a known load of real clients (websockets,
httpx SSE), in headless Chromium (selenium).

* without the key (or with a wrong one) the data is refused with 401; the page asks for
  the key and keeps it in session storage;
* the page shows both nodes with their connections by transport, messages in per
  second, Redis state, the busiest room with its online count and nicknames, and draws
  its charts; the numbers match the load;
* a SIGKILLed node turns stale on the page, then goes, and the event list says so;
* Redis going away and coming back, and a slow consumer cut off, are cluster events.

Screenshots go to test-artifacts/ (git-ignored): dashboard-1400.png, dashboard-900.png,
dashboard-420.png (live cluster), dashboard-stale.png (a node killed).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import Clients, SSEStream, login

pytestmark = pytest.mark.xdist_group("browser")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    _SELENIUM_ERROR: Optional[str] = None
except ImportError as e:
    _SELENIUM_ERROR = str(e)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
KEY = h.DEFAULT_API_KEY


def dashboard(node: h.SwitchboardNode, key: Optional[str] = KEY, since: Optional[int] = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    params = {"since": str(since)} if since is not None else {}
    with h.http_client() as client:
        return client.get(node.url + "/api/dashboard", headers=headers, params=params)


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Polls `check` until it returns something truthy; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:  # a page mid-render, a node restarting
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(switchboard_binary: str, redis_server_binary: str) -> Iterator[tuple[h.RedisServer, list[h.SwitchboardNode]]]:
    redis = h.RedisServer(binary=redis_server_binary).start()
    nodes = [h.SwitchboardNode(node_id=f"dash-{name}", redis=redis.url, binary=switchboard_binary,
                               extra_args=["--max-queued-frames", "4", "--max-text", "60000", "--rate", "1000",
                                           "--burst", "1000"])
             for name in ("a", "b")]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(30)
        yield redis, nodes
    finally:
        for node in nodes:
            node.stop()
        redis.kill()


def test_dashboard_data_needs_the_api_key(cluster: Any) -> None:
    _, (a, b) = cluster
    assert dashboard(a, key=None).status_code == 401
    wrong = dashboard(a, key="not-the-key")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized", wrong.text
    assert dashboard(a, since=-1).status_code == 400
    # The page itself is public (it asks for the key) and embeds nothing secret.
    with h.http_client() as client:
        page = client.get(a.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.status_code
    assert KEY not in page.text and "<svg" in page.text and "sessionStorage" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", ""), "the page loads nothing from elsewhere"
    # With the key: both nodes, from either node.
    for node in (a, b):
        body = wait_for("both nodes in /api/dashboard", lambda: (lambda j: j if {n["id"] for n in j["nodes"]} == {"dash-a", "dash-b"} else None)(dashboard(node).json()), 15)
        assert body["node"] == node.node_id and body["heartbeatMs"] == 1000
        own = next(n for n in body["nodes"] if n["id"] == node.node_id)
        assert own["self"] and own["redis"]["ready"] is True and own["startedAt"] <= body["now"]


# --------------------------------------------------------------------------------------
# A known load, held by an asyncio loop in a thread while the browser looks
# --------------------------------------------------------------------------------------


class Load:
    """On node a: 3 WebSocket members of `room` plus a sender saying 10 messages/s; on
    node b: 2 SSE members of `room` and 1 WebSocket member of `other`."""

    RATE = 10

    def __init__(self, a: h.SwitchboardNode, b: h.SwitchboardNode) -> None:
        self.a, self.b = a, b
        self.room, self.other = h.unique_room("busy"), h.unique_room("quiet")
        self.nicknames: list[str] = []
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients = Clients()
        self.streams: list[SSEStream] = []
        self.sending: Optional[asyncio.Future] = None

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self) -> None:
        for _ in range(3):
            _, welcome, _ = await self.clients.user(self.a, h.unique_name("ws"), rooms=[self.room])
            self.nicknames.append(welcome["nickname"])
        self.sender, welcome, _ = await self.clients.user(self.a, h.unique_name("talk"), rooms=[self.room])
        self.nicknames.append(welcome["nickname"])
        for _ in range(2):
            nickname = h.unique_name("sse")
            stream, _ = await SSEStream.session(self.b, login(self.b.url, nickname)["token"], [self.room], name=nickname)
            self.streams.append(stream)
            self.nicknames.append(nickname)
        await self.clients.user(self.b, h.unique_name("quiet"), rooms=[self.other])

    async def _say(self) -> None:
        while True:
            await self.sender.send({"type": "say", "room": self.room, "text": f"tick {self.sent}", "echo": False})
            self.sent += 1
            await asyncio.sleep(1 / self.RATE)

    def start(self) -> "Load":
        self.call(self._open())
        self.sending = asyncio.run_coroutine_threadsafe(self._say(), self.loop)
        return self

    def stop(self) -> None:
        if self.sending is not None:
            self.sending.cancel()

        async def close() -> None:
            for stream in self.streams:
                await stream.close()
            await self.clients.__aexit__(None, None, None)

        try:
            self.call(close(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# --------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------


def chrome(width: int, height: int) -> Any:
    if _SELENIUM_ERROR is not None:
        pytest.fail(f"selenium is not installed ({_SELENIUM_ERROR}): bash scripts/deps.sh test")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium / chromedriver not installed (bash scripts/deps.sh test)")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--no-proxy-server", "--lang=en-US"):
        opts.add_argument(arg)
    service = Service(executable_path=driver_path, log_output=str(h.log_dir() / "chromedriver-dashboard.log"))
    return webdriver.Chrome(service=service, options=opts)


class DashboardPage:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def row(self, node: str) -> Optional[dict]:
        """What the page shows of `node`'s row (None when there is none)."""
        return self.js("""
            const tr = document.querySelector(`#nodes tr[data-node="${arguments[0]}"]`);
            if (!tr) return null;
            const t = {};
            for (const s of tr.querySelectorAll('.transports [data-transport]')) t[s.dataset.transport] = Number(s.querySelector('b').textContent);
            const num = (c) => Number(tr.querySelector(c).textContent.replace(/,/g, ''));
            return {stale: tr.classList.contains('stale'), state: tr.querySelector('.state').textContent, transports: t,
                    total: num('.total'), in: num('.in'), out: num('.out'), redis: tr.querySelector('.redis').textContent,
                    up: tr.querySelector('.up').textContent};""", node)

    def rooms(self) -> dict[str, dict]:
        return self.js("""
            const out = {};
            for (const li of document.querySelectorAll('#rooms li[data-room]'))
              out[li.dataset.room] = {count: parseInt(li.querySelector('.count').textContent), who: li.querySelector('.who').textContent};
            return out;""")

    def events(self) -> list[dict]:
        return self.js("""return [...document.querySelectorAll('#events li[data-kind]')].map(li => (
            {kind: li.dataset.kind, node: li.dataset.node, text: li.querySelector('.x').textContent}));""")

    def polylines(self) -> dict[str, list[str]]:
        return self.js("""
            const out = {};
            for (const svg of document.querySelectorAll('svg.chart'))
              out[svg.id] = [...svg.querySelectorAll('polyline')].filter(p => p.getAttribute('points').split(' ').length >= 2).map(p => p.dataset.node);
            return out;""")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        return path


def test_dashboard_shows_the_cluster_live_and_a_killed_node_goes(cluster: Any) -> None:
    redis, (a, b) = cluster
    load = Load(a, b).start()
    driver = chrome(1400, 900)
    page = DashboardPage(driver)
    try:
        driver.get(a.url + "/dashboard")
        # The key is asked for; a wrong one is refused and asked for again.
        wait_for("the key form", lambda: driver.find_element(By.ID, "key").is_displayed(), 10)
        driver.find_element(By.ID, "key").send_keys("wrong-key")
        driver.find_element(By.ID, "key-button").click()
        wait_for("the refusal", lambda: "401" in driver.find_element(By.ID, "key-error").text, 10)
        driver.find_element(By.ID, "key").send_keys(KEY)
        driver.find_element(By.ID, "key-button").click()
        wait_for("the dashboard", lambda: driver.find_element(By.ID, "dash").is_displayed(), 10)
        assert page.js("return sessionStorage.getItem('switchboard.dashboard.key')") == KEY
        assert page.js("return localStorage.length") == 0

        # The numbers match the load.
        row_a = wait_for("node a: 4 WebSockets and ~10 messages in per second", lambda: (lambda r: r if r and r["transports"].get("websocket") == 4 and r["total"] == 4 and 4 <= r["in"] <= 25 else None)(page.row("dash-a")), 30)
        row_b = wait_for("node b: 2 SSE + 1 WebSocket, deliveries out", lambda: (lambda r: r if r and r["transports"] == {"sse": 2, "websocket": 1} and r["out"] > 0 else None)(page.row("dash-b")), 30)
        assert row_a["redis"] == "ready" and row_b["redis"] == "ready" and "live" in row_a["state"] and "live" in row_b["state"], (row_a, row_b)
        assert row_a["out"] > 0, row_a
        rooms = wait_for("the busy room with 6 online", lambda: (lambda r: r if r.get(load.room, {}).get("count") == 6 else None)(page.rooms()), 30)
        assert rooms[load.room]["count"] == 6 and list(rooms)[0] == load.room, rooms  # the busiest first
        shown = rooms[load.room]["who"]
        assert sum(n in shown for n in load.nicknames) >= 5, (shown, load.nicknames)
        assert "dash-a" in shown and "dash-b" in shown, shown
        assert rooms.get(load.other, {}).get("count") == 1, rooms
        # Summary tiles, charts drawn by the page, updated without reload (every second).
        assert int(driver.find_element(By.ID, "sum-connections").text) == 7
        lines = wait_for("both nodes drawn in both charts", lambda: (lambda p: p if all(set(v) == {"dash-a", "dash-b"} for v in p.values()) and len(p) == 2 else None)(page.polylines()), 20)
        first = page.js("return document.getElementById('live').textContent")
        wait_for("a newer update", lambda: page.js("return document.getElementById('live').textContent") != first, 5)
        assert page.js("return performance.getEntriesByType('navigation').length") == 1

        for width, height in ((1400, 900), (900, 1000), (420, 900)):
            driver.set_window_size(width, height)
            wait_for("the layout", lambda: page.row("dash-b") is not None, 5)
            page.screenshot(f"dashboard-{width}.png")
            overflow = page.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"the page is wider than the window at {width}px ({overflow}px)"
        driver.set_window_size(1400, 900)

        # Node b dies: stale on the page, then gone, and the events say so.
        load.sending.cancel()
        b.kill()
        killed = time.monotonic()
        stale = wait_for("node b stale", lambda: (lambda r: r if r and r["stale"] else None)(page.row("dash-b")), 15)
        stale_after = time.monotonic() - killed
        assert "stale" in stale["state"] and "no heartbeat" in stale["state"], stale
        page.screenshot("dashboard-stale.png")
        wait_for("node b gone", lambda: page.row("dash-b") is None, 30)
        gone_after = time.monotonic() - killed
        events = wait_for("events: b stale and gone", lambda: (lambda e: e if {"stale", "left"} <= {x["kind"] for x in e if x["node"] == "dash-b"} else None)(page.events()), 10)
        assert page.row("dash-a") is not None
        print(f"\nnode b stale on the page {stale_after:.1f}s after SIGKILL, gone after {gone_after:.1f}s; events {events[:4]}")
    finally:
        driver.quit()
        load.stop()
        if not b.running:
            b.restart()
            b.wait_ready(30)


def test_redis_outage_and_slow_consumer_are_cluster_events(cluster: Any) -> None:
    """Redis killed and restarted: node a reports it (unreachable, then recovered); a
    WebSocket that never reads while its room is flooded is cut off as a slow consumer
    (--max-queued-frames 4): an event of the node that cut it off."""
    import socket
    import base64
    import os
    from urllib.parse import quote

    redis, (a, b) = cluster
    # Node a's monitor has sampled node b (b may have just been restarted by the test
    # before): its counters are known before Redis goes.
    wait_for("node b in node a's latest sample",
             lambda: a.running and b.running and "dash-b" in dashboard(a).json()["history"][-1]["nodes"], 30)
    since_seq = max([e["seq"] for e in dashboard(a).json()["events"]] or [0])

    def new_events() -> list[dict]:
        return [e for e in dashboard(a).json()["events"] if e["seq"] > since_seq]

    redis.kill()
    wait_for("node a: Redis unreachable", lambda: any(e["kind"] == "redis_down" and e["node"] == "dash-a" for e in new_events()), 20)
    redis.start()
    a.wait_ready(30)
    wait_for("node a: Redis reachable again", lambda: any(e["kind"] == "redis_up" and e["node"] == "dash-a" for e in new_events()), 30)
    # Node b lost Redis too: once it heartbeats again, its counters say so.
    wait_for("node b: lost and recovered", lambda: {"redis_lost", "redis_recovered"} <= {e["kind"] for e in new_events() if e["node"] == "dash-b"}, 30)

    room = h.unique_room("flood")
    token = login(a.url, h.unique_name("slow"))["token"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", a.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?token={quote(token)}&rooms={room} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]

    async def flood() -> None:
        async with Clients() as c:
            sender, _, _ = await c.user(a, h.unique_name("flood"), rooms=[room])
            text = "x" * 50_000
            for i in range(400):
                await sender.send({"type": "say", "room": room, "text": text, "echo": False})
                if any(e["kind"] == "slow_consumers" for e in await asyncio.to_thread(new_events)):
                    return
                if i % 20 == 19:
                    await asyncio.sleep(0.05)

    try:
        h.run(flood(), 120)
        cut = wait_for("a slow consumer cut off", lambda: [e for e in new_events() if e["kind"] == "slow_consumers"], 15)
        assert cut[0]["node"] == "dash-a" and "slow consumer" in cut[0]["text"], cut
    finally:
        sock.close()
