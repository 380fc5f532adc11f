"""The browser transports in a real headless Chromium (Debian's chromium +
chromium-driver, selenium from PyPI): EventSource, a JSONP `<script>` long-poll loop and
a hidden streaming iframe, each on node 2 of a two-node cluster on Redis, receiving what a
Python WebSocket client on node 1 sends — 5 room messages and a whisper, exactly once —
and rendering a message that tries to close the script element as plain text.

The test page is served from the node's own origin: the browser opens
`http://127.0.0.1:<node 2>/healthz` and the page is written into that document
(document.open/write), so every request is same-origin, as with the bundled client.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

import switchboard_harness as h
from switchboard_harness import Clients, login, run, stored_key

# Under pytest-xdist (`--dist loadgroup`) both browser modules run on one worker, one
# after the other: Chromium is the heaviest thing the suite runs on a 2-core machine.
pytestmark = pytest.mark.xdist_group("browser")

EVIL = ('</script><script>parent.__pwned=1;window.__pwned=1</script><!-- \u2028 \u2029 '
        '<img src=x onerror="parent.__pwned=2;window.__pwned=2"> --> end')

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>switchboard transport test</title></head>
<body><h1>transport test</h1><div id="out"></div></body></html>"""

# Shared by every transport: records events once per call, renders chat text safely.
COMMON_JS = r"""
window.T = {events: [], errors: [], answers: 0, cursor: null, stopped: false, ids: []};
window.record = function (ev, lastEventId) {
  T.events.push(ev);
  if (lastEventId !== undefined) T.ids.push([ev.type, lastEventId]);
  if (ev.type === "message" || ev.type === "private") {
    const div = document.createElement("div");
    div.className = "chat";
    div.textContent = ev.text;
    document.getElementById("out").appendChild(div);
  }
};
"""

START_SSE = r"""
const [token, room] = arguments;
const es = new EventSource("/sse?token=" + encodeURIComponent(token) + "&rooms=" + encodeURIComponent(room));
for (const type of ["welcome", "message", "private", "presence", "joined", "left", "reset", "error"]) {
  es.addEventListener(type, (e) => { if (e.data !== undefined) record(JSON.parse(e.data), e.lastEventId); });
}
es.onerror = () => T.errors.push("readyState " + es.readyState);
window.stopTransport = () => es.close();
"""

START_JSONP = r"""
const [token, room] = arguments;
window.jsonpCb = function (resp) {
  T.answers += 1;
  T.cursor = resp.cursor;
  for (const ev of resp.events) record(ev);
  if (!T.stopped) setTimeout(next, 0);
};
function next() {
  const s = document.createElement("script");
  s.src = "/poll?token=" + encodeURIComponent(token) + "&rooms=" + encodeURIComponent(room) +
          "&wait=5&callback=jsonpCb" + (T.cursor ? "&cursor=" + encodeURIComponent(T.cursor) : "");
  s.onload = () => s.remove();
  s.onerror = () => { s.remove(); T.errors.push("script error"); if (!T.stopped) setTimeout(next, 500); };
  document.head.appendChild(s);
}
next();
window.stopTransport = () => { T.stopped = true; };
"""

START_IFRAME = r"""
const [token, room] = arguments;
window.iframeCb = function (ev) { record(ev); };
const f = document.createElement("iframe");
f.id = "stream";
f.style.display = "none";
f.src = "/iframe?token=" + encodeURIComponent(token) + "&rooms=" + encodeURIComponent(room) + "&callback=iframeCb";
document.body.appendChild(f);
window.stopTransport = () => f.remove();
"""

STATE_JS = r"""
const f = document.getElementById("stream");
let framePwned = null;
try { framePwned = f && f.contentWindow ? (f.contentWindow.__pwned === undefined ? null : f.contentWindow.__pwned) : null; }
catch (e) { framePwned = "inaccessible: " + e; }
return {
  events: T.events, errors: T.errors, answers: T.answers, ids: T.ids,
  rendered: Array.from(document.querySelectorAll("#out .chat")).map((d) => d.textContent),
  outScripts: document.querySelectorAll("#out script, #out img").length,
  pwned: window.__pwned === undefined ? null : window.__pwned,
  framePwned: framePwned,
};
"""


