"""The admin HTTP API (README "Operating it"): aiohttp, bound to 127.0.0.1:5227 by default.

  GET /healthz          no token; 200 "ok" when the store answers and the NTF listener is up, else 503
  GET /metrics          Prometheus text (token unless admin.metrics_public)
  GET /v1/stats         counters and gauges as JSON
  GET /v1/smp-servers   SMP connection state and counts (host names of own servers only)
  GET|PUT /v1/policy    the push policy, changed live and persisted in Redis
  GET /v1/status        the operator's one screen in one call (status.py; ``ntf-server status``)

``AdminServer`` is a resource of the server (started after the NTF listener, closed before it). Every
answer is JSON except /healthz and /metrics; errors are ``{"error": "<what is wrong>"}``.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from ntf_server.admin import metrics, views
from ntf_server.admin.auth import bearer_auth
from ntf_server.admin.figures import Sources, gather, health
from ntf_server.admin.policy import PolicyApi
from ntf_server.admin.status import StatusApi

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024  # a policy document is a few hundred bytes
SHUTDOWN_TIMEOUT_S: Final = 2.0  # answers are quick; a stuck client must not hold up the server's shutdown


def build_app(src: Sources, policy: PolicyApi, token: bytes, *, metrics_public: bool = False,
              read_token: bytes | None = None) -> web.Application:
    """``read_token``: a second, read-only bearer token (GET only), for Prometheus and dashboards."""
    public = {"/healthz", "/metrics"} if metrics_public else {"/healthz"}
    app = web.Application(middlewares=[bearer_auth(token, public, read_token)], client_max_size=MAX_BODY_BYTES)

    async def healthz(_: web.Request) -> web.Response:
        why = await health(src)
        if why is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=why + "\n")

    async def metrics_text(_: web.Request) -> web.Response:
        body = metrics.render(await gather(src), src.own)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(views.stats_json(await gather(src)))

    async def smp_servers(_: web.Request) -> web.Response:
        return web.json_response(views.smp_servers_json(await gather(src), src.own))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/v1/smp-servers", smp_servers)
    app.router.add_get("/v1/policy", policy.get)
    app.router.add_put("/v1/policy", policy.put)
    app.router.add_get("/v1/status", StatusApi(src, policy).get)
    return app


class AdminServer:
    def __init__(self, app: web.Application) -> None:
        # requests carry the token: no access log
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._site: web.TCPSite | None = None

    def __repr__(self) -> str:
        return f"<AdminServer {'port ' + str(self.port) if self._site else 'stopped'}>"

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        try:
            self._site = web.TCPSite(self._runner, host, port)
            await self._site.start()
        except BaseException:
            await self._runner.cleanup()
            raise

    @property
    def port(self) -> int:
        assert self._site is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._site = None
