"""ApnsClient against the simulator over loopback TLS: outcomes, JWT, multi-app, stream limits, GOAWAY,
timeouts, dead connections, flow control."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from apns_helpers import TOPIC, ClientFactory, background, new_token, no_sleep

from apns.client import ApnsClient, App, ClientConfig
from apns.errors import Permanent, ProviderAuthError, RetryLater, TokenInvalid
from apns.jwt import ProviderKey, generate_test_key
from apns.payload import Notification, PushType
from apns.pool import Endpoint
from apns.simulator import ApnsSimulator, SimulatorKey


async def test_delivers_with_apples_headers(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    tok = new_token()
    res = await client.send(background(tok))
    push = await sim.next_push(tok)
    assert (push.topic, push.push_type, push.priority) == (TOPIC, "background", 5)
    assert push.json()["notificationData"] == {"checkMessages": True}
    assert res.apns_id == push.apns_id and res.attempts == 1
    alert = Notification(
        tok,
        {"aps": {"mutable-content": 1, "alert": "x"}},
        topic="other.topic",
        collapse_id="c",
        expiration=0,
        apns_id="0a0b0c0d-0000-4000-8000-000000000001",
    )
    await client.send(alert)
    push = await sim.next_push(tok)
    assert (push.topic, push.push_type, push.priority, push.collapse_id, push.expiration) == (
        "other.topic",
        "alert",
        10,
        "c",
        0,
    )
    assert push.apns_id == "0a0b0c0d-0000-4000-8000-000000000001"


async def test_dead_tokens_become_token_invalid(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    dead, other_topic = new_token(), new_token()
    sim.unregister(dead, 1_700_000_000_999)
    sim.bind_token(other_topic, "other.app")
    with pytest.raises(TokenInvalid) as gone:
        await client.send(background(dead))
    assert (gone.value.status, gone.value.reason, gone.value.timestamp_ms) == (410, "Unregistered", 1_700_000_000_999)
    with pytest.raises(TokenInvalid) as wrong:
        await client.send(background(other_topic))
    assert (wrong.value.status, wrong.value.reason, wrong.value.timestamp_ms) == (400, "DeviceTokenNotForTopic", None)
    assert dead not in repr(gone.value) and dead not in str(gone.value)


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (500, "InternalServerError")])
async def test_429_and_500_are_retry_later_for_the_caller(
    sim: ApnsSimulator, make_client: ClientFactory, status: int, reason: str
) -> None:
    client = make_client()
    sim.faults.error_rates = {status: 1.0}
    with pytest.raises(RetryLater) as exc:
        await client.send(background(new_token()))
    assert (exc.value.status, exc.value.reason) == (status, reason)
    assert exc.value.after_s > 0
    assert sim.replies == {reason: 1}  # not retried behind the caller's back


async def test_503_retried_once_on_a_fresh_connection(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    await client.send(background(new_token()))
    sim.faults.error_rates = {503: 1.0}
    with pytest.raises(RetryLater, match="ServiceUnavailable"):
        await client.send(background(new_token()))
    assert sim.replies["ServiceUnavailable"] == 2
    assert client.stats().connections_opened == 2
    sim.faults.error_rates = {}
    await client.send(background(new_token()))


async def test_invalid_payload_never_reaches_the_network(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(Permanent, match="over the 4096-byte limit"):
        await client.send(Notification(new_token(), {"x": "y" * 5000}))
    assert client.stats().connections_opened == 0 and sim.replies == {}


async def test_unknown_key_refreshed_once_then_provider_auth_error(
    sim: ApnsSimulator, make_client: ClientFactory
) -> None:
    client = make_client(app_key=generate_test_key("KEYID00001", "TEAMID0001"))  # same ids, wrong key
    with pytest.raises(ProviderAuthError, match="InvalidProviderToken"):
        await client.send(background(new_token()))
    assert sim.replies == {"InvalidProviderToken": 2}
    assert client.stats().jwt_minted == 2


async def test_expired_provider_token_cured_by_one_refresh(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    calls = 0

    def clock() -> float:  # the first token is minted two hours in the past
        nonlocal calls
        calls += 1
        return time.time() - (7200 if calls == 1 else 0)

    client = make_client(clock=clock)
    res = await client.send(background(new_token()))
    assert res.attempts == 2 and sim.replies == {"ExpiredProviderToken": 1, "OK": 1}
    assert client.stats().jwt_minted == 2


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


async def test_jwt_refresh_timing_against_the_simulator(key: ProviderKey) -> None:
    clock = Clock()
    sim = ApnsSimulator([SimulatorKey.from_provider_key(key)], clock=clock)
    async with sim, ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, clock=clock) as client:
        await client.send(background(new_token()))
        base = clock.t
        for minutes in (10, 30, 49):  # reused: a new token now would get 429 from Apple
            clock.t = base + 60 * minutes
            await client.send(background(new_token()))
        assert client.stats().jwt_minted == 1
        clock.t = base + 60 * 51  # past 50 minutes: a new token, still well before Apple's hour
        await client.send(background(new_token()))
        assert client.stats().jwt_minted == 2
        clock.t = base + 60 * 125  # idle for over an hour: the stale token is replaced, not sent
        await client.send(background(new_token()))
        assert client.stats().jwt_minted == 3
        assert set(sim.replies) == {"OK"}


async def test_multi_app_topics_keys_environments() -> None:
    k1, k2 = generate_test_key("KEY0000001", "TEAM000001"), generate_test_key("KEY0000002", "TEAM000002")
    keys = [SimulatorKey.from_provider_key(k1), SimulatorKey.from_provider_key(k2)]
    async with ApnsSimulator(keys) as prod, ApnsSimulator(keys) as dev:
        apps = {
            "a-prod": App(prod.endpoint, k1, "a.app"),
            "b-prod": App(prod.endpoint, k2, "b.app"),  # another developer account: its own connections
            "a-dev": App(dev.endpoint, k1, "a.app"),
        }
        async with ApnsClient(apps, sleep=no_sleep) as client:
            sent: dict[str, list[str]] = {name: [] for name in apps}

            async def one(name: str) -> None:
                tok = new_token()
                sent[name].append(tok)
                await client.send(background(tok), app=name)

            await asyncio.gather(*(one(name) for _ in range(30) for name in apps))
            with pytest.raises(ValueError, match="name one"):
                await client.send(background(new_token()))
        assert set(prod.replies) == {"OK"} and set(dev.replies) == {"OK"}
        assert {prod.pushes(t)[0].topic for t in sent["a-prod"]} == {"a.app"}
        assert {prod.pushes(t)[0].topic for t in sent["b-prod"]} == {"b.app"}
        assert all(len(dev.pushes(t)) == 1 for t in sent["a-dev"]) and dev.accepted == 30
        assert prod.connections_accepted >= 2


async def test_server_stream_limit_is_honoured(key: ProviderKey) -> None:
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], max_streams=5) as sim:
        sim.faults.response_delay_s = 0.02
        cfg = ClientConfig(max_connections=1)
        async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=cfg) as client:
            await asyncio.gather(*(client.send(background(new_token())) for _ in range(60)))
            bound = new_token()
            sim.bind_token(bound, "x.app")
            with pytest.raises(TokenInvalid):
                await client.send(background(bound))  # limit drops to 1
            await asyncio.gather(*(client.send(background(new_token())) for _ in range(30)))
        assert sim.accepted == 90 and sim.peak_streams <= 5 and sim.connections_accepted == 1


@pytest.mark.parametrize("delay", [0.0, 0.01])
async def test_goaway_mid_flight_loses_and_duplicates_nothing(key: ProviderKey, delay: float) -> None:
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)]) as sim:
        sim.faults.goaway_after_streams = 37
        sim.faults.response_delay_s = delay
        cfg = ClientConfig(max_connections=2)
        async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=cfg, sleep=no_sleep) as client:
            tokens = [new_token() for _ in range(600)]
            results = await asyncio.gather(*(client.send(background(t)) for t in tokens))
            stats = client.stats()
        assert len(results) == 600
        assert all(len(sim.pushes(t)) == 1 for t in tokens)
        assert stats.goaway_reasons["Shutdown"] >= 600 // 37 - 1
        assert stats.retries > 0 and stats.delivered == 600
        assert stats.connections_opened >= 600 // 37 and stats.jwt_minted == 1  # one JWT for every connection


async def test_request_timeout(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client(cfg={"request_timeout_s": 0.2})
    await client.send(background(new_token()))
    sim.faults.response_delay_s = 2.0
    t0 = time.monotonic()
    with pytest.raises(RetryLater, match="Timeout"):
        await client.send(background(new_token()))
    assert time.monotonic() - t0 < 0.6
    assert client.stats().timeouts == 1


async def test_idle_connection_is_pinged_and_kept(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    client = make_client(cfg={"ping_interval_s": 0.15, "ping_timeout_s": 0.5})
    await client.send(background(new_token()))
    await asyncio.sleep(0.8)
    await client.send(background(new_token()))
    stats = client.stats()
    assert stats.pings >= 2 and stats.dead_by_ping == 0 and stats.connections_opened == 1


async def test_dead_connection_detected_by_ping_and_push_delivered_once(sim: ApnsSimulator, key: ProviderKey) -> None:
    cfg = ClientConfig(ping_interval_s=0.2, ping_timeout_s=0.2, connect_timeout_s=0.3, max_attempts=20)
    async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=cfg, backoff=lambda n: 0.1) as client:
        await client.send(background(new_token()))
        sim.stall()
        tok = new_token()
        task = asyncio.create_task(client.send(background(tok)))
        await asyncio.sleep(1.0)
        assert not task.done()
        sim.stall(False)
        await asyncio.wait_for(task, 5)
        assert client.stats().dead_by_ping >= 1
    assert len(sim.pushes(tok)) == 1


async def test_tls_is_verified(sim: ApnsSimulator, key: ProviderKey) -> None:
    untrusted = Endpoint("localhost", sim.port)  # system CA store: the simulator's CA is not in it
    async with ApnsClient({"a": App(untrusted, key, TOPIC)}, sleep=no_sleep) as client:
        with pytest.raises(RetryLater, match="CERTIFICATE_VERIFY_FAILED"):
            await client.send(background(new_token()))
        assert client.stats().connect_failures == 3
    assert sim.accepted == 0


async def test_closed_client_refuses(make_client: ClientFactory) -> None:
    client = make_client()
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.send(background(new_token()))


@pytest.mark.slow
async def test_error_replies_never_stall_the_connection(key: ProviderKey) -> None:
    """6,000 pushes, a third to dead tokens, one connection with HTTP/2's default 64 KiB receive window:
    2,000 error bodies (~120 KB, about twice the window) must not close the window (aioapns 4.0 freezes
    here). The error bodies are what matters: 20,000 pushes with 10% dead tokens cost three times the CPU."""
    total, timeout_s = 6_000, 5.0
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], record=False) as sim:
        tokens = [new_token() for _ in range(total)]
        for t in tokens[::3]:
            sim.unregister(t)
        cfg = ClientConfig(max_connections=1, receive_window=65_535, request_timeout_s=timeout_s)
        async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=cfg) as client:
            latencies: list[float] = []
            outcomes: Counter[str] = Counter()
            done_at: list[float] = []
            sem = asyncio.Semaphore(200)

            async def one(tok: str) -> None:
                async with sem:
                    t0 = time.monotonic()
                    try:
                        await client.send(background(tok))
                        outcomes["ok"] += 1
                    except TokenInvalid:
                        outcomes["dead"] += 1
                    latencies.append(time.monotonic() - t0)
                    done_at.append(time.monotonic())

            start = time.monotonic()
            await asyncio.gather(*(one(t) for t in tokens))
            stats = client.stats()
    assert outcomes == {"ok": 4_000, "dead": 2_000}
    assert max(latencies) < timeout_s and stats.timeouts == 0 and stats.connections_opened == 1
    half = done_at[total // 2] - start
    rest = done_at[-1] - done_at[total // 2]
    assert rest < 2 * half + 0.5, (half, rest)  # steady: the second half is not slower than the first


async def test_bodies_wait_for_the_servers_flow_control_window(key: ProviderKey) -> None:
    """A server with HTTP/2's default 64 KiB connection window: 300 x 3 KB in flight must queue, not fail."""
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], connection_window=65_535) as sim:
        cfg = ClientConfig(max_connections=1, max_streams_per_connection=300)
        async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, config=cfg) as client:
            await client.send(background(new_token()))
            big = {"aps": {"content-available": 1}, "pad": "p" * 3000}
            tokens = [new_token() for _ in range(300)]
            await asyncio.gather(*(client.send(Notification(t, big, PushType.BACKGROUND)) for t in tokens))
        assert all(len(sim.pushes(t)) == 1 and len(sim.pushes(t)[0].body) > 3000 for t in tokens)


