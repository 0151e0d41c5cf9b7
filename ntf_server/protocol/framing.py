"""Versions, transmissions, blocks and batching (§1.4, §1.5, §1.9, §2.3, §7.1 T14–T15).

Theory of operation: a connection's negotiated parameters are a frozen ``THParams``. Sending: the caller
encodes the command bytes, builds ``authorized`` with :func:`for_auth` (what is signed), authorizes it,
then :func:`encode_transmission` gives the bytes to batch; :func:`batch_transmissions` packs encoded
transmissions into block contents exactly as Haskell's ``batchTransmissions_`` does (filling from the end,
so the *first* block holds the remainder), and :func:`encode_block` pads each to the block size.
Receiving: :func:`decode_block` unpads, :func:`parse_block` splits a batch and parses each transmission
independently (one bad transmission yields a ``CodecError`` in its slot, the others still parse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from ntf_server.protocol.encoding import CodecError, Reader, enc_large, enc_short, pad, unpad

NTF_BLOCK_SIZE: Final = 512
SMP_BLOCK_SIZE: Final = 16384
# 2 bytes pad length + 1 byte count + 16 bytes block-encryption tag (reserved even when not encrypting).
BATCH_OVERHEAD: Final = 19
MAX_BATCH: Final = 255


@dataclass(frozen=True, slots=True)
class VersionRange:
    min: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max <= 0xFFFF:
            raise CodecError(f"invalid version range {self.min}..{self.max}")

    def __contains__(self, v: object) -> bool:
        return isinstance(v, int) and self.min <= v <= self.max

    def all(self) -> list[int]:
        """Every version in the range (tests run at each one we offer)."""
        return list(range(self.min, self.max + 1))

    def intersect(self, other: VersionRange) -> VersionRange | None:
        lo, hi = max(self.min, other.min), min(self.max, other.max)
        return VersionRange(lo, hi) if lo <= hi else None

    def compatible_version(self, other: VersionRange) -> int | None:
        """Highest version both ranges support (``compatibleVersion``)."""
        vr = self.intersect(other)
        return None if vr is None else vr.max

    def capped(self, v: int) -> VersionRange | None:
        """``compatibleVRange'``: the range cut at ``v``, if ``v`` is not below it (T15)."""
        return VersionRange(self.min, min(self.max, v)) if v >= self.min else None

    def encode(self) -> bytes:
        return self.min.to_bytes(2, "big") + self.max.to_bytes(2, "big")

    @staticmethod
    def decode(r: Reader) -> VersionRange:
        return VersionRange(r.word16(), r.word16())


# ---------------------------------------------------------------- NTF versions (Notifications/Transport.hs)
NTF_INITIAL_VERSION: Final = 1
NTF_VERSION_AUTH_BATCH: Final = 2  # X25519 authenticators, batching, implied session id, signed server key
NTF_VERSION_INVALID_REASON: Final = 3  # TKN INVALID,<reason>
NTF_CURRENT_VERSION: Final = 3
NTF_SUPPORTED_VRANGE: Final = VersionRange(NTF_INITIAL_VERSION, NTF_CURRENT_VERSION)
NTF_LEGACY_VRANGE: Final = VersionRange(NTF_INITIAL_VERSION, NTF_INITIAL_VERSION)  # no ALPN negotiated

