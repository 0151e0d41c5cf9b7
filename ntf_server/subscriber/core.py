"""The decisions of one SMP server's link, sans-IO: ``LinkCore.apply(event) -> effects`` (STYLE 1, 2, 8).

Theory of operation. The link (subscriber/link.py) is the I/O shell: it connects, reads, writes and sleeps,
and reports what happened to its ``LinkCore`` as events; the core answers with effects, which the shell
carries out in order. The core holds no connection and does no I/O, so every decision is tested by
feeding it events (tests/subscriber/test_link_core.py):

* The link's state (subscriber/linkstate.py, shown by admin) moves by its table.
* What the SMP server answered becomes statuses (§4.6), one write per status per received batch: OK/SOK
  → ACTIVE (tied to our service when its SOK names our service id), ERR AUTH → AUTH, ERR SERVICE →
  SERVICE, any other failure → ``ERR <text>`` (the text Haskell writes), END → END, DELD → DELETED. A
  lost connection makes what it held (PENDING or ACTIVE, except what is tied to our service) INACTIVE,
  only from those statuses. Sent NSUBs are PENDING (from NEW or INACTIVE only).
* NMSGs become ``Notice``s handed on together, after the batch's statuses; one for a queue forgotten on
  this connection (SDEL/TDEL: SMP cannot unsubscribe) is counted, not pushed.
* Reconnecting: capped, jittered exponential backoff (an injected iterator of delays); a connection that
  stayed up ``stable_after_s`` starts the backoff over.
* New subscriptions (SNEW, a TVFY'd token) wait in ``new`` until the sender takes them; one the
  connection already pends or holds is not sent again.

Why one module of about 310 lines: one link's whole decision table (every event of every state) with the counters
it counts, tested as one unit; the I/O is apart in link.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, assert_never

from ntf_server.observability.metricdef import Counter, Family
from ntf_server.protocol import crypto, smp_events as E
from ntf_server.protocol.encoding import CodecError, SMPServer
from ntf_server.protocol.smp_session import NotifierQueue
from ntf_server.store.records import Notice, SubStatus, SubStatusKind
from ntf_server.subscriber.linkstate import LinkEvent, LinkState, next_state

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
ANSWERS: Final = Family("smp_subscription_answers", "answer",
                        "NSUB answers from SMP servers, by the subscription status they give")
SMP_CONNECTED: Final = Counter("smp_connected", "SMP connections established")
SUB_BAD_KEY: Final = Counter("sub_bad_key", "Subscriptions whose stored notifier key could not be read")
SMP_NSUB_SENT: Final = Counter("smp_nsub_sent", "NSUB commands sent to SMP servers")
SMP_DISCONNECTED: Final = Counter("smp_disconnected", "SMP connections lost")
NTF_RECEIVED: Final = Counter("ntf_received", "Message notifications (NMSG) received from SMP servers", per_server=True)
NTF_RECEIVED_FORGOTTEN: Final = Counter("ntf_received_forgotten",
                                        "NMSGs for subscriptions deleted since they were subscribed")
SMP_TIMEOUTS: Final = Counter("smp_timeouts", "NSUB or PING commands SMP servers did not answer in time")
SMP_NSUB_ANSWERED: Final = Counter("smp_nsub_answered", "NSUB commands answered (late answers included)")
SMP_SUB_OK: Final = Counter("smp_sub_ok", "NSUB answered OK: subscription ACTIVE", ANSWERS, "ok")
SMP_SUB_AUTH: Final = Counter("smp_sub_auth", "NSUB answered ERR AUTH: subscription AUTH", ANSWERS, "auth")
SMP_SUB_SERVICE: Final = Counter("smp_sub_service", "NSUB answered with a service error: subscription SERVICE",
                                 ANSWERS, "service")
SMP_SUB_ERR: Final = Counter("smp_sub_err", "NSUB answered with another error: subscription ERR", ANSWERS, "err")
SMP_SUB_END: Final = Counter("smp_sub_end", "Subscriptions ended by the SMP server (END)", ANSWERS, "end")
SMP_SUB_DELD: Final = Counter("smp_sub_deld", "Queues deleted on the SMP server (DELD)", ANSWERS, "deleted")

LOST_FROM: Final = (SubStatusKind.PENDING, SubStatusKind.ACTIVE)  # what a lost connection makes INACTIVE
SENT_FROM: Final = (SubStatusKind.NEW, SubStatusKind.INACTIVE)  # what a sent NSUB makes PENDING
_FAILURE_STATUS: Final = {E.FailureKind.AUTH: SubStatus(SubStatusKind.AUTH),
                          E.FailureKind.SERVICE: SubStatus(SubStatusKind.SERVICE)}
# What the SMP server answered, counted by the status it gives (§6.4's subscription counters).
STATUS_COUNTER: Final = {
    SubStatusKind.ACTIVE: SMP_SUB_OK, SubStatusKind.AUTH: SMP_SUB_AUTH,
    SubStatusKind.SERVICE: SMP_SUB_SERVICE, SubStatusKind.ERR: SMP_SUB_ERR,
    SubStatusKind.END: SMP_SUB_END, SubStatusKind.DELETED: SMP_SUB_DELD,
}
_PROGRESS: Final = (E.Subscribed, E.SubscriptionFailed, E.SubscriptionTimedOut, E.ServiceSubscribed,
                    E.ServiceSubscriptionFailed)


# ---------------------------------------------------------------- events (from the shell)


@dataclass(frozen=True, slots=True)
class Received:
    """The events of one or more received blocks, in order; ``service_id``: ours on this connection."""

    events: Sequence[E.SmpEvent]
    now_s: float
    service_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    now_s: float


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    pass


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection ended; ``held``: its queues PENDING or ACTIVE, less those tied to our service."""

    now_s: float
    held: Sequence[bytes]


