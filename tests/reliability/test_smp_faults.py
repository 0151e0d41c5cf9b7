"""An SMP server that drops its connections again and again, or stalls, while messages keep arriving
(issue 16, reliability suite): every notification still reaches the device in some push (the SMP server
keeps what arrives while nobody is subscribed, the NTF server resubscribes and pushes it). Reconnect rates
against a server that breaks every connection are bounded in test_smp_hostile.py."""

from __future__ import annotations

import asyncio
import time

from helpers.e2e_env import Env, active_app
from watch import LogWatch

from ntf_server.protocol import crypto, ntf as P, smp as S
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn

DROPS = 4
STALL_S = 1.5
DELIVERY_TIMEOUT_S = 30.0  # the pool's backoff after repeated drops: 0.5, 1, 2, 4 s (jittered)


def msg_ids(app: SimApp, body: bytes, creds: QueueCredentials) -> set[bytes]:
    """The message ids a push carries, decrypted as the app's notification extension does (§5.7)."""
    out = set()
    for item in app.message_list(body):
        _, _, nonce, enc_meta = item.split(" ")
        out.add(S.decrypt_nmsg_meta(creds.rcv_ntf_dh_secret, b64u_decode(nonce), b64u_decode(enc_meta)).msg_id)
    return out


async def test_every_notification_arrives_through_drops_and_a_stall(
    env: Env, make_server: object, log_watch: LogWatch
) -> None:
    smp: SmpServerStandIn = await make_server()  # type: ignore[operator]
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    key = crypto.generate_ed25519()
    creds, _ = smp.create_queue(crypto.public_of(key))
    assert isinstance(await app.subscribe(client, smp.address, creds.notifier_id, key), P.IdSub)
    sent: list[bytes] = []

    def notify() -> None:
        sent.append(b"m%03d" % len(sent))
        smp.notify(creds.notifier_id, sent[-1], int(time.time()))

    await smp.wait_connections(1)
    for _ in range(DROPS):
        notify()
        smp.drop_connections()
        notify()  # nobody subscribed: the SMP server keeps it
        await smp.wait_connections(1, timeout_s=DELIVERY_TIMEOUT_S)
    smp.stall(True)
    notify()  # waits in the stalled server's outbox
    await asyncio.sleep(STALL_S)
    smp.stall(False)
    notify()

    seen: set[bytes] = set()
    device = app.device_token.token.decode()
    async with asyncio.timeout(DELIVERY_TIMEOUT_S):
        while not set(sent) <= seen:
            seen |= msg_ids(app, (await env.sim.next_push(device, timeout_s=DELIVERY_TIMEOUT_S)).body, creds)
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()
    await client.close()
    log_watch.assert_no_traceback()
