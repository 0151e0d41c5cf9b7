"""Notices accepted from the SMP links and not yet stored, per SMP server, taken in fair shares.

Each SMP server has a queue of at most ``per_server`` notices: its link waits (``put``) while its queue is
full and then reads nothing more from its SMP server, which keeps what it has not delivered. The batcher
``take``s a fair share from each server with notices waiting, in turn, so one server's flood fills only its
own queue and never delays another server's notices or holds another's reader.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.records import Notice


class FairIntake:
    """Accepted notices per SMP server, taken in fair shares (module docstring)."""

    def __repr__(self) -> str:
        return f"<FairIntake {self.size} notices from {len(self._order)} servers>"

    def __init__(self, per_server: int) -> None:
        self._limit = per_server
        self._queues: dict[SMPServer, deque[Notice]] = {}
        self._order: deque[SMPServer] = deque()  # servers with notices waiting, in turn
        self._room: dict[SMPServer, asyncio.Event] = {}
        self.ready = asyncio.Event()
        self.size = 0

    async def put(self, server: SMPServer, notices: Sequence[Notice]) -> None:
        q = self._queues.get(server)
        if q is None:
            q = self._queues[server] = deque()
        while len(q) >= self._limit:
            room = self._room.setdefault(server, asyncio.Event())
            room.clear()
            await room.wait()
        if not q:
            self._order.append(server)
        q.extend(notices)
        self.size += len(notices)
        self.ready.set()

    def take(self, most: int) -> list[Notice]:
        out: list[Notice] = []
        while self._order and len(out) < most:
            share = max(1, (most - len(out)) // len(self._order))
            server = self._order.popleft()
            q = self._queues[server]
            for _ in range(min(share, len(q))):
                out.append(q.popleft())
            if q:
                self._order.append(server)
            if (room := self._room.get(server)) is not None and len(q) < self._limit:
                room.set()
        self.size -= len(out)
        if not self._order:
            self.ready.clear()
        return out
