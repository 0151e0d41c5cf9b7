"""When an SMP connection PINGs and when it is dropped (subscriber/liveness.py): pure, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ntf_server.subscriber.liveness import Liveness, SessionClock, Timeouts

T = Timeouts(response_s=30, ping_idle_s=60, drop_after_timeouts=3, drop_after_silence_s=180)


def test_ping_after_the_idle_interval_then_every_interval_while_silent() -> None:
    live = Liveness(T, now=0)
    assert not live.ping_due(59.9)
    assert live.ping_due(60)
    live.pinged(60)
    assert not live.ping_due(119.9)
    assert live.ping_due(120)


def test_anything_received_restarts_the_idle_interval() -> None:
    live = Liveness(T, now=0)
    live.pinged(60)
    live.received(70)
    assert not live.ping_due(129.9)
    assert live.ping_due(130)


def test_drop_needs_repeated_timeouts_and_silence() -> None:
    live = Liveness(T, now=0)
    live.timed_out(2)
    assert live.drop_reason(1000) is None  # silent for long, but only two timeouts
    live.timed_out(1)
    assert live.drop_reason(179) is None  # three timeouts, but not yet 180 s silent
    reason = live.drop_reason(180)
    assert reason is not None and "3 commands in a row" in reason


def test_an_answer_resets_the_timeout_count() -> None:
    live = Liveness(T, now=0)
    live.timed_out(5)
    live.received(10)
    assert live.timeouts_in_a_row == 0
    assert live.drop_reason(1000) is None


@pytest.mark.parametrize("bad", [{"response_s": 0}, {"tick_s": -1}, {"drop_after_timeouts": 0},
                                 {"drop_after_silence_s": -1}])
def test_timeouts_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Timeouts(**bad)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(["rx", "timeout", "tick"]), st.floats(0, 100)), max_size=40))
def test_dropped_exactly_when_both_conditions_hold(steps: list[tuple[str, float]]) -> None:
    live, now, last_rx, run = Liveness(T, now=0), 0.0, 0.0, 0
    for kind, dt in steps:
        now += dt
        if kind == "rx":
            live.received(now)
            last_rx, run = now, 0
        elif kind == "timeout":
            live.timed_out(1)
            run += 1
        expected = run >= T.drop_after_timeouts and now - last_rx >= T.drop_after_silence_s
        assert (live.drop_reason(now) is not None) == expected


def test_session_clock_stands_still_while_paused() -> None:
    t = [100.0]
    clock = SessionClock(lambda: t[0])
    t[0] = 110.0
    assert clock.now() == 110.0
    clock.pause()
    t[0] = 500.0
    assert clock.now() == 110.0 and clock.paused
    clock.pause()  # idempotent
    clock.resume()
    t[0] = 505.0
    assert clock.now() == 115.0 and clock.paused_s == 390.0 and not clock.paused
    clock.resume()  # idempotent
    assert clock.paused_s == 390.0
