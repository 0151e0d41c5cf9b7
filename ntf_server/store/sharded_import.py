"""`import-simplex` (and `move-store`) into a sharded data set: `ShardedImporter`, beside store/sharded.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.errors import StoreError
from ntf_server.store.importing import ImportedToken, ImportResult, StoreImporter, TokenImport
from ntf_server.store.records import SubscriptionRecord
from ntf_server.store.shards import shard_of

if TYPE_CHECKING:
    from ntf_server.store.sharded import ShardedStore


class ShardedImporter(StoreImporter):
    """Writes each token into its shard of a sharded data set (store/shards.py), with that shard's importer.
    An imported token keeps its id, so its shard is its id's, not its device token's: what each shard's script
    checks within the shard (a registration of the same device token and verify key under another id; a
    queue already another token's subscription) is first looked for in the other shards, and refused the same
    way when found there."""

    def __init__(self, shards: Sequence[StoreImporter], store: ShardedStore) -> None:
        self._parts = tuple(shards)
        self._store = store

    def __repr__(self) -> str:
        return f"<ShardedImporter {len(self._parts)} shards>"

    async def server_number(self, server: SMPServer) -> int:
        raise StoreError("a sharded data set numbers servers per shard")

    async def write(self, items: Sequence[ImportedToken], now: float) -> list[ImportResult]:
        n = len(self._parts)
        groups: list[list[int]] = [[] for _ in range(n)]
        for i, item in enumerate(items):
            groups[shard_of(item.token.token_id, n)].append(i)
        out: list[ImportResult | None] = [None] * len(items)
        for k, (part, idx) in enumerate(zip(self._parts, groups, strict=True)):
            todo: list[tuple[int, ImportedToken, tuple[SubscriptionRecord, ...]]] = []
            for i in idx:
                item = items[i]
                if await self._store.registered_elsewhere(k, item.token):
                    out[i] = ImportResult(TokenImport.DUPLICATE)
                    continue
                elsewhere = await asyncio.gather(*(self._store.queue_elsewhere(k, s.server, s.notifier_id)
                                                   for s in item.subscriptions))
                kept = [s for s, j in zip(item.subscriptions, elsewhere, strict=True) if j is None]
                refused = tuple(s for s, j in zip(item.subscriptions, elsewhere, strict=True) if j is not None)
                todo.append((i, replace(item, subscriptions=kept), refused))
            if todo:
                for (i, _, refused), res in zip(todo, await part.write([t[1] for t in todo], now), strict=True):
                    out[i] = replace(res, refused_subscriptions=res.refused_subscriptions + refused) if refused \
                        else res
        return [r for r in out if r is not None]
