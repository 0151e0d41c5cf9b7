"""Apple's request rules as the simulator enforces them (APNS.md A.2, A.3, A.5, D).

`RequestChecker.check()` is pure apart from a cache of verified JWTs: it takes the decoded header list,
the body size and the connection's auth state and returns a `RuleVerdict` -- 200, or Apple's status and exact
reason string. Checks run in the order a request is parsed: duplicate headers, method, path, provider
token, topic, push type, priority, ids, body. Every limit comes from `limits.py` (Apple's documentation),
never from the client's constants, so a client with a wrong limit is caught here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apns.simulator import limits as apple

_JWT_CACHE_MAX: Final = 4096
_PRIORITY_VALUES: Final = frozenset(str(p).encode() for p in apple.PRIORITIES)  # exactly "1", "5", "10"


class ProviderKeyLike(Protocol):
    """What `SimulatorKey.from_provider_key` reads (`apns.jwt.ProviderKey` fits; the client is not imported)."""

    @property
    def key_id(self) -> str: ...
    @property
    def team_id(self) -> str: ...
    def public_key_pem(self) -> bytes: ...


@dataclass(frozen=True)
class SimulatorKey:
    """A provider key the simulator trusts; `topics` None means any topic."""

    key_id: str
    team_id: str
    public_key_pem: bytes = field(repr=False)
    topics: frozenset[str] | None = None

    @classmethod
    def from_provider_key(cls, key: ProviderKeyLike, topics: frozenset[str] | None = None) -> SimulatorKey:
        return cls(key.key_id, key.team_id, key.public_key_pem(), topics)


@dataclass
class AuthState:
    """Per connection: the team bound on the first accepted push and the last accepted token."""

    team_id: str | None = None
    token: bytes | None = None
    token_iat: int = 0


@dataclass(frozen=True)
class RuleVerdict:
    status: int
    reason: str | None = None
    token: str = ""
    topic: str = ""
    push_type: str | None = None  # an apns-push-type value (limits.PUSH_TYPES)
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

    def check(self, headers: Sequence[tuple[bytes, bytes]], body_len: int, auth: AuthState) -> RuleVerdict:
        h: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in h:
                return RuleVerdict(400, "DuplicateHeaders")
            h[name] = value
        if h.get(b":method") != apple.METHOD:
            return RuleVerdict(405, "MethodNotAllowed")
        path = h.get(b":path", b"")
        if not path.startswith(apple.PATH_PREFIX):
            return RuleVerdict(404, "BadPath")
        raw_token = path[len(apple.PATH_PREFIX) :]
        if not raw_token:
            return RuleVerdict(400, "MissingDeviceToken")
        if not apple.is_device_token(raw_token):
            return RuleVerdict(400, "BadDeviceToken")
        token = raw_token.decode().lower()
        key = self._check_auth(h.get(b"authorization"), auth)
        if isinstance(key, RuleVerdict):
            return key
        return self._check_fields(h, token, body_len, key)

    def _check_fields(self, h: dict[bytes, bytes], token: str, body_len: int, key: SimulatorKey) -> RuleVerdict:
        topic_b = h.get(b"apns-topic")
        if not topic_b:
            return RuleVerdict(400, "MissingTopic")
        topic = topic_b.decode(errors="replace")
        if key.topics is not None and apple.bare_topic(topic) not in key.topics:
            return RuleVerdict(400, "TopicDisallowed")
        push_type = _text(h.get(b"apns-push-type"))
        if push_type not in apple.PUSH_TYPES and (push_type is not None or self._require_push_type):
            return RuleVerdict(400, "InvalidPushType")
        if push_type is not None and not apple.topic_fits_push_type(topic, push_type):
            return RuleVerdict(400, "BadTopic")
        prio_b = h.get(b"apns-priority", str(apple.DEFAULT_PRIORITY).encode())
        if prio_b not in _PRIORITY_VALUES:
            return RuleVerdict(400, "BadPriority")
        priority = int(prio_b)
        required = apple.REQUIRED_PRIORITY.get(push_type or "")
        if required is not None and priority != required:
            return RuleVerdict(400, "BadPriority")  # background: "Using priority 10 is an error"
        apns_id = _text(h.get(b"apns-id"))
        if apns_id is not None and not apple.is_apns_id(apns_id):
            return RuleVerdict(400, "BadMessageId")
        exp_b = h.get(b"apns-expiration")
        if exp_b is not None and not exp_b.isdigit():
            return RuleVerdict(400, "BadExpirationDate")
        collapse = h.get(b"apns-collapse-id")
        if collapse is not None and len(collapse) > apple.COLLAPSE_ID_MAX_BYTES:
            return RuleVerdict(400, "BadCollapseId")
        if body_len == 0:
            return RuleVerdict(400, "PayloadEmpty")
        if body_len > apple.max_payload_bytes(push_type):
            return RuleVerdict(413, "PayloadTooLarge")
        bound = self.token_topics.get(token)
        if bound is not None and bound != topic:
            return RuleVerdict(400, "DeviceTokenNotForTopic")
        return RuleVerdict(
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

    def _check_auth(self, header: bytes | None, auth: AuthState) -> RuleVerdict | SimulatorKey:
        if header is None:
            return RuleVerdict(403, "MissingProviderToken")
        if not header.startswith(b"bearer "):
            return RuleVerdict(403, "InvalidProviderToken")
        raw = header[7:]
        parsed = self._verify(raw)
        if isinstance(parsed, str):
            return RuleVerdict(403, parsed)
        now = self._clock()
        if now - parsed.iat > apple.TOKEN_MAX_AGE_S:
            return RuleVerdict(403, "ExpiredProviderToken")
        if parsed.iat - now > apple.TOKEN_MAX_FUTURE_S:
            return RuleVerdict(403, "InvalidProviderToken")  # iat from the future
        if auth.team_id is not None and auth.team_id != parsed.key.team_id:
            return RuleVerdict(403, "UnrelatedKeyIdInToken")  # one developer account per connection
        new_token = auth.token is not None and raw != auth.token
        if new_token and parsed.iat - auth.token_iat < apple.TOKEN_MIN_REFRESH_S:
            return RuleVerdict(429, "TooManyProviderTokenUpdates")
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
            key = self._keys.get(kid) if apple.is_key_or_team_id(kid, apple.KEY_ID_LEN) else None
            if header.get("alg") != apple.JWT_ALG or key is None:
                result = "InvalidProviderToken"
            else:
                claims = pyjwt.decode(
                    raw,
                    self._pub[key.key_id],
                    algorithms=[apple.JWT_ALG],
                    options={"verify_iat": False, "require": ["iss", "iat"]},
                )
                iat = claims.get("iat")
                iss = claims.get("iss")
                if iss == key.team_id and apple.is_key_or_team_id(iss, apple.TEAM_ID_LEN) and isinstance(iat, int):
                    result = _Jwt(key, iat)
                else:
                    result = "InvalidProviderToken"
        except pyjwt.PyJWTError:
            result = "InvalidProviderToken"
        if len(self._jwt_cache) >= _JWT_CACHE_MAX:
            self._jwt_cache.clear()
        self._jwt_cache[raw] = result
        return result


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value is not None else None
