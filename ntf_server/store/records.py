"""What the store keeps: tokens, subscriptions, last notifications (§4.5–4.7, §5.7, §6.1).

Statuses are small frozen values with the exact text forms of §4.2 (`to_text`/`from_text`), so the
NTF layer can send them verbatim and the store can keep them as short strings. Reprs never show device
tokens, keys or notifier ids (STYLE 12): only their lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

from ntf_server.observability.sensitive import SubId, TokenId
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.ntf_types import (
    MAX_ERR_TEXT,
    InvalidReason,
    PushProvider,
    SubStatus,
    SubStatusKind,
    TokenStatus,
    TokenStatusKind,
)
from ntf_server.protocol.token_fsm import SUB_COMMANDS_ALLOWED, TokenEvent, changing_sources, sources

# The status and provider types are the protocol's own (one definition, same text forms on the wire and
# in the store); re-exported here because they are also what the store keeps.
__all__ = [
    "DAY_S", "MAX_ERR_TEXT", "MAX_NOTICES", "SUB_COMMANDS_ALLOWED", "InvalidReason", "Notice", "PushProvider",
    "SubStatus", "SubStatusKind", "SubscriptionRecord", "TokenRecord", "TokenStatus", "TokenStatusKind",
    "day_of",
]


DAY_S: Final = 86400


def day_of(now: float) -> int:
    """Unix seconds of midnight UTC (§4.3 `getSystemDate`): a token's "last used" day."""
    return int(now // DAY_S) * DAY_S


# Well-known values, so callers write `TOKEN_ACTIVE` rather than building one.
TOKEN_NEW: Final = TokenStatus(TokenStatusKind.NEW)
TOKEN_REGISTERED: Final = TokenStatus(TokenStatusKind.REGISTERED)
TOKEN_CONFIRMED: Final = TokenStatus(TokenStatusKind.CONFIRMED)
TOKEN_ACTIVE: Final = TokenStatus(TokenStatusKind.ACTIVE)
TOKEN_EXPIRED: Final = TokenStatus(TokenStatusKind.EXPIRED)

# Status groups of §4.5 ("which statuses allow what").
VERIFY_ALLOWED: Final = sources(TokenEvent.TVFY)  # the store's guard for activation
CONFIRM_KEEPS: Final = frozenset(TokenStatusKind) - changing_sources(TokenEvent.VERIFICATION_DELIVERED)


SUB_NEW: Final = SubStatus(SubStatusKind.NEW)
SUB_PENDING: Final = SubStatus(SubStatusKind.PENDING)
SUB_ACTIVE: Final = SubStatus(SubStatusKind.ACTIVE)
SUB_INACTIVE: Final = SubStatus(SubStatusKind.INACTIVE)
# Only these are resubscribed on restart (§4.6).
RESUBSCRIBE_KINDS: Final = frozenset(
    {SubStatusKind.NEW, SubStatusKind.PENDING, SubStatusKind.ACTIVE, SubStatusKind.INACTIVE}
)




@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One registered device token (§4.7). Times are Unix seconds; `last_used_day` is midnight UTC."""

    token_id: bytes
    provider: PushProvider
    device_token: bytes = field(repr=False)
    status: TokenStatus
    verify_key: bytes = field(repr=False)  # SPKI DER of the client's auth key
    dh_public: bytes = field(repr=False)  # SPKI DER of the server X25519 public key (sent in IDTKN)
    dh_private: bytes = field(repr=False)  # PKCS#8 DER of the server X25519 private key
    dh_secret: bytes = field(repr=False)  # raw 32-byte X25519 shared secret
    reg_code: bytes = field(repr=False)  # 32 random bytes
    cron_interval_min: int = 0  # 0 = periodic pushes off
    cron_sent_at: int | None = None
    last_used_day: int = 0

    def __repr__(self) -> str:
        return (
            f"TokenRecord(id={TokenId(self.token_id)}, {self.provider.value}, {self.status.to_text()}, "
            f"cron={self.cron_interval_min}min)"
        )


class ResubQueue(NamedTuple):
    """What resubscribing needs of one subscription (``iter_server_queues``): no subscription id (an HMAC per
    record to make, about a fifth of paging's CPU in py-spy) and no record object."""

    notifier_id: bytes
    notifier_key: bytes  # as stored: PKCS#8 DER of the notifier private key
    service_assoc: bool  # tied to our SMP service
    token_id: bytes

    def __repr__(self) -> str:
        return f"ResubQueue(tied={self.service_assoc})"


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One notifier subscription (§4.4, §6.1)."""

    sub_id: bytes
    token_id: bytes
    server: SMPServer
    notifier_id: bytes = field(repr=False)
    notifier_key: bytes = field(repr=False)  # PKCS#8 DER of the notifier private key
    status: SubStatus
    service_assoc: bool = False

    def __repr__(self) -> str:
        return f"SubscriptionRecord(id={SubId(self.sub_id)}, {self.server!r}, {self.status.to_text()})"


MAX_NOTICES: Final = 6  # §5.7 `maxNtfs`: a token keeps, and a push carries, at most its newest 6


@dataclass(frozen=True, slots=True)
class Notice:
    """One `NMSG` from its SMP block to the push payload (§3.2, §5.7): the SMP server, the queue's
    notifier id, and the nonce and encrypted metadata as the SMP server sent them (for the recipient: we
    cannot decrypt them), with the time it arrived. The same record is stored as the subscription's last
    notification and carried in pushes; `received_at_ms` orders a token's notices, payloads use seconds."""

    server: SMPServer
    notifier_id: bytes = field(repr=False)
    received_at_ms: int
    nonce: bytes = field(repr=False)
    enc_meta: bytes = field(repr=False)

    @property
    def received_at(self) -> int:
        return self.received_at_ms // 1000

    def __repr__(self) -> str:
        return f"Notice({self.server!r}, at={self.received_at})"
