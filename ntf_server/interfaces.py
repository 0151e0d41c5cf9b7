"""The narrow interfaces between the server's components (ntf_server/README.md "The parts"), in one place.

Each component takes only what it uses, injected at construction by ``server.py``: the handlers a
``Pusher`` and a ``SubscriptionSink``, housekeeping the same sink, so a subscriber pool that replaces
``NullSink`` reaches every caller at once (a mutable attribute set after start-up did not: housekeeping
kept the sink it was given). The store's own protocol lives in ``store/base.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ntf_server.store.base import RemovedSub
from ntf_server.store.records import SubscriptionRecord, TokenRecord


class Pusher(Protocol):
    """Where verification pushes go (the push service): checks the per-device cap (one Redis call), queues,
    never waits for the push."""

    async def send_verification(self, token: TokenRecord) -> None: ...


class SubscriptionSink(Protocol):
    """The subscriber pool's intake: new subscriptions to subscribe (NSUB), removed ones to forget, tokens
    that became ACTIVE (their stored subscriptions to subscribe). Only ACTIVE tokens' subscriptions are
    handed over: the others open no SMP connection."""

    def subscribe(self, sub: SubscriptionRecord) -> None: ...

    def forget(self, subs: Sequence[RemovedSub]) -> None: ...

    def token_activated(self, token_id: bytes) -> None: ...


class NullSink:
    """No subscriber pool: accepts and drops (subscriptions stay NEW in the store)."""

    def __repr__(self) -> str:
        return "<NullSink>"

    def subscribe(self, sub: SubscriptionRecord) -> None:
        pass

    def forget(self, subs: Sequence[RemovedSub]) -> None:
        pass

    def token_activated(self, token_id: bytes) -> None:
        pass