# ---------------------------------------------------------------- SMP versions (Transport.hs)
SMP_VERSION_SUB_MODE: Final = 6
SMP_VERSION_AUTH_CMDS: Final = 7  # X25519 authenticators; session id implied; keys in handshake
SMP_VERSION_SENDING_PROXY: Final = 8
SMP_VERSION_SND_AUTH_KEY: Final = 9
SMP_VERSION_DELETED_EVENT: Final = 10  # DELD (older servers send END)
SMP_VERSION_ENCRYPTED_BLOCK: Final = 11
SMP_VERSION_BLOCKED_ENTITY: Final = 12
SMP_VERSION_PROXY_SERVER_HANDSHAKE: Final = 14
SMP_VERSION_SHORT_LINKS: Final = 15
SMP_VERSION_SERVICE_CERTS: Final = 16  # SOK/SOKS/ENDS/NSUBS, service signature slot
SMP_VERSION_NEW_NTF_CREDS: Final = 17
SMP_VERSION_CLIENT_NOTICES: Final = 18
SMP_VERSION_RCV_SERVICE: Final = 19  # SOKS/ENDS/NSUBS carry the IdsHash beside the count
SMP_VERSION_NAMES: Final = 20  # name resolution (ERR NAME …); nothing else a notifier sees changes
SMP_CURRENT_VERSION: Final = 20
# v6 sends no certificate chain in the handshake, so the server identity could not be pinned from
# Python 3.11 (PROTOCOL.md §1.9); our client starts at v7.
SMP_CLIENT_VRANGE: Final = VersionRange(SMP_VERSION_AUTH_CMDS, SMP_CURRENT_VERSION)
SMP_SERVER_VRANGE: Final = VersionRange(SMP_VERSION_SUB_MODE, SMP_CURRENT_VERSION)
SMP_LEGACY_SERVER_VRANGE: Final = VersionRange(SMP_VERSION_SUB_MODE, SMP_VERSION_SUB_MODE)


@dataclass(frozen=True, slots=True)
class THParams:
    """Negotiated per-connection transmission parameters (``THandleParams``)."""

    version: int
    session_id: bytes
    block_size: int
    implied_session_id: bool
    batch: bool
    service_auth: bool = False

    @staticmethod
    def ntf(version: int, session_id: bytes) -> THParams:
        v2 = version >= NTF_VERSION_AUTH_BATCH
        return THParams(version, session_id, NTF_BLOCK_SIZE, implied_session_id=v2, batch=v2)

    @staticmethod
    def smp(version: int, session_id: bytes) -> THParams:
        return THParams(
            version,
            session_id,
            SMP_BLOCK_SIZE,
            implied_session_id=version >= SMP_VERSION_AUTH_CMDS,
            batch=True,
            service_auth=version >= SMP_VERSION_SERVICE_CERTS,
        )


class RawTransmission(NamedTuple):
    """A parsed but not yet interpreted transmission (``RawTransmission``). A NamedTuple, not a frozen
    dataclass: one is made per transmission received (the SMP stand-in: per NSUB), in a third of the time."""

    auth: bytes
    service_sig: bytes | None
    authorized: bytes  # what the auth covers: short(sessionId) ‖ short(corrId) ‖ short(entityId) ‖ command
    session_id: bytes  # as sent (empty when implied)
    corr_id: bytes
    entity_id: bytes
    command: bytes


def for_auth(params: THParams, corr_id: bytes, entity_id: bytes, command: bytes) -> tuple[bytes, bytes]:
    """``(authorized, to_send)``: the bytes the auth covers and the transmission body sent after it."""
    body = enc_short(corr_id) + enc_short(entity_id) + command
    authorized = enc_short(params.session_id) + body
    return authorized, (body if params.implied_session_id else authorized)


def encode_auth(params: THParams, auth: bytes, service_sig: bytes | None = None) -> bytes:
    """Auth field(s): ``short(auth)``, then the service signature slot when the connection has one."""
    out = enc_short(auth)
    if params.service_auth and auth:
        out += b"0" if service_sig is None else b"1" + enc_short(service_sig)
    return out


def encode_transmission(
    params: THParams,
    corr_id: bytes,
    entity_id: bytes,
    command: bytes,
    *,
    auth: bytes = b"",
    service_sig: bytes | None = None,
) -> bytes:
    body = enc_short(corr_id) + enc_short(entity_id) + command  # for_auth's to_send, without its authorized
    return encode_auth(params, auth, service_sig) + (body if params.implied_session_id
                                                     else enc_short(params.session_id) + body)


def _short_at(data: bytes, i: int) -> tuple[bytes, int]:
    """``Reader.short`` over ``data`` at ``i``: the string and the index after it."""
    if i >= len(data):
        raise CodecError("need 1 bytes, have 0")
    end = i + 1 + data[i]
    if end > len(data):
        raise CodecError(f"need {data[i]} bytes, have {len(data) - i - 1}")
    return data[i + 1:end], end


