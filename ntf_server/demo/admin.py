"""The demo's only contact with the admin HTTP API: change the push policy, read the counters.

Contract: `PUT /v1/policy` with `Authorization: Bearer <token>` and a JSON body
`{"hidden_per_hour", "burst", "overflow", "environments": {...}}` answers 200 with the new policy;
`GET /v1/stats` answers JSON counters. `ADMIN_API_IN_BUILD` says whether this build serves it
(tests/test_demo.py checks it against what config.py accepts, so it cannot silently go stale); without it
the demo says so and changes nothing — it never pretends.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Final

import httpx

from ntf_server.config import AdminConfig, ConfigError

# Switch on when the admin API lands: config.py then accepts `admin.enabled = true`.
ADMIN_API_IN_BUILD: Final = True
NOT_AVAILABLE: Final = "admin API not available in this build"
TIMEOUT_S: Final = 5.0


def config_accepts_admin() -> bool:
    """Whether config.py accepts `admin.enabled = true` (it refuses it until the admin API exists)."""
    try:
        AdminConfig(enabled=True).validate("admin")
    except ConfigError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, for the admin API (its listener reports no port of its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class AdminApi:
    url: str  # http://127.0.0.1:<port>
    token: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def put_policy(self, hidden_per_hour: float, burst: int, overflow: str) -> dict[str, Any]:
        """The policy the server answers with; raises `AdminError` with the server's message otherwise."""
        body = {"hidden_per_hour": hidden_per_hour, "burst": burst, "overflow": overflow}
        return await self._call("PUT", "/v1/policy", body)

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/stats", None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as client:
                r = await client.request(method, path, json=body, headers=self._headers())
        except httpx.HTTPError as e:
            raise AdminError(f"{method} {path}: {e}") from e
        if r.status_code != 200:
            raise AdminError(f"{method} {path}: HTTP {r.status_code} {r.text.strip()[:200]}")
        data = r.json()
        if not isinstance(data, dict):
            raise AdminError(f"{method} {path}: expected a JSON object")
        return data


class AdminError(Exception):
    """The admin API did not do what was asked; the message says what it answered."""
