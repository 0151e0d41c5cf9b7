"""Helpers shared by the APNs tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from apns.client import ApnsClient
from apns.payload import Notification, PushType

TOPIC = "chat.simplex.app"
ClientFactory = Callable[..., ApnsClient]  # the make_client fixture (conftest.py)


def new_token() -> str:
    return os.urandom(32).hex()


def background(token: str, **kw: Any) -> Notification:
    return Notification(
        token, {"aps": {"content-available": 1}, "notificationData": {"checkMessages": True}}, PushType.BACKGROUND, **kw
    )


async def no_sleep(_: float) -> None:
    return None
