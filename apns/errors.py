"""Outcomes of a push, grouped by what the caller does next (STYLE 5).

Every APNs reply that is not 200 becomes one of four exceptions:

* `TokenInvalid`     -- stop sending to this device token (400 BadDeviceToken / DeviceTokenNotForTopic,
                        410 Unregistered / ExpiredToken; 410 carries Apple's timestamp in ms).
* `RetryLater`       -- try again after `after_s` (429, 500, 503, connection loss, timeouts). Apple: "After
                        15 minutes, you can retry ... 5XX. While retrying, you may employ a back-off".
* `ProviderAuthError`-- our provider token was refused (403 ExpiredProviderToken / InvalidProviderToken /
                        MissingProviderToken / key-id errors); the client refreshes the JWT once and retries
                        before raising it, so when the caller sees it the credentials are wrong.
* `Permanent`        -- the request itself is wrong (bad topic, payload too large, ...): fix the code,
                        do not retry.

The mapping is a table (`_REASONS`), so adding a reason string Apple invents later is a one-line change;
unknown reasons fall back on the status class.
"""

from __future__ import annotations

import json
from typing import Final


class ApnsError(Exception):
    """Base of every outcome raised by `ApnsClient.send`."""

    def __init__(self, reason: str, status: int | None = None, apns_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.apns_id = apns_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, status={self.status!r})"


class TokenInvalid(ApnsError):
    """The device token is dead for this topic: remove it. `timestamp_ms` is Apple's 410 timestamp."""

    def __init__(
        self,
        reason: str,
        timestamp_ms: int | None = None,
        status: int | None = None,
        apns_id: str | None = None,
    ) -> None:
        super().__init__(reason, status, apns_id)
        self.timestamp_ms = timestamp_ms


class RetryLater(ApnsError):
    """Transient: the push may be retried after `after_s` seconds (backoff with jitter already applied)."""

    def __init__(self, reason: str, after_s: float, status: int | None = None, apns_id: str | None = None) -> None:
        super().__init__(reason, status, apns_id)
        self.after_s = after_s


class ProviderAuthError(ApnsError):
    """APNs rejected the provider token even after one refresh: the key, key id or team id is wrong."""


class Permanent(ApnsError):
    """The request is wrong and will never succeed as sent (also raised locally by payload validation)."""


class ConnectionLost(Exception):
    """Internal: the HTTP/2 connection ended before the reply. `processed` is False when the server said
    (GOAWAY last-stream-id, REFUSED_STREAM) that it never looked at the stream, so a retry cannot duplicate."""

    def __init__(self, reason: str, processed: bool | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.processed = processed


class NotSent(ConnectionLost):
    """Internal: the connection was already closing when the request reached it; nothing left this host."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, processed=False)


class ConnectFailed(ConnectionLost):
    """Internal: no connection could be opened (DNS, TCP, TLS, ALPN); the push was not sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, processed=False)


class Kind:
    """Outcome kinds used in the reason table (plain strings keep the table readable)."""

    TOKEN: Final = "token"  # noqa: S105 (an outcome kind, not a secret)
    RETRY: Final = "retry"
    AUTH: Final = "auth"
    REFRESH: Final = "refresh"  # auth error that a fresh JWT may cure
    PERMANENT: Final = "permanent"


# Apple's reason strings (APNS.md A.5) -> what the caller does.
_REASONS: Final[dict[str, str]] = {
    "BadDeviceToken": Kind.TOKEN,
    "DeviceTokenNotForTopic": Kind.TOKEN,
    "Unregistered": Kind.TOKEN,
    "ExpiredToken": Kind.TOKEN,
    "ExpiredProviderToken": Kind.REFRESH,
    "InvalidProviderToken": Kind.REFRESH,
    "MissingProviderToken": Kind.AUTH,
    "UnrelatedKeyIdInToken": Kind.AUTH,
    "BadEnvironmentKeyIdInToken": Kind.AUTH,
    "BadCertificate": Kind.AUTH,
    "BadCertificateEnvironment": Kind.AUTH,
    "TooManyProviderTokenUpdates": Kind.RETRY,
    "TooManyRequests": Kind.RETRY,
    "InternalServerError": Kind.RETRY,
    "ServiceUnavailable": Kind.RETRY,
    "Shutdown": Kind.RETRY,
    "IdleTimeout": Kind.RETRY,
}


def classify(status: int, reason: str) -> str:
    """The `Kind` of an APNs error reply."""
    kind = _REASONS.get(reason)
    if kind is not None:
        return kind
    if status == 410:
        return Kind.TOKEN
    if status in (429, 500, 502, 503, 504):
        return Kind.RETRY
    if status == 403:
        return Kind.AUTH
    return Kind.PERMANENT


def parse_error_body(body: bytes) -> tuple[str, int | None]:
    """(reason, timestamp_ms) from an APNs error body; tolerant of junk (a proxy's HTML page, say)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return ("UnparsableErrorBody", None)
    if not isinstance(obj, dict):
        return ("UnparsableErrorBody", None)
    reason = obj.get("reason")
    stamp = obj.get("timestamp")
    return (
        reason if isinstance(reason, str) else "MissingReason",
        stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None,
    )
