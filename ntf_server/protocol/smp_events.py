"""What an SMP client session reports, and its two state tables (§3.2, §3.3, §4.6).

Theory of operation: a session (``smp_client.SmpClientSession``) tracks each notifier queue it has sent
``NSUB`` for, in one of the :class:`QueueState` states, and moves it with :data:`QUEUE_TRANSITIONS`
(STYLE 2). A subscription is never forgotten by a timeout: an NSUB unanswered in time leaves its queue
PENDING, the session re-sends it on the same connection (backoff 1 s → 10 s), and an answer that arrives
late, to the first NSUB or to a re-sent one, is still applied.

A pair missing from the table is not an error of ours: the server said something that makes no sense for
that queue on this connection (``END`` for a queue never subscribed here, ``DELD`` for a queue
forgotten by the pool); the session reports :class:`Unexpected` and leaves the state alone. ``NMSG`` is in
the table for every state, so a notification is never dropped here: whether it still belongs to a live
subscription is the store's decision (§5.7 step 2: no subscription → counted, not pushed).

Responses are matched to the command that asked (by corrId) through :data:`RESPONSE_OUTCOMES`, keyed by
(command kind, response type); any other response to a command is an "unexpected response" (§3.3: status
``ERR UnexpectedResponse``).

Queue ids are secrets of the users' queues: event reprs show only their length (STYLE 12).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from ntf_server.observability.sensitive import NotifierId
from ntf_server.protocol.error_types import AUTH, ErrorType, SimpleError, enc_error
from ntf_server.protocol.smp import BrokerMsg, SmpErr, SmpPong, SOk, SOks

SERVICE_ERROR: Final = SimpleError("SERVICE")


class _Enum(enum.Enum):
    """Hashed by identity: members are singletons compared by identity, and Enum's own ``__hash__`` hashes
    the name in Python, a few times per NSUB and per answer here (the state and outcome tables are keyed by
    members; tests/bench/smp_session_bench.py)."""

    __hash__ = object.__hash__


class QueueState(_Enum):
    """A notifier queue as seen by one connection. Not tracked at all = ``None`` in the tables."""

    PENDING = "pending"  # NSUB sent, no answer yet
    ACTIVE = "active"  # OK/SOK received: this connection receives its NMSGs
    ENDED = "ended"  # END: another connection subscribed it (§3.2)
    DELETED = "deleted"  # DELD (or END before v10, which the server cannot tell apart)
    FAILED = "failed"  # ERR or a nonsensical answer to NSUB
    # Only in ``Message.state``, never tracked: not subscribed on this connection, and not forgotten by the
    # pool either (e.g. an NMSG racing a reconnect). ``None`` there means forgotten (SDEL/TDEL).
    UNKNOWN = "unknown"


class QueueEvent(_Enum):
    SEND_NSUB = "send NSUB"
    SUBSCRIBED = "OK/SOK"
    FAILED = "NSUB failed"
    TIMED_OUT = "NSUB timed out"
    END = "END"
    DELD = "DELD"
    NMSG = "NMSG"


_S = QueueState
_E = QueueEvent
_ANY: Final[tuple[QueueState | None, ...]] = (None, *(s for s in QueueState if s is not _S.UNKNOWN))

QUEUE_TRANSITIONS: Final[dict[tuple[QueueState | None, QueueEvent], QueueState | None]] = {
    # (Re)subscribing is allowed from any state; the session keeps one *live* NSUB per queue (a timed-out
    # one may still be answered, so a re-sent NSUB can find the queue PENDING).
    **{(s, _E.SEND_NSUB): _S.PENDING for s in _ANY},
    (_S.PENDING, _E.SUBSCRIBED): _S.ACTIVE,
    (_S.ACTIVE, _E.SUBSCRIBED): _S.ACTIVE,  # the answer to a re-sent NSUB after a late one was applied
    (_S.PENDING, _E.FAILED): _S.FAILED,
    (_S.PENDING, _E.TIMED_OUT): _S.PENDING,  # temporary (§3.3): stays pending, re-sent on this connection
    (_S.ACTIVE, _E.END): _S.ENDED,
    (_S.PENDING, _E.DELD): _S.DELETED,
    (_S.ACTIVE, _E.DELD): _S.DELETED,
    # A notification may race its OK (separate server threads); later ones are the store's to judge.
    **{(s, _E.NMSG): s for s in _ANY},
}


def transition(state: QueueState | None, event: QueueEvent) -> tuple[bool, QueueState | None]:
    """``(in table, new state)``; a pair outside the table leaves the state as it was."""
    try:
        return True, QUEUE_TRANSITIONS[(state, event)]
    except KeyError:  # rare: the server said something that makes no sense for the queue
        return False, state


class CommandKind(_Enum):
    NSUB = "NSUB"
    NSUBS = "NSUBS"
    PING = "PING"


class Outcome(_Enum):
    SUBSCRIBED = "subscribed"
    SUBSCRIPTION_ERROR = "subscription error"
    SERVICE_SUBSCRIBED = "service subscribed"
    SERVICE_ERROR = "service subscription error"
    PONG = "pong"
    PING_ERROR = "ping error"


RESPONSE_OUTCOMES: Final[dict[tuple[CommandKind, type[BrokerMsg]], Outcome]] = {
    (CommandKind.NSUB, SOk): Outcome.SUBSCRIBED,
    (CommandKind.NSUB, SmpErr): Outcome.SUBSCRIPTION_ERROR,
    (CommandKind.NSUBS, SOks): Outcome.SERVICE_SUBSCRIBED,
    (CommandKind.NSUBS, SmpErr): Outcome.SERVICE_ERROR,
    (CommandKind.PING, SmpPong): Outcome.PONG,
    (CommandKind.PING, SmpErr): Outcome.PING_ERROR,
}


class FailureKind(enum.Enum):
    """Why an NSUB failed for good, with the §4.6 subscription status it leads to."""

    AUTH = "AUTH"  # ERR AUTH: no such queue or wrong key
    SERVICE = "SERVICE"  # ERR SERVICE
    SMP_ERROR = "ERR"  # any other ERR: status "ERR SMP error …"
    UNEXPECTED_RESPONSE = "ERR UnexpectedResponse"  # a well-formed answer that is not OK/SOK/ERR
    BAD_RESPONSE = "ERR ResponseError"  # an answer that does not parse or breaks the entity rules

    @staticmethod
    def of_error(e: ErrorType) -> FailureKind:
        if e == AUTH:
            return FailureKind.AUTH
        return FailureKind.SERVICE if e == SERVICE_ERROR else FailureKind.SMP_ERROR


# The text of a subscription's ``ERR <text>`` status, as Haskell's ``queueSubErrorStatus`` writes it
# (Notifications/Server.hs: ``NSErr $ errType <> bshow e``); SCHK shows it to the app (§4.2, §3.3).
_ERR_PREFIX: Final = {FailureKind.SMP_ERROR: "SMP error ", FailureKind.BAD_RESPONSE: "ResponseError ",
                      FailureKind.UNEXPECTED_RESPONSE: "UnexpectedResponse "}


def _hidden(n: bytes) -> str:
    return str(NotifierId(n))  # a keyed tag (ntf_server/observability/sensitive.py): lines about one queue correlate


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Subscribed:
    """NSUB answered ``OK`` (v < 16) or ``SOK`` (v ≥ 16): NMSGs for this queue now come here."""

    notifier_id: bytes
    service_id: bytes | None = None  # SOK (Just serviceId): tied to that service (ours in a service session)

    def __repr__(self) -> str:
        return f"Subscribed({_hidden(self.notifier_id)})"


@dataclass(frozen=True, slots=True)
class SubscriptionFailed:
    """A final NSUB failure (§4.6 PENDING → AUTH / SERVICE / ERR …); not retried by the session."""

    notifier_id: bytes
    kind: FailureKind
    error: ErrorType | None = None  # the server's ERR, when it sent one
    detail: str = ""

    def __repr__(self) -> str:
        return f"SubscriptionFailed({_hidden(self.notifier_id)}, {self.kind.value}, {self.error!r})"

    def status_text(self) -> str:
        """The ``ERR`` status text: ``SMP error BLOCKED …``, ``ResponseError …``, ``UnexpectedResponse …``
        (the wire form of the SMP error where Haskell shows its ``show``: informational, §3.3)."""
        shown = enc_error(self.error).decode(errors="replace") if self.error is not None else self.detail
        return (_ERR_PREFIX.get(self.kind, "") + shown).strip()


@dataclass(frozen=True, slots=True)
class SubscriptionTimedOut:
    """No answer in time: a temporary error (§3.3). The queue stays PENDING; the session re-sends its NSUB
    with backoff and still applies a late answer."""

    notifier_id: bytes

    def __repr__(self) -> str:
        return f"SubscriptionTimedOut({_hidden(self.notifier_id)})"


@dataclass(frozen=True, slots=True)
class Ended:
    """``END``: another connection took this queue's notifications (§4.6 ACTIVE → END)."""

    notifier_id: bytes

    def __repr__(self) -> str:
        return f"Ended({_hidden(self.notifier_id)})"


