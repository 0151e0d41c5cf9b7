"""The SMP subset a notification server needs (§3.1, §3.2): NSUB, NSUBS, PING and their answers.

Both directions are here: the notification server encodes commands and parses broker messages; the strict
SMP stand-in in ``ntf_server/sim`` parses commands and encodes broker messages, with the version-dependent
forms Haskell uses (Protocol.hs, simplexmq master): ``SOK`` only from v16, ``DELD`` only from v10,
``BLOCKED`` downgraded for old clients, and from v19 ``NSUBS``/``SOKS``/``ENDS`` carry an IdsHash (the XOR
of the MD5 of every queue id, 16 bytes) after the count; before v19 ``NSUBS`` has no parameters (the
server reads count -1 and an empty hash) and ``SOKS``/``ENDS`` only the count (the hash reads as empty).

Why one module of about 310 lines: both directions of every command in one table, so the client's encoder and the
stand-in's parser cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final, assert_never

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, Reader, enc_int64, enc_maybe, enc_short
from ntf_server.protocol.error_types import (
    AUTH,
    BlockedErr,
    CmdError,
    CommandError,
    ErrorType,
    dec_error,
    enc_error,
)
from ntf_server.protocol.framing import (
    SMP_VERSION_BLOCKED_ENTITY,
    SMP_VERSION_CLIENT_NOTICES,
    SMP_VERSION_DELETED_EVENT,
    SMP_VERSION_RCV_SERVICE,
    SMP_VERSION_SERVICE_CERTS,
)

NONCE_LEN: Final = 24
NMSG_META_PADDED_LEN: Final = 128  # cbEncrypt(rcvNtfDhSecret, nonce, NMsgMeta, 128): 144 bytes on the wire

# ---------------------------------------------------------------- commands (ntf server → SMP server)


@dataclass(frozen=True, slots=True)
class NSub:
    TAG: ClassVar[bytes] = b"NSUB"


IDS_HASH_LEN: Final = 16
EMPTY_IDS_HASH: Final = bytes(IDS_HASH_LEN)  # Haskell's ``mempty``: the hash of no queues


def queue_ids_hash(ids: Iterable[bytes]) -> bytes:
    """``queueIdsHash``: the XOR of MD5(queue id) over ``ids`` (order-free; adding a queue twice removes it)."""
    acc = 0
    for q in ids:
        acc ^= int.from_bytes(hashlib.md5(q, usedforsecurity=False).digest(), "big")
    return acc.to_bytes(IDS_HASH_LEN, "big")


@dataclass(frozen=True, slots=True)
class NSubs:
    """Subscribe every queue tied to our service: how many we expect and their IdsHash (v19+)."""

    TAG: ClassVar[bytes] = b"NSUBS"
    count: int = -1  # what a pre-v19 server reads
    ids_hash: bytes = EMPTY_IDS_HASH


@dataclass(frozen=True, slots=True)
class SmpPing:
    TAG: ClassVar[bytes] = b"PING"


SmpCommand = NSub | NSubs | SmpPing

_COMMANDS: Final[dict[bytes, SmpCommand]] = {b"NSUB": NSub(), b"NSUBS": NSubs(), b"PING": SmpPing()}
_WHOLE_COMMANDS: Final = {tag: c for tag, c in _COMMANDS.items() if tag != b"NSUBS"}  # NSUBS: by version


def encode_command(c: SmpCommand, version: int) -> bytes:
    if isinstance(c, NSubs) and version >= SMP_VERSION_RCV_SERVICE:
        return b"NSUBS " + enc_int64(c.count) + enc_short(c.ids_hash)
    return c.TAG


def uses_service_auth(c: SmpCommand) -> bool:
    """``useServiceAuth``: commands double-signed in a service session."""
    return isinstance(c, NSub)


def parse_command(data: bytes, version: int) -> SmpCommand | ErrorType:
    """Server side. Other SMP commands exist but a notifier may not use them: ``CMD PROHIBITED``."""
    if (whole := _WHOLE_COMMANDS.get(data)) is not None:
        return whole  # NSUB and PING, looked up whole (the stand-in parses one per NSUB)
    tag = data.partition(b" ")[0]
    if tag == b"NSUBS" and version >= SMP_VERSION_RCV_SERVICE:
        r = Reader(data[len(tag):])
        try:
            r.space()
            c = NSubs(r.int64(), r.short())
            r.end()
        except CodecError:
            return CmdError(CommandError.SYNTAX)
        return c
    if tag in _COMMANDS:
        return _COMMANDS[tag] if data == tag else CmdError(CommandError.SYNTAX)
    if tag in _OTHER_SMP_TAGS:
        return CmdError(CommandError.PROHIBITED)
    return CmdError(CommandError.UNKNOWN)


_OTHER_SMP_TAGS: Final = frozenset(
    {b"NEW", b"SUB", b"SUBS", b"KEY", b"RKEY", b"LSET", b"LDEL", b"NKEY", b"NDEL", b"GET", b"ACK", b"OFF",
     b"DEL", b"QUE", b"SKEY", b"SEND", b"LKEY", b"LGET", b"PRXY", b"PFWD", b"RFWD"}
)


def check_command_credentials(has_auth: bool, entity_id: bytes, c: SmpCommand) -> CmdError | None:
    match c:
        case NSub() | NSubs():
            if not has_auth:
                return CmdError(CommandError.NO_AUTH)
            return None if entity_id else CmdError(CommandError.NO_ENTITY)
        case SmpPing():
            return CmdError(CommandError.HAS_AUTH) if has_auth or entity_id else None
        case _:
            assert_never(c)


# ---------------------------------------------------------------- broker messages (SMP server → ntf server)


@dataclass(frozen=True, slots=True)
class SOk:
    """``OK`` (v < 16) or ``SOK serviceId_`` (v ≥ 16): NSUB succeeded."""

    service_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class SOks:
    """``SOKS``: the service's queues are subscribed here, how many the server found, and (v19+) their hash."""

    count: int
    ids_hash: bytes = EMPTY_IDS_HASH


