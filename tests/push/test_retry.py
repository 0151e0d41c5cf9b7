"""The retry backoff (push/retry.py) and the verification cap (push/caps.py): pure, time passed in."""

from __future__ import annotations

from ntf_server.push.caps import SlidingCap
from ntf_server.push.retry import NO_WAIT, JitteredBackoff


def test_backoff_doubles_is_capped_and_jittered_within_half_to_full() -> None:
    low, high = JitteredBackoff(1.0, 60.0, rng=lambda: 0.0), JitteredBackoff(1.0, 60.0, rng=lambda: 1.0)
    assert [high.delay_s(n, 0) for n in (1, 2, 3, 7, 8, 100)] == [1, 2, 4, 60, 60, 60]
    assert [low.delay_s(n, 0) for n in (1, 2, 3)] == [0.5, 1, 2]
    assert high.delay_s(1, 30.0) == 30.0 and high.delay_s(1, 900.0) == 60.0  # a hint raises, never past the cap
    assert NO_WAIT.delay_s(50, 900.0) == 0.0


def test_the_verification_cap_allows_limit_per_sliding_window() -> None:
    cap: SlidingCap[str] = SlidingCap(3, 3600.0)
    assert [cap.allow("dev", t) for t in (0, 10, 20, 30)] == [True, True, True, False]
    assert cap.allow("other", 30)  # per key
    assert not cap.allow("dev", 3599) and cap.allow("dev", 3600)  # the first event left the window
    assert not cap.allow("dev", 3601)


def test_the_cap_forgets_the_least_recently_seen_keys_first() -> None:
    cap: SlidingCap[str] = SlidingCap(1, 3600.0, max_keys=2)
    assert cap.allow("a", 0) and cap.allow("b", 0)
    assert not cap.allow("a", 1)  # a is now the most recent
    assert cap.allow("c", 2)  # b forgotten
    assert not cap.allow("a", 3) and cap.allow("b", 3)
    assert not SlidingCap(0, 60.0).allow("x", 0)  # 0: verification pushes off
