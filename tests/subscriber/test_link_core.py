"""The link's decisions (subscriber/core.py, subscriber/linkstate.py), fed events directly: no I/O."""

from __future__ import annotations

import ast
import itertools
import pathlib
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, strategies as st

from ntf_server.observability.metricdef import Counter
from ntf_server.protocol import crypto, smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH, SimpleError
from ntf_server.store.records import Notice, SubStatus, SubStatusKind
from ntf_server.subscriber import core as C
from ntf_server.subscriber.core import LinkCore
from ntf_server.subscriber.linkstate import TRANSITIONS, LinkEvent, LinkState, next_state

SERVER = SMPServer(("smp.example.net",), "5223", b"k" * 32)
OURS, OTHER = b"s" * 16, b"o" * 16
A, B, Q = b"a" * 24, b"b" * 24, b"q" * 24


def numbered_delays() -> Iterator[float]:
    return (float(i) for i in itertools.count(1))  # 1, 2, 3, … : which delay came next is visible


def up_core(now: float = 100.0) -> LinkCore:
    core = LinkCore(SERVER, numbered_delays, stable_after_s=60.0)
    core.move(LinkEvent.CONNECT)
    assert core.apply(C.Connected(now)) == [C.Count(C.SMP_CONNECTED)]
    return core


def writes(effects: list[C.Effect]) -> list[tuple[list[bytes], SubStatus, bool | None]]:
    return [(list(w.nids), w.status, w.tied) for w in effects if isinstance(w, C.WriteStatuses)]


# ---------------------------------------------------------------- the state table


def test_every_state_and_event_pair_is_in_the_table_or_refused() -> None:
    for state, event in itertools.product(LinkState, LinkEvent):
        if (state, event) in TRANSITIONS:
            assert next_state(state, event) is TRANSITIONS[state, event]
        else:
            with pytest.raises(ValueError, match=event.value):
                next_state(state, event)


@pytest.mark.parametrize(("path", "end"), [
    ([LinkEvent.CONNECT, LinkEvent.CONNECTED], LinkState.UP),
    ([LinkEvent.CONNECT, LinkEvent.FAILED, LinkEvent.CONNECT], LinkState.CONNECTING),
    ([LinkEvent.CONNECT, LinkEvent.CONNECTED, LinkEvent.LOST], LinkState.DOWN),
    ([LinkEvent.CONNECT, LinkEvent.CONNECTED, LinkEvent.NOT_NEEDED], LinkState.ENDED),
    ([LinkEvent.NOT_NEEDED], LinkState.ENDED),
    ([LinkEvent.CONNECT, LinkEvent.CONNECTED, LinkEvent.GONE], LinkState.DROPPED),
    ([LinkEvent.NOT_NEEDED, LinkEvent.GONE], LinkState.DROPPED),  # ended, then its lease given up
])
def test_link_lifecycles(path: list[LinkEvent], end: LinkState) -> None:
    state = LinkState.IDLE
    for event in path:
        state = next_state(state, event)
    assert state is end


@pytest.mark.parametrize("final", [LinkState.ENDED, LinkState.DROPPED])
def test_a_final_link_never_connects_again(final: LinkState) -> None:
    for event in (LinkEvent.CONNECT, LinkEvent.CONNECTED, LinkEvent.LOST, LinkEvent.NOT_NEEDED):
        with pytest.raises(ValueError):
            next_state(final, event)


def test_link_states_are_the_strings_admin_shows() -> None:
    assert [str(s) for s in C.LinkState] == ["idle", "connecting", "up", "down", "ended", "dropped"]
    assert LinkState.UP == "up" and f"{LinkState.DOWN}" == "down"


# ---------------------------------------------------------------- answers → statuses (§4.6)


