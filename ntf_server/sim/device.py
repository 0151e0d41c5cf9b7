"""A simulated iOS app speaking the real NTF protocol over TLS (used by tests and the demo).

``NtfClient`` is the protocol part of the SimpleX agent: pinned TLS (server fingerprint), the client side
of the handshake (§1.7 item 6: session id check, signed server key verified with the TLS leaf key),
signed/authenticated requests (§2.4), batched or single blocks. ``SimApp`` adds what the app keeps: its
auth and DH keys, the token id, and decryption of verification and message pushes (§5.6–5.7), so a test
can drive the whole registration → verification → subscription → push flow the way a phone does.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import CodecError, SMPServer, b64u_decode
from ntf_server.protocol.framing import (
    NTF_BLOCK_SIZE,
    NTF_SUPPORTED_VRANGE,
    Batch,
    THParams,
    VersionRange,
    batch_transmissions,
    decode_block,
    encode_block,
    encode_transmission,
    for_auth,
    parse_block,
)
from ntf_server.protocol.ntf_handshake import NtfHandshakeFailed, client_handshake
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.tls import connect_pinned, ntf_client_context, tls_unique


class ProtocolViolation(Exception):
    """The server broke a rule the real app checks (session id, signed key, response entity…)."""


@dataclass(frozen=True, slots=True)
class Request:
    entity_id: bytes
    command: P.NtfCommand
    key: crypto.PrivateAuthKey | None = None


class NtfClient:
    def __init__(self, stream: BlockStream, params: THParams, server_dh: X25519PublicKey | None,
                 writer: asyncio.StreamWriter) -> None:
        self.stream = stream
        self.writer = writer  # the TLS stream under the blocks: a stand-in may also play a misbehaving app
        self.params = params
        self.server_dh = server_dh

    @property
    def version(self) -> int:
        return self.params.version

    @classmethod
    async def connect(
        cls, host: str, port: int, key_hash: bytes, *, alpn: bool = True,
        versions: VersionRange = NTF_SUPPORTED_VRANGE, timeout_s: float = 10.0, local_host: str | None = None,
    ) -> NtfClient:
        reader, writer, leaf = await connect_pinned(host, port, ntf_client_context(alpn=alpn), key_hash,
                                                    timeout_s=timeout_s, local_host=local_host)
        stream = BlockStream(reader, writer, NTF_BLOCK_SIZE, read_timeout_s=timeout_s, write_timeout_s=timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                server_block = await stream.read_block()
            try:
                hs = client_handshake(server_block, key_hash=key_hash, tls_unique=tls_unique(stream.ssl_object),
                                      leaf_key=leaf, versions=versions)
            except NtfHandshakeFailed as e:
                raise ProtocolViolation(str(e)) from e
            await stream.write_block(hs.client_hello)
        except BaseException:
            await stream.close()
            raise
        return cls(stream, hs.params, hs.server_dh, writer)

    def _transmission(self, req: Request, corr_id: bytes) -> bytes:
        command = P.encode_command(req.command)
        auth = b""
        if req.key is not None:
            authorized, _ = for_auth(self.params, corr_id, req.entity_id, command)
            auth = crypto.client_authorize(req.key, authorized, corr_id, self.server_dh)
        return encode_transmission(self.params, corr_id, req.entity_id, command, auth=auth)

    async def send_block(self, content: bytes) -> None:
        await self.stream.write_block(encode_block(content, NTF_BLOCK_SIZE))

    async def send_raw(self, block: bytes) -> None:
        await self.stream.write_block(block)

    async def read_replies(self) -> list[tuple[bytes, bytes, P.NtfResponse]]:
        """One block of replies: ``(corr_id, entity_id, response)``; checks the app's entity rules."""
        out = []
        for raw in parse_block(self.params, decode_block(await self.stream.read_block(), NTF_BLOCK_SIZE)):
            if isinstance(raw, CodecError):
                raise ProtocolViolation(f"unparseable reply: {raw}")
            if raw.auth:
                raise ProtocolViolation("server replies are never authorized")
            resp = P.parse_response(raw.command)
            if not P.check_response_entity(resp, raw.entity_id):
                raise ProtocolViolation(f"{type(resp).__name__} with a wrong entity")
            out.append((raw.corr_id, raw.entity_id, resp))
        return out

    async def requests(self, reqs: Sequence[Request]) -> list[tuple[bytes, P.NtfResponse]]:
        """Send requests (batched into as few blocks as the version allows); answers in request order."""
        corr_ids = [os.urandom(24) for _ in reqs]
        ts = [self._transmission(r, c) for r, c in zip(reqs, corr_ids, strict=True)]
        for b in batch_transmissions(self.params, ts):
            if not isinstance(b, Batch):
                raise ValueError("request does not fit a block")
            await self.send_block(b.content)
        answers: dict[bytes, tuple[bytes, P.NtfResponse]] = {}
        while len(answers) < len(reqs):
            for corr, entity, resp in await self.read_replies():
                answers[corr] = (entity, resp)
        return [answers[c] for c in corr_ids]

    async def request(self, entity_id: bytes, command: P.NtfCommand,
                      key: crypto.PrivateAuthKey | None = None) -> tuple[bytes, P.NtfResponse]:
        [answer] = await self.requests([Request(entity_id, command, key)])
        return answer

    async def close(self) -> None:
        await self.stream.close()

    async def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.stream.read_block()
        except ConnectionClosed:
            return True
        return False


