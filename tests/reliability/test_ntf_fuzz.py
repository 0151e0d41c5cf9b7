"""Fuzzing the NTF listener over real TLS at every version (issue 16, reliability suite): mutated valid
transmissions, wrong batch counts, lying pad lengths and random blocks on an established connection; garbage
client hellos. Properties: every block gets answers the app can parse and the connection keeps working (a
PING after the fuzz gets its PONG), other clients are served, connections are released, nothing is logged
as an error or with a traceback. The long run (≥ 1,000,000 inputs) is tests/bench/fuzz_ntf.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from live import LiveServer
from ntf_fuzz import FuzzConnection, garbage_handshake, served
from watch import LogWatch

HOST = "127.0.0.1"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# a garbage hello the server waits on (about a third of them) holds an example 0.5 s (ntf_fuzz.garbage_handshake)
FUZZ_HELLOS = settings(FUZZ, max_examples=30)


@pytest.fixture(scope="module")
def conns(live: LiveServer) -> dict[int, FuzzConnection]:
    """One fuzzed connection per NTF version, kept across examples: a connection must survive them all."""
    env = live.env
    return {v: live.run(FuzzConnection.open(HOST, env.port, env.key_hash, v)) for v in (1, 2, 3)}


@FUZZ
@given(version=st.sampled_from((1, 2, 3)), blocks=st.integers(1, 8), rng=st.randoms(use_true_random=False))
def test_fuzzed_blocks_are_answered_and_the_connection_carries_on(
    live: LiveServer, conns: dict[int, FuzzConnection], log_watch: LogWatch, version: int, blocks: int,
    rng: random.Random,
) -> None:
    live.run(conns[version].fuzz(rng, blocks))
    log_watch.assert_clean()
    assert live.loop_errors == []


@FUZZ_HELLOS
@given(rng=st.randoms(use_true_random=False))
def test_garbage_handshakes_are_closed_and_leave_nothing_behind(
    live: LiveServer, log_watch: LogWatch, rng: random.Random
) -> None:
    env = live.env
    live.run(garbage_handshake(HOST, env.port, env.key_hash, rng))
    log_watch.assert_clean()
    assert live.loop_errors == []


def test_after_the_fuzzing_others_are_served_and_connections_released(
    live: LiveServer, conns: dict[int, FuzzConnection], log_watch: LogWatch
) -> None:
    env = live.env
    live.run(served(HOST, env.port, env.key_hash))
    received = sum(c.replies for c in conns.values())
    assert received > 0
    for c in conns.values():
        live.run(c.close())
    listener = env.server.listener
    assert listener is not None
    live.run(_until(lambda: listener.connections == 0))
    assert env.server.stats["blocks_bad"] > 0  # the fuzz reached the block parser, not only the TLS layer
    log_watch.assert_clean()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the listener has no event for its connection count
            await asyncio.sleep(0.02)
