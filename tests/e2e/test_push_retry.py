"""Retries of pushes APNs answers "retry later" (429, 5xx), with the strict simulator's fault injection
(spec §5.8 and DESIGN "Push policy": we retry with backoff until a deadline where Haskell drops)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable

from e2e_env import Env, active_app

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.service import PushService
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.base import NewNotification
from ntf_server.store.records import TokenRecord

SMP = SMPServer(("smp1.example.com",), "5223", b"\x07" * 32)
FAST = {"retry_backoff_base_s": 0.05, "retry_backoff_cap_s": 0.2}


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def pusher(server: NtfServer) -> PushService:
    assert server.push is not None
    return server.push


async def notify(env: Env, app: SimApp, client: NtfClient, nid: bytes | None = None) -> TokenRecord:
    """One NMSG for a new queue of ``app``, stored and handed to the push service as the SMP pool does."""
    nid = nid or os.urandom(24)
    await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    [result] = await env.server.store.add_last_notifications(
        [NewNotification(SMP, nid, int(time.time() * 1000), os.urandom(24), os.urandom(144))])
    assert result.token is not None
    await pusher(env.server).send_messages(result.token, result.notifications)
    return result.token


async def test_a_verification_push_answered_503_is_retried_not_dropped(env: Env) -> None:
    """Default settings: Haskell (and this server before) dropped it and the token stayed REGISTERED."""
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    env.sim.faults.error_rates = {503: 1.0}
    assert isinstance(await app.register(client), P.IdTkn)
    await until(lambda: env.sim.replies.get("ServiceUnavailable", 0) >= 2)  # and on a fresh connection
    env.sim.faults.error_rates = {}
    push = await env.sim.next_push(app.device_token.token.decode(), timeout_s=10.0)
    assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
    await client.close()


async def test_a_verification_push_answered_503_then_429_is_retried_and_confirms_the_token(env: Env) -> None:
    server = await env.reconfigure("push", **FAST)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    env.sim.faults.error_rates = {503: 1.0}
    assert isinstance(await app.register(client), P.IdTkn)
    await until(lambda: server.stats["ntf_vrf_retried"] >= 1)
    env.sim.faults.error_rates = {429: 1.0}
    await until(lambda: env.sim.replies.get("TooManyRequests", 0) >= 1)
    env.sim.faults.error_rates = {}
    push = await env.sim.next_push(app.device_token.token.decode())
    await pusher(server).drain()
    assert await app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus(P.TokenStatusKind.CONFIRMED))
    assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
    assert server.stats["ntf_vrf_delivered"] == 1 and server.stats["ntf_vrf_failed"] == 0
    assert server.stats["ntf_vrf_retried"] >= 2
    await client.close()


async def test_message_pushes_under_random_5xx_and_429_all_arrive(env: Env) -> None:
    server = await env.reconfigure("push", **FAST)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    apps = [await active_app(env, client) for _ in range(6)]
    env.sim.faults.error_rates = {500: 0.3, 503: 0.3, 429: 0.2}
    try:
        for app in apps:
            await notify(env, app, client)
        await pusher(server).drain()
    finally:
        env.sim.faults.error_rates = {}
    for app in apps:
        push = await env.sim.next_push(app.device_token.token.decode())
        assert len(app.message_list(push.body)) == 1
    assert server.stats["ntf_delivered"] == 6 and server.stats["ntf_failed"] == 0
    assert server.stats["ntf_retried"] >= 1
    await client.close()


async def test_a_passed_retry_deadline_is_counted_failed_and_the_token_stays_active(env: Env) -> None:
    server = await env.reconfigure("push", retry_deadline_s=0.5, **FAST)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    env.sim.faults.error_rates = {500: 1.0}
    try:
        await notify(env, app, client)
        await pusher(server).drain()
    finally:
        env.sim.faults.error_rates = {}
    assert server.stats["ntf_failed"] == 1 and server.stats["ntf_retry_expired"] == 1
    assert server.stats["ntf_retried"] >= 2 and server.stats["ntf_delivered"] == 0
    assert await app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus(P.TokenStatusKind.ACTIVE))
    await client.close()


async def test_a_newer_notification_replaces_the_waiting_retry(env: Env) -> None:
    """The device gets one push carrying both notifications, not the stale one and then the new one."""
    server = await env.reconfigure("push", retry_backoff_base_s=2.0, retry_backoff_cap_s=2.0)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    device = app.device_token.token.decode()
    seen = len(env.sim.pushes(device))
    env.sim.faults.error_rates = {503: 1.0}
    try:
        await notify(env, app, client)
        await until(lambda: server.stats["ntf_retried"] == 1)  # waiting 1-2 s for its retry
        await notify(env, app, client)
        await until(lambda: server.stats["ntf_retry_replaced"] == 1)  # took the waiting slot
    finally:
        env.sim.faults.error_rates = {}
    await pusher(server).drain()
    [push] = env.sim.pushes(device)[seen:]
    assert len(app.message_list(push.body)) == 2
    assert server.stats["ntf_delivered"] == 1 and server.stats["ntf_failed"] == 0
    await client.close()


async def test_a_waiting_retry_is_not_sent_after_the_app_deleted_its_token(env: Env) -> None:
    server = await env.reconfigure("push", retry_backoff_base_s=1.0, retry_backoff_cap_s=1.0)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    device = app.device_token.token.decode()
    seen = len(env.sim.pushes(device))
    env.sim.faults.error_rates = {503: 1.0}
    try:
        await notify(env, app, client)
        await until(lambda: server.stats["ntf_retried"] == 1)  # waiting 0.5-1 s
        assert await app.token_command(client, P.TDel()) == P.Ok()
    finally:
        env.sim.faults.error_rates = {}
    await pusher(server).drain()
    assert env.sim.pushes(device)[seen:] == []
    assert server.stats["ntf_delivered"] == 0 and server.stats["ntf_failed"] == 0
    await client.close()


async def test_waiting_retries_hold_no_worker(env: Env) -> None:
    """More tokens wait for a retry than there are message workers, yet another token's push goes at once."""
    server = await env.reconfigure("push", retry_backoff_base_s=60.0, retry_backoff_cap_s=60.0)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nid = os.urandom(24)
    env.sim.faults.error_rates = {503: 1.0}
    token = await notify(env, app, client, nid)
    others = [dataclasses.replace(token, token_id=os.urandom(24), device_token=os.urandom(32).hex().encode())
              for _ in range(100)]  # more than the 64 message workers
    for tok in others:
        await pusher(server).send_messages(tok, [])
    await until(lambda: server.stats["ntf_retried"] == 101)
    env.sim.faults.error_rates = {}
    seen = len(env.sim.pushes(app.device_token.token.decode()))
    other = await active_app(env, client)
    await notify(env, other, client)
    push = await env.sim.next_push(other.device_token.token.decode(), timeout_s=5.0)
    assert len(other.message_list(push.body)) == 1
    assert len(env.sim.pushes(app.device_token.token.decode())) == seen  # still waiting (60 s backoff)
    await until(lambda: server.stats["ntf_delivered"] == 1)
    assert server.stats["ntf_retried"] == 101  # and still waiting
    await client.close()  # the server stops with 101 retries waiting (the fixture): they must not hold it


