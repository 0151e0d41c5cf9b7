"""The simulator keeps Apple's limits on its own (apns/simulator/limits.py), so a client whose own limit is
wrong is refused with Apple's reason instead of passing a test that shares the client's mistake."""

from __future__ import annotations

import ast
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from apns_helpers import TOPIC, background, new_token, no_sleep

import apns.jwt
import apns.payload
from apns.client import ApnsClient, App, ClientConfig
from apns.errors import Permanent, RetryLater
from apns.jwt import ProviderKey
from apns.payload import Notification, PushType
from apns.simulator import ApnsSimulator, SimulatorKey, limits

SIMULATOR_DIR = Path(limits.__file__).resolve().parent


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def timed_sim(key: ProviderKey, clock: FakeClock) -> AsyncIterator[ApnsSimulator]:
    s = ApnsSimulator([SimulatorKey.from_provider_key(key)], clock=clock)
    await s.start()
    yield s
    await s.stop()


def _client(sim: ApnsSimulator, key: ProviderKey, clock: FakeClock, refresh_after_s: float) -> ApnsClient:
    config = ClientConfig(jwt_refresh_after_s=refresh_after_s)
    return ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=config, clock=clock, sleep=no_sleep,
                      backoff=lambda n: 0.01)


@pytest.mark.parametrize(("push_type", "topic", "apple_limit"), [
    (PushType.ALERT, TOPIC, 4096), (PushType.BACKGROUND, TOPIC, 4096), (PushType.VOIP, TOPIC + ".voip", 5120),
])
async def test_a_client_allowing_too_large_a_payload_gets_payload_too_large(
    sim: ApnsSimulator, key: ProviderKey, monkeypatch: pytest.MonkeyPatch, push_type: PushType, topic: str,
    apple_limit: int,
) -> None:
    monkeypatch.setattr(apns.payload, "MAX_PAYLOAD_BYTES", 8192)  # the client's bug: 4096 -> 8192
    monkeypatch.setattr(apns.payload, "MAX_VOIP_PAYLOAD_BYTES", 8192)
    async with ApnsClient({"a": App(sim.endpoint, key, topic)}, sleep=no_sleep) as client:
        at_limit = Notification(new_token(), b'"' + b"x" * (apple_limit - 2) + b'"', push_type)
        await client.send(at_limit)  # exactly Apple's limit is fine
        over = Notification(new_token(), b'"' + b"x" * (apple_limit - 1) + b'"', push_type)  # the client lets it go
        with pytest.raises(Permanent) as refused:
            await client.send(over)
    assert (refused.value.status, refused.value.reason) == (413, "PayloadTooLarge")
    assert sim.accepted == 1


async def test_a_client_keeping_its_jwt_over_an_hour_gets_expired_provider_token(
    timed_sim: ApnsSimulator, key: ProviderKey, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apns.jwt, "MAX_TOKEN_AGE_S", 3 * 3600)  # the client's bug: thinks tokens live 3 h
    async with _client(timed_sim, key, clock, refresh_after_s=2 * 3600) as client:
        await client.send(background(new_token()))
        clock.now += 61 * 60  # the client still reuses its token: Apple does not
        await client.send(background(new_token()))  # refused once, then a fresh JWT (client.py) is accepted
    assert timed_sim.replies == {"OK": 2, "ExpiredProviderToken": 1}


async def test_a_client_refreshing_its_jwt_too_often_gets_too_many_provider_token_updates(
    timed_sim: ApnsSimulator, key: ProviderKey, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apns.jwt, "MIN_REFRESH_INTERVAL_S", 60)  # the client's bug: thinks 1 min is enough
    async with _client(timed_sim, key, clock, refresh_after_s=120) as client:
        await client.send(background(new_token()))
        clock.now += 5 * 60  # a new token 5 minutes later on the same connection
        with pytest.raises(RetryLater) as refused:
            await client.send(background(new_token()))
    assert (refused.value.status, refused.value.reason) == (429, "TooManyProviderTokenUpdates")


async def test_a_client_allowing_a_long_collapse_id_gets_bad_collapse_id(
    sim: ApnsSimulator, key: ProviderKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apns.payload, "MAX_COLLAPSE_ID_BYTES", 128)
    async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, sleep=no_sleep) as client:
        with pytest.raises(Permanent) as refused:
            await client.send(background(new_token(), collapse_id="c" * 65))
    assert (refused.value.status, refused.value.reason) == (400, "BadCollapseId")


def test_apples_limits_as_written_down() -> None:
    assert (limits.max_payload_bytes("alert"), limits.max_payload_bytes("background")) == (4096, 4096)
    assert (limits.max_payload_bytes("voip"), limits.max_payload_bytes(None)) == (5120, 4096)
    assert (limits.TOKEN_MAX_AGE_S, limits.TOKEN_MIN_REFRESH_S, limits.COLLAPSE_ID_MAX_BYTES) == (3600, 1200, 64)
    assert limits.is_apns_id(str(uuid.uuid4()))
    assert not limits.is_apns_id(str(uuid.uuid4()).upper())  # "32 lowercase hexadecimal digits"
    assert not limits.is_apns_id(uuid.uuid4().hex)  # 8-4-4-4-12 with hyphens
    assert limits.is_device_token(b"00ff" * 8) and not limits.is_device_token(b"0ff")
    assert not limits.is_device_token(b"") and not limits.is_device_token(b"zz")
    assert limits.topic_fits_push_type("a.app.voip", "voip") and not limits.topic_fits_push_type("a.app", "voip")
    assert limits.topic_fits_push_type("a.app.push-type.widgets", "widgets")
    assert not limits.topic_fits_push_type("a.app", "liveactivity")
    assert limits.bare_topic("a.app.push-type.liveactivity") == "a.app" == limits.bare_topic("a.app.voip-ptt")
    assert limits.is_key_or_team_id("ABC123DEFG", 10) and not limits.is_key_or_team_id("ABC", 10)


# Each module of the simulator and what it may import from `apns` (one-way: limits <- rules <- conn <- server).
ALLOWED_IMPORTS = {
    "limits": set(),
    "rules": {"apns.simulator.limits"},
    "tls": set(),
    "conn": {"apns.simulator.limits", "apns.simulator.rules", "apns.headers"},
    "server": {"apns.simulator.conn", "apns.simulator.limits", "apns.simulator.rules", "apns.simulator.tls",
               "apns.pool"},
    "cli": {"apns.simulator.rules", "apns.simulator.server", "apns.jwt"},  # keys (not limits) for the CLI
    "__init__": {"apns.simulator.rules", "apns.simulator.server"},
    "__main__": {"apns.simulator.cli"},
}


def _apns_imports(path: Path) -> set[str]:
    """Every `apns` module `path` imports (`from apns.simulator import limits` counts as ...limits)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "apns.simulator":
            found |= {f"apns.simulator.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "apns":
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "apns"}
    return found


def test_the_simulator_imports_one_way_and_no_client_limit() -> None:
    modules = {p.stem: p for p in SIMULATOR_DIR.glob("*.py")}
    assert set(modules) == set(ALLOWED_IMPORTS)
    for name, path in modules.items():
        extra = _apns_imports(path) - ALLOWED_IMPORTS[name]
        assert not extra, f"apns/simulator/{name}.py imports {sorted(extra)}"
