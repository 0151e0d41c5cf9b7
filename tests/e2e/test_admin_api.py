"""The admin HTTP API over loopback against the real server (its own aiohttp listener, real Redis, the
APNs simulator, an SMP stand-in): health, metrics, auth, the live push policy, the CLI, and that no
answer carries anything sensitive."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.e2e_env import Env, active_app, fresh_census
from helpers.fault_proxy import FaultProxy
from prometheus_client.parser import text_string_to_metric_families

from ntf_server.admin import auth
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.policy import Budget, PolicySettings
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.store.policy import PolicyStore


def admin_url(server: NtfServer) -> str:
    assert server.admin is not None
    return f"http://127.0.0.1:{server.admin.port}"


def token_of(env: Env) -> str:
    return env.config.admin.token().read().decode().strip()


@pytest.fixture
async def http(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token_of(env)}"}, timeout=10) as c:
        yield c


# ------------------------------------------------------------------ health


async def test_healthz_needs_no_token_and_fails_when_the_store_is_down(
    env: Env, tmp_path: Path, redis_url: str
) -> None:
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "redis-proxy.sock")
    await proxy.start()
    server = await env.reconfigure("redis", url=proxy.url)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            ok = await http.get(admin_url(server) + "/healthz")
            assert (ok.status_code, ok.text) == (200, "ok\n")
            await proxy.stop()
            down = await http.get(admin_url(server) + "/healthz")
            assert down.status_code == 503 and down.text.startswith("store: Redis")
            # the figures that need Redis are left out; the rest is still served
            auth_header = {"Authorization": f"Bearer {token_of(env)}"}
            stats = (await http.get(admin_url(server) + "/v1/stats", headers=auth_header)).json()
            assert (stats["store_up"], stats["stored"], stats["listener_up"]) == (False, None, True)
            text = (await http.get(admin_url(server) + "/metrics", headers=auth_header)).text
            assert "ntf_store_up 0.0" in text and "ntf_tokens_stored" not in text
            policy = await http.get(admin_url(server) + "/v1/policy", headers=auth_header)
            assert policy.status_code == 503 and policy.json() == {"error": "the store is unavailable; try again"}
            await proxy.start()
            async with asyncio.timeout(10):  # healthy again once the store's probe finds Redis
                while True:
                    if (await http.get(admin_url(server) + "/healthz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
    finally:
        await server.stop()  # while Redis is reachable: a stop that cannot store waits out its grace (10 s)
        await proxy.stop()


async def test_healthz_fails_when_the_ntf_listener_is_down(env: Env) -> None:
    assert env.server.listener is not None
    await env.server.listener.stop()
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(admin_url(env.server) + "/healthz")
    assert (resp.status_code, resp.text) == (503, "NTF listener is not running\n")


# ------------------------------------------------------------------ auth


@pytest.mark.parametrize("path", ["/metrics", "/v1/stats", "/v1/smp-servers", "/v1/policy"])
async def test_no_token_or_a_wrong_one_is_401(env: Env, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    good = token_of(env)
    url = admin_url(env.server) + path
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer " + good[:-1] + "x"}, {"Authorization": "Bearer short"},
                        {"Authorization": good}, {"Authorization": "Basic " + good}):
            resp = await http.get(url, headers=headers)
            assert resp.status_code == 401, headers
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in resp.json() and good not in resp.text
        assert (await http.put(url, json={"burst": 1})).status_code in (401, 405)
        assert (await http.get(url, headers={"Authorization": f"Bearer {good}"})).status_code == 200
    assert len(compared) == 7  # every request (the PUT too) went through the constant-time comparison


async def test_a_read_only_token_reads_everything_and_changes_nothing(env: Env, tmp_path: Path) -> None:
    """Issue 16.9: Prometheus held the one token that can also PUT /v1/policy."""
    read_file = tmp_path / "admin-read.token"
    read_file.write_text("a-read-only-token-for-prometheus\n")
    server = await env.reconfigure("admin", read_token_file=read_file)
    base = admin_url(server)
    read = {"Authorization": "Bearer a-read-only-token-for-prometheus"}
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/metrics", "/v1/stats", "/v1/smp-servers", "/v1/policy", "/v1/status"):
            assert (await http.get(base + path, headers=read)).status_code == 200, path
        refused = await http.put(base + "/v1/policy", headers=read, json={"burst": 1})
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        policy = (await http.get(base + "/v1/policy", headers=read)).json()
        full = {"Authorization": f"Bearer {token_of(env)}"}
        assert (await http.put(base + "/v1/policy", headers=full, json={"burst": 1})).status_code == 200
        assert (await http.get(base + "/v1/policy", headers=read)).json() != policy  # the full token still can
        wrong = {"Authorization": "Bearer a-read-only-token-for-prometheuX"}
        assert (await http.get(base + "/v1/stats", headers=wrong)).status_code == 401


async def test_metrics_can_be_made_public(env: Env) -> None:
    server = await env.reconfigure("admin", metrics_public=True)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(admin_url(server) + "/metrics")).status_code == 200
        assert (await http.get(admin_url(server) + "/v1/stats")).status_code == 401


# ------------------------------------------------------------------ metrics and stats


async def test_metrics_parse_and_have_the_expected_families(env: Env, http: httpx.AsyncClient) -> None:
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    await active_app(env, client)
    await client.close()
    await fresh_census(env.server)
    resp = await http.get(admin_url(env.server) + "/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert all(name.startswith("ntf_") for name in fams)
    for name in ("ntf_tokens_created", "ntf_tokens_verified", "ntf_verification_pushes", "ntf_message_pushes",
                 "ntf_notifications_received", "ntf_notifications_received_auth", "ntf_smp_subscription_answers",
                 "ntf_tokens_stored", "ntf_subscriptions_stored", "ntf_tokens_by_status",
                 "ntf_subscriptions_by_status", "ntf_census_age_seconds", "ntf_active_tokens",
                 "ntf_smp_connections", "ntf_push_queue_length", "ntf_push_retries_waiting",
                 "ntf_resubscription_servers",
                 "ntf_apns_request_duration_seconds", "ntf_apns_responses", "ntf_store_up", "ntf_build_info"):
        assert name in fams, name

    def value(family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in fams[family].samples if s.name == sample and s.labels == labels)

    assert value("ntf_tokens_created", "ntf_tokens_created_total") == 1
    assert value("ntf_verification_pushes", "ntf_verification_pushes_total", outcome="delivered") == 1
    assert value("ntf_tokens_by_status", "ntf_tokens_by_status", status="ACTIVE") == 1
    assert value("ntf_apns_responses", "ntf_apns_responses_total", environment="test", status="200",
                 reason="") == 1
    assert value("ntf_apns_request_duration_seconds", "ntf_apns_request_duration_seconds_count",
                 environment="test") == 1
    assert value("ntf_store_up", "ntf_store_up") == 1
    stats = (await http.get(admin_url(env.server) + "/v1/stats")).json()
    assert stats["counters"]["tkn_created"] == 1 and stats["stored"]["tokens"] == 1
    assert stats["census"]["tokens_by_status"] == {"ACTIVE": 1}


# ------------------------------------------------------------------ policy


async def test_bad_policy_changes_are_400_with_the_reason_and_change_nothing(
    env: Env, http: httpx.AsyncClient
) -> None:
    url = admin_url(env.server) + "/v1/policy"
    before = (await http.get(url)).json()
    assert before == {"hidden_per_hour": 0.0, "burst": 3, "overflow": "alert"}  # e2e_env: parity by default
    cases: list[tuple[Any, str]] = [
        (b"{not json", "the body must be a JSON object"),
        ([1, 2], "the policy must be a JSON object"),
        ({"overflow": "queue"}, "overflow must be one of: alert, defer, drop"),
        ({"burst": 0}, "burst must be a whole number between 1 and 100"),
        ({"hidden_per_hour": "3"}, "hidden_per_hour must be a number"),
        ({"hidden_per_hour": -1}, "hidden_per_hour must be between 0 and 3600"),
        ({"hiden_per_hour": 2}, "unknown key(s): hiden_per_hour"),
        ({"environments": {"staging": {"burst": 1}}}, "unknown environment 'staging'"),
        ({"environments": {"test": {"burst": 1000}}}, "environments.test: burst must be a whole number"),
    ]
    for body, message in cases:
        resp = await (http.put(url, content=body) if isinstance(body, bytes) else http.put(url, json=body))
        assert resp.status_code == 400, body
        assert resp.json()["error"].startswith(message), resp.json()
    assert (await http.get(url)).json() == before
    assert await PolicyStore(env.server.store.dataset).get() is None


async def test_a_policy_change_is_stored_logged_once_and_seen_by_another_instance(
    env: Env, http: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ntf_server.admin.policy")
    url = admin_url(env.server) + "/v1/policy"
    resp = await http.put(url, json={"overflow": "defer", "hidden_per_hour": 2})
    assert resp.status_code == 200
    assert resp.json() == {"hidden_per_hour": 2, "burst": 3, "overflow": "defer"}
    resp = await http.put(url, json={"environments": {"test": {"burst": 1}}})
    assert resp.json()["environments"] == {"test": {"burst": 1}} and resp.json()["overflow"] == "defer"
    stored = await PolicyStore(env.server.store.dataset).get()
    assert stored is not None and stored.for_environment("test") == Budget(2, 1, stored.default.overflow)
    assert stored.default.overflow.value == "defer"
    changes = [r.getMessage() for r in caplog.records if "push policy changed" in r.getMessage()]
    assert len(changes) == 2
    assert '"overflow":"alert"' in changes[0] and '"overflow":"defer"' in changes[0]
    # a second instance on the same Redis (another state directory and ports) answers the same policy
    cfg = env.config
    other = NtfServer(dataclasses.replace(
        cfg, server=dataclasses.replace(cfg.server, state_dir=tmp_path / "state2"),
    ))
    await other.start()
    try:
        seen = (await http.get(admin_url(other) + "/v1/policy")).json()
    finally:
        await other.stop()
    assert PolicySettings.from_json(seen) == stored


# ------------------------------------------------------------------ nothing sensitive


async def test_no_answer_carries_ids_tokens_keys_or_other_servers_hosts(env: Env, http: httpx.AsyncClient) -> None:
    own_smp = SmpServerStandIn(host="localhost")
    await own_smp.start()
    try:
        server = await env.reconfigure("subscriber", own_server_domains=("localhost",))
        client = await NtfClient.connect("127.0.0.1", server.port, env.key_hash)
        app = await active_app(env, client)
        secrets: list[bytes] = [app.device_token.token, app.token_id]
        real = crypto.generate_ed25519()
        creds, _ = own_smp.create_queue(crypto.public_of(real))
        sub = await app.subscribe(client, own_smp.address, creds.notifier_id, real)
        assert isinstance(sub, P.IdSub)
        secrets += [creds.notifier_id, sub.sub_id, crypto.encode_private_key(real)]
        theirs = SMPServer(("smp.thirdparty.invalid",), "5223", os.urandom(32))  # never reachable
        other_nid = os.urandom(24)
        assert isinstance(await app.subscribe(client, theirs, other_nid, crypto.generate_ed25519()), P.IdSub)
        secrets.append(other_nid)
        await own_smp.wait_connections(1)
        for i in range(3):
            own_smp.notify(creds.notifier_id, os.urandom(24), 1_700_000_000 + i)
        async with asyncio.timeout(10):
            while True:
                if server.stats["ntf_delivered"] >= 3:
                    break
                await asyncio.sleep(0.05)
        assert server.census is not None and server.activity is not None
        await server.activity.flush()
        await fresh_census(server)
        bodies = {}
        for path in ("/metrics", "/v1/stats", "/v1/smp-servers", "/v1/policy", "/healthz"):
            resp = await http.get(admin_url(server) + path)
            assert resp.status_code == 200, path
            bodies[path] = resp.content
        smp = (await http.get(admin_url(server) + "/v1/smp-servers")).json()
        assert [(s["server"], s["state"], s["subscriptions"], s["ntf_received"]) for s in smp["own"]] == [
            ("localhost", "up", {"ACTIVE": 1}, 3)]
        assert smp["other"]["servers"] == 1 and smp["other"]["subscriptions"] == {"NEW": 1}
        stats = (await http.get(admin_url(server) + "/v1/stats")).json()
        assert stats["active_tokens"] == {"day": 1, "week": 1, "month": 1}
        assert stats["counters_by_server"]["ntf_received"] == {"localhost": 3}
        assert stats["counters_by_server"]["ntf_delivered"] == {"localhost": 3}  # pushes counted per own server
        for value in secrets:
            forms = {value, value.hex().encode(), base64.b64encode(value), base64.urlsafe_b64encode(value),
                     base64.urlsafe_b64encode(value).rstrip(b"=")}
            for path, body in bodies.items():
                for form in forms:
                    assert form not in body, (path, form)
        for path, body in bodies.items():
            assert b"thirdparty" not in body and token_of(env).encode() not in body, path
        await client.close()
    finally:
        await own_smp.close()


# ------------------------------------------------------------------ CLI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def cli(env: Env, *args: str) -> tuple[int, str, str]:
    """``ntf-server --config-dir <the env's dir> …`` as a real process (the server runs in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ntf_server.cli", "--config-dir", str(env.config.config_dir), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_stats_and_policy_commands_against_a_running_server(env: Env) -> None:
    port = free_port()
    toml = env.config.config_file
    toml.write_text(re.sub(r"^port = 5227$", f"port = {port}", toml.read_text(), count=1, flags=re.M))
    server = await env.reconfigure("admin", port=port)
    client = await NtfClient.connect("127.0.0.1", server.port, env.key_hash)
    await active_app(env, client)
    await client.close()

    code, out, err = await cli(env, "stats")
    assert (code, err) == (0, "")
    assert "store up, NTF listener up" in out and re.search(r"tkn_created\s+1\b", out)
    assert "ntf_vrf_delivered" in out and "sub_created" not in out  # zero counters only with --all
    code, out, _ = await cli(env, "stats", "--json")
    assert code == 0 and json.loads(out)["counters"]["tkn_verified"] == 1

    code, out, err = await cli(env, "policy", "set", "overflow=defer", "hidden_per_hour=2")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "Policy changed." and re.search(r"^\s*default\s+2\s+3\s+defer\s*$", out, re.M)
    code, out, _ = await cli(env, "policy", "set", "--env", "test", "burst=1")
    assert code == 0 and re.search(r"^\s*test\s+2\s+1\s+defer\s+overrides burst$", out, re.M)
    code, out, _ = await cli(env, "policy", "show")
    assert code == 0 and re.search(r"^\s*default\s+2\s+3\s+defer\s*$", out, re.M)
    stored = await PolicyStore(server.store.dataset).get()
    assert stored is not None and stored.for_environment("test").burst == 1

    code, out, err = await cli(env, "policy", "set", "overflow=queue")
    assert (code, out) == (1, "")
    assert err == "ntf-server: policy not changed: overflow must be one of: alert, defer, drop\n"
    code, _, err = await cli(env, "policy", "set", "overflow")
    assert code == 1 and err == "ntf-server: policy set: expected key=value, got 'overflow'\n"

    token_file = env.config.admin.token_file
    assert token_file is not None
    good = token_file.read_bytes()
    token_file.write_bytes(b"another-token-of-enough-length\n")
    try:
        code, out, err = await cli(env, "stats")
    finally:
        token_file.write_bytes(good)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"ntf-server: the admin API at http://127.0.0.1:{port} refused the token")

    await server.stop()
    code, out, err = await cli(env, "stats")
    assert code == 1 and out == ""
    assert err == (f"ntf-server: cannot reach the admin API at http://127.0.0.1:{port}: is the server running "
                   "(ntf-server start)?\n")
