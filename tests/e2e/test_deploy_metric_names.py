"""Every metric name deploy/prometheus/alerts.yml and deploy/grafana/ntf-server-dashboard.json use is one the
server exports: read from a real server's GET /metrics (after a token registration and a census, so the
families that need data are there), plus every counter family defined (metricdef.REGISTRY; /metrics shows
them all, at zero too: this only makes the check independent of what the server counted)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx
from helpers.e2e_env import Env, active_app, fresh_census
from prometheus_client.parser import text_string_to_metric_families
from test_admin_api import admin_url, token_of

from ntf_server.admin.metrics import PREFIX
from ntf_server.observability.metricdef import REGISTRY, metric_name
from ntf_server.sim.device import NtfClient

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
USED_FILES = (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "ntf-server-dashboard.json")
PROMETHEUS_OWN = {"up"}  # the scrape's own series
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def used_names(path: Path) -> set[str]:
    return set(re.findall(r"\bntf_[a-z0-9_]+\b", path.read_text()))


def defined_names() -> set[str]:
    return {PREFIX + (c.family.name if c.family else metric_name(c.name)) + "_total" for c in REGISTRY.counters()}


async def exported_names(env: Env) -> set[str]:
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    await active_app(env, client)
    await client.close()
    await fresh_census(env.server)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token_of(env)}"}) as http:
        text = (await http.get(admin_url(env.server) + "/metrics")).text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}  # families with no sample
    return names


async def test_rules_and_dashboard_name_only_exported_metrics(env: Env) -> None:
    exported = await exported_names(env) | defined_names() | PROMETHEUS_OWN
    for path in USED_FILES:
        used = used_names(path)
        assert len(used) >= 10, path
        unknown = sorted(used - exported)
        assert not unknown, f"{path.name} names metrics the server does not export: {unknown}"
    assert "ntf_apns_request_duration_seconds_bucket" in exported  # from /metrics, not the definitions
    assert "ntf_tokens_by_status" in exported


async def test_the_docker_healthcheck_command_passes_and_fails(env: Env) -> None:
    """The HEALTHCHECK's python -c command, pointed at this server's admin port."""
    line = next(x for x in (DEPLOY / "Dockerfile").read_text().splitlines() if "/healthz" in x and "CMD" in x)
    code = re.search(r'"-c", "(.*)"\]', line)
    assert code is not None
    assert env.server.admin is not None
    script = code.group(1).replace(":5227/", f":{env.server.admin.port}/")

    async def check() -> int:  # a child process: the server runs on this event loop
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait()

    assert await check() == 0
    await env.server.stop()
    assert await check() != 0
