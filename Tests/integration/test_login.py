"""POST /api/login and WebSocket authorisation (PROTOCOL.md § Login)."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import switchboard_harness as h
from switchboard_harness import WSClient, login, login_response, run


def test_login_returns_token_nickname_avatar_node(node):
    nick = h.unique_name("alice")
    r = login_response(node.url, nick, "1.jpg")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"token", "nickname", "avatar", "node"}, body
    assert isinstance(body["token"], str) and body["token"]
    assert body["nickname"] == nick
    assert body["avatar"] == "1.jpg"
    assert body["node"] == node.node_id


def test_login_unicode_nickname(node):
    body = login(node.url, "东东", "5.jpg")
    assert body["nickname"] == "东东"
    assert body["avatar"] == "5.jpg"
    assert body["token"]


def test_login_nickname_length_counts_unicode_scalars(node):
    # 32 scalars (96 UTF-8 bytes) is allowed; 33 is not.
    ok = "东" * 30 + h.unique_name("")[-2:]
    assert len(ok) == 32
    r = login_response(node.url, ok)
    assert r.status_code == 200, r.text
    r = login_response(node.url, "东" * 33)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_nickname"


@pytest.mark.parametrize(
    "nickname",
    ["", "a" * 33, " lead", "trail ", "ctl\x01char", "new\nline", "tab\there", "del\x7f"],
    ids=["empty", "33chars", "leading-space", "trailing-space", "control-01", "newline", "tab", "del"],
)
def test_login_invalid_nickname(node, nickname):
    r = login_response(node.url, nickname)
    assert r.status_code == 400, f"{nickname!r}: {r.status_code} {r.text}"
    body = r.json()
    assert body["error"] == "invalid_nickname", body
    assert isinstance(body.get("message"), str) and body["message"], body


def test_login_missing_nickname_is_400(node):
    r = login_response(node.url, body={"avatar": "1.jpg"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_nickname"


@pytest.mark.parametrize("raw", [b"not json", b"{\"nickname\": ", b"", b"[\"a\"]", b"\xff\xfe"],
                         ids=["text", "truncated", "empty", "array", "bad-utf8"])
def test_login_non_json_body_is_400(node, raw):
    r = login_response(node.url, raw=raw)
    assert r.status_code == 400, f"{raw!r}: {r.status_code} {r.text}"
    assert "error" in r.json()


def test_login_taken_nickname_while_connected_is_409(node):
    nick = h.unique_name("taken")

    async def body():
        first = login(node.url, nick)
        async with h.Clients() as c:
            await c.session(node, first["token"], name=nick)
            r = login_response(node.url, nick, "2.jpg")
            assert r.status_code == 409, r.text
            b = r.json()
            assert b["error"] == "nickname_taken", b
            assert isinstance(b.get("message"), str)
            # The first session is unaffected.
            client = c.all[0]
            await client.ping()

    run(body(), 30)


# ------------------------------------------------------------------------------------
# WebSocket authorisation
# ------------------------------------------------------------------------------------


async def _expect_401(url: str, headers: dict | None = None) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, proxy=None, open_timeout=10, additional_headers=headers):
            pass
    response = info.value.response
    assert response.status_code == 401, f"{url}: HTTP {response.status_code}"
    body = json.loads(response.body.decode()) if response.body else None
    assert body is not None and body.get("error") == "unauthorized", f"401 body: {response.body!r}"


def test_ws_without_token_is_refused_401(node):
    run(_expect_401(node.ws_url), 20)
    run(_expect_401(node.ws_url + "?rooms=lobby"), 20)


def test_ws_with_garbage_token_is_refused_401(node):
    for token in ["x", "abc.def", "", "a" * 3000]:
        run(_expect_401(h.ws_address(node.ws_url, token)), 20)
    run(_expect_401(node.ws_url, headers={"Authorization": "Bearer nonsense.token"}), 20)


def test_ws_with_tampered_token_is_refused_401(node):
    victim = h.unique_name("victim")
    login(node.url, victim)
    mine = login(node.url, h.unique_name("mallory"))
    forged = h.forge_token_payload(mine["token"], n=victim)
    assert forged != mine["token"]
    run(_expect_401(h.ws_address(node.ws_url, forged)), 20)
    # The MAC bytes changed, payload intact.
    token = mine["token"]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    run(_expect_401(h.ws_address(node.ws_url, flipped)), 20)


def test_ws_with_token_signed_by_another_secret_is_refused_401(node, node_factory):
    other = node_factory(node_id="other-secret", secret="a-completely-different-secret-xyz")
    foreign = login(other.url, h.unique_name("foreign"))
    run(_expect_401(h.ws_address(node.ws_url, foreign["token"])), 20)
    run(_expect_401(node.ws_url, headers={"Authorization": f"Bearer {foreign['token']}"}), 20)


def test_ws_accepts_bearer_header(node):
    nick = h.unique_name("bearer")
    creds = login(node.url, nick)

    async def body():
        client = await WSClient.connect(node.ws_url, headers={"Authorization": f"Bearer {creds['token']}"}, name=nick)
        async with client:
            welcome = await client.recv(10)
            assert welcome["type"] == "welcome" and welcome["nickname"] == nick

    run(body(), 30)
