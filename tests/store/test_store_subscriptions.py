"""Subscriptions: SNEW semantics (spec §4.4), lookups, bulk status (spec §4.6), paging one SMP server,
last notifications (spec §5.7), counts."""

from __future__ import annotations

import secrets
from dataclasses import replace

from helpers.store_helpers import (
    Outcome,
    add_notice,
    add_notices,
    check_invariants,
    find_subscription,
    notifier_key,
    server,
    token,
)
from helpers.valkey_cluster import CLUSTER, SHARDS

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import StoreCounts, SubCreate
from ntf_server.store.codec import DUMMY_SUB_ID, DUMMY_TOKEN_ID
from ntf_server.store.records import (
    RESUBSCRIBE_KINDS,
    SUB_ACTIVE,
    SUB_INACTIVE,
    SUB_NEW,
    SUB_PENDING,
    TOKEN_ACTIVE,
    Notice,
    SubStatus,
    SubStatusKind,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)
from ntf_server.store.redis import RedisStore


async def active_token(store: RedisStore) -> TokenRecord:
    t = replace(token(), status=TOKEN_ACTIVE)
    await store.create_token(t)
    return t


async def test_create_and_lookups(store: RedisStore) -> None:
    t = await active_token(store)
    key = notifier_key()
    outcome, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, key)
    assert outcome is SubCreate.CREATED and sub is not None
    assert (sub.token_id, sub.server, sub.notifier_id, sub.notifier_key, sub.status, sub.service_assoc) == (
        t.token_id, server(1), b"N" * 24, key, SUB_NEW, False,
    )  # fmt: skip
    assert len(sub.sub_id) == 24
    assert await store.get_subscription(sub.sub_id) == sub
    assert await find_subscription(store, server(1), b"N" * 24) == sub
    assert await find_subscription(store, server(2), b"N" * 24) is None
    assert await find_subscription(store, server(1), b"M" * 24) is None
    assert await store.get_subscription(secrets.token_bytes(24)) is None  # random id: nothing
    assert await store.counts() == StoreCounts(1, 1, 0, 1)


async def test_verification_lookups(store: RedisStore, redis_url: str, store_key: bytes) -> None:
    """The one-round-trip lookups of request verification (spec §4.3) find what the plain lookups find,
    and the stand-in records they read for unknown ids are never returned, counted or paged (issue 8)."""
    # an empty store: the fixed stand-ins written at connect
    assert await store.get_token(secrets.token_bytes(24)) is None
    assert await store.subscription_and_token(secrets.token_bytes(24)) == (None, None)
    assert await store.token_and_subscription(secrets.token_bytes(24), server(1), b"N" * 24) == (None, None)
    t = await active_token(store)
    _, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    assert sub is not None
    assert await store.subscription_and_token(sub.sub_id) == (sub, t)
    assert await store.token_and_subscription(t.token_id, server(1), b"N" * 24) == (t, sub)
    assert await store.token_and_subscription(t.token_id, server(1), b"M" * 24) == (t, None)
    assert await store.token_and_subscription(t.token_id, server(2), b"N" * 24) == (t, None)  # unknown server
    other = secrets.token_bytes(24)
    assert await store.token_and_subscription(other, server(1), b"N" * 24) == (None, sub)
    for unknown in (secrets.token_bytes(24), DUMMY_SUB_ID, b"short"):  # a malformed id is an unknown one
        assert await store.subscription_and_token(unknown) == (None, None)
    assert await store.get_token(DUMMY_TOKEN_ID) is None
    assert await store.token_and_subscription(DUMMY_TOKEN_ID, server(1), b"M" * 24) == (None, None)
    assert await store.counts() == StoreCounts(1, 1, 0, 1)
    assert await store.servers_with_subscriptions() == [server(1)]
    await check_invariants(store, redis_url)
    # a fresh process (empty server cache) finds the same through the registry
    again = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, cluster=CLUSTER, shards=SHARDS)
    try:
        assert await again.subscription_and_token(sub.sub_id) == (sub, t)
    finally:
        await again.close()


