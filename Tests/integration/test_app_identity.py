"""Identity from the application (issue 17, part 2): tokens the app's back end mints
(`POST /api/token`, API key) and JWTs the app signs itself — HS256 with
SWITCHBOARD_JWT_SECRET, RS256/ES256 with `--jwt-public-key` (a JWKS here, PEM files in
their own test) — accepted on WebSocket, SSE, polls, `/api/send` and Socket.IO `auth`;
expired, wrong-audience, wrong-issuer, wrong-key, `alg: none`, tampered and
algorithm-confused tokens refused with 401 `{"error":"unauthorized","reason":…}` on
every transport; `--login closed`; avatars limited to the page's pictures and https:
URLs (`invalid_avatar`).

The tokens are made by PyJWT + cryptography (what an application back end uses), the
clients are websockets, httpx and python-socketio, against real `switchboard serve`
processes. Every process is started by a fixture and stopped in its finalizer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import jwt
import pytest
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import switchboard_harness as h
from switchboard_harness import SIOs, Clients, Poller, SSEStream, api_send, login_response, run

HS_SECRET = "app-jwt-secret-for-integration-tests-0123456789"
AUDIENCE = "switchboard-it"
ISSUER = "https://app.example"


class Keys:
    """The application's keys: an HS256 secret, an RSA and an EC key in a JWKS (kids
    `rsa-1`, `ec-1`), and strangers' keys of each kind."""

    def __init__(self, directory: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
        ec_jwk.update(kid="ec-1", use="sig")  # alg inferred from kty/crv
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
        self.rsa_pem = directory / "rsa.pem"
        self.rsa_pem.write_bytes(self.public_pem(self.rsa))
        self.ec_pem = directory / "ec.pem"
        self.ec_pem.write_bytes(self.public_pem(self.ec))

    @staticmethod
    def public_pem(key: Any) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(nickname: str, avatar: Optional[str] = None, **changes: Any) -> dict:
    now = int(time.time())
    body: dict[str, Any] = {"sub": nickname, "exp": now + 600, "iat": now, "aud": AUDIENCE, "iss": ISSUER}
    if avatar is not None:
        body["avatar"] = avatar
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwt-keys"))


@pytest.fixture(scope="module")
def app_node(switchboard_binary: str, keys: Keys) -> Iterator[h.SwitchboardNode]:
    """A node of a chat with accounts: `--login closed`, the app's HS256 secret and JWKS,
    audience and issuer required."""
    node = h.SwitchboardNode(
        node_id="app-node", binary=switchboard_binary,
        extra_args=["--login", "closed", "--jwt-public-key", str(keys.jwks), "--jwt-audience", AUDIENCE,
                    "--jwt-issuer", ISSUER],
        env={"SWITCHBOARD_JWT_SECRET": HS_SECRET})
    node.start()
    try:
        yield node
    finally:
        node.stop()


def mint(node: h.SwitchboardNode, body: Any, api_key: Optional[str] = h.DEFAULT_API_KEY) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    with h.http_client() as client:
        return client.post(node.url + "/api/token", content=json.dumps(body).encode(), headers=headers)


def token_of(kind: str, node: h.SwitchboardNode, keys: Keys, nickname: str, avatar: str) -> str:
    if kind == "minted":
        r = mint(node, {"nickname": nickname, "avatar": avatar, "ttl": 600})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["nickname"] == nickname and body["avatar"] == avatar, body
        assert 0 < body["expires"] - time.time() <= 600, body
        return body["token"]
    if kind == "hs256":
        return jwt.encode(claims(nickname, avatar), HS_SECRET, algorithm="HS256")
    if kind == "rs256":
        return jwt.encode(claims(nickname, avatar), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    if kind == "es256":
        return jwt.encode(claims(nickname, avatar), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    raise AssertionError(kind)


# --------------------------------------------------------------------------------------
# Every token kind on every transport
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["minted", "hs256", "rs256", "es256"])
def test_token_kind_on_every_transport(app_node: h.SwitchboardNode, keys: Keys, kind: str) -> None:
    nickname = h.unique_name(kind)
    avatar = "4.jpg" if kind == "minted" else f"https://avatars.example/{nickname}.png"
    token = token_of(kind, app_node, keys, nickname, avatar)
    room = h.unique_room(kind)
    identity = {"nickname": nickname, "avatar": avatar}

    async def body() -> None:
        async with Clients() as natives, SIOs() as sios:
            ws, welcome = await natives.session(app_node, token, [room], name=f"{kind}-ws")
            assert {k: welcome[k] for k in identity} == identity, welcome
            sse, sse_welcome = await SSEStream.session(app_node, token, [room], name=f"{kind}-sse")
            poller = Poller(token, [room], name=f"{kind}-poll")
            try:
                assert {k: sse_welcome[k] for k in identity} == identity, sse_welcome
                await poller.poll(app_node, wait=0)
                sio = await sios.new(f"{kind}-sio").connect(app_node.url, {"token": token}, None)
                sio_welcome = await sio.welcome()
                assert {k: sio_welcome[k] for k in identity} == identity, sio_welcome

                # Said with the token over /api/send: everyone sees it from this identity.
                text = f"hello from {kind} {h.unique_name()}"
                r = await api_send(app_node, token, {"type": "say", "room": room, "text": text, "ref": 1})
                assert r.status_code == 200, r.text
                for client in (ws, sse):
                    message = await client.recv_until(lambda e: e.get("text") == text, 10, what=text)
                    assert message["from"] == identity, message
                events = await poller.poll(app_node, wait=5)
                said = [e for e in events if e.get("text") == text]
                assert said and said[0]["from"] == identity, events
            finally:
                await sse.close()
                await poller.close()

    run(body(), 60)


def test_tokens_of_one_nickname_share_one_session(app_node: h.SwitchboardNode, keys: Keys) -> None:
    """A user with two devices: a minted token and a JWT of the same nickname connect at
    once (one nickname claim), while the nickname stays refused to anyone else's token
    kind that cannot claim it (login is closed)."""
    nickname = h.unique_name("twice")
    minted = token_of("minted", app_node, keys, nickname, "2.jpg")
    signed = token_of("rs256", app_node, keys, nickname, "2.jpg")

    async def body() -> None:
        async with Clients() as natives:
            _, first = await natives.session(app_node, minted, name="device-1")
            _, second = await natives.session(app_node, signed, name="device-2")
            assert first["nickname"] == second["nickname"] == nickname

    run(body(), 30)


# --------------------------------------------------------------------------------------
# Refused tokens: 401 and a clear reason on every transport
# --------------------------------------------------------------------------------------


def bad_tokens(keys: Keys) -> dict[str, tuple[str, str]]:
    """name → (token, expected reason)."""
    n = h.unique_name("bad")
    good = jwt.encode(claims(n), HS_SECRET, algorithm="HS256")
    header, payload, signature = good.split(".")
    forged_payload = b64(json.dumps(claims("mallory")).encode())
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    rsa_pem = Keys.public_pem(keys.rsa)
    # Classic confusion: HMAC over the token with the RSA public key's PEM as the secret,
    # header alg HS256 and the RSA key's kid.
    confused_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    confused_body = f"{confused_header}.{payload}"
    confused_mac = b64(hmac.new(rsa_pem, confused_body.encode(), hashlib.sha256).digest())
    return {
        "expired": (jwt.encode(claims(n, exp=int(time.time()) - 3600), HS_SECRET, algorithm="HS256"), "token_expired"),
        "not-yet-valid": (jwt.encode(claims(n, nbf=int(time.time()) + 3600), HS_SECRET, algorithm="HS256"),
                          "token_not_yet_valid"),
        "wrong-audience": (jwt.encode(claims(n, aud="another-app"), HS_SECRET, algorithm="HS256"), "token_audience"),
        "wrong-issuer": (jwt.encode(claims(n, iss="https://evil.example"), HS_SECRET, algorithm="HS256"), "token_issuer"),
        "wrong-secret": (jwt.encode(claims(n), "a-different-secret-of-sufficient-length!!", algorithm="HS256"),
                         "token_signature"),
        "wrong-rsa-key": (jwt.encode(claims(n), keys.other_rsa, algorithm="RS256", headers={"kid": "rsa-1"}),
                          "token_signature"),
        "wrong-ec-key": (jwt.encode(claims(n), keys.other_ec, algorithm="ES256", headers={"kid": "ec-1"}),
                         "token_signature"),
        "unknown-kid": (jwt.encode(claims(n), keys.rsa, algorithm="RS256", headers={"kid": "rsa-9"}), "token_unknown_key"),
        "alg-none": (f"{none_header}.{payload}.", "token_algorithm"),
        "alg-none-signed": (f"{none_header}.{payload}.{signature}", "token_algorithm"),
        "alg-confusion": (f"{confused_body}.{confused_mac}", "token_algorithm"),
        "tampered": (f"{header}.{forged_payload}.{signature}", "token_signature"),
        "no-exp": (jwt.encode(claims(n, exp=None), HS_SECRET, algorithm="HS256"), "token_claims"),
        "bad-avatar": (jwt.encode(claims(n, avatar="javascript:document.title='x'"), HS_SECRET, algorithm="HS256"),
                       "token_claims"),
        # This cluster's own token format with a MAC of another secret.
        "own-format-forged": (b64(json.dumps({"n": "mallory", "a": "", "s": "x", "iat": 1, "exp": 2**40}).encode())
                              + "." + b64(hmac.new(b"not-the-secret", b"x", hashlib.sha256).digest()), "token_signature"),
        "garbage": ("not-a-token", "token_malformed"),
    }


async def refusals(node: h.SwitchboardNode, token: str) -> dict[str, Any]:
    """What each transport answers to `token`: (status, error, reason) per transport."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        for name, path in (("sse", "/sse"), ("poll", "/poll"), ("iframe", "/iframe"), ("ws-get", "/ws")):
            params = {"token": token, "rooms": "lobby"}
            if name == "iframe":
                params["callback"] = "cb"
            r = await client.get(node.url + path, params=params)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            out[name] = (r.status_code, body.get("error"), body.get("reason"))
        r = await api_send(node, token, {"type": "say", "room": "lobby", "text": "x"}, client=client)
        body = r.json()
        out["send"] = (r.status_code, body.get("error"), body.get("reason"))
    try:
        async with ws_connect(h.ws_address(node.ws_url, token), proxy=None, open_timeout=10):
            out["ws"] = ("opened", None, None)
    except InvalidStatus as refused:
        body = json.loads(refused.response.body or b"{}")
        out["ws"] = (refused.response.status_code, body.get("error"), body.get("reason"))
    sio = socketio.AsyncClient(reconnection=False)
    errors: dict[str, Any] = {}
    sio.on("connect_error", lambda data=None: errors.setdefault("data", data))
    try:
        await sio.connect(node.url, auth={"token": token}, transports=["polling"], wait_timeout=10)
        out["socket.io"] = ("connected", None, None)
    except socketio.exceptions.ConnectionError:
        data = errors.get("data") or {}
        out["socket.io"] = (401, data.get("message"), (data.get("data") or {}).get("reason"))
    finally:
        await sio.disconnect()
    return out


def test_refused_tokens_on_every_transport(app_node: h.SwitchboardNode, keys: Keys) -> None:
    async def body() -> None:
        wrong: dict[str, Any] = {}
        for name, (token, reason) in bad_tokens(keys).items():
            answers = await refusals(app_node, token)
            for transport, answer in answers.items():
                if answer != (401, "unauthorized", reason):
                    wrong[f"{name}/{transport}"] = (answer, reason)
        assert not wrong, f"expected 401 unauthorized with the reason; got {json.dumps(wrong, indent=1)}"

    run(body(), 180)


def test_jwt_refused_where_no_key_is_configured(node: h.SwitchboardNode) -> None:
    """A node without JWT keys refuses a JWT as token_algorithm — its own tokens still work."""
    token = jwt.encode(claims(h.unique_name("nokey")), HS_SECRET, algorithm="HS256")
    with h.http_client() as client:
        r = client.get(node.url + "/poll", params={"token": token})
    assert r.status_code == 401 and r.json()["reason"] == "token_algorithm", r.text


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_pem_public_key(node_factory: Any, keys: Keys, kind: str) -> None:
    """--jwt-public-key with a PEM file: RS256 for an RSA key, ES256 for an EC key; a
    token signed by the other key is refused."""
    pem, own, alg, other, other_alg = (
        (keys.rsa_pem, keys.rsa, "RS256", keys.ec, "ES256") if kind == "rsa" else
        (keys.ec_pem, keys.ec, "ES256", keys.rsa, "RS256"))
    node = node_factory(extra_args=["--jwt-public-key", str(pem)])
    nickname = h.unique_name(kind)
    good = jwt.encode({"sub": nickname, "exp": int(time.time()) + 60}, own, algorithm=alg)
    refused = jwt.encode({"sub": nickname, "exp": int(time.time()) + 60}, other, algorithm=other_alg)

    async def body() -> None:
        async with Clients() as natives:
            _, welcome = await natives.session(node, good, name=kind)
            assert welcome["nickname"] == nickname and welcome["avatar"] == ""
        answers = await refusals(node, refused)
        assert answers["ws"] == (401, "unauthorized", "token_algorithm"), answers
        assert answers["poll"] == (401, "unauthorized", "token_algorithm"), answers

    run(body(), 60)


def test_unusable_key_stops_the_node(switchboard_binary: str, tmp_path: Path) -> None:
    """A bad key file, a short HS256 secret, --login nonsense: one line on stderr, exit ≠ 0."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    cases = [
        (["--jwt-public-key", str(garbage)], {}, "jwt-public-key"),
        (["--jwt-public-key", str(tmp_path / "missing.pem")], {}, "cannot read"),
        ([], {"SWITCHBOARD_JWT_SECRET": "short"}, "at least 32 bytes"),
        (["--login", "sometimes"], {}, "--login"),
    ]
    for args, env, expected in cases:
        node = h.SwitchboardNode(binary=switchboard_binary, extra_args=args, env=env)
        proc = subprocess.run(node.args(), env=node.environment(), capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and expected in proc.stderr, (args, env, proc.returncode, proc.stderr)


# --------------------------------------------------------------------------------------
# POST /api/token, --login closed
# --------------------------------------------------------------------------------------


def test_api_token_needs_the_api_key_and_valid_fields(app_node: h.SwitchboardNode) -> None:
    nickname = h.unique_name("mint")
    assert mint(app_node, {"nickname": nickname}, api_key=None).status_code == 401
    wrong = mint(app_node, {"nickname": nickname}, api_key="not-the-key")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized", wrong.text
    for body, status, code in [
        ({"nickname": " padded "}, 400, "invalid_nickname"),
        ({}, 400, "invalid_nickname"),
        ({"nickname": nickname, "avatar": "javascript:document.title='x'"}, 400, "invalid_avatar"),
        ({"nickname": nickname, "avatar": 7}, 400, "invalid_avatar"),
        ({"nickname": nickname, "ttl": 0}, 400, "invalid_ttl"),
        ({"nickname": nickname, "ttl": "600"}, 400, "invalid_ttl"),
        ({"nickname": nickname, "ttl": 10**9}, 400, "invalid_ttl"),
    ]:
        r = mint(app_node, body)
        assert (r.status_code, r.json().get("error")) == (status, code), (body, r.text)
    ok = mint(app_node, {"nickname": nickname})
    assert ok.status_code == 200 and ok.json()["avatar"] == "", ok.text


def test_minted_token_expires_after_its_ttl(app_node: h.SwitchboardNode) -> None:
    r = mint(app_node, {"nickname": h.unique_name("short"), "ttl": 3})
    assert r.status_code == 200, r.text
    token, expires = r.json()["token"], r.json()["expires"]
    with h.http_client() as client:
        assert client.get(app_node.url + "/poll", params={"token": token}).status_code == 200
        deadline = time.monotonic() + 10
        while True:
            answer = client.get(app_node.url + "/poll", params={"token": token})
            if answer.status_code == 401:
                break
            assert time.monotonic() < deadline, f"still accepted {time.time() - expires:.1f}s after expiry"
            time.sleep(0.2)
        assert answer.json()["reason"] == "token_expired", answer.text
        assert time.time() >= expires


def test_login_closed_refuses_login_and_socketio_nicknames(app_node: h.SwitchboardNode) -> None:
    r = login_response(app_node.url, h.unique_name("walkin"))
    assert r.status_code == 403 and r.json()["error"] == "login_closed", r.text
    assert "application" in r.json()["message"], r.text

    async def body() -> None:
        async with SIOs() as sios:
            refused = sios.new("walk-in")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(app_node.url, {"nickname": h.unique_name("walkin")}, ["polling"])
            assert refused.errors["/"]["message"] == "login_closed", refused.errors

    run(body(), 30)


# --------------------------------------------------------------------------------------
# Avatars (open login on the shared node)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("avatar", [
    "javascript:document.title='x'", "http://img.example/a.png", "a.png", "9.jpg", "https://user@evil.example/a.png",
    "https://img.example/a b.png", "https://img.example/\"><script>", "data:image/png;base64,AAAA",
    "https://img.example/" + "a" * 300,
], ids=["javascript", "http", "other-name", "9.jpg", "userinfo", "space", "markup", "data-url", "too-long"])
def test_login_refuses_what_is_not_an_avatar(node: h.SwitchboardNode, avatar: str) -> None:
    r = login_response(node.url, h.unique_name("av"), avatar)
    assert r.status_code == 400 and r.json()["error"] == "invalid_avatar", r.text


