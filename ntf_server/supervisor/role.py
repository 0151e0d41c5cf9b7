"""What makes one worker of an instance different from the others (``[server] workers``, README "Workers").

A worker is a whole server (server.py) with these differences: it takes its own lock and lease identity, so
each worker is one lease holder (subscriber/leases.py) and a restarted worker frees its predecessor's leases
at once; it listens with ``SO_REUSEPORT`` on the port the supervisor chose; it uses the supervisor's embedded
Redis; and only worker 0 serves the admin API (one admin port per instance).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerRole:
    index: int  # 0 .. count - 1
    count: int
    port: int  # the NTF port every worker listens on (chosen by the supervisor when the config says 0)
    redis_url: str = ""  # the supervisor's embedded Redis; empty = the config's [redis] url
    restarts: int = 0  # times the supervisor started this worker again before this process (admin figures)

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def lock_name(self) -> str:
        """Its lock in the state directory (statelock.py); the supervisor holds ``ntf-server.lock``."""
        return f"worker-{self.index}.lock"

    @property
    def instance_file(self) -> str:
        """Its lease identity file in the state directory (subscriber/leases.py ``instance_ids``)."""
        return f"instance.worker-{self.index}"

    @property
    def serves_admin(self) -> bool:
        return self.index == 0