LinkInput = Received | Connected | ConnectFailed | Lost


# ---------------------------------------------------------------- effects (for the shell)


@dataclass(frozen=True, slots=True)
class Count:
    stat: Counter
    n: int = 1
    per_server: bool = False  # also counted for this SMP server (Stats.incr_server)


@dataclass(frozen=True, slots=True)
class WriteStatuses:
    """One store call: ``set_subscription_statuses`` (fenced by the lease when there is one)."""

    nids: Sequence[bytes] = field(repr=False)
    status: SubStatus
    tied: bool | None = None  # tie (True) or untie (False) to our service; None: leave the ties alone
    only_from: tuple[SubStatusKind, ...] | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    notices: Sequence[Notice] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Tie:
    """These queues are tied to our service on this connection: a loss leaves them ACTIVE (Haskell)."""

    nids: Sequence[bytes] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """For the link's service logic (subscriber/service_link.py), which may ask for a fallback."""

    event: E.ServiceSubscribed | E.ServiceSubscriptionFailed | E.ServiceEnded


@dataclass(frozen=True, slots=True)
class Progress:
    """Fewer commands are awaited: a sender waiting for room (or for its first answers) looks again."""


@dataclass(frozen=True, slots=True)
class Odd:
    """Something the SMP server should not have sent: counted and logged at debug."""

    event: E.ServerError | E.Unexpected


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Effect = Count | WriteStatuses | Notify | Tie | ServiceEvent | Progress | Odd | Sleep


# ---------------------------------------------------------------- the core


