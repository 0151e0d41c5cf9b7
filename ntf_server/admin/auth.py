"""Bearer-token authentication of the admin API.

The token comes from ``admin.token_file`` (written by ``ntf-server init``) or ``admin.token_env``; it is
compared with ``hmac.compare_digest`` (time independent of where the first difference is), so a client
cannot find it byte by byte from response times. Missing or wrong → 401 with ``WWW-Authenticate``.
Paths in ``public`` need no token (``/healthz``, for load balancers and systemd checks; ``/metrics`` when
``admin.metrics_public``).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

MIN_TOKEN_BYTES = 16


class TokenError(ValueError):
    """The configured token cannot be used; the message says why."""


def clean_token(raw: bytes) -> bytes:
    token = raw.strip()
    if len(token) < MIN_TOKEN_BYTES:
        raise TokenError(f"the admin token must be at least {MIN_TOKEN_BYTES} characters")
    return token


def bearer_auth(token: bytes, public: Collection[str]) -> Middleware:
    expected = b"Bearer " + token

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            why = "a bearer token is required" if not given else "the bearer token is wrong"
            raise web.HTTPUnauthorized(
                text=f'{{"error": "{why} (admin.token_file)"}}', content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="ntf-server admin"'},
            )
        return await handler(request)

    return middleware
