"""``GET|PUT /v1/policy``: the push policy, live (README "Push policy").

GET answers the settings in force: those stored in Redis (shared by every instance), else the config
file's ``[push]`` section. PUT names only the keys it changes (``{"overflow": "defer"}``, or
``{"environments": {"test": {"burst": 1}}}``); the result is validated as a whole
(``PolicySettings.from_json``), 400 with the reason when it is not usable, otherwise stored, logged once
with the old and the new values, and answered. Push workers on every instance read the stored settings,
so the next push uses them, without a restart.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ntf_server.observability.logevents import log_event
from ntf_server.push.policy import PolicyError, PolicySettings
from ntf_server.store.errors import StoreError
from ntf_server.store.policy import PolicyStore

log = logging.getLogger(__name__)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class PolicyApi:
    def __init__(self, store: PolicyStore, default: PolicySettings) -> None:
        self._store = store
        self._default = default  # the config file's [push] settings

    async def current(self) -> PolicySettings:
        return await self._store.get() or self._default  # StoreError when Redis fails or is away

    async def get(self, request: web.Request) -> web.Response:
        try:
            return web.json_response((await self.current()).to_json())
        except StoreError:
            return error(503, "the store is unavailable; try again")

    async def put(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body must be a JSON object, e.g. {\"overflow\": \"defer\"}")
        try:
            new = PolicySettings.from_json(body, await self.current())
            old = await self._store.put(new) or self._default
        except PolicyError as e:
            return error(400, str(e))
        except StoreError:
            return error(503, "the store is unavailable; the policy was not changed")
        before, after = _text(old), _text(new)
        if before == after:
            log_event(log, "policy.unchanged", policy=after)
        else:
            log_event(log, "policy.changed", before=before, after=after)
        return web.json_response(new.to_json())


def _text(settings: PolicySettings) -> str:
    return json.dumps(settings.to_json(), sort_keys=True, separators=(",", ":"))
