"""Persistent state in Redis/Valkey: tokens, subscriptions, indexes, last notifications (README "Redis")."""

from __future__ import annotations

from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.base import RemovedSub, Store, StoreCounts, SubCreate, TokenCreate
from ntf_server.store.embedded import EmbeddedRedis, EmbeddedRedisFailed, RedisBinaryNotFound
from ntf_server.store.errors import StoreError, StoreUnavailable
from ntf_server.store.records import day_of
from ntf_server.store.redis import RedisStore

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisFailed",
    "RedisBinaryNotFound",
    "RedisStore",
    "RemovedSub",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreUnavailable",
    "SubCreate",
    "TokenCreate",
    "day_of",
    "load_or_create_store_key",
]
