"""Apple's request rules as the simulator enforces them (spec apns.md A.2, A.3, A.5, D).

`RequestChecker.check()` is pure apart from a cache of verified JWTs: it takes the decoded header list,
the body and the connection's auth state and returns a `Verdict` -- 200, or Apple's status and exact reason
string. Checks run in the order a request is parsed: method, path, duplicate headers, provider token,
topic, push type, priority, ids, body.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apns.jwt import MAX_TOKEN_AGE_S, MIN_REFRESH_INTERVAL_S, ProviderKey
from apns.payload import MAX_COLLAPSE_ID_BYTES, PushType, max_payload_bytes

_PUSH_TYPES: Final = {t.value: t for t in PushType}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_PATH_PREFIX: Final = b"/3/device/"
_JWT_CACHE_MAX: Final = 4096


@dataclass(frozen=True)
class SimulatorKey:
    """A provider key the simulator trusts; `topics` None means any topic."""

    key_id: str
    team_id: str
    public_key_pem: bytes = field(repr=False)
    topics: frozenset[str] | None = None

    @classmethod
    def from_provider_key(cls, key: ProviderKey, topics: frozenset[str] | None = None) -> SimulatorKey:
        return cls(key.key_id, key.team_id, key.public_key_pem(), topics)


@dataclass
class AuthState:
    """Per connection: the team bound on the first accepted push and the last accepted token."""

    team_id: str | None = None
    token: bytes | None = None
    token_iat: int = 0


@dataclass(frozen=True)
class Verdict:
    status: int
    reason: str | None = None
    token: str = ""
    topic: str = ""
    push_type: PushType | None = None
    priority: int | None = None
    expiration: int | None = None
    collapse_id: str | None = None
    apns_id: str | None = None


@dataclass(frozen=True)
class _Jwt:
    key: SimulatorKey
    iat: int


class RequestChecker:
    def __init__(
        self,
        keys: Sequence[SimulatorKey],
        clock: Callable[[], float] = time.time,
        require_push_type: bool = True,
    ) -> None:
        self._keys = {k.key_id: k for k in keys}
        self._pub: dict[str, ec.EllipticCurvePublicKey] = {}
        for k in keys:
            pub = serialization.load_pem_public_key(k.public_key_pem)
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            self._pub[k.key_id] = pub
        self._clock = clock
        self._require_push_type = require_push_type
        self._jwt_cache: dict[bytes, _Jwt | str] = {}
        self.token_topics: dict[str, str] = {}  # device token -> the only topic it accepts

    def check(self, headers: Sequence[tuple[bytes, bytes]], body_len: int, auth: AuthState) -> Verdict:
        h: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in h:
                return Verdict(400, "DuplicateHeaders")
            h[name] = value
        if h.get(b":method") != b"POST":
            return Verdict(405, "MethodNotAllowed")
        path = h.get(b":path", b"")
        if not path.startswith(_PATH_PREFIX):
            return Verdict(404, "BadPath")
        raw_token = path[len(_PATH_PREFIX) :]
        if not raw_token:
            return Verdict(400, "MissingDeviceToken")
        if len(raw_token) % 2 or not set(raw_token) <= _HEX:
            return Verdict(400, "BadDeviceToken")
        token = raw_token.decode().lower()
        key = self._check_auth(h.get(b"authorization"), auth)
        if isinstance(key, Verdict):
            return key
        return self._check_fields(h, token, body_len, key)

    def _check_fields(self, h: dict[bytes, bytes], token: str, body_len: int, key: SimulatorKey) -> Verdict:
        topic_b = h.get(b"apns-topic")
        if not topic_b:
            return Verdict(400, "MissingTopic")
        topic = topic_b.decode(errors="replace")
        if key.topics is not None and _base_topic(topic) not in key.topics:
            return Verdict(400, "TopicDisallowed")
        type_b = h.get(b"apns-push-type")
        push_type = _PUSH_TYPES.get(type_b.decode(errors="replace")) if type_b is not None else None
        if (type_b is not None and push_type is None) or (type_b is None and self._require_push_type):
            return Verdict(400, "InvalidPushType")
        if push_type is PushType.VOIP and not topic.endswith(".voip"):
            return Verdict(400, "BadTopic")
        prio_b = h.get(b"apns-priority", b"10")
        if prio_b not in (b"1", b"5", b"10"):
            return Verdict(400, "BadPriority")
        priority = int(prio_b)
        if push_type is PushType.BACKGROUND and priority != 5:
            return Verdict(400, "BadPriority")  # Apple: "Using priority 10 is an error"
        apns_id = _text(h.get(b"apns-id"))
        if apns_id is not None and not is_uuid(apns_id):
            return Verdict(400, "BadMessageId")
        exp_b = h.get(b"apns-expiration")
        if exp_b is not None and not exp_b.isdigit():
            return Verdict(400, "BadExpirationDate")
        collapse = h.get(b"apns-collapse-id")
        if collapse is not None and len(collapse) > MAX_COLLAPSE_ID_BYTES:
            return Verdict(400, "BadCollapseId")
        if body_len == 0:
            return Verdict(400, "PayloadEmpty")
        if body_len > max_payload_bytes(push_type or PushType.ALERT):
            return Verdict(413, "PayloadTooLarge")
        bound = self.token_topics.get(token)
        if bound is not None and bound != topic:
            return Verdict(400, "DeviceTokenNotForTopic")
        return Verdict(
            200,
            None,
            token,
            topic,
            push_type,
            priority,
            int(exp_b) if exp_b is not None else None,
            _text(collapse),
            apns_id,
        )

    def _check_auth(self, header: bytes | None, auth: AuthState) -> Verdict | SimulatorKey:
        if header is None:
            return Verdict(403, "MissingProviderToken")
        if not header.startswith(b"bearer "):
            return Verdict(403, "InvalidProviderToken")
        raw = header[7:]
        parsed = self._verify(raw)
        if isinstance(parsed, str):
            return Verdict(403, parsed)
        now = self._clock()
        if now - parsed.iat > MAX_TOKEN_AGE_S:
            return Verdict(403, "ExpiredProviderToken")
        if parsed.iat - now > MAX_TOKEN_AGE_S:
            return Verdict(403, "InvalidProviderToken")  # iat from the future
        if auth.team_id is not None and auth.team_id != parsed.key.team_id:
            return Verdict(403, "UnrelatedKeyIdInToken")  # one developer account per connection
        new_token = auth.token is not None and raw != auth.token
        if new_token and parsed.iat - auth.token_iat < MIN_REFRESH_INTERVAL_S:
            return Verdict(429, "TooManyProviderTokenUpdates")
        auth.team_id = parsed.key.team_id
        auth.token, auth.token_iat = raw, parsed.iat
        return parsed.key

    def _verify(self, raw: bytes) -> _Jwt | str:
        """Signature, alg, kid, iss: checked once per distinct token string (Apple reuses them too)."""
        hit = self._jwt_cache.get(raw)
        if hit is not None:
            return hit
        result: _Jwt | str
        try:
            header = pyjwt.get_unverified_header(raw)
            kid = header.get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if header.get("alg") != "ES256" or key is None:
                result = "InvalidProviderToken"
            else:
                claims = pyjwt.decode(
                    raw,
                    self._pub[key.key_id],
                    algorithms=["ES256"],
                    options={"verify_iat": False, "require": ["iss", "iat"]},
                )
                iat = claims.get("iat")
                if claims.get("iss") == key.team_id and isinstance(iat, int):
                    result = _Jwt(key, iat)
                else:
                    result = "InvalidProviderToken"
        except pyjwt.PyJWTError:
            result = "InvalidProviderToken"
        if len(self._jwt_cache) >= _JWT_CACHE_MAX:
            self._jwt_cache.clear()
        self._jwt_cache[raw] = result
        return result


def _base_topic(topic: str) -> str:
    """Bundle id without Apple's push-type suffixes (.voip, .complication, ...)."""
    for suffix in (".voip", ".complication", ".voip-ptt", ".location-query", ".pushkit.fileprovider"):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    if ".push-type." in topic:
        return topic.split(".push-type.", maxsplit=1)[0]
    return topic


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value is not None else None


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False
