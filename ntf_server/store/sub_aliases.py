"""Subscription ids kept from an imported server (`ntf-server import-simplex`).

Our subscription ids are derived from (SMP server, notifier id) (`keys.py`), a Haskell server's are 24
random bytes, and the apps keep theirs: after an import an app's `SCHK`/`SDEL` names the old id. The
importer records `old id -> our id` in one hash (`P sa`); the NTF handlers resolve the entity id of every
`SCHK`/`SDEL` through it before the lookup. To keep the time of an `ERR AUTH` independent of whether an id
exists (STYLE 4), every such request does the same single HGET, known or not. A data set that never had an
import has no `sa` key, which `load` notices once at start, and then nothing is looked up at all.

An alias whose subscription was deleted later stays (it resolves to an id that no longer exists, which is
answered `AUTH`, as for any deleted subscription); aliases cost ~100 bytes each.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from ntf_server.store.dataset import DataSet

ALIAS_KEY: Final = "sa"


class SubIdAliases:
    def __init__(self, dataset: DataSet, *more: DataSet) -> None:
        """`dataset`: the store's (`RedisStore.dataset`); this module keeps its own key. `more`: the other
        shards of a sharded data set (`RedisStore.datasets`), where the importer wrote their tokens' aliases:
        every lookup asks each shard (the same work whether an id is known or not)."""
        self._d = dataset
        self._all = (dataset, *more)
        self._key = dataset.keys.prefix + ALIAS_KEY
        self._enabled = True

    def __repr__(self) -> str:
        return f"<SubIdAliases {'on' if self._enabled else 'off (no import)'}>"

    async def load(self) -> None:
        """Turn lookups off for a data set with no imported subscriptions (decided once, at start: the
        importer runs while the server is stopped)."""
        self._enabled = any([bool(await d.call(d.r.exists, d.keys.prefix + ALIAS_KEY)) for d in self._all])

    async def resolve(self, sub_id: bytes) -> bytes:
        """Our id for an imported subscription's old id; any other id unchanged."""
        if not self._enabled or not sub_id:
            return sub_id
        if len(self._all) > 1:
            found = await asyncio.gather(*(d.call(d.r.hget, d.keys.prefix + ALIAS_KEY, sub_id) for d in self._all))
            return next((bytes(x) for x in found if x is not None), sub_id)
        ours: Any = await self._d.call(self._d.r.hget, self._key, sub_id)  # bytes replies (no decode_responses)
        return bytes(ours) if ours is not None else sub_id

