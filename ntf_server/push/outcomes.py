"""What became of one push attempt, as the push service acts on it (§5.8, STYLE 5).

``PushSender`` implementations (push/apns_sender.py) translate their provider's answers into exactly these,
grouped by what happens next: ``Delivered`` (done), ``Invalid`` (the device token is dead: token INVALID),
``RetryLater`` (try again later: 429, 5xx, timeouts, lost connection; push/delivery.py schedules it) and
``Failed`` (will not succeed as sent: counted, never retried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ntf_server.store.records import InvalidReason, PushProvider


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: InvalidReason


@dataclass(frozen=True, slots=True)
class RetryLater:
    reason: str  # a provider's reason string, never a secret
    after_s: float  # the sender's hint; the retry strategy decides the real delay


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


Outcome = Delivered | Invalid | RetryLater | Failed


class PushSender(Protocol):
    async def push(self, provider: PushProvider, device_token: bytes, body: bytes, *, background: bool) -> Outcome:
        ...
