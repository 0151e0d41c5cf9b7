"""The start-up summary (ntf_server/observability/startsummary.py) of an in-process server: one ``server.started`` event
with what an operator checks first — the address apps use, where it listens, which APNs environments go
where, the Redis in use without its password, the push policy in force and where it comes from, the admin
URL, SOCKS."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from helpers.e2e_env import Env
from helpers.valkey_cluster import CLUSTER, SHARDS

from ntf_server.observability.logevents import event_of
from ntf_server.observability.startsummary import StartSummary, redis_mode
from ntf_server.push.policy import Budget, PolicySettings
from ntf_server.store.policy import PolicyStore
from ntf_server.transport import certs


def started(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    events = [fields for name, fields in map(event_of, caplog.records) if name == "server.started"]
    assert len(events) == 1
    caplog.clear()
    return events[0]


async def test_the_start_up_summary_names_what_the_server_runs_with(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ntf_server.server")
    server = await env.restart()
    summary = started(caplog)
    assert server.admin is not None and server.summary is not None and summary == server.summary.fields()
    assert summary == {
        "address": certs.server_address(env.key_hash, "localhost", server.port),
        "listen": f"127.0.0.1:{server.port}",
        "apns": f"test 127.0.0.1:{env.sim.port}",
        "redis": (("cluster " + env.config.redis.url) if CLUSTER
                  else "external unix://" + env.config.redis.url.removeprefix("unix://"))
        + (f", {SHARDS} shards" if SHARDS > 1 else ""),
        "policy": '{"burst":3,"hidden_per_hour":0.0,"overflow":"alert"} (config)',  # e2e_env: parity
        "admin": f"http://127.0.0.1:{server.admin.port}",
        "socks": "off",
    }
    # a policy set through the admin API is the one in force after a restart: the summary says so
    await PolicyStore(server.store.dataset).put(PolicySettings(Budget(0, 1)))
    await env.restart()
    assert started(caplog)["policy"] == '{"burst":1,"hidden_per_hour":0,"overflow":"alert"} (stored)'
    await env.reconfigure("admin", enabled=False)
    assert started(caplog)["admin"] == "off"
    await env.reconfigure("subscriber", socks_proxy="127.0.0.1:9050")
    assert started(caplog)["socks"] == "127.0.0.1:9050 (onion)"


def test_redis_mode_never_shows_a_password(env: Env) -> None:
    cfg = env.config
    with_pw = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url="redis://u:s3cr3tpw@db:6380/2?x=1"))
    kind = "cluster" if CLUSTER else "external"
    shards = f", {SHARDS} shards" if SHARDS > 1 else ""
    assert redis_mode(with_pw) == f"{kind} redis://db:6380/2 (with password){shards}"
    embedded = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=""))
    assert redis_mode(embedded) == f"embedded at {cfg.server.state_dir / 'redis'}{shards}"
    three = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url="redis://db:7000", shards=3))
    assert redis_mode(three) == f"{kind} redis://db:7000, 3 shards"
    summary = StartSummary.of(with_pw, env.key_hash, "p (config)")
    assert "s3cr3tpw" not in "\n".join(summary.lines()) and summary.lines()[0].startswith("Server address: ntf://")
