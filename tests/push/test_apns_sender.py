"""APNs answers → push outcomes (push/apns_sender.py), over real sockets."""

from __future__ import annotations

import socket

from apns.client import ApnsClient, App
from apns.jwt import generate_test_key
from apns.pool import Endpoint
from ntf_server.push.apns_sender import CLIENT_CONFIG, ApnsSender
from ntf_server.push.outcomes import RetryLater
from ntf_server.store.records import PushProvider


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_apns_is_retry_later_at_once_not_after_the_clients_own_backoff() -> None:
    """The push worker must not sleep through the client's backoffs: push/delivery.py schedules the retry."""
    apps = {"test": App(Endpoint("127.0.0.1", closed_port(), tls=False), generate_test_key("K1", "T1"), "t.app")}
    client = ApnsClient(apps, config=CLIENT_CONFIG)
    sender = ApnsSender(client, apps)
    try:
        outcome = await sender.push(PushProvider.APNS_TEST, b"ab" * 32, b"{}", background=True)
        assert isinstance(outcome, RetryLater) and outcome.reason.startswith("ConnectionLost")
        assert client.stats().retries == 0 and client.stats().connect_failures == 1
    finally:
        await sender.aclose()
