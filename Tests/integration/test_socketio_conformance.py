"""The public Engine.IO v4 and Socket.IO v5 protocol test suites (the `test-suite/`
folders of the engine.io-protocol and socket.io-protocol repositories), ported case by
case to pytest, against `socketio-conformance`.

The test names are the suites' `it(...)` names. Each case sends and expects what the
original does; where the original relies on timing that a Python client cannot
reproduce (two requests "in parallel"), the comment says how it is ordered here.
Messages are read from a queue, so packets the server sends back to back are never
lost (the node suites' `waitFor` can miss one that arrives in the same read).

The binary comes from SOCKETIO_CONFORMANCE_BIN (default: .build/debug/socketio-conformance
of this repository) and is started on a free port for the module.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import warnings
from typing import Any, Awaitable, Callable, Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

import switchboard_harness as h

PING_INTERVAL = 0.300
PING_TIMEOUT = 0.200


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with h.conformance_server() as port:
        yield Server(port)


ATTEMPTS = 3


class HeartbeatRetry(UserWarning):
    """A case was run again after failing while it met the server's heartbeat."""


def run(timeout: float = 2.0) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., None]]:
    """Runs an async test with mocha's timeout (2 s; 5 s for the heartbeat tests).

    The suites' server pings every 300 ms and closes a session whose pong is 200 ms late;
    their cases assume they run in a few milliseconds, well inside that. On a loaded
    machine (another job, parallel test workers) a case can outlast the interval and
    meet the heartbeat — a ping in a poll's answer, a session closed for a late pong —
    which says nothing about the server. A case that fails after running longer than
    the ping interval is run again on new sessions, up to ATTEMPTS times (with a
    HeartbeatRetry warning in the summary); a fast failure fails at once."""

    def wrap(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        @functools.wraps(test)
        def runner(*args: Any, **kwargs: Any) -> None:
            for attempt in range(1, ATTEMPTS + 1):
                start = time.monotonic()
                try:
                    asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout))
                    return
                except (AssertionError, ConnectionClosed, httpx.TransportError, asyncio.TimeoutError) as error:
                    took = time.monotonic() - start
                    if attempt == ATTEMPTS or took <= PING_INTERVAL:
                        raise
                    warnings.warn(HeartbeatRetry(
                        f"{test.__name__}: attempt {attempt} failed after {took:.2f}s (> the {PING_INTERVAL}s ping "
                        f"interval): {type(error).__name__}: {str(error)[:200]}; running it again"))

        return runner

    return wrap


# ---------------------------------------------------------------------------------
# Helpers: the suites' fetch / WebSocket / waitFor
# ---------------------------------------------------------------------------------


def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=5.0)


async def open_ws(url: str) -> ClientConnection:
    # No client pings: the Engine.IO heartbeat is the server's.
    return await connect(url, ping_interval=None, open_timeout=5, close_timeout=1)


async def next_message(ws: ClientConnection) -> str | bytes:
    return await ws.recv()


