"""Supervision of the server's parts, in process: a part that dies stops the server, and shutdown closes
every resource in order even then (DESIGN "What runs")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.server import NtfServer, PartFailed, StartupError
from ntf_server.statelock import StateLock


def embedded_config(tmp_path: Path) -> Config:
    assert cli.main(["init", "--config-dir", str(tmp_path / "cfg"), "--host", "localhost"]) == 0
    cfg = load_config(tmp_path / "cfg")
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=0, bind="127.0.0.1"),
                               admin=dataclasses.replace(cfg.admin, port=0))


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


@pytest.mark.parametrize("failure", ["raises", "returns"])
async def test_a_failed_part_stops_the_server_and_everything_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    server = NtfServer(embedded_config(tmp_path))

    async def broken() -> None:
        await asyncio.sleep(0.2)
        if failure == "raises":
            raise RuntimeError("disk on fire")

    server.add_part("broken part", broken)
    await server.start()
    port, redis = server.port, server.embedded_redis
    assert redis is not None and redis.running
    expected = "broken part failed: disk on fire" if failure == "raises" else "broken part ended unexpectedly"
    with pytest.raises(PartFailed, match=expected):
        await asyncio.wait_for(server.wait(), 10)
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and critical[0].startswith(expected.split(":", maxsplit=1)[0])
    # The other parts were cancelled; nothing is closed until stop().
    assert server.push is not None
    await server.stop()
    assert await refused(port)
    assert redis.pid is not None and not redis.running  # it ran, and was stopped
    with StateLock(server.config.server.state_dir):  # the lock was released
        pass
    await server.stop()  # idempotent


async def test_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    """A start that fails half-way (here: the port is taken) leaves no Redis child and no lock behind."""
    cfg = embedded_config(tmp_path)
    first = NtfServer(cfg)
    await first.start()
    try:
        other_state = dataclasses.replace(cfg.server, state_dir=tmp_path / "state2", port=first.port)
        second = NtfServer(dataclasses.replace(cfg, server=other_state))
        with pytest.raises(StartupError, match=r"cannot listen on 127\.0\.0\.1"):
            await second.start()
        assert second.embedded_redis is not None and second.embedded_redis.pid is not None
        assert not second.embedded_redis.running  # it was started, then stopped with the rest
        with StateLock(tmp_path / "state2"):
            pass
    finally:
        await first.stop()
