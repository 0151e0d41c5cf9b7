"""SMP service certificates end to end (issue 17, ``[subscriber] use_service_credentials``): NSUBs tie the
queues to our service at the SMP stand-in; after a restart one NSUBS resubscribes them all; drift, dropped
ties and a refused certificate fall back to one NSUB per queue; nothing is lost on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from helpers.e2e_env import Env
from test_subscriber import connected_app, decrypt_items, status_becomes, subscribed

from ntf_server.protocol import ntf as P, smp as S
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.transport.certs import new_service_credentials

Kind = P.SubStatusKind
QUEUES = 3


@pytest.fixture
async def smp() -> AsyncIterator[SmpServerStandIn]:
    server = SmpServerStandIn()
    await server.start()
    yield server
    server.stall(False)
    await server.close()


async def with_services(env: Env) -> NtfServer:
    """(Re)start the NTF server with services on: the same Redis, so a restart for the SMP servers."""
    return await env.reconfigure("subscriber", use_service_credentials=True)


async def counter_at_least(env: Env, name: str, value: int, timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while env.server.stats[name] < value:  # noqa: ASYNC110 - counters are polled
            await asyncio.sleep(0.02)


async def tied_setup(env: Env, smp: SmpServerStandIn) -> tuple[NtfClient, SimApp, list[QueueCredentials], bytes]:
    # Our certificate for this SMP server, made now rather than at the first connection, so that the stand-in
    # can ask for it in TLS and check it is the one in the hello.
    ours = await env.server.store.service_credentials(smp.address, new_service_credentials)
    smp.trust_service_certs(ours.chain)
    await with_services(env)
    client, app = await connected_app(env)
    subs = [await subscribed(client, app, smp) for _ in range(QUEUES)]
    for sub_id, _ in subs:
        await status_becomes(client, app, sub_id, Kind.ACTIVE)
    creds = [c for _, c in subs]
    state = await env.server.store.service_state(smp.address)
    assert state.service_id is not None and state.count == QUEUES
    assert state.ids_hash == S.queue_ids_hash(c.notifier_id for c in creds)
    assert sorted(smp.tied_queues(state.service_id)) == sorted(c.notifier_id for c in creds)
    return client, app, creds, state.service_id


async def pushed(env: Env, smp: SmpServerStandIn, app: SimApp, creds: list[QueueCredentials], tag: bytes) -> None:
    known = {c.notifier_id: c for c in creds}
    for i, c in enumerate(creds):
        smp.notify(c.notifier_id, tag + b"%d" % i, 1_700_000_200 + i)
        push = await env.sim.next_push(app.device_token.token.decode(), timeout_s=10)
        assert decrypt_items(app, push.body, known)[-1] == (smp.address.to_uri(), tag + b"%d" % i)


async def test_one_nsubs_resubscribes_every_tied_queue(env: Env, smp: SmpServerStandIn) -> None:
    client, app, creds, _ = await tied_setup(env, smp)
    await with_services(env)  # a restart
    await counter_at_least(env, "smp_service_subscribed", 1)
    assert env.server.stats["smp_nsub_sent"] == 0  # no NSUB at all: the stand-in subscribed them for NSUBS
    assert all(smp.subscriber_of(c.notifier_id) is not None for c in creds)
    await pushed(env, smp, app, creds, b"after-restart-")
    await client.close()


@pytest.mark.parametrize("fault", ["drift", "dropped ties"])
async def test_drift_falls_back_to_one_nsub_per_queue(env: Env, smp: SmpServerStandIn, fault: str) -> None:
    client, app, creds, sid = await tied_setup(env, smp)
    if fault == "drift":
        smp.services.count_offset = 1  # the SMP server reports one queue more than we stored
    else:
        smp.drop_service_ties()  # the SMP server lost the ties: SOKS 0
    await with_services(env)
    await counter_at_least(env, "smp_service_drift", 1)
    await counter_at_least(env, "smp_nsub_sent", QUEUES)  # each tied queue subscribed (and tied) again
    async with asyncio.timeout(10):
        while sorted(smp.tied_queues(sid)) != sorted(c.notifier_id for c in creds):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await pushed(env, smp, app, creds, b"after-drift-")
    await client.close()


async def test_a_refused_certificate_drops_the_ties_and_subscribes_plainly(env: Env, smp: SmpServerStandIn) -> None:
    client, app, creds, _ = await tied_setup(env, smp)
    smp.services.refuse = True
    await with_services(env)
    await counter_at_least(env, "smp_service_refused", 1)
    await counter_at_least(env, "smp_sub_ok", QUEUES)
    state = await env.server.store.service_state(smp.address)
    assert (state.service_id, state.count, state.ids_hash) == (None, 0, S.EMPTY_IDS_HASH)
    assert all(smp.core.queues[c.notifier_id].service_id is None for c in creds)  # untied by plain NSUBs
    await pushed(env, smp, app, creds, b"plain-")
    await client.close()


async def test_a_deleted_tied_queue_is_untied_and_causes_no_drift(env: Env, smp: SmpServerStandIn) -> None:
    client, app, creds, _ = await tied_setup(env, smp)
    await with_services(env)  # NSUBS now holds them: the queue's DELD arrives for a queue not tracked one by one
    await counter_at_least(env, "smp_service_subscribed", 1)
    smp.delete_queue(creds[0].notifier_id)
    await counter_at_least(env, "smp_sub_deld", 1)
    state = await env.server.store.service_state(smp.address)
    assert (state.count, state.ids_hash) == (QUEUES - 1, S.queue_ids_hash(c.notifier_id for c in creds[1:]))
    await with_services(env)
    await counter_at_least(env, "smp_service_subscribed", 1)
    assert env.server.stats["smp_service_drift"] == 0 and env.server.stats["smp_nsub_sent"] == 0
    await pushed(env, smp, app, creds[1:], b"still-")
    await client.close()


async def test_a_count_left_off_by_a_crash_is_recounted_after_one_drift(env: Env, smp: SmpServerStandIn) -> None:
    client, app, creds, _ = await tied_setup(env, smp)
    store = env.server.store
    number = await store._servers.number(smp.address, create=False)  # as a crash between delete and untie
    await store.client.hincrby(f"{store.prefix}svc:{number}", "n", 1)
    await with_services(env)
    await counter_at_least(env, "smp_service_drift", 1)
    async with asyncio.timeout(10):
        while (await env.server.store.service_state(smp.address)).count != QUEUES:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await with_services(env)  # recounted: no drift this time
    await counter_at_least(env, "smp_service_subscribed", 1)
    assert env.server.stats["smp_service_drift"] == 0
    await pushed(env, smp, app, creds, b"recounted-")
    await client.close()


async def test_a_late_nsubs_answer_falls_back_and_loses_nothing(env: Env, smp: SmpServerStandIn) -> None:
    client, app, creds, _ = await tied_setup(env, smp)
    smp.answer_delay_s = 2.5  # > the response timeout + a tick: NSUBS times out
    await env.reconfigure("subscriber", use_service_credentials=True, response_timeout_s=1.0)
    await counter_at_least(env, "smp_service_failed", 1)
    await counter_at_least(env, "smp_nsub_sent", QUEUES)  # the tied queues one by one
    await counter_at_least(env, "smp_sub_ok", QUEUES)
    await pushed(env, smp, app, creds, b"late-nsubs-")
    await client.close()
