"""Who is online (issue 19): a room's member list, cluster-wide, from the presence data
the counts come from. Real parts: one `redis-server`, three `switchboard serve --redis`
nodes, and clients written by others (websockets, httpx, python-socketio).

* users on three nodes in one room, joined in both orders: every joiner's snapshot lists
  who was there before; the list is identical on every node and every way of asking
  (pushed `members` on WebSocket and SSE, the `members` event on WebSocket, `/api/send`
  POST and JSONP GET, `GET /api/rooms/{room}/members` with the API key, a Socket.IO ack
  on polling and websocket), pages and cursors included; a nickname with two
  connections on two nodes is listed once;
* a SIGKILLed node's users leave the list (pushed and asked) within the counts' window;
* rooms above `--join-leave-limit` get no snapshot but answer requests, in pages;
* hostile requests get clear errors and change nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Callable, Optional

import httpx
import pytest

import switchboard_harness as h
from switchboard_harness import SIOs, Clients, SSEStream, WSClient, login, run


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture
def cluster(redis_server: h.RedisServer, node_factory: Callable[..., h.SwitchboardNode]) -> list[h.SwitchboardNode]:
    """Three nodes (edge-1, edge-2, edge-3) on one fresh redis-server."""
    nodes = [node_factory(node_id=f"edge-{i}", redis=redis_server.url) for i in (1, 2, 3)]
    for n in nodes:
        n.wait_ready(30)
    return nodes


def byte_order(nicknames: list[str]) -> list[str]:
    """The order the protocol promises: by UTF-8 bytes (code points)."""
    return sorted(nicknames, key=lambda n: n.encode())


def entries(event: dict) -> list[tuple[str, str]]:
    return [(m["nickname"], m["avatar"]) for m in event["members"]]


def api_members(node: Any, room: str, api_key: Optional[str] = h.DEFAULT_API_KEY, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    with h.http_client() as client:
        return client.get(h.base_url(node) + f"/api/rooms/{room}/members", params=params, headers=headers)


def api_page(node: Any, room: str, **params: Any) -> dict:
    r = api_members(node, room, **params)
    assert r.status_code == 200, f"{h.base_url(node)}: HTTP {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def api_all_pages(node: Any, room: str, limit: int) -> list[tuple[str, str]]:
    """Every member, page by page, following `next`; checks each page's shape."""
    found: list[tuple[str, str]] = []
    after: Optional[str] = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        page = api_page(node, room, **params)
        assert len(page["members"]) <= limit, page
        found += entries(page)
        after = page["next"]
        if after is None:
            return found
        assert after == page["members"][-1]["nickname"], f"next is the page's last nickname: {page}"
    raise AssertionError("paging did not end")


def is_members(room: str, predicate: Callable[[dict], bool] = lambda e: True) -> Callable[[dict], bool]:
    return lambda e: e.get("type") == "members" and e.get("room") == room and e.get("ref") is None and predicate(e)


def last_members(client: Any, room: str) -> Optional[dict]:
    pushed = client.seen(is_members(room))
    return pushed[-1] if pushed else None


async def wait_last_members(client: Any, room: str, expected: list[tuple[str, str]], timeout: float = 15.0) -> dict:
    """Waits until the newest pushed `members` of `room` on `client` lists `expected`."""
    deadline = time.monotonic() + timeout
    while True:
        event = last_members(client, room)
        if event is not None and entries(event) == expected:
            assert event["count"] == len(expected) and event["next"] is None, event
            return event
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.name}: newest members of {room} is {event}, expected {expected}")
        await asyncio.sleep(0.05)


async def ws_ask(client: WSClient, room: str, ref: Any, **fields: Any) -> dict:
    await client.send({"type": "members", "room": room, "ref": ref, **fields})
    return await client.wait_seen(lambda e: e.get("ref") == ref and e.get("type") in ("members", "error"),
                                  10, what=f"answer to ref {ref}")


async def join(client: WSClient, room: str, ref: str) -> list[dict]:
    """Sends `join` and returns the replies up to the answer to a ping sent right after
    it (replies come in order: ack, presence, then the snapshot if there is one)."""
    await client.send({"type": "join", "room": room, "ref": ref})
    await client.send({"type": "ping", "ref": ref + "-end"})
    replies: list[dict] = []
    while True:
        event = await client.recv(10)
        if event.get("type") == "ack" and event.get("ref") == ref + "-end":
            return replies
        # A recount's push may reach the joiner before its replies (it is in the room as
        # soon as it joined): what comes before the join's ack is not a reply.
        if event.get("ref") == ref or replies and event.get("room") == room and event.get("type") in ("presence", "members"):
            replies.append(event)


