"""Seeded queues: what a benchmark process derives matches what the stand-in process creates."""

from __future__ import annotations

import pytest

from ntf_server.protocol import crypto
from ntf_server.sim.smp_load import KeyType, seeded_key_der, seeded_queue


@pytest.mark.parametrize("key_type", list(KeyType))
def test_seeded_key_der_is_the_seeded_queue_key(key_type: KeyType) -> None:
    for i in (0, 1, 12345):
        q = seeded_queue(b"seed", i, key_type)
        nid, der = seeded_key_der(b"seed", i, key_type)
        assert nid == q.notifier_id
        assert der == crypto.encode_private_key(q.notifier_key)
        assert crypto.encode_private_key(crypto.decode_private_key(der)) == der
