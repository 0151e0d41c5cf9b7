"""`ntf-server move-store`: this configuration's data set copied into another Redis, Valkey or Cluster, with
another key prefix or shard count (README "Cluster mode": from one Redis into a sharded cluster).

The copy is made with the import's writer (store/importing.py): each token with its subscriptions and last
notifications, atomically per token, into the shard it belongs to. Subscription ids depend on the target's
server numbers (store/keys.py), so each subscription's old id is kept as an alias of its new one (the `sa`
hash, store/sub_aliases.py), as `import-simplex` keeps the Haskell ids; aliases the source had (from an
earlier import) are carried over, pointing at the new ids. The push policy and our SMP service credentials
(with their ids) come over too. Not carried: hidden-push budgets (they start full), pending deferred pushes
(counted: their notifications are copied and go with the device's next push), the outbox (stop the server
cleanly first: it finishes what it sent), the census and active-token counts (made again), leases.

Like the import it holds the state directory's lock, so it refuses to run beside this configuration's server;
the source is only read. Running it again writes what is missing and leaves the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

from ntf_server.config import Config, redact_url
from ntf_server.importer.command import ImportFailed, config_redis
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.errors import StoreError
from ntf_server.store.moving import Moved, copy_data_set
from ntf_server.store.redis import RedisStore


@dataclass(frozen=True)
class Target:
    url: str
    prefix: str
    cluster: bool
    shards: int


async def move_store(config: Config, target: Target, *, out: TextIO, hold_state_lock: bool = True,
                     now: float | None = None) -> Moved:
    """Copy everything; ``out`` gets a line per page. ``hold_state_lock=False`` only for tests beside a server."""
    at = time.time() if now is None else now
    async with config_redis(config, hold_state_lock) as url:
        if url == target.url and (config.redis.key_prefix == target.prefix):
            raise ImportFailed("the target is the data set itself: give another URL or --to-prefix")
        master = load_or_create_store_key(config.store.key_file)
        source = await _connect(url, master, config.redis.key_prefix, config.redis.cluster, config.redis.shards)
        try:
            dest = await _connect(target.url, master, target.prefix, target.cluster, target.shards)
            try:
                return await copy_data_set(source, dest, at, out)
            except StoreError as e:
                raise ImportFailed(f"copying failed: {e} (what was written is complete per token; run the move "
                                   "again to finish)") from e
            finally:
                await dest.close()
        finally:
            await source.close()


async def _connect(url: str, master: bytes, prefix: str, cluster: bool, shards: int) -> RedisStore:
    try:
        return await RedisStore.connect(url, master, prefix=prefix, cluster=cluster, shards=shards)
    except StoreError as e:
        raise ImportFailed(f"cannot use Redis at {redact_url(url)}: {e}") from e


