"""A typed APNs notification, validated against Apple's rules before anything is sent.

Rules (APNS.md A.2): `background` pushes must use priority 5 ("Using priority 10 is an error");
priority is 1, 5 or 10; the collapse id is at most 64 bytes; the JSON body is at most 4096 bytes (5120 for
VoIP) and not empty; the device token is hex (Apple: "don't make assumptions about device token size", so
only the alphabet and even length are checked). A violation raises `Permanent` with a clear message at
construction time, so a bad push never reaches the network.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from apns.errors import Permanent

MAX_PAYLOAD_BYTES: Final = 4096
MAX_VOIP_PAYLOAD_BYTES: Final = 5120
MAX_COLLAPSE_ID_BYTES: Final = 64
VALID_PRIORITIES: Final = frozenset({1, 5, 10})
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]+")
_REDACT_KEY: Final = os.urandom(16)  # per process: hints correlate log lines, not processes


class PushType(enum.Enum):
    """`apns-push-type` values (Apple's list)."""

    ALERT = "alert"
    BACKGROUND = "background"
    VOIP = "voip"
    COMPLICATION = "complication"
    CONTROLS = "controls"
    FILEPROVIDER = "fileprovider"
    LIVEACTIVITY = "liveactivity"
    LOCATION = "location"
    MDM = "mdm"
    PUSHTOTALK = "pushtotalk"
    WIDGETS = "widgets"


def token_hint(device_token: str) -> str:
    """A short keyed hash of a device token, safe for logs and reprs."""
    return hashlib.blake2s(device_token.encode(), key=_REDACT_KEY, digest_size=4).hexdigest()


def max_payload_bytes(push_type: PushType) -> int:
    return MAX_VOIP_PAYLOAD_BYTES if push_type is PushType.VOIP else MAX_PAYLOAD_BYTES


_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as small as possible (the 4 KB limit counts bytes)."""
    return _JSON.encode(body).encode()


@dataclass(frozen=True)
class Notification:
    """One push. `payload` is a JSON object (encoded compactly) or already-encoded JSON bytes.

    `topic` None means "the app's default topic"; `priority` None means Apple's default (10), except for
    background pushes where it becomes 5. `expiration` is UNIX seconds (0 = deliver now or never).
    """

    device_token: str = field(repr=False)
    payload: Mapping[str, Any] | bytes = field(repr=False)
    push_type: PushType = PushType.ALERT
    priority: int | None = None
    topic: str | None = None
    expiration: int | None = None
    collapse_id: str | None = None
    apns_id: str | None = None
    body: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = self.payload if isinstance(self.payload, bytes) else encode_json(self.payload)
        object.__setattr__(self, "body", body)
        if self.priority is None and self.push_type is PushType.BACKGROUND:
            object.__setattr__(self, "priority", 5)
        self._validate()

    def _validate(self) -> None:
        tok = self.device_token
        if len(tok) % 2 or not _HEX_RE.fullmatch(tok):
            raise Permanent("device token must be a non-empty even-length hex string")
        if self.priority is not None and self.priority not in VALID_PRIORITIES:
            raise Permanent(f"priority must be 1, 5 or 10, not {self.priority}")
        if self.push_type is PushType.BACKGROUND and self.priority != 5:
            raise Permanent("background pushes must use priority 5 (Apple: priority 10 is an error)")
        limit = max_payload_bytes(self.push_type)
        if not self.body:
            raise Permanent("payload is empty (APNs answers 400 PayloadEmpty)")
        if len(self.body) > limit:
            raise Permanent(
                f"payload is {len(self.body)} bytes, over the {limit}-byte limit for "
                f"{self.push_type.value} pushes (APNs answers 413 PayloadTooLarge)"
            )
        if self.collapse_id is not None and len(self.collapse_id.encode()) > MAX_COLLAPSE_ID_BYTES:
            raise Permanent(f"collapse id is over {MAX_COLLAPSE_ID_BYTES} bytes")
        if self.expiration is not None and self.expiration < 0:
            raise Permanent("expiration must be UNIX seconds >= 0")
        if self.apns_id is not None:
            _check_apns_id(self.apns_id)
        if self.topic is not None and not self.topic:
            raise Permanent("topic must not be empty")

    @property
    def token_hint(self) -> str:
        return token_hint(self.device_token)

    def __repr__(self) -> str:
        return (
            f"Notification(token~{self.token_hint}, {self.push_type.value}, priority={self.priority}, "
            f"topic={self.topic!r}, {len(self.body)} bytes)"
        )


def _check_apns_id(value: str) -> None:
    try:
        ok = str(uuid.UUID(value)) == value.lower()
    except ValueError:
        ok = False
    if not ok:
        raise Permanent("apns_id must be a canonical UUID (8-4-4-4-12)")