@pytest.mark.parametrize("avatar", ["", "1.jpg", "8.jpg", "https://img.example/u/42.png?s=64"])
def test_login_accepts_avatars(node: h.SwitchboardNode, avatar: str) -> None:
    r = login_response(node.url, h.unique_name("av"), avatar)
    assert r.status_code == 200 and r.json()["avatar"] == avatar, r.text


def test_socketio_login_refuses_a_bad_avatar(node: h.SwitchboardNode) -> None:
    async def body() -> None:
        async with SIOs() as sios:
            refused = sios.new("bad-avatar")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(node.url, {"nickname": h.unique_name("av"), "avatar": "javascript:alert(1)"},
                                      ["polling"])
            assert refused.errors["/"]["message"] == "invalid_avatar", refused.errors

    run(body(), 30)


# --------------------------------------------------------------------------------------
# The chat page under --login closed (Chromium)
# --------------------------------------------------------------------------------------


@pytest.mark.xdist_group("browser")
def test_chat_page_says_how_to_get_in_and_takes_a_handed_token(app_node: h.SwitchboardNode) -> None:
    """Picking a nickname on the page is refused with a line saying how to get in; the
    page opened as /#token=<minted token> enters the chat under the app's identity (and
    drops the token from the address bar)."""
    from selenium.webdriver.common.by import By
    from test_dashboard import chrome, wait_for

    nickname = h.unique_name("page")
    r = mint(app_node, {"nickname": nickname, "avatar": "6.jpg"})
    assert r.status_code == 200, r.text
    driver = chrome(1000, 800)
    try:
        driver.get(app_node.url + "/")
        wait_for("the login form", lambda: driver.find_element(By.ID, "nickname").is_displayed(), 10)
        driver.find_element(By.ID, "nickname").send_keys(h.unique_name("walkin"))
        driver.find_element(By.ID, "login-button").click()
        error = wait_for("the refusal", lambda: driver.find_element(By.ID, "login-error").text, 10)
        assert "login_closed" in error and "application" in error and "#token=" in error, error
        assert driver.find_element(By.ID, "chat-view").get_attribute("hidden") is not None

        driver.get(app_node.url + "/#token=" + r.json()["token"])
        wait_for("the chat view", lambda: driver.find_element(By.ID, "chat-view").is_displayed(), 15)
        wait_for("the app's nickname shown", lambda: nickname in driver.find_element(By.ID, "me").text, 15)
        assert "token" not in driver.execute_script("return location.href"), "the token stays out of the address bar"
    finally:
        driver.quit()
