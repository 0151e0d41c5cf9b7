"""After `import-simplex`, the apps of the Haskell server carry on without registering again: over real TLS,
their TCHK/SCHK (with the ids the Haskell server gave them) answer what the Haskell database said, the
subscriber pool resubscribes the imported subscriptions on the SMP stand-in, a message reaches the device
encrypted with the imported DH secret together with the imported last notifications, and a repeat TNEW
finds the imported token (spec §4.3–4.7, §6.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from helpers.e2e_env import Env
from helpers.haskell_data import HaskellData, load, server_row
from helpers.pg_server import PgServer, load_schema, postgres  # noqa: F401  (postgres: the session fixture)

from ntf_server.importer.command import import_simplex
from ntf_server.importer.mapping import NtfRow, SubRow, TokenRow
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.error_types import AUTH
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.transport.certs import new_service_credentials

SCHEMA = "e2e_import"
TOKEN_STATUSES = ["NEW", "REGISTERED", "CONFIRMED", "ACTIVE", "INVALID", "INVALID,BAD", "INVALID,TOPIC",
                  "INVALID,EXPIRED", "INVALID,UNREGISTERED", "EXPIRED"]
RESUBSCRIBED = ["NEW", "PENDING", "ACTIVE", "INACTIVE"]
KEPT = ["END", "DELETED", "AUTH", "SERVICE", "ERR SMP error QUOTA"]  # not resubscribed (spec §4.6)


@pytest.fixture
async def smp() -> AsyncIterator[SmpServerStandIn]:
    server = SmpServerStandIn()
    await server.start()
    yield server
    await server.close()


@dataclass
class HaskellApp:
    app: SimApp
    status: str
    subs: dict[bytes, str]  # Haskell subscription id -> status
    notifier_ids: dict[bytes, bytes]  # Haskell subscription id -> notifier id


def haskell_app(d: HaskellData, status: str) -> SimApp:
    """An app registered with the Haskell server: its token row holds what the server agreed with it."""
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    server_dh = crypto.generate_x25519()
    app.token_id = os.urandom(24)
    app.dh_secret = crypto.dh(app.dh_key.public_key(), server_dh)
    d.tokens.append(TokenRow(app.token_id, "apns_test", app.device_token.token, status,
                             crypto.encode_public_key(crypto.public_of(app.auth_key)),
                             crypto.encode_private_key(server_dh), app.dh_secret, os.urandom(32), 0, None, None))
    return app


def build(smp: SmpServerStandIn) -> tuple[HaskellData, list[HaskellApp]]:
    d = HaskellData(servers=[server_row(1, smp.address)])
    apps = []
    for status in TOKEN_STATUSES:
        apps.append(HaskellApp(haskell_app(d, status), status, {}, {}))
    for h in (a for a in apps if a.status in ("ACTIVE", "INVALID,BAD")):  # SCHK is allowed for both
        for status in RESUBSCRIBED + KEPT:
            key = crypto.generate_ed25519()
            creds, _ = smp.create_queue(crypto.public_of(key))
            sid = os.urandom(24)
            d.subs.append(SubRow(sid, h.app.token_id, 1, creds.notifier_id, crypto.encode_private_key(key), status,
                                 False))
            h.subs[sid] = status
            h.notifier_ids[sid] = creds.notifier_id
    active = next(a for a in apps if a.status == "ACTIVE")
    earlier = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    for i, sid in enumerate(list(active.subs)[::3][:2]):  # the NEW and INACTIVE subscriptions had messages
        d.ntfs.append(NtfRow(active.app.token_id, sid, earlier + dt.timedelta(minutes=i), os.urandom(24),
                             os.urandom(144)))
    return d, apps


async def status_becomes(client: NtfClient, app: SimApp, sub_id: bytes, want: P.SubStatus) -> None:
    async with asyncio.timeout(15):
        while True:
            if (await client.request(sub_id, P.SChk(), app.auth_key))[1] == P.Sub(want):
                return
            await asyncio.sleep(0.05)


async def test_apps_carry_on_after_import(env: Env, smp: SmpServerStandIn, postgres: PgServer) -> None:  # noqa: F811
    data, apps = build(smp)
    load_schema(postgres.url, SCHEMA)
    load(postgres.url, data, SCHEMA)
    counts = await import_simplex(env.config, postgres.url, SCHEMA, dry_run=False, out=io.StringIO(), tty=False,
                                  hold_state_lock=False)
    assert (counts.tokens_written, counts.subs_written, counts.ntfs_written) == (10, 18, 2) and not counts.refused
    await env.restart()  # the server picks the import up at start: subscription ids, resubscription

    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    for h in apps:
        assert await h.app.token_command(client, P.TChk()) == P.Tkn(P.TokenStatus.from_text(h.status))
    for h in (a for a in apps if a.subs):
        for sid, status in h.subs.items():
            # Kept as imported: final statuses, and every subscription of a token that is not ACTIVE (it opens
            # no SMP connection until the token is verified again, issue 16).
            if status in KEPT or h.status != "ACTIVE":
                assert (await client.request(sid, P.SChk(), h.app.auth_key))[1] == P.Sub(P.SubStatus.from_text(status))
            else:  # the pool resubscribed it on the stand-in
                await status_becomes(client, h.app, sid, P.SubStatus(P.SubStatusKind.ACTIVE))

    # A message: the push is encrypted with the imported DH secret and carries the imported notifications.
    active = next(a for a in apps if a.status == "ACTIVE")
    sid = next(s for s, st in active.subs.items() if st == "ACTIVE")
    smp.notify(active.notifier_ids[sid], b"msg-1", 1_800_000_000)
    push = await env.sim.next_push(active.app.device_token.token.decode(), timeout_s=10)
    items = active.app.message_list(push.body)
    assert len(items) == 3 and items[-1].startswith(smp.address.to_uri() + "/")

    # A repeat TNEW with the same keys finds the imported token and the same DH agreement (spec §4.4).
    again = SimApp(active.app.device_token, active.app.auth_key, active.app.dh_key)
    resp = await again.register(client)
    assert isinstance(resp, P.IdTkn) and resp.token_id == active.app.token_id
    assert again.dh_secret == active.app.dh_secret

    # SDEL with the Haskell id deletes it; then it is unknown.
    assert (await client.request(sid, P.SDel(), active.app.auth_key))[1] == P.Ok()
    assert (await client.request(sid, P.SChk(), active.app.auth_key))[1] == P.Err(AUTH)
    await client.close()


async def test_an_imported_service_resubscribes_with_one_nsubs(env: Env, smp: SmpServerStandIn,
                                                               postgres: PgServer) -> None:  # noqa: F811
    """Issue 17: the Haskell server's service certificate, id and ties are carried; the SMP server knows the
    service, so the first start subscribes the tied queues with one NSUBS and no NSUB."""
    creds = new_service_credentials()
    haskell_sid = os.urandom(24)
    smp.services.register(creds.cert_hash, haskell_sid)
    chain = b"\x01" + len(creds.chain[0]).to_bytes(2, "big") + creds.chain[0]
    d = HaskellData(servers=[dataclasses.replace(server_row(1, smp.address, service_id=haskell_sid),
                                                 ntf_service_cert=chain,
                                                 ntf_service_priv_key=crypto.encode_private_key(creds.key))])
    app = haskell_app(d, "ACTIVE")
    queues = []
    for _ in range(3):
        key = crypto.generate_ed25519()
        q, _ = smp.create_queue(crypto.public_of(key))
        smp.core.queues[q.notifier_id].service_id = haskell_sid  # tied to the Haskell server's service
        d.subs.append(SubRow(os.urandom(24), app.token_id, 1, q.notifier_id, crypto.encode_private_key(key),
                             "ACTIVE", True))
        queues.append(q)
    load_schema(postgres.url, "e2e_service")
    load(postgres.url, d, "e2e_service")
    await import_simplex(env.config, postgres.url, "e2e_service", dry_run=False, out=io.StringIO(), tty=False,
                         hold_state_lock=False)
    server = await env.reconfigure("subscriber", use_service_credentials=True)
    async with asyncio.timeout(15):
        while server.stats["smp_service_subscribed"] < 1:  # noqa: ASYNC110 - counters are polled
            await asyncio.sleep(0.02)
    assert server.stats["smp_nsub_sent"] == 0 and server.stats["smp_service_drift"] == 0
    smp.notify(queues[0].notifier_id, b"after-import", 1_800_000_001)
    push = await env.sim.next_push(app.device_token.token.decode(), timeout_s=10)
    assert app.message_list(push.body)[-1].startswith(smp.address.to_uri() + "/")
