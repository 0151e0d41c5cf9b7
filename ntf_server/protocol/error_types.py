"""Protocol error types shared by SMP and NTF (§2.6, ``ErrorType`` in Protocol.hs).

Errors are answers (STYLE 4): they are values sent back as ``ERR <errorType>``, not exceptions.
Encoding is text-like: tags separated by single spaces, ``STORE`` and ``BLOCKED`` take the rest of the
transmission, and the broker's ``RESPONSE``/``UNEXPECTED`` carry a short string.

Why one module of about 310 lines: the whole ``ErrorType`` tree of Protocol.hs with its encoder and its parser side
by side; a split would cut each tag table in two.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, assert_never

from ntf_server.protocol.encoding import CodecError, Reader, enc_short


class CommandError(enum.Enum):
    UNKNOWN = "UNKNOWN"
    SYNTAX = "SYNTAX"
    PROHIBITED = "PROHIBITED"
    NO_AUTH = "NO_AUTH"
    HAS_AUTH = "HAS_AUTH"
    NO_ENTITY = "NO_ENTITY"


class HandshakeError(enum.Enum):
    PARSE = "PARSE"
    IDENTITY = "IDENTITY"
    BAD_AUTH = "BAD_AUTH"
    BAD_SERVICE = "BAD_SERVICE"


class TransportErrorKind(enum.Enum):
    BLOCK = "BLOCK"
    VERSION = "VERSION"
    LARGE_MSG = "LARGE_MSG"
    SESSION = "SESSION"
    NO_AUTH = "NO_AUTH"
    HANDSHAKE = "HANDSHAKE"


@dataclass(frozen=True, slots=True)
class TransportError:
    kind: TransportErrorKind
    handshake: HandshakeError | None = None

    def __post_init__(self) -> None:
        if (self.kind is TransportErrorKind.HANDSHAKE) != (self.handshake is not None):
            raise CodecError("HANDSHAKE transport error needs exactly one handshake error")


# Errors without parameters; the tag is the whole encoding.
SIMPLE_ERRORS: Final = frozenset(
    {"BLOCK", "SESSION", "AUTH", "SERVICE", "CRYPTO", "QUOTA", "EXPIRED", "NO_MSG", "LARGE_MSG", "INTERNAL",
     "DUPLICATE_"}
)


@dataclass(frozen=True, slots=True)
class SimpleError:
    name: str

    def __post_init__(self) -> None:
        if self.name not in SIMPLE_ERRORS:
            raise CodecError(f"not a parameterless error: {self.name!r}")


@dataclass(frozen=True, slots=True)
class CmdError:
    error: CommandError


@dataclass(frozen=True, slots=True)
class StoreErr:
    text: str


@dataclass(frozen=True, slots=True)
class BlockedErr:
    """``BLOCKED reason=spam|content[,notice=<json>]``; the JSON notice is kept as raw bytes."""

    reason: str
    notice: bytes | None = None


class BrokerSimple(enum.Enum):
    NETWORK = "NETWORK"
    TIMEOUT = "TIMEOUT"
    HOST = "HOST"
    NO_SERVICE = "NO_SERVICE"


@dataclass(frozen=True, slots=True)
class BrokerResponse:
    unexpected: bool  # False: RESPONSE, True: UNEXPECTED
    text: bytes


@dataclass(frozen=True, slots=True)
class BrokerTransport:
    error: TransportError


BrokerError = BrokerSimple | BrokerResponse | BrokerTransport


@dataclass(frozen=True, slots=True)
class ProxyProtocol:
    error: ErrorType


@dataclass(frozen=True, slots=True)
class ProxyBroker:
    error: BrokerError


class ProxySimple(enum.Enum):
    BASIC_AUTH = "BASIC_AUTH"
    NO_SESSION = "NO_SESSION"


ProxyError = ProxyProtocol | ProxyBroker | ProxySimple


@dataclass(frozen=True, slots=True)
class ProxyErr:
    error: ProxyError


class NameErrorKind(enum.Enum):
    """``NameErrorType`` of SMP v20 name resolution (Protocol.hs); ``RESOLVER`` carries a text."""

    NO_RESOLVER = "NO_RESOLVER"
    NOT_FOUND = "NOT_FOUND"
    RESOLVER = "RESOLVER"


@dataclass(frozen=True, slots=True)
class NameErr:
    """``NAME <NameErrorType>`` (SMP v20): a name-resolution error; decoded so it never breaks a block."""

    kind: NameErrorKind
    detail: str = ""  # RESOLVER's diagnostic text (the rest of the transmission)


ErrorType = SimpleError | CmdError | StoreErr | BlockedErr | ProxyErr | NameErr

AUTH: Final = SimpleError("AUTH")
BLOCK: Final = SimpleError("BLOCK")
SESSION: Final = SimpleError("SESSION")
QUOTA: Final = SimpleError("QUOTA")
INTERNAL: Final = SimpleError("INTERNAL")


def cmd(e: CommandError) -> CmdError:
    return CmdError(e)


# ---------------------------------------------------------------- encoding


def enc_transport_error(e: TransportError) -> bytes:
    if e.handshake is not None:
        return b"HANDSHAKE " + e.handshake.value.encode()
    return e.kind.value.encode()


def enc_broker_error(e: BrokerError) -> bytes:
    match e:
        case BrokerSimple():
            return e.value.encode()
        case BrokerResponse(unexpected, text):
            return (b"UNEXPECTED " if unexpected else b"RESPONSE ") + enc_short(text)
        case BrokerTransport(err):
            return b"TRANSPORT " + enc_transport_error(err)
        case _:
            assert_never(e)


def enc_proxy_error(e: ProxyError) -> bytes:
    match e:
        case ProxyProtocol(err):
            return b"PROTOCOL " + enc_error(err)
        case ProxyBroker(err):
            return b"BROKER " + enc_broker_error(err)
        case ProxySimple():
            return e.value.encode()
        case _:
            assert_never(e)


def enc_error(e: ErrorType) -> bytes:
    match e:
        case SimpleError(name):
            return name.encode()
        case CmdError(err):
            return b"CMD " + err.value.encode()
        case StoreErr(text):
            return b"STORE " + text.encode()
        case BlockedErr(reason, notice):
            return b"BLOCKED reason=" + reason.encode() + (b"" if notice is None else b",notice=" + notice)
        case ProxyErr(err):
            return b"PROXY " + enc_proxy_error(err)
        case NameErr(kind, detail):
            return b"NAME " + kind.value.encode() + (b" " + detail.encode() if kind is NameErrorKind.RESOLVER else b"")
        case _:
            assert_never(e)


# ---------------------------------------------------------------- decoding (rest-of-input parsers)


def _word(r: Reader) -> bytes:
    """Bytes up to (not including) the next space or the end (``A.takeTill (== ' ')``)."""
    out = bytearray()
    while (c := r.peek()) is not None and c != 0x20:
        out.append(r.byte())
    return bytes(out)


def dec_transport_error(r: Reader) -> TransportError:
    tag = _word(r)
    if tag == b"HANDSHAKE":
        r.space()
        try:
            return TransportError(TransportErrorKind.HANDSHAKE, HandshakeError(_word(r).decode()))
        except (ValueError, UnicodeDecodeError) as e:
            raise CodecError("bad handshake error") from e
    try:
        kind = TransportErrorKind(tag.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError("bad transport error") from e
    if kind is TransportErrorKind.HANDSHAKE:
        raise CodecError("bad transport error")
    return TransportError(kind)


def dec_broker_error(r: Reader) -> BrokerError:
    tag = _word(r)
    if tag in (b"RESPONSE", b"UNEXPECTED"):
        r.space()
        return BrokerResponse(tag == b"UNEXPECTED", r.short())
    if tag == b"TRANSPORT":
        r.space()
        return BrokerTransport(dec_transport_error(r))
    if tag == b"NETWORK":
        if r.peek() == 0x20:  # newer servers add a network error detail; it is informational only
            r.tail()
        return BrokerSimple.NETWORK
    try:
        return BrokerSimple(tag.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError("bad broker error") from e


def dec_proxy_error(r: Reader) -> ProxyError:
    tag = _word(r)
    if tag == b"PROTOCOL":
        r.space()
        return ProxyProtocol(dec_error(r))
    if tag == b"BROKER":
        r.space()
        return ProxyBroker(dec_broker_error(r))
    try:
        return ProxySimple(tag.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError("bad proxy error") from e


def dec_error(r: Reader) -> ErrorType:
    tag = _word(r)
    name = tag.decode("ascii", "replace")
    if name in SIMPLE_ERRORS:
        return SimpleError(name)
    if tag == b"CMD":
        r.space()
        word = _word(r)
        if word == b"NO_QUEUE":  # old name, accepted as NO_ENTITY
            return CmdError(CommandError.NO_ENTITY)
        try:
            return CmdError(CommandError(word.decode()))
        except (ValueError, UnicodeDecodeError) as e:
            raise CodecError("bad command error") from e
    if tag == b"STORE":
        r.space()
        return StoreErr(r.tail().decode("utf-8", "replace"))
    if tag == b"BLOCKED":
        r.space()
        return _dec_blocked(r.tail())
    if tag == b"PROXY":
        r.space()
        return ProxyErr(dec_proxy_error(r))
    if tag == b"NAME":
        r.space()
        return _dec_name(r)
    raise CodecError("bad error type")


def _dec_name(r: Reader) -> NameErr:
    try:
        kind = NameErrorKind(_word(r).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError("bad name error") from e
    if kind is NameErrorKind.RESOLVER:
        r.space()
        return NameErr(kind, r.tail().decode("utf-8", "replace"))
    return NameErr(kind)


def _dec_blocked(rest: bytes) -> BlockedErr:
    if not rest.startswith(b"reason="):
        raise CodecError("bad blocking info")
    reason, sep, notice = rest[len(b"reason=") :].partition(b",notice=")
    if reason not in (b"spam", b"content"):
        raise CodecError("bad blocking reason")
    return BlockedErr(reason.decode(), notice if sep else None)