async def test_repeat_snew_semantics(store: RedisStore) -> None:
    t, other = await active_token(store), await active_token(store)
    key = notifier_key()
    _, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, key)
    assert await store.create_subscription(t.token_id, server(1), b"N" * 24, key) == (SubCreate.EXISTS, sub)
    assert await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key()) == (
        SubCreate.CONFLICT,
        None,
    )
    assert await store.create_subscription(other.token_id, server(1), b"N" * 24, key) == (SubCreate.CONFLICT, None)
    assert await store.create_subscription(b"\x00" * 24, server(1), b"Q" * 24, key) == (SubCreate.NO_TOKEN, None)
    assert (await store.counts()).subscriptions == 1


async def test_same_notifier_id_on_two_servers_are_two_subscriptions(store: RedisStore) -> None:
    t = await active_token(store)
    _, a = await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    _, b = await store.create_subscription(t.token_id, server(2), b"N" * 24, notifier_key())
    assert a is not None and b is not None and a.sub_id != b.sub_id
    assert sorted(map(repr, await store.servers_with_subscriptions())) == sorted([repr(server(1)), repr(server(2))])


async def test_preset_host_is_normalized(store: RedisStore) -> None:
    t = await active_token(store)
    single = SMPServer(("smp4.simplex.im",), "", b"k" * 32)
    _, sub = await store.create_subscription(t.token_id, single, b"N" * 24, notifier_key())
    assert sub is not None and len(sub.server.hosts) == 2
    assert await find_subscription(store, single.normalized(), b"N" * 24) == sub


async def test_delete_subscription_removes_its_last_notification(store: RedisStore, redis_url: str) -> None:
    t = await active_token(store)
    _, sub = await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    assert sub is not None
    await add_notice(store, server(1), b"N" * 24, 1000, b"n" * 24, b"m" * 144)
    assert await store.delete_subscription(sub.sub_id) == sub
    assert await store.delete_subscription(sub.sub_id) is None
    assert await store.get_subscription(sub.sub_id) is None
    assert await store.counts() == StoreCounts(1, 0, 0, 0)
    await check_invariants(store, redis_url)


async def test_bulk_status_updates(store: RedisStore) -> None:
    t = await active_token(store)
    nids = [secrets.token_bytes(24) for _ in range(30)]
    for nid in nids:
        await store.create_subscription(t.token_id, server(1), nid, notifier_key())
    assert await store.set_subscription_statuses(server(1), nids[:20], SUB_PENDING) == 20
    # only PENDING ones become ACTIVE (a stale NSUB reply must not revive others)
    assert (
        await store.set_subscription_statuses(
            server(1), nids, SUB_ACTIVE, service_assoc=True, only_from={SubStatusKind.PENDING}
        )
        == 20
    )
    err = SubStatus.error("SMP error QUOTA")
    assert await store.set_subscription_statuses(server(1), [nids[25], b"unknown"], err) == 1
    assert await store.set_subscription_statuses(server(9), nids, SUB_INACTIVE) == 0
    got = {nid: await find_subscription(store, server(1), nid) for nid in nids}
    assert all(got[n].status == SUB_ACTIVE and got[n].service_assoc for n in nids[:20])  # type: ignore[union-attr]
    assert got[nids[25]].status == err and not got[nids[25]].service_assoc  # type: ignore[union-attr]
    assert got[nids[21]].status == SUB_NEW  # type: ignore[union-attr]
    # key and notifier id survive status rewrites
    assert got[nids[0]].notifier_id == nids[0]  # type: ignore[union-attr]


