"""NTF command semantics (§4.3–4.7) over the Store.

Theory of operation: every request goes through two steps. ``verify`` looks up the entity the command
names and checks the transmission's auth against the key registered for it (§4.3); any failure, including
"no such entity", is answered ``ERR AUTH`` after a verification of the same cost against a dummy key
(STYLE 4), so timing does not reveal which tokens exist. Then the command is applied (§4.4):
the token state machine's guards that must be atomic with a write live in the Store (see store/base.py);
which transition happens is decided here. Verification pushes go to the push service, which answers
later (a push outcome moves the token to CONFIRMED or INVALID), so the client is never kept waiting
on Apple.

Why one module of about 340 lines: one class: every command of §4.4–4.7 beside the verification step that gates
them all.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, assert_never

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.config import Config
from ntf_server.interfaces import Pusher, SubscriptionSink
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.privatehosts import any_private_literal
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.error_types import AUTH, QUOTA, CmdError, CommandError, StoreErr
from ntf_server.protocol.framing import RawTransmission
from ntf_server.protocol.token_fsm import SUB_COMMANDS_ALLOWED, TokenEvent, changing_sources, next_status
from ntf_server.store.base import (
    NO_CAPS,
    RemovedSub,
    SubCaps,
    SubCreate,
    SubscriptionStore,
    TokenCreate,
    TokenReplace,
    TokenStore,
)
from ntf_server.store.errors import StoreError
from ntf_server.store.records import (
    PushProvider,
    SubscriptionRecord,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
    day_of,
)
from ntf_server.transport.quota import REQ_QUOTA_EXCEEDED, SUB_QUOTA_EXCEEDED

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
TKN_CREATED: Final = Counter("tkn_created", "Tokens registered (TNEW)")
TKN_VERIFIED: Final = Counter("tkn_verified", "Tokens verified (TVFY)")
TKN_DELETED: Final = Counter("tkn_deleted", "Tokens deleted (TDEL)")
TKN_REPLACED: Final = Counter("tkn_replaced", "Device tokens replaced (TRPL)")
SUB_CREATED: Final = Counter("sub_created", "Subscriptions created (SNEW)")
SUB_DELETED: Final = Counter("sub_deleted", "Subscriptions deleted (SDEL)")
STORE_ERRORS: Final = Counter("store_errors", "NTF requests answered ERR STORE (Redis unavailable or failing)")
REQ_AUTH_FAILED: Final = Counter("req_auth_failed", "NTF requests answered AUTH")
REQ_PROHIBITED: Final = Counter("req_prohibited", "NTF requests answered PROHIBITED")
SUB_HOST_REFUSED: Final = Counter("sub_host_refused",
                                  "SNEW naming a private or loopback SMP host, refused (ERR CMD PROHIBITED)")

ID_BYTES: Final = 24  # subIdBytes
REG_CODE_BYTES: Final = 32  # regCodeBytes
PROHIBITED: Final = CmdError(CommandError.PROHIBITED)


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose auth checked out, with the records it named (§4.3)."""

    raw: RawTransmission
    command: P.NtfCommand
    token: TokenRecord | None = None
    sub: SubscriptionRecord | None = None


def _authorized(key_der: bytes | None, raw: RawTransmission, server_dh: X25519PrivateKey | None) -> bool:
    """Check the auth with the registered key; with none (unknown entity, wrong status) decode and check a
    dummy key of the kind the auth implies instead, which costs the same, and say no."""
    key = crypto.decode_public_key(key_der if key_der is not None else crypto.dummy_key_der(len(raw.auth)))
    ok = crypto.verify_transmission_auth(key, raw.auth, raw.authorized, raw.corr_id, server_dh)
    return ok and key_der is not None


def _usable(tok: TokenRecord | None, allowed: frozenset[TokenStatusKind]) -> TokenRecord | None:
    return tok if tok is not None and tok.status.kind in allowed else None


