"""No log line carries a secret (issue 8 item 5): a whole scenario runs with the root logger at DEBUG, every
record of every logger (ours and third-party: hpack, h2, redis…) is captured twice — raw, as the record
was created, and as ``setup_logging`` writes it — and both are searched for every secret the scenario
used, in every encoding a log line could show it in."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator

import pytest
from conftest import Env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers.logparse import parse_logfmt

from ntf_server.config import LogConfig, LogFormat, LogLevel
from ntf_server.observability.logcatalog import EVENTS
from ntf_server.observability.logevents import event_of
from ntf_server.observability.logsetup import setup_logging
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH, QUOTA, CmdError, CommandError
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.records import TokenRecord, TokenStatus, TokenStatusKind, day_of

SMP = SMPServer(("smp.example.com",), "5223", b"\x42" * 32)
MIN_SECRET_CHARS = 12  # shorter renderings would match by chance


def forms(secret: bytes) -> set[str]:
    """Every way a log line could render ``secret``: hex (both cases), base64 and base64url (padded and
    not), the bytes repr body, and the text itself when it is text (device tokens, JWTs, PEM)."""
    out = {secret.hex(), secret.hex().upper()}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        text = enc(secret).decode()
        out |= {text, text.rstrip("=")}
    out.add(repr(secret)[2:-1])
    try:
        out.add(secret.decode("ascii"))
    except UnicodeDecodeError:
        pass
    return {f for f in out if len(f) >= MIN_SECRET_CHARS}


def pem_forms(pem: bytes) -> set[str]:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    lines = {line.decode() for line in pem.splitlines() if not line.startswith(b"-----")}
    return forms(base64.b64decode(body)) | {x for x in lines if len(x) >= MIN_SECRET_CHARS}


class Capture(logging.Handler):
    """Every record, formatted with no scrubbing: what our code and the libraries handed to logging."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.name} {record.levelname} {record.getMessage()} {event_of(record)}"
        if record.exc_info:
            line += logging.Formatter().formatException(record.exc_info)
        self.lines.append(line)


@pytest.fixture
def debug_logs() -> Iterator[tuple[io.StringIO, io.StringIO, Capture]]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, js = io.StringIO(), io.StringIO()
    setup_logging(LogConfig(level=LogLevel.DEBUG, format=LogFormat.JSON), stream=js)
    as_json = root.handlers[0]
    setup_logging(LogConfig(level=LogLevel.DEBUG, format=LogFormat.KV), stream=out)
    root.addHandler(as_json)
    raw = Capture()
    root.addHandler(raw)
    try:
        yield out, js, raw
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def legacy_token(app: SimApp) -> TokenRecord:
    """A token record of ``app`` as the store may hold it from before device tokens were checked at parse."""
    server_dh = crypto.generate_x25519()
    verify_key = crypto.encode_public_key(crypto.public_of(app.auth_key))
    return TokenRecord(os.urandom(24), app.device_token.provider, app.device_token.token,
                       TokenStatus(TokenStatusKind.REGISTERED), verify_key,
                       crypto.encode_public_key(server_dh.public_key()), crypto.encode_private_key(server_dh),
                       crypto.dh(app.dh_key.public_key(), server_dh), os.urandom(32), last_used_day=day_of(time.time()))


def leaks(text: str, secrets: Iterable[tuple[str, bytes | set[str]]]) -> list[str]:
    found = []
    for name, value in secrets:
        for form in value if isinstance(value, set) else forms(value):
            if form in text:
                found.append(f"{name} as {form[:16]}…")
    return found


