"""Log defence in depth (ntf_server/observability/redact.py): secret-shaped text is scrubbed from formatted lines, and
loggers that print headers are capped whatever the configured level."""

from __future__ import annotations

import base64
import io
import json
import logging
import random
from collections.abc import Iterator

import pytest
from helpers.logparse import parse_logfmt

from ntf_server.config import LogConfig, LogFormat, LogLevel
from ntf_server.observability.logsetup import setup_logging
from ntf_server.observability.redact import redact

JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6IktFWUlEMDAwMDEifQ.eyJpc3MiOiJURUFNSUQwMDAxIiwiaWF0IjoxfQ.PwIBgMVggnHM4lkZxu_r18G"
PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("hpack", "redis")}
    yield
    root.handlers[:], lvl = saved
    root.setLevel(lvl)
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


@pytest.mark.parametrize("text", [
    f"authorization: bearer {JWT}", f"token {JWT} rejected", PEM, f"key={PEM[:60]}",
    "path /3/device/" + "ab" * 32, "id " + "0F" * 24, r"raw b'\x01\x02abcdefghijklmnopq'",
])
def test_secret_shapes_are_scrubbed(text: str) -> None:
    out = redact(text)
    assert "redacted" in out
    for part in (JWT, JWT.rsplit(".", 1)[1], "ab" * 32, "0F" * 24, "MIGHAgEA", r"\x01\x02"):
        assert part not in out


def test_random_values_in_every_encoding_are_scrubbed() -> None:
    rng = random.Random(1)  # fixed: the base64 rule is a heuristic with a tiny, documented miss rate
    for _ in range(300):
        value = rng.randbytes(rng.choice((24, 32, 48)))
        forms = [value.hex(), value.hex().upper(), base64.b64encode(value).decode(),
                 base64.urlsafe_b64encode(value).decode().rstrip("=")]
        for form in forms:
            assert form not in redact(f"failed for {form}: retry"), form


@pytest.mark.parametrize("text", [
    "verification push failed: TooManyProviderTokenUpdates",
    "cannot read /tmp/pytest-of-root/pytest-12/test_debug_logs_carry_no_secret0/cfg/AuthKey.p8",
    'File "/usr/lib/python3.11/asyncio/base_events.py", line 654, in run_until_complete',
    "ntf_server.transport.ntf_connection.NtfConnection._answer",
    "apns-id 7a84a8ff-7da2-4358-a2d7-bbf675b1bc2f",
    "42 verification pushes failed in the last 60 s (reasons: BadDeviceToken=40, Unregistered=2)",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("fmt", [LogFormat.KV, LogFormat.JSON])
def test_setup_logging_scrubs_messages_and_tracebacks(root_restored: None, fmt: LogFormat) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(level=LogLevel.DEBUG, format=fmt), stream=out)
    log = logging.getLogger("ntf_server.test")
    log.debug("header %s", f"bearer {JWT}")
    try:
        raise ValueError("device " + "cd" * 32)
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert len(text.splitlines()) == 2
    assert JWT not in text and "cd" * 32 not in text
    if fmt is LogFormat.JSON:
        assert "ValueError" in json.loads(text.splitlines()[1])["exc"]


def test_header_printing_loggers_are_capped_at_debug_level(root_restored: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(level=LogLevel.DEBUG), stream=out)
    hpack = logging.getLogger("hpack.hpack")
    assert not hpack.isEnabledFor(logging.DEBUG)
    assert logging.getLogger("ntf_server.push").isEnabledFor(logging.DEBUG)
    logging.getLogger("hpack").setLevel(logging.DEBUG)  # something lowered it again: the handler still drops
    hpack.debug("Decoded (b'authorization', b'bearer x')")
    logging.getLogger("redis.asyncio").setLevel(logging.DEBUG)
    logging.getLogger("redis.asyncio").debug("HSET t{abc}")
    hpack.warning("kept")
    assert [parse_logfmt(line)["msg"] for line in out.getvalue().splitlines()] == ["kept"]
