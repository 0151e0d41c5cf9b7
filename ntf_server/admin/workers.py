"""The admin API across workers (``[server] workers``; README "Workers"): one answer for the whole instance.

Worker 0 serves the admin API. Each other worker serves its own process-local figures (counters, APNs
figures, its SMP links, queue and connections: ``WorkerFigures``) as JSON on a Unix socket in the state
directory (``worker-<n>.sock``, mode 0600: only the server's user reads it; no token). Worker 0 asks every
other worker once per admin request (``WorkerPeers.fetch``, at most ``PEER_TIMEOUT_S`` each, all at once) and
``merge`` sums their figures into its own: counters and gauges summed, SMP links put together with the worker
holding each one; a worker that does not answer is shown as down and left out of the sums. What comes from
Redis (stored totals, census, active tokens) is the instance's already and is read once, by worker 0.

A worker's counters start from zero when it is restarted, and a worker that does not answer is left out; the
sums carry what each worker slot counted before (carry.py: ``InstanceView`` keeps it), so the instance's
counters never go backwards while worker 0 lives. Gauges are the workers' figures of now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import aiohttp
from aiohttp import web

from ntf_server.admin.carry import Carried, Counted, Identity
from ntf_server.admin.figures import AdminListener, AdminPool, Figures, WorkerRow
from ntf_server.observability.apns_metrics import ApnsMetrics, ApnsSnapshot, Histogram
from ntf_server.observability.metricdef import REGISTRY
from ntf_server.observability.stats import Stats, StatsSnapshot
from ntf_server.protocol.encoding import SMPServer
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.pool import Progress

PEER_TIMEOUT_S: Final = 1.0  # a worker that takes longer is shown as down for this request
PATH: Final = "/v1/worker"


def socket_path(state_dir: Path, index: int) -> Path:
    return state_dir / f"worker-{index}.sock"


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One worker's own figures: what lives in its process, not in Redis."""

    worker: int
    pid: int
    stats: StatsSnapshot
    apns: ApnsSnapshot
    links: tuple[tuple[SMPServer, LinkState], ...]
    queue_length: int
    resubscription: Progress
    listening: bool
    connections: int
    restarts: int = 0


@dataclass(frozen=True)
class LocalFigures:
    """Where a worker reads its own figures."""

    worker: int
    stats: Stats
    apns: ApnsMetrics
    pool: AdminPool
    listener: AdminListener
    queue_length: Callable[[], int]
    restarts: int = 0

    def read(self) -> WorkerFigures:
        return WorkerFigures(self.worker, os.getpid(), self.stats.snapshot(), self.apns.snapshot(),
                             tuple(self.pool.link_states()), self.queue_length(),
                             self.pool.resubscription, self.listener.listening, self.listener.connections,
                             self.restarts)


# ---------------------------------------------------------------- JSON (between the workers of one instance)


def _server_json(s: SMPServer) -> list[Any]:
    return [list(s.hosts), s.port, base64.b64encode(s.key_hash).decode()]


def _server(data: list[Any]) -> SMPServer:
    return SMPServer(tuple(data[0]), data[1], base64.b64decode(data[2]))


def to_json(f: WorkerFigures) -> dict[str, Any]:
    r = f.resubscription
    return {
        "worker": f.worker, "pid": f.pid, "counters": f.stats.as_dict(),
        "by_server": [[s, label, n] for (s, label), n in f.stats.by_server.items()],
        "gauges": dict(f.stats.gauges),
        "latency": {env: [list(h.counts), h.total, h.sum_s] for env, h in f.apns.latency.items()},
        "answers": [[e, s, reason, n] for (e, s, reason), n in f.apns.answers.items()],
        "links": [[_server_json(s), state] for s, state in f.links],
        "queue_length": f.queue_length,
        "resubscription": [r.servers, r.servers_done, r.subscriptions, r.answered, r.elapsed_s],
        "listening": f.listening, "connections": f.connections, "restarts": f.restarts,
    }


def from_json(d: dict[str, Any]) -> WorkerFigures:
    known = {c.name for c in REGISTRY.counters()}  # a worker of another version may count what this one does not
    gauges = {g.name for g in REGISTRY.gauges()}
    stats = StatsSnapshot(MappingProxyType({k: int(v) for k, v in d["counters"].items() if k in known}),
                          MappingProxyType({(s, label): int(n) for s, label, n in d["by_server"] if s in known}),
                          MappingProxyType({k: v for k, v in d.get("gauges", {}).items() if k in gauges}))
    apns = ApnsSnapshot(MappingProxyType({env: Histogram(tuple(c), int(t), float(s))
                                          for env, (c, t, s) in d["latency"].items()}),
                        MappingProxyType({(e, int(s), r): int(n) for e, s, r, n in d["answers"]}))
    return WorkerFigures(int(d["worker"]), int(d["pid"]), stats, apns,
                         tuple((_server(s), LinkState(str(state))) for s, state in d["links"]), int(d["queue_length"]),
                         Progress(*d["resubscription"]), bool(d["listening"]),
                         int(d["connections"]), int(d["restarts"]))


# ---------------------------------------------------------------- the other workers' side: serve, and ask


