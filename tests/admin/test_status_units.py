"""Pure parts of ``ntf-server status``: the per-minute counter window (no sleeping: time is passed in),
push kinds looked up by name, the /v1/status JSON from a ``Figures`` value, and the screen."""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given, settings, strategies as st

from ntf_server.admin import status
from ntf_server.admin.figures import Figures
from ntf_server.admin.window import SPAN_S, STEP_S, CounterWindow, Recent, push_counter_names, push_kinds
from ntf_server.cli import screen
from ntf_server.observability.apns_metrics import ApnsMetrics
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.model import NTF_VRF_DELIVERED
from ntf_server.store.base import StoreCounts
from ntf_server.store.census import Census
from ntf_server.subscriber.pool import Progress

T0 = 1000.0  # the window's clock is monotonic: any origin


def test_a_young_server_answers_since_start_and_says_how_long() -> None:
    w = CounterWindow(["a"], T0)
    w.record(T0 + 60, {"a": 2})
    r = w.recent(T0 + 90, {"a": 5})
    assert r == Recent(90.0, {"a": 5})


def test_after_an_hour_only_the_last_hour_counts() -> None:
    w = CounterWindow(["a"], T0)
    total = 0
    for minute in range(1, 121):  # two hours, one increment a minute, sampled every minute
        total += 1
        w.record(T0 + minute * STEP_S, {"a": total})
    r = w.recent(T0 + 120 * STEP_S, {"a": total})
    assert r.seconds == SPAN_S and r.counts == {"a": 60}
    # half a minute later, before the next sample: the window is a little over an hour, and says so
    r = w.recent(T0 + 120.5 * STEP_S, {"a": total + 1})
    assert r.seconds == SPAN_S + STEP_S / 2 and r.counts == {"a": 61}


def test_samples_are_bounded_and_a_second_sample_in_a_minute_or_a_clock_going_back_changes_nothing() -> None:
    w = CounterWindow(["a"], T0)
    for minute in range(1, 1000):
        w.record(T0 + minute * STEP_S, {"a": minute})
    assert len(w) == SPAN_S / STEP_S + 1
    before = w.recent(T0 + 999 * STEP_S, {"a": 999})
    w.record(T0 + 999 * STEP_S + 5, {"a": 10**6})  # same minute
    w.record(T0, {"a": 10**6})  # clock went back
    assert w.recent(T0 + 999 * STEP_S, {"a": 999}) == before


def test_a_lagging_sampler_widens_the_window_and_says_so() -> None:
    w = CounterWindow(["a"], T0)
    w.record(T0 + 60, {"a": 1})
    w.record(T0 + 3 * SPAN_S, {"a": 7})  # the event loop was blocked for hours
    r = w.recent(T0 + 3 * SPAN_S + 30, {"a": 9})
    assert r.seconds == 3 * SPAN_S - 30 and r.counts == {"a": 8}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10 * int(STEP_S)), st.integers(0, 5)), max_size=300))
def test_the_answer_is_the_increments_within_the_window_it_reports(events: list[tuple[int, int]]) -> None:
    """Increments at random times; the sampler every minute; at any moment the answer equals the sum of
    the increments made since ``now - seconds`` (whole seconds: exact floats), and ``seconds`` is within a
    minute over an hour once the server is older than that."""
    w = CounterWindow(["a"], T0)
    now, total, log = T0, 0, []
    next_sample = T0 + STEP_S
    for gap, n in events:
        now += gap
        while next_sample <= now:
            w.record(next_sample, {"a": total})
            next_sample += STEP_S
        total += n
        log.append((now, n))
        r = w.recent(now, {"a": total})
        assert r.counts["a"] == sum(k for t, k in log if t >= now - r.seconds)
        if now - T0 >= SPAN_S + STEP_S:
            assert SPAN_S <= r.seconds <= SPAN_S + STEP_S
        else:
            assert r.seconds <= max(SPAN_S + STEP_S, now - T0)


def test_push_kinds_look_counters_up_by_name_and_absent_ones_are_none() -> None:
    kinds = (("verification", ("ntf_vrf_delivered",)), ("future", ("ntf_not_a_counter_yet",)),
             ("failed", ("ntf_vrf_failed", "ntf_failed", "ntf_not_a_counter_yet")))
    names = push_counter_names(kinds)
    assert names == ("ntf_vrf_delivered", "ntf_vrf_failed", "ntf_failed")  # known ones only, no crash
    w = CounterWindow(names, T0)
    since = {"ntf_vrf_delivered": 3, "ntf_vrf_failed": 1, "ntf_failed": 2}
    assert push_kinds(w.recent(T0 + 10, since), since, kinds) == {
        "verification": {"last_hour": 3, "since_start": 3},
        "future": {"last_hour": None, "since_start": None},
        "failed": {"last_hour": 3, "since_start": 3},
    }
    assert "ntf_vrf_delivered" in push_counter_names()  # the default table resolves against the registry


