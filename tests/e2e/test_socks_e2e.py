"""An SMP server reachable only by an .onion name, through the SOCKS5 stand-in, end to end: the app
subscribes through the NTF server, the subscription becomes ACTIVE and a message is pushed
(``[subscriber] socks_proxy``; spec §3.3 host selection)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest
from helpers.e2e_env import Env
from test_subscriber import Kind, connected_app, decrypt_items, status_becomes

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.sim.socks5 import ATYP_DOMAIN, REP_OK, Socks5StandIn


@pytest.fixture
async def smp() -> AsyncIterator[SmpServerStandIn]:
    async with SmpServerStandIn() as server:
        yield server


async def test_onion_only_smp_server_through_the_socks_proxy(env: Env, smp: SmpServerStandIn) -> None:
    onion = base64.b32encode(os.urandom(35)).decode().lower()[:56] + ".onion"
    address = SMPServer((onion,), str(smp.port), smp.key_hash)
    async with Socks5StandIn(names={onion: "127.0.0.1"}) as proxy:
        await env.reconfigure("subscriber", socks_proxy=f"127.0.0.1:{proxy.port}")
        client, app = await connected_app(env)
        key = crypto.generate_ed25519()
        creds, _ = smp.create_queue(crypto.public_of(key))
        resp = await app.subscribe(client, address, creds.notifier_id, key)
        assert isinstance(resp, P.IdSub)
        await status_becomes(client, app, resp.sub_id, Kind.ACTIVE)
        smp.notify(creds.notifier_id, b"via-tor", 1_700_000_001)
        push = await env.sim.next_push(app.device_token.token.decode(), timeout_s=10)
        assert decrypt_items(app, push.body, {creds.notifier_id: creds}) == [(address.to_uri(), b"via-tor")]
        assert [(r.host, r.atyp, r.reply) for r in proxy.requests] == [(onion, ATYP_DOMAIN, REP_OK)]
        await client.close()
        await env.server.stop()  # before the proxy closes under it