@pytest.mark.parametrize(("event", "status", "counter"), [
    (E.Subscribed(A), SubStatus(SubStatusKind.ACTIVE), C.SMP_SUB_OK),
    (E.SubscriptionFailed(A, E.FailureKind.AUTH, AUTH), SubStatus(SubStatusKind.AUTH), C.SMP_SUB_AUTH),
    (E.SubscriptionFailed(A, E.FailureKind.SERVICE, SimpleError("SERVICE")), SubStatus(SubStatusKind.SERVICE),
     C.SMP_SUB_SERVICE),
    (E.SubscriptionFailed(A, E.FailureKind.SMP_ERROR, SimpleError("QUOTA")), SubStatus.error("SMP error QUOTA"),
     C.SMP_SUB_ERR),
    (E.SubscriptionFailed(A, E.FailureKind.BAD_RESPONSE, None, "bad"), SubStatus.error("ResponseError bad"),
     C.SMP_SUB_ERR),
    (E.Ended(A), SubStatus(SubStatusKind.END), C.SMP_SUB_END),
    (E.Deleted(A), SubStatus(SubStatusKind.DELETED), C.SMP_SUB_DELD),
])
def test_each_answer_becomes_its_status(event: E.SmpEvent, status: SubStatus, counter: Counter) -> None:
    fx = up_core().apply(C.Received([event], 1.0))
    assert writes(fx) == [([A], status, None)]
    assert C.Count(counter, 1) in fx
    answered = isinstance(event, E.Subscribed | E.SubscriptionFailed)
    assert (C.Count(C.SMP_NSUB_ANSWERED, 1) in fx) is answered and (C.Progress() in fx) is answered


def test_one_write_per_status_per_batch_in_order_then_the_notices() -> None:
    msg = E.Message(Q, b"n" * 24, b"meta", E.QueueState.ACTIVE)
    fx = up_core().apply(C.Received([E.Subscribed(A), msg, E.Ended(Q), E.Subscribed(B), E.Ended(A)], 2.5))
    assert writes(fx) == [([A, B], SubStatus(SubStatusKind.ACTIVE), None), ([Q, A], SubStatus(SubStatusKind.END), None)]
    assert fx[-1] == C.Notify([Notice(SERVER, Q, 2500, b"n" * 24, b"meta")])
    assert C.Count(C.NTF_RECEIVED, 1, per_server=True) in fx


def test_a_message_for_a_forgotten_queue_is_counted_not_pushed() -> None:
    fx = up_core().apply(C.Received([E.Message(Q, b"n" * 24, b"meta", None)], 1.0))
    assert C.Count(C.NTF_RECEIVED_FORGOTTEN) in fx and not any(isinstance(f, C.Notify) for f in fx)


def test_in_a_service_session_sok_of_our_service_ties_and_every_other_answer_unties() -> None:
    fx = up_core().apply(C.Received([E.Subscribed(A, OURS), E.Subscribed(B, OTHER), E.Subscribed(Q),
                                     E.Ended(OURS)], 1.0, service_id=OURS))
    active = SubStatus(SubStatusKind.ACTIVE)
    assert writes(fx) == [([A], active, True), ([B, Q], active, False), ([OURS], SubStatus(SubStatusKind.END), False)]
    assert C.Tie([A]) in fx


def test_outside_a_service_session_ties_are_left_alone() -> None:
    fx = up_core().apply(C.Received([E.Subscribed(A, OTHER)], 1.0))
    assert writes(fx) == [([A], SubStatus(SubStatusKind.ACTIVE), None)] and not any(isinstance(f, C.Tie) for f in fx)


def test_timeouts_service_answers_and_oddities() -> None:
    odd = E.Unexpected(b"c", A, "END for a queue that is not subscribed")
    svc = E.ServiceSubscribed(3, b"h")
    fx = up_core().apply(C.Received([E.SubscriptionTimedOut(A), E.PingTimedOut(), E.Pong(), svc, odd], 1.0))
    assert fx == [C.Count(C.SMP_TIMEOUTS), C.Count(C.SMP_TIMEOUTS), C.ServiceEvent(svc), C.Odd(odd),
                  C.Progress()]


@given(st.lists(st.sampled_from([E.Subscribed(A), E.Subscribed(B, OURS), E.Ended(A), E.Deleted(B),
                                 E.SubscriptionFailed(Q, E.FailureKind.AUTH, AUTH), E.SubscriptionTimedOut(Q),
                                 E.Message(Q, b"n" * 24, b"m", E.QueueState.ACTIVE), E.Pong()]), max_size=40),
       st.sampled_from([None, OURS]))
