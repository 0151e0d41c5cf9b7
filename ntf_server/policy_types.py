"""The push policy's types (README "Push policy"): its settings and their JSON form, and what a decision can
be. Pure: no I/O. Kept out of `push/` so the store, which persists the settings and makes the decisions
atomically in Lua (store/policy.py, store/budget.py, store/notices.py), imports nothing of the push service;
the GCRA itself, in Python, is push/policy.py's.

JSON form (``GET|PUT /v1/policy``)::

    {"hidden_per_hour": 3, "burst": 3, "overflow": "alert",
     "environments": {"test": {"hidden_per_hour": 0}}}

``environments`` overrides the default per APNs environment (``production``, ``development``, ``test``);
an override names only the keys it changes, the rest follow the default. ``hidden_per_hour = 0`` is
SimpleX parity: every message notification is the production alert.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from ntf_server.config import Overflow, PushConfig

ENVIRONMENTS: Final = ("production", "development", "test")
MAX_HIDDEN_PER_HOUR: Final = 3600.0  # one a second: far above what Apple tolerates, a bound against typos
MAX_BURST: Final = 100
_KEYS: Final = ("hidden_per_hour", "burst", "overflow")


class PolicyError(ValueError):
    """Settings that cannot be used; the message says what is wrong, for the operator."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Per device token: ``burst`` hidden pushes back to back, refilled at ``hidden_per_hour``."""

    hidden_per_hour: float = 3.0
    burst: int = 3
    overflow: Overflow = Overflow.ALERT

    def __post_init__(self) -> None:
        if not (isinstance(self.hidden_per_hour, int | float) and not isinstance(self.hidden_per_hour, bool)):
            raise PolicyError("hidden_per_hour must be a number")
        if not math.isfinite(self.hidden_per_hour) or not 0 <= self.hidden_per_hour <= MAX_HIDDEN_PER_HOUR:
            raise PolicyError(f"hidden_per_hour must be between 0 and {MAX_HIDDEN_PER_HOUR:g}")
        if not isinstance(self.burst, int) or isinstance(self.burst, bool) or not 1 <= self.burst <= MAX_BURST:
            raise PolicyError(f"burst must be a whole number between 1 and {MAX_BURST}")
        if not isinstance(self.overflow, Overflow):
            raise PolicyError("overflow must be one of: " + ", ".join(o.value for o in Overflow))

    @property
    def parity(self) -> bool:
        """SimpleX parity mode: no hidden pushes at all."""
        return self.hidden_per_hour == 0

    def to_json(self) -> dict[str, Any]:
        return {"hidden_per_hour": self.hidden_per_hour, "burst": self.burst, "overflow": self.overflow.value}


@dataclass(frozen=True, slots=True)
class PolicySettings:
    default: Budget = field(default_factory=Budget)
    # environment name → the keys it overrides (validated against the default when set)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def for_environment(self, env: str) -> Budget:
        over = self.overrides.get(env)
        return _apply(self.default, over) if over else self.default

    @classmethod
    def from_config(cls, cfg: PushConfig) -> PolicySettings:
        return cls(Budget(cfg.hidden_per_hour, cfg.burst, cfg.overflow))

    def to_json(self) -> dict[str, Any]:
        out = self.default.to_json()
        if self.overrides:
            out["environments"] = {env: dict(over) for env, over in sorted(self.overrides.items())}
        return out

    @classmethod
    def from_json(cls, obj: object, base: PolicySettings | None = None) -> PolicySettings:
        """Parse and validate; keys left out keep ``base``'s values (a PUT may name one key).
        Raises PolicyError saying what is wrong."""
        if not isinstance(obj, dict):
            raise PolicyError("the policy must be a JSON object")
        unknown = set(obj) - {*_KEYS, "environments"}
        if unknown:
            raise PolicyError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        base = base or cls()
        default = _apply(base.default, {k: obj[k] for k in _KEYS if k in obj})
        envs = obj.get("environments", dict(base.overrides))
        if not isinstance(envs, dict):
            raise PolicyError("environments must be an object")
        overrides: dict[str, Mapping[str, Any]] = {}
        for env, over in envs.items():
            if env not in ENVIRONMENTS:
                raise PolicyError(f"unknown environment {env!r}: use {', '.join(ENVIRONMENTS)}")
            if not isinstance(over, Mapping) or set(over) - set(_KEYS):
                raise PolicyError(f"environments.{env} may only set: {', '.join(_KEYS)}")
            try:
                norm = _apply(default, over)
            except PolicyError as e:
                raise PolicyError(f"environments.{env}: {e}") from None
            overrides[env] = MappingProxyType({k: norm.to_json()[k] for k in over})
        return cls(default, MappingProxyType(overrides))


def _apply(budget: Budget, changes: Mapping[str, Any]) -> Budget:
    if "overflow" in changes:
        try:
            changes = {**changes, "overflow": Overflow(changes["overflow"])}
        except (ValueError, TypeError):
            raise PolicyError("overflow must be one of: " + ", ".join(o.value for o in Overflow)) from None
    return replace(budget, **changes)


class Decision(enum.Enum):
    HIDDEN = "hidden"
    ALERT = "alert"
    DEFER = "defer"
    DROP = "drop"


class CronDecision(enum.Enum):
    SEND = "send"
    SKIP_RECENT = "skip_recent"  # a hidden push reached the device within the interval
    SKIP_BUDGET = "skip_budget"  # budget empty: a hidden push was decided within the last T (see cron_decide)
