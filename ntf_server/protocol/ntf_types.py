"""NTF value types shared by the wire and the store (§4.1–4.2, §4.5–4.6): push providers, device
tokens, token and subscription statuses with their exact text forms."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ntf_server.protocol.encoding import CodecError, Reader, enc_short


class PushProvider(enum.Enum):
    """Push provider, valued by its 2-byte NTF wire code (§4.1)."""

    APNS_PROD = "AP"
    APNS_DEV = "AD"
    APNS_TEST = "AT"
    APNS_NULL = "AN"

    @classmethod
    def from_code(cls, code: str | bytes) -> PushProvider:
        text = code.decode("ascii", "replace") if isinstance(code, bytes) else code
        try:
            return cls(text)
        except ValueError:
            raise CodecError(f"unknown push provider {text!r}") from None

    @property
    def text(self) -> str:
        """Text form used in store logs and the Haskell database (``apns_prod`` …)."""
        return _PROVIDER_TEXT[self]


_PROVIDER_TEXT: Final = {
    PushProvider.APNS_DEV: "apns_dev",
    PushProvider.APNS_PROD: "apns_prod",
    PushProvider.APNS_TEST: "apns_test",
    PushProvider.APNS_NULL: "apns_null",
}


@dataclass(frozen=True, slots=True)
class DeviceToken:
    provider: PushProvider
    token: bytes  # lowercase hex ASCII for APNs; used verbatim in the APNs path

    def encode(self) -> bytes:
        return self.provider.value.encode() + enc_short(self.token)

    @staticmethod
    def decode(r: Reader) -> DeviceToken:
        provider = PushProvider.from_code(r.take(2))
        token = r.short()
        # the null provider never pushes: its tokens are labels (the SimpleX tests use "test_ntf_token")
        return DeviceToken(provider, token if provider is PushProvider.APNS_NULL else normalized_device_token(token))

    def __repr__(self) -> str:  # never print a device token (STYLE 12)
        return f"DeviceToken({self.provider.name}, <{len(self.token)} bytes>)"


_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def normalized_device_token(raw: bytes) -> bytes:
    """An APNs device token is hex text (Apple sends bytes, the app hex-encodes them; Haskell's parser takes
    lower-case hex of even length). One device must be one token whatever the case the client used, or the
    per-device caps count it twice: lower-cased here; empty, odd-length or non-hex is a
    syntax error."""
    if not raw or len(raw) % 2 or not _HEX.issuperset(raw):
        raise CodecError("device token must be non-empty hex of even length")
    return raw.lower()


class TokenStatusKind(enum.Enum):
    NEW = "NEW"
    REGISTERED = "REGISTERED"
    INVALID = "INVALID"
    CONFIRMED = "CONFIRMED"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"


class InvalidReason(enum.Enum):
    """Why APNs rejected a token (§5.8); shown after ``INVALID,`` from NTF v3."""

    BAD = "BAD"
    TOPIC = "TOPIC"
    EXPIRED = "EXPIRED"
    UNREGISTERED = "UNREGISTERED"


@dataclass(frozen=True, slots=True)
class TokenStatus:
    kind: TokenStatusKind
    reason: InvalidReason | None = None  # only with INVALID

    def __post_init__(self) -> None:
        if self.reason is not None and self.kind is not TokenStatusKind.INVALID:
            raise CodecError("only INVALID carries a reason")

    def to_text(self, with_reason: bool = True) -> str:
        """§4.2 text; ``with_reason=False`` gives plain ``INVALID`` for NTF connections below v3."""
        if self.reason is not None and with_reason:
            return f"INVALID,{self.reason.value}"
        return self.kind.value

    @classmethod
    def from_text(cls, text: str) -> TokenStatus:
        kind_text, sep, reason_text = text.partition(",")
        try:
            return cls(TokenStatusKind(kind_text), InvalidReason(reason_text) if sep else None)
        except ValueError:
            raise CodecError(f"invalid token status {text!r}") from None


class SubStatusKind(enum.Enum):
    # Hashed by identity (singletons compared by identity; Enum's __hash__ hashes the name in Python): paging
    # for resubscription tests every record's kind against a set.
    __hash__ = object.__hash__

    NEW = "NEW"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    END = "END"
    DELETED = "DELETED"
    AUTH = "AUTH"
    SERVICE = "SERVICE"
    ERR = "ERR"


MAX_ERR_TEXT: Final = 200  # ERR text is informational (Haskell ``show`` output); the store keeps ≤200 bytes


@dataclass(frozen=True, slots=True)
class SubStatus:
    kind: SubStatusKind
    err: str = ""  # only with ERR

    def __post_init__(self) -> None:
        if self.kind is SubStatusKind.ERR:
            if not self.err or len(self.err.encode()) > MAX_ERR_TEXT:
                raise CodecError("ERR status needs a text of 1..200 bytes")
        elif self.err:
            raise CodecError("only ERR carries a text")

    @classmethod
    def error(cls, text: str) -> SubStatus:
        """An ``ERR <text>`` status, the text cut to what the store keeps."""
        cut = text.encode()[:MAX_ERR_TEXT].decode(errors="ignore") or "?"
        return cls(SubStatusKind.ERR, cut)

    def to_text(self) -> str:
        return f"ERR {self.err}" if self.kind is SubStatusKind.ERR else self.kind.value

    @classmethod
    def from_text(cls, text: str) -> SubStatus:
        if (plain := _PLAIN_SUB_STATUSES.get(text)) is not None:
            return plain  # the store decodes ~4 statuses per NMSG (tests/bench/nmsg_pipeline.py)
        if text.startswith("ERR "):
            return cls(SubStatusKind.ERR, text[4:])
        try:
            kind = SubStatusKind(text)
        except ValueError:
            raise CodecError(f"invalid subscription status {text!r}") from None
        return cls(kind)


_PLAIN_SUB_STATUSES: Final = {k.value: SubStatus(k) for k in SubStatusKind if k is not SubStatusKind.ERR}
