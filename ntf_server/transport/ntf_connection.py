"""One NTF client connection: handshake (§1.7), then receive → queue → process → queue → send (STYLE 7).

Theory of operation: after TLS, the server sends its hello (version range 1..3 when any ALPN protocol was
negotiated, else 1..1; from v2 a fresh X25519 key signed by the TLS leaf key) and reads the client's; a
wrong server identity or version closes the connection without an error block, as Haskell does. Then
three tasks share one TaskGroup: the receiver reads blocks and splits them into transmissions, the
processor answers rejections at once and runs verified requests in order, the sender batches responses
into blocks. Bounded queues between them are the back-pressure. The first task to end (EOF, timeout,
protocol violation) cancels the others. A bad block or transmission is answered ``ERR BLOCK`` and the
connection carries on (spec errata 4); other connections are never affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.handlers import NtfHandlers
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.error_types import AUTH, BLOCK, QUOTA
from ntf_server.protocol.framing import (
    Batch,
    THParams,
    batch_transmissions,
    decode_block,
    encode_block,
    encode_transmission,
    parse_block,
)
from ntf_server.protocol.ntf_handshake import server_accept, server_hello
from ntf_server.transport.blocks import Blocks, ConnectionClosed
from ntf_server.transport.quota import PeerQuotas
from ntf_server.transport.spsc import SpscQueue
from ntf_server.transport.tls import negotiated_alpn

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
BLOCKS_BAD: Final = Counter("blocks_bad", "Malformed NTF transport blocks")
REQ_RECEIVED: Final = Counter("req_received", "NTF requests received")
REQ_REJECTED: Final = Counter("req_rejected", "NTF requests rejected as malformed")
CONN_CLOSED_AUTH: Final = Counter("conn_closed_auth_failures",
                                  "NTF connections closed after server.max_auth_failures ERR AUTH answers")

CLIENT_QUEUE_SIZE: Final = 64  # clientQSize
AUTH_ERR: Final = P.Err(AUTH)




@dataclass(frozen=True, slots=True)
class ServerIdentity:
    key_hash: bytes  # SHA-256 of the CA certificate DER
    sign_key: crypto.SignPrivateKey  # the TLS leaf key, signs the per-connection DH key


@dataclass(frozen=True, slots=True)
class Reply:
    corr_id: bytes
    entity_id: bytes
    response: P.NtfResponse


CLOSE: Final[list[Reply]] = []  # put on the send queue: the sender ends the connection there (by identity)


def response_entity(resp: P.NtfResponse, request_entity: bytes) -> bytes:
    """IDTKN/IDSUB/PONG carry no entity (the client rejects one); everything else echoes the request's."""
    return b"" if isinstance(resp, P.IdTkn | P.IdSub | P.Pong) else request_entity


async def server_handshake(
    stream: Blocks, identity: ServerIdentity, timeout_s: float
) -> tuple[THParams, X25519PrivateKey | None]:
    """The I/O around ``protocol.ntf_handshake`` (server side): write our hello, read theirs, in time."""
    alpn = negotiated_alpn(stream.ssl_object) is not None
    sent = server_hello(stream.session_id(), alpn=alpn, sign_key=identity.sign_key)
    async with asyncio.timeout(timeout_s):
        await stream.write_block(sent.block)
        block = await stream.read_block()
    return server_accept(sent, block, identity.key_hash)


class NtfConnection:
    def __init__(
        self,
        stream: Blocks,
        params: THParams,
        server_dh: X25519PrivateKey | None,
        handlers: NtfHandlers,
        stats: Stats,
        idle_timeout_s: float | None,
        quota: PeerQuotas | None = None,
        *,
        max_auth_failures: int = 0,
    ) -> None:
        """``max_auth_failures``: close the connection after this many ``ERR AUTH`` answers (0: never); each
        cost a store lookup and a signature check, and a real app gets very few."""
        self._stream = stream
        self._quota = quota
        self._params = params
        self._server_dh = server_dh
        self._handlers = handlers
        self._stats = stats
        self._idle = idle_timeout_s
        self._auth_left = max_auth_failures or None
        self._in: SpscQueue[list[P.NtfRequest | P.NtfReject]] = SpscQueue(CLIENT_QUEUE_SIZE)
        self._out: SpscQueue[list[Reply]] = SpscQueue(CLIENT_QUEUE_SIZE)

    def __repr__(self) -> str:
        return f"<NtfConnection v{self._params.version} in={self._in.qsize()} out={self._out.qsize()}>"

    async def run(self) -> None:
        """Serve until the client goes away or misbehaves; the first task to end stops the others."""
        tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._process()),
            asyncio.create_task(self._send()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and (e := t.exception()) is not None and not isinstance(
                    e, ConnectionClosed | TimeoutError
                ):
                    raise e
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self) -> None:
        while True:
            block = await self._stream.read_block(self._idle)
            try:
                items = parse_block(self._params, decode_block(block, self._stream.block_size))
            except CodecError:
                self._stats.incr(BLOCKS_BAD)
                await self._in.put([P.NtfReject(b"", b"", BLOCK)])
                continue
            self._stats.incr(REQ_RECEIVED, len(items))
            await self._in.put([P.decode_request(self._params, i) for i in items])

    async def _process(self) -> None:
        while True:
            batch = await self._in.get()
            rejects = [Reply(r.corr_id, r.entity_id, P.Err(r.error)) for r in batch if isinstance(r, P.NtfReject)]
            if rejects:
                self._stats.incr(REQ_REJECTED, len(rejects))
                await self._out.put(rejects)
            replies = [await self._answer(r) for r in batch if isinstance(r, P.NtfRequest)]
            if replies:
                await self._out.put(replies)
            if self._auth_left is not None and self._auth_left <= 0:
                self._stats.incr(CONN_CLOSED_AUTH)
                await self._out.put(CLOSE)  # the sender ends the connection after the answers before it
                await asyncio.Future()  # nothing more is read; cancelled when the sender ends

    async def _answer(self, req: P.NtfRequest) -> Reply:
        if self._quota is not None and not self._quota.allow(req.command):
            resp: P.NtfResponse = P.Err(QUOTA)  # refused before any store or crypto work
        else:
            resp = await self._handlers.handle(req, self._server_dh)
            if self._auth_left is not None and resp == AUTH_ERR:
                self._auth_left -= 1
        return Reply(req.raw.corr_id, response_entity(resp, req.raw.entity_id), resp)

    async def _send(self) -> None:
        while True:
            replies = await self._out.get()
            if replies is CLOSE:
                return
            for block in self.encode_replies(replies):
                await self._stream.write_block(block)

    def encode_replies(self, replies: Sequence[Reply]) -> list[bytes]:
        v = self._params.version
        ts = [encode_transmission(self._params, r.corr_id, r.entity_id, P.encode_response(r.response, v))
              for r in replies]
        blocks = []
        for b in batch_transmissions(self._params, ts):
            if isinstance(b, Batch):
                blocks.append(encode_block(b.content, self._stream.block_size))
            else:  # cannot happen for NTF responses (all are far below a block); logged if it ever does
                log.error("response too large for a block: dropped")
        return blocks
