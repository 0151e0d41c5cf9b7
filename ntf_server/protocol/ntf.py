"""NTF protocol commands and responses (§4.1, §4.2, §2.5).

Parsing follows ``parseProtocol``: the tag is everything before the first space; the parameters parser
starts with that space and must consume the rest exactly. Unknown tag → ``CMD UNKNOWN``; anything else
malformed → ``CMD SYNTAX``. Parse results are values, never exceptions: ``parse_command`` returns either a
command or the ``ErrorType`` to answer with. Keys travel as DER bytes (validated while parsing, so a
command that parsed carries well-formed keys of an accepted type).

Why one module of about 350 lines: every NTF command and response with its parser and encoder, read against
§4.1–4.2 as one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, assert_never

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import (
    CodecError,
    Reader,
    SMPServer,
    dec_smp_server,
    enc_short,
    enc_smp_server,
    enc_word16,
)
from ntf_server.protocol.error_types import (
    BLOCK,
    SESSION,
    CmdError,
    CommandError,
    ErrorType,
    dec_error,
    enc_error,
)
from ntf_server.protocol.framing import NTF_VERSION_INVALID_REASON, RawTransmission, THParams
from ntf_server.protocol.ntf_types import (  # re-exported: commands and responses carry them
    MAX_ERR_TEXT as MAX_ERR_TEXT,
    DeviceToken as DeviceToken,
    InvalidReason as InvalidReason,
    PushProvider as PushProvider,
    SubStatus as SubStatus,
    SubStatusKind as SubStatusKind,
    TokenStatus as TokenStatus,
    TokenStatusKind as TokenStatusKind,
)

MIN_CRON_INTERVAL_MIN: Final = 20


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class TNew:
    TAG: ClassVar[bytes] = b"TNEW"
    token: DeviceToken
    verify_key: bytes  # SPKI DER: Ed25519, Ed448 or X25519
    dh_key: bytes  # SPKI DER X25519


@dataclass(frozen=True, slots=True)
class TVfy:
    TAG: ClassVar[bytes] = b"TVFY"
    code: bytes


@dataclass(frozen=True, slots=True)
class TChk:
    TAG: ClassVar[bytes] = b"TCHK"


@dataclass(frozen=True, slots=True)
class TRpl:
    TAG: ClassVar[bytes] = b"TRPL"
    token: DeviceToken


@dataclass(frozen=True, slots=True)
class TDel:
    TAG: ClassVar[bytes] = b"TDEL"


@dataclass(frozen=True, slots=True)
class TCrn:
    TAG: ClassVar[bytes] = b"TCRN"
    minutes: int


@dataclass(frozen=True, slots=True)
class SNew:
    TAG: ClassVar[bytes] = b"SNEW"
    token_id: bytes
    smp_server: SMPServer
    notifier_id: bytes
    notifier_key: bytes  # PKCS#8 DER: Ed25519, Ed448 or X25519

    def __repr__(self) -> str:
        return f"SNew(<token>, {self.smp_server!r}, <notifier id>, <key>)"


@dataclass(frozen=True, slots=True)
class SChk:
    TAG: ClassVar[bytes] = b"SCHK"


@dataclass(frozen=True, slots=True)
class SDel:
    TAG: ClassVar[bytes] = b"SDEL"


@dataclass(frozen=True, slots=True)
class Ping:
    TAG: ClassVar[bytes] = b"PING"


NtfCommand = TNew | TVfy | TChk | TRpl | TDel | TCrn | SNew | SChk | SDel | Ping


def encode_command(c: NtfCommand) -> bytes:
    match c:
        case TNew(token, verify_key, dh_key):
            return b"TNEW T" + token.encode() + enc_short(verify_key) + enc_short(dh_key)
        case TVfy(code):
            return b"TVFY " + enc_short(code)
        case TRpl(token):
            return b"TRPL " + token.encode()
        case TCrn(minutes):
            return b"TCRN " + enc_word16(minutes)
        case SNew(token_id, server, notifier_id, key):
            body = enc_short(token_id) + enc_smp_server(server) + enc_short(notifier_id) + enc_short(key)
            return b"SNEW S" + body
        case TChk() | TDel() | SChk() | SDel() | Ping():
            return c.TAG
        case _:
            assert_never(c)


def _dec_tnew(r: Reader) -> TNew:
    r.char(b"T")
    token = DeviceToken.decode(r)
    verify_key = r.short()
    crypto.decode_public_key(verify_key)
    dh_key = r.short()
    crypto.decode_x25519_public_key(dh_key)
    return TNew(token, verify_key, dh_key)


def _dec_snew(r: Reader) -> SNew:
    r.char(b"S")
    token_id = r.short()
    server = dec_smp_server(r)
    notifier_id = r.short()
    if not notifier_id:  # 1..255 bytes (the length prefix caps it at 255); empty: a syntax error, not STORE
        raise CodecError("empty notifier id")
    key = r.short()
    crypto.decode_private_key(key)
    return SNew(token_id, server, notifier_id, key)


_NO_PARAMS: Final[dict[bytes, NtfCommand]] = {
    b"TCHK": TChk(), b"TDEL": TDel(), b"SCHK": SChk(), b"SDEL": SDel(), b"PING": Ping()
}


def parse_command(data: bytes) -> NtfCommand | ErrorType:
    tag, _, _ = data.partition(b" ")
    r = Reader(data[len(tag) :])
    try:
        if tag in _NO_PARAMS:
            r.end()
            return _NO_PARAMS[tag]
        if tag not in (b"TNEW", b"TVFY", b"TRPL", b"TCRN", b"SNEW"):
            return CmdError(CommandError.UNKNOWN)
        r.space()
        cmd: NtfCommand
        if tag == b"TNEW":
            cmd = _dec_tnew(r)
        elif tag == b"SNEW":
            cmd = _dec_snew(r)
        elif tag == b"TVFY":
            cmd = TVfy(r.short())
        elif tag == b"TRPL":
            cmd = TRpl(DeviceToken.decode(r))
        else:
            cmd = TCrn(r.word16())
        r.end()
        return cmd
    except CodecError:
        return CmdError(CommandError.SYNTAX)


def check_credentials(has_auth: bool, entity_id: bytes, c: NtfCommand) -> CmdError | None:
    """``checkCredentials`` (§4.1): which commands need auth and an entity."""
    match c:
        case TNew() | SNew():
            if not has_auth:
                return CmdError(CommandError.NO_AUTH)
            return CmdError(CommandError.HAS_AUTH) if entity_id else None
        case Ping():
            return CmdError(CommandError.HAS_AUTH) if has_auth or entity_id else None
        case TVfy() | TChk() | TRpl() | TDel() | TCrn() | SChk() | SDel():
            return None if has_auth and entity_id else CmdError(CommandError.NO_AUTH)
        case _:
            assert_never(c)


# ---------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class IdTkn:
    TAG: ClassVar[bytes] = b"IDTKN"
    token_id: bytes
    server_dh_key: bytes  # SPKI DER X25519


@dataclass(frozen=True, slots=True)
class IdSub:
    TAG: ClassVar[bytes] = b"IDSUB"
    sub_id: bytes


@dataclass(frozen=True, slots=True)
class Ok:
    TAG: ClassVar[bytes] = b"OK"


@dataclass(frozen=True, slots=True)
class Err:
    TAG: ClassVar[bytes] = b"ERR"
    error: ErrorType


@dataclass(frozen=True, slots=True)
class Tkn:
    TAG: ClassVar[bytes] = b"TKN"
    status: TokenStatus


@dataclass(frozen=True, slots=True)
class Sub:
    TAG: ClassVar[bytes] = b"SUB"
    status: SubStatus


@dataclass(frozen=True, slots=True)
class Pong:
    TAG: ClassVar[bytes] = b"PONG"


NtfResponse = IdTkn | IdSub | Ok | Err | Tkn | Sub | Pong


def encode_response(resp: NtfResponse, version: int) -> bytes:
    match resp:
        case IdTkn(token_id, key):
            return b"IDTKN " + enc_short(token_id) + enc_short(key)
        case IdSub(sub_id):
            return b"IDSUB " + enc_short(sub_id)
        case Err(error):
            return b"ERR " + enc_error(error)
        case Tkn(status):
            return b"TKN " + status.to_text(with_reason=version >= NTF_VERSION_INVALID_REASON).encode()
        case Sub(status):
            return b"SUB " + status.to_text().encode()
        case Ok() | Pong():
            return resp.TAG
        case _:
            assert_never(resp)


def parse_response(data: bytes) -> NtfResponse:
    """Client-side parser (used by the simulated device); raises ``CodecError``."""
    tag, _, _ = data.partition(b" ")
    r = Reader(data[len(tag) :])
    if tag in (b"OK", b"PONG"):
        r.end()
        return Ok() if tag == b"OK" else Pong()
    r.space()
    resp: NtfResponse
    if tag == b"IDTKN":
        resp = IdTkn(r.short(), r.short())
    elif tag == b"IDSUB":
        resp = IdSub(r.short())
    elif tag == b"ERR":
        resp = Err(dec_error(r))
    elif tag == b"TKN":
        resp = Tkn(TokenStatus.from_text(r.tail().decode("ascii", "replace")))
    elif tag == b"SUB":
        resp = Sub(SubStatus.from_text(r.tail().decode("utf-8", "replace")))
    else:
        raise CodecError("unknown NTF response")
    r.end()
    return resp


def check_response_entity(resp: NtfResponse, entity_id: bytes) -> bool:
    """Client rule (§2.5): IDTKN/IDSUB/PONG have no entity; OK/TKN/SUB need one; ERR any."""
    match resp:
        case IdTkn() | IdSub() | Pong():
            return not entity_id
        case Ok() | Tkn() | Sub():
            return bool(entity_id)
        case Err():
            return True
        case _:
            assert_never(resp)


# ---------------------------------------------------------------- server-side request decoding


@dataclass(frozen=True, slots=True)
class NtfRequest:
    """A transmission that parsed and passed the credential checks; its auth is not verified yet."""

    raw: RawTransmission
    command: NtfCommand


@dataclass(frozen=True, slots=True)
class NtfReject:
    """A transmission answered with an error before any lookup (``tDecodeServer`` + ``checkCredentials``)."""

    corr_id: bytes
    entity_id: bytes
    error: ErrorType


def decode_request(params: THParams, item: RawTransmission | CodecError) -> NtfRequest | NtfReject:
    """Parse errors → ``BLOCK`` (empty corrId); wrong session → ``SESSION``; both with empty entity.

    Command and credential errors echo the request's corrId and entityId (spec errata 4, T8–T12).
    """
    if isinstance(item, CodecError):
        return NtfReject(b"", b"", BLOCK)
    raw = item
    if not params.implied_session_id and raw.session_id != params.session_id:
        return NtfReject(raw.corr_id, b"", SESSION)
    if len(raw.auth) not in VALID_AUTH_LENGTHS:
        return NtfReject(raw.corr_id, b"", BLOCK)
    parsed = parse_command(raw.command)
    if not isinstance(parsed, NtfCommand):
        return NtfReject(raw.corr_id, raw.entity_id, parsed)
    bad = check_credentials(bool(raw.auth), raw.entity_id, parsed)
    if bad is not None:
        return NtfReject(raw.corr_id, raw.entity_id, bad)
    return NtfRequest(raw, parsed)


# ``decodeTAuthBytes``: none, an X25519 authenticator, or an Ed25519 / Ed448 signature.
VALID_AUTH_LENGTHS: Final = frozenset(
    {0, crypto.AUTHENTICATOR_LEN, crypto.ED25519_SIG_LEN, crypto.ED448_SIG_LEN}
)
