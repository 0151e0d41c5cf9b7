"""The NTF server end to end over loopback: real TLS, real Redis, the strict APNs simulator, and a simulated
iOS app speaking the real protocol (spec §4, §7.1 T8–T12, T16–T17)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from helpers.e2e_env import Env
from helpers.fault_proxy import FaultProxy

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer, enc_short, pad
from ntf_server.protocol.error_types import AUTH, BLOCK, QUOTA, CmdError, CommandError, StoreErr
from ntf_server.protocol.framing import NTF_BLOCK_SIZE, decode_block, encode_transmission
from ntf_server.protocol.handshake import NtfClientHello, NtfServerHello
from ntf_server.sim.device import NtfClient, Request, SimApp
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.tls import ChainError, connect_pinned, ntf_client_context

SMP = SMPServer(("smp.example.com",), "5223", b"\x42" * 32)
ACTIVE = P.Tkn(P.TokenStatus(P.TokenStatusKind.ACTIVE))


def device_token() -> P.DeviceToken:
    return P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())


async def connect(env: Env, *, alpn: bool = True) -> NtfClient:
    return await NtfClient.connect("127.0.0.1", env.port, env.key_hash, alpn=alpn)


async def registered(env: Env, client: NtfClient, app: SimApp | None = None) -> tuple[SimApp, bytes]:
    """TNEW, then read and decrypt the verification push: returns the app and its code."""
    app = app or SimApp(device_token())
    resp = await app.register(client)
    assert isinstance(resp, P.IdTkn)
    push = await env.sim.next_push(app.device_token.token.decode())
    assert push.push_type == "background" and push.priority == 5
    assert set(push.json()["aps"]) == {"content-available"}
    assert len(push.body) <= 4096
    return app, app.verification_code(push.body)


async def active(env: Env, client: NtfClient) -> SimApp:
    app, code = await registered(env, client)
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    return app


@pytest.mark.parametrize("alpn", [True, False], ids=["v3", "v1"])
async def test_token_lifecycle(env: Env, alpn: bool) -> None:
    client = await connect(env, alpn=alpn)
    assert client.version == (3 if alpn else 1)
    app, code = await registered(env, client)
    await env.server.push.settle()  # type: ignore[union-attr]
    confirmed = P.Tkn(P.TokenStatus(P.TokenStatusKind.CONFIRMED))
    assert await app.token_command(client, P.TChk()) == confirmed
    assert await app.token_command(client, P.TVfy(os.urandom(32))) == P.Err(AUTH)
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()  # idempotent
    assert await app.token_command(client, P.TChk()) == ACTIVE
    assert await app.token_command(client, P.TCrn(20)) == P.Ok()
    assert await app.token_command(client, P.TCrn(19)) == P.Err(QUOTA)
    assert await app.token_command(client, P.TCrn(0)) == P.Ok()
    nkey = crypto.generate_ed25519()
    sub = await app.subscribe(client, SMP, os.urandom(24), nkey)
    assert isinstance(sub, P.IdSub)
    _, status = await client.request(sub.sub_id, P.SChk(), app.auth_key)
    assert status == P.Sub(P.SubStatus(P.SubStatusKind.NEW))
    assert (await client.request(sub.sub_id, P.SDel(), app.auth_key))[1] == P.Ok()
    assert (await client.request(sub.sub_id, P.SChk(), app.auth_key))[1] == P.Err(AUTH)
    assert await app.token_command(client, P.TDel()) == P.Ok()
    assert await app.token_command(client, P.TChk()) == P.Err(AUTH)
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()
    await client.close()


async def test_x25519_authenticator_keys(env: Env) -> None:
    client = await connect(env)
    app = SimApp(device_token(), auth_key=crypto.generate_x25519())
    app, code = await registered(env, client, app)
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    assert await app.token_command(client, P.TChk()) == ACTIVE
    await client.close()


async def test_t16_repeated_tnew_is_idempotent(env: Env) -> None:
    client = await connect(env)
    app, code = await registered(env, client)
    first = (app.token_id, app.dh_secret)
    again = await app.register(client)
    assert isinstance(again, P.IdTkn)
    assert (app.token_id, app.dh_secret) == first  # same id, same server DH key
    push = await env.sim.next_push(app.device_token.token.decode())
    assert app.verification_code(push.body) == code  # same code, re-sent
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    # a client that regenerated its DH key must use a new verify key
    other_dh = SimApp(app.device_token, auth_key=app.auth_key)
    assert await other_dh.register(client) == P.Err(AUTH)
    await client.close()


async def test_trpl_reverifies_with_the_new_device_token(env: Env) -> None:
    client = await connect(env)
    app = await active(env, client)
    new = device_token()
    assert await app.token_command(client, P.TRpl(new)) == P.Ok()
    push = await env.sim.next_push(new.token.decode())
    code = app.verification_code(push.body)
    await env.server.push.settle()  # type: ignore[union-attr]
    assert await app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus(P.TokenStatusKind.CONFIRMED))
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    assert await app.token_command(client, P.TChk()) == ACTIVE
    await client.close()


async def test_t17_retried_subscriptions(env: Env) -> None:
    client = await connect(env)
    app, code = await registered(env, client)
    nid, nkey = os.urandom(24), crypto.generate_ed25519()
    assert await app.subscribe(client, SMP, nid, nkey) == P.Err(AUTH)  # token not verified yet
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    sub = await app.subscribe(client, SMP, nid, nkey)
    assert isinstance(sub, P.IdSub)
    assert await app.subscribe(client, SMP, nid, nkey) == sub  # retry: same id
    assert await app.subscribe(client, SMP, nid, crypto.generate_ed25519()) == P.Err(AUTH)  # other key
    other = await active(env, client)
    assert await other.subscribe(client, SMP, nid, nkey) == P.Err(AUTH)  # other token
    await client.close()


async def test_t17_a_retry_matches_a_subscription_stored_with_the_key_as_sent(env: Env) -> None:
    """SNEW stores an Ed25519 notifier key with its public key (crypto.notifier_key_for_storage); one stored
    as the app sent it (before that form, or imported from the Haskell server) still answers a retry."""
    client = await connect(env)
    app = await active(env, client)
    nid, nkey = os.urandom(24), crypto.generate_ed25519()
    _, sub = await env.server.store.create_subscription(app.token_id, SMP, nid, crypto.encode_private_key(nkey))
    assert sub is not None
    assert await app.subscribe(client, SMP, nid, nkey) == P.IdSub(sub.sub_id)
    assert await app.subscribe(client, SMP, nid, crypto.generate_ed25519()) == P.Err(AUTH)  # other key
    await client.close()


async def test_verification_deletes_other_registrations_of_the_device(env: Env) -> None:
    client = await connect(env)
    token = device_token()
    first, _ = await registered(env, client, SimApp(token))
    second, code = await registered(env, client, SimApp(token))
    assert first.token_id != second.token_id
    assert await second.token_command(client, P.TVfy(code)) == P.Ok()
    assert await first.token_command(client, P.TChk()) == P.Err(AUTH)
    await client.close()


async def test_dead_device_token_becomes_invalid(env: Env) -> None:
    client = await connect(env)
    app = SimApp(device_token())
    env.sim.unregister(app.device_token.token.decode())
    assert isinstance(await app.register(client), P.IdTkn)
    await env.server.push.settle()  # type: ignore[union-attr]
    invalid = P.TokenStatus(P.TokenStatusKind.INVALID, P.InvalidReason.UNREGISTERED)
    assert await app.token_command(client, P.TChk()) == P.Tkn(invalid)
    await client.close()


async def test_syntax_errors_t8_to_t12(env: Env) -> None:
    client = await connect(env)
    sig = os.urandom(64)
    body = b"T" + b"AT" + enc_short(b"abcd") + enc_short(crypto.encode_public_key(crypto.generate_ed25519()
                                                                                   .public_key()))
    body += enc_short(crypto.encode_public_key(crypto.generate_x25519().public_key()))
    cases = [
        (b"", b"abcd", b"1234", b"HELLO", P.Err(CmdError(CommandError.UNKNOWN)), b"1234"),
        (sig, b"bcda", b"", b"TNEW", P.Err(CmdError(CommandError.SYNTAX)), b""),
        (sig, b"cdab", b"", b"TNEW \x01A" + body, P.Err(CmdError(CommandError.SYNTAX)), b""),
        (b"", b"dabc", b"", b"TNEW " + body, P.Err(CmdError(CommandError.NO_AUTH)), b""),
        (sig, b"abcd", b"12345678", b"TNEW " + body, P.Err(CmdError(CommandError.HAS_AUTH)), b"12345678"),
        (sig, b"efgh", b"", b"TNEW " + body, P.Err(AUTH), b""),  # well-formed, but not signed by its key
    ]
    for auth, corr, entity, command, expected, echoed in cases:
        t = encode_transmission(client.params, corr, entity, command, auth=auth)
        await client.send_block(b"\x01" + len(t).to_bytes(2, "big") + t)
        [(rcorr, rentity, resp)] = await client.read_replies()
        assert (rcorr, rentity, resp) == (corr, echoed, expected)
    await client.close()


async def test_batched_requests_are_answered_in_one_block(env: Env) -> None:
    client = await connect(env)
    app = await active(env, client)
    reqs = [Request(app.token_id, P.TChk(), app.auth_key), Request(b"", P.Ping()),
            Request(app.token_id, P.TCrn(5), app.auth_key)]
    answers = await client.requests(reqs)
    assert [r for _, r in answers] == [ACTIVE, P.Pong(), P.Err(QUOTA)]
    await client.close()


async def test_garbage_blocks_get_err_block_and_the_connection_survives(env: Env) -> None:
    client = await connect(env)
    await client.send_raw(b"\xff\xff" + os.urandom(510))  # pad length beyond the block
    [(corr, entity, resp)] = await client.read_replies()
    assert (corr, entity, resp) == (b"", b"", P.Err(BLOCK))
    await client.send_block(b"\x02\x00\x05abc")  # batch that lies about its content
    assert (await client.read_replies())[0][2] == P.Err(BLOCK)
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()
    await client.close()


async def write_raw(client: NtfClient, data: bytes) -> None:
    """Bytes outside the block framing, as a misbehaving app sends them."""
    client.writer.write(data)
    await client.writer.drain()


async def test_random_stream_and_truncated_blocks_do_not_affect_others(env: Env) -> None:
    bystander = await connect(env)
    noisy = await connect(env)
    replies = 0
    data = os.urandom(2 * 1024 * 1024)  # 4,096 random blocks (10 MiB took 10 s of CPU and proved no more)

    async def drain() -> None:
        """Until every block is answered (then at once, not after 5 s of silence), or the server hangs up."""
        nonlocal replies
        while replies < len(data) // NTF_BLOCK_SIZE:
            try:
                await noisy.stream.read_block(5)
            except (ConnectionClosed, TimeoutError):
                return
            replies += 1

    reader = asyncio.create_task(drain())
    for i in range(0, len(data), 64 * 1024):
        await write_raw(noisy, data[i : i + 64 * 1024])
        if i % (256 * 1024) == 0:  # the bystander is served all along
            assert (await bystander.request(b"", P.Ping()))[1] == P.Pong()
    await asyncio.wait_for(reader, 60)
    assert replies > 1000  # every random block got an answer (or a few), none crashed the server
    # part of a block, then silence: the server gives up after block_read_timeout_s and closes
    stalled = await connect(env)
    await write_raw(stalled, b"\x00\x05" + os.urandom(98))
    assert await stalled.closed_by_server(timeout_s=10)
    # part of a block, then EOF: a clean close, counted
    closed_before = env.server.stats["conn_closed"]
    truncated = await connect(env)
    await write_raw(truncated, b"\x00\x05" + os.urandom(98))
    await truncated.close()
    for _ in range(100):
        if env.server.stats["conn_closed"] > closed_before:
            break
        await asyncio.sleep(0.05)
    assert env.server.stats["conn_closed"] == closed_before + 1
    assert (await bystander.request(b"", P.Ping()))[1] == P.Pong()
    for c in (bystander, noisy, stalled):
        await c.close()


async def _raw_handshake(env: Env, hello: bytes) -> BlockStream:
    reader, writer, _ = await connect_pinned("127.0.0.1", env.port, ntf_client_context(), env.key_hash, timeout_s=5)
    stream = BlockStream(reader, writer, NTF_BLOCK_SIZE, read_timeout_s=5, write_timeout_s=5)
    NtfServerHello.decode(decode_block(await stream.read_block(), NTF_BLOCK_SIZE))
    await stream.write_block(pad(hello, NTF_BLOCK_SIZE))
    return stream


@pytest.mark.parametrize(
    "hello", [NtfClientHello(3, b"\x00" * 32).encode(), NtfClientHello(4, b"").encode(), b"\x00"],
    ids=["wrong-identity", "wrong-version", "garbage"],
)
async def test_bad_client_hello_closes_without_reply(env: Env, hello: bytes) -> None:
    if hello.startswith(b"\x00\x04"):
        hello = NtfClientHello(4, env.key_hash).encode()
    stream = await _raw_handshake(env, hello)
    with pytest.raises(ConnectionClosed):
        await stream.read_block(5)
    await stream.close()
    assert env.server.stats["conn_handshake_failed"] >= 1


async def test_client_pins_the_server_fingerprint(env: Env) -> None:
    with pytest.raises(ChainError):
        await NtfClient.connect("127.0.0.1", env.port, b"\x01" * 32)
    client = await connect(env)  # the server is unaffected
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()
    await client.close()


async def test_restart_keeps_every_token(env: Env) -> None:
    client = await connect(env)
    app = await active(env, client)
    sub = await app.subscribe(client, SMP, os.urandom(24), crypto.generate_ed25519())
    assert isinstance(sub, P.IdSub)
    await client.close()
    await env.restart()
    client = await connect(env)
    assert await app.token_command(client, P.TChk()) == ACTIVE
    assert (await client.request(sub.sub_id, P.SChk(), app.auth_key))[1] == P.Sub(P.SubStatus(P.SubStatusKind.NEW))
    await client.close()


async def test_connection_cap(env: Env) -> None:
    server = await env.reconfigure("server", max_connections=1)
    first = await connect(env)
    with pytest.raises((ConnectionClosed, ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
        await NtfClient.connect("127.0.0.1", env.port, env.key_hash, timeout_s=3)
    assert (await first.request(b"", P.Ping()))[1] == P.Pong()
    assert server.stats["conn_refused"] == 1
    await first.close()


async def test_null_provider_is_confirmed_without_a_push(env: Env) -> None:
    client = await connect(env)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_NULL, b"test_ntf_token"))
    assert isinstance(await app.register(client), P.IdTkn)
    await env.server.push.settle()  # type: ignore[union-attr]
    assert await app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus(P.TokenStatusKind.CONFIRMED))
    assert env.sim.all_pushes() == []
    assert env.server.stats["tkn_created"] == 0  # not counted, as in Haskell
    await client.close()


async def test_tokens_for_a_disabled_environment_are_prohibited(env: Env) -> None:
    """Issue 8 item 7: only AT (the simulator) is enabled, so AP/AD tokens could never be pushed to; the
    app is told at once (as the Haskell server tells it for AT when allowTestPushProvider is off)."""
    client = await connect(env)
    prohibited = P.Err(CmdError(CommandError.PROHIBITED))
    for provider in (P.PushProvider.APNS_PROD, P.PushProvider.APNS_DEV):
        app = SimApp(P.DeviceToken(provider, os.urandom(32).hex().encode()))
        assert await app.register(client) == prohibited
        assert await app.register(client) == prohibited  # a retry too: nothing was stored
    assert (await env.server.store.counts()).tokens == 0
    # auth is still checked first: a bad signature is AUTH, whatever the provider
    cmd = P.TNew(app.device_token, crypto.encode_public_key(crypto.public_of(app.auth_key)),
                 crypto.encode_public_key(app.dh_key.public_key()))
    assert (await client.request(b"", cmd, crypto.generate_ed25519()))[1] == P.Err(AUTH)
    # TRPL to a disabled environment: refused; the token keeps its device token and status
    app = await active(env, client)
    ap_token = P.DeviceToken(P.PushProvider.APNS_PROD, os.urandom(32).hex().encode())
    assert await app.token_command(client, P.TRpl(ap_token)) == prohibited
    assert await app.token_command(client, P.TChk()) == ACTIVE
    stored = await env.server.store.get_token(app.token_id)
    assert stored is not None and stored.device_token == app.device_token.token
    # AN keeps working
    null_token = P.DeviceToken(P.PushProvider.APNS_NULL, b"test_ntf_token")
    assert await app.token_command(client, P.TRpl(null_token)) == P.Ok()
    await env.server.push.settle()  # type: ignore[union-attr]
    assert env.server.stats["req_prohibited"] == 5
    assert env.server.stats["ntf_vrf_failed"] == 0  # no verification push was ever queued for AP/AD
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()
    await client.close()


async def test_idle_clients_are_disconnected(env: Env) -> None:
    await env.reconfigure("server", idle_timeout_s=0.5)
    busy, idle = await connect(env), await connect(env)
    for _ in range(4):  # a client that keeps talking is never idle
        assert (await busy.request(b"", P.Ping()))[1] == P.Pong()
        await asyncio.sleep(0.2)
    assert await idle.closed_by_server(timeout_s=5)
    await busy.close()


async def test_store_outage_is_answered_and_survived(
    env: Env, tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable: requests get ERR STORE at once (the store's health switch is down, so they do not
    each wait through retries), the NTF connection stays open, and once Redis is back the background probe
    finds it and everything works again, with nothing lost."""
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "redis-proxy.sock")
    await proxy.start()
    server = await env.reconfigure("redis", url=proxy.url)
    try:
        client = await connect(env)
        app = await active(env, client)
        await proxy.stop()
        for _ in range(3):
            assert await app.token_command(client, P.TChk()) == P.Err(StoreErr("database error"))
        assert not server.store.healthy
        assert server.stats["store_errors"] == 3
        answered = [r for r in caplog.records if r.name == "ntf_server.handlers"]
        assert len(answered) == 1  # one line for the outage, the repeats are summarised
        assert (await client.request(b"", P.Ping()))[1] == P.Pong()  # the connection is still served
        await proxy.start()
        async with asyncio.timeout(10):  # the background probe finds Redis again
            while True:
                if server.store.healthy:
                    break
                await asyncio.sleep(0.05)
        assert await app.token_command(client, P.TChk()) == ACTIVE
        await client.close()
    finally:
        await server.stop()  # while Redis is reachable: a stop that cannot store waits out its grace (10 s)
        await proxy.stop()


async def test_malformed_device_token_is_a_syntax_error(env: Env) -> None:
    """Issue 16.5: refused at parse (it used to be stored and fail its push), and the connection carries on."""
    client = await connect(env)
    bad = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, b"not hex!"))
    assert await bad.register(client) == P.Err(CmdError(CommandError.SYNTAX))
    assert (await env.server.store.counts()).tokens == 0
    await active(env, client)  # the next registration's push still goes out
    await client.close()


async def test_abandoned_tokens_expire(env: Env) -> None:
    server = await env.reconfigure("store", expire_tokens_after_days=30)
    client = await connect(env)
    app = await active(env, client)
    sub = await app.subscribe(client, SMP, os.urandom(24), crypto.generate_ed25519())
    assert isinstance(sub, P.IdSub)
    assert server.housekeeping is not None
    assert await server.housekeeping.expire_once(time.time() + 29 * 86400) == 0  # still in use
    assert await server.housekeeping.expire_once(time.time() + 32 * 86400) == 1
    assert server.stats["tkn_expired"] == 1
    assert await app.token_command(client, P.TChk()) == P.Err(AUTH)
    assert (await client.request(sub.sub_id, P.SChk(), app.auth_key))[1] == P.Err(AUTH)
    await client.close()
