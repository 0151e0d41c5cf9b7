"""Server counters (STYLE 11): cheap increments, a frozen snapshot, pure renderers elsewhere.

Counters are typed names (`Stat`), not free strings: a typo is a mypy error, and at run time an unknown
name raises instead of silently starting a new counter. Names follow the Haskell server's counters
(§6.4) in snake case, so operators can compare. A new member shows up in ``/metrics`` and
``/v1/stats`` by itself (admin/metrics.py renders from the enum; give it a help text in admin/catalog.py).

Some counters are also kept per SMP server (``incr_server``, the Haskell ``…Own`` maps): per host for the
operator's own servers (``subscriber.own_server_domains``), all others together as ``"other"``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ntf_server.observability.ownservers import OwnServers


class Stat(enum.StrEnum):
    """Every counter the server keeps; the value is the stable external name (JSON, metrics)."""

    # tokens and subscriptions (§6.4)
    TKN_CREATED = "tkn_created"
    TKN_VERIFIED = "tkn_verified"
    TKN_DELETED = "tkn_deleted"
    TKN_REPLACED = "tkn_replaced"
    TKN_EXPIRED = "tkn_expired"
    TKN_EXPIRED_UNVERIFIED = "tkn_expired_unverified"
    SUB_CREATED = "sub_created"
    SUB_DELETED = "sub_deleted"
    # verification pushes
    NTF_VRF_QUEUED = "ntf_vrf_queued"
    NTF_VRF_DELIVERED = "ntf_vrf_delivered"
    NTF_VRF_FAILED = "ntf_vrf_failed"
    NTF_VRF_INVALID_TKN = "ntf_vrf_invalid_tkn"
    NTF_VRF_RETRIED = "ntf_vrf_retried"  # a retry was scheduled (429, 5xx, timeout, lost connection)
    NTF_VRF_RETRY_EXPIRED = "ntf_vrf_retry_expired"  # the retry deadline passed (also counted failed)
    NTF_VRF_CAPPED = "ntf_vrf_capped"  # over the per-device hourly cap: not sent
    PUSH_QUEUE_FULL = "push_queue_full"
    # message pushes
    NTF_DELIVERED = "ntf_delivered"
    NTF_FAILED = "ntf_failed"
    NTF_INVALID_TKN = "ntf_invalid_tkn"
    NTF_RETRIED = "ntf_retried"
    NTF_RETRY_EXPIRED = "ntf_retry_expired"
    # push policy (README "Push policy"): what each message notification became
    NTF_HIDDEN = "ntf_hidden"  # background push within the budget
    NTF_ALERT = "ntf_alert"  # production alert (parity mode, or over budget with overflow = alert)
    NTF_DEFERRED = "ntf_deferred"  # joined the token's pending push (overflow = defer)
    NTF_DEFERRED_SENT = "ntf_deferred_sent"  # pending pushes sent when the budget returned
    NTF_DEFERRED_STALE = "ntf_deferred_stale"  # pending pushes dropped: token no longer active or gone
    NTF_DROPPED = "ntf_dropped"  # over budget with overflow = drop
    # periodic pushes (§5.10)
    NTF_CRON_DELIVERED = "ntf_cron_delivered"
    NTF_CRON_FAILED = "ntf_cron_failed"
    NTF_CRON_SKIPPED = "ntf_cron_skipped"  # a hidden push reached the device within the interval
    NTF_CRON_SKIPPED_BUDGET = "ntf_cron_skipped_budget"  # budget empty (a hidden push within the last T)
    # NTF connections and requests
    STORE_ERRORS = "store_errors"
    CONN_ACCEPTED = "conn_accepted"
    CONN_REFUSED = "conn_refused"
    CONN_REFUSED_CONNECTIONS = "conn_refused_connections"
    CONN_REFUSED_HANDSHAKES = "conn_refused_handshakes"
    CONN_REFUSED_PER_IP = "conn_refused_per_ip"
    CONN_REFUSED_HANDSHAKES_PER_IP = "conn_refused_handshakes_per_ip"
    CONN_TLS_FAILED = "conn_tls_failed"
    CONN_HANDSHAKE_FAILED = "conn_handshake_failed"
    CONN_CLOSED = "conn_closed"
    REQ_RECEIVED = "req_received"
    REQ_REJECTED = "req_rejected"
    REQ_AUTH_FAILED = "req_auth_failed"
    REQ_PROHIBITED = "req_prohibited"
    REQ_QUOTA_EXCEEDED = "req_quota_exceeded"
    REQ_OVER_BUDGET = "req_over_budget"  # over the per-connection or per-address command budget
    CONN_CLOSED_AUTH = "conn_closed_auth_failures"  # closed after server.max_auth_failures ERR AUTH
    SUB_QUOTA_EXCEEDED = "sub_quota_exceeded"  # SNEW over its rate or the token's caps
    SUB_HOST_REFUSED = "sub_host_refused"  # SNEW naming a private or loopback SMP host
    BLOCKS_BAD = "blocks_bad"
    # subscriber pool
    SMP_CONNECTED = "smp_connected"
    SMP_CONNECT_FAILED = "smp_connect_failed"
    SMP_DISCONNECTED = "smp_disconnected"
    SMP_LINKS_ENDED = "smp_links_ended"
    SMP_SERVICE_SUBSCRIBED = "smp_service_subscribed"
    SMP_SERVICE_DRIFT = "smp_service_drift"
    SMP_SERVICE_FAILED = "smp_service_failed"
    SMP_SERVICE_ENDED = "smp_service_ended"
    SMP_SERVICE_REFUSED = "smp_service_refused"
    SMP_SERVICE_CHANGED = "smp_service_changed"
    SMP_NSUB_SENT = "smp_nsub_sent"
    SMP_NSUB_ANSWERED = "smp_nsub_answered"
    SMP_TIMEOUTS = "smp_timeouts"
    SMP_UNEXPECTED = "smp_unexpected"
    SMP_SUB_OK = "smp_sub_ok"
    SMP_SUB_AUTH = "smp_sub_auth"
    SMP_SUB_SERVICE = "smp_sub_service"
    SMP_SUB_ERR = "smp_sub_err"
    SMP_SUB_END = "smp_sub_end"
    SMP_SUB_DELD = "smp_sub_deld"
    SUB_BAD_KEY = "sub_bad_key"
    NTF_RECEIVED = "ntf_received"
    NTF_RECEIVED_FORGOTTEN = "ntf_received_forgotten"
    NTF_RECEIVED_AUTH = "ntf_received_auth"
    NTF_RECEIVED_INACTIVE = "ntf_received_inactive"
    NTF_LOST_STORE = "ntf_lost_store"


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    counters: Mapping[Stat, int]
    # (counter, own server host or "other") -> count, for the counters kept per SMP server
    by_server: Mapping[tuple[Stat, str], int] = field(default_factory=lambda: MappingProxyType({}))

    def __getitem__(self, name: Stat | str) -> int:
        return self.counters[Stat(name)]

    def as_dict(self) -> dict[str, int]:
        return {k.value: v for k, v in self.counters.items()}


class Stats:
    __slots__ = ("_by_server", "_c", "_labels", "own")

    def __init__(self, own: OwnServers | None = None) -> None:
        self._c: dict[Stat, int] = dict.fromkeys(Stat, 0)
        self._by_server: dict[tuple[Stat, str], int] = {}
        self._labels: dict[tuple[str, ...], str] = {}  # hosts -> label (a handful of SMP servers)
        self.own = own or OwnServers()

    def incr(self, name: Stat, n: int = 1) -> None:
        self._c[name] += n

    def incr_server(self, name: Stat, hosts: Sequence[str], n: int = 1) -> None:
        """Count ``name`` in total and for the SMP server with ``hosts`` (own host name, else "other")."""
        self._c[name] += n
        key = tuple(hosts)
        label = self._labels.get(key)
        if label is None:
            label = self._labels[key] = self.own.label(key)
        k = (name, label)
        self._by_server[k] = self._by_server.get(k, 0) + n

    def __getitem__(self, name: Stat | str) -> int:
        """Read one counter; a string must be a known name (tests read by name), else ValueError."""
        return self._c[Stat(name)]

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(MappingProxyType(dict(self._c)), MappingProxyType(dict(self._by_server)))

    def __repr__(self) -> str:
        busy = ", ".join(f"{k.value}={v}" for k, v in self._c.items() if v)
        return f"<Stats {busy or 'idle'}>"
