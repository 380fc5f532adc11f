"""Native WebSocket transport on one node: welcome, presence, say, whisper, errors,
ping (PROTOCOL.md § Events, § Transports)."""

from __future__ import annotations

import asyncio
import time

import switchboard_harness as h
from switchboard_harness import Clients, WSClient, is_type, login, run

MESSAGE_KEYS = {"type", "id", "room", "from", "text", "ts"}
PRIVATE_KEYS = {"type", "id", "from", "to", "text", "ts"}


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_message(event: dict, *, room: str, nickname: str, avatar: str, text: str) -> None:
    assert event.get("type") == "message", event
    assert set(event) == MESSAGE_KEYS, f"message keys: {sorted(event)}"
    assert h.MESSAGE_ID.match(event["id"]), event
    assert event["room"] == room, event
    assert event["from"] == {"nickname": nickname, "avatar": avatar}, event
    assert event["text"] == text, event
    assert isinstance(event["ts"], int) and abs(event["ts"] - now_ms()) < 60_000, event


def assert_private(event: dict, *, sender: str, avatar: str, to: str, text: str) -> None:
    assert event.get("type") == "private", event
    assert set(event) == PRIVATE_KEYS, f"private keys: {sorted(event)}"
    assert h.MESSAGE_ID.match(event["id"]), event
    assert event["from"] == {"nickname": sender, "avatar": avatar}, event
    assert event["to"] == to, event
    assert event["text"] == text, event
    assert isinstance(event["ts"], int) and abs(event["ts"] - now_ms()) < 60_000, event


def is_message(text: str | None = None):
    return lambda e: e.get("type") == "message" and (text is None or e.get("text") == text)


def is_private(text: str | None = None):
    return lambda e: e.get("type") == "private" and (text is None or e.get("text") == text)


# ------------------------------------------------------------------------------------
# 3. welcome
# ------------------------------------------------------------------------------------


def test_plain_get_on_ws_without_upgrade(node):
    """GET /ws without an Upgrade header: 426 `upgrade_required` (with `Upgrade:
    websocket`) for a valid token, 401 without one; a WebSocket upgrade still works."""
    token = login(node.url, h.unique_name("plain"))["token"]
    with h.http_client() as client:
        plain = client.get(node.url + "/ws", params={"token": token})
        anonymous = client.get(node.url + "/ws")
    assert plain.status_code == 426, plain.text
    assert plain.json() == {"error": "upgrade_required"}
    assert plain.headers.get("upgrade", "").lower() == "websocket"
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized", anonymous.text

    async def body() -> str:
        ws, welcome = await WSClient.session(node.ws_url, token, [])
        await ws.close()
        return welcome["type"]

    assert run(body(), 20) == "welcome"


def test_welcome_is_the_first_event(node):
    nick = h.unique_name("wel")
    room = h.unique_room()

    async def body():
        creds = login(node.url, nick, "7.jpg")
        async with Clients() as c:
            # Give the room some history first, so there is something that could
            # come before the welcome.
            other, _, _ = await c.user(node, rooms=[room])
            await other.send({"type": "say", "room": room, "text": "before", "ref": 1})
            await other.recv_type("ack", ref=1)

            client = c.track(await WSClient.connect(node.ws_url, creds["token"], rooms=[room], name=nick))
            first = await client.recv(10)
            assert first.get("type") == "welcome", f"first event: {first}"
            assert set(first) == {"type", "nickname", "avatar", "node", "transport", "cursor"}, first
            assert first["nickname"] == nick
            assert first["avatar"] == "7.jpg"
            assert first["node"] == node.node_id
            assert first["transport"] == "websocket"
            assert isinstance(first["cursor"], str)
            h.CursorTracker(first["cursor"])  # the documented text form
            # Exactly one welcome.
            await client.ping()
            assert len(client.seen(is_type("welcome"))) == 1

    run(body(), 30)


def test_welcome_unicode_identity(node):
    async def body():
        async with Clients() as c:
            nick = "东" + h.unique_name("")[1:]
            _, welcome, _ = await c.user(node, nick, avatar="https://img.example/%E5%A4%B4%E5%83%8F.png")
            assert welcome["nickname"] == nick and welcome["avatar"] == "https://img.example/%E5%A4%B4%E5%83%8F.png"

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 4. presence, joined, left
# ------------------------------------------------------------------------------------


