"""The front door against abuse (issue 16) over the real wire: what one client may make the server do.

SNEW (16.1): caps on subscriptions and distinct SMP servers per token, a rate per connection, and SMP
servers on private or loopback addresses refused unless ``subscriber.allow_private_hosts``.
"""

from __future__ import annotations

import os

from helpers.e2e_env import Env, active_app

from ntf_server.handlers import PROHIBITED
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH, QUOTA, CmdError, CommandError
from ntf_server.sim.device import NtfClient, SimApp

QUOTA_ERR = P.Err(QUOTA)


def smp(host: str) -> SMPServer:
    """An address nobody answers at (.invalid never resolves): the subscriber's attempts fail at once."""
    return SMPServer((host,), "5223", b"\x07" * 32)


async def connect(env: Env) -> NtfClient:
    return await NtfClient.connect("127.0.0.1", env.port, env.key_hash)


async def snew(app: SimApp, client: NtfClient, server: SMPServer, nid: bytes | None = None) -> P.NtfResponse:
    return await app.subscribe(client, server, nid or os.urandom(24), crypto.generate_ed25519())


async def test_subscriptions_and_smp_servers_per_token_are_capped(env: Env) -> None:
    server = await env.reconfigure("registration", max_subscriptions_per_token=4, max_smp_servers_per_token=2)
    client = await connect(env)
    app = await active_app(env, client)
    a, b, c = smp("a.invalid"), smp("b.invalid"), smp("c.invalid")
    key = crypto.generate_ed25519()
    first = await app.subscribe(client, a, b"n1", key)
    assert isinstance(first, P.IdSub)
    assert isinstance(await snew(app, client, a), P.IdSub)
    assert isinstance(await snew(app, client, b), P.IdSub)
    assert await snew(app, client, c) == QUOTA_ERR  # a third SMP server
    assert isinstance(await snew(app, client, b), P.IdSub)  # a fourth subscription on a known server
    assert await snew(app, client, a) == QUOTA_ERR  # a fifth subscription
    assert await app.subscribe(client, a, b"n1", key) == first  # a retried SNEW is still answered
    assert await client.request(first.sub_id, P.SDel(), app.auth_key) == (first.sub_id, P.Ok())
    assert isinstance(await snew(app, client, a), P.IdSub)  # the deleted one made room
    assert server.stats["sub_quota_exceeded"] == 2
    other = await active_app(env, client)  # the caps are per token
    assert isinstance(await snew(other, client, c), P.IdSub)
    await client.close()


async def test_snew_rate_per_connection(env: Env) -> None:
    server = await env.reconfigure("registration", snew_per_connection_per_min=1.0, snew_per_connection_burst=3)
    flooder, other = await connect(env), await connect(env)
    app = await active_app(env, flooder)
    answers = [await snew(app, flooder, smp("a.invalid")) for _ in range(4)]
    assert [type(r) for r in answers[:3]] == [P.IdSub] * 3
    assert answers[3] == QUOTA_ERR
    assert isinstance(await app.token_command(flooder, P.TChk()), P.Tkn)  # other commands are served
    assert isinstance(await snew(app, other, smp("a.invalid")), P.IdSub)  # another connection's own quota
    assert server.stats["sub_quota_exceeded"] == 1
    assert (await server.store.counts()).subscriptions == 4
    for c in (flooder, other):
        await c.close()


async def test_private_smp_hosts_are_refused_unless_allowed(env: Env) -> None:
    server = await env.reconfigure("subscriber", allow_private_hosts=False)
    client = await connect(env)
    app = await active_app(env, client)
    for host in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1",
                 "fd00::1", "0.0.0.0", "localhost", "db.localhost"):
        assert await snew(app, client, smp(host)) == P.Err(PROHIBITED), host
    assert isinstance(await snew(app, client, smp("smp.invalid")), P.IdSub)  # names are checked at connect
    assert isinstance(await snew(app, client, smp("8.8.8.8")), P.IdSub)
    assert server.stats["sub_host_refused"] == 10
    assert (await server.store.counts()).subscriptions == 2
    await client.close()