@dataclass(frozen=True, slots=True)
class NMsg:
    nonce: bytes
    enc_meta: bytes  # opaque cbEncrypt(rcvNtfDhSecret, nonce, NMsgMeta, 128): 144 bytes from real servers

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_LEN:
            raise CodecError("NMSG nonce must be 24 bytes")

    def __repr__(self) -> str:
        return f"NMsg(<{len(self.enc_meta)} bytes>)"


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Ends:
    """``ENDS``: another session of our service took these queues (count, and the hash from v19)."""

    count: int
    ids_hash: bytes = EMPTY_IDS_HASH


@dataclass(frozen=True, slots=True)
class Deld:
    pass


@dataclass(frozen=True, slots=True)
class SmpErr:
    error: ErrorType


@dataclass(frozen=True, slots=True)
class SmpPong:
    pass


BrokerMsg = SOk | SOks | NMsg | End | Ends | Deld | SmpErr | SmpPong


def encode_broker_msg(m: BrokerMsg, version: int) -> bytes:
    match m:
        case SOk(service_id):
            if version >= SMP_VERSION_SERVICE_CERTS:
                return b"SOK " + enc_maybe(service_id, enc_short)
            return b"OK"
        case SOks(count, ids_hash):
            return b"SOKS " + _service_counts(count, ids_hash, version)
        case NMsg(nonce, enc_meta):
            return b"NMSG " + nonce + enc_short(enc_meta)
        case End():
            return b"END"
        case Ends(count, ids_hash):
            return b"ENDS " + _service_counts(count, ids_hash, version)
        case Deld():
            return b"DELD" if version >= SMP_VERSION_DELETED_EVENT else b"END"
        case SmpErr(error):
            return b"ERR " + enc_error(_downgrade_error(error, version))
        case SmpPong():
            return b"PONG"
        case _:
            assert_never(m)


def _service_counts(count: int, ids_hash: bytes, version: int) -> bytes:
    return enc_int64(count) + (enc_short(ids_hash) if version >= SMP_VERSION_RCV_SERVICE else b"")


def _downgrade_error(e: ErrorType, version: int) -> ErrorType:
    if isinstance(e, BlockedErr):
        if version < SMP_VERSION_BLOCKED_ENTITY:
            return AUTH
        if version < SMP_VERSION_CLIENT_NOTICES:
            return BlockedErr(e.reason, None)
    return e