def test_presence_joined_left(node_factory):
    fresh = node_factory(node_id="presence-node")  # an empty lobby, exact counts
    lobby = "lobby"

    async def body():
        async with Clients() as c:
            alice, _, acred = await c.user(fresh, h.unique_name("alice"), rooms=[lobby])
            await alice.recv_type("presence", room=lobby, count=1)

            # Bob joins with a join event.
            bob, _, bcred = await c.user(fresh, h.unique_name("bob"))
            bob_nick = bcred["nickname"]
            await bob.send({"type": "join", "room": lobby, "ref": "j1"})
            await bob.recv_all(is_type("ack", ref="j1"), is_type("presence", room=lobby, count=2))
            await alice.recv_all(is_type("joined", room=lobby, nickname=bob_nick), is_type("presence", room=lobby, count=2))
            for e in alice.seen(is_type("joined")) + alice.seen(is_type("left")):
                assert set(e) == {"type", "room", "nickname"}, e
            for e in alice.seen(is_type("presence")):
                assert set(e) == {"type", "room", "count"}, e

            # A second tab of Alice does not change the count (distinct nicknames) and
            # is not announced as a new member.
            # `joined`/`left` travel in the room's stream: a message Alice says afterwards is
            # the barrier (the room's events reach Bob in order). A count change comes from
            # the node's coalesced recount (≤ 100 ms), not ordered with the room: a quiet
            # second after the barrier.
            async def barrier(text: str) -> None:
                await alice.send({"type": "say", "room": lobby, "text": text})
                await bob.wait_seen(is_type("message", text=text), 10, what=f"the barrier {text!r}")

            tab2, _ = await c.session(fresh, acred["token"], rooms=[lobby], name="alice-tab2")
            await barrier("after the second tab")
            await bob.expect_none(lambda e: e.get("type") == "presence" and e.get("count") != 2, 1.0, "presence change")
            await bob.expect_none(is_type("joined", nickname=acred["nickname"]), 0.01, "joined for a second tab")
            await tab2.close()
            # The node has handled the close once its WebSocket count is back to 2.
            deadline = time.monotonic() + 10
            while h.cluster_connections(fresh).get("websocket") != 2:
                assert time.monotonic() < deadline, f"the second tab's close not handled: {h.cluster_connections(fresh)}"
                await asyncio.sleep(0.05)
            await barrier("after the second tab closed")
            await bob.expect_none(is_type("left", nickname=acred["nickname"]), 1.0, "left while another tab stays")
            await bob.expect_none(lambda e: e.get("type") == "presence" and e.get("count") != 2, 0.01, "presence change")

            # Bob leaves with a leave event.
            await bob.send({"type": "leave", "room": lobby, "ref": "l1"})
            await bob.recv_type("ack", ref="l1")
            await alice.recv_all(is_type("left", room=lobby, nickname=bob_nick), is_type("presence", room=lobby, count=1))

            # Bob comes back via rooms= on a new connection, then disconnects.
            bob2, _ = await c.session(fresh, bcred["token"], rooms=[lobby], name="bob2")
            await alice.recv_all(is_type("joined", room=lobby, nickname=bob_nick), is_type("presence", room=lobby, count=2))
            await bob2.recv_type("presence", room=lobby, count=2, timeout=5)
            await bob2.close()
            await alice.recv_all(is_type("left", room=lobby, nickname=bob_nick), is_type("presence", room=lobby, count=1))
            # Nobody announced Alice to herself.
            assert not alice.seen(is_type("joined", nickname=acred["nickname"]))

    run(body(), 60)


# ------------------------------------------------------------------------------------
# 5. say
# ------------------------------------------------------------------------------------


