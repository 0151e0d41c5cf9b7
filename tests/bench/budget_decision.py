"""The cost of the push policy per message push: the policy read (one GET, parsed only when changed) and the
budget script, against the embedded Redis over its unix socket.

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/budget_decision.py [--tokens 1000] [--decisions 20000] [--concurrency 16]

Prints decisions/s and per-decision latency (p50, p99) for: the policy read alone, the budget script alone,
a GET of the policy then the script (two round trips), and the script checking the policy itself (one round
trip: what ``HiddenPushes.plan`` does besides building the body), each with ``--concurrency`` at once.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))

from store_helpers import token

from ntf_server.config import Overflow
from ntf_server.push.policy import Budget, PolicySettings
from ntf_server.store.budget import BudgetStore
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore


async def measure(name: str, n: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> None:
    lat: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    took = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100)
    print(f"{name:<22} {n / took:>9,.0f}/s   p50 {1000 * q[49]:.3f} ms   p99 {1000 * q[98]:.3f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--decisions", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        redis = EmbeddedRedis(Path(d) / "redis")
        url = await redis.start()
        store = await RedisStore.connect(url, secrets.token_bytes(32), prefix="bench:")
        try:
            toks = [token() for _ in range(args.tokens)]
            for t in toks:
                await store.create_token(t)
            policy = PolicyStore(store.client, store.prefix)
            await policy.put(PolicySettings.from_json({"hidden_per_hour": 3, "burst": 3, "overflow": "defer"}))
            budgets = BudgetStore(store.client, store.prefix)
            b = Budget(3.0, 3, Overflow.DEFER)
            body, now = b"x" * 3900, time.time()  # a body of the real size rides along under defer
            print(f"{args.tokens} tokens, {args.decisions} decisions, {args.concurrency} at once\n")
            await measure("policy read (GET)", args.decisions, args.concurrency, lambda i: policy.current())
            await measure("budget script", args.decisions, args.concurrency,
                          lambda i: budgets.message(toks[i % len(toks)].token_id, b, now + i / 1000, body, "r"))

            async def both(i: int) -> object:
                await policy.current()
                return await budgets.message(toks[i % len(toks)].token_id, b, now + i / 1000, body, "r")

            await measure("policy GET + script", args.decisions, args.concurrency, both)
            raw = await policy.raw()
            await measure("script checking policy", args.decisions, args.concurrency,
                          lambda i: budgets.message(toks[i % len(toks)].token_id, b, now + i / 1000, body, "r",
                                                    policy=(policy.key, raw)))
        finally:
            await store.close()
            await redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
