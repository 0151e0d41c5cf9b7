"""A unix-socket proxy in front of Redis that cuts connections at a chosen byte, to test atomicity.

`up_budget` = bytes client→server still forwarded before the cut (a cut inside a command means Redis
never runs it; a cut right after it means Redis runs it and the reply is lost); `down_budget` likewise for
replies (the command runs, the client never hears back).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from helpers.valkey_cluster import CLUSTER


class FaultProxy:
    def __init__(self, upstream: str, path: Path) -> None:
        if CLUSTER:  # a proxy in front of one Redis socket; the cluster's own failure: tests/store/test_cluster.py
            pytest.skip("a fault proxy stands in front of one Redis, not a cluster (NTF_TEST_REDIS_CLUSTER=1)")
        self.upstream = upstream
        self.path = path
        self.up_budget: int | None = None
        self.down_budget: int | None = None
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> None:
        self._stopped = False
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))

    async def stop(self) -> None:
        # Stop accepting first, then cut: a client reconnecting in between (a health probe does, at once)
        # must not get a connection that outlives stop(); one accepted but not yet linked cuts itself.
        self._stopped = True
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_unix_connection(self.upstream)
        if self._stopped:
            for x in (cw, uw):
                x.transport.abort()
            return
        self._writers |= {cw, uw}

        def cut() -> None:
            self.cuts += 1
            for w in (cw, uw):
                w.transport.abort()

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await r.read(65536):
                    budget = self.up_budget if up else self.down_budget
                    if budget is not None and len(data) >= budget:
                        w.write(data[:budget])
                        await w.drain()
                        if up:
                            self.up_budget = None
                        else:
                            self.down_budget = None
                        await asyncio.sleep(0.01)  # let the bytes leave before the abort
                        cut()
                        return
                    if budget is not None:
                        if up:
                            self.up_budget = budget - len(data)
                        else:
                            self.down_budget = budget - len(data)
                    w.write(data)
                    await w.drain()
            for x in (cw, uw):
                x.transport.abort()

        try:
            await asyncio.gather(pump(cr, uw, True), pump(ur, cw, False))
        finally:
            self._writers -= {cw, uw}
