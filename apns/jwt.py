"""ES256 provider tokens (APNS.md A.3), one token shared by every connection of a key.

Apple: refresh "no more than once every 20 minutes and no less than once every 60 minutes"; a token whose
`iat` is over an hour old gets 403 ExpiredProviderToken, a new token more often than every 20 minutes on a
connection gets 429 TooManyProviderTokenUpdates. So a token is reused until `refresh_after_s` (default
50 min) and a forced refresh (after APNs called it expired/invalid) happens at most once per generation,
however many requests failed at the same moment. The clock is injected so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_REFRESH_AFTER_S: Final = 50 * 60
MIN_REFRESH_INTERVAL_S: Final = 20 * 60
MAX_TOKEN_AGE_S: Final = 60 * 60

Clock = Callable[[], float]


@dataclass(frozen=True)
class ProviderKey:
    """An Apple .p8 signing key with its 10-character key id and team id. The PEM never appears in reprs."""

    key_pem: bytes = field(repr=False)
    key_id: str
    team_id: str

    def __post_init__(self) -> None:
        if not self.key_id or not self.team_id:
            raise ValueError("key_id and team_id are required")
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("APNs keys are EC P-256 (ES256) PKCS#8 .p8 files")

    @classmethod
    def from_file(cls, path: str | Path, key_id: str, team_id: str) -> ProviderKey:
        return cls(Path(path).read_bytes(), key_id, team_id)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def public_key_pem(self) -> bytes:
        return (
            self.private_key()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )


def generate_test_key(key_id: str = "TESTKEY001", team_id: str = "TESTTEAM01") -> ProviderKey:
    """A fresh P-256 key in Apple's .p8 format (PKCS#8 PEM) for tests and the demo."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ProviderKey(pem, key_id, team_id)


class TokenProvider:
    """Mints and caches the `authorization` header value for one key."""

    def __init__(
        self,
        key: ProviderKey,
        *,
        clock: Clock = time.time,
        refresh_after_s: float = DEFAULT_REFRESH_AFTER_S,
    ) -> None:
        if not MIN_REFRESH_INTERVAL_S <= refresh_after_s < MAX_TOKEN_AGE_S:
            raise ValueError("refresh_after_s must be within [20 min, 60 min)")
        self._key = key
        self._signer = key.private_key()
        self._clock = clock
        self._refresh_after_s = refresh_after_s
        self._issued_at: float | None = None
        self._header = b""
        self.generation = 0  # bumps on every new token; lets concurrent failures refresh only once
        self.minted = 0

    def header(self) -> bytes:
        """`bearer <jwt>`, reused until it is `refresh_after_s` old."""
        now = self._clock()
        if self._issued_at is None or now - self._issued_at >= self._refresh_after_s:
            self._mint(now)
        return self._header

    def force_refresh(self, seen_generation: int) -> None:
        """APNs refused the token of `seen_generation`: mint a new one unless someone already did."""
        if seen_generation == self.generation:
            self._mint(self._clock())

    def _mint(self, now: float) -> None:
        token = pyjwt.encode(
            {"iss": self._key.team_id, "iat": int(now)},
            self._signer,
            algorithm="ES256",
            headers={"kid": self._key.key_id, "typ": None},  # Apple's header is exactly alg + kid
        )
        self._header = b"bearer " + token.encode()
        self._issued_at = now
        self.generation += 1
        self.minted += 1

    def __repr__(self) -> str:
        return f"<TokenProvider kid={self._key.key_id} generation={self.generation}>"
