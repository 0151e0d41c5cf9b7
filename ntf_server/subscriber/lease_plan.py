"""Which SMP servers an instance (or worker) should hold, decided without I/O (subscriber/leases.py runs it).

``plan`` picks the free servers to take: up to the instance's fair share of the subscriptions (the
biggest servers first), and any server free for longer than the grace whatever the share (nobody else took
it). ``to_give_up`` picks one server to hand to a poorer instance when this one holds more than its share
and the move narrows the gap (so a server never goes back and forth). ``overdue``: a lease confirmed too
long ago to be trusted (Redis may free it within a round). Time is a number; nothing sleeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.leases import ServerLease


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl_s: float = 15.0  # a lease not renewed for this long is free for others
    renew_s: float = 3.0  # renewal (and listing) interval; < ttl_s / 2 so one lost round costs nothing
    handoff_s: float = 0.5  # how often the owner picks up SNEWs handed to it
    grace_s: float = 15.0  # a server free this long is taken whatever the fair share

    def __post_init__(self) -> None:
        if not 0 < self.renew_s * 2 < self.ttl_s:
            raise ValueError("lease renewal must be less than half the lease time")


DEFAULT_LEASES: Final = LeaseSettings()


def fair_share(listing: Sequence[ServerLease], alive: int) -> int:
    """Subscriptions each of ``alive`` instances should hold (rounded up)."""
    return math.ceil(sum(x.subscriptions for x in listing) / max(alive, 1))


def plan(listing: Sequence[ServerLease], me: str, alive: int, free_since: Mapping[SMPServer, float], now: float,
         grace_s: float) -> list[ServerLease]:
    """The free servers to try to take, in order: the largest first while under the fair share, then any
    free for longer than ``grace_s``."""
    share = fair_share(listing, alive)
    mine = sum(x.subscriptions for x in listing if x.owner == me)
    take = []
    for x in sorted((x for x in listing if x.owner is None), key=lambda x: (-x.subscriptions, x.number)):
        if mine < share or now - free_since.get(x.server, now) >= grace_s:
            take.append(x)
            mine += x.subscriptions
    return take


def to_give_up(listing: Sequence[ServerLease], me: str, alive: Sequence[str]) -> ServerLease | None:
    """The one server to hand over this round, to rebalance after an instance joined: only when no server is
    free, this instance holds more than its fair share, and another one alive holds less; the largest of
    its servers that narrows the gap to the poorest without taking this instance below its share (so it
    does not take the server back: ``plan`` takes only below the share). One server a round: no storm."""
    if any(x.owner is None for x in listing):
        return None
    share = fair_share(listing, len(alive))
    totals = dict.fromkeys(alive, 0)
    for x in listing:
        if x.owner in totals:
            totals[x.owner] += x.subscriptions
    mine = totals.get(me, 0)
    others = [t for owner, t in totals.items() if owner != me]
    if not others or mine <= share or min(others) >= share:
        return None
    gap = mine - min(others)
    fits = [x for x in listing if x.owner == me and 0 < x.subscriptions < gap and mine - x.subscriptions >= share]
    return max(fits, key=lambda x: (x.subscriptions, -x.number), default=None)


def overdue(now: float, confirmed_at: float, s: LeaseSettings) -> bool:
    """A lease last confirmed at ``confirmed_at`` must be given up now: Redis could free it within one more
    round (``confirmed_at`` is taken before the renewal was sent, so this errs on the early side)."""
    return now - confirmed_at >= s.ttl_s - s.renew_s
