"""The push policy in Redis (key ``<prefix>policy``): one JSON document, shared by every instance.

Written only by the admin API (``put``); read by the push service. A missing key means "the config file's
``[push]`` settings", so a fresh data set needs no write. The stored document was validated when written,
and is validated again when read: a hand-edited key that no longer parses is reported, not used.
"""

from __future__ import annotations

import json
import logging

from ntf_server.observability.logevents import log_event
from ntf_server.policy_types import PolicyError, PolicySettings
from ntf_server.store.dataset import DataSet

log = logging.getLogger(__name__)


class PolicyStore:
    def __init__(self, dataset: DataSet) -> None:
        """``dataset``: the store's (``RedisStore.dataset``): every call passes its health switch."""
        self._d = dataset
        self.key = f"{dataset.keys.prefix}policy"
        self._seen: tuple[bytes | None, PolicySettings | None] = (None, None)

    def __repr__(self) -> str:
        return f"<PolicyStore {self.key}>"

    async def get(self) -> PolicySettings | None:
        """The stored settings, or None when none were ever set (or the stored ones are unusable)."""
        raw = await self._d.call(self._d.r.get, self.key)
        return None if raw is None else self._parse(raw)

    async def current(self) -> PolicySettings | None:
        """As ``get``, read from Redis on every call (so a change is used by the next push on every
        instance) but parsed only when the stored document changed: one GET per push."""
        return self.parsed(await self.raw())

    async def raw(self) -> bytes | None:
        """The stored document as it is (None when none)."""
        raw = await self._d.call(self._d.r.get, self.key)  # read per push: fails fast while Redis is away
        return raw if isinstance(raw, bytes) and raw else None

    def parsed(self, raw: bytes | None) -> PolicySettings | None:
        """``raw`` parsed (None when None or unusable), parsing again only when it changed."""
        if raw is None:
            return None
        if raw != self._seen[0]:
            self._seen = (raw, self._parse(raw))
        return self._seen[1]

    async def put(self, settings: PolicySettings) -> PolicySettings | None:
        """Store ``settings`` (atomically replacing the old document); returns the previous settings."""
        with self._d.guard():
            old = await self._d.r.set(self.key, json.dumps(settings.to_json(), sort_keys=True), get=True)
        return self._parse(old) if isinstance(old, bytes | str) else None

    async def clear(self) -> None:
        """Back to the config file's settings."""
        await self._d.call(self._d.r.delete, self.key)

    def _parse(self, raw: bytes | str) -> PolicySettings | None:
        try:
            return PolicySettings.from_json(json.loads(raw))
        except (PolicyError, ValueError) as e:
            log_event(log, "policy.stored_unusable", key=self.key, error=str(e))
            return None
