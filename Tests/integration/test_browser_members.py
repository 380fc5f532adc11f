"""The chat page's "People in this room" in a real browser (issue 19).

Headless Chromium (selenium) shows the page of edge-1 of a three-node cluster (one
Redis, `--members-page 3`); other people are WebSocket clients on edge-2 and edge-3. The
page's list (nicknames and avatars, then "and N more") is checked against
`GET /api/rooms/{room}/members` of another node:

* people who were there before the browser came are listed;
* arrivals and departures on other nodes show up live, past the page size as "and N more";
* the list stays right across reconnects (WebSocket → SSE → long-poll);
* a SIGKILLed node's people leave the list.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Callable, Iterator

import pytest

import switchboard_harness as h
from switchboard_harness import Clients, run
from test_browser_chat import ChatPage, _chrome

pytestmark = pytest.mark.xdist_group("browser")

ROOM = "lobby"  # the page joins it at login


@pytest.fixture
def cluster(redis_server: h.RedisServer, node_factory: Callable[..., h.SwitchboardNode]) -> list[h.SwitchboardNode]:
    nodes = [node_factory(node_id=f"edge-{i}", redis=redis_server.url, extra_args=["--members-page", "3"])
             for i in (1, 2, 3)]
    for n in nodes:
        n.wait_ready(30)
    return nodes


@pytest.fixture
def page() -> Iterator[ChatPage]:
    driver = _chrome("members")
    try:
        yield ChatPage(driver, "browser")
    finally:
        try:
            driver.quit()
        except Exception:
            pass


def page_list(p: ChatPage) -> dict:
    return p.js("""const lis = [...document.querySelectorAll('#users li[data-nickname]')];
        const more = document.querySelector('#users li.more');
        return {members: lis.map((li) => [li.dataset.nickname, li.querySelector('.avatar').title]),
                more: more ? Number(more.dataset.more) : 0, moreText: more ? more.textContent : null,
                count: Number(document.getElementById('online-count').textContent)};""")


def api_view(node: h.SwitchboardNode) -> dict:
    with h.http_client() as client:
        r = client.get(node.url + f"/api/rooms/{ROOM}/members",
                       headers={"Authorization": f"Bearer {h.DEFAULT_API_KEY}"})
    assert r.status_code == 200, r.text
    body = r.json()
    members = [[m["nickname"], m["avatar"]] for m in body["members"]]
    return {"members": members, "more": body["count"] - len(members), "count": body["count"]}


async def wait_same(p: ChatPage, node: h.SwitchboardNode, expected_nicks: list[str], expected_count: int,
                    timeout: float = 25.0) -> dict:
    """Waits until the page shows what the API says and the API says what we expect
    (yielding to the event loop in between: the WebSocket clients keep answering pings)."""
    deadline = time.monotonic() + timeout
    while True:
        api = api_view(node)
        shown = page_list(p)
        last = {"api": api, "page": shown}
        if (api["count"] == expected_count and [m[0] for m in api["members"]] == expected_nicks
                and shown["members"] == api["members"] and shown["more"] == api["more"]
                and shown["count"] == api["count"]):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"page list ≠ API {expected_nicks} (+{expected_count - len(expected_nicks)}) after "
                                 f"{timeout}s; last seen: {last}; status {p.status_safe()}; console {p.read_console()[-10:]}")
        await asyncio.sleep(0.1)
    if last["page"]["more"]:
        assert last["page"]["moreText"] == f"and {last['page']['more']} more", last
    return last


def test_page_lists_people_across_nodes_live_and_across_reconnects(
        cluster: list[h.SwitchboardNode], page: ChatPage) -> None:
    tag = secrets.token_hex(2)
    aa, bb, cc, dd, ab = (f"{x}-{tag}" for x in ("aa", "bb", "cc", "dd", "ab"))
    me = f"mm-{tag}"
    e1, e2, e3 = cluster

    async def body() -> None:
        async with Clients() as clients:
            people: dict[str, Any] = {}

            async def arrive(nick: str, node: h.SwitchboardNode, avatar: str) -> None:
                client, _, _ = await clients.user(node, nick, avatar, rooms=[ROOM])
                people[nick] = client

            # Two people are there before the browser comes, on two other nodes.
            await arrive(aa, e2, "2.jpg")
            await arrive(bb, e3, "3.jpg")
            await asyncio.to_thread(page.open, e1.url, "websocket")
            await asyncio.to_thread(page.login, me, "1.jpg", "websocket")
            assert page.status()["node"] == "edge-1"
            await wait_same(page, e2, [aa, bb, me], 3)

            # Arrivals past the page size: the first three by nickname, "and 2 more".
            await arrive(cc, e3, "4.jpg")
            await arrive(dd, e3, "5.jpg")
            await wait_same(page, e3, [aa, bb, cc], 5)
            # A departure on another node.
            await people.pop(bb).close()
            await wait_same(page, e2, [aa, cc, dd], 4)

            # Reconnects: SSE, then an arrival while on it.
            page.js("chat.chooseTransport('sse')")
            await asyncio.to_thread(page.wait_online, "sse")
            await arrive(ab, e2, "6.jpg")
            await wait_same(page, e3, [aa, ab, cc], 5)

            # edge-3 dies with cc and dd (not cleanly: SIGKILL).
            killed = time.monotonic()
            e3.kill()
            await wait_same(page, e2, [aa, ab, me], 3, timeout=30)
            print(f"\nbrowser: the page dropped a SIGKILLed node's people after {time.monotonic() - killed:.1f} s")

            page.js("chat.chooseTransport('long-poll')")
            await asyncio.to_thread(page.wait_online, "long-poll")
            await wait_same(page, e1, [aa, ab, me], 3)
            page.screenshot("members.png")
            assert not page.js_errors(), page.js_errors()

    run(body(), timeout=240)
