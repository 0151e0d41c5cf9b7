"""Bearer-token authentication of the admin API.

The token comes from ``admin.token_file`` (written by ``ntf-server init``) or ``admin.token_env``; it is
compared with ``hmac.compare_digest`` (time independent of where the first difference is), so a client
cannot find it byte by byte from response times. Missing or wrong → 401 with ``WWW-Authenticate``.
Paths in ``public`` need no token (``/healthz``, for load balancers and systemd checks; ``/metrics`` when
``admin.metrics_public``). An optional second token (``admin.read_token_file``) is read-only: it may GET
everything but change nothing (403), so the scraper that holds it cannot ``PUT /v1/policy``.
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


READ_METHODS = frozenset({"GET", "HEAD"})


def bearer_auth(token: bytes, public: Collection[str], read_token: bytes | None = None) -> Middleware:
    expected = b"Bearer " + token
    read_only = b"Bearer " + read_token if read_token is not None else None
    if read_token is not None and hmac.compare_digest(read_token, token):
        raise TokenError("the read-only admin token must differ from the admin token")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if hmac.compare_digest(given, expected):
            return await handler(request)
        if read_only is not None and hmac.compare_digest(given, read_only):
            if request.method in READ_METHODS:
                return await handler(request)
            raise web.HTTPForbidden(text='{"error": "the read-only token cannot change anything (admin.token_file)"}',
                                    content_type="application/json")
        why = "a bearer token is required" if not given else "the bearer token is wrong"
        raise web.HTTPUnauthorized(
            text=f'{{"error": "{why} (admin.token_file)"}}', content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="ntf-server admin"'},
        )

    return middleware