@dataclass
class SimApp:
    """What the app keeps for its token: keys, ids, shared secret."""

    device_token: P.DeviceToken
    auth_key: crypto.PrivateAuthKey = field(default_factory=crypto.generate_ed25519)
    dh_key: X25519PrivateKey = field(default_factory=crypto.generate_x25519)
    token_id: bytes = b""
    dh_secret: bytes = b""

    async def register(self, client: NtfClient) -> P.NtfResponse:
        cmd = P.TNew(self.device_token, crypto.encode_public_key(crypto.public_of(self.auth_key)),
                     crypto.encode_public_key(self.dh_key.public_key()))
        _, resp = await client.request(b"", cmd, self.auth_key)
        if isinstance(resp, P.IdTkn):
            self.token_id = resp.token_id
            self.dh_secret = crypto.dh(crypto.decode_x25519_public_key(resp.server_dh_key), self.dh_key)
        return resp

    async def token_command(self, client: NtfClient, cmd: P.NtfCommand) -> P.NtfResponse:
        return (await client.request(self.token_id, cmd, self.auth_key))[1]

    async def subscribe(self, client: NtfClient, server: SMPServer, notifier_id: bytes,
                        notifier_key: crypto.PrivateAuthKey) -> P.NtfResponse:
        cmd = P.SNew(self.token_id, server, notifier_id, crypto.encode_private_key(notifier_key))
        return (await client.request(b"", cmd, self.auth_key))[1]

    def verification_code(self, push: Mapping[str, Any] | bytes) -> bytes:
        data = _notification_data(push)
        return crypto.cb_decrypt(self.dh_secret, b64u_decode(data["nonce"]), b64u_decode(data["verification"]))

    def message_list(self, push: Mapping[str, Any] | bytes) -> list[str]:
        """The decrypted ``PNMessageData`` items, oldest first (the last one is the current notification)."""
        data = _notification_data(push)
        text = crypto.cb_decrypt(self.dh_secret, b64u_decode(data["nonce"]), b64u_decode(data["message"]))
        return text.decode().split(";") if text else []  # a periodic push before any notification: empty


def _notification_data(push: Mapping[str, Any] | bytes) -> Mapping[str, Any]:
    body = json.loads(push) if isinstance(push, bytes) else push
    data = body["notificationData"]
    if not isinstance(data, Mapping):
        raise ProtocolViolation("notificationData is not an object")
    return data
