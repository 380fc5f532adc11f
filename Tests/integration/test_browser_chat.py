"""The chat page and /switchboard.js in a real browser.

Headless Chromium (Debian `chromium` + `chromium-driver`, driven by selenium) against a
cluster of two `switchboard serve` nodes sharing one Redis, behind haproxy (round robin,
health checks, `timeout tunnel 1h`). Every browser talks to the load balancer only, so
each request or reconnect may land on either node.

* two browsers chat in a room and privately, on each forced transport (parametrized);
* the online count updates;
* killing the node a browser is on: it reconnects through the LB to the other node and
  shows the messages sent meanwhile, exactly once;
* a message containing HTML is shown as text;
* `auto` falls back when a proxy refuses WebSocket (and SSE);
* the library also loads through `import()`.

Screenshots go to test-artifacts/ (git-ignored): chat.png (desktop, WebSocket),
chat-<transport>.png, chat-phone.png (390 px wide).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

import switchboard_harness as h

# Under pytest-xdist (`--dist loadgroup`) both browser modules run on one worker, one
# after the other: Chromium is the heaviest thing the suite runs on a 2-core machine.
pytestmark = pytest.mark.xdist_group("browser")

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _SELENIUM_ERROR: Optional[str] = None
except ImportError as e:  # reported by the `chrome` fixture, so the failure says what to install
    _SELENIUM_ERROR = str(e)

TRANSPORTS = ["websocket", "sse", "long-poll", "iframe", "jsonp", "short-poll"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HTML_TEXT = "<img src=x onerror=alert(1)> <b>not bold</b> & <script>alert(2)</script>"


# --------------------------------------------------------------------------------------
# Cluster: Redis + two nodes + haproxy
# --------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, redis: h.RedisServer, nodes: list[h.SwitchboardNode], lb: h.HAProxy) -> None:
        self.redis, self.nodes, self.lb = redis, nodes, lb

    def node(self, node_id: str) -> h.SwitchboardNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def other(self, node_id: str) -> h.SwitchboardNode:
        return next(n for n in self.nodes if n.node_id != node_id)

    def heal(self) -> None:
        """Restarts dead nodes and waits until the LB reaches both again."""
        for n in self.nodes:
            if not n.running:
                n.restart()
                n.wait_ready()
        self.lb.wait_nodes(len(self.nodes))


@pytest.fixture(scope="module")
def cluster(switchboard_binary: str, redis_server_binary: str) -> Iterator[Cluster]:
    if shutil.which(h.haproxy_bin()) is None:
        pytest.fail("haproxy not found on PATH (bash scripts/deps.sh)")
    redis = h.RedisServer(binary=redis_server_binary).start()
    nodes: list[h.SwitchboardNode] = []
    lb: Optional[h.HAProxy] = None
    try:
        for name in ("edge-a", "edge-b"):
            n = h.SwitchboardNode(node_id=name, redis=redis.url, binary=switchboard_binary)
            nodes.append(n)
            n.start()
            n.wait_ready()
        lb = h.HAProxy(nodes).start()
        lb.wait_nodes(2)
        yield Cluster(redis, nodes, lb)
    finally:
        if lb is not None:
            lb.stop()
        for n in nodes:
            n.stop()
        redis.kill()


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with both nodes up before and after the test."""
    cluster.heal()
    yield cluster
    cluster.heal()


# --------------------------------------------------------------------------------------
# Browsers
# --------------------------------------------------------------------------------------