def test_every_answer_is_written_once_and_counted_by_its_status(events: list[E.SmpEvent], sid: bytes | None) -> None:
    fx = up_core().apply(C.Received(events, 1.0, service_id=sid))
    written = sorted(n for nids, _, _ in writes(fx) for n in nids)
    expected = sorted(ev.notifier_id for ev in events
                      if isinstance(ev, E.Subscribed | E.SubscriptionFailed | E.Ended | E.Deleted))
    assert written == expected
    counted = sum(c.n for c in fx if isinstance(c, C.Count) and c.stat in C.STATUS_COUNTER.values())
    assert counted == len(expected)
    assert len({w.status for w in fx if isinstance(w, C.WriteStatuses) if w.tied is not True}) == \
        len([w for w in fx if isinstance(w, C.WriteStatuses) if w.tied is not True])  # one write per status
    notices = [n for f in fx if isinstance(f, C.Notify) for n in f.notices]
    assert len(notices) == sum(isinstance(ev, E.Message) for ev in events)


# ---------------------------------------------------------------- losses and backoff


def test_a_lost_connection_makes_what_it_held_inactive_then_waits_the_next_delay() -> None:
    core = up_core(now=100.0)
    fx = core.apply(C.Lost(110.0, [A, B]))
    assert core.state is LinkState.DOWN
    assert fx == [C.Count(C.SMP_DISCONNECTED),
                  C.WriteStatuses([A, B], SubStatus(SubStatusKind.INACTIVE), only_from=C.LOST_FROM), C.Sleep(1.0)]
    core.move(LinkEvent.CONNECT)
    assert core.apply(C.ConnectFailed()) == [C.Sleep(2.0)]  # the backoff goes on
    core.move(LinkEvent.CONNECT)
    core.apply(C.Connected(200.0))
    assert core.apply(C.Lost(260.0, []))[-1] == C.Sleep(1.0)  # up for 60 s: the backoff starts over


def test_a_link_ended_or_handed_over_writes_what_it_held_and_does_not_sleep() -> None:
    ended = up_core()
    ended.move(LinkEvent.NOT_NEEDED)
    assert ended.apply(C.Lost(101.0, [A])) == [
        C.WriteStatuses([A], SubStatus(SubStatusKind.INACTIVE), only_from=C.LOST_FROM)]
    handed = up_core()
    handed.stopping = True
    fx = handed.apply(C.Lost(101.0, []))
    assert fx == [C.Count(C.SMP_DISCONNECTED)] and handed.state is LinkState.DOWN


# ---------------------------------------------------------------- what to send


def test_to_send_skips_queues_on_the_connection_counts_bad_keys_and_makes_the_rest_pending() -> None:
    core = up_core()
    key = crypto.notifier_key_for_storage(crypto.encode_private_key(crypto.generate_ed25519()))
    core.add(A, key)
    core.add(B, key)
    states = {Q: E.QueueState.ACTIVE}
    queues, fx = core.to_send([(A, key), (Q, key), (b"x" * 24, b"not a key")], states.get)
    assert [q.notifier_id for q in queues] == [A]
    assert isinstance(queues[0].key, crypto.SodiumEd25519Key)
    assert fx == [C.Count(C.SUB_BAD_KEY, 1), C.Count(C.SMP_NSUB_SENT, 1),
                  C.WriteStatuses([A], SubStatus(SubStatusKind.PENDING), only_from=C.SENT_FROM)]
    assert core.take_new() == [(B, key)] and core.take_new() == []  # A was sent: no longer waiting


def test_forgotten_before_it_was_sent() -> None:
    core = up_core()
    core.add(A, b"k")
    core.forget(A)
    assert core.take_new() == [] and core.to_send([], lambda _: None) == ([], [])


def test_the_core_and_the_state_table_are_sans_io() -> None:
    """They import protocol code, counters' names and records, never I/O nor the rest of the subscriber."""
    allowed = ("ntf_server.protocol", "ntf_server.observability.stats", "ntf_server.observability.metricdef",
               "ntf_server.store.records",
               "ntf_server.subscriber.linkstate",
               "__future__", "collections", "dataclasses", "enum", "typing")
    for module in (C, sys.modules[LinkState.__module__]):
        assert module.__file__ is not None
        for node in ast.walk(ast.parse(pathlib.Path(module.__file__).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            assert all(n.startswith(allowed) for n in names), (module.__name__, names)