def parse_transmission(params: THParams, data: bytes) -> RawTransmission:
    """``transmissionP``: all after the auth fields is ``authorized`` (session id prepended if implied).

    By index over the bytes, not through a ``Reader``: the SMP stand-in parses one per NSUB it checks
    (tests/protocol/test_framing.py holds it to the ``Reader`` form on any input)."""
    if type(data) is not bytes:
        data = bytes(data)
    auth, i = _short_at(data, 0)
    service_sig = None
    if params.service_auth and auth:
        tag = data[i:i + 1]
        if tag == b"1":
            service_sig, i = _short_at(data, i + 1)
        elif tag == b"0":
            i += 1
        elif not tag:
            raise CodecError("need 1 bytes, have 0")
        else:
            raise CodecError(f"bad Maybe tag {tag!r}")
    rest = data[i:]
    if params.implied_session_id:
        authorized, session_id, i = enc_short(params.session_id) + rest, b"", 0
    else:
        authorized = rest
        session_id, i = _short_at(rest, 0)
    corr_id, i = _short_at(rest, i)
    entity_id, i = _short_at(rest, i)
    return RawTransmission(auth, service_sig, authorized, session_id, corr_id, entity_id, rest[i:])


# ---------------------------------------------------------------- blocks and batches


@dataclass(frozen=True, slots=True)
class Batch:
    """One block's content and the indexes (into the input) of the transmissions it carries."""

    content: bytes
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TooLarge:
    """A transmission that does not fit a block on its own (``TELargeMsg``); it is not sent."""

    index: int


def batch_transmissions(params: THParams, transmissions: Sequence[bytes]) -> list[Batch | TooLarge]:
    """Pack encoded transmissions into block contents (``batchTransmissions'``), in sending order."""
    if not params.batch:
        return [
            Batch(t, (i,)) if len(t) <= params.block_size - 2 else TooLarge(i)
            for i, t in enumerate(transmissions)
        ]
    limit = params.block_size - BATCH_OVERHEAD
    out: list[Batch | TooLarge] = []  # built back to front, like Haskell's foldr, then reversed
    cur: list[tuple[int, bytes]] = []
    cur_len = 0

    def flush() -> None:
        if cur:
            items = list(reversed(cur))
            content = bytes((len(items),)) + b"".join(s for _, s in items)
            out.append(Batch(content, tuple(i for i, _ in items)))

    for i in range(len(transmissions) - 1, -1, -1):
        s_len = 2 + len(transmissions[i])  # large(T)
        if cur_len + s_len <= limit and len(cur) < MAX_BATCH:
            cur.append((i, enc_large(transmissions[i])))
            cur_len += s_len
        elif s_len <= limit:
            flush()
            cur, cur_len = [(i, enc_large(transmissions[i]))], s_len
        else:
            flush()
            cur, cur_len = [], 0
            out.append(TooLarge(i))
    flush()
    out.reverse()
    return out


def encode_block(content: bytes, block_size: int) -> bytes:
    return pad(content, block_size)


def decode_block(block: bytes, block_size: int) -> bytes:
    if len(block) != block_size:
        raise CodecError(f"block of {len(block)} bytes, expected {block_size}")
    return unpad(block)


def split_batch(params: THParams, content: bytes) -> list[bytes]:
    """The transmissions in one block's content; the whole content must be consumed (§1.5)."""
    if not params.batch:
        return [content]
    content = bytes(content)
    if not content:
        raise CodecError("need 1 bytes, have 0")
    n, i, size = content[0], 1, len(content)
    if n == 0:
        raise CodecError("empty batch")
    items = []
    for _ in range(n):  # n × large(T), by index: the SMP stand-in splits one block per ~130 NSUBs
        end = i + 2 + int.from_bytes(content[i:i + 2], "big")
        if end > size:  # also a length cut short
            raise CodecError(f"truncated batch: need {end - i} bytes, have {size - i}")
        items.append(content[i + 2:end])
        i = end
    if i != size:
        raise CodecError(f"{size - i} trailing bytes")
    return items


def parse_block(params: THParams, content: bytes) -> list[RawTransmission | CodecError]:
    """Parse every transmission of a block independently. A bad batch raises ``CodecError``."""
    out: list[RawTransmission | CodecError] = []
    for t in split_batch(params, content):
        try:
            out.append(parse_transmission(params, t))
        except CodecError as e:
            out.append(e)
    return out