def _chromedriver() -> str | None:
    for path in ("/usr/bin/chromedriver", shutil.which("chromedriver") or ""):
        if path and os.path.exists(path):
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed (pip install selenium; scripts/deps.sh test)")
    driver_path = _chromedriver()
    binary = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
    if driver_path is None or binary is None:
        pytest.fail("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--proxy-server=direct://", "--proxy-bypass-list=*"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def cluster(switchboard_binary: str, redis_server_binary: str) -> Iterator[SimpleNamespace]:
    tag = secrets.token_hex(2)
    redis = h.RedisServer(binary=redis_server_binary).start()
    nodes = [h.SwitchboardNode(node_id=f"br{i}-{tag}", redis=redis.url, binary=switchboard_binary) for i in (1, 2)]
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready()
        yield SimpleNamespace(redis=redis, n1=nodes[0], n2=nodes[1], nodes=nodes)
    finally:
        for n in nodes:
            n.stop()
        redis.kill()


def open_page(driver: Any, node: h.SwitchboardNode) -> None:
    """Same-origin page: open the node, replace the document with the test page."""
    driver.get(node.url + "/healthz")
    driver.execute_script("document.open(); document.write(arguments[0]); document.close();", PAGE)
    driver.execute_script(COMMON_JS)


@pytest.mark.parametrize("transport", ["eventsource", "jsonp", "iframe"])
def test_browser_transport_receives_messages_whisper_and_renders_script_text_safely(cluster, browser, transport):
    n1, n2 = cluster.n1, cluster.n2
    room = h.unique_room("br")
    alice_nick, bob_nick = h.unique_name("alice"), h.unique_name("bob")
    texts = [f"{transport} #{i} 东东 ✓" for i in range(5)]
    whisper = f"{transport} whisper 🤫"
    start = {"eventsource": START_SSE, "jsonp": START_JSONP, "iframe": START_IFRAME}[transport]

    def state() -> dict:
        return browser.execute_script(STATE_JS)

    async def body():
        alice = login(n1.url, alice_nick)
        bob = login(n2.url, bob_nick)
        await asyncio.to_thread(open_page, browser, n2)
        try:
            await asyncio.to_thread(browser.execute_script, start, bob["token"], room)
            # Wait for the welcome (the JSONP loop's first answer, the stream's first event).
            deadline = time.monotonic() + 15
            while True:
                s = await asyncio.to_thread(state)
                if any(e.get("type") == "welcome" for e in s["events"]):
                    break
                assert time.monotonic() < deadline, f"{transport}: no welcome in the browser: {s}"
                await asyncio.sleep(0.1)
            welcome = next(e for e in s["events"] if e.get("type") == "welcome")
            assert welcome["nickname"] == bob_nick and welcome["node"] == n2.node_id, welcome

            async with Clients() as c:
                ws, _ = await c.session(n1, alice["token"], rooms=[room], name="alice")
                ids = []
                for i, t in enumerate(texts + [EVIL]):
                    await ws.send({"type": "say", "room": room, "text": t, "ref": f"s{i}"})
                    ack = await ws.wait_seen(lambda e, r=f"s{i}": e.get("ref") == r, 10)
                    assert ack["type"] == "ack", ack
                    ids.append(ack["id"])
                    await asyncio.sleep(0.1)
                await ws.send({"type": "whisper", "to": bob_nick, "text": whisper, "ref": "w"})
                ack = await ws.wait_seen(lambda e: e.get("ref") == "w", 10)
                assert ack["type"] == "ack", f"whisper to the browser user: {ack}"

                deadline = time.monotonic() + 20
                while True:
                    s = await asyncio.to_thread(state)
                    chat = [e for e in s["events"] if e.get("type") in ("message", "private")]
                    if len(chat) >= 7:
                        break
                    assert time.monotonic() < deadline, f"{transport}: browser got only {chat}; state: {s}"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.5)  # duplicates would arrive now
                s = await asyncio.to_thread(state)
        finally:
            await asyncio.to_thread(browser.execute_script, "if (window.stopTransport) stopTransport();")

        events = s["events"]
        keys = [stored_key(e) for e in events if stored_key(e) is not None]
        assert len(keys) == len(set(keys)), f"{transport}: duplicates in the browser: {events}"
        messages = [e for e in events if e.get("type") == "message"]
        privates = [e for e in events if e.get("type") == "private"]
        assert [m["text"] for m in messages] == texts + [EVIL], f"{transport}: messages {messages}"
        assert [m["id"] for m in messages] == ids, f"{transport}: ids {[m['id'] for m in messages]} != acked {ids}"
        assert [(p["text"], p["to"], p["from"]["nickname"]) for p in privates] == [(whisper, bob_nick, alice_nick)], privates
        # Rendered as text, executed nowhere.
        assert s["rendered"] == texts + [EVIL, whisper] or sorted(s["rendered"]) == sorted(texts + [EVIL, whisper]), s["rendered"]
        assert s["outScripts"] == 0, "the message text created elements"
        assert s["pwned"] is None, f"{transport}: the message text ran script in the page (__pwned={s['pwned']!r})"
        assert s["framePwned"] is None, f"{transport}: the message text ran script in the iframe ({s['framePwned']!r})"
        if transport == "eventsource":
            for type_, last_id in s["ids"]:
                if type_ in ("message", "private"):
                    assert last_id and "@" in last_id, f"EventSource lastEventId {last_id!r} for a {type_}"
        if transport == "jsonp":
            assert s["answers"] >= 2, s
        assert not [e for e in s["errors"] if transport != "eventsource"], f"{transport}: errors {s['errors']}"

    run(body(), 90)
