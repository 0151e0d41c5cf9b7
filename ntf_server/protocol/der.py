"""A minimal DER reader and writer for the few ASN.1 shapes SimpleX puts on the wire (§1.7, §2.2).

Untrusted input: single-byte tags, definite minimal lengths of at most two bytes, bounds checked before
any slice; anything else is a ``CodecError``. Used for PKCS#8 keys and SignedExact objects.
"""

from __future__ import annotations

from typing import Final

from ntf_server.protocol.encoding import CodecError

SEQUENCE: Final = 0x30
INTEGER: Final = 0x02
BIT_STRING: Final = 0x03
OCTET_STRING: Final = 0x04
OID: Final = 0x06
CTX_0_CONSTRUCTED: Final = 0xA0  # PKCS#8 [0] attributes
CTX_1_PRIMITIVE: Final = 0x81  # PKCS#8 [1] IMPLICIT BIT STRING public key


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes((tag, n)) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + value


class DerReader:
    """Walks single-byte-tag DER with definite, minimal lengths; anything else is a ``CodecError``."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, data: bytes) -> None:
        self._buf = bytes(data)
        self._pos = 0

    def peek_tag(self) -> int | None:
        return self._buf[self._pos] if self._pos < len(self._buf) else None

    def _header(self, tag: int) -> tuple[int, int]:
        """Check the tag at the cursor; return (start of value, end of value)."""
        buf, pos = self._buf, self._pos
        if pos + 2 > len(buf) or buf[pos] != tag:
            raise CodecError(f"DER: expected tag {tag:#04x}")
        first = buf[pos + 1]
        start = pos + 2
        if first < 0x80:
            n = first
        else:
            size = first & 0x7F
            if size == 0 or size > 2 or start + size > len(buf):  # indefinite or absurd lengths
                raise CodecError("DER: unsupported length")
            n = int.from_bytes(buf[start : start + size], "big")
            if n < 0x80 or n.bit_length() <= 8 * (size - 1):
                raise CodecError("DER: non-minimal length")
            start += size
        if start + n > len(buf):
            raise CodecError("DER: element longer than its input")
        return start, start + n

    def expect(self, tag: int) -> bytes:
        """The value bytes of the next element, which must have ``tag``."""
        start, end = self._header(tag)
        self._pos = end
        return self._buf[start:end]

    def element(self, tag: int) -> bytes:
        """The whole next element (tag, length and value) as received."""
        begin = self._pos
        _, end = self._header(tag)
        self._pos = end
        return self._buf[begin:end]

    def end(self) -> None:
        if self._pos != len(self._buf):
            raise CodecError("DER: trailing bytes")
