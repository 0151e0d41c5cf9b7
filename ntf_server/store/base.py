"""The store's protocols and result types. One protocol per entity (tokens, subscriptions, notifications),
split by role where a component uses a small part of one; `Store` combines them all, and `RedisStore`
(store/redis.py) implements it.

Where the rules of §4.5 live: the store enforces the *guards* that must be atomic with the write —
`activate_token` only from REGISTERED/CONFIRMED/ACTIVE (and deletes the other registrations of the device
token in the same step), `confirm_token` never downgrades CONFIRMED/ACTIVE, `set_token_status` takes an
optional set of allowed source statuses (compare-and-set). Deciding *which* event happens (code check,
DH check on repeat TNEW, which push outcome) is the NTF handlers' job.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.records import (
    Notice,
    PushProvider,
    ResubQueue,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)

if TYPE_CHECKING:
    from ntf_server.policy_types import Budget
    from ntf_server.store.notices import Claimed, Decided, ForRetry, PolicyChanged
    from ntf_server.store.outbox import Cause, OutboxEntry, PushKindCode


class TokenCreate(enum.Enum):
    CREATED = "created"
    DUPLICATE = "duplicate"  # same (provider, device token, verify key) exists: Haskell answers AUTH
    QUOTA = "quota"  # the device token has the most registrations allowed: ERR QUOTA


class TokenReplace(enum.Enum):
    """What `TRPL` did (§4.4)."""

    REPLACED = "replaced"
    NO_TOKEN = "no_token"  # noqa: S105 - not a password
    DUPLICATE = "duplicate"  # the new device token is registered with this verify key: AUTH
    QUOTA = "quota"  # the new device token has the most registrations allowed: ERR QUOTA


class SubCreate(enum.Enum):
    CREATED = "created"
    EXISTS = "exists"  # same token, same notifier key: answer IDSUB with the stored id (§4.4)
    CONFLICT = "conflict"  # another token, or another key: AUTH
    NO_TOKEN = "no_token"  # noqa: S105 - not a password
    QUOTA = "quota"  # over the token's caps (SubCaps): ERR QUOTA


@dataclass(frozen=True, slots=True)
class SubCaps:
    """Most subscriptions and distinct SMP servers one token may have (0 = no cap)."""

    subscriptions: int = 0
    servers: int = 0


NO_CAPS: Final = SubCaps()


@dataclass(frozen=True, slots=True)
class RemovedSub:
    """A subscription removed by a cascade; the subscriber drops it from its maps (§4.4 TDEL)."""

    sub_id: bytes
    server: SMPServer
    notifier_id: bytes

    def __repr__(self) -> str:
        return f"RemovedSub({self.server!r})"


@dataclass(frozen=True, slots=True)
class StoreCounts:
    tokens: int
    subscriptions: int
    last_notifications: int
    smp_servers: int


# ---------------------------------------------------------------- protocols
# One per entity, split where a component uses a small part (STYLE 10: components take narrow
# dependencies); `Store` combines them all. A component declares what it takes as one of these, or as a
# protocol inheriting from several of them (handlers.py `HandlerStore`, subscriber/pool.py `PoolStore`).


class TokenStatusStore(Protocol):
    """Token status changes, guarded atomically (§4.5): push outcomes (push/service.py)."""

    async def set_token_status(
        self, token_id: bytes, status: TokenStatus, only_from: Collection[TokenStatusKind] | None = None
    ) -> TokenStatus | None: ...
    async def confirm_token(self, token_id: bytes) -> TokenStatus | None: ...


class TokenLookup(Protocol):
    """One token by id (a push decided earlier, e.g. deferred, reads the token's current record)."""

    async def get_token(self, token_id: bytes) -> TokenRecord | None: ...


class PushTokenStore(TokenStatusStore, TokenLookup, Protocol):
    """What push delivery needs: outcomes change a token's status; a retry re-reads the token first."""


class TokenStore(TokenStatusStore, TokenLookup, Protocol):
    """The token commands (§4.3–4.4); `get_token` costs the same whether or not the token exists."""

    def new_token_id(self, provider: PushProvider, device_token: bytes) -> bytes:
        """A fresh random id for a TNEW's token (a sharded store places it with the device's other
        registrations: store/shards.py)."""
        ...
    async def create_token(
        self, token: TokenRecord, now: float | None = None, max_per_device: int = 0
    ) -> TokenCreate: ...
    async def find_token(
        self, provider: PushProvider, device_token: bytes, verify_key: bytes
    ) -> TokenRecord | None: ...
    async def replace_token(
        self, token_id: bytes, provider: PushProvider, device_token: bytes, reg_code: bytes, max_per_device: int = 0
    ) -> TokenReplace: ...
    async def activate_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]: ...
    async def delete_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]: ...
    async def touch_token(self, token_id: bytes, now: float) -> None: ...
    async def set_cron_interval(self, token_id: bytes, minutes: int, now: float) -> bool: ...


class CronStore(Protocol):
    """Periodic pushes (§5.10): which tokens are due, and recording one was sent."""

    async def tokens_due_for_cron(self, now: float, limit: int = 1000) -> list[TokenRecord]: ...
    async def mark_cron_sent(self, token_id: bytes, now: float) -> bool: ...


