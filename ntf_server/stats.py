"""Server counters (STYLE 11): cheap increments, a frozen snapshot, pure renderers elsewhere.

Names follow the Haskell server's counters (spec §6.4) in snake case, so operators can compare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

KNOWN: Final = (
    "tkn_created", "tkn_verified", "tkn_deleted", "tkn_replaced", "tkn_expired", "sub_created", "sub_deleted",
    "ntf_vrf_queued", "ntf_vrf_delivered", "ntf_vrf_failed", "ntf_vrf_invalid_tkn", "push_queue_full",
    "store_errors", "conn_accepted", "conn_refused", "conn_refused_connections", "conn_refused_handshakes",
    "conn_refused_per_ip", "conn_tls_failed", "conn_handshake_failed", "conn_closed",
    "req_received", "req_rejected", "req_auth_failed", "req_prohibited", "blocks_bad",
    "req_quota_exceeded", "tkn_expired_unverified", "ntf_delivered", "ntf_failed", "ntf_invalid_tkn",
    # subscriber pool
    "smp_connected", "smp_connect_failed", "smp_disconnected", "smp_nsub_sent", "smp_nsub_answered",
    "smp_timeouts", "smp_unexpected",
    "smp_sub_ok", "smp_sub_auth", "smp_sub_service", "smp_sub_err", "smp_sub_end", "smp_sub_deld", "sub_bad_key",
    "ntf_received", "ntf_received_forgotten", "ntf_received_auth", "ntf_received_inactive", "ntf_lost_store",
)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    counters: Mapping[str, int]

    def __getitem__(self, name: str) -> int:
        return self.counters.get(name, 0)


class Stats:
    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c: Counter[str] = Counter({k: 0 for k in KNOWN})

    def incr(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def __getitem__(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(MappingProxyType(dict(self._c)))

    def __repr__(self) -> str:
        busy = ", ".join(f"{k}={v}" for k, v in self._c.items() if v)
        return f"<Stats {busy or 'idle'}>"
