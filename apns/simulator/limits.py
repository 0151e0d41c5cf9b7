"""Apple's documented limits, as the simulator enforces them — written down here on their own.

Nothing in this module comes from the client (`apns.payload`, `apns.jwt`): the simulator exists to catch a
client whose limits are wrong, and it cannot do that if both read the same constant. Each value cites the
Apple page it is quoted from (APNS.md A.2, A.3, A.5):

- `sending-notification-requests-to-apns`: header rules, push types and their topics, payload sizes;
- `establishing-a-token-based-connection-to-apns`: provider token (JWT) fields, age and refresh rate;
- `handling-notification-responses-from-apns`: status codes and reason strings.

Pure data and pure predicates: no I/O, no imports from the rest of `apns`.
"""

from __future__ import annotations

import re
import uuid
from typing import Final, TypeGuard

# -- request line (A.1, A.2) -------------------------------------------------------------------------
METHOD: Final = b"POST"  # "any other method gets 405 MethodNotAllowed"
PATH_PREFIX: Final = b"/3/device/"  # `:path = /3/device/<hex device token>`
# Device tokens are hex bytes; Apple: "don't make assumptions about device token size", so only the
# alphabet and whole bytes are checked, never a length.
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

# -- payload (A.2) -----------------------------------------------------------------------------------
PAYLOAD_MAX_BYTES: Final = 4096  # "Maximum 4 KB (4096 bytes)"
VOIP_PAYLOAD_MAX_BYTES: Final = 5120  # "VoIP maximum 5 KB (5120 bytes)"

# -- headers (A.2) -----------------------------------------------------------------------------------
COLLAPSE_ID_MAX_BYTES: Final = 64  # apns-collapse-id "must not exceed 64 bytes"
PRIORITIES: Final = frozenset({1, 5, 10})  # apns-priority: 10 (default), 5, 1
DEFAULT_PRIORITY: Final = 10
# "background: Always use priority 5. Using priority 10 is an error." (the only per-type priority rule
# Apple states as an error; alert's 10-or-5 is advice)
REQUIRED_PRIORITY: Final[dict[str, int]] = {"background": 5}

# apns-push-type values and the topic each needs: the bundle id, or the bundle id plus a suffix.
# `None`: the bare bundle id (Apple's list on `sending-notification-requests-to-apns`).
PUSH_TYPE_TOPIC_SUFFIX: Final[dict[str, str | None]] = {
    "alert": None,
    "background": None,
    "voip": ".voip",
    "complication": ".complication",
    "controls": ".push-type.controls",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "mdm": None,  # the MDM topic is the certificate's UID, not a bundle id: not checked
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
}
PUSH_TYPES: Final = frozenset(PUSH_TYPE_TOPIC_SUFFIX)

# -- provider token (A.3) ----------------------------------------------------------------------------
JWT_ALG: Final = "ES256"  # "the only algorithm APNs supports"
KEY_ID_LEN: Final = 10  # kid: "the 10-character Key ID"
TEAM_ID_LEN: Final = 10  # iss: "the 10-character Team ID"
# "APNs rejects any request whose token contains a timestamp that's more than one hour old"
TOKEN_MAX_AGE_S: Final = 60 * 60
# iat "no more than one hour from the current time": a token from further in the future is invalid
TOKEN_MAX_FUTURE_S: Final = 60 * 60
# "APNs report an error if you use a new token more than once every 20 minutes on the same connection"
TOKEN_MIN_REFRESH_S: Final = 20 * 60
_ID_RE: Final = re.compile(r"[A-Z0-9]+")

# -- reasons (A.5, Apple's table) --------------------------------------------------------------------
RETRY_REASONS: Final[dict[int, str]] = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


def max_payload_bytes(push_type: str | None) -> int:
    """The body limit for a push type (a request without a type is held to the general limit)."""
    return VOIP_PAYLOAD_MAX_BYTES if push_type == "voip" else PAYLOAD_MAX_BYTES


def is_device_token(raw: bytes) -> bool:
    """Non-empty hex, whole bytes."""
    return bool(raw) and len(raw) % 2 == 0 and set(raw) <= _HEX


def topic_fits_push_type(topic: str, push_type: str) -> bool:
    """Whether `topic` carries the suffix `push_type` needs (Apple names one for voip, complication, ...)."""
    suffix = PUSH_TYPE_TOPIC_SUFFIX[push_type]
    return suffix is None or (topic.endswith(suffix) and len(topic) > len(suffix))


def bare_topic(topic: str) -> str:
    """The bundle id without a push-type suffix (".voip", ".push-type.widgets", ...)."""
    for suffix in sorted((s for s in PUSH_TYPE_TOPIC_SUFFIX.values() if s), key=len, reverse=True):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    if ".push-type." in topic:
        return topic.split(".push-type.", maxsplit=1)[0]
    return topic


def is_apns_id(value: str) -> bool:
    """apns-id: "a canonical UUID ... 32 lowercase hexadecimal digits, displayed in five groups separated by
    hyphens in the form 8-4-4-4-12"."""
    try:
        return len(value) == 36 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_key_or_team_id(value: object, length: int) -> TypeGuard[str]:
    """A Key ID or Team ID: `length` upper-case letters and digits (as Apple issues them)."""
    return isinstance(value, str) and len(value) == length and _ID_RE.fullmatch(value) is not None
