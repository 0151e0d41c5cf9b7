"""HPACK for APNs requests without h2's per-request cost.

h2 runs every outbound header list through normalisation, validation and a pure-Python HPACK encoder that
sends `authorization` never-indexed, so the ~200-byte JWT is Huffman-coded and re-sent on every push
(~40 us each). Apple's current guidance: the authorization value "shouldn't change frequently and can be
indexed"; per-push values (`:path` with the token, `apns-id`) go literal *without indexing* so they never
evict the constant headers from APNs' small dynamic table.

So a request's header block is built from four parts, in the order HTTP/2 requires (pseudo-headers first):

    constant pseudo-headers  (:method :scheme :authority)         -> real hpack encoder, then cached
    :path                    literal without indexing, static name 4, raw (no Huffman)
    constant headers         (authorization, apns-topic, push type, priority) -> encoder, then cached
    per-push headers         (apns-id, apns-expiration, apns-collapse-id) literal without indexing

A constant part is cached only once its encoding is all one-byte "indexed" fields: such an encoding adds
nothing to the dynamic table, so replaying the bytes is exactly what the encoder would emit while the table
stays as it is. Any encoder call that might change the table, or a peer HEADER_TABLE_SIZE change (which must
be signalled in the next block), clears the cache.

`BlockEncoder` stands in for h2's `Encoder` (`conn.encoder`): h2 calls `encode()` while building the
HEADERS frame, and we hand it the block prepared by `prepare()` just before `send_headers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import hpack

Header = tuple[bytes, bytes]

_PATH_STATIC_INDEX: Final = 4  # ":path: /" in the HPACK static table


def encode_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """HPACK integer (RFC 7541 5.1) with `flags` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_string(data: bytes) -> bytes:
    """String literal, no Huffman (H bit 0)."""
    n = len(data)
    return (bytes((n,)) if n < 127 else encode_int(n, 7, 0)) + data


def path_field(path: bytes) -> bytes:
    """`:path` as a literal without indexing, indexed name (RFC 7541 6.2.2)."""
    return bytes((_PATH_STATIC_INDEX,)) + literal_string(path)


def status_field(status: int) -> bytes:
    """`:status` as a literal without indexing, indexed name (static entry 8 is ":status: 200")."""
    return b"\x08" + literal_string(str(status).encode())


def unindexed_field(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing with a literal name."""
    return b"\x00" + literal_string(name) + literal_string(value)


class BlockEncoder:
    """Replacement for `h2.connection.H2Connection.encoder` (see module docstring)."""

    def __init__(self) -> None:
        self._inner = hpack.Encoder()
        self._cache: dict[tuple[Header, ...], bytes] = {}
        self._next: bytes | None = None

    # h2 sets this when the peer changes SETTINGS_HEADER_TABLE_SIZE.
    @property
    def header_table_size(self) -> int:
        return int(self._inner.header_table_size)

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._inner.header_table_size = value
        self._cache.clear()  # the next block must carry the size update, so go through the encoder

    def constant(self, headers: tuple[Header, ...]) -> bytes:
        """Encoding of headers that repeat on every request (indexed after their first use)."""
        block = self._cache.get(headers)
        if block is not None:
            return block
        block = self._inner.encode(headers, huffman=True)
        if all(b & 0x80 for b in block):
            self._cache[headers] = block
        else:
            self._cache.clear()  # the table may have changed: every cached block may now be stale
        return block

    def prepare(self, block: bytes) -> None:
        self._next = block

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        block = self._next
        if block is None:
            raise RuntimeError("BlockEncoder.encode called without a prepared block")
        self._next = None
        return block


def request_block(
    enc: BlockEncoder,
    pseudo: tuple[Header, ...],
    path: bytes,
    constant: tuple[Header, ...],
    per_push: Sequence[Header],
) -> bytes:
    """The whole header block of one request."""
    parts = [enc.constant(pseudo), path_field(path), enc.constant(constant)]
    parts.extend(unindexed_field(n, v) for n, v in per_push)
    return b"".join(parts)
