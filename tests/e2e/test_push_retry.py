"""Retries of pushes APNs answers "retry later" (429, 5xx), with the strict simulator's fault injection
(spec §5.8 and DESIGN "Push policy": we retry with backoff until a deadline where Haskell drops)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable

from helpers.e2e_env import Env, active_app

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.push.pipeline import PushPipeline
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.records import Notice

SMP = SMPServer(("smp1.example.com",), "5223", b"\x07" * 32)
FAST = {"retry_backoff_base_s": 0.05, "retry_backoff_cap_s": 0.2}


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def pusher(server: NtfServer) -> PushPipeline:
    assert server.push is not None
    return server.push


async def notify(env: Env, app: SimApp, client: NtfClient, nid: bytes | None = None) -> Notice:
    """One NMSG for a new queue of ``app``, handed to the push pipeline as the SMP pool does."""
    nid = nid or os.urandom(24)
    await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    notice = Notice(SMP, nid, int(time.time() * 1000), os.urandom(24), os.urandom(144))
    await pusher(env.server).accept(SMP, [notice])
    return notice


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
    await pusher(server).settle()
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
        await pusher(server).settle()
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
        await pusher(server).settle()
    finally:
        env.sim.faults.error_rates = {}
    assert server.stats["ntf_failed"] == 1 and server.stats["ntf_retry_expired"] == 1
    assert server.stats["ntf_retried"] >= 2 and server.stats["ntf_delivered"] == 0
    assert await app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus(P.TokenStatusKind.ACTIVE))
    await client.close()


async def test_a_newer_notification_never_replaces_a_waiting_retry(env: Env) -> None:
    """Each push carries the notice that caused it: the waiting one is sent again with its own notice (and
    the newer one beside it), and the newer one is sent too."""
    server = await env.reconfigure("push", retry_backoff_base_s=1.0, retry_backoff_cap_s=1.0)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    device = app.device_token.token.decode()
    seen = len(env.sim.pushes(device))
    env.sim.faults.error_rates = {503: 1.0}
    try:
        first = await notify(env, app, client)
        await until(lambda: server.stats["ntf_retried"] == 1)  # waiting 0.5-1 s for its retry
    finally:
        env.sim.faults.error_rates = {}
    second = await notify(env, app, client)
    await pusher(server).settle()
    lists = [app.message_list(p.body) for p in env.sim.pushes(device)[seen:]]
    assert len(lists) == 2 and server.stats["ntf_delivered"] == 2 and server.stats["ntf_failed"] == 0
    newest = [items[-1].split(" ")[2] for items in lists]  # each push's cause is its last item (its nonce)
    assert sorted(newest) == sorted(b64u_encode(n.nonce) for n in (first, second))
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
    await pusher(server).settle()
    assert env.sim.pushes(device)[seen:] == []
    assert server.stats["ntf_delivered"] == 0 and server.stats["ntf_failed"] == 0
    await client.close()


async def test_waiting_retries_hold_no_sender(env: Env) -> None:
    """More pushes wait for a retry than there are senders, yet another token's push goes at once."""
    server = await env.reconfigure("push", retry_backoff_base_s=60.0, retry_backoff_cap_s=60.0)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nid = os.urandom(24)
    await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    env.sim.faults.error_rates = {503: 1.0}
    waiting = pusher(server).settings.senders + 10
    await pusher(server).accept(SMP, [Notice(SMP, nid, int(time.time() * 1000) + i, os.urandom(24), os.urandom(144))
                                      for i in range(waiting)])
    await until(lambda: server.stats["ntf_retried"] == waiting)
    env.sim.faults.error_rates = {}
    seen = len(env.sim.pushes(app.device_token.token.decode()))
    other = await active_app(env, client)
    await notify(env, other, client)
    push = await env.sim.next_push(other.device_token.token.decode(), timeout_s=5.0)
    assert len(other.message_list(push.body)) == 1
    assert len(env.sim.pushes(app.device_token.token.decode())) == seen  # still waiting (60 s backoff)
    await until(lambda: server.stats["ntf_delivered"] == 1)
    assert server.stats["ntf_retried"] == waiting  # and still waiting
    await client.close()  # the server stops with the retries waiting (the fixture): they must not hold it


async def test_verification_pushes_are_capped_per_device_per_hour(env: Env) -> None:
    server = await env.reconfigure("push", verifications_per_hour=3)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    for _ in range(5):  # TNEW and four repeats (same keys: the same token, a push each time)
        assert isinstance(await app.register(client), P.IdTkn)
    await pusher(server).settle()
    assert len(env.sim.pushes(app.device_token.token.decode())) == 3
    assert server.stats["ntf_vrf_capped"] == 2 and server.stats["ntf_vrf_delivered"] == 3
    await client.close()


async def test_a_stop_during_a_burst_with_retries_waiting_loses_nothing(env: Env) -> None:
    """What SIGTERM does (server.stop, as `serve` calls it): pushes waiting for a retry and pushes still at
    APNs when the grace ends are kept in Redis; the next start sends every one, each with its notice."""
    server = await env.reconfigure("push", retry_backoff_base_s=1.0, retry_backoff_cap_s=1.0, shutdown_grace_s=0.5)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nids = [os.urandom(24) for _ in range(3)]
    for nid in nids:
        await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    burst = [Notice(SMP, nids[i % 3], int(time.time() * 1000) + i, os.urandom(24), os.urandom(144))
             for i in range(40)]
    env.sim.faults.error_rates = {503: 1.0}
    await pusher(server).accept(SMP, burst[:30])
    await until(lambda: server.stats["ntf_retried"] >= 30)  # 30 waiting for their retry
    env.sim.faults.response_delay_s = 5.0  # the next 10 are at APNs, unanswered, when the stop comes
    await pusher(server).accept(SMP, burst[30:])
    device = app.device_token.token.decode()
    # at least the 10 (not exactly: on a loaded machine a retry may come due, 1 s on, and join them at APNs)
    await until(lambda: env.sim.replies.get("ServiceUnavailable", 0) >= 30 and server.push is not None
                and server.push.in_flight >= 10)

    def apns_well() -> None:
        env.sim.faults.error_rates = {}
        env.sim.faults.response_delay_s = 0.0

    seen = len(env.sim.pushes(device))
    again = await env.restart(while_stopped=apns_well)
    await pusher(again).settle()
    causes = {app.message_list(p.body)[-1].split(" ")[2] for p in env.sim.pushes(device)[seen:]}
    assert causes == {b64u_encode(n.nonce) for n in burst}
    await client.close()


async def test_the_verification_cap_survives_a_restart_and_counts_one_device_in_any_case(env: Env) -> None:
    """Issue 16.5: the cap was in memory (a restart forgot it) and upper-case hex was another device."""
    await env.reconfigure("push", verifications_per_hour=2)
    hex_token = os.urandom(32).hex()
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, hex_token.encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    await client.close()
    await pusher(env.server).settle()
    server = await env.reconfigure("push", verifications_per_hour=2)  # a restart: a new server, the same Redis
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    for case in (str.upper, str.lower, str.upper):  # one TNEW with new keys, two repeats of it
        other = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, case(hex_token).encode()))
        if case is str.lower:
            other = dataclasses.replace(other, auth_key=app.auth_key, dh_key=app.dh_key)
        assert isinstance(await other.register(client), P.IdTkn)
    await pusher(server).settle()
    assert len(env.sim.pushes(hex_token)) == 2  # the first before the restart, one after
    assert server.stats["ntf_vrf_capped"] == 2
    await client.close()
