"""Push policy settings: validation with messages an operator can act on, JSON round trip, persistence."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, strategies as st

from ntf_server.config import Overflow, PushConfig
from ntf_server.push.policy import MAX_BURST, Budget, PolicyError, PolicySettings
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"hidden": 3}, "unknown key(s): hidden"),
        ({"burst": 0}, "burst must be a whole number between 1 and 100"),
        ({"burst": True}, "burst must be a whole number"),
        ({"burst": 2.5}, "burst must be a whole number"),
        ({"hidden_per_hour": "3"}, "hidden_per_hour must be a number"),
        ({"hidden_per_hour": -1}, "hidden_per_hour must be between 0 and 3600"),
        ({"hidden_per_hour": math.inf}, "hidden_per_hour must be between"),
        ({"overflow": "later"}, "overflow must be one of: alert, defer, drop"),
        ({"environments": []}, "environments must be an object"),
        ({"environments": {"prod": {}}}, "unknown environment 'prod'"),
        ({"environments": {"test": {"color": 1}}}, "environments.test may only set"),
        ({"environments": {"test": {"burst": -1}}}, "environments.test: burst must be"),
    ],
)
def test_invalid_settings_say_what_is_wrong(body: object, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        PolicySettings.from_json(body)
    assert message in str(e.value)


def test_keys_left_out_keep_the_current_values() -> None:
    base = PolicySettings(Budget(5, 4, Overflow.DEFER))
    changed = PolicySettings.from_json({"overflow": "drop"}, base)
    assert changed.default == Budget(5, 4, Overflow.DROP)


def test_an_environment_override_changes_only_its_keys() -> None:
    p = PolicySettings.from_json({"burst": 5, "environments": {"test": {"hidden_per_hour": 0}}})
    assert p.for_environment("test") == Budget(0, 5, Overflow.ALERT)
    assert p.for_environment("test").parity
    assert p.for_environment("production") == Budget(3, 5, Overflow.ALERT)
    # the override follows a later change of the default for the keys it does not set
    later = PolicySettings.from_json({"overflow": "defer"}, p)
    assert later.for_environment("test") == Budget(0, 5, Overflow.DEFER)


def test_defaults_come_from_the_config_file() -> None:
    p = PolicySettings.from_config(PushConfig(hidden_per_hour=2.0, burst=1, overflow=Overflow.DROP))
    assert p.default == Budget(2.0, 1, Overflow.DROP)


@given(
    st.floats(0, 3600, allow_nan=False), st.integers(1, MAX_BURST), st.sampled_from(Overflow),
    st.dictionaries(st.sampled_from(["production", "development", "test"]),
                    st.fixed_dictionaries({}, optional={"burst": st.integers(1, MAX_BURST),
                                                        "overflow": st.sampled_from([o.value for o in Overflow])})),
)
def test_json_round_trip(rate: float, burst: int, overflow: Overflow, envs: dict[str, dict[str, object]]) -> None:
    p = PolicySettings.from_json({"hidden_per_hour": rate, "burst": burst, "overflow": overflow.value,
                                  "environments": envs})
    again = PolicySettings.from_json(json.loads(json.dumps(p.to_json())))
    assert again == p
    for env in ("production", "development", "test"):
        assert again.for_environment(env) == p.for_environment(env)


async def test_policy_persists_and_put_returns_the_old_settings(store: RedisStore) -> None:
    ps = PolicyStore(store.dataset)
    assert await ps.get() is None
    first = PolicySettings.from_json({"burst": 2})
    assert await ps.put(first) is None
    second = PolicySettings.from_json({"overflow": "defer", "environments": {"test": {"burst": 1}}}, first)
    assert await ps.put(second) == first
    assert await PolicyStore(store.dataset).get() == second  # what another instance reads
    await ps.clear()
    assert await ps.get() is None


async def test_an_unusable_stored_policy_is_reported_and_ignored(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    ps = PolicyStore(store.dataset)
    await store.client.set(ps.key, '{"burst": 0}')
    assert await ps.get() is None
    assert "unusable" in caplog.text
