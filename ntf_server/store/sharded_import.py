"""`import-simplex` (and `move-store`) into a sharded data set: `ShardedImporter`, beside store/sharded.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.errors import StoreError
from ntf_server.store.importing import ImportedToken, ImportResult, StoreImporter, TokenImport
from ntf_server.store.keys import sub_r
from ntf_server.store.records import SubscriptionRecord, TokenRecord
from ntf_server.store.shards import shard_of

if TYPE_CHECKING:
    from ntf_server.store.redis import RedisStore


class ShardedImporter(StoreImporter):
    """Writes each token into its shard of a sharded data set (store/shards.py), with that shard's importer.
    An imported token keeps its id, so its shard is its id's, not its device token's: what each shard's script
    checks within the shard (a registration of the same device token and verify key under another id; a
    queue already another token's subscription) is first looked for in the other shards, and refused the same
    way when found there."""

    def __init__(self, shards: Sequence[StoreImporter], stores: Sequence[RedisStore]) -> None:
        self._parts = tuple(shards)
        self._stores = tuple(stores)

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
                if await self._registered_elsewhere(k, item.token):
                    out[i] = ImportResult(TokenImport.DUPLICATE)
                    continue
                taken = await self._queues_elsewhere(k, item.subscriptions)
                kept = [s for s in item.subscriptions if s.sub_id not in taken]
                todo.append((i, replace(item, subscriptions=kept), tuple(s for s in item.subscriptions
                                                                          if s.sub_id in taken)))
            if todo:
                for (i, _, refused), res in zip(todo, await part.write([t[1] for t in todo], now), strict=True):
                    out[i] = replace(res, refused_subscriptions=res.refused_subscriptions + refused) if refused \
                        else res
        return [r for r in out if r is not None]

    async def _registered_elsewhere(self, k: int, t: TokenRecord) -> bool:
        for j, store in enumerate(self._stores):
            if j != k and (found := await store.find_token(t.provider, t.device_token, t.verify_key)) is not None:
                return found.token_id != t.token_id
        return False

    async def _queues_elsewhere(self, k: int, subs: Sequence[SubscriptionRecord]) -> set[bytes]:
        """The (source) ids of those of ``subs`` whose queue is a subscription in another shard."""
        taken: set[bytes] = set()
        for j, store in enumerate(self._stores):
            if j == k or not subs:
                continue
            d = store.dataset
            numbers = [await store._servers.number(s.server.normalized(), create=False) for s in subs]
            asked = [(s, n) for s, n in zip(subs, numbers, strict=True) if n is not None]
            if not asked:
                continue
            async with d.pipeline() as pipe:
                for s, srv in asked:
                    r = sub_r(d.a, s.server.normalized(), s.notifier_id)
                    pipe.hexists(d.keys.sub_bucket(srv, r), r)
                found = await pipe.execute()
            taken |= {s.sub_id for (s, _), there in zip(asked, found, strict=True) if there}
        return taken