SMP_OWN = SMPServer(("smp1.own.example",), "5223", b"\x01" * 32)
SMP_THEIRS = SMPServer(("smp.thirdparty.example",), "", b"\x02" * 32)


def figures(*, store_up: bool = True, listening: bool = True) -> Figures:
    stats = Stats()
    stats.incr(NTF_VRF_DELIVERED)
    census = Census(MappingProxyType({"ACTIVE": 1}), MappingProxyType({"ACTIVE": 1, "NEW": 2}),
                    MappingProxyType({SMP_OWN: {"ACTIVE": 1}, SMP_THEIRS: {"NEW": 2}}), 1_764_000_000.0, 0.01)
    return Figures(
        version="9.9.9", now=1_764_000_030.0, stats=stats.snapshot(), apns=ApnsMetrics().snapshot(),
        store_up=store_up, counts=StoreCounts(1, 3, 0, 2) if store_up else None, active=None,
        census=census if store_up else None, links=((SMP_OWN, "down"), (SMP_THEIRS, "up")), queue_length=0,
        resubscription=Progress(2, 2, 3, 3, 0.5), listening=listening, connections=4,
    )


def status_of(fig: Figures, policy: dict[str, object] | None = None) -> dict[str, object]:
    counters = fig.stats.as_dict()
    w = CounterWindow(push_counter_names(), T0)
    r = w.recent(T0 + 600, counters)
    pushes = {"window_s": r.seconds, "kinds": push_kinds(r, counters)}
    pol = policy or {"hidden_per_hour": 3.0, "burst": 3, "overflow": "alert"}
    return status.status_json(fig, OwnServers(["own.example"]), pushes, fig.now - 7300, pol)


def test_status_json_and_the_screen_fit_80x24_with_every_section() -> None:
    s = status_of(figures(), {"hidden_per_hour": 3.0, "burst": 3, "overflow": "defer",
                              "environments": {"test": {"burst": 1}}})
    assert s["healthy"] is True and s["uptime_s"] == 7300.0
    assert s["smp_servers"] == {"up": 1, "connecting": 0, "down": 1, "idle": 0, "own_down": ["smp1.own.example"],
                                "resubscription": {"servers": 2, "servers_done": 2}}
    lines = screen.status_lines(s)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80, text
    assert lines[0] == "ntf-server 9.9.9, up 2 h 1 min (since 2025-11-24 13:58 UTC): healthy"
    for section in ("Server", "Store", "SMP servers", "Pushes", "Policy"):
        assert any(line.startswith(section) for line in lines), section
    assert "tokens: ACTIVE 1" in text and "subscriptions: ACTIVE 1, NEW 2" in text
    assert "1 up, 1 down" in text and "own servers down: smp1.own.example" in text
    assert "thirdparty" not in text and "last 10 min" in text
    assert any(line.split() == ["verification", "1", "1"] for line in lines)
    assert "over budget: defer" in text and "test: burst 1" in text
    parity = screen.status_lines({**s, "policy": {"hidden_per_hour": 0.0, "burst": 3, "overflow": "alert"}})
    assert parity[-1] == "Policy       SimpleX parity: every message push an alert (hidden_per_hour 0)"


def test_unhealthy_status_lists_the_problems_and_leaves_out_what_it_cannot_know() -> None:
    s = status_of(figures(store_up=False, listening=False))
    assert s["healthy"] is False
    assert s["problems"] == ["NTF listener is not running", "store: Redis does not answer"]
    assert s["store"] == {"up": False, "tokens": None, "subscriptions": None, "last_notifications": None,
                          "tokens_by_status": None, "subscriptions_by_status": None, "census_age_s": None}
    text = "\n".join(screen.status_lines({**s, "policy": None}))
    assert text.startswith("ntf-server 9.9.9, up 2 h 1 min (since 2025-11-24 13:58 UTC): UNHEALTHY\n"
                           "  ! NTF listener is not running\n  ! store: Redis does not answer\n")
    assert "Redis DOWN" in text and "Policy       unknown" in text


def test_durations_and_window_labels() -> None:
    assert [screen.duration(s) for s in (5, 65, 3600 * 3 + 120, 86400 * 2 + 3600)] == [
        "5 s", "1 min 5 s", "3 h 2 min", "2 d 1 h"]
    assert screen.window_label(SPAN_S + 30) == "last hour"
    assert [screen.window_label(s) for s in (12.3, 600, 3 * SPAN_S)] == ["last 12 s", "last 10 min", "last 3 h 0 min"]
