"""The Redis client of the store: one Redis/Valkey server, or a Redis/Valkey Cluster (README "Cluster mode").

Cluster mode keeps each shard of the data set in one hash slot: the shard's key prefix is a hash tag (``ntf:``
becomes ``{ntf:}``, so ``{ntf:}t{…}``, ``{ntf:}used``…; a key's slot is that of its first ``{…}``; the other
shards of a data set of ``[redis] shards`` > 1 are ``{ntf:1.j}``…, store/shards.py). Every script then touches
keys of one slot, which a cluster requires, and names that slot's routing key in KEYS (``Keys.route``):
redis-py sends an EVALSHA to the node owning its first key, and Valkey refuses a script that touches a key of
a slot other than its declared keys'. The cluster gives replicas and automatic failover (a replica promoted
when its primary fails); the shards spread one data set over the primaries (README "Cluster mode").
"""

from __future__ import annotations

from typing import Final, TypeAlias

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ntf_server.store.errors import StoreError

Client: TypeAlias = Redis | RedisCluster
AnyPipeline: TypeAlias = Pipeline | ClusterPipeline

ROUTE_KEY: Final = "meta"  # every script names `P meta` in KEYS: one key of the data set's slot


def cluster_prefix(prefix: str) -> str:
    """The key prefix of a data set in a cluster: the prefix as one hash tag, so all keys share a slot (a
    prefix that is one already, e.g. another store's `prefix`, is kept)."""
    inner = prefix[1:-1] if prefix.startswith("{") and prefix.endswith("}") else prefix
    if "{" in inner or "}" in inner:
        raise StoreError(f"key prefix {prefix!r}: braces are not allowed in cluster mode (the store adds them)")
    return "{" + inner + "}"


def make_client(url: str, *, cluster: bool, retries: int, max_connections: int, connect_timeout_s: float,
                command_timeout_s: float) -> Client:
    """A client for `url` (in cluster mode: any node; the others are found with CLUSTER SHARDS). Connection
    errors are retried with capped, jittered backoff; in a cluster also the errors of a failover in
    progress (CLUSTERDOWN, TRYAGAIN, a primary gone), after which redis-py reads the topology again."""
    retry = Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries)
    if cluster:
        if url.startswith("unix://"):
            raise StoreError("cluster mode needs a redis:// or rediss:// URL naming one of the cluster's nodes")
        return RedisCluster.from_url(
            url, retry=retry, max_connections=max_connections, socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
            retry_on_error=[rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.TryAgainError,
                            rex.MasterDownError],
        )
    return Redis.from_url(
        url, retry=retry, retry_on_error=[rex.ConnectionError, rex.TimeoutError], max_connections=max_connections,
        socket_connect_timeout=connect_timeout_s, socket_timeout=command_timeout_s,
    )