def test_say_echo_true_stamps_sender_and_acks(node):
    room = h.unique_room()

    async def body():
        async with Clients() as c:
            alice, _, acred = await c.user(node, h.unique_name("alice"), avatar="2.jpg", rooms=[room])
            bob, _, bcred = await c.user(node, h.unique_name("bob"), avatar="3.jpg", rooms=[room])
            text = "hello 东东 😀 </script>\"\\"
            await alice.send({
                "type": "say", "room": room, "text": text, "echo": True, "ref": "r-1",
                # Spoofing attempts: all must be ignored.
                "from": {"nickname": bcred["nickname"], "avatar": "evil.png"},
                "nickname": bcred["nickname"], "avatar": "evil.png", "id": "1-1", "ts": 5,
            })
            ack, mine = await alice.recv_all(is_type("ack", ref="r-1"), is_message(text), what="ack and own echo")
            theirs = await bob.recv_until(is_message(text), what="room message")
            for e in (mine, theirs):
                assert_message(e, room=room, nickname=acred["nickname"], avatar="2.jpg", text=text)
            assert mine == theirs
            assert mine["id"] != "1-1" and mine["ts"] != 5
            assert ack == {"type": "ack", "ref": "r-1", "id": mine["id"]}

            # Integer refs come back as integers; ids increase.
            await alice.send({"type": "say", "room": room, "text": "second", "echo": True, "ref": 42})
            ack2 = await alice.recv_type("ack", ref=42)
            second = await bob.recv_until(is_message("second"))
            assert ack2 == {"type": "ack", "ref": 42, "id": second["id"]}
            assert h.id_key(second["id"]) > h.id_key(mine["id"])

            # Bob's reply is stamped with Bob.
            await bob.send({"type": "say", "room": room, "text": "reply", "from": {"nickname": acred["nickname"], "avatar": "2.jpg"}})
            reply = await alice.recv_until(is_message("reply"))
            assert_message(reply, room=room, nickname=bcred["nickname"], avatar="3.jpg", text="reply")

    run(body(), 30)


def test_say_without_ref_gets_no_ack(node):
    room = h.unique_room()

    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node, rooms=[room])
            await alice.send({"type": "say", "room": room, "text": "no ref", "echo": True})
            await alice.recv_until(is_message("no ref"))
            await alice.ping()
            assert not alice.seen(is_type("ack")), alice.events

    run(body(), 30)


def test_say_echo_false_excludes_all_sender_connections(node):
    room = h.unique_room()

    async def body():
        async with Clients() as c:
            a1, _, acred = await c.user(node, h.unique_name("alice"), rooms=[room])
            a2, _ = await c.session(node, acred["token"], rooms=[room], name="alice-tab2")
            bob, _, _ = await c.user(node, h.unique_name("bob"), rooms=[room])

            await a1.send({"type": "say", "room": room, "text": "quiet", "echo": False, "ref": "e1"})
            ack = await a1.recv_type("ack", ref="e1")
            got = await bob.recv_until(is_message("quiet"))
            assert_message(got, room=room, nickname=acred["nickname"], avatar="1.jpg", text="quiet")
            assert ack == {"type": "ack", "ref": "e1", "id": got["id"]}

            # Control: with echo true both tabs get it. It is also the barrier for the
            # check below: the room's events reach a connection in id order, so had
            # "quiet" been sent to a tab, it would be there before "loud".
            await a1.send({"type": "say", "room": room, "text": "loud", "echo": True})
            await a1.recv_until(is_message("loud"))
            await a2.recv_until(is_message("loud"))
            await bob.recv_until(is_message("loud"))
            await a1.expect_none(is_message("quiet"), 0.01, "echo to the sending connection", everything=True)
            await a2.expect_none(is_message("quiet"), 0.01, "echo to the sender's other tab", everything=True)

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 6. whisper
# ------------------------------------------------------------------------------------


def test_whisper_reaches_target_and_senders_other_tabs_only(node):
    async def body():
        async with Clients() as c:
            a1, _, acred = await c.user(node, h.unique_name("alice"), avatar="2.jpg")
            a2, _ = await c.session(node, acred["token"], name="alice-tab2")
            bob, _, bcred = await c.user(node, h.unique_name("bob"))
            carol, _, _ = await c.user(node, h.unique_name("carol"))
            alice_nick, bob_nick = acred["nickname"], bcred["nickname"]

            await a1.send({"type": "whisper", "to": bob_nick, "text": "psst 东", "ref": "w1",
                           "from": {"nickname": "carol", "avatar": "x"}})
            ack = await a1.recv_type("ack", ref="w1")
            at_bob = await bob.recv_until(is_private("psst 东"), what="whisper at target")
            at_tab2 = await a2.recv_until(is_private("psst 东"), what="copy at sender's other tab")
            for e in (at_bob, at_tab2):
                assert_private(e, sender=alice_nick, avatar="2.jpg", to=bob_nick, text="psst 东")
            assert set(ack) == {"type", "ref", "id"}, ack
            # docs/protocol.md: the ack carries the id in the sender's own private stream,
            # the one its other tabs see.
            assert ack["id"] == at_tab2["id"], (ack, at_bob, at_tab2)

            # And back: Bob answers; both of Alice's tabs get it, Bob's sending
            # connection does not.
            await bob.send({"type": "whisper", "to": alice_nick, "text": "hi back"})
            for tab in (a1, a2):
                e = await tab.recv_until(is_private("hi back"))
                assert_private(e, sender=bob_nick, avatar="1.jpg", to=alice_nick, text="hi back")
            # "hi back" is in Alice's private stream after the copy of her own whisper: a
            # stream reaches a connection in id order, so a copy sent to a1 would be here.
            await a1.expect_none(is_private("psst 东"), 0.01, "whisper copy on the sending connection", everything=True)
            # The same barrier for Bob's sending connection: a later event of his stream.
            await a2.send({"type": "whisper", "to": bob_nick, "text": "barrier", "ref": "wb"})
            await bob.recv_until(is_private("barrier"), what="the barrier whisper")
            await bob.expect_none(is_private("hi back"), 0.01, "whisper echoed to its sender", everything=True)
            # Carol's streams hold neither whisper (no barrier possible): by now both had
            # every chance to arrive anywhere; a last look after a quiet second.
            await carol.expect_none(is_private(), 1.0, "whisper at a third user", everything=True)

    run(body(), 30)