class TokenExpiryStore(Protocol):
    """Housekeeping (maintenance.py): tokens unused or never verified, deleted with their subscriptions."""

    async def expire_tokens(
        self, now: float, unused_days: int, batch: int = 100
    ) -> tuple[list[bytes], list[RemovedSub]]: ...
    async def expire_unverified(
        self, now: float, after_s: float, batch: int = 100
    ) -> tuple[list[bytes], list[RemovedSub]]: ...


class SubscriptionStore(Protocol):
    """The subscription commands (§4.3–4.4). The two verification lookups do the same work whether
    or not the records exist (STYLE 4)."""

    async def create_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes, notifier_key: bytes,
        caps: SubCaps = NO_CAPS,
    ) -> tuple[SubCreate, SubscriptionRecord | None]: ...
    async def get_subscription(self, sub_id: bytes) -> SubscriptionRecord | None: ...
    async def subscription_and_token(
        self, sub_id: bytes
    ) -> tuple[SubscriptionRecord | None, TokenRecord | None]: ...
    async def token_and_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes
    ) -> tuple[TokenRecord | None, SubscriptionRecord | None]: ...
    async def delete_subscription(self, sub_id: bytes) -> SubscriptionRecord | None: ...


class ResubscriptionStore(Protocol):
    """The subscriber's side of subscriptions (§3.3, §4.6): which servers, their subscriptions page by
    page, and the statuses the SMP servers answer."""

    async def servers_with_subscriptions(self) -> list[SMPServer]: ...
    def iter_server_queues(
        self, server: SMPServer, page_size: int = 900, untied_only: bool = False,
    ) -> AsyncIterator[list[ResubQueue]]: ...
    async def has_live_subscriptions(self, server: SMPServer) -> bool: ...
    async def token_subscriptions(self, token_id: bytes) -> list[SubscriptionRecord]: ...
    async def set_subscription_statuses(
        self,
        server: SMPServer,
        notifier_ids: Sequence[bytes],
        status: SubStatus,
        service_assoc: bool | None = None,
        only_from: Collection[SubStatusKind] | None = None,
        fence: str | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What we know of our service on one SMP server (store/services.py)."""

    service_id: bytes | None = field(repr=False)  # None: never got one (or dropped after an error)
    count: int  # subscriptions tied to it
    ids_hash: bytes = field(repr=False)


class ServiceStore(Protocol):
    """Our SMP service per SMP server (store/services.py): credentials, service id, tied subscriptions."""

    async def service_credentials(self, server: SMPServer,
                                  make: Callable[[], ServiceCredentials]) -> ServiceCredentials: ...
    async def service_state(self, server: SMPServer) -> ServiceState: ...
    async def set_service_id(self, server: SMPServer, service_id: bytes | None) -> None: ...
    async def set_service_ties(self, server: SMPServer, count: int, ids_hash: bytes) -> None: ...
    def tied_subscriptions(
        self, server: SMPServer, page_size: int = 900) -> AsyncGenerator[list[SubscriptionRecord], None]: ...


class NoticeStore(Protocol):
    """Notices (`NMSG`s) stored and decided a batch at a time, and read again for a deferred push or a retry
    (store/notices.py)."""

    async def notify(self, batch: Sequence[Notice], budgets: Mapping[PushProvider, Budget], now: float,
                     policy: tuple[str, bytes | None] | None, lease_s: float,
                     sent_at: float | None = None) -> list[Decided] | PolicyChanged: ...
    async def claim_deferred(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Claimed | float | None: ...
    async def for_retry(self, tid: bytes, cause: Cause | None) -> ForRetry: ...


class Outbox(Protocol):
    """Pushes from their decision until APNs answered (store/outbox.py `RedisOutbox`)."""

    async def add(self, kind: PushKindCode, token_id: bytes, first_at: float, due: float, tries: int,
                  cause: Cause | None = None) -> int: ...
    async def ack(self, ids: Sequence[int]) -> int: ...
    async def retry(self, id_: int, due: float, tries: int) -> bool: ...
    async def claim(self, now: float, lease_s: float, limit: int) -> list[OutboxEntry]: ...
    async def extend(self, ids: Sequence[int], due: float) -> int: ...
    async def release(self, ids: Sequence[int], now: float) -> int: ...
    async def count(self) -> int: ...


class OutboxStore(Protocol):
    """The outbox as an attribute of the store: the entity store itself, with no forwarding method
    (ntf_server/README.md "Adding a store query")."""

    @property
    def outbox(self) -> Outbox: ...


class StoreStats(Protocol):
    async def counts(self) -> StoreCounts: ...


class StoreLifecycle(Protocol):
    """What the server process does with the store as a whole (server.py)."""

    @property
    def healthy(self) -> bool: ...
    async def watch_health(self, delays: Callable[[], Iterator[float]] = ...) -> None: ...
    async def config_advice(self) -> list[str]: ...
    async def close(self) -> None: ...


class Store(
    TokenStore, CronStore, TokenExpiryStore, SubscriptionStore, ResubscriptionStore, ServiceStore, NoticeStore,
    OutboxStore, StoreStats, StoreLifecycle, Protocol,
):
    """Everything the store does (store/redis.py `RedisStore`)."""
