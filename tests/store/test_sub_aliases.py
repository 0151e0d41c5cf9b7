"""Subscription ids of an imported server (store/sub_aliases.py): resolved to ours once an import wrote
them, untouched otherwise, and nothing looked up at all in a data set that never had an import."""

from __future__ import annotations

import secrets

from helpers.store_helpers import NOW, notifier_key, server, token

from ntf_server.store.importing import ImportedToken, StoreImporter, TokenImport
from ntf_server.store.records import SUB_ACTIVE, TOKEN_ACTIVE, SubscriptionRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.sub_aliases import SubIdAliases


async def test_an_imported_id_resolves_to_ours_and_other_ids_pass_through(
        store: RedisStore, redis_url: str) -> None:
    aliases = SubIdAliases(*store.datasets)
    await aliases.load()
    unknown = secrets.token_bytes(24)
    assert await aliases.resolve(unknown) == unknown and "off" in repr(aliases)  # no import: no lookup

    t = token(status=TOKEN_ACTIVE)
    old_id = secrets.token_bytes(24)
    sub = SubscriptionRecord(old_id, t.token_id, server(), secrets.token_bytes(24), notifier_key(), SUB_ACTIVE)
    importer = StoreImporter(store.dataset)
    [res] = await importer.write([ImportedToken(t, [sub], [], None)], NOW)
    assert res.outcome is TokenImport.WRITTEN and res.subscriptions_written == 1

    await aliases.load()
    ours = await aliases.resolve(old_id)
    assert ours != old_id and await aliases.resolve(unknown) == unknown
    found = await store.get_subscription(ours)
    assert found is not None and (found.token_id, found.notifier_id, found.status) == (t.token_id, sub.notifier_id,
                                                                                      SUB_ACTIVE)
    [again] = await importer.write([ImportedToken(t, [sub], [], None)], NOW)
    assert again.outcome is TokenImport.ALREADY_THERE
