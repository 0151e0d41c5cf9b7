"""store/recent.py: two generations, so the last `generation` puts are always kept and no more than twice that."""

from __future__ import annotations

from ntf_server.store.recent import Recent


def test_keeps_the_newest_generation_and_drops_the_one_before() -> None:
    r: Recent[int, int] = Recent(3)
    for i in range(10):
        r.put(i, i * 10)
        assert all(r.get(j) == j * 10 for j in range(max(0, i - 2), i + 1))  # the last three always there
    assert [r.get(i) for i in range(10)] == [None] * 6 + [60, 70, 80, 90]  # 9 started a generation: 6..8 kept
    r.put(7, 0)
    assert r.get(7) == 0  # the newer generation wins over the older


def test_a_false_value_is_a_value() -> None:
    r: Recent[str, int] = Recent(2)
    r.put("a", 0)
    assert r.get("a") == 0 and r.get("b") is None
