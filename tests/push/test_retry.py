"""The retry book (push/retry.py) and the verification cap (push/caps.py): pure, time passed in."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ntf_server.push.caps import SlidingCap
from ntf_server.push.retry import NO_WAIT, JitteredBackoff, RetryBook, Verdict

DEADLINE = 600.0


class Fixed:
    """A backoff of ``d`` seconds whatever the attempt (tests choose the schedule)."""

    def __init__(self, d: float) -> None:
        self.d = d

    def delay_s(self, attempt: int, hint_s: float) -> float:
        return self.d


def test_backoff_doubles_is_capped_and_jittered_within_half_to_full() -> None:
    low, high = JitteredBackoff(1.0, 60.0, rng=lambda: 0.0), JitteredBackoff(1.0, 60.0, rng=lambda: 1.0)
    assert [high.delay_s(n, 0) for n in (1, 2, 3, 7, 8, 100)] == [1, 2, 4, 60, 60, 60]
    assert [low.delay_s(n, 0) for n in (1, 2, 3)] == [0.5, 1, 2]
    assert high.delay_s(1, 30.0) == 30.0 and high.delay_s(1, 900.0) == 60.0  # a hint raises, never past the cap
    assert NO_WAIT.delay_s(50, 900.0) == 0.0


def test_a_retry_is_due_after_its_backoff_and_only_once() -> None:
    book: RetryBook[str, str] = RetryBook(Fixed(10.0), DEADLINE)
    assert book.failed("t1", "push", seq=1, attempts=1, first_at=0.0, now=0.0, hint_s=0) is Verdict.SCHEDULED
    assert book.next_due() == 10.0 and book.pop_due(9.9) == []
    [(key, w)] = book.pop_due(10.0)
    assert (key, w.job, w.attempts) == ("t1", "push", 1)
    assert book.pop_due(100.0) == [] and book.next_due() is None and len(book) == 0


def test_the_deadline_counts_from_the_first_try() -> None:
    book: RetryBook[str, str] = RetryBook(Fixed(100.0), DEADLINE)
    assert book.failed("t", "p", 1, 5, first_at=0.0, now=500.0, hint_s=0) is Verdict.SCHEDULED  # due 600
    assert book.failed("u", "p", 2, 6, first_at=0.0, now=500.1, hint_s=0) is Verdict.EXPIRED  # due 600.1
    assert len(book) == 1


def test_a_newer_push_takes_the_waiting_slot_and_keeps_its_due_time() -> None:
    book: RetryBook[str, str] = RetryBook(Fixed(30.0), DEADLINE)
    book.failed("t", "old", 1, 3, first_at=0.0, now=50.0, hint_s=0)  # due 80
    assert book.take_slot("t", "new", seq=2, now=60.0)
    assert not book.take_slot("other", "x", seq=3, now=60.0)  # nothing waits for it: send it now
    [(_, w)] = book.pop_due(80.0)
    assert (w.job, w.seq, w.attempts, w.first_at) == ("new", 2, 3, 60.0)  # fresh deadline, same backoff


def test_an_older_failed_push_never_replaces_a_newer_waiting_one() -> None:
    book: RetryBook[str, str] = RetryBook(Fixed(5.0), DEADLINE)
    assert book.failed("t", "newer", 7, 1, 0.0, 0.0, 0) is Verdict.SCHEDULED
    assert book.failed("t", "older", 3, 1, 0.0, 1.0, 0) is Verdict.SUPERSEDED
    assert book.failed("t", "newest", 9, 1, 0.0, 2.0, 0) is Verdict.REPLACED
    assert [w.job for _, w in book.pop_due(10.0)] == ["newest"]  # the replaced entry left no stale due item
    assert book.next_due() is None


def test_a_full_book_refuses_new_keys_but_still_replaces() -> None:
    book: RetryBook[str, str] = RetryBook(NO_WAIT, DEADLINE, max_waiting=2)
    assert book.failed("a", "1", 1, 1, 0, 0, 0) is Verdict.SCHEDULED
    assert book.failed("b", "2", 2, 1, 0, 0, 0) is Verdict.SCHEDULED
    assert book.failed("c", "3", 3, 1, 0, 0, 0) is Verdict.FULL
    assert book.failed("a", "4", 4, 1, 0, 0, 0) is Verdict.REPLACED


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 50), st.booleans()), max_size=40))
def test_at_most_one_waiting_entry_per_key_and_the_newest_wins(events: list[tuple[str, float, bool]]) -> None:
    """Whatever order pushes fail or arrive in, each key yields at most one due entry: its newest push."""
    book: RetryBook[str, int] = RetryBook(Fixed(1.0), DEADLINE)
    newest: dict[str, int] = {}
    now = 0.0
    for seq, (key, dt, fresh) in enumerate(events):
        now += dt
        for k, w in book.pop_due(now):  # due entries leave the book (sent again elsewhere)
            assert w.job == newest.pop(k)
        if (fresh and book.take_slot(key, seq, seq, now)) or book.failed(key, seq, seq, 1, now, now, 0) in (
                Verdict.SCHEDULED, Verdict.REPLACED):
            newest[key] = seq
    due = book.pop_due(now + 10)
    assert sorted(k for k, _ in due) == sorted(newest) and all(w.job == newest[k] for k, w in due)


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
