"""The demo's phone: the simulated app of `ntf_server.sim.device` plus the queues it subscribed, so every
push the APNs simulator received can be decrypted and told in labels ("queue A1"), never in raw ids."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Final

from apns.simulator import RecordedPush
from ntf_server.demo.report import Item, PushKind, Seen, classify
from ntf_server.demo.world import World
from ntf_server.protocol import crypto, ntf as P, smp as S
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials

ACTIVE_TIMEOUT_S: Final = 10.0
UNKNOWN: Final = Item("?", "unknown queue", "?")


class DemoFailed(Exception):
    """A step the demo relies on did not happen; the message says which."""


@dataclass(frozen=True)
class Queue:
    label: str  # "queue A1"
    server: str  # "A"
    creds: QueueCredentials


class Phone:
    def __init__(self, world: World) -> None:
        self.world = world
        self.app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
        self.queues: dict[bytes, Queue] = {}  # notifier id -> queue
        self._uris = {smp.address.to_uri(): name for name, smp in world.smp.items()}
        self._client: NtfClient | None = None

    @property
    def device_token(self) -> str:
        return self.app.device_token.token.decode()

    @property
    def client(self) -> NtfClient:
        assert self._client is not None, "not connected"
        return self._client

    async def connect(self) -> None:
        self._client = await NtfClient.connect("127.0.0.1", self.world.server.port, self.world.key_hash)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def register(self) -> None:
        resp = await self.app.register(self.client)
        if not isinstance(resp, P.IdTkn):
            raise DemoFailed(f"TNEW answered {resp!r}")

    async def verify(self, push: RecordedPush) -> None:
        code = self.app.verification_code(push.body)
        resp = await self.app.token_command(self.client, P.TVfy(code))
        if resp != P.Ok():
            raise DemoFailed(f"TVFY answered {resp!r}")

    async def subscribe(self, server: str, number: int) -> Queue:
        """A new queue on SMP server `server` and its subscription through the NTF server, until ACTIVE."""
        smp = self.world.smp[server]
        key = crypto.generate_ed25519()
        creds, _ = smp.create_queue(crypto.public_of(key))
        resp = await self.app.subscribe(self.client, smp.address, creds.notifier_id, key)
        if not isinstance(resp, P.IdSub):
            raise DemoFailed(f"SNEW answered {resp!r}")
        queue = Queue(f"queue {server}{number}", server, creds)
        self.queues[creds.notifier_id] = queue
        await self._until_active(resp.sub_id)
        return queue

    async def _until_active(self, sub_id: bytes) -> None:
        try:
            async with asyncio.timeout(ACTIVE_TIMEOUT_S):
                while True:
                    _, resp = await self.client.request(sub_id, P.SChk(), self.app.auth_key)
                    if resp == P.Sub(P.SubStatus(P.SubStatusKind.ACTIVE)):
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise DemoFailed(f"subscription not ACTIVE within {ACTIVE_TIMEOUT_S:g} s") from None

    def decode(self, push: RecordedPush, number: int, phase: int) -> Seen:
        """What the device makes of a push: its kind and the notifications it decrypts from it."""
        body = push.json()
        kind = classify(push.push_type, body)
        items: tuple[Item, ...] = ()
        data = body.get("notificationData") if isinstance(body, dict) else None
        if kind is not PushKind.VERIFICATION and isinstance(data, dict) and "message" in data:
            try:
                items = tuple(self._item(text) for text in self.app.message_list(body))
            except ValueError:  # the phone could not open the box: shown, not hidden
                items = (UNKNOWN,)
        return Seen(phase, number, kind, push.push_type, push.priority, len(push.body), items)

    def _item(self, text: str) -> Item:
        """``<smp uri>/<notifier id> <ts> <nonce> <encrypted meta>`` -> labels and the decrypted message id."""
        try:
            where, _ts, nonce, enc_meta = text.split(" ")
            uri, _, nid_b64 = where.rpartition("/")
            queue = self.queues[b64u_decode(nid_b64)]
            meta = S.decrypt_nmsg_meta(queue.creds.rcv_ntf_dh_secret, b64u_decode(nonce), b64u_decode(enc_meta))
        except (ValueError, KeyError):  # CodecError and CryptoError are ValueErrors
            return UNKNOWN
        return Item(self._uris.get(uri, "?"), queue.label, meta.msg_id.decode(errors="replace"))
