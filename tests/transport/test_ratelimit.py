"""Registration rate limits, pure (ntf_server/transport/ratelimit.py): time is a number, nothing sleeps."""

from __future__ import annotations

from hypothesis import given, strategies as st

from ntf_server.transport.ratelimit import AddressTable, QuotaVerdict, Rate, RegistrationQuota, address_key

UNLIMITED = Rate(0, 1)


def takes(q: RegistrationQuota, now: float, n: int) -> list[QuotaVerdict]:
    return [q.take(now) for _ in range(n)]


def test_burst_then_sustained_rate() -> None:
    q = RegistrationQuota(Rate(6, 3), None, "a")  # one per 10 s, three back to back
    assert takes(q, 0, 4) == [QuotaVerdict.OK] * 3 + [QuotaVerdict.CONNECTION]
    assert q.take(9.9) is QuotaVerdict.CONNECTION
    assert q.take(10) is QuotaVerdict.OK
    assert q.take(10) is QuotaVerdict.CONNECTION
    assert takes(q, 1000, 4) == [QuotaVerdict.OK] * 3 + [QuotaVerdict.CONNECTION]  # rested: the whole burst again


@given(st.floats(0.5, 600), st.integers(1, 50), st.lists(st.floats(0, 3600), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(per_min: float, burst: int, times: list[float]) -> None:
    q = RegistrationQuota(Rate(per_min, burst), None, "a")
    times.sort()
    ok = sum(q.take(t) is QuotaVerdict.OK for t in times)
    assert ok <= burst + (times[-1] - times[0]) * per_min / 60 + 1e-9


def test_per_address_limit_is_shared_by_connections_of_one_address_only() -> None:
    table = AddressTable(Rate(60, 5), max_keys=100)
    conns = [RegistrationQuota(UNLIMITED, table, "10.0.0.1") for _ in range(5)]
    assert [c.take(0) for c in conns] == [QuotaVerdict.OK] * 5
    assert conns[0].take(0) is QuotaVerdict.ADDRESS
    assert RegistrationQuota(UNLIMITED, table, "10.0.0.2").take(0) is QuotaVerdict.OK  # another address
    assert conns[1].take(1) is QuotaVerdict.OK  # one more a second


def test_a_refused_request_is_not_charged() -> None:
    table = AddressTable(Rate(60, 2), max_keys=10)
    q = RegistrationQuota(Rate(60, 10), table, "x")
    assert takes(q, 0, 3) == [QuotaVerdict.OK, QuotaVerdict.OK, QuotaVerdict.ADDRESS]
    other = RegistrationQuota(Rate(60, 1), table, "y")
    assert takes(other, 0, 2) == [QuotaVerdict.OK, QuotaVerdict.CONNECTION]
    assert table.peek("y", 0) is not None  # the connection refusal did not use the address budget


def test_address_table_is_bounded_and_forgets_rested_addresses() -> None:
    table = AddressTable(Rate(60, 3), max_keys=100)
    for i in range(1000):
        RegistrationQuota(UNLIMITED, table, f"a{i}").take(0)
    assert len(table) == 100  # least recently seen ones forgotten
    RegistrationQuota(UNLIMITED, table, "late").take(10)  # every earlier entry rested by then (tat = 1 s)
    assert len(table) == 1


def test_unlimited() -> None:
    q = RegistrationQuota(UNLIMITED, AddressTable(UNLIMITED, 1), "a")
    assert set(takes(q, 0, 10000)) == {QuotaVerdict.OK}


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1::/56"
    # issue 16.3: a customer usually gets a /56 (256 /64s), so /64 keys let one line take 256 quotas
    assert address_key("2001:db8:1:3::1") == address_key("2001:db8:1:ff::1")
    assert address_key("2001:db8:1:100::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/56"
    assert address_key("") == address_key("/run/ntf.sock") == "other"
