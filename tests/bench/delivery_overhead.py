"""CPU that push/delivery.py adds to each push on the hot path (issue 10: retries must cost the common case
nothing that matters). Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/delivery_overhead.py [--pushes 200000] [--rounds 5]

Sends pushes for null-provider (``AN``) tokens, which ``ApnsSender`` answers without I/O, once straight
through ``ApnsSender.push`` and once through ``Delivery.send`` (slot check, outcome dispatch, counters),
and prints the process CPU per push of each, medians over the rounds. Compare with the APNs client's own
~90 µs of CPU a push (tests/bench/apns_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from ntf_server.push.apns_sender import ApnsSender
from ntf_server.push.delivery import MESSAGE, Delivery, DeliverySettings, Push
from ntf_server.stats import Stats
from ntf_server.store.records import PushProvider, TokenRecord, TokenStatus, TokenStatusKind


class NoOutcomes:
    """Delivered ``AN`` message pushes touch no store; these are never called here."""

    async def get_token(self, token_id: bytes) -> TokenRecord | None:
        raise AssertionError("not reached")

    async def confirm_token(self, token_id: bytes) -> TokenStatus | None:
        raise AssertionError("not reached")

    async def set_token_status(self, token_id: bytes, status: TokenStatus) -> TokenStatus | None:
        raise AssertionError("not reached")


async def main(pushes: int, rounds: int) -> None:
    sender = ApnsSender(None, {})
    delivery = Delivery(NoOutcomes(), sender, Stats(), DeliverySettings())
    active = TokenStatus(TokenStatusKind.ACTIVE)
    toks = [TokenRecord(os.urandom(24), PushProvider.APNS_NULL, b"00", active, b"", b"", b"", b"", b"")
            for _ in range(1000)]
    body = b"x" * 4000
    direct: list[float] = []
    through: list[float] = []
    for r in range(rounds):
        t = time.process_time()
        for i in range(pushes):
            tok = toks[i % 1000]
            await sender.push(tok.provider, tok.device_token, body, background=False)
        direct.append((time.process_time() - t) / pushes * 1e6)
        t = time.process_time()
        for i in range(pushes):
            await delivery.send(Push(MESSAGE, toks[i % 1000], body, background=False))
        through.append((time.process_time() - t) / pushes * 1e6)
        print(f"round {r + 1}: ApnsSender.push {direct[-1]:.2f} µs, Delivery.send {through[-1]:.2f} µs a push")
    d, s = statistics.median(direct), statistics.median(through)
    print(f"median of {rounds}: ApnsSender.push {d:.2f} µs, Delivery.send {s:.2f} µs: +{s - d:.2f} µs a push")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushes", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.pushes, a.rounds))
