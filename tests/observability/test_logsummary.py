"""Repeated events become counted summaries (ntf_server/observability/logsummary.py), checked with caplog."""

from __future__ import annotations

import logging

import pytest

from ntf_server.observability.logsummary import CountedLog

log = logging.getLogger("ntf_server.test.summary")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_first_event_at_once_then_one_counted_line_per_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    counted = CountedLog(log, "verification push failed", event="push.failed", fields={"kind": "verification push"},
                         window_s=60, clock=clock)
    counted.event("BadDeviceToken")
    for i in range(41):
        clock.now += 1
        counted.event("BadDeviceToken" if i < 40 else "Unregistered")
    assert lines(caplog) == ["verification push failed: BadDeviceToken (repeats in the next 60 s are summarised)"]
    clock.now = 1000 + 60
    counted.event("TopicDisallowed")  # a new window: the summary, then this event
    assert lines(caplog)[1:] == [
        "verification push failed 41 more times in the last 60 s (BadDeviceToken=40, Unregistered=1)",
        "verification push failed: TopicDisallowed (repeats in the next 60 s are summarised)",
    ]
    assert counted.total == 43


def test_flush_ends_a_window_in_a_quiet_period(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    counted = CountedLog(log, "registration refused over quota", event="registration.refused", window_s=60,
                         clock=clock)
    for _ in range(3):
        counted.event("per-address limit")
    counted.flush()  # window not over: nothing yet
    assert len(lines(caplog)) == 1
    clock.now += 61
    counted.flush()
    counted.flush()  # nothing more to say
    assert lines(caplog)[1:] == ["registration refused over quota 2 more times in the last 61 s (per-address limit=2)"]
    clock.now += 1
    counted.event("per-connection limit")  # after a flush: logged at once again
    assert lines(caplog)[-1].startswith("registration refused over quota: per-connection limit")


def test_many_reasons_are_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    counted = CountedLog(log, "x", event="request.store_error", window_s=10, clock=clock)
    for i in range(30):
        counted.event(f"reason{i}")
    clock.now += 10
    counted.flush()
    assert lines(caplog)[-1].endswith(", 21 other reasons)")