async def test_registrations_per_device_token_are_capped(env: Env) -> None:
    """Issue 16.2: each TNEW with a new verify key for one device token is one more registration; beyond
    the cap, ERR QUOTA. A repeat is answered as before, and verifying one makes room again."""
    server = await env.reconfigure("registration", max_tokens_per_device=3)
    client = await connect(env)
    device = P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())
    apps = [SimApp(device) for _ in range(4)]
    answers = [await a.register(client) for a in apps]
    assert [type(r) for r in answers[:3]] == [P.IdTkn] * 3
    assert answers[3] == QUOTA_ERR
    assert await apps[0].register(client) == answers[0]  # a repeat
    pushes = [await env.sim.next_push(device.token.decode()) for _ in range(4)]  # 3 + the repeat's
    code = next(c for c in map(lambda p: own_code(apps[0], p.body), pushes) if c is not None)
    assert await apps[0].token_command(client, P.TVfy(code)) == P.Ok()
    assert isinstance(await apps[3].register(client), P.IdTkn)
    assert server.stats["req_quota_exceeded"] == 1
    await client.close()


def own_code(app: SimApp, body: bytes) -> bytes | None:
    """The verification code of ``body`` if it was meant for ``app`` (pushes of one device may come in any
    order)."""
    try:
        return app.verification_code(body)
    except crypto.CryptoError:
        return None


async def test_an_empty_notifier_id_is_a_syntax_error_not_a_store_error(env: Env) -> None:
    """Issue 16.6: it used to reach the store, answer ERR STORE, count a store error and fire the alert."""
    client = await connect(env)
    app = await active_app(env, client)
    assert await app.subscribe(client, smp("a.invalid"), b"", crypto.generate_ed25519()) == P.Err(
        CmdError(CommandError.SYNTAX))
    assert env.server.stats["store_errors"] == 0
    assert isinstance(await snew(app, client, smp("a.invalid")), P.IdSub)  # the connection carries on
    await client.close()


async def test_one_device_token_in_any_case_is_one_device(env: Env) -> None:
    """Issue 16.5: upper- and lower-case hex of one device token are the same registration."""
    client = await connect(env)
    hex_token = os.urandom(32).hex()
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, hex_token.upper().encode()))
    first = await app.register(client)
    assert isinstance(first, P.IdTkn)
    app.device_token = P.DeviceToken(P.PushProvider.APNS_TEST, hex_token.encode())
    assert await app.register(client) == first  # a repeat of the same registration, not a new device
    await client.close()


async def test_every_command_counts_toward_the_budget_of_its_connection_and_address(env: Env) -> None:
    """Issue 16.4: only TNEW/TRPL were limited; any other command with a random signature cost a lookup
    and a signature check, 2,100/s from one connection."""
    server = await env.reconfigure("server", commands_per_connection_per_min=1.0, commands_per_connection_burst=4,
                                   commands_per_ip_per_min=1.0, commands_per_ip_burst=7)
    a, b = await connect(env), await connect(env)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    assert isinstance(await app.register(a), P.IdTkn)
    answers = [await app.token_command(a, P.TChk()) for _ in range(4)]
    assert [type(r) for r in answers[:3]] == [P.Tkn] * 3 and answers[3] == QUOTA_ERR  # 4 per connection
    assert await a.request(b"", P.Ping()) == (b"", QUOTA_ERR)  # whatever the command
    on_b = [await app.token_command(b, P.TChk()) for _ in range(4)]  # 7 per address, 4 taken (refused: free)
    assert [type(r) for r in on_b[:3]] == [P.Tkn] * 3 and on_b[3] == QUOTA_ERR
    elsewhere = await NtfClient.connect("127.0.0.1", env.port, env.key_hash, local_host="127.0.0.2")
    assert isinstance(await app.token_command(elsewhere, P.TChk()), P.Tkn)
    assert server.stats["req_over_budget"] == 3
    for c in (a, b, elsewhere):
        await c.close()


async def test_a_connection_is_closed_after_too_many_auth_failures(env: Env) -> None:
    server = await env.reconfigure("server", max_auth_failures=3)
    prober, bystander = await connect(env), await connect(env)
    app = await active_app(env, bystander)
    forged = [(app.token_id, P.TChk(), crypto.generate_ed25519()) for _ in range(3)]
    for entity, cmd, key in forged:  # a random signature on a real token: ERR AUTH, then closed
        assert (await prober.request(entity, cmd, key))[1] == P.Err(AUTH)
    assert await prober.closed_by_server()
    assert server.stats["conn_closed_auth_failures"] == 1
    assert isinstance(await app.token_command(bystander, P.TChk()), P.Tkn)
    await bystander.close()
