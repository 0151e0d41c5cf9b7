"""Our SMP service per SMP server (store/services.py): credentials created once and sealed, the service id,
and the count + IdsHash of the tied subscriptions kept with every tie, untie and deletion (issue 17)."""

from __future__ import annotations

import secrets
from dataclasses import replace

from helpers.store_helpers import notifier_key, server, token

from ntf_server.protocol import smp as S
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.records import SUB_ACTIVE, SUB_INACTIVE, TOKEN_ACTIVE, TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.transport.certs import new_service_credentials


async def active_token(store: RedisStore) -> TokenRecord:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    return t


async def test_credentials_are_made_once_and_sealed(store: RedisStore) -> None:
    made: list[ServiceCredentials] = []

    def make() -> ServiceCredentials:
        made.append(new_service_credentials())
        return made[-1]

    first = await store.service_credentials(server(1), make)
    again = await store.service_credentials(server(1), make)
    assert len(made) == 1 and first.chain == again.chain == made[0].chain and first.cert_hash == again.cert_hash
    other = await store.service_credentials(server(2), make)
    assert other.chain != first.chain
    raw = b"".join(v for v in (await store.client.hgetall(store.prefix + "svc:1")).values())
    assert first.chain[0] not in raw  # sealed at rest


async def test_ties_count_and_hash_follow_every_change(store: RedisStore) -> None:
    t = await active_token(store)
    nids = [secrets.token_bytes(24) for _ in range(5)]
    subs = []
    for nid in nids:
        _, sub = await store.create_subscription(t.token_id, server(1), nid, notifier_key())
        assert sub is not None
        subs.append(sub)
    state = await store.service_state(server(1))
    assert (state.service_id, state.count, state.ids_hash) == (None, 0, S.EMPTY_IDS_HASH)
    await store.set_service_id(server(1), b"svc-id")
    await store.set_subscription_statuses(server(1), nids, SUB_ACTIVE, service_assoc=True)
    await store.set_subscription_statuses(server(1), nids[:2], SUB_ACTIVE, service_assoc=True)  # no change
    state = await store.service_state(server(1))
    assert (state.service_id, state.count, state.ids_hash) == (b"svc-id", 5, S.queue_ids_hash(nids))
    await store.set_subscription_statuses(server(1), nids[:1], SUB_INACTIVE, service_assoc=False)  # untied
    await store.set_subscription_statuses(server(1), nids[1:2], SUB_INACTIVE)  # status only: still tied
    assert await store.delete_subscription(subs[2].sub_id) is not None  # a tied one deleted (SDEL)
    state = await store.service_state(server(1))
    assert (state.count, state.ids_hash) == (3, S.queue_ids_hash(nids[1:2] + nids[3:]))
    tied = [s.notifier_id async for page in store.tied_subscriptions(server(1)) for s in page]
    assert sorted(tied) == sorted(nids[1:2] + nids[3:])
    await store.delete_token(t.token_id)  # the cascade unties the rest
    state = await store.service_state(server(1))
    assert (state.count, state.ids_hash) == (0, S.EMPTY_IDS_HASH)
    await store.set_service_id(server(1), None)
    assert (await store.service_state(server(1))).service_id is None
