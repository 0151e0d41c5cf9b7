"""JSON bodies of ``GET /v1/stats`` and ``GET /v1/smp-servers``: pure functions of ``Figures``.

Nothing sensitive: counts only, no token, subscription or notifier ids, no keys; SMP host names only of
the operator's own servers (``subscriber.own_server_domains``), every other server folded into ``other``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from ntf_server.admin.figures import Figures
from ntf_server.observability.ownservers import OTHER, OwnServers
from ntf_server.protocol.encoding import SMPServer
from ntf_server.subscriber.linkstate import SHOWN_STATES

NOT_SERVED = "not served here"  # in the store, but no link on this instance (yet)


def stats_json(fig: Figures) -> dict[str, Any]:
    by_server: dict[str, dict[str, int]] = defaultdict(dict)
    for (name, server), n in sorted(fig.stats.by_server.items()):
        by_server[name][server] = n
    c, p = fig.census, fig.resubscription
    states: dict[str, int] = defaultdict(int)
    for _, state in fig.links:
        states[state] += 1
    return {
        "version": fig.version,
        "store_up": fig.store_up,
        "listener_up": fig.listening,
        "client_connections": fig.connections,
        "counters": fig.stats.as_dict(),
        "counters_by_server": dict(by_server),
        "stored": None if fig.counts is None else {
            "tokens": fig.counts.tokens, "subscriptions": fig.counts.subscriptions,
            "last_notifications": fig.counts.last_notifications, "smp_servers": fig.counts.smp_servers,
        },
        "census": None if c is None else {
            "tokens_by_status": dict(sorted(c.tokens.items())),
            "subscriptions_by_status": dict(sorted(c.subscriptions.items())),
            "age_s": round(max(0.0, fig.now - c.finished_at), 1), "duration_s": round(c.duration_s, 3),
        },
        "active_tokens": None if fig.active is None else {
            "day": fig.active.day, "week": fig.active.week, "month": fig.active.month,
        },
        "smp_connections": {s: states.get(s, 0) for s in SHOWN_STATES},
        "push_queue_length": fig.queue_length,
        "resubscription": {"servers": p.servers, "servers_done": p.servers_done,
                           "subscriptions": p.subscriptions, "answered": p.answered,
                           "elapsed_s": round(p.elapsed_s, 1)},
        "apns": fig.apns.as_dict(),
        "workers": workers_json(fig),
        **fig.stats.gauges,  # the gauges defined next to their code (metricdef.Gauge), by name
    }


def workers_json(fig: Figures) -> list[dict[str, Any]]:
    """Each worker of the instance (empty for one process): its own figures; the totals above sum them."""
    return [{"worker": w.worker, "up": w.up, "pid": w.pid, "client_connections": w.connections,
             "push_queue_length": w.queue_length, "smp_servers": len(w.servers), "restarts": w.restarts}
            for w in fig.workers]


def smp_servers_json(fig: Figures, own: OwnServers) -> dict[str, Any]:
    """Own servers one by one (host names, port, state, counts); all others as one aggregate."""
    state_of: dict[SMPServer, str] = dict(fig.links)
    per_server: Mapping[SMPServer, Mapping[str, int]] = fig.census.per_server if fig.census else {}
    received = _by_label(fig)
    own_rows: dict[str, dict[str, Any]] = {}
    other: dict[str, Any] = {"servers": 0, "connections": defaultdict(int), "subscriptions": defaultdict(int)}
    by_worker: dict[int, int] = defaultdict(int)
    for server in {*state_of, *per_server}:
        label = own.label(server.hosts)
        state = state_of.get(server, NOT_SERVED)
        subs = per_server.get(server, {})
        if label == OTHER:
            if fig.workers and server in fig.owner:
                by_worker[fig.owner[server]] += 1
            other["servers"] += 1
            other["connections"][state] += 1
            for status, n in subs.items():
                other["subscriptions"][status] += n
            continue
        row = own_rows.setdefault(label, {
            "server": label, "hosts": [h for h in server.hosts if own.is_own_host(h)],
            "port": server.effective_port, "state": state, "subscriptions": {}, **received.get(label, {}),
        })
        if fig.workers:  # which worker holds it (None: none now)
            row["worker"] = fig.owner.get(server)
        for status, n in subs.items():
            row["subscriptions"][status] = row["subscriptions"].get(status, 0) + n
    other["connections"] = dict(sorted(other["connections"].items()))
    other["subscriptions"] = dict(sorted(other["subscriptions"].items()))
    other.update(received.get(OTHER, {}))
    if fig.workers:  # how many of the other servers each worker holds, by worker number
        other["by_worker"] = {str(w.worker): by_worker.get(w.worker, 0) for w in fig.workers}
    return {
        "own_server_domains": bool(own),
        "census_age_s": None if fig.census is None else round(max(0.0, fig.now - fig.census.finished_at), 1),
        "own": [own_rows[k] for k in sorted(own_rows)],
        "other": other,
    }


def _by_label(fig: Figures) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (name, label), n in fig.stats.by_server.items():
        out[label][name] = n
    return out
