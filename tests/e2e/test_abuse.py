"""Registration abuse (issue 8 item 6) over the real wire: per-connection and per-address limits on
TNEW/TRPL answer ``ERR QUOTA`` while other clients carry on; never-verified tokens expire; repeated push
failures are one counted log line, the per-token detail is at debug level."""

from __future__ import annotations

import logging
import os
import time

import pytest
from conftest import Env

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.error_types import AUTH, QUOTA
from ntf_server.sim.device import NtfClient, Request, SimApp

QUOTA_ERR = P.Err(QUOTA)


def app() -> SimApp:
    return SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))


async def connect(env: Env, local_host: str | None = None) -> NtfClient:
    return await NtfClient.connect("127.0.0.1", env.port, env.key_hash, local_host=local_host)


async def test_per_connection_limit(env: Env) -> None:
    server = await env.reconfigure("registration", per_connection_per_min=1.0, per_connection_burst=3)
    flooder, other = await connect(env), await connect(env)
    apps = [app() for _ in range(4)]
    answers = [await a.register(flooder) for a in apps]
    assert [type(r) for r in answers[:3]] == [P.IdTkn] * 3
    assert answers[3] == QUOTA_ERR
    assert await apps[0].token_command(flooder, P.TRpl(app().device_token)) == QUOTA_ERR  # TRPL too
    assert isinstance(await apps[0].token_command(flooder, P.TChk()), P.Tkn)  # other commands are served
    assert isinstance(await app().register(other), P.IdTkn)  # another connection has its own quota
    assert server.stats["req_quota_exceeded"] == 2
    assert (await server.store.counts()).tokens == 4  # the refused TNEW stored nothing
    for c in (flooder, other):
        await c.close()


async def test_per_address_limit(env: Env) -> None:
    server = await env.reconfigure("registration", per_ip_per_min=1.0, per_ip_burst=4)
    a, b = await connect(env), await connect(env)
    for c in (a, b, a, b):
        assert isinstance(await app().register(c), P.IdTkn)
    assert await app().register(a) == QUOTA_ERR
    assert await app().register(b) == QUOTA_ERR  # the limit is the address's, not the connection's
    elsewhere = await connect(env, local_host="127.0.0.2")  # another client address
    assert isinstance(await app().register(elsewhere), P.IdTkn)
    assert server.stats["req_quota_exceeded"] == 2
    for c in (a, b, elsewhere):
        await c.close()


async def test_defaults_let_a_retrying_client_through_but_stop_a_flood(env: Env) -> None:
    client = await connect(env)
    retrying = app()
    first = await retrying.register(client)
    assert isinstance(first, P.IdTkn)
    for _ in range(9):  # lost responses, retried: same token each time
        assert await retrying.register(client) == first
    flood = [app() for _ in range(100)]
    reqs = [Request(b"", P.TNew(a.device_token, *a_keys(a)), a.auth_key) for a in flood]
    answers = [r for _, r in await client.requests(reqs)]
    created = sum(isinstance(r, P.IdTkn) for r in answers)
    assert created <= 11  # burst 20 per connection, 10 already used by the retries
    assert answers.count(QUOTA_ERR) == 100 - created
    await client.close()


def a_keys(a: SimApp) -> tuple[bytes, bytes]:
    return (crypto.encode_public_key(crypto.public_of(a.auth_key)),
            crypto.encode_public_key(a.dh_key.public_key()))


async def test_never_verified_token_expires_and_the_app_registers_again(env: Env) -> None:
    client = await connect(env)
    pending, verified = app(), app()
    assert isinstance(await pending.register(client), P.IdTkn)
    assert isinstance(await verified.register(client), P.IdTkn)
    code = verified.verification_code((await env.sim.next_push(verified.device_token.token.decode())).body)
    assert await verified.token_command(client, P.TVfy(code)) == P.Ok()
    assert env.server.housekeeping is not None
    assert await env.server.housekeeping.expire_once(time.time() + 5 * 3600) == 0  # default: 6 h
    assert await env.server.housekeeping.expire_once(time.time() + 6 * 3600 + 60) == 1
    assert await pending.token_command(client, P.TChk()) == P.Err(AUTH)  # the app's cue to register again
    old_id = pending.token_id
    assert isinstance(await pending.register(client), P.IdTkn)
    assert pending.token_id != old_id
    assert isinstance(await verified.token_command(client, P.TChk()), P.Tkn)
    assert env.server.stats["tkn_expired_unverified"] == 1
    await client.close()


async def test_repeated_push_failures_are_one_line_plus_debug_detail(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ntf_server")
    client = await connect(env)
    for _ in range(5):  # dead device tokens: each verification push fails
        bad = app()
        env.sim.unregister(bad.device_token.token.decode())
        assert isinstance(await bad.register(client), P.IdTkn)
    await env.server.push.settle()  # type: ignore[union-attr]
    records = [r for r in caplog.records if r.name == "ntf_server.push.sending"]
    info = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    assert len(info) == 1 and info[0].startswith("verification push failed: invalid token UNREGISTERED")
    assert sum(r.levelno == logging.DEBUG for r in records) == 5
    await client.close()