def _chrome(name: str, width: int = 1200, height: int = 820) -> Any:
    if _SELENIUM_ERROR is not None:
        pytest.fail(f"selenium is not installed ({_SELENIUM_ERROR}): bash scripts/deps.sh test")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium / chromedriver not installed: apt-get install chromium chromium-driver (bash scripts/deps.sh test)")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
                "--no-proxy-server", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(h.log_dir() / f"chromedriver-{name}.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_script_timeout(30)
    return driver


class ChatPage:
    """One browser showing the chat page, driven like a person would (typing, clicking),
    read through the DOM (element ids of index.html)."""

    def __init__(self, driver: Any, name: str) -> None:
        self.driver = driver
        self.name = name
        self.console: list[dict] = []

    # -- plumbing ---------------------------------------------------------------------
    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str, timeout: float = 10.0) -> None:
        """Clicks the element `css` names, finding it again if the page re-rendered it
        between the find and the click (the room list is redrawn on presence updates)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.find(css).click()
                return
            except StaleElementReferenceException:
                if time.monotonic() > deadline:
                    raise

    def wait(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last_error: Any = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except WebDriverException as e:
                last_error = e
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name}: {what or predicate} not true after {timeout}s "
                    f"(status {self.status_safe()}, last error {last_error!r}); messages: {self.messages_safe()}; "
                    f"console: {self.read_console()[-15:]}")
            time.sleep(0.1)

    def read_console(self) -> list[dict]:
        try:
            self.console += self.driver.get_log("browser")
        except Exception:
            pass
        return self.console

    def js_errors(self) -> list[str]:
        """Uncaught exceptions and errors the page logged (network errors while a node is
        down are expected and not counted)."""
        bad = []
        for entry in self.read_console():
            msg = entry.get("message", "")
            if entry.get("level") != "SEVERE":
                continue
            if "Failed to load resource" in msg or "WebSocket connection" in msg or "net::ERR" in msg:
                continue
            bad.append(msg)
        return bad

    # -- navigation and login -----------------------------------------------------------
    def open(self, base: str, transport: Optional[str] = None) -> None:
        # Forget the previous test's session (a same-origin page without the chat script,
        # so that nothing resumes), then load the page.
        self.driver.get(base + "/healthz")
        self.js("sessionStorage.clear(); localStorage.clear();")
        self.driver.get(base + "/" + (f"?transport={transport}" if transport else ""))
        self.read_console()
        self.console = []
        self.wait(lambda: self.find("#login-view").is_displayed(), what="login form shown")

    def login(self, nickname: str, avatar: str = "1.jpg", transport: str = "auto") -> None:
        field = self.find("#nickname")
        field.clear()
        field.send_keys(nickname)
        self.find(f'#avatar-picker button[data-avatar="{avatar}"]').click()
        assert self.find(f'#avatar-picker button[data-avatar="{avatar}"]').get_attribute("aria-checked") == "true"
        Select(self.find("#login-transport")).select_by_value(transport)
        self.find("#login-button").click()
        self.wait(lambda: self.find("#chat-view").is_displayed(), what="chat view shown")
        self.wait_online(None if transport == "auto" else transport)
        self.js("window.__welcomes = []; chat.sb.on('welcome', (e) => window.__welcomes.push(e.node));")

    def status(self) -> dict:
        return self.js("""return {state: document.getElementById('state').textContent,
            node: document.getElementById('node').textContent,
            transport: document.getElementById('transport').textContent,
            libState: chat.sb && chat.sb.state, libTransport: chat.sb && chat.sb.transport,
            libNode: chat.sb && chat.sb.node, cursor: chat.sb && chat.sb.cursor};""")

    def status_safe(self) -> Any:
        try:
            return self.status()
        except Exception as e:
            return f"<{e!r}>"

    def wait_online(self, transport: Optional[str] = None, node: Optional[str] = None, timeout: float = 30.0) -> dict:
        def ok() -> Any:
            s = self.status()
            if s["state"] != "online":
                return None
            if transport is not None and s["transport"] != transport:
                return None
            if node is not None and s["node"] != node:
                return None
            return s
        return self.wait(ok, timeout, what=f"online (transport {transport}, node {node})")

    # -- rooms and messages -------------------------------------------------------------
    def join(self, room: str) -> None:
        field = self.find("#join-room")
        field.clear()
        field.send_keys(room)
        self.find("#join-button").click()
        self.wait(lambda: self.js("return document.querySelector('#rooms li.active')?.dataset.room") == room,
                  what=f"room {room} active")
        assert self.find("#room-title").text == "#" + room
        # Joined on the server: its position is in the client's cursor.
        self.wait(lambda: ("r." + room + "@") in (self.status()["cursor"] or ""), what=f"{room} in the cursor")

    def type_message(self, text: str, to: Optional[str] = None) -> None:
        whisper = self.find("#whisper-to")
        if to is not None:
            whisper.clear()
            whisper.send_keys(to)
        box = self.find("#message-input")
        box.clear()
        box.send_keys(text)
        self.find("#send-button").click()

    def say(self, text: str) -> None:
        self.find("#whisper-to").clear()
        self.type_message(text)

    def messages(self) -> list[dict]:
        return self.js("""return [...document.querySelectorAll('#messages .message')].map((m) => ({
            text: m.querySelector('.text').textContent, nick: m.querySelector('.nick').textContent,
            private: m.classList.contains('private'), id: m.dataset.id,
            status: m.querySelector('.status').textContent,
            time: m.querySelector('.time').textContent, avatar: !!m.querySelector('.avatar')}));""")

    def messages_safe(self) -> Any:
        try:
            return [(m["nick"], m["text"][:60], m["id"], m["status"]) for m in self.messages()]
        except Exception as e:
            return f"<{e!r}>"

    def with_text(self, text: str) -> list[dict]:
        return [m for m in self.messages() if m["text"] == text]

    def wait_message(self, text: str, timeout: float = 20.0, private: Optional[bool] = None) -> dict:
        def found() -> Any:
            hits = [m for m in self.with_text(text) if private is None or m["private"] == private]
            return hits[0] if hits else None
        return self.wait(found, timeout, what=f"message {text!r}")

    def wait_sent(self, text: str, timeout: float = 20.0) -> dict:
        """Own message confirmed by the server (ack)."""
        return self.wait(lambda: next((m for m in self.with_text(text) if m["status"] == "✓ sent" and m["id"]), None),
                         timeout, what=f"own message {text!r} confirmed")

    def online_count(self) -> int:
        return int(self.find("#online-count").text)

    def wait_online_count(self, n: int, timeout: float = 20.0) -> None:
        self.wait(lambda: self.online_count() == n, timeout, what=f"online count {n}")

    def click_nick(self, nickname: str) -> None:
        nick = next(e for e in self.driver.find_elements(By.CSS_SELECTOR, "#messages .message .nick") if e.text == nickname)
        nick.click()
        assert self.find("#whisper-to").get_attribute("value") == nickname

    def no_alert(self) -> None:
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            raise AssertionError(f"{self.name}: an alert opened ({text!r}): HTML from a message was executed")
        except NoAlertPresentException:
            pass

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def browsers() -> Iterator[tuple[ChatPage, ChatPage]]:
    drivers: list[Any] = []
    try:
        drivers.append(_chrome("a"))
        drivers.append(_chrome("b"))
        yield ChatPage(drivers[0], "browser A"), ChatPage(drivers[1], "browser B")
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:
                pass


@pytest.fixture
def pages(browsers: tuple[ChatPage, ChatPage]) -> Iterator[tuple[ChatPage, ChatPage]]:
    yield browsers
    for page in browsers:  # leave the page: its connections close
        try:
            page.driver.get("about:blank")
        except Exception:
            pass


def two_logged_in(cluster: Cluster, pages: tuple[ChatPage, ChatPage], transport: str) -> tuple[str, str]:
    a, b = pages
    na, nb = h.unique_name("ana"), h.unique_name("bob")
    a.open(cluster.lb.url, transport)
    a.login(na, "1.jpg", transport)
    b.open(cluster.lb.url, transport)
    b.login(nb, "4.jpg", transport)
    return na, nb


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_browsers_chat_on_each_transport(healthy: Cluster, pages: tuple[ChatPage, ChatPage], transport: str) -> None:
    a, b = pages
    na, nb = two_logged_in(healthy, pages, transport)
    for page in pages:
        s = page.status()
        assert s["transport"] == transport and s["libTransport"] == transport, s
        assert s["node"] in ("edge-a", "edge-b"), s
        assert s["state"] == "online", s

    room = h.unique_room("chat")
    a.join(room)
    b.join(room)

    # Room chat, both ways.
    hello = f"hello from {na} over {transport} 你好"
    a.say(hello)
    got = b.wait_message(hello)
    assert got["nick"] == na and got["avatar"] and not got["private"] and got["time"], got
    a.wait_sent(hello)
    reply = f"hi {na}, {nb} here"
    b.say(reply)
    a.wait_message(reply)
    b.wait_sent(reply)

    # Private: A clicks B's nickname in the message list and whispers.
    a.click_nick(nb)
    secret = f"psst {nb}, only for you ({transport})"
    a.type_message(secret)
    got = b.wait_message(secret, private=True)
    assert got["nick"] == na, got
    a.wait_sent(secret)
    assert a.with_text(secret)[0]["private"]
    b.click_nick(na)
    answer = f"got it {na}"
    b.type_message(answer)
    a.wait_message(answer, private=True)

    # HTML in a message is text.
    a.say(HTML_TEXT)
    b.wait_message(HTML_TEXT)
    a.wait_sent(HTML_TEXT)
    for page in pages:
        page.no_alert()
        assert page.js("return document.querySelectorAll('#messages img, #messages script, #messages b').length") == 0

    # The online count (polls: see test_online_count_updates).
    if transport in ("websocket", "sse", "iframe"):
        a.wait_online_count(2)
        b.wait_online_count(2)

    # Every message once on each page, confirmed, even after a few more polls / pings:
    # first each one confirmed (shown with its id) everywhere, then a quiet 2 s in which a
    # duplicate would show up.
    for page in pages:
        for text in (hello, reply, secret, answer, HTML_TEXT):
            page.wait(lambda: any(m["id"] for m in page.with_text(text)), what=f"{text!r} confirmed")
    time.sleep(2.0)
    for page in pages:
        for text in (hello, reply, secret, answer, HTML_TEXT):
            hits = page.with_text(text)
            assert len(hits) == 1, f"{page.name}: {text!r} shown {len(hits)} times: {page.messages_safe()}"
            assert hits[0]["id"], hits
        assert page.status()["state"] == "online"
        assert page.js_errors() == [], page.js_errors()

    shot = a.screenshot(f"chat-{transport}.png")
    if transport == "websocket":
        shutil.copyfile(shot, ARTIFACTS / "chat.png")


LONG_POLL_PRESENCE = pytest.mark.xfail(
    reason="known limitation: a long-polling browser behind a round-robin LB holds a parked subscriber on every "
           "node it polls; after a leave, a node that served one of its earlier polls keeps the old rooms until "
           "its poll window (15 s) passes, which can exceed this test's 20 s with the recount. A closed tab is "
           "seen at once (the waiting poll's connection closes; ~3 s grace): the long-poll case usually passes",
    strict=False)
JSONP_PRESENCE = pytest.mark.xfail(
    reason="known limitation: as long-poll, and in Chromium a JSONP page's closed tab does not close its "
           "waiting poll's connection (observed: the count stayed 2 for 30 s), so the node sees the tab "
           "close only when the poll's wait (25 s) and then the window (15 s) pass",
    strict=False)


@pytest.mark.parametrize("transport", [
    "websocket", "sse", "iframe",
    pytest.param("long-poll", marks=LONG_POLL_PRESENCE),
    pytest.param("jsonp", marks=JSONP_PRESENCE),
    "short-poll",
])
def test_online_count_updates(healthy: Cluster, pages: tuple[ChatPage, ChatPage], transport: str) -> None:
    a, b = pages
    two_logged_in(healthy, pages, transport)
    room = h.unique_room("count")
    a.join(room)
    a.wait_online_count(1)
    b.join(room)
    a.wait_online_count(2)
    b.wait_online_count(2)
    # B leaves the room (× in the room list): A's count drops.
    b.click(f'#rooms li[data-room="{room}"] .leave')
    a.wait_online_count(1)
    # B comes back, then closes its tab.
    b.join(room)
    a.wait_online_count(2)
    b.driver.get("about:blank")
    a.wait_online_count(1, timeout=30)


POLLS = ("long-poll", "jsonp", "short-poll")


@pytest.mark.parametrize("transport", ["auto", "sse", "iframe", "long-poll", "jsonp", "short-poll"])
def test_node_kill_reconnects_through_lb_without_loss_or_duplicates(
        healthy: Cluster, pages: tuple[ChatPage, ChatPage], transport: str) -> None:
    a, b = pages
    na, nb = two_logged_in(healthy, pages, transport)
    room = h.unique_room("kill")
    a.join(room)
    b.join(room)
    before = [f"before {i} from {na}" for i in range(2)]
    for text in before:
        a.say(text)
        b.wait_message(text)
    b.say(f"before from {nb}")
    a.wait_message(f"before from {nb}")

    victim = healthy.node(a.status()["node"])
    survivor = healthy.other(victim.node_id)
    # A third user posts through the survivor directly (POST /api/send) while A is cut off.
    carol = h.login(survivor.url, h.unique_name("carol"), "6.jpg")
    a.js("window.__welcomes = [];")
    victim.kill()
    meanwhile = [f"meanwhile {i} while {victim.node_id} is down" for i in range(3)]
    with h.http_client() as client:
        for i, text in enumerate(meanwhile):
            r = client.post(f"{survivor.url}/api/send", params={"token": carol["token"]},
                            json={"type": "say", "room": room, "text": text, "ref": i})
            assert r.status_code == 200 and r.json()["type"] == "ack", r.text

    # A reconnects through the LB — necessarily to the survivor — and resumes. (A poller
    # whose request in flight was on the survivor needs no new connection: its next polls
    # simply all go to the survivor, and its status keeps the node of its first poll.)
    if transport in POLLS:
        a.wait_online(transport, timeout=40)
        assert set(a.js("return window.__welcomes")) <= {survivor.node_id}, a.js("return window.__welcomes")
    else:
        a.wait_online(None if transport == "auto" else transport, node=survivor.node_id, timeout=40)
        assert survivor.node_id in a.js("return window.__welcomes"), a.js("return window.__welcomes")
    for text in meanwhile:
        a.wait_message(text, timeout=30)
    # B (wherever it was) is online again and talks to A.
    b.wait_online(None if transport == "auto" else transport, timeout=40)
    after = f"after the kill from {nb}"
    b.say(after)
    a.wait_message(after, timeout=30)
    for text in meanwhile:
        b.wait_message(text, timeout=30)

    time.sleep(2.0)
    for page in pages:
        for text in before + meanwhile + [f"before from {nb}", after]:
            hits = page.with_text(text)
            assert len(hits) == 1, f"{page.name}: {text!r} shown {len(hits)} times: {page.messages_safe()}"
        ids = [m["id"] for m in page.messages() if m["id"]]
        assert len(ids) == len(set(ids)), f"{page.name}: duplicate ids {ids}"
        assert page.js_errors() == [], page.js_errors()
    # Messages are in id order on the page of the browser that reconnected.
    assert [m["text"] for m in a.messages() if m["text"].startswith("meanwhile")] == meanwhile


def test_auto_falls_back_when_a_proxy_blocks_websocket_and_sse(
        healthy: Cluster, pages: tuple[ChatPage, ChatPage]) -> None:
    a, b = pages
    lb = h.HAProxy(healthy.nodes, deny_paths=["/ws", "/sse"]).start()
    try:
        na = h.unique_name("fb")
        a.open(lb.url, "auto")
        a.login(na, "2.jpg", "auto")
        s = a.wait_online("long-poll", timeout=40)
        assert s["libTransport"] == "long-poll", s
        nb = h.unique_name("fb")
        b.open(healthy.lb.url, "websocket")
        b.login(nb, "3.jpg", "websocket")
        room = h.unique_room("fallback")
        a.join(room)
        b.join(room)
        b.say("reaching a long-poller")
        a.wait_message("reaching a long-poller")
        a.say("answer over POST /api/send")
        b.wait_message("answer over POST /api/send")
    finally:
        lb.stop()


def test_transport_picker_switches_live_and_status_line(healthy: Cluster, pages: tuple[ChatPage, ChatPage]) -> None:
    a, b = pages
    na, nb = two_logged_in(healthy, pages, "websocket")
    room = h.unique_room("switch")
    a.join(room)
    b.join(room)
    seen = []
    for transport in ["sse", "jsonp", "iframe", "long-poll", "short-poll", "websocket"]:
        Select(a.find("#transport-picker")).select_by_value(transport)
        s = a.wait_online(transport, timeout=30)
        seen.append((transport, s["node"]))
        text = f"{nb} to {na} while A is on {transport}"
        b.say(text)
        a.wait_message(text)
        assert len(a.with_text(text)) == 1
    assert a.find("#status").get_attribute("data-state") == "online"
    # Room state survived every switch, without duplicates.
    texts = [m["text"] for m in a.messages()]
    assert len(texts) == len(set(texts)), texts
    # A reload keeps the session (token in sessionStorage), the rooms and the transport.
    a.driver.refresh()
    a.wait_online("websocket")
    assert a.js("return chat.sb.rooms.includes(arguments[0])", room)
    b.say("after the reload")
    a.wait_message("after the reload")


def test_phone_width_and_es_module_import(healthy: Cluster, pages: tuple[ChatPage, ChatPage]) -> None:
    a, b = pages
    na, nb = two_logged_in(healthy, pages, "websocket")
    room = h.unique_room("phone")
    a.join(room)
    b.join(room)
    b.say(f"hello {na}, this is a long line to see the wrapping on a small screen — " * 2)
    a.wait_message(f"hello {na}, this is a long line to see the wrapping on a small screen — " * 2)
    b.type_message("a private hello on the phone", to=na)
    a.wait_message("a private hello on the phone", private=True)
    a.say(HTML_TEXT)
    a.wait_sent(HTML_TEXT)
    a.driver.set_window_size(390, 844)
    try:
        time.sleep(0.5)
        overflow = a.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"horizontal overflow of {overflow}px at phone width"
        for css in ("#message-input", "#send-button", "#menu-button", "#status"):
            assert a.find(css).is_displayed(), css
        a.screenshot("chat-phone.png")
        # The room drawer opens from the menu button.
        a.find("#menu-button").click()
        a.wait(lambda: a.find("#join-room").is_displayed(), what="room drawer open")
        a.screenshot("chat-phone-rooms.png")
    finally:
        a.driver.set_window_size(1200, 820)

    # The library works as a plain script (window.Switchboard) and through import().
    kind = a.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const before = window.Switchboard;
        delete window.Switchboard;
        import('/switchboard.js?module').then(() => {
          const S = globalThis.Switchboard;
          const ok = typeof S === 'function' && S.TRANSPORTS.join() === 'websocket,sse,long-poll,iframe,jsonp,short-poll'
            && S.compareIds('10-0', '9-5') === 1 && S.compareIds('1795294873349-10', '1795294873349-9') === 1;
          window.Switchboard = before;
          done(ok ? 'ok' : 'bad');
        }, (e) => { window.Switchboard = before; done('error ' + e); });""")
    assert kind == "ok", kind
