"""Which pushes wait for a retry, and until when (pure: time is passed in, nothing sleeps here).

Theory of operation. A push APNs answered with "retry later" (429, 5xx, a timeout, a lost connection) is
not retried by a sleeping worker: it becomes a *waiting* entry in a ``RetryBook``, due after a delay chosen
by an injected ``Backoff`` (STYLE 9: capped exponential with jitter in production, ``NO_WAIT`` in tests).
The delivery task (push/delivery.py) asks ``pop_due(now)`` for what to send again and sleeps until
``next_due()`` in between, so the message workers stay free for other tokens.

Entries are keyed (push kind, token id), and a key has at most one waiting entry:

* a newer push for a key that has one waiting *takes its slot* (``take_slot``): it keeps the waiting
  entry's due time and attempt count (the reason to wait, a busy device or an unwell APNs, still holds)
  and gets a fresh deadline; the older push is dropped, since every message push carries the token's
  newest ≤ 6 notifications and so the newer one carries the older one's too (spec §5.7);
* a failed push older than the one waiting (``seq`` tells, it is given in the order pushes were made) is
  superseded and dropped;
* a push whose next try would fall after ``first_at + deadline_s`` expires instead (counted failed), and
  when ``max_waiting`` entries wait, a new one is refused (an APNs outage must not grow memory without
  bound; the notifications stay in the store and the next push carries them).

The heap holds (due, ticket, key); an entry replaced or removed leaves a stale heap item that ``pop_due``
skips (its ticket no longer matches).
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
J = TypeVar("J")

MAX_WAITING: Final = 100_000  # ~1 KB each (a token record and a ≤ 4 KB body shared with nothing else)


class Backoff(Protocol):
    def delay_s(self, attempt: int, hint_s: float) -> float:
        """Delay before try ``attempt + 1`` after ``attempt`` tries failed; ``hint_s`` is the sender's."""
        ...


@dataclass(frozen=True, slots=True)
class JitteredBackoff:
    """Capped exponential, 'equal jitter' in [d/2, d] (so pushes that failed together do not return together);
    the sender's hint raises the exponential term but never the cap."""

    base_s: float
    cap_s: float
    rng: Callable[[], float] = random.random

    def delay_s(self, attempt: int, hint_s: float) -> float:
        d = min(self.cap_s, max(hint_s, self.base_s * 2.0 ** min(attempt - 1, 60)))
        return d / 2 + self.rng() * d / 2


class _NoWait:
    def delay_s(self, attempt: int, hint_s: float) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "NO_WAIT"


NO_WAIT: Final[Backoff] = _NoWait()


class Verdict(enum.Enum):
    SCHEDULED = "scheduled"
    REPLACED = "replaced"  # scheduled, and an older waiting push for the key was dropped
    SUPERSEDED = "superseded"  # a newer push for the key already waits: this one is dropped
    EXPIRED = "expired"  # the next try would fall after the deadline
    FULL = "full"  # max_waiting entries wait


@dataclass(slots=True)
class Waiting(Generic[J]):
    job: J
    seq: int  # order in which pushes were made: higher is newer
    attempts: int  # tries made so far
    first_at: float  # when this job was first tried; the deadline counts from here
    due: float
    ticket: int


class RetryBook(Generic[K, J]):
    def __init__(self, backoff: Backoff, deadline_s: float, max_waiting: int = MAX_WAITING) -> None:
        self._backoff = backoff
        self._deadline_s = deadline_s
        self._max = max_waiting
        self._waiting: dict[K, Waiting[J]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._tickets = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __repr__(self) -> str:
        return f"<RetryBook {len(self._waiting)} waiting, deadline {self._deadline_s:g} s, {self._backoff!r}>"

    def take_slot(self, key: K, job: J, seq: int, now: float) -> bool:
        """A new push for ``key``: True if one was waiting and the new one took its place (do not send it now)."""
        w = self._waiting.get(key)
        if w is None or w.seq > seq:
            return False
        w.job, w.seq, w.first_at = job, seq, now
        return True

    def failed(self, key: K, job: J, seq: int, attempts: int, first_at: float, now: float, hint_s: float,
               ) -> Verdict:
        """Try ``attempts`` of ``job`` was answered "retry later": schedule the next try, or say why not."""
        w = self._waiting.get(key)
        if w is not None and w.seq > seq:
            return Verdict.SUPERSEDED
        due = now + max(0.0, self._backoff.delay_s(attempts, hint_s))
        if due > first_at + self._deadline_s:
            return Verdict.EXPIRED
        if w is None and len(self._waiting) >= self._max:
            return Verdict.FULL
        self._tickets += 1
        self._waiting[key] = Waiting(job, seq, attempts, first_at, due, self._tickets)
        heapq.heappush(self._heap, (due, self._tickets, key))
        return Verdict.SCHEDULED if w is None else Verdict.REPLACED

    def pop_due(self, now: float) -> list[tuple[K, Waiting[J]]]:
        """Remove and return the entries due at ``now``, earliest first."""
        out: list[tuple[K, Waiting[J]]] = []
        while self._heap and self._heap[0][0] <= now:
            _, ticket, key = heapq.heappop(self._heap)
            w = self._waiting.get(key)
            if w is not None and w.ticket == ticket:
                del self._waiting[key]
                out.append((key, w))
        return out

    def next_due(self) -> float | None:
        """When the earliest entry is due (None: nothing waits)."""
        while self._heap:
            due, ticket, key = self._heap[0]
            w = self._waiting.get(key)
            if w is not None and w.ticket == ticket:
                return due
            heapq.heappop(self._heap)  # stale: replaced or popped
        return None