# --------------------------------------------------------------------------------------
# One list everywhere
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["edge-1 first", "edge-3 first"])
def test_list_identical_on_every_node_and_transport(cluster: list[h.SwitchboardNode], order: str) -> None:
    tag = secrets.token_hex(3)
    people = [(f"alice-{tag}", "1.jpg", 0), (f"小明{tag}", "2.jpg", 1), (f"carol-{tag}", "https://cdn.example.com/a/carol.png?size=64&v=2", 2)]
    if order == "edge-3 first":
        people.reverse()
    room = h.unique_room("who")

    async def body() -> None:
        async with Clients() as clients, SIOs() as sios:
            members: dict[str, WSClient] = {}
            tokens: dict[str, str] = {}
            for count, (nick, avatar, at) in enumerate(people, start=1):
                creds = login(cluster[at].url, nick, avatar)
                tokens[nick] = creds["token"]
                client, welcome = await clients.session(cluster[at], creds["token"], name=nick)
                assert welcome["node"] == f"edge-{at + 1}"
                replies = await join(client, room, f"j-{count}")
                assert [e["type"] for e in replies] == ["ack", "presence", "members"], replies
                snapshot = replies[2]
                # The joiner sees everyone who was there before, on whatever node.
                so_far = byte_order([p[0] for p in people[:count]])
                assert [m for m, _ in entries(snapshot)] == so_far, snapshot
                assert snapshot["count"] == count and replies[1]["count"] == count and snapshot["next"] is None
                members[nick] = client
            avatar_of = {nick: avatar for nick, avatar, _ in people}
            expected = [(n, avatar_of[n]) for n in byte_order(list(avatar_of))]

            # Earlier joiners get the later arrivals pushed, on every node.
            for client in members.values():
                await wait_last_members(client, room, expected)

            # A second connection of one nickname on another node: listed once; its
            # opening (rooms=) brings the snapshot after the presence count.
            first_nick, _, first_at = people[0]
            tab_node = cluster[(first_at + 1) % 3]
            tab, _ = await clients.session(tab_node, tokens[first_nick], rooms=[room], name=first_nick + "-tab2")
            opened = await tab.wait_seen(is_members(room), 10, what="snapshot on open")
            assert entries(opened) == expected and opened["count"] == 3, opened
            presence_at = next(i for i, e in enumerate(tab.events) if e.get("type") == "presence" and e.get("room") == room)
            assert presence_at < tab.events.index(opened), tab.events
            await tab.close()

            # An SSE stream (a member's other tab) gets the snapshot too.
            sse_nick = people[1][0]
            sse, _ = await SSEStream.session(cluster[2], tokens[sse_nick], [room], name="sse")
            try:
                streamed = await sse.wait_seen(is_members(room), 10, what="members on SSE")
                assert entries(streamed) == expected, streamed
            finally:
                await sse.close()

            # Asked, on every node, every way.
            observer = login(cluster[0].url, h.unique_name("observer"))["token"]
            async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
                for i, n in enumerate(cluster):
                    page = api_page(n, room)
                    assert entries(page) == expected and page["count"] == 3 and page["next"] is None, page
                    assert page["type"] == "members" and page["room"] == room
                    assert api_all_pages(n, room, limit=1) == expected
                    assert api_all_pages(n, room, limit=2) == expected

                    asker = next(c for c in members.values() if c.name == [p[0] for p in people if p[2] == i][0])
                    answer = await ws_ask(asker, room, f"ask-{i}")
                    assert answer["type"] == "members" and entries(answer) == expected, answer
                    paged = await ws_ask(asker, room, f"page-{i}", limit=2)
                    assert entries(paged) == expected[:2] and paged["next"] == expected[1][0], paged
                    rest = await ws_ask(asker, room, f"rest-{i}", limit=2, after=paged["next"])
                    assert entries(rest) == expected[2:] and rest["next"] is None and rest["count"] == 3, rest

                    r = await h.api_send(n, observer, {"type": "members", "room": room, "ref": 7}, client=http)
                    assert r.status_code == 200, r.text
                    assert r.json()["ref"] == 7 and entries(r.json()) == expected, r.json()
                    r = await h.api_send(n, observer, {"type": "members", "room": room}, method="GET", callback="cb", client=http)
                    assert r.status_code == 200 and r.headers["content-type"].startswith("application/javascript")
                    assert entries(h.unwrap_jsonp(r.content, "cb")) == expected

            # Socket.IO clients ask with an ack'd event, on polling and on websocket.
            for i, transports in enumerate((["polling"], ["websocket"], None)):
                sio, _ = await sios.user(cluster[i], transports)
                await sio.welcome()
                ack = await sio.client.call("members", room, timeout=10)
                assert ack == {"room": room, "count": 3, "next": None,
                               "members": [{"nickname": n, "avatar": a} for n, a in expected]}, ack
                ack = await sio.client.call("members", {"room": room, "limit": 1, "after": expected[0][0]}, timeout=10)
                assert [m["nickname"] for m in ack["members"]] == [expected[1][0]] and ack["next"] == expected[1][0], ack
                refused = await sio.client.call("members", {"room": "not a room"}, timeout=10)
                assert refused["error"] == "invalid_room", refused

            # A departure is pushed to the others: the list and the count agree.
            leaver, _, _ = people[1]
            await members[leaver].send({"type": "leave", "room": room})
            remaining = [e for e in expected if e[0] != leaver]
            for nick, client in members.items():
                if nick != leaver:
                    await wait_last_members(client, room, remaining)
            for n in cluster:
                assert entries(api_page(n, room)) == remaining

            # A Socket.IO member: its join brings the snapshot as a `members` event, and
            # the native members get it pushed.
            sio_member, sio_nick = await sios.user(cluster[1], ["websocket"])
            await sio_member.welcome()
            assert "id" in await sio_member.client.call("join", room, timeout=10)
            with_sio = [e for e in expected if e[0] != leaver] + [(sio_nick, "1.jpg")]
            with_sio.sort(key=lambda e: e[0].encode())
            await sio_member.wait("members", lambda a: a[0].get("room") == room and entries(a[0]) == with_sio, 10)
            for nick, client in members.items():
                if nick != leaver:
                    await wait_last_members(client, room, with_sio)
            for n in cluster:
                assert entries(api_page(n, room)) == with_sio

    run(body(), timeout=120)


