"""Which SMP hosts are private (issue 16.1): IP literals by range, ``localhost`` names; other names never."""

from __future__ import annotations

import pytest

from ntf_server.privatehosts import any_private_literal, private_literal


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.5.5", "192.168.1.1",
                                  "169.254.169.254", "0.0.0.0", "224.0.0.1", "100.64.0.1", "::1", "::",
                                  "fe80::1", "fe80::1%eth0", "fd12::3", "::ffff:10.0.0.1", "[::1]", "localhost",
                                  "LOCALHOST.", "api.localhost"])
def test_private(host: str) -> None:
    assert private_literal(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "smp.simplex.im",
                                  "localhost.example.com", "o5vmywmrnaxalvz6wi3zicyftgio6psuvyniis6.onion"])
def test_public(host: str) -> None:
    assert not private_literal(host)


def test_any() -> None:
    assert any_private_literal(["smp.example.com", "10.0.0.1"])
    assert not any_private_literal(["smp.example.com", "8.8.4.4"])
