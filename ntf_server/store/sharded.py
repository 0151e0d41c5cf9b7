"""`ShardedStore`: the `Store` over a data set of N shards (`[redis] shards`; where what lives: shards.py).

Over 300 lines because it is the whole `Store` protocol once more, each method saying how it is routed: one
delegating line per method for what is found by token id, a fan-out for the rest.

Each shard is a complete `RedisStore` of the one-slot layout under its own prefix (all on one client), so every
script and every decoding is the one-slot code; this class only routes:
- by token id (`shard_of`): every token command, a token's subscriptions, claims, retries, periodic pushes;
- to every shard at once, the one that has it answering: a notice's subscription (NOTIFY; after one answer
  the queue's shard is remembered and asked alone), a subscription id (SCHK, SDEL), a repeat TNEW, an SMP
  server's pages; a status write goes to the shard its queue was paged from (to all when unknown);
- to the home shard (0): service credentials and ids, the policy check.

What gives: what spans tokens of one device token (a repeat TNEW, the per-device cap, TVFY deleting the
device's other registrations) is one script in the token's shard, as on one shard, for tokens placed by TNEW
(`new_token_id`: with their device). For a device token whose registrations are in several shards (after a
TRPL, or imported ids) it is that script plus a read of (or a deletion in) the other shards just before or
after, not atomic with it, and each shard keeps its own hidden-push budget for the device. The uniqueness of
a queue (SNEW) is likewise a read of the other shards, then the script in the token's: two SNEWs of one
queue from tokens of two shards at the same instant can both succeed (then both get its notices). The
policy document is compared in the home shard before a batch's NOTIFY, not inside it: a batch decided while
the policy changes is decided under the old one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import TypeVar

from ntf_server.policy_types import Budget
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp import EMPTY_IDS_HASH
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.atrest import AtRest
from ntf_server.store.base import (
    NO_CAPS,
    RemovedSub,
    ServiceState,
    StoreCounts,
    SubCaps,
    SubCreate,
    TokenCreate,
    TokenReplace,
)
from ntf_server.store.budget import BudgetStore
from ntf_server.store.census import DUTY, CensusTaker, Sleep
from ntf_server.store.client import Client
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.health import backoff_delays
from ntf_server.store.importing import StoreImporter
from ntf_server.store.keys import sub_r
from ntf_server.store.notices import Claimed, Decided, ForRetry, PolicyChanged
from ntf_server.store.outbox import Cause
from ntf_server.store.recent import Recent
from ntf_server.store.records import (
    RESUBSCRIBE_KINDS,
    Notice,
    PushProvider,
    ResubQueue,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)
from ntf_server.store.redis import RedisStore
from ntf_server.store.sharded_import import ShardedImporter
from ntf_server.store.sharded_parts import ShardedBudgets, ShardedCensus, ShardedLeases, ShardedOutbox, global_id
from ntf_server.store.shards import shard_of, token_id_in

T = TypeVar("T")
_PAGE_SHARD_MEMORY = 100_000  # a generation of queues whose shard is remembered from pages (store/recent.py)
_ROUTES_KEPT = 100_000  # a generation of queues whose shard is remembered from NOTIFY's answers


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class ShardedStore(RedisStore):
    """A `RedisStore` whose data set is ``shards`` (shard 0 first, the home); built by `RedisStore.connect`."""

    def __init__(self, shards: Sequence[RedisStore]) -> None:
        if len(shards) < 2:
            raise ValueError("a sharded store has two shards or more")
        self._shards = tuple(shards)
        self._home = shards[0]
        self._n = len(shards)
        self._a: AtRest = self._home._a
        self._d: DataSet = self._home._d
        self._servers = self._home._servers  # the home's numbers: the leases' (sharded_parts.py)
        self.outbox = ShardedOutbox([s.outbox for s in shards])
        self.leases = ShardedLeases(self._home.leases, shards)
        # (server, notifier id) -> the shard a queue was paged from (for the status writes that follow), and
        # the shard that decided its last notice
        self._page_shard: Recent[tuple[SMPServer, bytes], int] = Recent(_PAGE_SHARD_MEMORY)
        self._routes: Recent[tuple[SMPServer, bytes], int] = Recent(_ROUTES_KEPT)

    # ------------------------------------------------------------------ routing

    @property
    def shards(self) -> tuple[RedisStore, ...]:
        return self._shards

    def shard(self, token_id: bytes) -> RedisStore:
        return self._shards[shard_of(token_id, self._n)]

    async def _each(self, call: Callable[[RedisStore], Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*(call(s) for s in self._shards)))

    async def _others(self, k: int, call: Callable[[RedisStore], Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*(call(s) for i, s in enumerate(self._shards) if i != k)))

    # ------------------------------------------------------------------ the data set, lifecycle

    async def config_advice(self) -> list[str]:
        return await self._home.config_advice()

    @property
    def dataset(self) -> DataSet:
        """The home shard's data set (policy, census, activity, verification caps, aliases live there)."""
        return self._d

    @property
    def datasets(self) -> list[DataSet]:
        return [s._d for s in self._shards]

    def importer(self) -> StoreImporter:
        return ShardedImporter([s.importer() for s in self._shards], self)

    def budgets(self) -> BudgetStore:
        return ShardedBudgets([s.budgets() for s in self._shards])

    def census_taker(self, *, duty: float = DUTY, sleep: Sleep = asyncio.sleep) -> CensusTaker:
        return ShardedCensus([s.census_taker(duty=duty, sleep=sleep) for s in self._shards], sleep)

    @property
    def client(self) -> Client:
        return self._d.r

    @property
    def prefix(self) -> str:
        return self._home.prefix

    @property
    def buckets(self) -> int:
        return self._home.buckets

    def __repr__(self) -> str:
        return f"<ShardedStore {[s.prefix for s in self._shards]} buckets={self.buckets}>"

    async def close(self) -> None:
        await self._d.r.aclose()  # one client for every shard

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in self._shards)

    async def watch_health(self, delays: Callable[[], Iterator[float]] = backoff_delays) -> None:
        """Each shard's switch is watched on its own slot: in a cluster a shard's primary fails alone."""
        await asyncio.gather(*(s.watch_health(delays) for s in self._shards))

    async def counts(self) -> StoreCounts:
        each = await self._each(lambda s: s.counts())
        servers = await self.servers_with_subscriptions()
        return StoreCounts(sum(c.tokens for c in each), sum(c.subscriptions for c in each),
                           sum(c.last_notifications for c in each), len(servers))

    async def ping(self) -> None:
        await self._each(lambda s: s.ping())

    # ------------------------------------------------------------------ tokens

    async def create_token(self, token: TokenRecord, now: float | None = None,
                           max_per_device: int = 0) -> TokenCreate:
        k = shard_of(token.token_id, self._n)
        if await self.registered_elsewhere(k, token):
            return TokenCreate.DUPLICATE  # in its own shard, the script answers
        if max_per_device > 0:  # the cap counts the device's registrations in every shard
            others = sum(await self._others(k, lambda s: s._tokens.device_registrations(token.provider,
                                                                                       token.device_token)))
            if others >= max_per_device:
                if await self._shards[k].get_token(token.token_id) is None:
                    return TokenCreate.QUOTA
                max_per_device = 0  # the token is there: a retried call, which the script answers
            else:
                max_per_device -= others
        return await self._shards[k].create_token(token, now, max_per_device)

    async def registered_elsewhere(self, k: int, token: TokenRecord) -> bool:
        """Whether a shard other than k has a registration of the token's device token and verify key (one
        HEXISTS each): TNEW here, and an imported token (sharded_import.py)."""
        return any(await self._others(k, lambda s: s._tokens.is_registered(token.provider, token.device_token,
                                                                          token.verify_key)))

    def new_token_id(self, provider: PushProvider, device_token: bytes) -> bytes:
        """Random, but in the shard of the device token: its registrations, its budget, its cap and its
        repeat TNEWs are then one shard's, so one script's, as on one shard."""
        return token_id_in(self._home._tokens.codec.dt_index(provider, device_token), self._n)

    async def get_token(self, token_id: bytes) -> TokenRecord | None:
        return await self.shard(token_id).get_token(token_id)

    async def find_token(self, provider: PushProvider, device_token: bytes, verify_key: bytes) -> TokenRecord | None:
        found = await self._each(lambda s: s.find_token(provider, device_token, verify_key))
        return next((t for t in found if t is not None), None)

    async def replace_token(self, token_id: bytes, provider: PushProvider, device_token: bytes,
                            reg_code: bytes, max_per_device: int = 0) -> TokenReplace:
        k = shard_of(token_id, self._n)
        tok = await self._shards[k].get_token(token_id)
        if tok is None:
            return TokenReplace.NO_TOKEN
        moving = (tok.provider, tok.device_token) != (provider, device_token)
        if moving:
            dup = await self._others(k, lambda s: s.find_token(provider, device_token, tok.verify_key))
            if any(t is not None for t in dup):
                return TokenReplace.DUPLICATE
            others = sum(await self._others(k, lambda s: s._tokens.device_registrations(provider, device_token)))
            if max_per_device > 0:
                if others >= max_per_device:
                    return TokenReplace.QUOTA
                max_per_device -= others
        return await self._shards[k].replace_token(token_id, provider, device_token, reg_code, max_per_device)

    async def set_token_status(self, token_id: bytes, status: TokenStatus,
                               only_from: Collection[TokenStatusKind] | None = None) -> TokenStatus | None:
        return await self.shard(token_id).set_token_status(token_id, status, only_from)

    async def confirm_token(self, token_id: bytes) -> TokenStatus | None:
        return await self.shard(token_id).confirm_token(token_id)

    async def activate_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        """ACTIVE, and the device token's other registrations deleted: those in this token's shard in the same
        script, those in other shards (a TRPL or a race put them there) right after."""
        k = shard_of(token_id, self._n)
        tok = await self._shards[k].get_token(token_id)
        ok, removed = await self._shards[k].activate_token(token_id)
        if ok and tok is not None:
            for more in await self._others(k, lambda s: s._tokens.delete_device(tok.provider, tok.device_token)):
                removed += more
        return ok, removed

    async def delete_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        return await self.shard(token_id).delete_token(token_id)

    async def touch_token(self, token_id: bytes, now: float) -> None:
        await self.shard(token_id).touch_token(token_id, now)

    async def set_cron_interval(self, token_id: bytes, minutes: int, now: float) -> bool:
        return await self.shard(token_id).set_cron_interval(token_id, minutes, now)

    async def mark_cron_sent(self, token_id: bytes, now: float) -> bool:
        return await self.shard(token_id).mark_cron_sent(token_id, now)

    async def tokens_due_for_cron(self, now: float, limit: int = 1000) -> list[TokenRecord]:
        each = await self._each(lambda s: s.tokens_due_for_cron(now, limit))
        return [t for due in each for t in due][:limit]

    async def expire_tokens(self, now: float, unused_days: int,
                            batch: int = 100) -> tuple[list[bytes], list[RemovedSub]]:
        return _joined(await self._each(lambda s: s.expire_tokens(now, unused_days, batch)))

    async def expire_unverified(self, now: float, after_s: float,
                                batch: int = 100) -> tuple[list[bytes], list[RemovedSub]]:
        return _joined(await self._each(lambda s: s.expire_unverified(now, after_s, batch)))

    # ------------------------------------------------------------------ SMP servers

    async def servers_with_subscriptions(self) -> list[SMPServer]:
        seen: dict[SMPServer, None] = {}
        for servers in await self._each(lambda s: s.servers_with_subscriptions()):
            seen.update(dict.fromkeys(servers))
        return list(seen)

    # ------------------------------------------------------------------ subscriptions

    async def create_subscription(self, token_id: bytes, server: SMPServer, notifier_id: bytes,
                                  notifier_key: bytes, caps: SubCaps = NO_CAPS,
                                  ) -> tuple[SubCreate, SubscriptionRecord | None]:
        k = shard_of(token_id, self._n)
        if await self.queue_elsewhere(k, server, notifier_id) is not None:
            return SubCreate.CONFLICT, None  # another token's (this token's are in its shard)
        return await self._shards[k].create_subscription(token_id, server, notifier_id, notifier_key, caps)

    async def queue_elsewhere(self, k: int, server: SMPServer, notifier_id: bytes) -> int | None:
        """The shard other than k holding a subscription of the queue, if one does: one HEXISTS a shard
        that knows the server (a new queue's SNEW answers AUTH or IDSUB: its timing tells nothing more). SNEW
        here, and an imported subscription (sharded_import.py)."""
        server = server.normalized()
        r = sub_r(self._a, server, notifier_id)

        async def there(s: RedisStore) -> bool:
            srv = await s._servers.number(server, create=False)
            d = s.dataset
            return srv is not None and bool(await d.call(d.r.hexists, d.keys.sub_bucket(srv, r), r))

        found = await asyncio.gather(*(there(s) for j, s in enumerate(self._shards) if j != k))
        others = [j for j in range(self._n) if j != k]
        return next((j for j, yes in zip(others, found, strict=True) if yes), None)

    async def get_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        found = await self._each(lambda s: s.get_subscription(sub_id))
        return next((x for x in found if x is not None), None)

    async def subscription_and_token(self, sub_id: bytes) -> tuple[SubscriptionRecord | None, TokenRecord | None]:
        """Every shard does the same work (STYLE 4), so the time does not tell which one has it."""
        found = await self._each(lambda s: s.subscription_and_token(sub_id))
        return next(((sub, tok) for sub, tok in found if sub is not None), found[0])

    async def token_and_subscription(self, token_id: bytes, server: SMPServer,
                                     notifier_id: bytes) -> tuple[TokenRecord | None, SubscriptionRecord | None]:
        k = shard_of(token_id, self._n)
        (tok, sub), j = await asyncio.gather(self._shards[k].token_and_subscription(token_id, server, notifier_id),
                                             self.queue_elsewhere(k, server, notifier_id))
        if sub is None and j is not None:
            sub = (await self._shards[j].token_and_subscription(token_id, server, notifier_id))[1]
        return tok, sub

    async def delete_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        found = await self._each(lambda s: s.delete_subscription(sub_id))
        return next((x for x in found if x is not None), None)

    async def set_subscription_statuses(self, server: SMPServer, notifier_ids: Sequence[bytes], status: SubStatus,
                                        service_assoc: bool | None = None,
                                        only_from: Collection[SubStatusKind] | None = None,
                                        fence: str | None = None) -> int:
        """Each shard writes the ids it holds: those its pages gave go to it alone, others to every shard
        (a shard skips ids it does not have). With ``fence``, every shard checks its copy of the lease
        (sharded_parts.py), and one fenced out fails the call (`FencedOut`), as on one shard."""
        server = server.normalized()
        groups: list[list[bytes]] = [[] for _ in self._shards]
        unknown: list[bytes] = []
        for nid in notifier_ids:
            k = self._page_shard.get((server, nid))
            if k is None:
                unknown.append(nid)
            else:
                groups[k].append(nid)
        if unknown:
            for g in groups:
                g.extend(unknown)
        write = functools.partial(self._write_statuses, server, status, service_assoc, only_from, fence)
        changed = await asyncio.gather(*(write(k, g, bool(unknown)) for k, g in enumerate(groups) if g))
        return sum(changed)

    async def _write_statuses(self, server: SMPServer, status: SubStatus, service_assoc: bool | None,
                              only_from: Collection[SubStatusKind] | None, fence: str | None, k: int,
                              nids: list[bytes], everywhere: bool) -> int:
        """Shard k's write; when it changed fewer than the ids remembered for it (a queue moved to another
        shard since it was paged, or a status not in ``only_from``), the others are asked too."""
        n = await self._shards[k].set_subscription_statuses(server, nids, status, service_assoc, only_from, fence)
        if everywhere or n >= len(nids):
            return n
        return n + sum(await self._others(k, lambda s: s.set_subscription_statuses(
            server, nids, status, service_assoc, only_from, fence)))

    async def iter_server_subscriptions(self, server: SMPServer, page_size: int = 900,
                                        kinds: Collection[SubStatusKind] | None = None,
                                        active_tokens_only: bool = False, untied_only: bool = False,
                                        ) -> AsyncGenerator[list[SubscriptionRecord], None]:
        """The shards' pages one shard after the other, cut again into pages of ``page_size``."""
        server = server.normalized()
        pages = (s.iter_server_subscriptions(server, page_size, kinds, active_tokens_only, untied_only)
                 for s in self._shards)
        async for page in self._rechunk(server, pages, page_size, lambda rec: rec.notifier_id):
            yield page

    async def iter_server_queues(self, server: SMPServer, page_size: int = 900,
                                 untied_only: bool = False) -> AsyncGenerator[list[ResubQueue], None]:
        server = server.normalized()
        pages = (s.iter_server_queues(server, page_size, untied_only) for s in self._shards)
        async for page in self._rechunk(server, pages, page_size, lambda q: q.notifier_id):
            yield page

    async def _rechunk(self, server: SMPServer, shards: Iterator[AsyncIterator[list[T]]], size: int,
                       nid: Callable[[T], bytes]) -> AsyncGenerator[list[T], None]:
        """Pages of ``size`` from each shard's pages in turn, remembering which shard each queue came from."""
        buf: list[T] = []
        for k, pages in enumerate(shards):
            async for page in pages:
                for item in page:
                    self._page_shard.put((server, nid(item)), k)
                buf += page
                while len(buf) >= size:
                    yield buf[:size]
                    buf = buf[size:]
        if buf:
            yield buf

    async def tied_subscriptions(self, server: SMPServer, page_size: int = 900
                                 ) -> AsyncGenerator[list[SubscriptionRecord], None]:
        async for page in self.iter_server_subscriptions(server, page_size, RESUBSCRIBE_KINDS):
            if tied := [s for s in page if s.service_assoc]:
                yield tied

    async def has_live_subscriptions(self, server: SMPServer) -> bool:
        return any(await self._each(lambda s: s.has_live_subscriptions(server)))

    async def token_subscriptions(self, token_id: bytes) -> list[SubscriptionRecord]:
        return await self.shard(token_id).token_subscriptions(token_id)

    # ------------------------------------------------------------------ our SMP services (home; ties summed)

    async def service_credentials(self, server: SMPServer,
                                  make: Callable[[], ServiceCredentials]) -> ServiceCredentials:
        return await self._home.service_credentials(server, make)

    async def service_state(self, server: SMPServer) -> ServiceState:
        """The service id (home) and the ties of every shard: counts add, IdsHashes XOR (both are sums)."""
        each = await self._each(lambda s: s.service_state(server))
        return ServiceState(each[0].service_id, sum(x.count for x in each),
                            functools.reduce(_xor, (x.ids_hash for x in each), EMPTY_IDS_HASH))

    async def set_service_id(self, server: SMPServer, service_id: bytes | None) -> None:
        await self._home.set_service_id(server, service_id)

    async def set_service_ties(self, server: SMPServer, count: int, ids_hash: bytes) -> None:
        """The whole count and hash in the home shard, none in the others: their sum is what was counted."""
        await asyncio.gather(self._home.set_service_ties(server, count, ids_hash),
                             *(s.set_service_ties(server, 0, EMPTY_IDS_HASH) for s in self._shards[1:]))

    # ------------------------------------------------------------------ notices

    async def notify(self, batch: Sequence[Notice], budgets: Mapping[PushProvider, Budget], now: float,
                     policy: tuple[str, bytes | None] | None, lease_s: float,
                     sent_at: float | None = None) -> list[Decided] | PolicyChanged:
        """For each notice, the shard holding its subscription decides it (NOTIFY, one script per shard asked).
        A queue whose shard was learnt from an earlier answer goes to that shard alone; any other goes to every
        shard (those without its subscription answer "unknown", with no side effect), and so does a learnt one
        that its shard no longer knows (its subscription deleted, or made again by a token of another shard)."""
        if policy is not None:  # a read of the home shard (one shard compares it inside its NOTIFY)
            raw = await self._d.call(self._d.r.get, policy[0])
            if (raw or b"") != (policy[1] or b""):
                return PolicyChanged(bytes(raw) if raw else None)
        out: list[Decided | None] = [None] * len(batch)
        asked: list[set[int]] = [set() for _ in batch]  # the shards that answered "unknown" for each notice
        todo = list(range(len(batch)))
        while todo:
            groups: list[list[int]] = [[] for _ in self._shards]
            for i in todo:
                k = self._routes.get((batch[i].server, batch[i].notifier_id))
                for j in (range(self._n) if k is None or k in asked[i] else (k,)):
                    if j not in asked[i]:
                        groups[j].append(i)
            calls = [self._shards[k].notify([batch[i] for i in g], budgets, now, None, lease_s, sent_at)
                     for k, g in enumerate(groups) if g]
            each = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
            for k, res in zip((k for k, g in enumerate(groups) if g), each, strict=True):
                if isinstance(res, PolicyChanged):  # pragma: no cover - policy None above: never
                    raise StoreError("a shard checked the policy")
                for i, d in zip(groups[k], res, strict=True):
                    if not d.known:
                        asked[i].add(k)
                    elif out[i] is None:
                        self._routes.put((batch[i].server, batch[i].notifier_id), k)
                        out[i] = d if not d.push_id else Decided(d.decision, d.token, d.notices,
                                                                 global_id(d.push_id, k, self._n), d.due)
            todo = [i for i in todo if out[i] is None and len(asked[i]) < self._n]
        return [d if d is not None else Decided(None, known=False) for d in out]

    async def claim_deferred(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Claimed | float | None:
        return await self.shard(tid).claim_deferred(tid, b, now, lease_s)

    async def for_retry(self, tid: bytes, cause: Cause | None) -> ForRetry:
        return await self.shard(tid).for_retry(tid, cause)


def _joined(each: list[tuple[list[bytes], list[RemovedSub]]]) -> tuple[list[bytes], list[RemovedSub]]:
    return [t for tids, _ in each for t in tids], [r for _, removed in each for r in removed]
