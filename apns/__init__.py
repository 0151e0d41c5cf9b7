"""Standalone HTTP/2 APNs client and strict local APNs simulator (imports nothing from ntf_server).

The simulator lives in `apns.simulator` (not imported here, so the client stays light).
"""

from __future__ import annotations

from apns.client import ApnsClient, App, ClientConfig, ClientStats, SendResult
from apns.errors import ApnsError, Permanent, ProviderAuthError, RetryLater, TokenInvalid
from apns.jwt import ProviderKey, TokenProvider, generate_test_key
from apns.payload import Notification, PushType
from apns.pool import DEVELOPMENT, PRODUCTION, Endpoint

__all__ = [
    "DEVELOPMENT",
    "PRODUCTION",
    "ApnsClient",
    "ApnsError",
    "App",
    "ClientConfig",
    "ClientStats",
    "Endpoint",
    "Notification",
    "Permanent",
    "ProviderAuthError",
    "ProviderKey",
    "PushType",
    "RetryLater",
    "SendResult",
    "TokenInvalid",
    "TokenProvider",
    "generate_test_key",
]