# --------------------------------------------------------------------------------------
# A node dies
# --------------------------------------------------------------------------------------


def test_killed_node_users_leave_the_list(cluster: list[h.SwitchboardNode]) -> None:
    tag = secrets.token_hex(3)
    room = h.unique_room("dead")
    people = [(f"ann-{tag}", 0), (f"bo-{tag}", 1), (f"cy-{tag}", 2), (f"cy2-{tag}", 2)]

    async def body() -> None:
        async with Clients() as clients:
            watchers: dict[str, WSClient] = {}
            for nick, at in people:
                client, _, _ = await clients.user(cluster[at], nick, rooms=[room])
                watchers[nick] = client
            everyone = [(n, "1.jpg") for n in byte_order([p[0] for p in people])]
            for nick, _ in people:
                await wait_last_members(watchers[nick], room, everyone)
            for n in cluster:
                assert entries(api_page(n, room)) == everyone

            killed_at = time.monotonic()
            cluster[2].kill()
            survivors = [(n, "1.jpg") for n in byte_order([nick for nick, at in people if at != 2])]
            # Pushed to the survivors' members, in the window the counts use (entries
            # expire after 10 s, recounts every 3 s): the same bound test_cluster puts on
            # the count.
            for nick in (people[0][0], people[1][0]):
                event = await wait_last_members(watchers[nick], room, survivors, timeout=20)
                assert event["count"] == 2
                await watchers[nick].wait_seen(lambda e: e.get("type") == "presence" and e.get("room") == room
                                               and e.get("count") == 2, 5, what="count 2")
            elapsed = time.monotonic() - killed_at
            for n in cluster[:2]:
                page = api_page(n, room)
                assert entries(page) == survivors and page["count"] == 2, page
            print(f"\nmembers: a SIGKILLed node's 2 users left the list after {elapsed:.1f} s")
            assert elapsed < 20

    run(body(), timeout=90)


# --------------------------------------------------------------------------------------
# Big rooms, limits, hostile input
# --------------------------------------------------------------------------------------


