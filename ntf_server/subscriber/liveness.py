"""When an SMP connection sends PING and when it is given up (§3.3), pure: time is passed in.

Theory of operation: the client calls :meth:`Liveness.received` for every block that arrives,
:meth:`timed_out` with the number of commands its session just expired, and, on each timer tick,
:meth:`ping_due` / :meth:`drop_reason`. A connection that has received nothing for ``ping_idle_s`` sends
``PING`` (again every ``ping_idle_s`` while the silence lasts). It is dropped when ``drop_after_timeouts``
commands in a row got no answer **and** nothing at all arrived for ``drop_after_silence_s`` — a server busy
flushing notifications to us is slow, not dead.

Deliberate difference from the Haskell server (§8): it waits for 15 minutes of silence; a half-open
TCP connection then costs up to 15 minutes of lost pushes. Our default, 180 s, drops after the third PING
went unanswered (PINGs at 60, 120, 180 s of silence, each timing out 30 s later).

The time given here is the client's *session* time, which stands still while the pool is not taking
events (back-pressure): answers waiting unread in the socket must not count as silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timers of one SMP connection (seconds). The pool maps its configuration onto this."""

    connect_s: float = 45.0  # TCP + TLS + SMP handshake, per host tried (Haskell: 45 s in background mode)
    response_s: float = 30.0  # an NSUB or PING unanswered this long has timed out (a temporary error)
    ping_idle_s: float = 60.0  # nothing received this long → PING
    drop_after_timeouts: int = 3  # commands in a row that timed out ...
    drop_after_silence_s: float = 180.0  # ... and nothing received this long → drop the connection
    write_s: float = 30.0  # a block the server does not take within this → the connection is lost
    block_read_s: float = 30.0  # a block that started arriving must be complete within this
    tick_s: float = 1.0  # how often the timers above are checked

    def __post_init__(self) -> None:
        for name in ("connect_s", "response_s", "ping_idle_s", "write_s", "block_read_s", "tick_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.drop_after_timeouts < 1 or self.drop_after_silence_s < 0:
            raise ValueError("drop_after_timeouts must be ≥ 1 and drop_after_silence_s ≥ 0")


class Liveness:
    def __init__(self, timeouts: Timeouts, *, now: float) -> None:
        self._t = timeouts
        self.last_received = now
        self.last_ping: float | None = None
        self.timeouts_in_a_row = 0

    def __repr__(self) -> str:
        return f"<Liveness {self.timeouts_in_a_row} timeouts in a row>"

    def received(self, now: float) -> None:
        """Anything arrived: the server is alive, whatever it said."""
        self.last_received = now
        self.timeouts_in_a_row = 0

    def timed_out(self, commands: int) -> None:
        self.timeouts_in_a_row += commands

    def ping_due(self, now: float) -> bool:
        if now - self.last_received < self._t.ping_idle_s:
            return False
        return self.last_ping is None or now - self.last_ping >= self._t.ping_idle_s

    def pinged(self, now: float) -> None:
        self.last_ping = now

    def drop_reason(self, now: float) -> str | None:
        """Why the connection should be dropped now, or None."""
        silent = now - self.last_received
        if self.timeouts_in_a_row >= self._t.drop_after_timeouts and silent >= self._t.drop_after_silence_s:
            return f"{self.timeouts_in_a_row} commands in a row timed out, nothing received for {silent:.0f} s"
        return None


class SessionClock:
    """The injected clock minus the time spent paused (the reader waiting for the consumer)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.paused_s = 0.0  # completed pauses
        self._since: float | None = None

    @property
    def paused(self) -> bool:
        return self._since is not None

    def pause(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def resume(self) -> None:
        if self._since is not None:
            self.paused_s += self._clock() - self._since
            self._since = None

    def now(self) -> float:
        t = self._clock()
        return t - self.paused_s - (t - self._since if self._since is not None else 0.0)