async def wait_for_close(ws: ClientConnection) -> None:
    """`waitFor(socket, "close")`: read until the server closes the connection."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        return


async def expect_ws_refused(url: str) -> None:
    """A WebSocket the server must not serve: the handshake fails, or the connection
    is closed before any message."""
    try:
        ws = await open_ws(url)
    except (InvalidHandshake, OSError):
        return
    try:
        message = await ws.recv()
        pytest.fail(f"expected the connection to close, got {message!r}")
    except ConnectionClosed:
        return


async def wait_for_packets(ws: ClientConnection, count: int) -> list[str | bytes]:
    """`waitForPackets`: the next `count` messages, pings ignored."""
    packets: list[str | bytes] = []
    while len(packets) < count:
        message = await ws.recv()
        if message == "2":
            continue
        packets.append(message)
    return packets


async def init_long_polling_session(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    return json.loads(response.text[1:])["sid"]


def check_handshake(content: str, upgrades: list[str]) -> None:
    assert content.startswith("0")
    value = json.loads(content[1:])
    assert set(value) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert isinstance(value["sid"], str)
    assert value["upgrades"] == upgrades
    assert value["pingInterval"] == int(PING_INTERVAL * 1000)
    assert value["pingTimeout"] == int(PING_TIMEOUT * 1000)
    assert value["maxPayload"] == 1000000


# ---------------------------------------------------------------------------------
# The Engine.IO part, shared by both suites (path /engine.io/ or /socket.io/)
# ---------------------------------------------------------------------------------


class EngineIOCases:
    """The "Engine.IO protocol" cases. The engine.io suite runs them on /engine.io/
    (with an echo server); the socket.io suite on /socket.io/."""

    path = ""
    echo = False

    def poll_url(self, server: Server, sid: str | None = None, extra: str = "") -> str:
        url = f"{server.url}/{self.path}/?EIO=4&transport=polling"
        return url + (f"&sid={sid}" if sid else "") + extra

    def ws_url(self, server: Server, sid: str | None = None) -> str:
        url = f"{server.ws_url}/{self.path}/?EIO=4&transport=websocket"
        return url + (f"&sid={sid}" if sid else "")

    # handshake / HTTP long-polling

    @run()
    async def test_handshake_polling_successfully_opens_a_session(self, server: Server) -> None:
        async with http() as client:
            response = await client.get(self.poll_url(server))
            assert response.status_code == 200
            check_handshake(response.text, ["websocket"])

    @run()
    async def test_handshake_polling_fails_with_an_invalid_eio_query_parameter(self, server: Server) -> None:
        async with http() as client:
            response = await client.get(f"{server.url}/{self.path}/?transport=polling")
            assert response.status_code == 400
            response2 = await client.get(f"{server.url}/{self.path}/?EIO=abc&transport=polling")
            assert response2.status_code == 400

    @run()
    async def test_handshake_polling_fails_with_an_invalid_transport_query_parameter(self, server: Server) -> None:
        async with http() as client:
            response = await client.get(f"{server.url}/{self.path}/?EIO=4")
            assert response.status_code == 400
            response2 = await client.get(f"{server.url}/{self.path}/?EIO=4&transport=abc")
            assert response2.status_code == 400

    @run()
    async def test_handshake_polling_fails_with_an_invalid_request_method(self, server: Server) -> None:
        async with http() as client:
            response = await client.post(self.poll_url(server))
            assert response.status_code == 400
            response2 = await client.put(self.poll_url(server))
            assert response2.status_code == 400

    # handshake / WebSocket

    @run()
    async def test_handshake_websocket_successfully_opens_a_session(self, server: Server) -> None:
        async with await open_ws(self.ws_url(server)) as ws:
            check_handshake(await next_message(ws), [])

    @run()
    async def test_handshake_websocket_fails_with_an_invalid_eio_query_parameter(self, server: Server) -> None:
        await expect_ws_refused(f"{server.ws_url}/{self.path}/?transport=websocket")
        await expect_ws_refused(f"{server.ws_url}/{self.path}/?EIO=abc&transport=websocket")

    @run()
    async def test_handshake_websocket_fails_with_an_invalid_transport_query_parameter(self, server: Server) -> None:
        await expect_ws_refused(f"{server.ws_url}/{self.path}/?EIO=4")
        await expect_ws_refused(f"{server.ws_url}/{self.path}/?EIO=4&transport=abc")

    # heartbeat (mocha timeout 5 s)

    @run(timeout=5.0)
    async def test_heartbeat_polling_sends_ping_pong_packets(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            for _ in range(3):
                poll = await client.get(self.poll_url(server, sid))
                assert poll.status_code == 200
                assert poll.text == "2"
                push = await client.post(self.poll_url(server, sid), content="3")
                assert push.status_code == 200

    @run(timeout=5.0)
    async def test_heartbeat_polling_closes_the_session_upon_ping_timeout(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            await asyncio.sleep(PING_INTERVAL + PING_TIMEOUT)
            # The server's timers may run a little late on a loaded machine: until the
            # session is gone a poll can still get the unanswered ping (or the close);
            # never pong, and poll again until the 400.
            poll = await client.get(self.poll_url(server, sid))
            while poll.status_code == 200:
                assert set(poll.text.split("\x1e")) <= {"2", "1"}, f"unexpected packets {poll.text!r}"
                poll = await client.get(self.poll_url(server, sid))
            assert poll.status_code == 400

    @run(timeout=5.0)
    async def test_heartbeat_websocket_sends_ping_pong_packets(self, server: Server) -> None:
        async with await open_ws(self.ws_url(server)) as ws:
            await next_message(ws)  # handshake
            for _ in range(3):
                assert await next_message(ws) == "2"
                await ws.send("3")

    @run(timeout=5.0)
    async def test_heartbeat_websocket_closes_the_session_upon_ping_timeout(self, server: Server) -> None:
        ws = await open_ws(self.ws_url(server))
        await wait_for_close(ws)

    # close

    @run(timeout=6.0)
    async def test_close_polling_forcefully_closes_the_session(self, server: Server) -> None:
        # The suite starts both requests at once, the poll first; here the close waits
        # 50 ms so that the poll is pending when it arrives. On a loaded machine the
        # poll may still come in after the close (then it is refused), or the first
        # ping (300 ms) may answer it before the close: neither says anything about the
        # close, so the case starts over on a new session (at most 5 times).
        for attempt in range(5):
            async with http() as client:
                sid = await init_long_polling_session(client, self.poll_url(server))
                poll = asyncio.create_task(client.get(self.poll_url(server, sid)))
                await asyncio.sleep(0.05)
                await client.post(self.poll_url(server, sid), content="1")
                poll_response = await poll
                raced = poll_response.status_code == 400 or poll_response.text.startswith("2")
                if raced and attempt < 4:
                    continue
                assert poll_response.status_code == 200
                assert poll_response.text == "6"
                poll_response2 = await client.get(self.poll_url(server, sid))
                assert poll_response2.status_code == 400
                return

    @run()
    async def test_close_websocket_forcefully_closes_the_session(self, server: Server) -> None:
        ws = await open_ws(self.ws_url(server))
        await next_message(ws)  # handshake
        await ws.send("1")
        await wait_for_close(ws)

    # upgrade

    @run()
    async def test_upgrade_successfully_upgrades_from_polling_to_websocket(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            async with await open_ws(self.ws_url(server, sid)) as ws:
                await ws.send("2probe")
                assert await next_message(ws) == "3probe"
                if self.echo:
                    poll = await client.get(self.poll_url(server, sid))
                    assert poll.status_code == 200
                    assert poll.text == "6"  # noop: cleanly ends the HTTP long-polling request
                await ws.send("5")
                if self.echo:
                    await ws.send("4hello")
                    assert await next_message(ws) == "4hello"

    @run()
    async def test_upgrade_ignores_http_requests_with_same_sid_after_upgrade(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            async with await open_ws(self.ws_url(server, sid)) as ws:
                await ws.send("2probe")
                await ws.send("5")
                poll = await client.get(self.poll_url(server, sid))
                assert poll.status_code == 400
                if self.echo:
                    await ws.send("4hello")
                    assert await next_message(ws) == "3probe"
                    assert await next_message(ws) == "4hello"

    @run()
    async def test_upgrade_ignores_websocket_connection_with_same_sid_after_upgrade(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            async with await open_ws(self.ws_url(server, sid)) as ws:
                await ws.send("2probe")
                await ws.send("5")
                assert await next_message(ws) == "3probe"
                await expect_ws_refused(self.ws_url(server, sid))
                if self.echo:
                    await ws.send("4hello")
                    assert await next_message(ws) == "4hello"


# ---------------------------------------------------------------------------------
# engine.io-protocol test-suite: /engine.io/ echo server
# ---------------------------------------------------------------------------------


class TestEngineIOSuite(EngineIOCases):
    path = "engine.io"
    echo = True

    # message / HTTP long-polling

    async def _post_then_poll(self, server: Server, body: str) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            push = await client.post(self.poll_url(server, sid), content=body)
            assert push.status_code == 200
            assert push.text == "ok"
            poll = await client.get(self.poll_url(server, sid))
            assert poll.status_code == 200
            assert poll.text == body

    @run()
    async def test_message_polling_one_plain_text_packet(self, server: Server) -> None:
        await self._post_then_poll(server, "4hello")

    @run()
    async def test_message_polling_several_plain_text_packets(self, server: Server) -> None:
        await self._post_then_poll(server, "4test1\x1e4test2\x1e4test3")

    @run()
    async def test_message_polling_plain_text_and_binary_packets(self, server: Server) -> None:
        await self._post_then_poll(server, "4hello\x1ebAQIDBA==")

    @run()
    async def test_message_polling_closes_the_session_upon_invalid_packet_format(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))
            try:
                push = await client.post(self.poll_url(server, sid), content="abc")
                assert push.status_code == 400
            except httpx.TransportError:
                pass  # a server may also drop the request
            poll = await client.get(self.poll_url(server, sid))
            assert poll.status_code == 400

    @run()
    async def test_message_polling_closes_the_session_upon_duplicate_poll_requests(self, server: Server) -> None:
        async with http() as client:
            sid = await init_long_polling_session(client, self.poll_url(server))

            async def burst() -> httpx.Response:
                await asyncio.sleep(0.005)
                return await client.get(self.poll_url(server, sid, "&t=burst"))

            first, second = await asyncio.gather(client.get(self.poll_url(server, sid)), burst())
            # 5 ms apart, the two may still reach the server in either order on a loaded
            # machine: the one it got first is answered with a close packet, the other
            # refused.
            if first.status_code != 200 and second.status_code == 200:
                first, second = second, first
            assert first.status_code == 200
            assert first.text == "1"
            assert second.status_code in (400, 500)
            poll = await client.get(self.poll_url(server, sid))
            assert poll.status_code == 400

    # message / WebSocket

    @run()
    async def test_message_websocket_sends_and_receives_a_plain_text_packet(self, server: Server) -> None:
        async with await open_ws(self.ws_url(server)) as ws:
            await next_message(ws)  # handshake
            await ws.send("4hello")
            assert await next_message(ws) == "4hello"

    @run()
    async def test_message_websocket_sends_and_receives_a_binary_packet(self, server: Server) -> None:
        async with await open_ws(self.ws_url(server)) as ws:
            await next_message(ws)  # handshake
            await ws.send(bytes([1, 2, 3, 4]))
            assert await next_message(ws) == bytes([1, 2, 3, 4])

    @run()
    async def test_message_websocket_closes_the_session_upon_invalid_packet_format(self, server: Server) -> None:
        ws = await open_ws(self.ws_url(server))
        await next_message(ws)  # handshake
        await ws.send("abc")
        await wait_for_close(ws)


# ---------------------------------------------------------------------------------
# socket.io-protocol test-suite: /socket.io/ with the suite's handlers
# ---------------------------------------------------------------------------------


async def init_socketio_connection(server: Server) -> ClientConnection:
    ws = await open_ws(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket")
    await next_message(ws)  # Engine.IO handshake
    await ws.send("40")
    await next_message(ws)  # Socket.IO handshake
    await next_message(ws)  # "auth" packet
    return ws


class TestSocketIOSuite(EngineIOCases):
    path = "socket.io"
    echo = False

    def sio_url(self, server: Server) -> str:
        return f"{server.ws_url}/socket.io/?EIO=4&transport=websocket"

    async def _connect(self, server: Server, packet: str, prefix: str, auth: str) -> None:
        async with await open_ws(self.sio_url(server)) as ws:
            await next_message(ws)  # Engine.IO handshake
            await ws.send(packet)
            data = await next_message(ws)
            assert data.startswith(prefix)
            handshake = json.loads(data[len(prefix):])
            assert set(handshake) == {"sid"}
            assert isinstance(handshake["sid"], str)
            assert await next_message(ws) == auth

    # connect

    @run()
    async def test_connect_main_namespace(self, server: Server) -> None:
        await self._connect(server, "40", "40", '42["auth",{}]')

    @run()
    async def test_connect_main_namespace_with_a_payload(self, server: Server) -> None:
        await self._connect(server, '40{"token":"123"}', "40", '42["auth",{"token":"123"}]')

    @run()
    async def test_connect_custom_namespace(self, server: Server) -> None:
        await self._connect(server, "40/custom,", "40/custom,", '42/custom,["auth",{}]')

    @run()
    async def test_connect_custom_namespace_with_a_payload(self, server: Server) -> None:
        await self._connect(server, '40/custom,{"token":"abc"}', "40/custom,", '42/custom,["auth",{"token":"abc"}]')

    @run()
    async def test_connect_disallows_an_unknown_namespace(self, server: Server) -> None:
        async with await open_ws(self.sio_url(server)) as ws:
            await next_message(ws)
            await ws.send("40/random")
            assert await next_message(ws) == '44/random,{"message":"Invalid namespace"}'

    @run()
    async def test_connect_disallows_an_invalid_handshake(self, server: Server) -> None:
        ws = await open_ws(self.sio_url(server))
        await next_message(ws)
        await ws.send("4abc")
        await wait_for_close(ws)

    @run()
    async def test_connect_closes_the_connection_if_no_handshake_is_received(self, server: Server) -> None:
        ws = await open_ws(self.sio_url(server))
        await wait_for_close(ws)

    # disconnect

    @run()
    async def test_disconnect_from_the_main_namespace(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send("41")
        assert await next_message(ws) == "2"
        await ws.close()

    @run()
    async def test_connect_then_disconnect_from_a_custom_namespace(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await next_message(ws)  # ping
        await ws.send("40/custom")
        await next_message(ws)  # Socket.IO handshake
        await next_message(ws)  # auth packet
        await ws.send("41/custom")
        await ws.send('42["message","message to main namespace"]')
        assert await next_message(ws) == '42["message-back","message to main namespace"]'
        await ws.close()

    # message

    @run()
    async def test_message_plain_text_packet(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send('42["message",1,"2",{"3":[true]}]')
        assert await next_message(ws) == '42["message-back",1,"2",{"3":[true]}]'
        await ws.close()

    @run()
    async def test_message_packet_with_binary_attachments(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        await ws.send(bytes([1, 2, 3]))
        await ws.send(bytes([4, 5, 6]))
        packets = await wait_for_packets(ws, 3)
        assert packets[0] == '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        assert packets[1] == bytes([1, 2, 3])
        assert packets[2] == bytes([4, 5, 6])
        await ws.close()

    @run()
    async def test_message_plain_text_packet_with_an_ack(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
        assert await next_message(ws) == '43456[1,"2",{"3":[false]}]'
        await ws.close()

    @run()
    async def test_message_packet_with_binary_attachments_and_an_ack(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        await ws.send(bytes([1, 2, 3]))
        await ws.send(bytes([4, 5, 6]))
        packets = await wait_for_packets(ws, 3)
        assert packets[0] == '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        assert packets[1] == bytes([1, 2, 3])
        assert packets[2] == bytes([4, 5, 6])
        await ws.close()

    @run()
    async def test_message_closes_upon_invalid_format_unknown_packet_type(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send("4abc")
        await wait_for_close(ws)

    @run()
    async def test_message_closes_upon_invalid_format_invalid_payload_format(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send("42{}")
        await wait_for_close(ws)

    @run()
    async def test_message_closes_upon_invalid_format_invalid_ack_id(self, server: Server) -> None:
        ws = await init_socketio_connection(server)
        await ws.send('42abc["message-with-ack",1,"2",{"3":[false]}]')
        await wait_for_close(ws)
