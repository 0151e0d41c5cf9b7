"""The demo's story: register, verify, subscribe on two SMP servers, a burst over the hidden budget, a
policy change through the admin API, more messages, a summary — each push told as it reaches APNs.

Theory of operation: one task (the *watcher*) takes every push the APNs simulator accepts for the phone's
device token, has the phone decrypt it, records it and prints it at once; the main flow sends one message
at a time on an SMP stand-in and waits (at most `PUSH_WAIT_S`) until a push names that message as its
newest notification. A message the policy holds back or drops simply gets no push in time: that is
printed and counted, never assumed. Everything shown in the summary comes from the recorded events
(report.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from apns.simulator import RecordedPush
from ntf_server.demo import report
from ntf_server.demo.admin import ADMIN_API_IN_BUILD, NOT_AVAILABLE, AdminError
from ntf_server.demo.phone import DemoFailed, Phone, Queue
from ntf_server.demo.report import Record, Seen, Sent
from ntf_server.demo.world import PushPolicy, World, local_world

Out = Callable[[str], None]

PUSH_WAIT_S: Final = 1.0  # a push reaches the simulator in milliseconds; longer means none is coming
SETTLE_S: Final = 0.3  # after the last message, for pushes still in flight
QUEUES_PER_SERVER: Final = 2
START_POLICY: Final = PushPolicy(hidden_per_hour=3, burst=3, overflow="alert")
CHANGED_POLICY: Final = PushPolicy(hidden_per_hour=3, burst=3, overflow="defer")


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class DemoResult:
    record: Record
    workdir: Path | None = None


class _Watcher:
    """Records and prints every push to the phone's token, and wakes whoever waits for a message."""

    def __init__(self, world: World, phone: Phone, record: Record, out: Out) -> None:
        self.world, self.phone, self.record, self.out = world, phone, record, out
        self.phase = 0
        self._arrived: dict[str, asyncio.Event] = {}

    def expect(self, message: str) -> asyncio.Event:
        return self._arrived.setdefault(message, asyncio.Event())

    async def next(self, timeout_s: float = 5.0) -> tuple[RecordedPush, Seen]:
        push = await self.world.sim.next_push(self.phone.device_token, timeout_s=timeout_s)
        seen = self.phone.decode(push, len(self.record.seen) + 1, self.phase)
        self.record.seen.append(seen)
        self.out(report.seen_line(seen))
        if seen.newest is not None:
            self.expect(seen.newest.message).set()
        return push, seen

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await self.next(timeout_s=3600)


async def _prepare(world: World, phone: Phone, watcher: _Watcher, out: Out) -> list[Queue]:
    out("\n1. The phone registers its device token (TNEW) and proves it (TVFY)")
    await phone.connect()
    await phone.register()
    out("  -> TNEW: the server answers with a token id and sends an encrypted verification push")
    try:
        push, seen = await watcher.next()
    except TimeoutError:
        raise DemoFailed("no verification push reached the APNs simulator") from None
    if seen.kind is not report.PushKind.VERIFICATION:
        raise DemoFailed(f"expected a verification push, got {seen.kind}")
    await phone.verify(push)
    out(f"  -> TVFY with the code the phone decrypted from push {seen.number}: token ACTIVE")
    out(f"\n2. The phone subscribes {QUEUES_PER_SERVER} queues on each of the two SMP servers (SNEW)")
    queues = []
    for number in range(1, QUEUES_PER_SERVER + 1):
        for server in world.smp:
            queues.append(await phone.subscribe(server, number))
            out(f"  -> {queues[-1].label} on SMP server {server}: subscription ACTIVE")
    return queues


async def _send(world: World, watcher: _Watcher, queue: Queue, message: str, phase: int, out: Out) -> None:
    sent = Sent(phase, queue.server, queue.label, message)
    watcher.record.sent.append(sent)
    arrived = watcher.expect(message)
    out(report.sent_line(sent))
    world.smp[queue.server].notify(queue.creds.notifier_id, message.encode(), int(time.time()))
    try:
        async with asyncio.timeout(PUSH_WAIT_S):
            await arrived.wait()
    except TimeoutError:
        out(report.missing_line(sent))


