"""The hidden-push budget and the overflow decision (push/policy.py), pure: tables and hypothesis.

``simulate`` plays the whole policy as the server does: notifications arrive; each is decided; a pending
(deferred) push is claimed by the scheduler at its due time (or later, as a late scheduler would); each
push carries the token's newest <= 6 notifications as of when its body was built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, strategies as st

from ntf_server.config import Overflow
from ntf_server.push.policy import (
    Budget,
    BudgetState,
    CronDecision,
    Decision,
    available_at,
    claim,
    cron_decide,
    decide,
    interval_s,
)

H: Decision = Decision.HIDDEN
A: Decision = Decision.ALERT
D: Decision = Decision.DEFER
X: Decision = Decision.DROP


def decisions(b: Budget, times: list[float]) -> list[Decision]:
    """Decisions for notifications at ``times`` (no scheduler: pending pushes stay pending)."""
    state, pending, out = BudgetState(), None, []
    for t in times:
        v = decide(b, state, t, pending)
        state, out = v.state, [*out, v.decision]
        pending = v.due if v.decision is D else (None if v.cancel_pending else pending)
    return out


DEFAULT = Budget(3.0, 3, Overflow.ALERT)


@pytest.mark.parametrize(
    ("budget", "times", "expected"),
    [
        # parity: every notification is the production alert, whatever the history
        (Budget(0.0, 3, Overflow.DEFER), [0, 1, 2, 3, 4], [A, A, A, A, A]),
        # defaults: 3 back to back, then one per 20 minutes
        (DEFAULT, [0, 1, 2, 3], [H, H, H, A]),
        (DEFAULT, [0, 1, 2, 3, 1199, 1200, 1201], [H, H, H, A, A, H, A]),
        (DEFAULT, [0, 1, 2, 3600, 3601, 3602, 3603], [H, H, H, H, H, H, A]),  # an idle hour refills all 3
        (Budget(3.0, 3, Overflow.DROP), [0, 1, 2, 3, 4], [H, H, H, X, X]),
        (Budget(3.0, 3, Overflow.DEFER), [0, 1, 2, 3, 4], [H, H, H, D, D]),
        (Budget(3.0, 1, Overflow.ALERT), [0, 1, 1199, 1200, 2400], [H, A, A, H, H]),  # burst 1: one per T
        (Budget(60.0, 2, Overflow.ALERT), [0, 0, 0, 60, 60, 90], [H, H, A, H, A, A]),
        # a notification that finds the budget back while a push is pending is sent at once
        (Budget(3.0, 3, Overflow.DEFER), [0, 1, 2, 3, 1300], [H, H, H, D, H]),
    ],
)
def test_decision_table(budget: Budget, times: list[float], expected: list[Decision]) -> None:
    assert decisions(budget, times) == expected


def test_defer_is_due_when_the_budget_returns_and_later_notifications_join_it() -> None:
    b = Budget(3.0, 3, Overflow.DEFER)
    state = BudgetState()
    for t in (0, 1, 2):
        state = decide(b, state, t).state
    first = decide(b, state, 3)
    assert (first.decision, first.due) == (D, 1200)  # tat 3600 - tau 2400
    second = decide(b, first.state, 4, pending_due=first.due)
    assert (second.decision, second.due) == (D, 1200)  # joins the pending push
    later = decide(b, second.state, 1300, pending_due=1200)
    assert later.decision is H and later.cancel_pending


def test_claim_consumes_or_reschedules() -> None:
    b = Budget(3.0, 3, Overflow.DEFER)
    empty = BudgetState(tat=3600.0)  # three pushes at 0
    assert claim(b, empty, 1199.0) == (False, empty, 1200.0)
    sent, state, _ = claim(b, empty, 1200.0)
    assert sent and state == BudgetState(4800.0, 1200.0)
    assert claim(Budget(0.0, 3, Overflow.DEFER), empty, 5.0) == (True, empty, 5.0)  # parity: flushed as is


@pytest.mark.parametrize(
    ("budget", "state", "now", "interval", "expected"),
    [
        (DEFAULT, BudgetState(), 10_000.0, 1200.0, CronDecision.SEND),
        (DEFAULT, BudgetState(0.0, 9_000.0), 10_000.0, 1200.0, CronDecision.SKIP_RECENT),
        (DEFAULT, BudgetState(0.0, 8_800.0), 10_000.0, 1200.0, CronDecision.SEND),  # its own last push: sent
        (Budget(3.0, 1, Overflow.ALERT), BudgetState(10_600.0, 9_400.0), 10_000.0, 300.0, CronDecision.SKIP_BUDGET),
        (Budget(0.0, 3, Overflow.ALERT), BudgetState(), 10_000.0, 1200.0, CronDecision.SEND),
        (Budget(0.0, 3, Overflow.ALERT), BudgetState(0.0, 9_500.0), 10_000.0, 1200.0, CronDecision.SKIP_RECENT),
    ],
)
def test_cron_table(budget: Budget, state: BudgetState, now: float, interval: float, expected: CronDecision) -> None:
    decision, after = cron_decide(budget, state, now, interval)
    assert decision is expected
    assert (after != state) == (expected is CronDecision.SEND and not budget.parity)


# ------------------------------------------------------------------------------------------- simulation

@dataclass
class Push:
    at: float
    kind: str  # "hidden" (at a notification) | "deferred" (claimed by the scheduler) | "alert"
    carries: tuple[int, ...]  # indexes of the notifications in its list (the newest <= 6 when built)


@dataclass
class Sim:
    budget: Budget
    scheduler_delay: float = 0.0
    state: BudgetState = field(default_factory=BudgetState)
    pending_due: float | None = None
    pending_list: tuple[int, ...] = ()
    arrived: list[float] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def newest(self) -> tuple[int, ...]:
        return tuple(range(max(0, len(self.arrived) - 6), len(self.arrived)))

    def run_scheduler(self, until: float) -> None:
        while self.pending_due is not None and self.pending_due + self.scheduler_delay <= until:
            at = self.pending_due + self.scheduler_delay
            sent, self.state, again = claim(self.budget, self.state, at)
            if sent:
                self.pushes.append(Push(at, "deferred", self.pending_list))
                self.pending_due, self.pending_list = None, ()
            else:
                self.pending_due = again

    def notify(self, t: float) -> None:
        self.run_scheduler(t)
        self.arrived.append(t)
        v = decide(self.budget, self.state, t, self.pending_due)
        self.state = v.state
        match v.decision:
            case Decision.HIDDEN:
                self.pushes.append(Push(t, "hidden", self.newest()))
                if v.cancel_pending:
                    self.pending_due, self.pending_list = None, ()
            case Decision.ALERT:
                self.pushes.append(Push(t, "alert", self.newest()))
            case Decision.DEFER:
                self.pending_due, self.pending_list = v.due, self.newest()
            case Decision.DROP:
                self.dropped.append(len(self.arrived) - 1)


budgets = st.builds(Budget, st.sampled_from([0.5, 1.0, 2.0, 3.0, 6.0, 60.0, 3600.0]), st.integers(1, 8),
                    st.sampled_from(list(Overflow)))
arrivals = st.lists(st.floats(0, 4 * 3600, allow_nan=False), min_size=1, max_size=60).map(sorted)


def hidden_times(sim: Sim) -> list[float]:
    return sorted(p.at for p in sim.pushes if p.kind != "alert")


@settings(max_examples=300, deadline=None)
@given(budgets, arrivals, st.sampled_from([0.0, 0.5, 700.0]))
def test_never_more_hidden_pushes_than_the_budget_in_any_window(b: Budget, times: list[float], late: float) -> None:
    """Closed window of W s: <= burst + floor(W / T); half-open hour: <= burst + ceil(3600 / T) - 1. Hidden
    pushes here are the immediate ones and the deferred ones the scheduler sends (late or not)."""
    sim = Sim(b, scheduler_delay=late)
    for t in times:
        sim.notify(t)
    sim.run_scheduler(math.inf)
    h = hidden_times(sim)
    if b.parity:
        assert h == []
        return
    period = interval_s(b)
    for i in range(len(h)):
        for j in range(i, len(h)):
            assert j - i + 1 <= b.burst + math.floor((h[j] - h[i]) / period + 1e-9)
        in_hour = sum(1 for t in h[i:] if t < h[i] + 3600 - 1e-6)  # a push exactly an hour later may round below
        assert in_hour <= b.burst + math.ceil(3600 / period - 1e-9) - 1


@settings(max_examples=300, deadline=None)
@given(budgets.map(lambda b: Budget(max(b.hidden_per_hour, 0.5), b.burst, Overflow.DEFER)), arrivals,
       st.sampled_from([0.0, 0.5, 700.0]))
def test_under_defer_every_notification_reaches_the_device(b: Budget, times: list[float], late: float) -> None:
    """"Reaches": each notification n is followed by a push (decided at or after n arrived, so the app,
    woken with checkMessages, fetches n from its SMP server), and the first such push carries n itself
    unless 6 newer notifications had arrived by the time its list was read (the <= 6 window: it then
    carries those 6, and the app still fetches n). The last notification is always carried. No
    notification is alerted or dropped, and every push is sent no later than the budget allows."""
    sim = Sim(b, scheduler_delay=late)
    for t in times:
        sim.notify(t)
    sim.run_scheduler(math.inf)
    assert sim.dropped == [] and all(p.kind != "alert" for p in sim.pushes)
    assert sim.pending_due is None
    for n, t in enumerate(sim.arrived):
        first = next(p for p in sorted(sim.pushes, key=lambda p: p.at) if p.at >= t and
                     (not p.carries or p.carries[-1] >= n))
        assert n in first.carries or len([m for m in first.carries if m > n]) == 6
    last = len(sim.arrived) - 1
    assert any(last in p.carries for p in sim.pushes)


def test_available_at_is_never_in_parity() -> None:
    assert available_at(BudgetState(5.0), Budget(0.0, 1, Overflow.DEFER)) == math.inf
