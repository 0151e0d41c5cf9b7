"""Readable tables for ``ntf-server stats`` and ``ntf-server policy`` (pure: JSON in, lines out), and the
``policy set key=value`` argument parsing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> list[str]:
    cells = [[str(c) for c in header], *[[_cell(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "-" if v is None else str(v)


def _counts(d: Mapping[str, int] | None) -> str:
    if not d:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _up(ok: bool) -> str:
    return "up" if ok else "DOWN"


def stats_lines(s: Mapping[str, Any], *, all_counters: bool = False) -> list[str]:
    up = _up
    lines = [f"ntf-server {s['version']}: store {up(s['store_up'])}, NTF listener {up(s['listener_up'])}, "
             f"{s['client_connections']} client connections", ""]
    stored, census, active = s.get("stored") or {}, s.get("census"), s.get("active_tokens")
    when = f"census {_age(census['age_s'])}" if census else "census not taken yet"
    rows: list[list[object]] = [
        ["tokens", stored.get("tokens"), _counts(census and census["tokens_by_status"])],
        ["subscriptions", stored.get("subscriptions"), _counts(census and census["subscriptions_by_status"])],
        ["last notifications", stored.get("last_notifications"), ""],
    ]
    lines += table(["stored", "total", f"by status ({when}, approximate)"], rows)
    if active:
        lines += ["", f"  active tokens (estimate): today {active['day']}, this week {active['week']}, "
                      f"this month {active['month']}"]
    smp, r = s["smp_connections"], s["resubscription"]
    lines += ["", f"  SMP servers: {smp['up']} up, {smp['connecting']} connecting, {smp['down']} down, "
                  f"{smp['idle']} idle; push queue {s['push_queue_length']}",
              f"  resubscription at start: {r['servers_done']}/{r['servers']} servers done, {r['answered']} "
              f"answered of up to {r['subscriptions']} in {r['elapsed_s']} s", ""]
    counters = [(k, v) for k, v in sorted(s["counters"].items()) if v or all_counters]
    lines += ["Counters since start" + ("" if all_counters else " (non-zero; --all for every one)")]
    lines += table(["counter", "value"], counters) if counters else ["  none yet"]
    by_server = s.get("counters_by_server") or {}
    if by_server:
        rows = [[name, server, n] for name, per in sorted(by_server.items()) for server, n in sorted(per.items())]
        lines += ["", "Per SMP server (own servers by name)", *table(["counter", "server", "value"], rows)]
    apns = s.get("apns") or {}
    if apns.get("answers"):
        rows = [[a["environment"], a["status"], a["reason"] or "-", a["count"]] for a in apns["answers"]]
        lines += ["", "APNs answers", *table(["environment", "status", "reason", "count"], rows)]
    return lines


def policy_lines(p: Mapping[str, Any]) -> list[str]:
    keys = ("hidden_per_hour", "burst", "overflow")
    rows: list[list[object]] = [["default", *(p[k] for k in keys), ""]]
    for env, over in sorted((p.get("environments") or {}).items()):
        rows.append([env, *(over.get(k, p[k]) for k in keys), "overrides " + ", ".join(sorted(over))])
    return ["Push policy (hidden pushes per device token; over budget: overflow)", *table(["", *keys, ""], rows)]


def parse_assignments(items: Sequence[str]) -> dict[str, object]:
    """``["overflow=defer", "burst=2"]`` -> ``{"overflow": "defer", "burst": 2}`` (ValueError on bad form)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = _value(text.strip())
    return out


def _value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def policy_change(current: Mapping[str, Any], changes: Mapping[str, object], env: str | None) -> dict[str, Any]:
    """The PUT body: the changes to the default, or to one environment's overrides (keeping the others)."""
    if env is None:
        return dict(changes)
    envs = {e: dict(o) for e, o in (current.get("environments") or {}).items()}
    envs[env] = {**envs.get(env, {}), **changes}
    return {"environments": envs}
