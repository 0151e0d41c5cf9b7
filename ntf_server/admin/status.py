"""``GET /v1/status``: in one call, everything the operator's one screen (``ntf-server status``) shows.

Version, start time and uptime; the NTF listener and its client connections; the store (exact totals,
and tokens and subscriptions by status from the latest census: approximate, ``census_age_s`` old); SMP
servers by connection state (own servers that are down by name, others never named); pushes by kind in
the last hour and since start (window.py); the push policy in force.

Always 200 when the token is right: ``healthy`` is false, with the ``problems`` listed, when the NTF
listener is not running or the store does not answer (the same two checks as ``/healthz``), and the
figures that need the store are ``null``. Scripts read ``healthy``; the CLI turns it into exit status 2.
Nothing sensitive: counts, states and own host names only, as ``/v1/stats``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from ntf_server.admin.figures import STORE_TIMEOUT_S, Figures, Sources, gather
from ntf_server.admin.policy import PolicyApi
from ntf_server.admin.views import smp_servers_json, workers_json
from ntf_server.admin.window import CounterWindow, push_kinds
from ntf_server.observability.ownservers import OTHER, OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.store.errors import StoreError
from ntf_server.subscriber.linkstate import LinkState

LINK_STATES: Final = (LinkState.UP, LinkState.CONNECTING, LinkState.DOWN, LinkState.IDLE)  # the order shown


def status_json(fig: Figures, own: OwnServers, pushes: Mapping[str, Any], started_at: float,
                policy: Mapping[str, Any] | None) -> dict[str, Any]:
    problems = [p for p, bad in (("NTF listener is not running", not fig.listening),
                                 ("store: Redis does not answer", not fig.store_up)) if bad]
    c, n = fig.census, fig.counts
    states = dict.fromkeys(LINK_STATES, 0)
    for _, state in fig.links:
        states[state] = states.get(state, 0) + 1
    own_down = [row["server"] for row in smp_servers_json(fig, own)["own"] if row["state"] == LinkState.DOWN]
    r = fig.resubscription
    return {
        "version": fig.version,
        "healthy": not problems,
        "problems": problems,
        "started_at": round(started_at, 3),
        "uptime_s": round(max(0.0, fig.now - started_at), 1),
        "server": {"listener_up": fig.listening, "client_connections": fig.connections,
                   "push_queue_length": fig.queue_length},
        "store": {
            "up": fig.store_up,
            "tokens": n and n.tokens, "subscriptions": n and n.subscriptions,
            "last_notifications": n and n.last_notifications,
            "tokens_by_status": c and dict(sorted(c.tokens.items())),
            "subscriptions_by_status": c and dict(sorted(c.subscriptions.items())),
            "census_age_s": c and round(max(0.0, fig.now - c.finished_at), 1),
        },
        "smp_servers": {**states, "own_down": sorted(own_down),
                        "resubscription": {"servers": r.servers, "servers_done": r.servers_done}},
        "pushes": pushes,
        "policy": policy,
        "workers": [{**row, "own_servers": sorted(own.label(s.hosts) for s in w.servers if own.label(s.hosts) != OTHER),
                     "other_servers": sum(own.label(s.hosts) == OTHER for s in w.servers)}
                    for w, row in zip(fig.workers, workers_json(fig), strict=True)],
    }


class StatusApi:
    def __init__(self, src: Sources, policy: PolicyApi, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._src = src
        self._policy = policy
        self._clock = clock  # the window's clock (monotonic: a wall clock step must not bend the hour)

    async def get(self, _: web.Request) -> web.Response:
        src = self._src
        fig = await gather(src)
        counters = fig.stats.as_dict()
        window = src.window
        recent = window.recent(self._clock(), counters) if window else None
        pushes = {"window_s": recent and round(recent.seconds, 1),
                  "kinds": push_kinds(recent, counters) if recent else {}}
        policy = None
        if fig.store_up:
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    policy = (await self._policy.current()).to_json()
            except (StoreError, TimeoutError):
                pass  # shown as unknown; the store's state is already in the answer
        return web.json_response(status_json(fig, src.own, pushes, src.started_at, policy))


async def sample_every(window: CounterWindow, stats: Stats, *, clock: Callable[[], float] = time.monotonic,
                       counters: Callable[[], Awaitable[Mapping[str, int]]] | None = None) -> None:
    """The server part that feeds the window: one sample of the push counters a step (never returns);
    ``counters``: where to read them instead of ``stats`` (every worker's, summed: admin/workers.py)."""
    while True:
        await asyncio.sleep(window.step_s)
        window.record(clock(), dict(await counters()) if counters else stats.snapshot().as_dict())
