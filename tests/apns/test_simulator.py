"""The simulator answers like Apple: raw HTTP/2 requests (httpx, an independent h2 client) over real TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from apns_helpers import TOPIC, background, new_token

from apns.client import ApnsClient, App
from apns.errors import Permanent, TokenInvalid
from apns.jwt import ProviderKey, generate_test_key
from apns.pool import Endpoint
from apns.simulator import ApnsSimulator, SimulatorKey


@pytest.fixture
async def http(sim: ApnsSimulator) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ssl.create_default_context(cafile=sim.ca_file)
    async with httpx.AsyncClient(http2=True, verify=ctx, base_url=f"https://localhost:{sim.port}") as c:
        yield c


def _jwt(key: ProviderKey, iat: float, *, kid: str | None = None, iss: str | None = None) -> str:
    return pyjwt.encode(
        {"iss": iss or key.team_id, "iat": int(iat)},
        key.private_key(),
        algorithm="ES256",
        headers={"kid": kid or key.key_id},
    )


_TOKENS: dict[str, str] = {}


def _headers(key: ProviderKey, **over: str | None) -> list[tuple[str, str]]:
    """One JWT per key for the whole run, as a well-behaved provider does (ES256 signatures are random,
    so minting per request would be a new token every time: 429 TooManyProviderTokenUpdates)."""
    token = _TOKENS.setdefault(key.key_pem.decode(), _jwt(key, time.time()))
    base: dict[str, str | None] = {
        "authorization": "bearer " + token,
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
    }
    base.update(over)
    return [(k, v) for k, v in base.items() if v is not None]


async def _post(
    http: httpx.AsyncClient, headers: list[tuple[str, str]], body: bytes = b'{"aps":{}}', path: str = ""
) -> tuple[int, dict[str, object]]:
    r = await http.post(path or f"/3/device/{new_token()}", headers=headers, content=body)
    assert r.http_version == "HTTP/2"
    assert uuid.UUID(r.headers["apns-id"])
    return r.status_code, (r.json() if r.content else {})


async def test_accepted_push_is_recorded_with_its_headers(
    http: httpx.AsyncClient, sim: ApnsSimulator, key: ProviderKey
) -> None:
    tok = new_token()
    apns_id = str(uuid.uuid4())
    hdrs = _headers(key, **{"apns-id": apns_id, "apns-collapse-id": "c1", "apns-expiration": "0"})
    status, _ = await _post(http, hdrs, b'{"aps":{"alert":"hi"}}', f"/3/device/{tok}")
    assert status == 200
    push = await sim.next_push(tok)
    assert (push.topic, push.push_type, push.priority, push.apns_id) == (TOPIC, "alert", 10, apns_id)
    assert (push.collapse_id, push.expiration, push.json()) == ("c1", 0, {"aps": {"alert": "hi"}})


@pytest.mark.parametrize(
    ("over", "body", "path", "status", "reason"),
    [
        ({}, b"", "", 400, "PayloadEmpty"),
        ({}, b"x" * 4097, "", 413, "PayloadTooLarge"),
        ({"apns-push-type": "voip", "apns-topic": TOPIC + ".voip"}, b"x" * 5121, "", 413, "PayloadTooLarge"),
        ({"apns-push-type": "voip"}, b"{}", "", 400, "BadTopic"),
        ({"apns-collapse-id": "c" * 65}, b"{}", "", 400, "BadCollapseId"),
        ({"apns-id": "nope"}, b"{}", "", 400, "BadMessageId"),
        ({"apns-id": "0A0B0C0D-0000-4000-8000-000000000001"}, b"{}", "", 400, "BadMessageId"),  # lowercase only
        ({"apns-push-type": "liveactivity"}, b"{}", "", 400, "BadTopic"),  # needs .push-type.liveactivity
        ({"apns-push-type": "widgets", "apns-topic": TOPIC + ".push-type.widgets"}, b"", "", 400, "PayloadEmpty"),
        ({"apns-expiration": "soon"}, b"{}", "", 400, "BadExpirationDate"),
        ({"apns-priority": "7"}, b"{}", "", 400, "BadPriority"),
        ({"apns-push-type": "background"}, b"{}", "", 400, "BadPriority"),  # default 10 is an error
        ({"apns-push-type": "sms"}, b"{}", "", 400, "InvalidPushType"),
        ({"apns-push-type": None}, b"{}", "", 400, "InvalidPushType"),
        ({"apns-topic": None}, b"{}", "", 400, "MissingTopic"),
        ({"authorization": None}, b"{}", "", 403, "MissingProviderToken"),
        ({"authorization": "bearer junk"}, b"{}", "", 403, "InvalidProviderToken"),
        ({}, b"{}", "/3/device/", 400, "MissingDeviceToken"),
        ({}, b"{}", "/3/device/xyz0", 400, "BadDeviceToken"),
        ({}, b"{}", "/2/device/abcd", 404, "BadPath"),
    ],
)
async def test_apple_reasons(
    http: httpx.AsyncClient,
    sim: ApnsSimulator,
    key: ProviderKey,
    over: dict[str, str | None],
    body: bytes,
    path: str,
    status: int,
    reason: str,
) -> None:
    got = await _post(http, _headers(key, **over), body, path)
    assert got == (status, {"reason": reason})
    assert sim.accepted == 0


async def test_method_and_duplicate_headers(http: httpx.AsyncClient, key: ProviderKey) -> None:
    r = await http.get(f"/3/device/{new_token()}", headers=_headers(key))
    assert (r.status_code, r.json()) == (405, {"reason": "MethodNotAllowed"})
    dup = [*_headers(key), ("apns-topic", TOPIC)]
    assert await _post(http, dup) == (400, {"reason": "DuplicateHeaders"})


async def test_provider_token_checks(http: httpx.AsyncClient, key: ProviderKey) -> None:
    other = generate_test_key(key.key_id, key.team_id)  # same kid, wrong private key
    now = time.time()
    cases = [
        (_jwt(other, now), "InvalidProviderToken"),
        (_jwt(key, now, kid="UNKNOWNKID"), "InvalidProviderToken"),
        (_jwt(key, now, iss="OTHERTEAM0"), "InvalidProviderToken"),
        (_jwt(key, now - 3601), "ExpiredProviderToken"),
        # iat more than an hour ahead, with a minute's margin: the earlier cases take seconds on a loaded machine,
        # and the simulator's clock moves on meanwhile (at +3601 s it accepted the token)
        (_jwt(key, now + 3660), "InvalidProviderToken"),
    ]
    for token, reason in cases:
        hdrs = _headers(key, authorization="bearer " + token)
        assert await _post(http, hdrs) == (403, {"reason": reason}), reason
    hs256 = pyjwt.encode({"iss": key.team_id, "iat": int(now)}, "k" * 32, "HS256", headers={"kid": key.key_id})
    assert await _post(http, _headers(key, authorization="bearer " + hs256)) == (
        403,
        {"reason": "InvalidProviderToken"},
    )


async def test_new_token_within_20_minutes_on_one_connection_is_refused(
    http: httpx.AsyncClient, key: ProviderKey
) -> None:
    now = time.time()
    first = _headers(key, authorization="bearer " + _jwt(key, now - 600))
    assert (await _post(http, first))[0] == 200
    soon = _headers(key, authorization="bearer " + _jwt(key, now - 60))
    assert await _post(http, soon) == (429, {"reason": "TooManyProviderTokenUpdates"})
    later = _headers(key, authorization="bearer " + _jwt(key, now + 1200 - 600))
    assert (await _post(http, later))[0] == 200


async def test_dead_token_topic_binding_and_injected_errors(
    http: httpx.AsyncClient, sim: ApnsSimulator, key: ProviderKey
) -> None:
    dead, bound = new_token(), new_token()
    sim.unregister(dead, 1_700_000_000_123)
    sim.bind_token(bound, "other.app")
    assert await _post(http, _headers(key), path=f"/3/device/{dead}") == (
        410,
        {"reason": "Unregistered", "timestamp": 1_700_000_000_123},
    )
    assert await _post(http, _headers(key), path=f"/3/device/{bound}") == (
        400,
        {"reason": "DeviceTokenNotForTopic"},
    )
    sim.faults.error_rates = {503: 1.0}
    assert await _post(http, _headers(key)) == (503, {"reason": "ServiceUnavailable"})
    sim.faults.error_rates = {429: 1.0}
    assert await _post(http, _headers(key)) == (429, {"reason": "TooManyRequests"})


async def test_topic_restricted_key_and_team_pinned_per_connection() -> None:
    k1, k2 = generate_test_key("KEY0000001", "TEAM000001"), generate_test_key("KEY0000002", "TEAM000002")
    keys = [SimulatorKey.from_provider_key(k1, frozenset({"a.app"})), SimulatorKey.from_provider_key(k2)]
    async with ApnsSimulator(keys) as sim:
        ctx = ssl.create_default_context(cafile=sim.ca_file)
        async with httpx.AsyncClient(http2=True, verify=ctx, base_url=f"https://localhost:{sim.port}") as http:
            assert (await _post(http, _headers(k1, **{"apns-topic": "a.app"})))[0] == 200
            assert await _post(http, _headers(k1, **{"apns-topic": "b.app"})) == (
                400,
                {"reason": "TopicDisallowed"},
            )
            # a second developer account on the same connection
            assert await _post(http, _headers(k2)) == (403, {"reason": "UnrelatedKeyIdInToken"})


async def test_stream_limit_is_1_until_authenticated_then_drops_after_rejection(
    sim: ApnsSimulator, key: ProviderKey
) -> None:
    client = ApnsClient({"a": App(sim.endpoint, key, TOPIC)})
    bound, gone = new_token(), new_token()
    sim.bind_token(bound, "other.app")
    sim.unregister(gone)
    try:
        await client.send(background(new_token()))
        with pytest.raises(TokenInvalid, match="DeviceTokenNotForTopic"):
            await client.send(background(bound))
        await client.send(background(new_token()))
        with pytest.raises(TokenInvalid, match="Unregistered"):
            await client.send(background(gone))
        (conn,) = sim.conns
        assert conn.settings_history == [1, 1000, 1, 1000]  # a 410 does not lower the limit
    finally:
        await client.aclose()


async def test_cli_runs_standalone_over_h2c(tmp_path: Path) -> None:
    key = generate_test_key()
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    argv = [sys.executable, "-m", "apns.simulator", "--port", "0", "--h2c", "--p8", str(p8)]
    argv += ["--key-id", key.key_id, "--team-id", key.team_id, "--topic", TOPIC]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.to_thread(proc.stdout.readline))
        assert info["tls"] is False
        endpoint = Endpoint("127.0.0.1", info["port"], tls=False)
        async with ApnsClient({"a": App(endpoint, key, TOPIC)}) as client:
            assert (await client.send(background(new_token()))).apns_id
            with pytest.raises(Permanent, match="TopicDisallowed"):
                await client.send(background(new_token(), topic="not.allowed"))
    finally:
        proc.terminate()
        out, _ = await asyncio.to_thread(proc.communicate)
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["accepted"] == 1
