"""The one place where APNs outcomes become push outcomes (STYLE 5): ``apns.ApnsClient`` behind ``PushSender``.

``TokenInvalid`` → ``Invalid`` with its reason; ``RetryLater`` (429, 500, 503 after one fresh connection,
timeouts, a lost connection) → ``RetryLater``, which push/delivery.py retries with backoff until a
deadline; ``ProviderAuthError`` and ``Permanent`` → ``Failed`` (will not succeed as sent).

Providers map to configured APNs environments: ``AP`` → production, ``AD`` → development, ``AT`` → the
test endpoint (a local simulator). ``AN`` (null provider) is never sent and always "succeeds" (§5.1).
A provider whose environment is not enabled is a counted failure, never a crash (the NTF handlers refuse
new tokens for it, see `pushable`; tokens registered before the environment was disabled still get here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from apns.client import ApnsClient, App, ClientConfig
from apns.errors import ApnsError, RetryLater as ApnsRetryLater, TokenInvalid
from apns.payload import Notification, PushType
from ntf_server.push.outcomes import Delivered, Failed, Invalid, Outcome, RetryLater
from ntf_server.store.records import InvalidReason, PushProvider

log = logging.getLogger(__name__)

APP_NAMES: Final = {
    PushProvider.APNS_PROD: "production",
    PushProvider.APNS_DEV: "development",
    PushProvider.APNS_TEST: "test",
}

_INVALID_REASONS: Final = {
    "BadDeviceToken": InvalidReason.BAD,
    "DeviceTokenNotForTopic": InvalidReason.TOPIC,
    "ExpiredToken": InvalidReason.EXPIRED,
    "Unregistered": InvalidReason.UNREGISTERED,
}

# A lost connection comes back as RetryLater at once instead of the client sleeping (up to max_attempts
# backoffs) on the push worker's task: push/delivery.py schedules the retry, so the worker stays free.
# Streams APNs never processed (GOAWAY, REFUSED_STREAM) are still retried at once by the client.
CLIENT_CONFIG: Final = ClientConfig(max_attempts=1)


class ApnsSender:
    @classmethod
    def for_apps(cls, apps: Mapping[str, App]) -> ApnsSender:
        """A sender with its own client for ``apps`` (none: only `AN` tokens can be pushed to)."""
        return cls(ApnsClient(apps, config=CLIENT_CONFIG) if apps else None, apps)

    def __init__(self, client: ApnsClient | None, apps: Mapping[str, App]) -> None:
        self._client = client
        self._apps = dict(apps)

    @property
    def pushable(self) -> frozenset[PushProvider]:
        """The providers a push can go to: `AN` and those whose APNs environment is enabled."""
        enabled = {p for p, name in APP_NAMES.items() if self._client is not None and name in self._apps}
        return frozenset({PushProvider.APNS_NULL, *enabled})

    async def push(self, provider: PushProvider, device_token: bytes, body: bytes, *, background: bool) -> Outcome:
        if provider is PushProvider.APNS_NULL:
            return Delivered()
        name = APP_NAMES[provider]
        if self._client is None or name not in self._apps:
            return Failed(f"APNs environment {name!r} is not enabled")
        try:
            note = Notification(
                device_token=device_token.decode("ascii", "replace"),
                payload=body,
                push_type=PushType.BACKGROUND if background else PushType.ALERT,
                topic=self._apps[name].topic,
            )
            await self._client.send(note, app=name)
        except TokenInvalid as e:
            reason = _INVALID_REASONS.get(e.reason)
            return Invalid(reason) if reason is not None else Failed(e.reason)
        except ApnsRetryLater as e:  # 429, 500, 503 (after one fresh connection), timeouts, connection lost
            return RetryLater(e.reason, e.after_s)
        except ApnsError as e:  # ProviderAuthError, Permanent: will not succeed as sent
            return Failed(f"{type(e).__name__}: {e.reason}")
        return Delivered()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