async def test_paging_one_server_sees_every_subscription_once(store: RedisStore) -> None:
    tokens = [await active_token(store) for _ in range(7)]
    expected: dict[bytes, bytes] = {}
    for i in range(1500):
        nid = secrets.token_bytes(24)
        _, sub = await store.create_subscription(tokens[i % 7].token_id, server(1 + i % 3), nid, notifier_key())
        assert sub is not None
        if i % 3 == 0:
            expected[sub.sub_id] = nid
    ended = list(expected.values())[:100]
    await store.set_subscription_statuses(server(1), ended, SubStatus(SubStatusKind.END))
    seen: list[bytes] = []
    sizes: list[int] = []
    async for page in store.iter_server_subscriptions(server(1), page_size=100):
        sizes.append(len(page))
        for sub in page:
            assert sub.server == server(1) and expected[sub.sub_id] == sub.notifier_id
            seen.append(sub.sub_id)
    assert sorted(seen) == sorted(expected)
    assert sizes == [100] * 5  # exact pages (500 subscriptions)
    live = [s.sub_id async for page in store.iter_server_subscriptions(server(1), 900, RESUBSCRIBE_KINDS) for s in page]
    assert len(live) == len(expected) - 100
    assert [p async for p in store.iter_server_subscriptions(server(42))] == []


async def test_only_active_tokens_subscriptions_need_a_link(store: RedisStore) -> None:
    """Issue 16: resubscription pages only ACTIVE tokens' live subscriptions; a server is needed while one
    is left; a token's subscriptions are found for its activation."""
    active = await active_token(store)
    invalid = replace(token(), status=TokenStatus(TokenStatusKind.INVALID))
    await store.create_token(invalid)
    nids = [secrets.token_bytes(24) for _ in range(4)]
    for i, nid in enumerate(nids):
        await store.create_subscription((active if i < 2 else invalid).token_id, server(1), nid, notifier_key())
    await store.create_subscription(invalid.token_id, server(2), secrets.token_bytes(24), notifier_key())
    paged = [s.notifier_id async for page in store.iter_server_subscriptions(server(1), 900, RESUBSCRIBE_KINDS,
                                                                             active_tokens_only=True) for s in page]
    assert sorted(paged) == sorted(nids[:2])
    # what resubscription pages: the same queues, with their stored keys, without ids or records
    records = {s.notifier_id: s async for page in store.iter_server_subscriptions(
        server(1), 900, RESUBSCRIBE_KINDS, active_tokens_only=True) for s in page}
    queues = [q async for page in store.iter_server_queues(server(1)) for q in page]
    assert sorted(q.notifier_id for q in queues) == sorted(nids[:2])
    assert all(q.notifier_key == records[q.notifier_id].notifier_key and q.token_id == active.token_id
               and q.service_assoc is False for q in queues)
    assert await store.has_live_subscriptions(server(1)) is True
    assert await store.has_live_subscriptions(server(2)) is False  # only an INVALID token's
    assert await store.has_live_subscriptions(server(42)) is False  # none at all
    await store.set_subscription_statuses(server(1), nids[:2], SubStatus(SubStatusKind.AUTH))
    assert await store.has_live_subscriptions(server(1)) is False  # no live status left
    mine = await store.token_subscriptions(invalid.token_id)
    assert len(mine) == 3 and {s.notifier_id for s in mine if s.server == server(1)} == set(nids[2:])
    assert [s.server for s in mine].count(server(2)) == 1 and all(s.token_id == invalid.token_id for s in mine)
    assert await store.token_subscriptions(secrets.token_bytes(24)) == []


async def test_last_notifications_newest_six_oldest_first(store: RedisStore, redis_url: str) -> None:
    t = await active_token(store)
    nids = [bytes([i]) * 24 for i in range(8)]
    for i, nid in enumerate(nids):
        await store.create_subscription(t.token_id, server(1 + i % 2), nid, notifier_key())
    for i, nid in enumerate(nids):
        outcome, tok, ntfs = await add_notice(store,
            server(1 + i % 2), nid, 1_700_000_000_000 + i * 1000, bytes([i]) * 24, b"meta%d" % i
        )
        assert outcome is Outcome.STORED and tok == t
    assert [n.notifier_id for n in ntfs] == nids[2:]
    assert [n.received_at for n in ntfs] == [1_700_000_000 + i for i in range(2, 8)]
    assert ntfs[-1].nonce == bytes([7]) * 24 and ntfs[-1].enc_meta == b"meta7"
    assert ntfs[-1].server == server(2)
    # a newer notification of the same subscription replaces its older one
    _, _, again = await add_notice(store, server(1), nids[2], 1_700_000_100_000, b"z" * 24, b"new")
    assert [n.notifier_id for n in again] == [*nids[3:], nids[2]]
    assert again[-1].enc_meta == b"new"
    assert (await store.counts()).last_notifications == 6
    await check_invariants(store, redis_url)