def parse_broker_msg(data: bytes, version: int) -> BrokerMsg:
    """Client side, at the connection's ``version``; raises ``CodecError`` for unknown or malformed messages."""
    if (whole := _WHOLE.get(data)) is not None:
        return whole  # the messages without a parameter, and SOK without a service id (most NSUB answers)
    tag = data.partition(b" ")[0]
    r = Reader(data[len(tag) :])
    msg: BrokerMsg
    if tag in _NO_PARAMS:
        msg = _NO_PARAMS[tag]
    else:
        r.space()
        if tag == b"SOK":
            msg = SOk(r.maybe(Reader.short))
        elif tag == b"SOKS":
            msg = SOks(*_read_service_counts(r, version))
        elif tag == b"NMSG":
            msg = NMsg(r.take(NONCE_LEN), r.short())
        elif tag == b"ENDS":
            msg = Ends(*_read_service_counts(r, version))
        elif tag == b"ERR":
            msg = SmpErr(dec_error(r))
        else:
            raise CodecError("unknown or unexpected SMP broker message")
    r.end()
    return msg


def _read_service_counts(r: Reader, version: int) -> tuple[int, bytes]:
    count = r.int64()
    if version < SMP_VERSION_RCV_SERVICE:
        return count, EMPTY_IDS_HASH
    ids_hash = r.short()
    if len(ids_hash) != IDS_HASH_LEN:
        raise CodecError("IdsHash must be 16 bytes")
    return count, ids_hash


_NO_PARAMS: Final[dict[bytes, BrokerMsg]] = {
    b"OK": SOk(None), b"END": End(), b"DELD": Deld(), b"PONG": SmpPong()
}
_WHOLE: Final[dict[bytes, BrokerMsg]] = {**_NO_PARAMS, b"SOK 0": SOk(None)}  # what these parse to, as a whole


def check_broker_entity(m: BrokerMsg, entity_id: bytes) -> bool:
    """Client rule (§2.5): PONG has no entity; ERR any; everything else needs one."""
    match m:
        case SmpPong():
            return not entity_id
        case SmpErr():
            return True
        case SOk() | SOks() | NMsg() | End() | Ends() | Deld():
            return bool(entity_id)
        case _:
            assert_never(m)


# ---------------------------------------------------------------- notification metadata (§3.2)


@dataclass(frozen=True, slots=True)
class NMsgMeta:
    """What ``NMSG`` carries, encrypted for the recipient: ``short(msgId) ‖ Int64(msgTs)``.

    The notification server never sees this in clear: it lacks ``rcvNtfDhSecret`` (shared by the SMP
    server and the recipient only) and forwards nonce and ciphertext untouched (§5.7). The SMP stand-in
    encrypts it and the simulated app decrypts it.
    """

    msg_id: bytes
    msg_ts: int  # SystemTime: whole seconds since the epoch

    def encode(self) -> bytes:
        return enc_short(self.msg_id) + enc_int64(self.msg_ts)

    @staticmethod
    def decode(data: bytes) -> NMsgMeta:
        r = Reader(data)
        meta = NMsgMeta(r.short(), r.int64())
        r.end()
        return meta

    def __repr__(self) -> str:
        return f"NMsgMeta(<{len(self.msg_id)}-byte id>, {self.msg_ts})"


def encrypt_nmsg_meta(rcv_ntf_dh_secret: bytes, nonce: bytes, meta: NMsgMeta) -> bytes:
    """The SMP server's side (``mkMessageNotification``); used by the stand-in."""
    return crypto.cb_encrypt(rcv_ntf_dh_secret, nonce, meta.encode(), NMSG_META_PADDED_LEN)


def decrypt_nmsg_meta(rcv_ntf_dh_secret: bytes, nonce: bytes, enc_meta: bytes) -> NMsgMeta:
    """The recipient app's side; raises ``CodecError`` (``CryptoError``) on a bad box or layout."""
    return NMsgMeta.decode(crypto.cb_decrypt(rcv_ntf_dh_secret, nonce, enc_meta))
