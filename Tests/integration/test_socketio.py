"""Socket.IO on the cluster (issue 5, "Tests (real parts)"): python-socketio's
AsyncClient — an unmodified official client — against two real `switchboard serve
--redis …` nodes on one real `redis-server`, with native WebSocket clients in the same
rooms. Every test runs over `['polling']`, `['websocket']` and the client's default
(polling, then the upgrade to WebSocket).

* auth with a token from `POST /api/login`, or `{nickname, avatar}` (login on the fly);
  bad auth and taken nicknames are CONNECT_ERRORs with `{"message": code}`;
* a Socket.IO client on node 1 and a native client on node 2 see each other's messages,
  both ways; other Socket.IO clients get the same event and payload (`from` stamped);
* a private event by `to` reaches that nickname on the other node, and nobody else;
* acks carry the stored id (the id native clients see, and that history replays);
* binary payloads cross the cluster as attachments (`{"$binary": …}` for natives);
* a configured namespace works, an unknown one is refused with "Invalid namespace";
* `presence` events follow the room's count;
* (test_socketio_reconnect.py: reconnect through a round-robin haproxy after the
  client's node is SIGKILLed.)

Every process is started by a fixture and stopped in its finalizer.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Iterator, Optional

import pytest
import socketio

import switchboard_harness as h
from switchboard_harness import SIOs, Clients, login, login_response, run, text_is, wait_transport

TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": None}
NAMESPACES = ["--socketio-namespaces", "/chat"]


@pytest.fixture(params=list(TRANSPORTS), ids=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Optional[list[str]]:
    return TRANSPORTS[request.param]


@pytest.fixture(scope="module")
def cluster(switchboard_binary: str, redis_server_binary: str) -> Iterator[list[h.SwitchboardNode]]:
    """Two nodes (edge-1, edge-2) on one redis-server, shared by the module's tests
    (which use unique nicknames, rooms and texts)."""
    redis = h.RedisServer(binary=redis_server_binary).start()
    nodes = [h.SwitchboardNode(node_id=f"edge-{i}", redis=redis.url, extra_args=NAMESPACES, binary=switchboard_binary)
             for i in (1, 2)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(30)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        redis.kill()


# --------------------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------------------


def test_connect_with_token(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios:
            client, nickname = await sios.user(cluster[0], transport)
            welcome = await client.welcome()
            assert welcome["nickname"] == nickname and welcome["node"] == "edge-1"
            assert "token" not in welcome
            await client.wait("presence", lambda a: a[0]["room"] == "lobby" and a[0]["count"] >= 1)
            await wait_transport(client, transport)
            # The nickname is held cluster-wide while connected.
            assert login_response(cluster[1].url, nickname).status_code == 409

    run(body())


def test_connect_with_nickname_and_avatar(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios:
            nickname = h.unique_name("sio")
            client = await sios.new(nickname).connect(cluster[1].url, {"nickname": nickname, "avatar": "3.jpg"}, transport)
            welcome = await client.welcome()
            assert (welcome["nickname"], welcome["avatar"], welcome["node"]) == (nickname, "3.jpg", "edge-2")
            assert isinstance(welcome["token"], str)  # to reconnect with {token}
            await wait_transport(client, transport)
            assert login_response(cluster[0].url, nickname).status_code == 409
            # The same nickname on the other node: refused.
            second = sios.new("second")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await second.connect(cluster[0].url, {"nickname": nickname}, transport)
            assert second.errors["/"]["message"] == "nickname_taken"
            # No or forged credentials.
            for auth in (None, {}, {"token": "forged.token"}, {"nickname": " bad "}):
                refused = sios.new("refused")
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await refused.connect(cluster[0].url, auth, transport)
                assert refused.errors["/"]["message"] in ("unauthorized", "invalid_nickname"), (auth, refused.errors)

    # python-engineio's client, refused over polling, calls disconnect(): it queues CLOSE and
    # leaves the "connected" state; a write loop still busy with the previous POST then exits
    # without sending CLOSE, and disconnect() waits for the pending GET until the server's
    # next ping (25 s). Seen once on a loaded machine: room for two such waits.
    run(body(), 120)


# --------------------------------------------------------------------------------------
# Chat across nodes
# --------------------------------------------------------------------------------------


def test_cross_node_broadcast_both_directions(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios, Clients() as natives:
            sender, sender_nick = await sios.user(cluster[0], transport)
            other, _ = await sios.user(cluster[1], transport)
            native, _, native_creds = await natives.user(cluster[1], rooms=["lobby"])
            await wait_transport(sender, transport)

            # Native `say` on node 2 → Socket.IO clients get `message` with the native object.
            said = f"native-{h.unique_name()}"
            await native.send({"type": "say", "room": "lobby", "text": said, "ref": 1})
            (message,) = await sender.wait("message", text_is(said))
            assert message["type"] == "message" and message["room"] == "lobby"
            assert message["from"]["nickname"] == native_creds["nickname"]
            assert h.MESSAGE_ID.match(message["id"])
            await other.wait("message", text_is(said))

            # Socket.IO `chat` on node 1 → native clients get an application-style event,
            # other Socket.IO clients `chat` with the payload (`from` stamped), the sender nothing.
            text = f"sio-{h.unique_name()}"
            await sender.client.emit("chat", {"text": text, "from": "mallory"})
            event = await native.wait_seen(lambda e: e.get("type") == "chat" and e.get("data", {}).get("text") == text,
                                           what="chat from socket.io")
            assert event["event"] == "chat" and event["room"] == "lobby" and h.MESSAGE_ID.match(event["id"])
            assert event["from"] == {"nickname": sender_nick, "avatar": "1.jpg"}
            assert event["data"]["from"] == event["from"]  # stamped, not the client's
            (payload,) = await other.wait("chat", text_is(text))
            assert payload == {"text": text, "from": {"nickname": sender_nick, "avatar": "1.jpg"}}

            # `"echo": true`: the sender gets it too; a non-object payload passes unchanged.
            echoed = f"echo-{h.unique_name()}"
            await sender.client.emit("chat", {"text": echoed, "echo": True})
            await sender.wait("chat", text_is(echoed))
            # The echoed chat is the barrier: the room's events reach a socket in order,
            # so the first one, had it been sent back to its sender, would be in by now.
            assert not sender.seen("chat", text_is(text)), "others only by default"
            await other.client.emit("note", ("plain text", 42))
            args = await sender.wait("note")
            assert args == ("plain text", 42)
            note = await native.wait_seen(lambda e: e.get("type") == "note", what="note")
            assert note["data"] == "plain text" and note["extra"] == [42]

    run(body())


def test_private_event_by_to_across_nodes(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios, Clients() as natives:
            alice, alice_nick = await sios.user(cluster[0], transport)
            bob, bob_nick = await sios.user(cluster[1], transport)
            carol, _ = await sios.user(cluster[1], transport)
            native, _, native_creds = await natives.user(cluster[1], rooms=["lobby"])

            text = f"dm-{h.unique_name()}"
            ack = await alice.client.call("dm", {"to": bob_nick, "text": text}, timeout=10)
            assert h.MESSAGE_ID.match(ack["id"]), ack
            (payload,) = await bob.wait("dm", text_is(text))
            assert payload["to"] == bob_nick and payload["from"]["nickname"] == alice_nick

            # To a native client: `{"type": "dm", "to": …, "data": …}`.
            text2 = f"dm2-{h.unique_name()}"
            await alice.client.call("dm", {"to": native_creds["nickname"], "text": text2}, timeout=10)
            event = await native.wait_seen(lambda e: e.get("type") == "dm", what="dm")
            assert event["to"] == native_creds["nickname"] and "room" not in event
            assert event["data"]["text"] == text2 and event["from"]["nickname"] == alice_nick

            # No barrier reaches carol's or alice's socket through the streams these went
            # by: a quiet second (a negative check, generous for a loaded machine).
            await asyncio.sleep(1.0)
            assert not carol.seen("dm"), "nobody else gets a private event"
            assert not alice.seen("dm"), "not the sending socket"
            offline = await alice.client.call("dm", {"to": h.unique_name("nobody"), "text": "x"}, timeout=10)
            assert offline["error"] == "user_offline"

    run(body())


def test_acks(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios, Clients() as natives:
            client, _ = await sios.user(cluster[0], transport)
            room = h.unique_room("ack")
            joined = await client.client.call("join", room, timeout=10)
            assert h.MESSAGE_ID.match(joined["id"])
            native, _, _ = await natives.user(cluster[1], rooms=[room])
            text = f"acked-{h.unique_name()}"
            ack = await client.client.call("chat", {"room": room, "text": text}, timeout=10)
            event = await native.wait_seen(lambda e: e.get("type") == "chat", what="chat")
            assert ack == {"id": event["id"]}
            # Stored: a native client resuming from the start of the room gets it, same id.
            reader = login(cluster[0].url, h.unique_name())["token"]
            resumed, _ = await natives.session(cluster[0], reader, rooms=[room], cursor=f"r.{room}@0-0")
            replay = await resumed.wait_seen(lambda e: e.get("type") == "chat", what="replayed chat")
            assert replay["id"] == event["id"] and replay["data"]["text"] == text
            # Errors come back in the ack.
            assert (await client.client.call("join", "not a room", timeout=10))["error"] == "invalid_room"
            assert (await client.client.call("chat", {"room": h.unique_room(), "text": "x"}, timeout=10))["error"] \
                == "not_joined"
            assert (await client.client.call("leave", room, timeout=10)) == {}
            # Without an ack, a refusal is an `error` event.
            await client.client.emit("leave", room)
            (error,) = await client.wait("error")
            assert error == {"code": "not_joined", "message": error["message"], "event": "leave"}

    run(body())


def test_binary_payload(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios, Clients() as natives:
            sender, _ = await sios.user(cluster[0], transport)
            receiver, _ = await sios.user(cluster[1], transport)
            native, _, _ = await natives.user(cluster[1], rooms=["lobby"])
            blob = bytes(range(256)) * 4
            tag = h.unique_name("bin")
            ack = await sender.client.call("file", {"tag": tag, "blob": blob, "parts": [b"\x00", b"\xff"]}, timeout=10)
            assert h.MESSAGE_ID.match(ack["id"])
            (payload,) = await receiver.wait("file", lambda a: a[0].get("tag") == tag)
            assert payload["blob"] == blob and payload["parts"] == [b"\x00", b"\xff"]
            event = await native.wait_seen(lambda e: e.get("type") == "file" and e["data"].get("tag") == tag, what="file")
            assert base64.b64decode(event["data"]["blob"]["$binary"]) == blob

    run(body())


def test_namespaces(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios:
            client, nickname = await sios.user(cluster[0], transport, namespaces=["/chat"])
            welcome = await client.welcome("/chat")
            assert welcome["nickname"] == nickname
            other, _ = await sios.user(cluster[1], transport, namespaces=["/", "/chat"])
            text = f"ns-{h.unique_name()}"
            await other.client.emit("chat", {"text": text}, namespace="/chat")
            await client.wait("chat", text_is(text), namespace="/chat")
            await other.wait("chat", text_is(text), namespace="/")  # the same rooms: its `/` socket is another session

            refused = sios.new("refused")
            token = login(cluster[0].url, h.unique_name())["token"]
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(cluster[0].url, {"token": token}, transport, namespaces=["/nope"])
            assert refused.errors["/nope"] == {"message": "Invalid namespace"}

    run(body())


def test_presence_events(cluster: list[h.SwitchboardNode], transport: Optional[list[str]]) -> None:
    async def body() -> None:
        async with SIOs() as sios:
            room = h.unique_room("presence")
            alice, _ = await sios.user(cluster[0], transport)
            await alice.client.call("join", room, timeout=10)
            await alice.wait("presence", lambda a: a[0] == {"type": "presence", "room": room, "count": 1})
            bob, _ = await sios.user(cluster[1], transport)
            await bob.client.call("join", room, timeout=10)
            await alice.wait("presence", lambda a: a[0]["room"] == room and a[0]["count"] == 2)
            await bob.wait("presence", lambda a: a[0]["room"] == room and a[0]["count"] == 2)
            alice.events.clear()
            await bob.close()
            await alice.wait("presence", lambda a: a[0]["room"] == room and a[0]["count"] == 1)

    run(body())
