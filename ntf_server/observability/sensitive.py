"""Redaction by type: device tokens, ids and keys as values that can only ever print a short keyed hash.

A log call that names a token or an id passes one of these (``TokenId(tok.token_id)``), never the bytes:
the object keeps only its tag (``tkn:3f9a1c``), computed at construction, so nothing it is handed to — a
formatter, ``repr``, an f-string, ``vars``, ``pickle``, a traceback's locals — can show the raw value.

The tag is an HMAC-BLAKE2b of the value under a key drawn at random once per process: equal values give
equal tags within a run (an operator can follow one token through the log lines), but a tag cannot be
checked against a guessed device token or id (no dictionary attack), and tags of two runs do not match.
Six hex digits (24 bits) are enough to tell apart the few tokens a log excerpt is about; they are far too
few to identify a value among millions, which is the point.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import ClassVar, Final

TAG_HEX_DIGITS: Final = 6
_KEY: Final = os.urandom(32)  # per process; never written anywhere


def keyed_tag(kind: str, value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    mac = hmac.new(_KEY, kind.encode() + b"\0" + raw, hashlib.blake2b).hexdigest()
    return f"{kind}:{mac[:TAG_HEX_DIGITS]}"


class Sensitive:
    """A secret or identifying value, reduced to ``<kind>:<keyed hash>`` (subclasses set ``KIND``)."""

    KIND: ClassVar[str] = "secret"
    __slots__ = ("tag",)

    def __init__(self, value: bytes | str) -> None:
        if not isinstance(value, bytes | bytearray | memoryview | str):
            raise TypeError(f"{type(self).__name__} wraps bytes or str, not {type(value).__name__}")
        self.tag: Final[str] = keyed_tag(self.KIND, bytes(value) if not isinstance(value, str) else value)

    def __repr__(self) -> str:
        return self.tag

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(self.tag, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other.tag == self.tag

    def __hash__(self) -> int:
        return hash(self.tag)

    def __copy__(self) -> Sensitive:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> Sensitive:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Sensitive value is not serialised")  # the tag is per process: meaningless elsewhere


class DeviceToken(Sensitive):
    """An APNs (or other provider's) device token."""

    KIND = "dev"


class TokenId(Sensitive):
    """A token id the server gave a device (IDTKN)."""

    KIND = "tkn"


class SubId(Sensitive):
    """A subscription id the server gave a device (IDSUB)."""

    KIND = "sub"


class NotifierId(Sensitive):
    """An SMP queue's notifier id (which queues belong together is what the server must not reveal)."""

    KIND = "nid"


class SecretKey(Sensitive):
    """Any private key, shared secret, registration code or bearer token."""

    KIND = "key"
