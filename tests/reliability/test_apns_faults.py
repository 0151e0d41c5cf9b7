"""APNs misbehaving (issue 16, reliability suite): 429, 500 and 503 on every request, GOAWAY after every
stream, a stalled connection. With the default retry settings the server backs off (requests per second at
the APNs simulator stay near one per waiting push, never a busy loop), keeps serving NTF clients, and once
APNs behaves again every push is delivered."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from helpers.e2e_env import Env
from watch import LogWatch

from ntf_server.protocol import ntf as P
from ntf_server.sim.device import NtfClient, SimApp

PUSHES = 5  # verification pushes waiting while APNs misbehaves
FAULT_S = 2.0  # the window the backoff is measured over: 3 tries of a push at most (a busy loop: hundreds)
BACKOFF_BASE_S = 1.0  # [push] retry_backoff_base_s, the default
DELIVERY_TIMEOUT_S = 25.0  # the retry after the fault, plus, for the stall, the 10 s request timeout

FAULTS = ["429", "500", "503", "goaway", "stall"]


def max_tries(window_s: float) -> int:
    """Tries of one push within ``window_s`` under the default backoff (doubling from 1 s, equal jitter: each
    delay at least half its term: tries at 0, >= 0.5, >= 1.5, >= 3.5 s …). A busy loop would be hundreds."""
    tries, at, term = 1, 0.0, BACKOFF_BASE_S
    while at + term / 2 <= window_s:
        at, term, tries = at + term / 2, term * 2, tries + 1
    return tries


def requests_at(env: Env) -> int:
    return sum(env.sim.replies.values())


@pytest.mark.parametrize("fault", FAULTS)
async def test_apns_fault_is_backed_off_and_every_push_delivered_after(
    env: Env, log_watch: LogWatch, fault: str
) -> None:
    sim = env.sim
    if fault == "goaway":
        sim.faults.goaway_after_streams = 1
    elif fault == "stall":
        sim.stall(True)
    else:
        sim.faults.error_rates = {int(fault): 1.0}
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    apps = [SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())) for _ in range(PUSHES)]
    requests0, connections0, t0 = requests_at(env), sim.connections_accepted, time.monotonic()
    for app in apps:
        assert isinstance(await app.register(client), P.IdTkn)
    await asyncio.sleep(FAULT_S)
    assert (await client.request(b"", P.Ping()))[1] == P.Pong()  # NTF clients are served meanwhile
    elapsed = time.monotonic() - t0
    requests, connections = requests_at(env) - requests0, sim.connections_accepted - connections0
    requests_per_s, connections_per_s = requests / elapsed, connections / elapsed

    sim.faults.error_rates, sim.faults.goaway_after_streams = {}, None
    sim.stall(False)
    t_fixed = time.monotonic()
    for app in apps:
        push = await sim.next_push(app.device_token.token.decode(), timeout_s=DELIVERY_TIMEOUT_S)
        assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
    print(f"APNs {fault}: {requests_per_s:.2f} requests/s and {connections_per_s:.2f} connections/s at the "
          f"simulator during {elapsed:.1f} s with {PUSHES} pushes waiting; all delivered "
          f"{time.monotonic() - t_fixed:.2f} s after the fault ended")
    tries = PUSHES * max_tries(elapsed)
    per_try = 2 if fault == "503" else 1  # the second on a fresh connection (apns/client.py, as SimpleX does)
    assert requests <= tries * per_try
    new_connection_each_try = fault in ("503", "goaway")  # goaway: a connection serves one stream
    assert connections <= 1 + (tries if new_connection_each_try else elapsed)  # the first, then as said
    await client.close()
    log_watch.assert_no_traceback()
