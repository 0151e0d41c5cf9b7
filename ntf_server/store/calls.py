"""The edge for store modules that call Redis outside ``RedisStore`` (census, activity): redis-py errors
become ``StoreError`` (health.translated), and a cancel that Python 3.11's ``asyncio.wait_for`` inside
redis-py swallowed is raised again (see health._raise_if_cancelling: a server part that loses its cancel
never stops, and shutdown waits for it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from ntf_server.store.health import translated


@contextmanager
def redis_call() -> Iterator[None]:
    with translated():
        yield
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
