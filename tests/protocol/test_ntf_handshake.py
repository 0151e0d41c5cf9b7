"""The NTF handshake as pure functions, both sides (spec §1.7), without sockets."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import pad
from ntf_server.protocol.framing import NTF_BLOCK_SIZE, VersionRange
from ntf_server.protocol.handshake import NtfClientHello
from ntf_server.protocol.ntf_handshake import NtfHandshakeFailed, client_handshake, server_accept, server_hello

KEY_HASH = bytes(range(32))


@pytest.mark.parametrize(("alpn", "version"), [(True, 3), (False, 1)])
def test_both_sides_agree(alpn: bool, version: int) -> None:
    leaf = crypto.generate_ed25519()
    session = os.urandom(32)
    sent = server_hello(session, alpn=alpn, sign_key=leaf)
    assert len(sent.block) == NTF_BLOCK_SIZE
    hs = client_handshake(sent.block, key_hash=KEY_HASH, tls_unique=session, leaf_key=leaf.public_key())
    params, server_dh = server_accept(sent, hs.client_hello, KEY_HASH)
    assert params == hs.params and params.version == version and params.session_id == session
    if version >= 2:
        assert server_dh is not None and hs.server_dh is not None
        assert crypto.encode_public_key(server_dh.public_key()) == crypto.encode_public_key(hs.server_dh)
    else:
        assert server_dh is None and hs.server_dh is None


def test_client_may_choose_an_older_version() -> None:
    leaf = Ed448PrivateKey.generate()
    sent = server_hello(b"s" * 32, alpn=True, sign_key=leaf)
    hs = client_handshake(sent.block, key_hash=KEY_HASH, tls_unique=b"s" * 32, leaf_key=leaf.public_key(),
                          versions=VersionRange(1, 2))
    params, _ = server_accept(sent, hs.client_hello, KEY_HASH)
    assert params.version == 2


def test_client_refuses_what_tls_did_not_prove() -> None:
    leaf, other = crypto.generate_ed25519(), crypto.generate_ed25519()
    sent = server_hello(b"s" * 32, alpn=True, sign_key=leaf)
    with pytest.raises(NtfHandshakeFailed, match="session id"):
        client_handshake(sent.block, key_hash=KEY_HASH, tls_unique=b"t" * 32, leaf_key=leaf.public_key())
    with pytest.raises(NtfHandshakeFailed, match="not signed by the TLS leaf"):
        client_handshake(sent.block, key_hash=KEY_HASH, tls_unique=b"s" * 32, leaf_key=other.public_key())
    with pytest.raises(NtfHandshakeFailed, match="no common"):
        client_handshake(sent.block, key_hash=KEY_HASH, tls_unique=b"s" * 32, leaf_key=leaf.public_key(),
                         versions=VersionRange(4, 5))
    with pytest.raises(NtfHandshakeFailed, match="unparseable"):
        client_handshake(os.urandom(NTF_BLOCK_SIZE), key_hash=KEY_HASH, tls_unique=b"s" * 32,
                         leaf_key=leaf.public_key())


def test_server_refuses_another_identity_a_foreign_version_and_garbage() -> None:
    sent = server_hello(b"s" * 32, alpn=False, sign_key=crypto.generate_ed25519())
    with pytest.raises(NtfHandshakeFailed, match="another server identity"):
        server_accept(sent, pad(NtfClientHello(1, bytes(32)).encode(), NTF_BLOCK_SIZE), KEY_HASH)
    with pytest.raises(NtfHandshakeFailed, match=r"outside 1\.\.1"):
        server_accept(sent, pad(NtfClientHello(3, KEY_HASH).encode(), NTF_BLOCK_SIZE), KEY_HASH)
    with pytest.raises(NtfHandshakeFailed, match="unparseable"):
        server_accept(sent, b"\xff" * NTF_BLOCK_SIZE, KEY_HASH)