class WorkerFiguresServer:
    """A worker's figures on its Unix socket, for worker 0."""

    def __init__(self, local: LocalFigures, path: Path) -> None:
        self._local = local
        self._path = path
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"<WorkerFiguresServer {self._path}>"

    async def start(self) -> None:
        async def figures(_: web.Request) -> web.Response:
            return web.json_response(to_json(self._local.read()))

        app = web.Application()
        app.router.add_get(PATH, figures)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # left by a worker that was killed
        old = os.umask(0o177)  # the socket is created 0600
        try:
            await web.UnixSite(self._runner, str(self._path)).start()
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class WorkerPeers:
    """Worker 0's view of the others: their figures, asked all at once."""

    def __init__(self, state_dir: Path, count: int) -> None:
        self._paths = [socket_path(state_dir, i) for i in range(1, count)]

    def __repr__(self) -> str:
        return f"<WorkerPeers {len(self._paths)}>"

    async def fetch(self) -> list[WorkerFigures | None]:
        return list(await asyncio.gather(*(self._ask(p) for p in self._paths)))

    async def _ask(self, path: Path) -> WorkerFigures | None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT_S), aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(path))) as session, \
                    session.get(f"http://worker{PATH}") as r:
                r.raise_for_status()
                return from_json(await r.json())
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
            return None  # down, restarting, or not this version: shown as down


# ---------------------------------------------------------------- the sums (pure)


def _row(f: WorkerFigures) -> WorkerRow:
    return WorkerRow(f.worker, True, f.pid, f.connections, f.queue_length, tuple(s for s, _ in f.links), f.restarts)


def counted(f: WorkerFigures) -> Counted:
    return Counted.of(f.stats, f.apns)


def merge(fig: Figures, own: WorkerFigures, peers: Sequence[WorkerFigures | None],
          carried: Sequence[Counted] | None = None) -> Figures:
    """``fig`` (worker 0's, with what comes from Redis) with every worker's own figures summed in. Counters:
    ``own``'s and, per other worker, ``carried`` (``Carried.total``: its earlier processes' too, and its last
    read while it does not answer); without ``carried``, the counters of the peers that answered."""
    up = [own, *(p for p in peers if p is not None)]
    parts = carried if carried is not None else [counted(p) for p in peers if p is not None]
    total = sum(parts, counted(own))
    rows = [_row(own)] + [_row(p) if p is not None else WorkerRow(i, False, 0, 0, 0, ())
                          for i, p in enumerate(peers, start=1)]
    owner = {s: f.worker for f in up for s, _ in f.links}
    res = [f.resubscription for f in up]
    return replace(
        fig, stats=StatsSnapshot(MappingProxyType(_every_counter(total.counters)), total.by_server,
                                 MappingProxyType(_gauges([f.stats for f in up]))),
        apns=ApnsSnapshot(total.latency, total.answers),
        links=tuple(link for f in up for link in f.links), queue_length=sum(f.queue_length for f in up),
        connections=sum(f.connections for f in up),
        listening=all(f.listening for f in up),
        resubscription=Progress(sum(r.servers for r in res), sum(r.servers_done for r in res),
                                sum(r.subscriptions for r in res), sum(r.answered for r in res),
                                max(r.elapsed_s for r in res)),
        workers=tuple(rows), owner=MappingProxyType(owner))


def _gauges(snapshots: Sequence[StatsSnapshot]) -> dict[str, float]:
    """Each tracked gauge summed across the workers that track it, or their max (``Gauge.across_workers``)."""
    out: dict[str, float] = {}
    for g in REGISTRY.gauges():
        values = [s.gauges[g.name] for s in snapshots if g.name in s.gauges]
        if values:
            out[g.name] = max(values) if g.across_workers == "max" else sum(values)
    return out


def _every_counter(counters: Mapping[str, int]) -> dict[str, int]:
    """Every counter of this build, as one worker's snapshot has them (0 when none counted it)."""
    return {c.name: counters.get(c.name, 0) for c in REGISTRY.counters()}


class InstanceView:
    """``Sources.across_workers`` of worker 0: its figures with every other worker's summed in."""

    def __init__(self, local: LocalFigures, peers: WorkerPeers) -> None:
        self._local = local
        self._peers = peers
        self._carried = Carried()  # what each other worker slot counted, across its restarts (carry.py)

    def __repr__(self) -> str:
        return f"<InstanceView {self._peers!r} {self._carried!r}>"

    async def _read(self) -> tuple[WorkerFigures, list[WorkerFigures | None], list[Counted]]:
        """Own figures, the others' (None: did not answer), and each other worker's counters to sum."""
        peers = await self._peers.fetch()
        for i, p in enumerate(peers, start=1):
            if p is not None:
                self._carried.update(i, Identity(p.pid, p.restarts), counted(p))
        return self._local.read(), peers, [self._carried.total(i) for i in range(1, len(peers) + 1)]

    async def __call__(self, fig: Figures) -> Figures:
        own, peers, carried = await self._read()
        return merge(fig, own, peers, carried)

    async def counters(self) -> dict[str, int]:
        """Every worker's counters summed (the push window's samples, admin/status.py)."""
        own, _, carried = await self._read()
        return _every_counter(sum(carried, counted(own)).counters)
