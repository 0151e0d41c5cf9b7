"""Last notifications: each `NMSG` kept as its subscription's last one, the newest 6 per token (spec §5.7).

Keys (keys.py; the value layout is codec.py): `P t{T}:ln` (hash: sub id -> ts_ms ‖ nonce ‖ encMeta, at
most `MAX_LAST_NTFS` fields) and the counter `P n:ln`. One script per notification (ADD_LAST_NTF) finds
the subscription, checks the token is ACTIVE, stores, trims and answers the token's list; the scripts of
one SMP block share one pipeline, so a block costs two round trips whatever its size (the second reads
the tokens to push to).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.base import NewNotification, NtfOutcome, StoredNotification
from ntf_server.store.codec import decode_ln, encode_ln
from ntf_server.store.dataset import DataSet
from ntf_server.store.keys import decode_sub, make_sub_id, sub_r
from ntf_server.store.records import LastNotification, TokenRecord
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.tokens import RedisTokens

MAX_LAST_NTFS: Final = 6  # spec §5.7 `maxNtfs`


def _no_sub() -> StoredNotification:
    return StoredNotification(NtfOutcome.NO_SUBSCRIPTION, None, [])


class RedisNotifications:
    def __init__(self, data: DataSet, servers: ServerRegistry, tokens: RedisTokens) -> None:
        self._d = data
        self._servers = servers
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"<RedisNotifications prefix={self._d.keys.prefix!r}>"

    async def add_last_notification(
        self, server: SMPServer, notifier_id: bytes, received_at_ms: int, nonce: bytes, enc_meta: bytes
    ) -> tuple[NtfOutcome, TokenRecord | None, list[LastNotification]]:
        """`NMSG` (spec §5.7), one: see `add_last_notifications`."""
        item = NewNotification(server, notifier_id, received_at_ms, nonce, enc_meta)
        [result] = await self.add_last_notifications([item])
        return result.outcome, result.token, result.notifications

    async def add_last_notifications(self, items: Sequence[NewNotification]) -> list[StoredNotification]:
        """The NMSGs of one SMP block (spec §5.7), in order, in two round trips whatever their number: each
        is kept atomically as its subscription's last notification and its token's list trimmed to the
        newest 6; returned for each, oldest first, with the token to push to."""
        values = [encode_ln(item.received_at_ms, item.nonce, item.enc_meta) for item in items]  # checks all first
        located = [await self._locate(item) for item in items]
        async with self._d.pipeline() as pipe:
            for value, where in zip(values, located, strict=True):
                if where is not None:
                    await self._d.queue(pipe, "ADD_LAST_NTF", *where, value, MAX_LAST_NTFS)
            replies = iter(await pipe.execute())
        stored = [await self._stored(next(replies)) if where is not None else _no_sub() for where in located]
        wanted = sorted({s.token_id for s in stored if s.token_id})
        tokens = {t.token_id: t for t in await self._tokens.get_tokens(wanted)}
        return [StoredNotification(s.outcome, tokens.get(s.token_id), s.notifications)
                if s.outcome is NtfOutcome.STORED else s for s in stored]

    async def _locate(self, item: NewNotification) -> tuple[int, bytes, bytes] | None:
        """Server number, r and sub id of the notification's subscription; None if its server is unknown."""
        server = item.server.normalized()
        srv = await self._servers.number(server, create=False)
        if srv is None:
            return None
        r = sub_r(self._d.a, server, item.notifier_id)
        return srv, r, make_sub_id(self._d.a, r, srv)

    async def _stored(self, res: Any) -> StoredNotification:
        """ADD_LAST_NTF's answer: the token's notifications (server number, record, value, sub id each)."""
        if res[0] == b"NOSUB":
            return _no_sub()
        if res[0] == b"INACTIVE":
            return StoredNotification(NtfOutcome.TOKEN_NOT_ACTIVE, None, [])
        ntfs = []
        token_id = b""
        flat = res[1]
        for i in range(0, len(flat), 4):
            srv_i = await self._servers.address(int(flat[i]))
            if srv_i is None:
                continue
            rec = decode_sub(self._d.a, flat[i + 3], srv_i, flat[i + 1])
            token_id = rec.token_id
            ntfs.append(decode_ln(srv_i, rec.notifier_id, flat[i + 2]))
        return StoredNotification(NtfOutcome.STORED, None, ntfs, token_id)
