"""Connection admission bookkeeping (pure): every socket counts from accept; handshake and per-address caps;
when memory is worth returning after connections end."""

from __future__ import annotations

from collections.abc import Callable

from ntf_server.transport.admission import Admission, Caps, Refusal
from ntf_server.transport.memory import MemoryReturner


def test_every_socket_counts_until_released() -> None:
    a = Admission(Caps(max_connections=2, max_handshakes=10, max_per_ip=10))
    assert a.admit("a") is None and a.admit("b") is None
    assert a.admit("c") is Refusal.CONNECTIONS
    a.handshake_done("a")  # finishing the handshake frees no connection slot
    assert a.admit("c") is Refusal.CONNECTIONS
    a.release("a", handshaking=False)
    assert a.admit("c") is None
    assert (a.total, a.handshaking) == (2, 2)


def test_handshake_cap_frees_when_a_handshake_ends_either_way() -> None:
    a = Admission(Caps(max_connections=10, max_handshakes=2, max_per_ip=10))
    assert a.admit("a") is None and a.admit("b") is None
    assert a.admit("c") is Refusal.HANDSHAKES
    a.handshake_done("a")
    assert a.admit("c") is None
    a.release("c", handshaking=True)  # died in its handshake
    assert a.admit("d") is None
    assert (a.total, a.handshaking) == (3, 2)


def test_per_ip_cap_counts_one_address_only() -> None:
    a = Admission(Caps(max_connections=10, max_handshakes=10, max_per_ip=2))
    assert a.admit("a") is None and a.admit("a") is None
    assert a.admit("a") is Refusal.PER_IP
    assert a.admit("b") is None
    a.release("a", handshaking=True)
    assert a.count("a") == 1 and a.admit("a") is None
    for _ in range(2):
        a.release("a", handshaking=True)
    assert a.count("a") == 0 and a.total == 1


def test_handshakes_per_ip_cap_counts_one_address_only() -> None:
    """Issue 16.3: a few addresses must not hold every handshake slot."""
    a = Admission(Caps(max_connections=10, max_handshakes=10, max_per_ip=10, max_handshakes_per_ip=2))
    assert a.admit("a") is None and a.admit("a") is None
    assert a.admit("a") is Refusal.HANDSHAKES_PER_IP
    assert a.admit("b") is None  # another address still gets in
    a.handshake_done("a")  # one of a's sockets is through: a may start another handshake
    assert a.admit("a") is None
    a.release("a", handshaking=True)  # one died in its handshake
    assert a.admit("a") is None
    assert a.admit("a") is Refusal.HANDSHAKES_PER_IP
    assert (a.total, a.handshaking, a.count("a")) == (4, 3, 3)


def test_the_first_exceeded_limit_is_reported() -> None:
    a = Admission(Caps(max_connections=1, max_handshakes=1, max_per_ip=1))
    assert a.admit("a") is None
    assert a.admit("a") is Refusal.CONNECTIONS


async def test_memory_is_trimmed_after_a_fall_in_connections_not_after_churn() -> None:
    open_now = 0
    returner = MemoryReturner(lambda: open_now)
    for n in range(1, 2101):  # a flood on top of 100 connections
        open_now = n
        returner.connection_started()
    open_now = 2060
    returner.connection_ended()
    assert not returner.trim_pending  # 40 fewer: could be churn
    open_now = 100
    returner.connection_ended()
    assert returner.trim_pending  # the flood ended
    returner.close()
    steady = MemoryReturner(lambda: open_now)
    open_now = 10_000
    steady.connection_started()
    open_now = 9_800  # 200 closed, about to be replaced: ordinary churn at 10,000 connections
    steady.connection_ended()
    assert not steady.trim_pending


class Timers:
    """A hand-driven clock for MemoryReturner: pending callbacks run when the test says so."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timers:
        self.pending.append(fn)
        return self

    def cancel(self) -> None:
        self.pending.clear()

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for fn in due:
            fn()


def test_a_flood_that_takes_a_while_to_end_is_trimmed_once_after_its_last_socket() -> None:
    count = [2000]
    timers = Timers()
    returner = MemoryReturner(lambda: count[0], call_later=timers.call_later)
    returner.connection_started()
    count[0] = 1400
    returner.connection_ended()
    for n in (1000, 600, 0):  # still closing at every check
        count[0] = n
        returner.connection_ended()
        timers.fire()
        assert returner.peak == 2000 and returner.trim_pending  # not trimmed half-way
    timers.fire()  # a quiet interval: the fall has stopped
    assert returner.peak == 0 and not returner.trim_pending


def test_a_flood_that_never_stops_ending_is_trimmed_after_the_longest_wait() -> None:
    count = [2000]
    timers = Timers()
    returner = MemoryReturner(lambda: count[0], call_later=timers.call_later, delay_s=5, max_wait_s=15)
    returner.connection_started()
    count[0] = 1000
    returner.connection_ended()
    for _ in range(3):
        count[0] -= 100
        timers.fire()
    assert returner.peak == 700 and not returner.trim_pending
