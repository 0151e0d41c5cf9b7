"""Registration and subscription load that remembers every acknowledgement (shared by the fault tests and
tests/bench/soak.py): each worker registers a token (TNEW), verifies it (TVFY) and subscribes it to a real
queue of an SMP stand-in (SNEW), as fast as answers come, reconnecting when the server goes away. An
``IdTkn``/``IdSub`` the client received is a promise: :func:`lost` checks afterwards which promises the
store no longer keeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from apns.simulator import ApnsSimulator
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH
from ntf_server.sim.device import NtfClient, Request, SimApp
from ntf_server.transport.blocks import ConnectionClosed

RECONNECT_S = 0.1
ERROR_PAUSE_S = 0.01  # after an error answer: a retrying app, not a busy loop in the test
CHECK_BATCH = 20  # TCHK/SCHK per round trip when checking (well within a v3 block batch)


@dataclass
class Promise:
    """A token the server acknowledged, and its subscriptions, with when each answer arrived."""

    app: SimApp
    at: float  # time.monotonic() of the IdTkn
    subs: list[tuple[bytes, bytes, float]] = field(default_factory=list)  # (sub id, notifier id, IdSub time)


@dataclass
class Registrar:
    host: str
    port: int
    key_hash: bytes
    smp: SMPServer
    new_queue: Callable[[crypto.PublicAuthKey], bytes]  # creates the queue at the SMP server, returns its id
    verification: Callable[[SimApp], Awaitable[bytes]]  # the code of the app's verification push
    provider: P.PushProvider = P.PushProvider.APNS_TEST
    promises: list[Promise] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    slowest_answer_s: float = 0.0
    connect_failures: int = 0

    async def run(self, workers: int, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(self._worker(stop))

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                client = await NtfClient.connect(self.host, self.port, self.key_hash, timeout_s=5.0)
            except (OSError, TimeoutError, ConnectionClosed):
                self.connect_failures += 1
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                while not stop.is_set():
                    await self._one(client)
            except (OSError, TimeoutError, ConnectionClosed):
                await asyncio.sleep(RECONNECT_S)  # the server went away: what some tests are about
            finally:
                with contextlib.suppress(OSError, ConnectionClosed):
                    await client.close()

    async def _timed(self, call: Awaitable[P.NtfResponse]) -> P.NtfResponse:
        t0 = time.monotonic()
        resp = await call
        self.slowest_answer_s = max(self.slowest_answer_s, time.monotonic() - t0)
        self.answers[type(resp).__name__ if not isinstance(resp, P.Err) else f"ERR {resp.error}"] += 1
        return resp

    async def _one(self, client: NtfClient) -> None:
        app = SimApp(P.DeviceToken(self.provider, os.urandom(32).hex().encode()))
        if not isinstance(await self._timed(app.register(client)), P.IdTkn):
            await asyncio.sleep(ERROR_PAUSE_S)
            return
        promise = Promise(app, time.monotonic())
        self.promises.append(promise)
        code = await self.verification(app)
        if await self._timed(app.token_command(client, P.TVfy(code))) != P.Ok():
            return  # SNEW needs an ACTIVE token
        key = crypto.generate_ed25519()
        nid = self.new_queue(crypto.public_of(key))
        resp = await self._timed(app.subscribe(client, self.smp, nid, key))
        if isinstance(resp, P.IdSub):
            promise.subs.append((resp.sub_id, nid, time.monotonic()))


async def lost(client: NtfClient, promises: Sequence[Promise]) -> tuple[list[Promise], list[tuple[Promise, float]]]:
    """The acknowledged tokens the server no longer knows (TCHK answers AUTH), and the acknowledged
    subscriptions it no longer knows (SCHK answers AUTH), with the time of the lost acknowledgement."""
    lost_tokens: list[Promise] = []
    lost_subs: list[tuple[Promise, float]] = []
    for i in range(0, len(promises), CHECK_BATCH):
        chunk = promises[i : i + CHECK_BATCH]
        answers = await client.requests([Request(p.app.token_id, P.TChk(), p.app.auth_key) for p in chunk])
        for p, (_, resp) in zip(chunk, answers, strict=True):
            assert isinstance(resp, P.Tkn) or resp == P.Err(AUTH), resp
            if not isinstance(resp, P.Tkn):
                lost_tokens.append(p)
        subs = [(p, sid, at) for p in chunk for sid, _, at in p.subs]
        answers = await client.requests([Request(sid, P.SChk(), p.app.auth_key) for p, sid, _ in subs])
        for (p, _, at), (_, resp) in zip(subs, answers, strict=True):
            assert isinstance(resp, P.Sub) or resp == P.Err(AUTH), resp
            if not isinstance(resp, P.Sub):
                lost_subs.append((p, at))
    return lost_tokens, lost_subs


async def verified_app(client: NtfClient, sim: ApnsSimulator) -> SimApp:
    """A new app whose token is registered and verified with the code of its push at ``sim`` (ACTIVE)."""
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    push = await sim.next_push(app.device_token.token.decode(), timeout_s=60)
    assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
    return app
