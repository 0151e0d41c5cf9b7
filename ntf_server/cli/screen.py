"""The ``ntf-server status`` screen: pure, ``/v1/status`` JSON in, lines out (fits 80x24 for a small
deployment: sections Server, Workers (with several), Store, SMP servers, Pushes, Policy)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from ntf_server.admin.window import SPAN_S, STEP_S
from ntf_server.cli.tables import table

LABEL: Final = 13  # width of the section names
MAX_NAMED: Final = 3  # own SMP servers named as down, the rest counted
MAX_WORKERS_SHOWN: Final = 4  # workers one a line; the rest counted (the screen stays within 24 lines)


def duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min {s % 60} s" if m else f"{s} s"


def _counts(d: Mapping[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if d else "none"


def _n(v: object) -> str:
    return "?" if v is None else str(v)


def _line(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def status_lines(s: Mapping[str, Any]) -> list[str]:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(s["started_at"]))
    health = "healthy" if s["healthy"] else "UNHEALTHY"
    lines = [f"ntf-server {s['version']}, up {duration(s['uptime_s'])} (since {started}): {health}",
             *(f"  ! {p}" for p in s["problems"]), ""]
    sv = s["server"]
    lines.append(_line("Server", f"NTF listener {'up' if sv['listener_up'] else 'DOWN'}, "
                       f"{sv['client_connections']} client connections, push queue {sv['push_queue_length']}"))
    lines += _workers(s.get("workers") or [])
    lines += _store(s["store"])
    lines += _smp(s["smp_servers"])
    lines += _pushes(s["pushes"])
    lines += _policy(s["policy"])
    return lines


def _workers(rows: list[Mapping[str, Any]]) -> list[str]:
    """One line per worker (none for one process): its connections, queue and SMP servers."""
    out: list[str] = []
    for w in rows[:MAX_WORKERS_SHOWN]:
        if not w["up"]:
            out.append(_line("Workers" if not out else "", f"{w['worker']}: DOWN (not answering)"))
            continue
        named = w["own_servers"][:MAX_NAMED]
        more = len(w["own_servers"]) - len(named) + w["other_servers"]
        servers = ", ".join([*named, *([f"{more} other"] if more else [])]) or "none"
        out.append(_line("Workers" if not out else "", f"{w['worker']}: pid {w['pid']}, {w['client_connections']} "
                         f"connections, queue {w['push_queue_length']}, SMP servers: {servers}"))
    if len(rows) > MAX_WORKERS_SHOWN:
        down = sum(not w["up"] for w in rows[MAX_WORKERS_SHOWN:])
        out.append(_line("", f"and {len(rows) - MAX_WORKERS_SHOWN} more ({down} down): --json shows every one"))
    return out


def _store(st: Mapping[str, Any]) -> list[str]:
    if not st["up"]:
        return [_line("Store", "Redis DOWN: no figures")]
    out = [_line("Store", f"Redis up: {_n(st['tokens'])} tokens, {_n(st['subscriptions'])} subscriptions, "
                          f"{_n(st['last_notifications'])} last notifications")]
    if st["census_age_s"] is None:
        return [*out, _line("", "by status: census not taken yet")]
    age = st["census_age_s"]
    when = f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago"
    return [*out, _line("", f"tokens: {_counts(st['tokens_by_status'])}"),
            _line("", f"subscriptions: {_counts(st['subscriptions_by_status'])}"),
            _line("", f"(by status: census {when}, approximate)")]


def _smp(smp: Mapping[str, Any]) -> list[str]:
    text = f"{smp['up']} up, {smp['down']} down, {smp['connecting']} connecting, {smp['idle']} idle"
    r = smp["resubscription"]
    if r["servers_done"] < r["servers"]:
        text += f"; resubscribing {r['servers_done']}/{r['servers']}"
    out = [_line("SMP servers", text)]
    down = smp["own_down"]
    if down:
        more = f" and {len(down) - MAX_NAMED} more" if len(down) > MAX_NAMED else ""
        out.append(_line("", "own servers down: " + ", ".join(down[:MAX_NAMED]) + more))
    return out


def window_label(seconds: float | None) -> str:
    """"last hour" when the window is one (a step or two over), else how long it really is."""
    if seconds is None:
        return "recent"
    if SPAN_S <= seconds <= SPAN_S + 2 * STEP_S:
        return "last hour"
    if seconds < SPAN_S:  # a server younger than an hour: since start
        return f"last {seconds // 60:.0f} min" if seconds >= 60 else f"last {seconds:.0f} s"
    return f"last {duration(seconds)}"


def _pushes(p: Mapping[str, Any]) -> list[str]:
    kinds: Mapping[str, Mapping[str, int | None]] = p["kinds"]
    if not kinds:
        return [_line("Pushes", "not counted (no push window on this server)")]
    # a kind this version does not count is "-" (tables.table's None), not 0
    rows = [[k.replace("_", " "), v["last_hour"], v["since_start"]] for k, v in kinds.items()]
    head, *body = table(["", window_label(p["window_s"]), "since start"], rows, indent="")
    return [_line("Pushes", head), *(_line("", r) for r in body)]


def _policy(pol: Mapping[str, Any] | None) -> list[str]:
    if pol is None:
        return [_line("Policy", "unknown (the store does not answer)")]
    out = [_line("Policy", _budget(pol))]
    for env, over in sorted((pol.get("environments") or {}).items()):
        out.append(_line("", f"{env}: " + ", ".join(f"{k} {v}" for k, v in sorted(over.items()))))
    return out


def _budget(pol: Mapping[str, Any]) -> str:
    if not pol["hidden_per_hour"]:  # push/policy.py: 0 is SimpleX parity
        return "SimpleX parity: every message push an alert (hidden_per_hour 0)"
    return (f"{pol['hidden_per_hour']:g} hidden pushes per hour per device, burst {pol['burst']}, "
            f"over budget: {pol['overflow']}")