def test_big_room_pages_without_snapshots(node_factory: Callable[..., h.SwitchboardNode]) -> None:
    n = node_factory(node_id="solo", extra_args=["--join-leave-limit", "2", "--members-page", "2"])
    room = h.unique_room("big")
    tag = secrets.token_hex(3)
    nicks = [f"{c}-{tag}" for c in ("dd", "bb", "aa", "cc")]

    async def body() -> None:
        async with Clients() as clients:
            joined: list[WSClient] = []
            for i, nick in enumerate(nicks, start=1):
                client, _, _ = await clients.user(n, nick, avatar=f"{i}.jpg")
                replies = await join(client, room, f"j{i}")
                types = [e["type"] for e in replies]
                # Up to the limit a snapshot follows the count; above it, none. A recount's
                # push may follow the replies before the ping's answer (a count handed to
                # the joiner that differs from the node's record is announced to everyone
                # again): the replies are the first ones; above the limit no list at all.
                if i <= 2:
                    assert types[:3] == ["ack", "presence", "members"], (i, replies)
                    assert set(types[3:]) <= {"presence", "members"}, (i, replies)
                else:
                    assert types[:2] == ["ack", "presence"] and set(types[2:]) <= {"presence"}, (i, replies)
                joined.append(client)
            expected = [(nick, f"{nicks.index(nick) + 1}.jpg") for nick in byte_order(nicks)]
            asker = joined[0]
            first = await ws_ask(asker, room, 1)
            assert entries(first) == expected[:2] and first["count"] == 4 and first["next"] == expected[1][0], first
            second = await ws_ask(asker, room, 2, after=first["next"])
            assert entries(second) == expected[2:] and second["next"] is None, second
            wide = await ws_ask(asker, room, 3, limit=1000)
            assert entries(wide) == expected and wide["next"] is None
            assert api_all_pages(n, room, limit=3) == expected
            page = api_page(n, room)
            assert entries(page) == expected[:2] and page["next"] == expected[1][0]
            # Nobody in a room: an empty list, not an error.
            empty = api_page(n, h.unique_room("empty"))
            assert empty["count"] == 0 and empty["members"] == [] and empty["next"] is None

    run(body(), timeout=60)


def test_hostile_requests_get_clear_errors(node_factory: Callable[..., h.SwitchboardNode]) -> None:
    n = node_factory(node_id="solo")
    room = h.unique_room("hostile")

    async def body() -> None:
        async with Clients() as clients:
            client, _, creds = await clients.user(n, rooms=[room])
            bad = [
                ({"room": "no spaces allowed"}, "invalid_room"),
                ({}, "invalid_room"),
                ({"room": room, "limit": 0}, "invalid_message"),
                ({"room": room, "limit": 1001}, "invalid_message"),
                ({"room": room, "limit": "5"}, "invalid_message"),
                ({"room": room, "limit": 2.5}, "invalid_message"),
                ({"room": room, "after": ""}, "invalid_message"),
                ({"room": room, "after": 12}, "invalid_message"),
                ({"room": room, "after": "x" * 33}, "invalid_message"),
                ({"room": room, "after": "a|b"}, "invalid_message"),
            ]
            for i, (fields, code) in enumerate(bad):
                ref = f"bad-{i}"
                await client.send({"type": "members", "ref": ref, **fields})
                answer = await client.wait_seen(lambda e, r=ref: e.get("ref") == r, 10, what=ref)
                assert answer["type"] == "error" and answer["code"] == code, (fields, answer)
            r = await h.api_send(n, creds["token"], {"type": "members", "room": room, "limit": -1, "ref": "x"})
            assert r.status_code == 400 and r.json()["code"] == "invalid_message" and r.json()["ref"] == "x", r.text
            r = await h.api_send(n, None, {"type": "members", "room": room})
            assert r.status_code == 401

            # The HTTP API: the key, then the same checks.
            assert api_members(n, room, api_key=None).status_code == 401
            assert api_members(n, room, api_key="wrong").status_code == 401
            for params, code in [({"limit": "abc"}, "invalid_message"), ({"limit": "0"}, "invalid_message"),
                                 ({"limit": "99999999999999999999"}, "invalid_message"),
                                 ({"after": "a|b"}, "invalid_message")]:
                r = api_members(n, room, **params)
                assert r.status_code == 400 and r.json()["error"] == code, (params, r.text)
            r = api_members(n, "bad%20room")
            assert r.status_code == 400 and r.json()["error"] == "invalid_room", r.text
            # Still alive, list unchanged.
            assert [m for m, _ in entries(api_page(n, room))] == [client.name]

    run(body(), timeout=60)