def test_whisper_to_unknown_nickname_is_user_offline(node):
    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node)
            ghost = h.unique_name("ghost")  # never logged in
            await alice.send({"type": "whisper", "to": ghost, "text": "anyone?", "ref": "u1"})
            err = await alice.recv_type("error", ref="u1")
            assert err["code"] == "user_offline", err
            assert set(err) == {"type", "ref", "code", "message"}, err
            assert isinstance(err["message"], str)
            await alice.ping()

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 7. errors, 8. ping
# ------------------------------------------------------------------------------------


def test_errors_carry_ref_and_connection_keeps_working(node):
    room = h.unique_room()
    other_room = h.unique_room("notjoined")

    cases = [
        # (event sent, expected code, ref)
        ({"type": "say", "room": room, "text": "x" * 4097, "ref": "t1"}, "text_too_long", "t1"),
        ({"type": "say", "room": room, "text": "😀" * 4097, "ref": "t2"}, "text_too_long", "t2"),
        ({"type": "whisper", "to": "someone", "text": "y" * 4097, "ref": "t3"}, "text_too_long", "t3"),
        ({"type": "join", "room": "bad room!", "ref": "r1"}, "invalid_room", "r1"),
        ({"type": "join", "room": "a" * 65, "ref": "r2"}, "invalid_room", "r2"),
        ({"type": "join", "room": "", "ref": "r3"}, "invalid_room", "r3"),
        ({"type": "join", "room": "东东", "ref": "r4"}, "invalid_room", "r4"),
        ({"type": "say", "room": "no/slash", "text": "hi", "ref": "r5"}, "invalid_room", "r5"),
        ("{not json", "invalid_message", None),
        ('{"type": "say", "room": ', "invalid_message", None),
        ({"type": "dance", "ref": 7}, "invalid_message", 7),
        ({"ref": "nt", "room": room}, "invalid_message", "nt"),
        ({"type": "say", "room": other_room, "text": "hi", "ref": "nj"}, "not_joined", "nj"),
    ]

    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node, rooms=[room])
            bob, _, _ = await c.user(node, rooms=[room])
            for sent, code, ref in cases:
                await alice.send(sent)
                err = await alice.recv_until(lambda e: e.get("type") in ("error", "ack", "message"),
                                             what=f"answer to {str(sent)[:60]}")
                assert err.get("type") == "error", f"{str(sent)[:80]} → {err}"
                assert err["code"] == code, f"{str(sent)[:80]} → {err}"
                assert isinstance(err.get("message"), str) and err["message"], err
                if ref is None:
                    assert err.get("ref") is None, err
                    assert set(err) <= {"type", "ref", "code", "message"}, err
                else:
                    assert err.get("ref") == ref and type(err["ref"]) is type(ref), err
                    assert set(err) == {"type", "ref", "code", "message"}, err
                # The connection still works.
                await alice.send({"type": "ping"})
                # Room state may be pushed at any time (bob's arrival: presence, and the
                # member list of a small room), so the pong is the next other event.
                nxt = await alice.recv_until(lambda e: e.get("type") not in ("presence", "members", "joined"),
                                             what="pong")
                assert nxt == {"type": "pong"}, f"after {str(sent)[:60]}: {nxt}"
            assert not alice.seen(is_type("message"))

            # Boundary: exactly 4096 scalars (astral, 16 KiB of UTF-8) is accepted.
            long_text = "😀" * 4096
            await alice.send({"type": "say", "room": room, "text": long_text, "ref": "ok"})
            ack = await alice.wait_type("ack", ref="ok")
            got = await bob.recv_until(is_message(long_text))
            assert ack["id"] == got["id"]
            # Nothing happened for anyone else, and Alice did not join anything. The
            # accepted message is the barrier: the room's events arrive in id order, so
            # anything a refused say had caused in the room would have come before it.
            await bob.expect_none(lambda e: e.get("type") in ("message", "private", "joined") and e.get("text") != long_text,
                                  0.3, "effect of a refused event", everything=True)

    run(body(), 60)


