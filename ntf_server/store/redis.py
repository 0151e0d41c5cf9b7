"""`Store` on Redis/Valkey with redis-py asyncio: a thin front that composes one store per entity.
Over 300 lines because it is the whole `Store` protocol in one place: one delegating line per method.

| module              | entity                                       | keys (names: keys.py)                  |
|---------------------|----------------------------------------------|----------------------------------------|
| tokens.py           | tokens, cron schedule, expiry                | t{T}, dt:<x>, used, cron, unv          |
| servers.py          | SMP-server registry                          | srv:id, srv:addr, srv:n (srv:count)    |
| subscriptions.py    | subscriptions                                | s:<n>:<bucket>, t{T}:subs, n:sub       |
| notices.py          | notices: stored and decided a batch at a time | t{T}:ln, n:ln, b:<x>, t{T}:dfr, dfr   |
| outbox.py           | pushes from their decision to APNs' answer   | ob, ob:a, obq, ob:n                    |
| leases.py           | who subscribes an SMP server, runs a job     | ls:<n>, ls:n, lp, lh:<n>, lj:<job>     |
| dataset.py          | the data set: calls, meta, stand-ins, counts | meta, dummy:t, dummy                   |
| importing.py        | import-simplex only: whole tokens as they are | all of the above, as the normal paths |

Built on the same data set (``self.dataset``) by env.py, outside this front (their callers take them):

| module              | what                                         | keys                                   |
|---------------------|----------------------------------------------|----------------------------------------|
| budget.py           | budgets; deferred and periodic push claims   | b:<x>, t{T}:dfr, dfr, t{T}:cr(c)       |
| policy.py           | the push policy document                     | policy                                 |
| activity.py         | daily, weekly, monthly active tokens         | act:d:<day>, act:w:<week>, act:m:<m>   |
| census.py           | tokens and subscriptions counted by status   | (reads only)                           |
| census_shared.py    | the latest census, for every instance        | census                                 |
| sub_aliases.py      | subscription ids kept from an import         | sa                                     |
| vrfcap.py           | the cap on verification pushes per device    | vc:<x>                                 |

Record layouts: codec.py (token, last notification), keys.py (subscription, ids); atomic changes: Lua
scripts, each called through a typed wrapper (token_scripts.py, sub_scripts.py, notice_scripts.py, and
beside outbox.py, leases.py, budget.py, census.py; the shared Lua in scripts.py). Reads are single
commands or pipelines; every write touching several keys is one Lua script.
Every module's every call goes through the data set (dataset.py), so through one health switch.
How a new query is added, and why each layer exists: ntf_server/README.md "Adding a store query".
Secret fields are sealed with AES-GCM (atrest.py) before they leave the process, index keys are HMACs, so
the Redis data set holds no device token, DH secret, registration code, notifier id or notifier key in
clear. Connection errors are retried by redis-py with capped exponential backoff and jitter; what still
fails becomes `StoreUnavailable`, any other Redis error `StoreError` (store/health.py translates, in one
place). While the server runs `watch_health()`, an unreachable Redis makes calls fail at once instead of
each waiting through the retries, until a background probe finds it again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence

from ntf_server.policy_types import Budget
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.atrest import AtRest
from ntf_server.store.base import (
    NO_CAPS,
    RemovedSub,
    ServiceState,
    Store,
    StoreCounts,
    SubCaps,
    SubCreate,
    TokenCreate,
    TokenReplace,
)
from ntf_server.store.budget import BudgetStore
from ntf_server.store.census import DUTY, CensusTaker, Sleep
from ntf_server.store.client import Client, make_client
from ntf_server.store.dataset import DataSet
from ntf_server.store.health import backoff_delays
from ntf_server.store.importing import StoreImporter
from ntf_server.store.keys import MAX_BUCKETS, TOKEN_ID_BYTES, Keys
from ntf_server.store.leases import RedisLeases
from ntf_server.store.notices import Claimed, Decided, ForRetry, PolicyChanged, RedisNotices
from ntf_server.store.outbox import Cause, RedisOutbox
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
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.services import RedisServices
from ntf_server.store.shards import check_shards, default_buckets, shard_prefixes
from ntf_server.store.subscriptions import RedisSubscriptions
from ntf_server.store.tokens import RedisTokens
from ntf_server.store.upgrade import authenticate_records


class RedisStore:
    """The production store. Create with `await RedisStore.connect(url, master_key)`."""

    def __init__(self, client: Client, atrest: AtRest, prefix: str, buckets: int) -> None:
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be 1..{MAX_BUCKETS}")
        self._a = atrest
        self._d = DataSet(client, atrest, Keys(prefix, buckets))
        servers = ServerRegistry(self._d)
        self._servers = servers
        self._tokens = RedisTokens(self._d, servers)
        self._subs = RedisSubscriptions(self._d, servers, self._tokens.codec)
        self._services = RedisServices(self._d, servers)
        self._notices = RedisNotices(self._d, servers, self._tokens.codec)
        self.outbox = RedisOutbox(self._d)  # pushes from their decision to APNs' answer (push/outbox_keeper.py)
        self.leases = RedisLeases(self._d, servers)  # SMP servers' owners (scale-out; subscriber/leases.py)

    @classmethod
    async def connect(
        cls,
        url: str,
        master_key: bytes,
        *,
        prefix: str = "ntf:",
        buckets: int | None = None,
        retries: int = 6,
        max_connections: int = 64,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 10.0,
        cluster: bool = False,
        shards: int = 1,
    ) -> RedisStore:
        """`buckets` (per SMP server) is fixed when the data set is created: None means "what the data set
        uses", or for a new one DEFAULT_BUCKETS divided by `shards` (shards.py `default_buckets`); a different
        explicit value is refused. The timeouts bound how long a call can hang on a Redis host that stopped
        answering (no call here blocks on purpose).
        `cluster`: `url` names a node of a Redis/Valkey Cluster; each shard's keys then share one hash slot
        (`prefix` becomes a hash tag, store/client.py). `shards` (fixed when the data set is created): more than
        one spreads the data set over that many slots (store/shards.py) and returns a `ShardedStore`."""
        plain = prefix
        prefixes = shard_prefixes(prefix, shards, cluster=cluster)
        # a sharded call may go to every shard at once: as many connections per call (per node in a cluster)
        client = make_client(url, cluster=cluster, retries=retries, max_connections=max_connections * shards,
                             connect_timeout_s=connect_timeout_s, command_timeout_s=command_timeout_s)
        atrest = AtRest(master_key)
        parts = [cls(client, atrest, p, buckets or default_buckets(shards)) for p in prefixes]
        try:
            if cluster:
                await parts[0]._d.refuse_untagged(plain)
            await check_shards(parts[0]._d, shards)
            for part in parts:
                await part._d.check_meta(buckets)
                await part._d.write_dummies()
                await authenticate_records(part._d, part._tokens.codec)
                await part._tokens.index_repeats()
        except BaseException:
            await client.aclose()
            raise
        if shards == 1:
            return parts[0]
        from ntf_server.store.sharded import ShardedStore

        return ShardedStore(parts)

    # ------------------------------------------------------------------ the data set, lifecycle

    async def config_advice(self) -> list[str]:
        return await self._d.config_advice()

    @property
    def dataset(self) -> DataSet:
        """The data set (connection, keys, health switch), on which the store modules that keep their own
        keys are built: PolicyStore, BudgetStore, ActivityStore, CensusTaker, SharedCensus, SubIdAliases,
        VerificationCap."""
        return self._d

    def budgets(self) -> BudgetStore:
        """The budgets and pending pushes (push/policy.py's store), over every shard of the data set."""
        return BudgetStore(self._d)

    def census_taker(self, *, duty: float = DUTY, sleep: Sleep = asyncio.sleep) -> CensusTaker:
        """The census of the whole data set (store/census.py)."""
        return CensusTaker(self._d, duty=duty, sleep=sleep)

    @property
    def shards(self) -> tuple[RedisStore, ...]:
        """The shards of the data set, each a store of the one-slot layout (store/shards.py): this one alone."""
        return (self,)

    def shard(self, token_id: bytes) -> RedisStore:
        """The shard holding a token's keys."""
        return self

    @property
    def datasets(self) -> list[DataSet]:
        """Every shard's data set, the home's first (one on a data set of one shard)."""
        return [self._d]

    def importer(self) -> StoreImporter:
        """What `import-simplex` writes with (store/importing.py)."""
        return StoreImporter(self._d)

    @property
    def client(self) -> Client:
        """The bare Redis connection pool: tools and tests only (it bypasses the health switch)."""
        return self._d.r

    @property
    def prefix(self) -> str:
        return self._d.keys.prefix

    @property
    def buckets(self) -> int:
        return self._d.keys.buckets

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r} buckets={self.buckets}>"

    async def close(self) -> None:
        await self._d.r.aclose()

    @property
    def healthy(self) -> bool:
        return self._d.health.up

    async def watch_health(self, delays: Callable[[], Iterator[float]] = backoff_delays) -> None:
        """Long-lived part of the server: fail fast while Redis is away, reconnect in the background. The probe
        reads a key of the data set, not PING: in a cluster it must reach the node serving the data set's slot
        (a PING reaches any node, and the switch would flap while that slot waits for its new primary)."""
        await self._d.health.watch(lambda: self._d.r.exists(self._d.keys.route), delays)

    async def counts(self) -> StoreCounts:
        return await self._d.counts()

    async def ping(self) -> None:
        """One round trip to Redis (the admin API's /healthz), through the health switch."""
        await self._d.call(self._d.r.ping)

    # ------------------------------------------------------------------ tokens (tokens.py)

    async def create_token(self, token: TokenRecord, now: float | None = None,
                           max_per_device: int = 0) -> TokenCreate:
        return await self._tokens.create_token(token, now, max_per_device)

    def new_token_id(self, provider: PushProvider, device_token: bytes) -> bytes:
        return secrets.token_bytes(TOKEN_ID_BYTES)

    async def get_token(self, token_id: bytes) -> TokenRecord | None:
        return await self._tokens.get_token(token_id)

    async def find_token(self, provider: PushProvider, device_token: bytes, verify_key: bytes) -> TokenRecord | None:
        return await self._tokens.find_token(provider, device_token, verify_key)

    async def replace_token(self, token_id: bytes, provider: PushProvider, device_token: bytes,
                            reg_code: bytes, max_per_device: int = 0) -> TokenReplace:
        return await self._tokens.replace_token(token_id, provider, device_token, reg_code, max_per_device)

    async def set_token_status(self, token_id: bytes, status: TokenStatus,
                               only_from: Collection[TokenStatusKind] | None = None) -> TokenStatus | None:
        return await self._tokens.set_token_status(token_id, status, only_from)

    async def confirm_token(self, token_id: bytes) -> TokenStatus | None:
        return await self._tokens.confirm_token(token_id)

    async def activate_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        return await self._tokens.activate_token(token_id)

    async def delete_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        return await self._tokens.delete_token(token_id)

    async def touch_token(self, token_id: bytes, now: float) -> None:
        await self._tokens.touch_token(token_id, now)

    async def set_cron_interval(self, token_id: bytes, minutes: int, now: float) -> bool:
        return await self._tokens.set_cron_interval(token_id, minutes, now)

    async def mark_cron_sent(self, token_id: bytes, now: float) -> bool:
        return await self._tokens.mark_cron_sent(token_id, now)

    async def tokens_due_for_cron(self, now: float, limit: int = 1000) -> list[TokenRecord]:
        return await self._tokens.tokens_due_for_cron(now, limit)

    async def expire_tokens(self, now: float, unused_days: int,
                            batch: int = 100) -> tuple[list[bytes], list[RemovedSub]]:
        return await self._tokens.expire_tokens(now, unused_days, batch)

    async def expire_unverified(self, now: float, after_s: float,
                                batch: int = 100) -> tuple[list[bytes], list[RemovedSub]]:
        return await self._tokens.expire_unverified(now, after_s, batch)

    # ------------------------------------------------------------------ SMP servers (servers.py)

    async def servers_with_subscriptions(self) -> list[SMPServer]:
        return await self._servers.servers_with_subscriptions()

    # ------------------------------------------------------------------ subscriptions (subscriptions.py)

    async def create_subscription(self, token_id: bytes, server: SMPServer, notifier_id: bytes,
                                  notifier_key: bytes, caps: SubCaps = NO_CAPS,
                                  ) -> tuple[SubCreate, SubscriptionRecord | None]:
        return await self._subs.create_subscription(token_id, server, notifier_id, notifier_key, caps)

    async def get_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        return await self._subs.get_subscription(sub_id)

    async def subscription_and_token(self, sub_id: bytes) -> tuple[SubscriptionRecord | None, TokenRecord | None]:
        return await self._subs.subscription_and_token(sub_id)

    async def token_and_subscription(self, token_id: bytes, server: SMPServer,
                                     notifier_id: bytes) -> tuple[TokenRecord | None, SubscriptionRecord | None]:
        return await self._subs.token_and_subscription(token_id, server, notifier_id)

    async def delete_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        return await self._subs.delete_subscription(sub_id)

    async def set_subscription_statuses(self, server: SMPServer, notifier_ids: Sequence[bytes], status: SubStatus,
                                        service_assoc: bool | None = None,
                                        only_from: Collection[SubStatusKind] | None = None,
                                        fence: str | None = None) -> int:
        return await self._subs.set_subscription_statuses(server, notifier_ids, status, service_assoc, only_from,
                                                          fence)

    def iter_server_subscriptions(self, server: SMPServer, page_size: int = 900,
                                  kinds: Collection[SubStatusKind] | None = None, active_tokens_only: bool = False,
                                  untied_only: bool = False) -> AsyncIterator[list[SubscriptionRecord]]:
        return self._subs.iter_server_subscriptions(server, page_size, kinds, active_tokens_only, untied_only)

    def iter_server_queues(self, server: SMPServer, page_size: int = 900, untied_only: bool = False
                           ) -> AsyncIterator[list[ResubQueue]]:
        return self._subs.iter_server_queues(server, page_size, untied_only)

    async def tied_subscriptions(self, server: SMPServer, page_size: int = 900
                                 ) -> AsyncGenerator[list[SubscriptionRecord], None]:
        async for page in self._subs.iter_server_subscriptions(server, page_size, RESUBSCRIBE_KINDS):
            if tied := [s for s in page if s.service_assoc]:
                yield tied

    # ------------------------------------------------------------------ our SMP services (services.py)

    async def service_credentials(self, server: SMPServer,
                                  make: Callable[[], ServiceCredentials]) -> ServiceCredentials:
        return await self._services.credentials(server, make)

    async def service_state(self, server: SMPServer) -> ServiceState:
        return await self._services.state(server)

    async def set_service_id(self, server: SMPServer, service_id: bytes | None) -> None:
        await self._services.set_service_id(server, service_id)

    async def set_service_ties(self, server: SMPServer, count: int, ids_hash: bytes) -> None:
        await self._services.set_ties(server, count, ids_hash)

    async def has_live_subscriptions(self, server: SMPServer) -> bool:
        return await self._subs.has_live_subscriptions(server)

    async def token_subscriptions(self, token_id: bytes) -> list[SubscriptionRecord]:
        return await self._subs.token_subscriptions(token_id)

    # ------------------------------------------------------------------ notices (notices.py)

    async def notify(self, batch: Sequence[Notice], budgets: Mapping[PushProvider, Budget], now: float,
                     policy: tuple[str, bytes | None] | None, lease_s: float,
                     sent_at: float | None = None) -> list[Decided] | PolicyChanged:
        return await self._notices.notify(batch, budgets, now, policy, lease_s, sent_at)

    async def claim_deferred(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Claimed | float | None:
        return await self._notices.claim_deferred(tid, b, now, lease_s)

    async def for_retry(self, tid: bytes, cause: Cause | None) -> ForRetry:
        return await self._notices.for_retry(tid, cause)

def _conforms(store: RedisStore) -> Store:
    """mypy checks here that RedisStore implements the Store protocol."""
    return store
