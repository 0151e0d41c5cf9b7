"""Periodic pushes (push/cron.py) with two instances on one data set, against the real Redis: the decision is
a claim (store/budget.py CRON), so each periodic push is sent once while both live, also in parity mode
(no budget records it), and one whose sender died between its decision and ``cron_done`` is sent again by
the other after the claim's lease, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from helpers.store_helpers import NOW, notifier_key, server, token

from ntf_server.observability.stats import Stats
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.cron import CronPushes
from ntf_server.push.model import Push
from ntf_server.push.policy import PolicySettings
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import TokenRecord
from ntf_server.store.redis import RedisStore

INTERVAL_MIN = 20
LEASE_S = 30.0


async def cron_token(store: RedisStore) -> TokenRecord:
    t = token()
    await store.create_token(t)
    await store.activate_token(t.token_id)
    await store.create_subscription(t.token_id, server(1), t.token_id, notifier_key())
    assert await store.set_cron_interval(t.token_id, INTERVAL_MIN, NOW - 60 * INTERVAL_MIN)
    return t


def instance(store: RedisStore, sent: list[str], name: str, clock: Callable[[], float],
             policy: dict[str, float]) -> CronPushes:
    hidden = HiddenPushes(PolicyStore(store.dataset), PolicySettings.from_json(policy),
                          store.budgets(), clock=clock)

    async def submit(push: Push) -> None:
        sent.append(name)
        await asyncio.sleep(0.05)  # APNs answers: the other instance scans meanwhile

    return CronPushes(hidden, store, submit, Stats(), lease_s=LEASE_S)


async def test_two_instances_send_each_periodic_push_once(store: RedisStore, second_store: RedisStore) -> None:
    for policy in ({"hidden_per_hour": 0}, {"hidden_per_hour": 3}):  # parity, and a budget
        await cron_token(store)
        sent: list[str] = []
        a = instance(store, sent, "a", lambda: NOW, policy)
        b = instance(second_store, sent, "b", lambda: NOW, policy)
        await asyncio.gather(a.run_once(), b.run_once())
        assert len(sent) == 1, (policy, sent)
        await asyncio.gather(a.run_once(), b.run_once())  # and not again until the next interval
        assert len(sent) == 1, (policy, sent)
        await store.client.delete(*[k async for k in store.client.scan_iter(store.prefix + "*")])


async def test_a_periodic_push_whose_sender_died_is_sent_again_after_the_lease(
        store: RedisStore, second_store: RedisStore) -> None:
    tok = await cron_token(store)
    now = [NOW]
    sent: list[str] = []
    policy = {"hidden_per_hour": 3}
    hidden = HiddenPushes(PolicyStore(store.dataset), PolicySettings.from_json(policy),
                          store.budgets(), clock=lambda: now[0])

    async def dies(push: Push) -> None:  # decided and claimed, then killed before it confirmed anything
        sent.append("a")
        raise asyncio.CancelledError

    a = CronPushes(hidden, store, dies, Stats(), lease_s=LEASE_S)
    b = instance(second_store, sent, "b", lambda: now[0], policy)
    try:
        await a.run_once()
    except asyncio.CancelledError:
        pass
    assert await b.run_once() == 1 and sent == ["a"]  # claimed by the dead one: not yet
    now[0] += LEASE_S + 1
    # the lease ran out (PX: Redis's clock)
    await store.client.delete(store.shard(tok.token_id).prefix + f"t{{{tok.token_id.hex()}}}:crc")
    await b.run_once()
    assert sent == ["a", "b"]  # sent again: never lost (the dead one's may have reached APNs: at least once)
    await b.run_once()
    assert sent == ["a", "b"]  # and then done
