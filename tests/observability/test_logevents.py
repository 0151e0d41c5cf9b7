"""Log events (observability/logevents.py): stable keys read back from both formats, the catalogue checked against
the code that logs, and the event API's refusal of raw bytes and unknown events."""

from __future__ import annotations

import ast
import io
import logging
import pathlib
from collections.abc import Iterator

import pytest
from helpers.logparse import parse_lines, parse_logfmt

from ntf_server.config import LogConfig, LogFormat, LogLevel
from ntf_server.observability import logevents
from ntf_server.observability.logcatalog import EVENTS, PLAIN, RESERVED_KEYS, render_markdown
from ntf_server.observability.logevents import REDACTED_BYTES, EventError, emit, log_event
from ntf_server.observability.logsetup import setup_logging
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.sensitive import TokenId

PACKAGE = pathlib.Path(logevents.__file__).parent.parent  # ntf_server/, every package of it
log = logging.getLogger("ntf_server.test.events")
API_MODULES = {"logevents.py", "logsummary.py"}  # they pass names through; the calls into them are scanned


@pytest.fixture
def logged() -> Iterator[dict[LogFormat, io.StringIO]]:
    """Every record written twice, through a logfmt and a JSON handler, at debug level."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    outs = {fmt: io.StringIO() for fmt in LogFormat}
    setup_logging(LogConfig(level=LogLevel.DEBUG, format=LogFormat.KV), stream=outs[LogFormat.KV])
    kv = root.handlers[0]
    setup_logging(LogConfig(level=LogLevel.DEBUG, format=LogFormat.JSON), stream=outs[LogFormat.JSON])
    root.addHandler(kv)
    try:
        yield outs
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def both(outs: dict[LogFormat, io.StringIO]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    return parse_lines(outs[LogFormat.KV].getvalue(), "kv"), parse_lines(outs[LogFormat.JSON].getvalue(), "json")


def test_events_read_back_with_the_same_stable_keys_in_both_formats(logged: dict[LogFormat, io.StringIO]) -> None:
    tok = TokenId(b"\x07" * 24)
    log_event(log, "push.retry", kind="message", attempt=2, reason='Too "many" = x\nnext', token=tok)
    log_event(log, "resubscribe.progress", servers_done=1, servers=3, answered=10, subscriptions=40,
              rate_per_s=2.5, eta_s=None)
    log.warning("plain text, as libraries log")
    kv, js = both(logged)
    assert [list(line) for line in js] == [
        ["ts", "level", "event", "kind", "attempt", "reason", "token", "logger", "msg"],
        ["ts", "level", "event", "servers_done", "servers", "answered", "subscriptions", "rate_per_s", "eta_s",
         "logger", "msg"],
        ["ts", "level", "event", "logger", "msg"],
    ]
    assert [list(line) for line in kv] == [list(line) for line in js]  # same keys, same order
    retry, progress, plain = js
    assert retry["event"] == "push.retry" and retry["level"] == "debug" and retry["token"] == tok.tag
    assert retry["reason"] == 'Too "many" = x\nnext' and retry["attempt"] == 2
    assert kv[0]["reason"] == retry["reason"] and kv[0]["attempt"] == "2" and kv[0]["token"] == tok.tag
    assert progress["eta_s"] is None and progress["rate_per_s"] == 2.5 and kv[1]["rate_per_s"] == "2.5"
    assert progress["msg"] == "resubscribing: 1/3 SMP servers done, 10/40 answered, 2.5/s, ETA  s"
    assert plain["event"] == kv[2]["event"] == PLAIN and plain["msg"] == "plain text, as libraries log"
    assert kv[0]["logger"] == "ntf_server.test.events" and str(kv[0]["ts"]).endswith("Z")


def test_logfmt_lines_start_with_ts_level_event(logged: dict[LogFormat, io.StringIO]) -> None:
    log_event(log, "redis.up", down_s=1.5)
    line = logged[LogFormat.KV].getvalue().strip()
    assert line.split(" ")[1:4] == ["level=warning", "event=redis.up", "down_s=1.5"]
    assert parse_logfmt(line)["msg"] == "redis reachable again after 1.5 s"


def test_an_exception_is_one_line_with_an_exc_key(logged: dict[LogFormat, io.StringIO]) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        emit(log, "push.unexpected_error", {"error": type(e).__name__}, exc_info=True)
    kv, js = both(logged)
    assert len(kv) == len(js) == 1
    assert "RuntimeError: boom" in str(js[0]["exc"]) and kv[0]["exc"] == js[0]["exc"]


def test_string_fields_are_still_scrubbed_but_the_server_address_is_not(
        logged: dict[LogFormat, io.StringIO]) -> None:
    address = "ntf://Q3LB1m6Ztzw0J2vJ4yNfT8aXkEoP5rHc9dGs7uViWqY@localhost:5223"
    fields = {"address": address, "listen": "*:5223", "apns": "none enabled", "redis": "embedded at /x",
              "policy": "{} (config)", "admin": "off", "socks": "off"}
    log_event(log, "server.started", **fields)
    log_event(log, "housekeeping.skipped", error="bad " + "ab" * 32)
    kv, js = both(logged)
    for lines in (kv, js):
        assert lines[0]["address"] == address  # public, random-looking: not blanked
        assert "ab" * 32 not in str(lines[1]["error"]) and "redacted" in str(lines[1]["error"])


def test_raw_bytes_are_refused_in_tests_and_redacted_in_production(logged: dict[LogFormat, io.StringIO]) -> None:
    secret = bytes(range(40))
    with pytest.raises(EventError, match="raw bytes"):
        log_event(log, "housekeeping.skipped", error=secret)  # type: ignore[arg-type]
    with pytest.raises(EventError, match=r"not in ntf_server/observability/logcatalog\.py"):
        log_event(log, "no.such.event")
    with pytest.raises(EventError, match="keys"):
        log_event(log, "housekeeping.skipped", error="x", token=TokenId(secret))
    with pytest.raises(EventError, match="type object"):
        log_event(log, "housekeeping.skipped", error=object())  # type: ignore[arg-type]
    logevents.set_strict(False)
    try:
        log_event(log, "housekeeping.skipped", error=secret)  # type: ignore[arg-type]
        log_event(log, "no.such.event", x=1)
        log_event(log, "housekeeping.skipped", error=object())  # type: ignore[arg-type]
    finally:
        logevents.set_strict(True)
    _, js = both(logged)
    assert [line["error"] for line in js if line["event"] == "housekeeping.skipped"] == [REDACTED_BYTES, "<object>"]
    assert js[1]["event"] == "no.such.event" and js[1]["x"] == 1  # logged, never raised, in production
    text = logged[LogFormat.KV].getvalue() + logged[LogFormat.JSON].getvalue()
    assert secret.hex() not in text and "\\x01\\x02" not in text


def test_counted_log_writes_catalogued_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t = [0.0]
    failures = CountedLog(log, "message failed", event="push.failed", fields={"kind": "message"},
                          clock=lambda: t[0])
    other = CountedLog(log, "verification push not sent", event="push.not_sent", clock=lambda: t[0])
    for reason in ("Unregistered", "BadDeviceToken", "BadDeviceToken"):
        failures.event(reason)
        other.event(reason)
    t[0] = 61
    failures.flush()
    other.flush()
    events = [logevents.event_of(r) for r in caplog.records]
    assert events == [
        ("push.failed", {"kind": "message", "reason": "Unregistered", "window_s": 60.0}),
        ("push.not_sent", {"reason": "Unregistered", "window_s": 60.0}),
        ("push.failed.repeated", {"kind": "message", "count": 2, "window_s": 61, "reasons": "BadDeviceToken=2"}),
        ("push.not_sent.repeated", {"count": 2, "window_s": 61, "reasons": "BadDeviceToken=2"}),
    ]


# ---------------------------------------------------------------- the catalogue against the code


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def logged_events() -> list[tuple[str, str, set[str] | None]]:
    """(where, event name, keyword keys or None when not all literal) of every event call in ntf_server/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in API_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            if func == "log_event" and len(node.args) >= 2:
                name = _literal(node.args[1])
                keys = None if any(k.arg is None for k in node.keywords) else {str(k.arg) for k in node.keywords}
                found.append((where, name or "<not a literal>", keys))
            elif func == "emit" and len(node.args) >= 3:
                keys = ({_literal(k) or "?" for k in node.args[2].keys if k is not None}
                        if isinstance(node.args[2], ast.Dict) else None)
                found.append((where, _literal(node.args[1]) or "<not a literal>", keys))
            elif func == "CountedLog":
                event = next((k.value for k in node.keywords if k.arg == "event"), None)
                name = _literal(event) if event is not None else "<no event>"
                found.append((where, name or "<not a literal>", None))
                found.append((where, f"{name}.repeated", None))
    return found