async def test_verification_pushes_are_capped_per_device_per_hour(env: Env) -> None:
    server = await env.reconfigure("push", verifications_per_hour=3)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    for _ in range(5):  # TNEW and four repeats (same keys: the same token, a push each time)
        assert isinstance(await app.register(client), P.IdTkn)
    await pusher(server).drain()
    assert len(env.sim.pushes(app.device_token.token.decode())) == 3
    assert server.stats["ntf_vrf_capped"] == 2 and server.stats["ntf_vrf_delivered"] == 3
    await client.close()


async def test_the_verification_cap_survives_a_restart_and_counts_one_device_in_any_case(env: Env) -> None:
    """Issue 16.5: the cap was in memory (a restart forgot it) and upper-case hex was another device."""
    await env.reconfigure("push", verifications_per_hour=2)
    hex_token = os.urandom(32).hex()
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, hex_token.encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    await client.close()
    await pusher(env.server).drain()
    server = await env.reconfigure("push", verifications_per_hour=2)  # a restart: a new server, the same Redis
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    for case in (str.upper, str.lower, str.upper):  # one TNEW with new keys, two repeats of it
        other = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, case(hex_token).encode()))
        if case is str.lower:
            other = dataclasses.replace(other, auth_key=app.auth_key, dh_key=app.dh_key)
        assert isinstance(await other.register(client), P.IdTkn)
    await pusher(server).drain()
    assert len(env.sim.pushes(hex_token)) == 2  # the first before the restart, one after
    assert server.stats["ntf_vrf_capped"] == 2
    await client.close()