@dataclass(frozen=True, slots=True)
class Deleted:
    """``DELD``: the queue or its notifier credentials were deleted (§4.6 → DELETED)."""

    notifier_id: bytes

    def __repr__(self) -> str:
        return f"Deleted({_hidden(self.notifier_id)})"


@dataclass(frozen=True, slots=True)
class Message:
    """``NMSG``: store ``(nonce, enc_meta)`` as the token's last notification and push it (§5.7).

    ``enc_meta`` is opaque here: it is encrypted with the recipient's ``rcvNtfDhSecret``, which the
    notification server does not have; the app decrypts it after the push. ``state`` is this connection's
    view of the queue: ``None`` only when the pool forgot it here (SDEL/TDEL: count, do not push);
    ``UNKNOWN`` when it is not tracked here for another reason — the store decides (pushed if stored).
    """

    notifier_id: bytes
    nonce: bytes = field(repr=False)
    enc_meta: bytes = field(repr=False)
    state: QueueState | None = None

    def __repr__(self) -> str:
        return f"Message({_hidden(self.notifier_id)}, {len(self.enc_meta)} bytes, {self.state})"


@dataclass(frozen=True, slots=True)
class ServiceSubscribed:
    """``SOKS``: the SMP server subscribed every queue tied to our service here: how many it holds and
    their IdsHash (v19+; the empty hash before), to compare with what we stored."""

    count: int
    ids_hash: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ServiceSubscriptionFailed:
    """``NSUBS`` answered ``ERR`` (e.g. ``SERVICE``), something else, or not in time (``error`` None):
    subscribe the queues one by one."""

    error: ErrorType | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEnded:
    """``ENDS``: another session of our service took its queues (count, IdsHash)."""

    count: int
    ids_hash: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class PingTimedOut:
    """A PING got no PONG in time. §3.3: after 3 timeouts in a row and 15 min of silence, drop."""


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``ERR`` that answers no pending command (e.g. ``ERR BLOCK`` with an empty corrId): log it."""

    corr_id: bytes
    entity_id: bytes
    error: ErrorType

    def __repr__(self) -> str:
        return f"ServerError({self.error!r})"


@dataclass(frozen=True, slots=True)
class Unexpected:
    """Something the server should not have sent (unknown corrId, END for a queue not subscribed here,
    an unparseable event). Harmless to the session; worth a log line and a counter."""

    corr_id: bytes
    entity_id: bytes
    what: str

    def __repr__(self) -> str:
        return f"Unexpected({self.what})"


SmpEvent = (
    Subscribed | SubscriptionFailed | SubscriptionTimedOut | Ended | Deleted | Message | Pong | PingTimedOut
    | ServiceSubscribed | ServiceSubscriptionFailed | ServiceEnded | ServerError | Unexpected
)
