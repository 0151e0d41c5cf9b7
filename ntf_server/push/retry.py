"""How long a push waits before it is tried again (pure: nothing sleeps here).

A push APNs answered with "retry later" (429, 5xx, a timeout, a lost connection) is not retried by a
sleeping worker: its outbox entry (store/outbox.py) is made due after a delay chosen by an injected
``Backoff`` (STYLE 9: capped exponential with jitter in production, ``NO_WAIT`` in tests), and the pipeline's
retry scheduler (push/pipeline.py) claims it then, so the senders stay free for other tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol


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