async def test_debug_logs_carry_no_secret(env: Env, debug_logs: tuple[io.StringIO, io.StringIO, Capture]) -> None:
    out, js, raw = debug_logs
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    secrets: list[tuple[str, bytes | set[str]]] = []

    def app_secrets(label: str, app: SimApp) -> None:
        pub = crypto.public_of(app.auth_key)
        secrets.extend([
            (f"{label} device token", app.device_token.token),
            (f"{label} token id", app.token_id),
            (f"{label} dh secret", app.dh_secret),
            (f"{label} auth key", crypto.encode_private_key(app.auth_key)),
            (f"{label} verify key", crypto.encode_public_key(pub)),
            (f"{label} dh key", crypto.encode_private_key(app.dh_key)),
            (f"{label} dh public", crypto.encode_public_key(app.dh_key.public_key())),
        ])

    # registration, verification push through the simulator, TVFY, TCHK, TCRN
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    resp = await app.register(client)
    assert isinstance(resp, P.IdTkn)
    secrets.append(("server dh public", resp.server_dh_key))
    push = await env.sim.next_push(app.device_token.token.decode())
    code = app.verification_code(push.body)
    secrets.append(("registration code", code))
    await env.server.push.settle()  # type: ignore[union-attr]
    assert await app.token_command(client, P.TVfy(code)) == P.Ok()
    assert isinstance(await app.token_command(client, P.TChk()), P.Tkn)
    assert await app.token_command(client, P.TCrn(20)) == P.Ok()
    # subscriptions: SNEW, SCHK, SDEL, plus a refused one
    nid, nkey = os.urandom(24), crypto.generate_ed25519()
    sub = await app.subscribe(client, SMP, nid, nkey)
    assert isinstance(sub, P.IdSub)
    secrets += [("notifier id", nid), ("notifier key", crypto.encode_private_key(nkey)), ("sub id", sub.sub_id)]
    assert isinstance((await client.request(sub.sub_id, P.SChk(), app.auth_key))[1], P.Sub)
    assert (await client.request(sub.sub_id, P.SDel(), app.auth_key))[1] == P.Ok()
    # TRPL to a new device token, re-verified
    old_token = app.device_token.token
    new = P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())
    assert await app.token_command(client, P.TRpl(new)) == P.Ok()
    code2 = app.verification_code((await env.sim.next_push(new.token.decode())).body)
    secrets += [("old device token", old_token), ("registration code 2", code2)]
    app.device_token = new
    assert await app.token_command(client, P.TVfy(code2)) == P.Ok()
    # failures: a dead device token, a disabled environment, a malformed token, a wrong code
    dead = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    env.sim.unregister(dead.device_token.token.decode())
    prod = SimApp(P.DeviceToken(P.PushProvider.APNS_PROD, os.urandom(32).hex().encode()))
    bad = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, b"not hex, but a secret all the same"))
    for other in (dead, prod):
        await other.register(client)
    assert await bad.register(client) == P.Err(CmdError(CommandError.SYNTAX))  # issue 16.5
    stored = legacy_token(bad)  # a malformed device token stored before that: its push fails for good
    await env.server.store.create_token(stored)
    await env.server.push.send_verification(stored)  # type: ignore[union-attr]
    await env.server.push.settle()  # type: ignore[union-attr]
    assert await dead.token_command(client, P.TVfy(os.urandom(32))) == P.Err(AUTH)
    # a flood over the per-connection quota (ERR QUOTA, debug lines and a summary)
    flood = [SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())) for _ in range(25)]
    flooder = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    answers = [await f.register(flooder) for f in flood]
    assert P.Err(QUOTA) in answers
    await flooder.close()
    # TDEL, expiry housekeeping (unused and never-verified tokens)
    assert await app.token_command(client, P.TDel()) == P.Ok()
    assert env.server.housekeeping is not None
    await env.server.housekeeping.expire_once(time.time() + 400 * 86400)
    await client.close()

    for label, a in (("app", app), ("dead", dead), ("prod", prod), *(("flood", f) for f in flood)):
        app_secrets(label, a)
    secrets += [("bad device token", bad.device_token.token), ("bad token id", stored.token_id),
                ("bad registration code", stored.reg_code)]
    jwts = {c.auth.token for c in env.sim.conns if c.auth.token}
    assert jwts, "the simulator saw no provider token"
    for jwt in jwts:
        assert jwt is not None
        secrets += [("APNs JWT", jwt), ("APNs JWT signature", jwt.rsplit(b".", 1)[1])]
    env_cfg = env.config.apns.test
    assert env_cfg.key_file is not None
    p8 = env_cfg.key_file.read_bytes()
    key = serialization.load_pem_private_key(p8, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secrets += [(".p8 key", pem_forms(p8)), (".p8 scalar", key.private_numbers().private_value.to_bytes(32, "big"))]
    secrets.append(("store key", load_or_create_store_key(env.config.store.key_file)))
    cfg_dir = env.config.config_dir
    for name in ("server.key", "ca.key"):  # TLS private keys, as written by init
        secrets.append((name, pem_forms((cfg_dir / name).read_bytes())))
    secrets.append(("admin token", (cfg_dir / "admin.token").read_bytes().strip()))

    written = out.getvalue()
    assert raw.lines and written  # the scenario did log, at debug level
    found = leaks("\n".join(raw.lines), secrets)
    assert not found, f"handed to logging: {found}"
    found = leaks(written, secrets)
    assert not found, f"written by setup_logging's handler: {found}"
    found = leaks(js.getvalue(), secrets)
    assert not found, f"written as JSON: {found}"
    # one event per line in both formats, every one catalogued, the same events in the same order
    kv_events = [parse_logfmt(line)["event"] for line in written.splitlines()]
    assert kv_events == [json.loads(line)["event"] for line in js.getvalue().splitlines()]
    assert set(kv_events) <= set(EVENTS) and "push.gave_up" in kv_events  # per-push detail, tokens as tags
