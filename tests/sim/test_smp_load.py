"""Seeded queues: what a benchmark process derives matches what the stand-in process creates."""

from __future__ import annotations

import pytest

from ntf_server.protocol import crypto
from ntf_server.sim.smp_load import KeyType, seeded_key_der, seeded_queue, seeded_server_queue


@pytest.mark.parametrize("key_type", list(KeyType))
def test_seeded_key_der_is_the_seeded_queue_key(key_type: KeyType) -> None:
    for i in (0, 1, 12345):
        q = seeded_queue(b"seed", i, key_type)
        nid, der = seeded_key_der(b"seed", i, key_type)
        assert nid == q.notifier_id
        assert der == crypto.encode_private_key(q.notifier_key)
        assert crypto.encode_private_key(crypto.decode_private_key(der)) == der


@pytest.mark.parametrize("key_type", list(KeyType))
def test_seeded_server_queue_is_the_seeded_queue_as_the_stand_in_keeps_it(key_type: KeyType) -> None:
    for i in (0, 1, 12345):
        q, sq = seeded_queue(b"seed", i, key_type), seeded_server_queue(b"seed", i, key_type)
        assert (sq.notifier_id, sq.rcv_ntf_dh_secret) == (q.notifier_id, q.rcv_ntf_dh_secret)
        public = crypto.public_of(q.notifier_key)
        if isinstance(sq.notifier_key, crypto.SodiumEd25519PublicKey):
            assert key_type is KeyType.ED25519
            assert sq.notifier_key.public_bytes_raw() == crypto.encode_public_key(public)[-32:]
            assert sq.notifier_key.verify(crypto.client_authorize(q.notifier_key, b"NSUB", bytes(24), None), b"NSUB")
        else:
            assert crypto.encode_public_key(sq.notifier_key) == crypto.encode_public_key(public)
