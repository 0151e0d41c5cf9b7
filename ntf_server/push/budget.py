"""The push policy in effect, as the notices' script needs it (README "Push policy").

The policy in effect is the one stored in Redis (admin API), else the config's ``[push]``. ``HiddenPushes``
keeps the stored document it last saw and the budgets parsed from it, per push provider; the pipeline passes
both with every batch of notices (store/notices.py NOTIFY), and the script decides only when that document is
still the stored one: otherwise it answers the stored one, ``seen`` takes it, and the batch is sent again.
So the policy costs no round trip of its own, and a change made on any instance is used by the next batch on
every instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from ntf_server.push.policy import Budget, PolicySettings
from ntf_server.store.budget import BudgetStore
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import PushProvider

ENVIRONMENT: Final = {
    PushProvider.APNS_PROD: "production",
    PushProvider.APNS_DEV: "development",
    PushProvider.APNS_TEST: "test",
}


def environment(provider: PushProvider) -> str:
    """The APNs environment whose budget applies (the null provider's: production's)."""
    return ENVIRONMENT.get(provider, "production")


class HiddenPushes:
    def __init__(self, policy: PolicyStore, fallback: PolicySettings, budgets: BudgetStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.fallback = fallback
        self.budgets = budgets
        self.clock = clock  # tests and benchmarks inject a fake clock
        self._raw: bytes | None = None  # the stored policy document last seen
        self._by_provider = self._of(fallback)

    def __repr__(self) -> str:
        return f"<HiddenPushes {self.budgets!r} {self.policy!r}>"

    @staticmethod
    def _of(settings: PolicySettings) -> Mapping[PushProvider, Budget]:
        return MappingProxyType({p: settings.for_environment(environment(p)) for p in PushProvider})

    @property
    def in_effect(self) -> tuple[Mapping[PushProvider, Budget], tuple[str, bytes | None]]:
        """The budgets per provider and (policy key, the document they came from) for the next decision."""
        return self._by_provider, (self.policy.key, self._raw)

    def seen(self, raw: bytes | None) -> None:
        """The stored document is ``raw`` (a script said so): decide by it from now on."""
        self._raw = raw
        self._by_provider = self._of(self.policy.parsed(raw) or self.fallback)

    async def settings(self) -> PolicySettings:
        return await self.policy.current() or self.fallback

    async def budget_for(self, provider: PushProvider) -> Budget:
        return (await self.settings()).for_environment(environment(provider))