def test_ping_pong(node):
    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node)
            await alice.send({"type": "ping"})
            assert await alice.recv(5) == {"type": "pong"}
            await alice.send({"type": "ping", "ref": "p1"})
            got = [await alice.recv(5), await alice.recv(5)]
            assert {"type": "pong"} in got, got
            acks = [e for e in got if e.get("type") == "ack"]
            assert len(acks) == 1 and acks[0]["ref"] == "p1", got

    run(body(), 30)


# ------------------------------------------------------------------------------------
# 10. isolation
# ------------------------------------------------------------------------------------


def test_bad_events_do_not_affect_other_users(node):
    room = h.unique_room()

    async def body():
        async with Clients() as c:
            alice, _, acred = await c.user(node, rooms=[room])
            bob, _, _ = await c.user(node, rooms=[room])
            garbage = [
                "garbage", b"\x00\x01binary frame", "[1,2,3]", "null", "42", '"str"',
                '{"type": "say"}', '{"type": "say", "room": "%s"}' % room,
                '{"type": "say", "room": "%s", "text": 5}' % room,
                '{"type": "say", "room": "%s", "text": "x", "echo": "yes"}' % room,
                '{"type": "join", "room": "x", "ref": {"nested": true}}',
                '{"type": "ping", "ref": "%s"}' % ("r" * 100),
                "\ud800".encode("utf-8", "surrogatepass"),  # invalid UTF-8 as binary
            ]
            for g in garbage:
                await alice.send(g)
            # Alice got an error for each; no message went out.
            for _ in garbage:
                await alice.recv_type("error", timeout=5)
            await alice.ping()
            await alice.send({"type": "say", "room": room, "text": "valid after garbage", "ref": "v"})
            await alice.recv_type("ack", ref="v")
            got = await bob.recv_until(is_message("valid after garbage"))
            assert_message(got, room=room, nickname=acred["nickname"], avatar="1.jpg", text="valid after garbage")
            assert not bob.seen(is_type("error")), bob.seen(is_type("error"))
            assert [e["text"] for e in bob.seen(is_type("message"))] == ["valid after garbage"]

            # A client that sends an oversized frame (> 64 KiB) is cut off with 1009
            # (docs/protocol.md), but nobody else is affected.
            carol, _, _ = await c.user(node, rooms=[room])
            try:
                await carol.send("x" * 200_000)
            except Exception:
                pass
            assert await carol.wait_closed(5) == 1009, (carol.close_code, carol.close_reason)
            await alice.send({"type": "say", "room": room, "text": "still here"})
            await bob.recv_until(is_message("still here"))
            await alice.ping()
            await bob.ping()

    run(body(), 30)


def test_connection_joining_by_rooms_query_learns_the_count(node_factory):
    """`rooms=` joins those rooms like a `join` event, whose answer includes the room's
    `presence`; a connection that joins by `rooms=` must likewise learn the current
    count, even when its arrival does not change it (a second tab of a member)."""
    fresh = node_factory(node_id="presence-tab")

    async def body():
        async with Clients() as c:
            alice, _, acred = await c.user(fresh, h.unique_name("alice"), rooms=["lobby"])
            bob, _, _ = await c.user(fresh, h.unique_name("bob"), rooms=["lobby"])
            await alice.wait_type("presence", room="lobby", count=2)
            await bob.wait_type("presence", room="lobby", count=2)
            tab2, _ = await c.session(fresh, acred["token"], rooms=["lobby"], name="alice-tab2")
            await tab2.wait_type("presence", room="lobby", count=2, timeout=5)

    run(body(), 30)