async def test_server_vanishing_mid_flight_gives_retry_later_not_a_hang(key: ProviderKey) -> None:
    sim = ApnsSimulator([SimulatorKey.from_provider_key(key)])
    await sim.start()
    sim.faults.response_delay_s = 5.0
    async with ApnsClient({"a": App(sim.endpoint, key, TOPIC)}, sleep=no_sleep, backoff=lambda n: 0.0) as client:
        await asyncio.sleep(0)
        sends = [asyncio.create_task(client.send(background(new_token()))) for _ in range(20)]
        await asyncio.sleep(0.3)
        await sim.stop()
        t0 = time.monotonic()
        results = await asyncio.gather(*sends, return_exceptions=True)
        assert time.monotonic() - t0 < 2.0
    assert all(isinstance(r, RetryLater) and "ConnectionLost" in r.reason for r in results), results


async def test_closing_the_client_ends_pending_sends(sim: ApnsSimulator, key: ProviderKey) -> None:
    sim.faults.response_delay_s = 5.0
    client = ApnsClient({"a": App(sim.endpoint, key, TOPIC)})
    sends = [asyncio.create_task(client.send(background(new_token()))) for _ in range(5)]
    await asyncio.sleep(0.3)
    await client.aclose()
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 2.0)
    assert all(isinstance(r, RetryLater) for r in results), results
