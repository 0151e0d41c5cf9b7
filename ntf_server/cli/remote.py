"""The admin API from the command line (``ntf-server stats``, ``ntf-server policy``): httpx calls, with
every failure turned into one sentence that says what to do (``RemoteError``)."""

from __future__ import annotations

import ipaddress
from typing import Any, Final

import httpx

from ntf_server.admin.auth import clean_token
from ntf_server.config import Config, ConfigError

TIMEOUT_S: Final = 10.0
_ANY: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (mapping, not binding)


class RemoteError(Exception):
    """The admin API could not be used; the message is for the operator."""


def base_url(config: Config) -> str:
    host = _ANY.get(config.admin.bind, config.admin.bind)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"http://{host}:{config.admin.port}"


class AdminClient:
    def __init__(self, config: Config, *, transport: httpx.BaseTransport | None = None) -> None:
        a = config.admin
        if not a.enabled:
            raise RemoteError("the admin API is disabled in the config (admin.enabled = false)")
        if a.port == 0:
            raise RemoteError("admin.port is 0 (any free port): set a fixed port to use this command")
        try:
            token = clean_token(a.token().read())
        except (ConfigError, ValueError) as e:
            raise RemoteError(f"cannot read the admin token: {e}") from e
        self._where = a.token().describe()
        self.url = base_url(config)
        self._http = httpx.Client(base_url=self.url, timeout=TIMEOUT_S, transport=transport,
                                  headers={"Authorization": f"Bearer {token.decode()}"})

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def put(self, path: str, body: object) -> Any:
        return self._call("PUT", path, body)

    def _call(self, method: str, path: str, body: object) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.ConnectError as e:
            raise RemoteError(f"cannot reach the admin API at {self.url}: is the server running "
                              "(ntf-server start)?") from e
        except httpx.TimeoutException as e:
            raise RemoteError(f"the admin API at {self.url} did not answer within {TIMEOUT_S:g} s") from e
        except httpx.HTTPError as e:
            raise RemoteError(f"admin API at {self.url}: {e}") from e
        if resp.status_code == 401:
            raise RemoteError(f"the admin API at {self.url} refused the token ({self._where}): is this the "
                              "config directory of the running server?")
        try:
            data = resp.json()
        except ValueError:
            raise RemoteError(f"admin API at {self.url}: unexpected answer (HTTP {resp.status_code}): is "
                              "another program using that port?") from None
        if resp.status_code != 200:
            message = data.get("error") if isinstance(data, dict) else None
            raise RemoteError(str(message or f"HTTP {resp.status_code}"))
        return data
