"""`ntf-server import-simplex`: the Haskell database in, our store out (README "Migrating from the
Haskell ntf-server").

The import writes into the store of the configuration directory given, the same Redis (embedded or not)
with the same store key and prefix `start` uses. It holds the state directory's lock while writing, so it
refuses to run beside this configuration's server: subscriptions are resubscribed when the server starts
(and imported subscription ids are picked up then), so the order is stop, import, start.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import TextIO

from ntf_server.config import Config, redact_url
from ntf_server.importer.progress import Progress
from ntf_server.importer.reader import HaskellDb
from ntf_server.importer.writer import Counts, Importer
from ntf_server.statelock import StateLock
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.errors import StoreError
from ntf_server.store.redis import RedisStore
from ntf_server.store.services import carry_service


class ImportFailed(Exception):
    """The import could not run or stopped; the message says why (tokens written so far stay written)."""


async def import_simplex(config: Config, database: str, schema: str, *, dry_run: bool, out: TextIO,
                         tty: bool | None = None, hold_state_lock: bool = True, now: float | None = None) -> Counts:
    """Import everything; `out` gets the progress. `hold_state_lock=False` only for tests that import
    beside a running in-process server."""
    at = time.time() if now is None else now
    with HaskellDb.open(database, schema) as db:
        total = db.counts()["tokens"]
        print(f"Haskell database: {total} tokens in schema {schema!r}" + (" (dry run)" if dry_run else ""), file=out)
        progress = Progress(total, out, tty=tty)
        if dry_run:
            return await Importer(db, None, progress, at).run()
        async with config_redis(config, hold_state_lock) as url:
            return await _write(config, url, db, progress, at)


@asynccontextmanager
async def config_redis(config: Config, hold_state_lock: bool) -> AsyncIterator[str]:
    """The URL of the configuration's Redis (its embedded one started, and stopped after), the state
    directory's lock held meanwhile unless ``hold_state_lock`` is False (tests beside a running server)."""
    with ExitStack() as locks:
        if hold_state_lock:
            locks.enter_context(StateLock(config.server.state_dir))
        url = config.redis_url().strip()
        if url:
            yield url
            return
        embedded = EmbeddedRedis(config.server.state_dir / "redis")
        try:
            yield await embedded.start()
        finally:
            await embedded.stop()


async def _write(config: Config, url: str, db: HaskellDb, progress: Progress, now: float) -> Counts:
    master = load_or_create_store_key(config.store.key_file)
    try:
        # Checks the data set's store key and bucket count, as `start` does, before anything is written.
        store = await RedisStore.connect(url, master, prefix=config.redis.key_prefix, cluster=config.redis.cluster,
                                         shards=config.redis.shards)
    except StoreError as e:
        raise ImportFailed(f"cannot use Redis at {redact_url(url)}: {e}") from e
    try:
        target = store.importer()
        importer = Importer(db, target, progress, now)
        counts = await importer.run()
        for server, (creds, service_id) in importer.services.items():
            await carry_service(store, server, creds, service_id)
        return counts
    except StoreError as e:
        raise ImportFailed(f"writing to Redis failed: {e} (what was written is complete per token; "
                           "run the import again to finish)") from e
    finally:
        await store.close()