async def test_notifications_for_unknown_or_inactive(store: RedisStore) -> None:
    t = replace(token())  # REGISTERED
    await store.create_token(t)
    await store.create_subscription(t.token_id, server(1), b"N" * 24, notifier_key())
    assert (await add_notice(store, server(1), b"N" * 24, 1, b"n" * 24, b"m"))[0] is (
        Outcome.TOKEN_NOT_ACTIVE
    )
    assert (await add_notice(store, server(1), b"X" * 24, 1, b"n" * 24, b"m"))[0] is (
        Outcome.NO_SUBSCRIPTION
    )
    assert (await add_notice(store, server(7), b"N" * 24, 1, b"n" * 24, b"m"))[0] is (
        Outcome.NO_SUBSCRIPTION
    )
    assert (await store.counts()).last_notifications == 0


async def test_a_second_store_instance_sees_the_same_data(store: RedisStore, redis_url: str, store_key: bytes) -> None:
    """Server numbers are cached per process; another process (scale-out) must agree on them."""
    t = await active_token(store)
    _, sub = await store.create_subscription(t.token_id, server(5), b"N" * 24, notifier_key())
    other = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, buckets=store.buckets,
                                 cluster=CLUSTER, shards=SHARDS)
    try:
        assert await other.get_subscription(sub.sub_id) == sub  # type: ignore[union-attr]
        assert await find_subscription(other, server(5), b"N" * 24) == sub
    finally:
        await other.close()


async def test_one_block_of_notifications_is_stored_in_order_each_answered_as_alone(
    store: RedisStore, redis_url: str
) -> None:
    """The NMSGs of one SMP block (issue 9): stored in order, each answered as it would be alone."""
    t = await active_token(store)
    inactive = token()  # REGISTERED
    await store.create_token(inactive)
    await store.create_subscription(t.token_id, server(1), b"A" * 24, notifier_key())
    await store.create_subscription(t.token_id, server(2), b"B" * 24, notifier_key())
    await store.create_subscription(inactive.token_id, server(1), b"C" * 24, notifier_key())
    block = [
        Notice(server(1), b"A" * 24, 1_700_000_000_000, b"1" * 24, b"m1"),
        Notice(server(1), b"X" * 24, 1_700_000_000_500, b"2" * 24, b"m2"),  # unknown queue
        Notice(server(1), b"C" * 24, 1_700_000_000_600, b"3" * 24, b"m3"),  # token not active
        Notice(server(9), b"A" * 24, 1_700_000_000_700, b"4" * 24, b"m4"),  # unknown server
        Notice(server(2), b"B" * 24, 1_700_000_001_000, b"5" * 24, b"m5"),
    ]
    results = await add_notices(store, block)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.NO_SUBSCRIPTION,
                                            Outcome.TOKEN_NOT_ACTIVE, Outcome.NO_SUBSCRIPTION,
                                            Outcome.STORED]
    assert results[0].token == t and results[4].token == t
    assert [n.enc_meta for n in results[0].notifications] == [b"m1"]
    assert [n.enc_meta for n in results[4].notifications] == [b"m1", b"m5"]  # the later one sees the earlier
    assert all(r.token is None and r.notifications == [] for r in results[1:4])
    assert await add_notices(store, []) == []
    await check_invariants(store, redis_url)