def test_every_event_the_code_logs_is_in_the_catalogue_with_its_keys() -> None:
    found = logged_events()
    assert len(found) > 40, "the scan found too few calls: did the API change names?"
    unknown = [(where, name) for where, name, _ in found if name not in EVENTS]
    assert not unknown, f"add these to ntf_server/observability/logcatalog.py: {unknown}"
    wrong = [(where, name, sorted(keys), EVENTS[name].keys) for where, name, keys in found
             if keys is not None and keys != set(EVENTS[name].keys)]
    assert not wrong, f"keys differ from the catalogue: {wrong}"


def test_every_catalogued_event_is_logged_somewhere_and_well_formed() -> None:
    used = {name for _, name, _ in logged_events()} | {PLAIN}
    assert sorted(set(EVENTS) - used) == [], "catalogue entries nothing logs: remove them or log them"
    for name, spec in EVENTS.items():
        assert not RESERVED_KEYS & set(spec.keys), name
        assert set(spec.public) <= set(spec.keys), name
        assert spec.doc, name
        spec.text.format(**dict.fromkeys(spec.keys, "x"))  # the text names only the event's keys


def test_the_catalogue_renders_as_a_table_for_the_docs() -> None:
    table = render_markdown().splitlines()
    assert len(table) == len(EVENTS) + 2 and all(f"| `{name}` |" in "\n".join(table) for name in EVENTS)
