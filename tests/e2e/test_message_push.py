"""Message pushes in SimpleX parity mode (spec §5.5 item 2, §5.7), from stored NMSGs to the app.

The subscriber pool that will feed them is not there yet: the test stores the NMSGs of one SMP block
through the store and hands the results to the push service exactly as the pool will, then checks what
reaches the strict APNs simulator and what the app decrypts from it.
"""

from __future__ import annotations

import os

import pytest
from helpers.e2e_env import Env, active_app

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.push.payload import ALERT_CATEGORY, MAX_BODY
from ntf_server.sim.device import NtfClient
from ntf_server.store.records import Notice

SMP = SMPServer(("smp1.example.com", "smp1abcdefghijklmnop.onion"), "5223", b"\x07" * 32)


@pytest.mark.parametrize("messages", [1, 8])
async def test_every_nmsg_is_one_alert_carrying_the_newest_six(env: Env, messages: int) -> None:
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nids = [os.urandom(24) for _ in range(messages)]
    for nid in nids:
        assert isinstance(await app.subscribe(client, SMP, nid, crypto.generate_ed25519()), P.IdSub)
    block = [Notice(SMP, nid, 1_700_000_000_000 + i * 1000, os.urandom(24), os.urandom(144))
             for i, nid in enumerate(nids)]
    pipeline = env.server.push
    assert pipeline is not None
    await pipeline.accept(SMP, block)
    await pipeline.settle()
    device = app.device_token.token.decode()
    lists = []
    for _ in range(messages):
        push = await env.sim.next_push(device)
        assert push.push_type == "alert" and len(push.body) <= MAX_BODY
        assert push.json()["aps"] == {"mutable-content": 1, "alert": "Encrypted message or another app event",
                                      "category": ALERT_CATEGORY}
        lists.append(app.message_list(push.body))
    # the newest six, oldest first, the current one last; pushes of one token sent concurrently may leave in
    # any order (the policy reads Redis before each push; APNs does not keep the order either, apns.md A.6)
    expected = [[f"{SMP.to_uri()}/{b64u_encode(n.notifier_id)} {n.received_at_ms // 1000} "
                 f"{b64u_encode(n.nonce)} {b64u_encode(n.enc_meta)}" for n in block[max(0, i - 5): i + 1]]
                for i in range(messages)]
    assert sorted(lists) == sorted(expected)
    assert env.server.stats["ntf_delivered"] == messages
    await client.close()


async def test_a_dead_device_token_becomes_invalid(env: Env) -> None:
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nid = os.urandom(24)
    await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    env.sim.unregister(app.device_token.token.decode())
    assert env.server.push is not None
    await env.server.push.accept(SMP, [Notice(SMP, nid, 1_700_000_000_000, os.urandom(24), os.urandom(144))])
    await env.server.push.settle()
    status = await app.token_command(client, P.TChk())
    assert status == P.Tkn(P.TokenStatus(P.TokenStatusKind.INVALID, P.InvalidReason.UNREGISTERED))
    assert env.server.stats["ntf_failed"] == 1 and env.server.stats["ntf_invalid_tkn"] == 1
    await client.close()


async def test_a_slow_apns_does_not_serialise_message_pushes(env: Env) -> None:
    """APNs answers in milliseconds and takes 1000 streams a connection: message pushes are sent many at a
    time, so one slow answer does not hold back the rest (4 at a time capped a 2-core machine at ~550
    pushes/s, tests/bench/nmsg_pipeline.py). Here APNs takes the requests and answers none for a while."""
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nid = os.urandom(24)
    await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    assert env.server.push is not None
    env.sim.faults.response_delay_s = 3.0
    try:
        await env.server.push.accept(SMP, [Notice(SMP, nid, 1_700_000_000_000 + i, os.urandom(24), os.urandom(144))
                                           for i in range(40)])
        device = app.device_token.token.decode()
        for _ in range(40):  # all requests reach APNs while none is answered yet
            await env.sim.next_push(device, timeout_s=2.0)
    finally:
        env.sim.faults.response_delay_s = 0.0
    await env.server.push.settle()
    assert env.server.stats["ntf_delivered"] == 40
    await client.close()