@dataclass(frozen=True, slots=True)
class HandlerLimits:
    """What one token may ask of the server (README "Abuse limits")."""

    sub_caps: SubCaps = NO_CAPS
    allow_private_hosts: bool = True  # SMP servers on private/loopback IP literals (privatehosts.py)
    tokens_per_device: int = 0  # registrations of one device token (0 = no cap)

    @classmethod
    def of(cls, cfg: Config) -> HandlerLimits:
        r = cfg.registration
        return cls(SubCaps(r.max_subscriptions_per_token, r.max_smp_servers_per_token),
                   cfg.subscriber.allow_private_hosts, r.max_tokens_per_device)


class HandlerStore(TokenStore, SubscriptionStore, Protocol):
    """What the NTF commands need of the store (store/base.py)."""


class NtfHandlers:
    def __init__(
        self,
        store: HandlerStore,
        pusher: Pusher,
        stats: Stats,
        subscriber: SubscriptionSink,
        clock: Callable[[], float] = time.time,
        *,
        pushable: frozenset[PushProvider] = frozenset(PushProvider),
        resolve_sub_id: Callable[[bytes], Awaitable[bytes]] | None = None,
        limits: HandlerLimits = HandlerLimits(),
    ) -> None:
        """`pushable`: the providers this server can push to (`ApnsSender.pushable`: `AN` and the enabled
        APNs environments); `TNEW`/`TRPL` for any other is answered `ERR CMD PROHIBITED`.
        `resolve_sub_id`: maps the subscription ids an imported server gave out to ours
        (`store/sub_aliases.py`); called for every `SCHK`/`SDEL`, known id or not."""
        self._store = store
        self._limits = limits
        self._resolve_sub_id = resolve_sub_id
        self._pushable = pushable
        self._pusher = pusher
        self._stats = stats
        self._subscriber = subscriber
        self.store_errors = CountedLog(log, "request answered ERR STORE", level=logging.WARNING,
                                       event="request.store_error")
        self._clock = clock

    # ------------------------------------------------------------ verification (§4.3)

    async def verify(self, req: P.NtfRequest, server_dh: X25519PrivateKey | None) -> Verified | P.Err:
        """Every path that names an entity does the same work whether or not it exists (STYLE 4): one store
        lookup of the same shape (a stand-in record is read and decrypted where there is none), one key
        decoding and one verification of the kind the auth implies."""
        raw, cmd = req.raw, req.command
        sub: SubscriptionRecord | None = None
        match cmd:
            case P.Ping():
                return Verified(raw, cmd)
            case P.TNew():
                if not _authorized(cmd.verify_key, raw, server_dh):
                    return P.Err(AUTH)
                tok = await self._store.find_token(cmd.token.provider, cmd.token.token, cmd.verify_key)
                return Verified(raw, cmd, token=tok)
            case P.SNew():
                tok, existing = await self._store.token_and_subscription(
                    cmd.token_id, cmd.smp_server, cmd.notifier_id
                )
                tok = _usable(tok, SUB_COMMANDS_ALLOWED)
                if tok is not None and existing is not None and existing.token_id != tok.token_id:
                    tok = None  # the queue belongs to another token
            case P.SChk() | P.SDel():
                sid = raw.entity_id if self._resolve_sub_id is None else await self._resolve_sub_id(raw.entity_id)
                sub, tok = await self._store.subscription_and_token(sid)
                tok = _usable(tok, SUB_COMMANDS_ALLOWED)
            case P.TVfy() | P.TChk() | P.TRpl() | P.TDel() | P.TCrn():
                tok = await self._store.get_token(raw.entity_id)
            case _:
                assert_never(cmd)
        ok = _authorized(tok.verify_key if tok is not None else None, raw, server_dh)
        if tok is None or not ok:
            return P.Err(AUTH)
        await self._touch(tok)
        return Verified(raw, cmd, token=tok, sub=sub)

    async def _touch(self, tok: TokenRecord) -> None:
        if tok.last_used_day != day_of(self._clock()):
            await self._store.touch_token(tok.token_id, self._clock())

    # ------------------------------------------------------------ commands (§4.4)

    async def handle(self, req: P.NtfRequest, server_dh: X25519PrivateKey | None) -> P.NtfResponse:
        """Verify, then execute. A store failure is answered ``ERR STORE`` (as Haskell answers database
        errors); the connection and every other client carry on."""
        try:
            verified = await self.verify(req, server_dh)
            if isinstance(verified, P.Err):
                self._stats.incr(REQ_AUTH_FAILED)
                return verified
            return await self._execute(verified)
        except StoreError as e:
            self.store_errors.event(str(e))  # one line a minute in an outage, not one a request
            self._stats.incr(STORE_ERRORS)
            return P.Err(StoreErr("database error"))

    async def _execute(self, v: Verified) -> P.NtfResponse:
        cmd, tok = v.command, v.token
        match cmd:
            case P.Ping():
                return P.Pong()
            case P.TNew():
                if cmd.token.provider not in self._pushable:
                    return self._prohibited()
                return await (self._tnew_repeat(cmd, tok) if tok is not None else self._tnew(cmd))
            case P.SNew():
                assert tok is not None
                return await self._snew(cmd, tok)
            case P.SChk():
                assert v.sub is not None
                return P.Sub(v.sub.status)
            case P.SDel():
                assert v.sub is not None
                await self._store.delete_subscription(v.sub.sub_id)
                self._subscriber.forget([RemovedSub(v.sub.sub_id, v.sub.server, v.sub.notifier_id)])
                self._stats.incr(SUB_DELETED)
                return P.Ok()
            case P.TVfy() | P.TChk() | P.TRpl() | P.TDel() | P.TCrn():
                assert tok is not None
                return await self._token_command(cmd, tok)
            case _:
                assert_never(cmd)

    def _prohibited(self) -> P.Err:
        """A token for a provider we cannot push to (its APNs environment is not enabled): the app would
        believe it registered and never hear a thing. The Haskell server answers the same for `AT` when
        `allowTestPushProvider` is off, after verification, as here (Server.hs `guardPushProvider`)."""
        self._stats.incr(REQ_PROHIBITED)
        return P.Err(PROHIBITED)

    async def _token_command(self, cmd: P.TVfy | P.TChk | P.TRpl | P.TDel | P.TCrn, tok: TokenRecord) -> P.NtfResponse:
        match cmd:
            case P.TVfy(code):
                return await self._tvfy(code, tok)
            case P.TChk():
                return P.Tkn(tok.status)
            case P.TRpl(device):
                if device.provider not in self._pushable:
                    return self._prohibited()
                reg_code = secrets.token_bytes(REG_CODE_BYTES)
                provider = device.provider
                replaced = await self._store.replace_token(tok.token_id, provider, device.token, reg_code,
                                                           self._limits.tokens_per_device)
                if replaced is TokenReplace.QUOTA:
                    self._stats.incr(REQ_QUOTA_EXCEEDED)
                    return P.Err(QUOTA)
                if replaced is not TokenReplace.REPLACED:
                    return P.Err(AUTH)
                updated = await self._store.get_token(tok.token_id)
                if updated is None:
                    return P.Err(AUTH)
                await self._pusher.send_verification(updated)
                self._stats.incr(TKN_REPLACED)
                return P.Ok()
            case P.TDel():
                _, removed = await self._store.delete_token(tok.token_id)
                self._subscriber.forget(removed)
                self._stats.incr(TKN_DELETED)
                return P.Ok()
            case P.TCrn(minutes):
                if 0 < minutes < P.MIN_CRON_INTERVAL_MIN:
                    return P.Err(QUOTA)
                await self._store.set_cron_interval(tok.token_id, minutes, self._clock())
                return P.Ok()
            case _:
                assert_never(cmd)

    async def _tnew(self, cmd: P.TNew) -> P.NtfResponse:
        server_key = crypto.generate_x25519()
        client_dh = crypto.decode_x25519_public_key(cmd.dh_key)
        try:
            secret = crypto.dh(client_dh, server_key)
        except crypto.CryptoError:
            return P.Err(AUTH)
        rec = TokenRecord(
            token_id=self._store.new_token_id(cmd.token.provider, cmd.token.token),
            provider=cmd.token.provider,
            device_token=cmd.token.token,
            status=TokenStatus(TokenStatusKind.REGISTERED),
            verify_key=cmd.verify_key,
            dh_public=crypto.encode_public_key(server_key.public_key()),
            dh_private=crypto.encode_private_key(server_key),
            dh_secret=secret,
            reg_code=secrets.token_bytes(REG_CODE_BYTES),
            last_used_day=day_of(self._clock()),
        )
        created = await self._store.create_token(rec, self._clock(), self._limits.tokens_per_device)
        if created is TokenCreate.DUPLICATE:
            return P.Err(AUTH)
        if created is TokenCreate.QUOTA:
            self._stats.incr(REQ_QUOTA_EXCEEDED)
            return P.Err(QUOTA)
        await self._pusher.send_verification(rec)
        if rec.provider is not PushProvider.APNS_NULL:
            self._stats.incr(TKN_CREATED)
        return P.IdTkn(rec.token_id, rec.dh_public)

    async def _tnew_repeat(self, cmd: P.TNew, tok: TokenRecord) -> P.NtfResponse:
        """Same device token and verify key: same id, same server key, same code (§4.4, T16)."""
        server_key = crypto.decode_private_key(tok.dh_private)
        client_dh = crypto.decode_x25519_public_key(cmd.dh_key)
        if not isinstance(server_key, X25519PrivateKey):
            return P.Err(AUTH)
        try:
            same = hmac.compare_digest(crypto.dh(client_dh, server_key), tok.dh_secret)
        except crypto.CryptoError:
            same = False
        if not same:
            return P.Err(AUTH)  # a client that regenerated its DH key must use a new verify key
        target = next_status(tok.status.kind, TokenEvent.TNEW_REPEAT)
        if target is not None and target is not tok.status.kind:
            await self._store.set_token_status(
                tok.token_id, TokenStatus(target), only_from=changing_sources(TokenEvent.TNEW_REPEAT)
            )
        await self._pusher.send_verification(tok)
        return P.IdTkn(tok.token_id, tok.dh_public)

    async def _tvfy(self, code: bytes, tok: TokenRecord) -> P.NtfResponse:
        allowed = next_status(tok.status.kind, TokenEvent.TVFY) is not None
        if not allowed or not hmac.compare_digest(code, tok.reg_code):
            return P.Err(AUTH)
        activated, removed = await self._store.activate_token(tok.token_id)
        if not activated:
            return P.Err(AUTH)
        self._subscriber.forget(removed)
        if tok.status.kind is not TokenStatusKind.ACTIVE:  # its stored subscriptions now open connections
            self._subscriber.token_activated(tok.token_id)
        self._stats.incr(TKN_VERIFIED)
        return P.Ok()

    async def _snew(self, cmd: P.SNew, tok: TokenRecord) -> P.NtfResponse:
        if not self._limits.allow_private_hosts and any_private_literal(cmd.smp_server.hosts):
            self._stats.incr(SUB_HOST_REFUSED)  # the server would connect into its own network
            return P.Err(PROHIBITED)
        key = crypto.notifier_key_for_storage(cmd.notifier_key)  # with its public key: no derivation per NSUB
        outcome, sub = await self._store.create_subscription(
            tok.token_id, cmd.smp_server, cmd.notifier_id, key, self._limits.sub_caps
        )
        if outcome is SubCreate.CONFLICT and key != cmd.notifier_key:  # the retry of one stored as sent
            outcome, sub = await self._store.create_subscription(   # (before this form, or imported)
                tok.token_id, cmd.smp_server, cmd.notifier_id, cmd.notifier_key, self._limits.sub_caps
            )
        if outcome is SubCreate.QUOTA:
            self._stats.incr(SUB_QUOTA_EXCEEDED)
            return P.Err(QUOTA)
        if outcome is SubCreate.CREATED and sub is not None:
            if tok.status.kind is TokenStatusKind.ACTIVE:  # others wait for TVFY (no connection)
                self._subscriber.subscribe(sub)
            self._stats.incr(SUB_CREATED)
            return P.IdSub(sub.sub_id)
        if outcome is SubCreate.EXISTS and sub is not None:
            return P.IdSub(sub.sub_id)  # retry after a lost response: idempotent, no resubscription
        return P.Err(AUTH)