class LinkCore:
    """One SMP server's decisions; see the module docstring."""

    def __init__(self, server: SMPServer, delays: Callable[[], Iterator[float]], stable_after_s: float) -> None:
        self.server = server
        self.state = LinkState.IDLE
        self.new: dict[bytes, bytes] = {}  # notifier id → notifier key (as stored), from SNEW
        self._make_delays = delays
        self._delays = delays()
        self._stable_after_s = stable_after_s
        self._up_since: float | None = None
        self.stopping = False  # handed over: after this connection, end instead of reconnecting

    def __repr__(self) -> str:
        return f"<LinkCore {self.state.value} new={len(self.new)}>"

    def move(self, event: LinkEvent) -> LinkState:
        self.state = next_state(self.state, event)
        return self.state

    @property
    def final(self) -> bool:
        return self.state in (LinkState.ENDED, LinkState.DROPPED)

    def apply(self, event: LinkInput) -> list[Effect]:
        match event:
            case Received():
                return self._received(event)
            case Connected(now_s):
                self.move(LinkEvent.CONNECTED)
                self._up_since = now_s
                return [Count(SMP_CONNECTED)]
            case ConnectFailed():
                self.move(LinkEvent.FAILED)
                return [Sleep(next(self._delays))]
            case Lost(now_s, held):
                return self._lost(now_s, held)
            case _:
                assert_never(event)

    # ------------------------------------------------------------ new subscriptions

    def add(self, notifier_id: bytes, notifier_key: bytes) -> None:
        self.new[notifier_id] = notifier_key

    def forget(self, notifier_id: bytes) -> None:
        self.new.pop(notifier_id, None)

    def take_new(self) -> list[tuple[bytes, bytes]]:
        batch, self.new = list(self.new.items()), {}
        return batch

    def to_send(self, subs: Iterable[tuple[bytes, bytes]], state_of: Callable[[bytes], E.QueueState | None],
                ) -> tuple[list[NotifierQueue], list[Effect]]:
        """The NSUBs to send for ``subs`` (notifier id, stored key) on a connection where ``state_of`` tells a
        queue's state; and the effects: bad keys counted, the sent counted and made PENDING."""
        queues, bad = [], 0
        for nid, key in subs:
            if state_of(nid) in (E.QueueState.PENDING, E.QueueState.ACTIVE):
                continue  # already on this connection (an SNEW seen while paging)
            self.new.pop(nid, None)
            try:
                queues.append(NotifierQueue(nid, crypto.decode_stored_notifier_key(key)))
            except CodecError:
                bad += 1
        effects: list[Effect] = [Count(SUB_BAD_KEY, bad)] if bad else []
        if queues:
            effects += [Count(SMP_NSUB_SENT, len(queues)),
                        WriteStatuses([q.notifier_id for q in queues], SubStatus(SubStatusKind.PENDING),
                                      only_from=SENT_FROM)]
        return queues, effects

    # ------------------------------------------------------------ connection ends

    def _lost(self, now_s: float, held: Sequence[bytes]) -> list[Effect]:
        effects: list[Effect] = []
        if self.state is LinkState.UP:
            self.move(LinkEvent.LOST)
            effects.append(Count(SMP_DISCONNECTED))
            if self._up_since is not None and now_s - self._up_since >= self._stable_after_s:
                self._delays = self._make_delays()
        if held:
            effects.append(WriteStatuses(list(held), SubStatus(SubStatusKind.INACTIVE), only_from=LOST_FROM))
        if not (self.final or self.stopping):
            effects.append(Sleep(next(self._delays)))
        return effects

    # ------------------------------------------------------------ answers

    def _received(self, r: Received) -> list[Effect]:
        effects: list[Effect] = []
        statuses: dict[SubStatus, list[bytes]] = defaultdict(list)
        tied: dict[bool, list[bytes]] = defaultdict(list)  # ACTIVE, tied to our service or not
        notices: list[Notice] = []
        now_ms = int(r.now_s * 1000)
        answered = progress = 0
        for ev in r.events:
            match ev:
                case E.Subscribed(nid, sid):
                    tied[sid is not None and sid == r.service_id].append(nid)
                    answered += 1
                case E.SubscriptionFailed(nid, kind):
                    statuses[_FAILURE_STATUS.get(kind) or SubStatus.error(ev.status_text())].append(nid)
                    answered += 1
                case E.Ended(nid):
                    statuses[SubStatus(SubStatusKind.END)].append(nid)
                case E.Deleted(nid):
                    statuses[SubStatus(SubStatusKind.DELETED)].append(nid)
                case E.Message(nid, nonce, enc_meta, state):
                    effects.append(Count(NTF_RECEIVED, per_server=True))
                    if state is None:
                        effects.append(Count(NTF_RECEIVED_FORGOTTEN))  # SDEL/TDEL'd: SMP cannot unsubscribe
                    else:
                        notices.append(Notice(self.server, nid, now_ms, nonce, enc_meta))
                case E.SubscriptionTimedOut() | E.PingTimedOut():
                    effects.append(Count(SMP_TIMEOUTS))
                case E.Pong():
                    pass
                case E.ServiceSubscribed() | E.ServiceSubscriptionFailed() | E.ServiceEnded():
                    effects.append(ServiceEvent(ev))
                case E.ServerError() | E.Unexpected():
                    effects.append(Odd(ev))
                case _:
                    assert_never(ev)
            progress += isinstance(ev, _PROGRESS)
        if answered:
            effects.append(Count(SMP_NSUB_ANSWERED, answered))
        if progress:
            effects.append(Progress())  # a timed-out NSUB is re-sent by the session: fewer awaited in time
        if tied[True]:
            effects.append(Tie(tied[True]))
        # In a service session SOK serviceId ties the queue and any other SOK, or a final status, unties it.
        # Elsewhere the ties are left alone (no MD5s to compute): if a plain session untied queues at the
        # SMP server, the next NSUBS sees the drift and recounts.
        service = r.service_id is not None
        for is_tied, nids in tied.items():
            if nids:
                effects += [Count(SMP_SUB_OK, len(nids)),
                            WriteStatuses(nids, SubStatus(SubStatusKind.ACTIVE), tied=is_tied if service else None)]
        for status, nids in statuses.items():
            effects += [Count(STATUS_COUNTER[status.kind], len(nids)),
                        WriteStatuses(nids, status, tied=False if service else None)]
        if notices:
            effects.append(Notify(notices))
        return effects