async def _burst(world: World, watcher: _Watcher, queues: list[Queue], first: int, count: int, out: Out) -> None:
    for n in range(first, first + count):
        await _send(world, watcher, queues[(n - 1) % len(queues)], f"msg {n:02d}", watcher.phase, out)


async def _change_policy(world: World, out: Out) -> str:
    """PUT /v1/policy; returns the policy as the server now reports it, or why it did not change."""
    if world.admin is None:
        out(f"  !! {NOT_AVAILABLE}: the policy stays as configured")
        return f"unchanged ({NOT_AVAILABLE})"
    want = CHANGED_POLICY
    body = {"hidden_per_hour": want.hidden_per_hour, "burst": want.burst, "overflow": want.overflow}
    out(f"  -> PUT {world.admin.url}/v1/policy {json.dumps(body)}")
    try:
        got = await world.admin.put_policy(want.hidden_per_hour, want.burst, want.overflow)
    except AdminError as e:
        out(f"  !! the admin API refused: {e}")
        return f"unchanged (admin API: {e})"
    applied = PushPolicy(got.get("hidden_per_hour", "?"), got.get("burst", "?"), got.get("overflow", "?"))
    out(f"  <- 200: {applied.describe()}")
    return applied.describe()


async def _show_stats(world: World, out: Out) -> None:
    if world.admin is None:
        return
    try:
        stats = await world.admin.stats()
    except AdminError as e:
        out(f"  !! GET /v1/stats: {e}")
        return
    flat = {k: v for k, v in _flatten(stats).items() if isinstance(v, int | float) and v}
    out("\nServer counters (GET /v1/stats): " + ", ".join(f"{k}={v:g}" for k, v in sorted(flat.items())[:24]))


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, object] = {}
    for k, v in obj.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


async def run_demo(*, messages: int = 8, more: int = 4, keep_running: asyncio.Event | None = None,
                   out: Out = _print) -> DemoResult:
    """The whole demo; `keep_running` (an event set on Ctrl-C) keeps everything up after the summary."""
    result = DemoResult(Record())
    record = result.record
    out("ntf-server demo: everything local (embedded Redis, strict APNs simulator, two SMP servers, the "
        "server, a simulated phone)")
    async with local_world(START_POLICY, admin=ADMIN_API_IN_BUILD) as world:
        result.workdir = world.workdir
        out(f"  workspace {world.workdir} (removed at the end)")
        out(f"  NTF server {world.address}")
        out(f"  APNs simulator 127.0.0.1:{world.sim.port}; SMP servers "
            + ", ".join(f"{n} 127.0.0.1:{s.port}" for n, s in world.smp.items()))
        phone = Phone(world)
        watcher = _Watcher(world, phone, record, out)
        try:
            queues = await _prepare(world, phone, watcher, out)
            watching = asyncio.create_task(watcher.run())
            try:
                watcher.phase = 1
                record.phases.append(report.Phase(1, "1 burst", f"{START_POLICY.describe()} (config)"))
                out(f"\n3. A burst of {messages} messages, alternating servers; policy {START_POLICY.describe()}")
                await _burst(world, watcher, queues, 1, messages, out)
                out("\n4. The operator changes the policy through the admin API")
                policy = await _change_policy(world, out)
                watcher.phase = 2
                record.phases.append(report.Phase(2, "2 after policy change", policy))
                out(f"\n5. {more} more messages")
                await _burst(world, watcher, queues, messages + 1, more, out)
                await asyncio.sleep(SETTLE_S)
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await _show_stats(world, out)
            out("\nSummary (computed from the pushes the APNs simulator received and the phone decrypted)")
            for line in report.table(record) + report.notes(record, START_POLICY.hidden_per_hour > 0):
                out("  " + line)
            if keep_running is not None:
                _still_up(world, out)
                await keep_running.wait()
        finally:
            await phone.close()
    gone = result.workdir is not None and not result.workdir.exists()
    out(f"\nStopped everything; {'removed' if gone else 'could not remove'} {result.workdir}.")
    return result


def _still_up(world: World, out: Out) -> None:
    out("\nStill running (--keep-running); stop with Ctrl-C.")
    out(f"  server address: {world.address}")
    if world.admin is not None:
        out(f"  admin API: {world.admin.url} (bearer token in {world.config.admin.token_file})")
    else:
        out(f"  admin API: {NOT_AVAILABLE}")
    out(f"  configuration: {world.config.config_file}")
