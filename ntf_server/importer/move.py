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
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

from ntf_server.config import Config, redact_url
from ntf_server.importer.command import ImportFailed, carry_service
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.statelock import StateLock
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.codec import decode_ln
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.errors import StoreError
from ntf_server.store.importing import ImportedNotification, ImportedToken, TokenImport
from ntf_server.store.keys import parse_sub_id
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore
from ntf_server.store.sub_aliases import ALIAS_KEY, SubIdAliases

PAGE = 200  # tokens read and written per round trip


@dataclass(frozen=True)
class Target:
    url: str
    prefix: str
    cluster: bool
    shards: int


@dataclass
class Moved:
    tokens: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # TokenImport value -> tokens
    subs: int = 0
    subs_written: int = 0
    ntfs_written: int = 0
    aliases: int = 0
    services: int = 0
    policy: bool = False
    deferred_dropped: int = 0

    def report(self) -> list[str]:
        out = [f"tokens: {self.tokens} read"]
        out += [f"  {n} {what}" for what, n in sorted(self.outcomes.items())]
        out.append(f"subscriptions: {self.subs} read, {self.subs_written} written")
        out.append(f"last notifications written: {self.ntfs_written}")
        out.append(f"aliases carried from an earlier import: {self.aliases}")
        out.append(f"SMP service credentials carried: {self.services}; push policy: "
                   f"{'carried' if self.policy else 'none stored'}")
        if self.deferred_dropped:
            out.append(f"pending deferred pushes not carried: {self.deferred_dropped} (their notifications were)")
        return out


class _NoCredentials(Exception):
    pass


def _none() -> ServiceCredentials:
    raise _NoCredentials


async def move_store(config: Config, target: Target, *, out: TextIO, hold_state_lock: bool = True,
                     now: float | None = None) -> Moved:
    """Copy everything; ``out`` gets a line per page. ``hold_state_lock=False`` only for tests beside a server."""
    at = time.time() if now is None else now
    with ExitStack() as locks:
        if hold_state_lock:
            locks.enter_context(StateLock(config.server.state_dir))
        embedded: EmbeddedRedis | None = None
        url = config.redis_url().strip()
        if not url:
            embedded = EmbeddedRedis(config.server.state_dir / "redis")
            url = await embedded.start()
        try:
            if url == target.url and (config.redis.key_prefix == target.prefix):
                raise ImportFailed("the target is the data set itself: give another URL or --to-prefix")
            master = load_or_create_store_key(config.store.key_file)
            source = await _connect(url, master, config.redis.key_prefix, config.redis.cluster, config.redis.shards)
            try:
                dest = await _connect(target.url, master, target.prefix, target.cluster, target.shards)
                try:
                    return await _copy(source, dest, at, out)
                except StoreError as e:
                    raise ImportFailed(f"copying failed: {e} (what was written is complete per token; run the "
                                       "move again to finish)") from e
                finally:
                    await dest.close()
            finally:
                await source.close()
        finally:
            if embedded is not None:
                await embedded.stop()


async def _connect(url: str, master: bytes, prefix: str, cluster: bool, shards: int) -> RedisStore:
    try:
        return await RedisStore.connect(url, master, prefix=prefix, cluster=cluster, shards=shards)
    except StoreError as e:
        raise ImportFailed(f"cannot use Redis at {redact_url(url)}: {e}") from e


async def _copy(source: RedisStore, dest: RedisStore, now: float, out: TextIO) -> Moved:
    moved = Moved()
    writer = dest.importer()
    for shard in source.shards:
        d = shard.dataset
        start = 0
        while tids := [bytes(t) for t in await d.call(d.r.zrange, d.keys.g("used"), start, start + PAGE - 1)]:
            start += len(tids)
            items = [await _token(shard, tok) for tok in await shard._tokens.get_tokens(tids)]
            moved.tokens += len(items)
            moved.subs += sum(len(i.subscriptions) for i in items)
            async with d.pipeline() as pipe:
                for tid in tids:
                    pipe.zscore(d.keys.g("dfr"), tid)
                moved.deferred_dropped += sum(1 for x in await pipe.execute() if x is not None)
            for res in await writer.write(items, now):
                moved.outcomes[res.outcome.value] += 1
                moved.subs_written += res.subscriptions_written
                moved.ntfs_written += res.notifications_written
            print(f"{moved.tokens} tokens copied", file=out)
    moved.aliases = await _aliases(source, dest)
    raw = await PolicyStore(source.dataset).raw()
    if raw is not None:
        home = dest.dataset
        await home.call(home.r.set, PolicyStore(home).key, raw)
        moved.policy = True
    for server in await source.servers_with_subscriptions():
        state = await source.service_state(server)
        if state.service_id is None:
            continue
        try:
            creds = await source.service_credentials(server, _none)
        except _NoCredentials:
            continue
        await carry_service(dest, server, creds, state.service_id)
        moved.services += 1
    if moved.outcomes.get(TokenImport.ID_TAKEN.value) or moved.outcomes.get(TokenImport.DUPLICATE.value):
        print("some tokens were not written: the target holds other tokens under their ids or device tokens",
              file=out)
    return moved


async def _token(shard: RedisStore, tok: Any) -> ImportedToken:
    d = shard.dataset
    subs = await shard.token_subscriptions(tok.token_id)
    by_sid = {s.sub_id: s for s in subs}
    lns: dict[bytes, bytes] = await d.call(d.r.hgetall, d.keys.token(tok.token_id) + ":ln")
    notes = []
    for sid, value in lns.items():
        if (sub := by_sid.get(bytes(sid))) is not None:
            n = decode_ln(sub.server, sub.notifier_id, bytes(value))
            notes.append(ImportedNotification(bytes(sid), n.received_at_ms, n.nonce, n.enc_meta))
    unv = await d.call(d.r.zscore, d.keys.g("unv"), tok.token_id)
    return ImportedToken(tok, subs, notes, None if unv is None else int(unv))


async def _aliases(source: RedisStore, dest: RedisStore) -> int:
    """The source's own aliases (an earlier import's ids -> the source's), now -> the target's ids."""
    resolve: Callable[[bytes], Any] = SubIdAliases(*dest.datasets).resolve
    home = dest.dataset
    n = 0
    for d in source.datasets:
        pairs: dict[bytes, bytes] = await d.call(d.r.hgetall, d.keys.prefix + ALIAS_KEY)
        for old, ours in pairs.items():
            parse_sub_id(d.a, bytes(ours))  # a malformed stored id fails here, not in the target
            new = await resolve(bytes(ours))
            await home.call(home.r.hset, home.keys.prefix + ALIAS_KEY, bytes(old), new)
            n += 1
    return n
