"""Resuming a WebSocket from a cursor (PROTOCOL.md: welcome carries the cursor;
ARCHITECTURE.md §4: a reconnecting client gets every message it missed that is still in
the history window, exactly once per id). Cursor text form: Cursor.swift /
docs/protocol.md — `r.<room>@<id>` and `u@<id>`, comma-separated."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import switchboard_harness as h
from switchboard_harness import Clients, CursorTracker, is_type, login, run

CHAT = ("message", "private")


def chat_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") in CHAT]


def test_resume_from_cursor_gets_exactly_the_missed_events(node):
    room = h.unique_room("resume")

    async def body():
        async with Clients() as c:
            alice, _, acred = await c.user(node, h.unique_name("alice"), rooms=[room])
            bcred = login(node.url, h.unique_name("bob"))
            bob_nick = bcred["nickname"]
            bob, welcome = await c.session(node, bcred["token"], rooms=[room], name="bob")
            cursor = CursorTracker(welcome["cursor"])

            # Bob receives a few events live.
            early = ["early-1", "early-2"]
            for t in early:
                await alice.send({"type": "say", "room": room, "text": t})
            await alice.send({"type": "whisper", "to": bob_nick, "text": "early-w"})
            await bob.recv_all(*(is_type("message", text=t) for t in early), is_type("private", text="early-w"))
            early_events = chat_events(bob.events)
            assert sorted(e["text"] for e in early_events) == ["early-1", "early-2", "early-w"], early_events
            assert [e["text"] for e in early_events if e["type"] == "message"] == early
            for e in bob.events:
                cursor.observe(e)
            saved = str(cursor)
            assert f"r.{room}@" in saved and "u@" in saved, saved
            await bob.close()
            await asyncio.sleep(0.3)

            # While Bob is away: 3 room messages and 1 whisper.
            missed_room = ["missed-1", "missed-2", "missed-3"]
            room_ids = []
            for i, t in enumerate(missed_room):
                await alice.send({"type": "say", "room": room, "text": t, "ref": f"m{i}"})
                room_ids.append((await alice.recv_type("ack", ref=f"m{i}"))["id"])
            await alice.send({"type": "whisper", "to": bob_nick, "text": "missed-w", "ref": "mw"})
            ack = await alice.recv_until(lambda e: e.get("ref") == "mw")
            assert ack["type"] == "ack", f"whisper to a briefly disconnected user: {ack}"

            # Bob resumes.
            bob2, welcome2 = await c.session(node, bcred["token"], rooms=[room], cursor=saved, name="bob-resumed")
            assert welcome2["nickname"] == bob_nick
            for _ in range(4):
                await bob2.recv_until(lambda e: e.get("type") in CHAT, what="missed event")
            await bob2.expect_none(lambda e: e.get("type") in CHAT, 1.0, "more than the 4 missed events")
            replayed = chat_events(bob2.events)
            texts = [e["text"] for e in replayed]
            assert sorted(texts) == sorted(missed_room + ["missed-w"]), texts
            # Room events in order, with the ids Alice was acknowledged.
            room_events = [e for e in replayed if e["type"] == "message"]
            assert [e["text"] for e in room_events] == missed_room
            assert [e["id"] for e in room_events] == room_ids
            assert all(e["room"] == room for e in room_events)
            private = [e for e in replayed if e["type"] == "private"]
            assert private[0]["to"] == bob_nick and private[0]["from"]["nickname"] == acred["nickname"]
            # No duplicates, nothing from before the cursor.
            ids = [(e["type"], e["id"]) for e in replayed]
            assert len(set(ids)) == len(ids), ids
            early_ids = {(e["type"], e["id"]) for e in early_events}
            assert not early_ids & set(ids), (early_ids, ids)
            # Ids only move forward per stream.
            assert h.id_key(private[0]["id"]) > h.id_key(cursor.user)

            # Live messages continue after the replay.
            await alice.send({"type": "say", "room": room, "text": "live-1"})
            await alice.send({"type": "whisper", "to": bob_nick, "text": "live-w"})
            await bob2.recv_all(is_type("message", text="live-1"), is_type("private", text="live-w"))
            assert [e["text"] for e in chat_events(bob2.events)][4:] in (["live-1", "live-w"], ["live-w", "live-1"])
            assert bob2.events[0]["type"] == "welcome"
            assert len(bob2.seen(is_type("welcome"))) == 1

    run(body(), 60)


def test_resume_from_welcome_cursor_of_empty_streams(node):
    """A client whose streams had no history yet (a new room, no private messages) must
    still be able to resume from the cursor its welcome gave it."""
    room = h.unique_room("fresh")

    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node, rooms=[room])
            bcred = login(node.url, h.unique_name("bob"))
            bob, welcome = await c.session(node, bcred["token"], rooms=[room], name="bob")
            saved = welcome["cursor"]
            await bob.close()
            await asyncio.sleep(0.3)
            await alice.send({"type": "say", "room": room, "text": "first ever", "ref": 1})
            await alice.recv_type("ack", ref=1)
            await alice.send({"type": "whisper", "to": bcred["nickname"], "text": "first whisper", "ref": 2})
            assert (await alice.recv_until(lambda e: e.get("ref") == 2))["type"] == "ack"

            bob2, _ = await c.session(node, bcred["token"], rooms=[room], cursor=saved, name="bob-resumed")
            await bob2.recv_all(is_type("message", text="first ever"), is_type("private", text="first whisper"),
                                what=f"missed events after cursor {saved!r}")
            # Live events in both streams as a barrier: the backlog comes before live
            # events, so a duplicate of the replay would be in before them.
            await alice.send({"type": "say", "room": room, "text": "barrier"})
            await alice.send({"type": "whisper", "to": bcred["nickname"], "text": "barrier-w"})
            await bob2.recv_all(is_type("message", text="barrier"), is_type("private", text="barrier-w"),
                                what="the live barrier events")
            assert [e["text"] for e in chat_events(bob2.events)][:2] in (["first ever", "first whisper"],
                                                                        ["first whisper", "first ever"]), bob2.events
            assert len(chat_events(bob2.events)) == 4, bob2.events

    run(body(), 30)


def test_connect_without_cursor_gets_no_history(node):
    room = h.unique_room("nohist")

    async def body():
        async with Clients() as c:
            alice, _, _ = await c.user(node, rooms=[room])
            await alice.send({"type": "say", "room": room, "text": "old", "ref": 1})
            await alice.recv_type("ack", ref=1)
            bob, welcome, _ = await c.user(node, rooms=[room])
            # A live message as the barrier: history would come before it.
            await alice.send({"type": "say", "room": room, "text": "new", "ref": 2})
            await bob.wait_seen(is_type("message", text="new"), 10, what="the live message")
            await bob.expect_none(lambda e: e.get("type") in CHAT and e.get("text") != "new", 0.01,
                                  "history without a cursor", everything=True)
            # The welcome cursor already points at the room's newest message.
            assert f"r.{room}@" in welcome["cursor"], welcome

    run(body(), 30)


def test_malformed_cursor_is_refused_400(node):
    """docs/protocol.md §5: a malformed cursor is refused with 400."""
    creds = login(node.url, h.unique_name("badcur"))

    async def body():
        for bad in ["garbage", "r.lobby@x-1", "u@1-1,u@2-2", "r.bad room@1-0"]:
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(h.ws_address(node.ws_url, creds["token"], cursor=bad), proxy=None, open_timeout=10):
                    pass
            assert info.value.response.status_code == 400, (bad, info.value.response.status_code)

    run(body(), 30)
