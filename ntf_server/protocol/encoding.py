"""Primitive SimpleX binary encodings (§2.1) and padding (§1.4).

Theory of operation: encoders are plain functions returning ``bytes``; decoders work on a ``Reader`` that
walks a ``bytes``/``memoryview`` without copying more than the field it returns. Every decoding failure is a
``CodecError`` (never ``IndexError``/``struct.error``), so callers handling untrusted input catch one type.
Nothing allocates more than the input it was given: lengths are read from the input and checked against
the bytes actually remaining before anything is sliced.

Why one module of about 330 lines: every primitive of §2.1 with its reader; split, each would be a module of one
function.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")

MAX_SHORT: Final = 255
MAX_LARGE: Final = 65535
PAD_BYTE: Final = b"#"
DEFAULT_SMP_PORT: Final = "5223"


class CodecError(ValueError):
    """Malformed or unacceptable bytes; the only exception a decoder raises on untrusted input."""


# ---------------------------------------------------------------- encoders


def enc_word16(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise CodecError(f"Word16 out of range: {n}")
    return struct.pack(">H", n)


def enc_word32(n: int) -> bytes:
    if not 0 <= n <= 0xFFFFFFFF:
        raise CodecError(f"Word32 out of range: {n}")
    return struct.pack(">I", n)


def enc_int64(n: int) -> bytes:
    if not -(2**63) <= n < 2**63:
        raise CodecError(f"Int64 out of range: {n}")
    return struct.pack(">q", n)


def enc_bool(b: bool) -> bytes:
    return b"T" if b else b"F"


def enc_short(b: bytes) -> bytes:
    if len(b) > MAX_SHORT:
        raise CodecError(f"short string too long: {len(b)} > {MAX_SHORT}")
    return bytes((len(b),)) + b


def enc_large(b: bytes) -> bytes:
    if len(b) > MAX_LARGE:
        raise CodecError(f"large string too long: {len(b)} > {MAX_LARGE}")
    return struct.pack(">H", len(b)) + b


def enc_maybe(value: T | None, enc: Callable[[T], bytes]) -> bytes:
    return b"0" if value is None else b"1" + enc(value)


def enc_list(items: Sequence[T], enc: Callable[[T], bytes]) -> bytes:
    if len(items) > 255:
        raise CodecError(f"list too long: {len(items)} > 255")
    return bytes((len(items),)) + b"".join(enc(i) for i in items)


def enc_nonempty(items: Sequence[T], enc: Callable[[T], bytes]) -> bytes:
    if not items:
        raise CodecError("NonEmpty list is empty")
    return enc_list(items, enc)


def enc_text(s: str) -> bytes:
    return enc_short(s.encode())


# ---------------------------------------------------------------- decoder


class Reader:
    """Cursor over untrusted bytes. Every method raises ``CodecError`` on short or bad input."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self._buf = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def at_end(self) -> bool:
        return self._pos == len(self._buf)

    def end(self) -> None:
        """Require that the whole input was consumed."""
        if self._pos != len(self._buf):
            raise CodecError(f"{len(self._buf) - self._pos} trailing bytes")

    # take, byte and short inline what they share: they run several times per received transmission.
    def take(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if n < 0 or end > len(self._buf):
            raise CodecError(f"need {n} bytes, have {self.remaining}")
        self._pos = end
        return bytes(self._buf[pos:end])

    def peek(self) -> int | None:
        return self._buf[self._pos] if self._pos < len(self._buf) else None

    def byte(self) -> int:
        pos = self._pos
        if pos >= len(self._buf):
            raise CodecError(f"need 1 bytes, have {self.remaining}")
        self._pos = pos + 1
        return self._buf[pos]

    def char(self, expected: bytes) -> None:
        got = self.take(len(expected))
        if got != expected:
            raise CodecError(f"expected {expected!r}, got {got!r}")

    def space(self) -> None:
        self.char(b" ")

    def word16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def word32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def bool(self) -> bool:
        c = self.take(1)
        if c == b"T":
            return True
        if c == b"F":
            return False
        raise CodecError(f"bad Bool {c!r}")

    def short(self) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            raise CodecError(f"need 1 bytes, have {self.remaining}")
        end = pos + 1 + buf[pos]
        if end > len(buf):
            raise CodecError(f"need {buf[pos]} bytes, have {len(buf) - pos - 1}")
        self._pos = end
        return bytes(buf[pos + 1:end])

    def large(self) -> bytes:
        return self.take(self.word16())

    def tail(self) -> bytes:
        return self.take(self.remaining)

    def maybe(self, dec: Callable[[Reader], T]) -> T | None:
        tag = self.take(1)
        if tag == b"0":
            return None
        if tag == b"1":
            return dec(self)
        raise CodecError(f"bad Maybe tag {tag!r}")

    def items(self, dec: Callable[[Reader], T]) -> list[T]:
        """``u8(count) ‖ enc(a1) ‖ …`` (smpEncodeList)."""
        return [dec(self) for _ in range(self.byte())]

    def nonempty(self, dec: Callable[[Reader], T]) -> list[T]:
        items = self.items(dec)
        if not items:
            raise CodecError("empty NonEmpty list")
        return items

    def text(self) -> str:
        try:
            return self.short().decode()
        except UnicodeDecodeError as e:
            raise CodecError("invalid UTF-8 text") from e


def decode_all(data: bytes, dec: Callable[[Reader], T]) -> T:
    """Decode ``data`` with ``dec`` and require that nothing is left over."""
    r = Reader(data)
    value = dec(r)
    r.end()
    return value


# ---------------------------------------------------------------- padding (§1.4, C.pad / C.unPad)


def pad(msg: bytes, padded_len: int) -> bytes:
    """``u16be(len) ‖ msg ‖ '#'*``; fails when the message does not fit (T4, T6)."""
    n = len(msg)
    if n > padded_len - 2 or n > 65533:
        raise CodecError(f"message of {n} bytes does not fit a padded length of {padded_len}")
    return struct.pack(">H", n) + msg + PAD_BYTE * (padded_len - n - 2)


def unpad(padded: bytes | memoryview) -> bytes:
    """Inverse of :func:`pad`; trailing padding content is not checked (as in Haskell)."""
    if len(padded) < 2:
        raise CodecError("padded block shorter than its length prefix")
    n = (padded[0] << 8) | padded[1]
    if len(padded) - 2 < n:
        raise CodecError(f"padded length {n} exceeds block of {len(padded)}")
    return bytes(padded[2 : 2 + n])


# ---------------------------------------------------------------- base64url with padding


_B64U_RE: Final = re.compile(rb"[A-Za-z0-9_-]*={0,2}")


def b64u_encode(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode("ascii")


def b64u_decode(s: str | bytes) -> bytes:
    """Decode base64url; padding is optional on input (Haskell's parser accepts both)."""
    raw = s.encode("ascii", "replace") if isinstance(s, str) else s
    if not _B64U_RE.fullmatch(raw):
        raise CodecError("invalid base64url")
    stripped = raw.rstrip(b"=")
    if len(stripped) % 4 == 1:
        raise CodecError("invalid base64url length")
    try:
        return base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except binascii.Error as e:
        raise CodecError("invalid base64url") from e


# ---------------------------------------------------------------- transport hosts and SMP servers

_ONION_RE: Final = re.compile(r"[a-z2-7]{56}\.onion|[a-z2-7]{16}\.onion")
_IPV4_RE: Final = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_DOMAIN_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_IPV6_RE: Final = re.compile(r"[0-9A-Fa-f:.]+")


def check_host(host: str) -> str:
    """Validate a TransportHost text form (T7): IPv4, IPv6 (with a colon), onion or domain."""
    if _IPV4_RE.fullmatch(host) or _ONION_RE.fullmatch(host):
        return host
    if ":" in host and _IPV6_RE.fullmatch(host):
        return host
    if host and _DOMAIN_RE.fullmatch(host) and not _looks_like_bad_ipv4(host):
        return host
    raise CodecError(f"invalid transport host {host!r}")


def _looks_like_bad_ipv4(host: str) -> bool:
    # "192.168.0.0.1" has 5 numeric labels: not a domain (T7 rejects it); "192.168.1" is a domain name.
    parts = host.split(".")
    return len(parts) > 4 and all(p.isdigit() for p in parts)


# Hosts that Haskell clients expand to [host, onion] when parsed alone (`updateSMPServerHosts`).
EXTRA_SMP_SERVER_HOSTS: Final[dict[str, str]] = {
    "smp4.simplex.im": "o5vmywmrnaxalvz6wi3zicyftgio6psuvyniis6gco6bp6ekl4cqj4id.onion",
    "smp5.simplex.im": "jjbyvoemxysm7qxap7m5d5m35jzv5qq6gnlv7s4rsn7tdwwmuqciwpid.onion",
    "smp6.simplex.im": "bylepyau3ty4czmn77q4fglvperknl4bi2eb2fdy2bh4jxtf32kf73yd.onion",
    "smp8.simplex.im": "beccx4yfxxbvyhqypaavemqurytl6hozr47wfc7uuecacjqdvwpw2xid.onion",
    "smp9.simplex.im": "jssqzccmrcws6bhmn77vgmhfjmhwlyr3u7puw4erkyoosywgl67slqqd.onion",
    "smp10.simplex.im": "rb2pbttocvnbrngnwziclp2f4ckjq65kebafws6g4hy22cdaiv5dwjqd.onion",
}


@dataclass(frozen=True, slots=True)
class SMPServer:
    """A messaging server address: hosts, port (decimal text, may be empty) and CA key hash."""

    hosts: tuple[str, ...]
    port: str
    key_hash: bytes

    def __post_init__(self) -> None:
        if not self.hosts:
            raise CodecError("SMP server without hosts")
        for h in self.hosts:
            check_host(h)
        if self.port and not (self.port.isdigit() and len(self.port) <= 5):
            raise CodecError(f"invalid port {self.port!r}")
        if len(self.key_hash) != 32:
            raise CodecError("SMP server key hash must be 32 bytes")

    @property
    def effective_port(self) -> int:
        return int(self.port or DEFAULT_SMP_PORT)

    def normalized(self) -> SMPServer:
        """Expand a single preset host to ``[host, onion]`` as Haskell does on parsing (§4.1)."""
        if len(self.hosts) == 1 and self.hosts[0] in EXTRA_SMP_SERVER_HOSTS:
            host = self.hosts[0]
            return SMPServer((host, EXTRA_SMP_SERVER_HOSTS[host]), self.port, self.key_hash)
        return self

    def to_uri(self) -> str:
        """``smp://<b64u keyhash>@h1,h2[:port]`` (str encoding used in push payloads, §5.7)."""
        port = f":{self.port}" if self.port else ""
        return f"smp://{b64u_encode(self.key_hash)}@{','.join(self.hosts)}{port}"

    @classmethod
    def from_uri(cls, uri: str) -> SMPServer:
        m = re.fullmatch(r"smp://([A-Za-z0-9_=-]+)@([^:/]+(?:,[^:/,]+)*)(?::(\d{1,5}))?/?", uri)
        if not m:
            raise CodecError("invalid SMP server address")
        return cls(tuple(m.group(2).split(",")), m.group(3) or "", b64u_decode(m.group(1))).normalized()

    def __repr__(self) -> str:
        return f"SMPServer({self.to_uri()!r})"


def enc_smp_server(s: SMPServer) -> bytes:
    """``u8(nHosts) ‖ short(host)… ‖ short(port) ‖ short(keyHash)`` (§2.1)."""
    return enc_nonempty(s.hosts, enc_text) + enc_text(s.port) + enc_short(s.key_hash)


def dec_smp_server(r: Reader) -> SMPServer:
    hosts: tuple[str, ...] = tuple(r.nonempty(Reader.text))
    port = r.text()
    key_hash = r.short()
    return SMPServer(hosts, port, key_hash).normalized()
