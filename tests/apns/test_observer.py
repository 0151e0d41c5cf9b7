"""The client's observer hears of every request APNs answered or that was lost on the way, with the app,
status, reason and time taken (what a server needs for a latency histogram and answers by status)."""

from __future__ import annotations

import pytest
from apns_helpers import ClientFactory, background, new_token

from apns.errors import RetryLater, TokenInvalid
from apns.simulator import ApnsSimulator


async def test_every_answer_is_observed(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    seen: list[tuple[str, int, str, float]] = []
    client = make_client(observer=lambda *a: seen.append(a))
    await client.send(background(new_token()))
    dead = new_token()
    sim.unregister(dead, 1_700_000_000_000)
    with pytest.raises(TokenInvalid):
        await client.send(background(dead))
    sim.faults.error_rates = {503: 1.0}  # retried once on a fresh connection: two requests, two answers
    with pytest.raises(RetryLater):
        await client.send(background(new_token()))
    assert [(app, status, reason) for app, status, reason, _ in seen] == [
        ("app", 200, ""), ("app", 410, "Unregistered"),
        ("app", 503, "ServiceUnavailable"), ("app", 503, "ServiceUnavailable"),
    ]
    assert all(0 <= s < 5 for *_, s in seen)


async def test_a_request_without_answer_is_observed_as_timeout(sim: ApnsSimulator, make_client: ClientFactory) -> None:
    seen: list[tuple[str, int, str, float]] = []
    client = make_client(observer=lambda *a: seen.append(a), cfg={"request_timeout_s": 0.3})
    sim.faults.response_delay_s = 2.0
    with pytest.raises(RetryLater, match="Timeout"):
        await client.send(background(new_token()))
    [(app, status, reason, seconds)] = seen
    assert (app, status, reason) == ("app", 0, "Timeout") and seconds >= 0.3
