"""Vectors and properties for ntf_server.protocol.crypto (spec §1.6, §1.7, §2.2, §2.4, §2.7, §7.3)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x448 import X448PrivateKey, X448PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings, strategies as st

from ntf_server.protocol import crypto as c
from ntf_server.protocol.encoding import CodecError, b64u_encode, pad, unpad


def seq(start: int, end: int) -> bytes:
    """``01..20`` notation of §7.3: consecutive bytes from start to end inclusive."""
    return bytes(range(start, end + 1))


K01_20 = seq(0x01, 0x20)
N01_18 = seq(0x01, 0x18)
V3_PRIV_A = X25519PrivateKey.from_private_bytes(seq(0x01, 0x20))
V3_PRIV_B = X25519PrivateKey.from_private_bytes(seq(0x21, 0x40))
V3_DH = bytes.fromhex("a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77")
V6_KEY = Ed25519PrivateKey.from_private_bytes(K01_20)

# ---------------------------------------------------------------- NaCl tests/box.c (§7.3 "validation")

BOX_ALICESK = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
BOX_BOBPK = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
BOX_NONCE = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
BOX_MESSAGE = bytes.fromhex(
    "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c61296cdc3c01"
    "233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde048977eb48f59f"
    "fd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705"
)
BOX_EXPECTED = bytes.fromhex(
    "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186ac0dfc1"
    "7c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae90224368517a"
    "cfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5"
)


def test_nacl_box_vector_x25519_hsalsa20_and_crypto_box() -> None:
    shared = c.dh(
        X25519PublicKey.from_public_bytes(BOX_BOBPK), X25519PrivateKey.from_private_bytes(BOX_ALICESK)
    )
    assert shared.hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert c.hsalsa20(shared).hex() == "1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389"
    boxed = c.crypto_box(shared, BOX_NONCE, BOX_MESSAGE)
    assert boxed[:32].hex() == "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce"
    assert boxed == BOX_EXPECTED
    assert c.crypto_box_open(shared, BOX_NONCE, boxed) == BOX_MESSAGE


def test_crypto_box_is_not_plain_secretbox_with_the_raw_key() -> None:
    import nacl.bindings

    plain = nacl.bindings.crypto_secretbox_easy(b"x", N01_18, K01_20)
    assert c.crypto_box(K01_20, N01_18, b"x") != plain
    assert c.crypto_box(K01_20, N01_18, b"x") == nacl.bindings.crypto_secretbox_easy(
        b"x", N01_18, c.hsalsa20(K01_20)
    )


def test_hsalsa20_and_crypto_box_reject_bad_sizes() -> None:
    with pytest.raises(c.CryptoError):
        c.hsalsa20(bytes(31))
    with pytest.raises(c.CryptoError):
        c.hsalsa20(bytes(32), bytes(15))
    with pytest.raises(c.CryptoError):
        c.crypto_box(K01_20, bytes(23), b"m")
    with pytest.raises(c.CryptoError):
        c.crypto_box_open(K01_20, N01_18, bytes(15))


# ---------------------------------------------------------------- §7.3 derived vectors


def test_v1_pad() -> None:
    assert pad(b"abc", 5).hex() == "0003616263"


V2_HEX = (
    "bc861d7776bd7b5ef059d8b5b415d38ad890960a28c657199bb296d55c36d0df7d9344af9014c6e672553847694f734f82358c0b2b8cd1"
    "5c9655896bdf4e6b294112299991219760eda29c6d73bccac234c9239ee9e0759b4e7b1d76543be0cc41b340db7ebae098319cfd6912"
    "8614c46f5d903c8d947d70683a213d9df1114a19cc41f86cc9e1e0b42a8106fb44dacabf711f3348ac92c022f3326a0eb710111b63a9"
    "463feda452f4dd248b8acc71ee425c93eeaefda0f6ba958b5fb428f18315cf0f33296e1ba116d5ab9960375e463c29b7a9b45f20cfcc"
    "d83e424c981873d0dd5cf6159c6d0f4600d2978ede9b673e69dedf5192185f2096c9ee298856ae091fcdded315a1ae5e607d38b441a5"
    "81"
)


def test_v2_cb_encrypt_full_272_bytes() -> None:
    out = c.cb_encrypt(K01_20, N01_18, b"hello NaCl secretbox", 256)
    assert len(out) == 272
    assert out.hex() == V2_HEX
    assert c.cb_decrypt(K01_20, N01_18, out) == b"hello NaCl secretbox"


def test_v3_x25519_keys_dh_spki_pkcs8() -> None:
    pub_a, pub_b = V3_PRIV_A.public_key(), V3_PRIV_B.public_key()
    assert c.encode_public_key(pub_a)[12:].hex() == (
        "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"
    )
    assert c.encode_public_key(pub_b)[12:].hex() == (
        "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b"
    )
    assert c.dh(pub_b, V3_PRIV_A) == V3_DH
    assert c.dh(pub_a, V3_PRIV_B) == V3_DH
    assert c.encode_public_key(pub_a).hex() == (
        "302a300506032b656e032100" + "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"
    )
    assert c.encode_private_key(V3_PRIV_A).hex() == "302e020100300506032b656e04220420" + K01_20.hex()


def test_v4_authenticator() -> None:
    out = c.authenticator(V3_DH, N01_18, b"test")
    assert out.hex() == (
        "c7cfc08696bf3f1757c0d6862c126518aa2718df9e4a374d29524d024c145004a6493a0c80d2a6d4e14746783a8f127c02a0aede8b50"
        "2157f330827e321c155834af41ac57e6c0116ccb8d1649454f9a"
    )


def test_v5_sbc_init_and_first_step() -> None:
    ck1, ck2 = c.sbc_init(b"\xaa" * 32, V3_DH)
    assert ck1.hex() == "e4d6fd753cc9d8cfcbeb525544ef25fe1ebfbdfb84c15ffd76ee9b8e46de3e06"
    assert ck2.hex() == "29271fbbde1486b6d55fbfee32f663f2982d2660989cb72d3bf387e0bdfa71cb"
    nxt, sk, nonce = c.sbc_hkdf(ck1)
    assert nxt.hex() == "dd5c48b6cf79b0c40fb7880c55bc5934205f240d7b3c8c258fff55ca063249f6"
    assert sk.hex() == "bf466ccb45479b949e9d4a507843aaceca9f21a60ed3fb884d96bc44feeca3ee"
    assert nonce.hex() == "a61a33649b2de3f5f534f70524963a9e41f929178817fb23"


def test_v6_ed25519_seed_keys() -> None:
    spki = c.encode_public_key(V6_KEY.public_key())
    assert spki.hex() == (
        "302a300506032b6570032100" + "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"
    )
    assert base64.b64encode(spki) == b"MCowBQYDK2VwAyEAebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
    assert c.encode_private_key(V6_KEY).hex() == "302e020100300506032b657004220420" + K01_20.hex()


def test_v7_signature_over_tchk_authorized_bytes() -> None:
    signed = b"\x20" + b"\xaa" * 32 + b"\x18" + N01_18 + b"\x18" + b"\x11" * 24 + b"TCHK"
    assert c.sign(V6_KEY, signed).hex() == (
        "90d236a8a275e48d73dd0e95444cd05cc9a6826e1a4ef587eaed216e4cbb13063ad3c168cb6a9d116473d1db63c9ef7527da4db686b4"
        "58a3ab99ccb8bc1f9900"
    )


def test_v11_verification_push_ciphertext() -> None:
    out = c.cb_encrypt(V3_DH, seq(0x32, 0x49), seq(0x64, 0x83), 3072)
    assert len(out) == 3088
    assert len(b64u_encode(out)) == 4120
    assert b64u_encode(seq(0x32, 0x49)) == "MjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJ"
    assert (
        hashlib.sha256(out).hexdigest() == "432fd081b7a253845f1a626ff00c4fb81527da8c6343ab8f404b54a8aa8576d2"
    )
    assert out[:48].hex() == (
        "2b444453445db14444846efeea2fd4efabc2178f0d141576fb34c870bebdf215191eb2fb0dd687e21ec895a2ec3bab7b"
    )


# ---------------------------------------------------------------- T4/T5/T6 padding


def test_t4_pad() -> None:
    assert pad(b"abc", 5) == b"\x00\x03abc"
    with pytest.raises(CodecError):
        pad(b"abc", 4)


@pytest.mark.parametrize(
    ("padded", "expected"),
    [(b"\x00\x00", b""), (b"\x00", None), (b"", None), (b"\x00\x03abc", b"abc"), (b"\x00\x03ab", None)],
)
def test_t5_unpad(padded: bytes, expected: bytes | None) -> None:
    if expected is None:
        with pytest.raises(CodecError):
            unpad(padded)
    else:
        assert unpad(padded) == expected


def test_t6_pad_limits() -> None:
    with pytest.raises(CodecError):
        pad(b"a" * 65534, 65536)
    for n in (0, 1, 65533):
        assert unpad(pad(b"b" * n, 65535)) == b"b" * n


# ---------------------------------------------------------------- §2.2 DER forms

ED448_RAW = seq(0x01, 0x39)  # 57 bytes
X448_RAW = seq(0x01, 0x38)  # 56 bytes

DER_CASES = [
    (Ed25519PublicKey.from_public_bytes(K01_20), "302a300506032b6570032100" + K01_20.hex()),
    (X25519PublicKey.from_public_bytes(K01_20), "302a300506032b656e032100" + K01_20.hex()),
    (Ed448PublicKey.from_public_bytes(ED448_RAW), "3043300506032b6571033a00" + ED448_RAW.hex()),
    (X448PublicKey.from_public_bytes(X448_RAW), "3042300506032b656f033900" + X448_RAW.hex()),
    (Ed25519PrivateKey.from_private_bytes(K01_20), "302e020100300506032b657004220420" + K01_20.hex()),
    (X25519PrivateKey.from_private_bytes(K01_20), "302e020100300506032b656e04220420" + K01_20.hex()),
    (Ed448PrivateKey.from_private_bytes(ED448_RAW), "3047020100300506032b6571043b0439" + ED448_RAW.hex()),
    (X448PrivateKey.from_private_bytes(X448_RAW), "3046020100300506032b656f043a0438" + X448_RAW.hex()),
]


@pytest.mark.parametrize(("key", "expected"), DER_CASES, ids=lambda v: type(v).__name__)
def test_der_prefixes_of_all_eight_key_kinds(key: c.AnyPublicKey | c.AnyPrivateKey, expected: str) -> None:
    if isinstance(key, Ed25519PublicKey | X25519PublicKey | Ed448PublicKey | X448PublicKey):
        der = c.encode_public_key(key)
        assert der.hex() == expected
        if isinstance(key, X448PublicKey):
            with pytest.raises(CodecError):
                c.decode_public_key(der)
        else:
            assert c.encode_public_key(c.decode_public_key(der)) == der
    else:
        der = c.encode_private_key(key)
        assert der.hex() == expected
        if isinstance(key, X448PrivateKey):
            with pytest.raises(CodecError):
                c.decode_private_key(der)
        else:
            assert c.encode_private_key(c.decode_private_key(der)) == der


def test_decode_public_key_rejects_near_misses() -> None:
    good = c.encode_public_key(V6_KEY.public_key())
    for bad in (good[:-1], good + b"\x00", b"\x30\x2b" + good[2:] + b"\x00", good[:12], b""):
        with pytest.raises(CodecError):
            c.decode_public_key(bad)
    with pytest.raises(CodecError):
        c.decode_x25519_public_key(good)
    assert isinstance(
        c.decode_x25519_public_key(c.encode_public_key(V3_PRIV_A.public_key())), X25519PublicKey
    )


def _pkcs8(version: int, oid_alg: bytes, raw: bytes, extra: bytes = b"") -> bytes:
    body = bytes((0x02, 0x01, version)) + oid_alg + bytes((0x04, len(raw) + 2, 0x04, len(raw))) + raw + extra
    return bytes((0x30, len(body))) + body


ED25519_ALG = bytes.fromhex("300506032b6570")


def test_decode_private_key_accepts_v1_with_attributes_and_public_key() -> None:
    pub = V6_KEY.public_key().public_bytes_raw()
    attrs = bytes.fromhex("a00c300a06032a0304310302 0101".replace(" ", ""))
    public = b"\x81\x21\x00" + pub
    for der in (_pkcs8(1, ED25519_ALG, K01_20, public), _pkcs8(1, ED25519_ALG, K01_20, attrs + public)):
        key = c.decode_private_key(der)
        assert c.encode_private_key(key) == c.encode_private_key(V6_KEY)
    assert c.decode_private_key(_pkcs8(0, ED25519_ALG, K01_20, attrs)).public_key() == V6_KEY.public_key()


@pytest.mark.parametrize(
    "der",
    [
        _pkcs8(2, ED25519_ALG, K01_20),  # unknown version
        _pkcs8(0, ED25519_ALG, K01_20, b"\x05\x00"),  # leftover element
        _pkcs8(0, ED25519_ALG, K01_20) + b"\x00",  # trailing byte
        _pkcs8(0, ED25519_ALG, K01_20[:31]),  # short key
        _pkcs8(0, bytes.fromhex("300706032b65700500"), K01_20),  # NULL parameters
        _pkcs8(0, bytes.fromhex("300506032b656f"), X448_RAW),  # X448
        _pkcs8(1, ED25519_ALG, K01_20, b"\x81\x21\x00" + bytes(32)),  # public key of another key
        _pkcs8(0, ED25519_ALG, K01_20, b"\x81\x21\x00" + bytes(32))[:-1],  # truncated
    ],
)
def test_decode_private_key_rejects(der: bytes) -> None:
    with pytest.raises(CodecError):
        c.decode_private_key(der)


def test_decode_private_key_rejects_non_minimal_der_length() -> None:
    good = c.encode_private_key(V6_KEY)
    with pytest.raises(CodecError):
        c.decode_private_key(b"\x30\x81\x2e" + good[2:])


def test_dummy_keys_and_t13_sample_keys() -> None:
    assert isinstance(c.DUMMY_KEYS[64], Ed25519PublicKey)
    assert isinstance(c.DUMMY_KEYS[114], Ed448PublicKey)
    assert isinstance(c.DUMMY_KEYS[80], X25519PublicKey)
    assert base64.b64encode(c.encode_public_key(c.DUMMY_KEYS[80])) == (
        b"MCowBQYDK2VuAyEA4JGSMYht18H4mas/jHeBwfcM7jLwNYJNOAhi2/g4RXg="
    )
    sample = base64.b64decode("MCowBQYDK2VwAyEAfAOflyvbJv1fszgzkQ6buiZJVgSpQWsucXq7U6zjMgY=")
    sample_dh = base64.b64decode("MCowBQYDK2VuAyEAriy+HcARIhqsgSjVnjKqoft+y6pxrxdY68zn4+LjYhQ=")
    assert isinstance(c.decode_public_key(sample), Ed25519PublicKey)
    assert c.encode_public_key(c.decode_x25519_public_key(sample_dh)) == sample_dh
    sig = base64.b64decode(
        "e8JK+8V3fq6kOLqco/SaKlpNaQ7i1gfOrXoqekEl42u4mF8Bgu14T5j0189CGcUhJHw2RwCMvON+qbvQ9ecJAA=="
    )
    assert len(sig) == 64


def test_key_hash_and_cb_nonce() -> None:
    assert c.key_hash(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert c.cb_nonce(b"abcd") == b"abcd" + bytes(20)
    assert c.cb_nonce(N01_18) == N01_18
    assert c.cb_nonce(N01_18 + b"zz") == N01_18


# ---------------------------------------------------------------- signatures, DH, authorization (§2.4)


@pytest.mark.parametrize(
    "priv", [V6_KEY, Ed448PrivateKey.from_private_bytes(ED448_RAW)], ids=["ed25519", "ed448"]
)
def test_sign_verify(priv: c.SignPrivateKey) -> None:
    sig = c.sign(priv, b"msg")
    assert len(sig) == (64 if isinstance(priv, Ed25519PrivateKey) else 114)
    assert c.verify_signature(priv.public_key(), sig, b"msg")
    assert not c.verify_signature(priv.public_key(), sig, b"msh")
    assert not c.verify_signature(priv.public_key(), sig[:-1] + bytes((sig[-1] ^ 1,)), b"msg")
    assert not c.verify_signature(priv.public_key(), sig[:-1], b"msg")
    assert not c.verify_signature(V3_PRIV_A.public_key(), sig, b"msg")
    other = Ed448PrivateKey.generate() if isinstance(priv, Ed25519PrivateKey) else c.generate_ed25519()
    assert not c.verify_signature(other.public_key(), sig, b"msg")


def test_dh_rejects_low_order_point() -> None:
    with pytest.raises(c.CryptoError):
        c.dh(X25519PublicKey.from_public_bytes(bytes(32)), V3_PRIV_A)


SERVER_DH = X25519PrivateKey.from_private_bytes(seq(0x41, 0x60))
AUTHORIZED = b"\x20" + b"\xaa" * 32 + b"\x18" + N01_18 + b"\x00TNEW ..."


@pytest.mark.parametrize(
    "priv",
    [V6_KEY, Ed448PrivateKey.from_private_bytes(ED448_RAW), V3_PRIV_A],
    ids=["ed25519", "ed448", "x25519"],
)
def test_client_authorize_round_trip(priv: c.PrivateAuthKey) -> None:
    auth = c.client_authorize(priv, AUTHORIZED, N01_18, SERVER_DH.public_key())
    assert (
        len(auth)
        == {Ed25519PrivateKey: 64, Ed448PrivateKey: 114, X25519PrivateKey: 80}[
            next(t for t in (Ed25519PrivateKey, Ed448PrivateKey, X25519PrivateKey) if isinstance(priv, t))
        ]
    )
    pub = c.public_of(priv)
    assert c.verify_transmission_auth(pub, auth, AUTHORIZED, N01_18, SERVER_DH)
    assert not c.dummy_verify(auth, AUTHORIZED, N01_18, SERVER_DH)
    assert not c.verify_transmission_auth(None, auth, AUTHORIZED, N01_18, SERVER_DH)
    flipped = auth[:10] + bytes((auth[10] ^ 0x80,)) + auth[11:]
    assert not c.verify_transmission_auth(pub, flipped, AUTHORIZED, N01_18, SERVER_DH)
    assert not c.verify_transmission_auth(pub, auth, AUTHORIZED + b"x", N01_18, SERVER_DH)
    for bad_len in (auth[:-1], auth + b"\x00", b""):
        assert not c.verify_transmission_auth(pub, bad_len, AUTHORIZED, N01_18, SERVER_DH)


def test_authenticator_specific_rejections() -> None:
    auth = c.client_authorize(V3_PRIV_A, AUTHORIZED, N01_18, SERVER_DH.public_key())
    pub = V3_PRIV_A.public_key()
    assert auth == c.authenticator(c.dh(SERVER_DH.public_key(), V3_PRIV_A), N01_18, AUTHORIZED)
    assert not c.verify_transmission_auth(pub, auth, AUTHORIZED, seq(0x02, 0x19), SERVER_DH)  # wrong corrId
    assert not c.verify_transmission_auth(pub, auth, AUTHORIZED, N01_18, None)  # no session key
    assert not c.verify_transmission_auth(pub, auth, AUTHORIZED, N01_18, V3_PRIV_B)  # other session
    assert not c.verify_transmission_auth(V6_KEY.public_key(), auth, AUTHORIZED, N01_18, SERVER_DH)
    with pytest.raises(c.CryptoError):
        c.client_authorize(V3_PRIV_A, AUTHORIZED, N01_18, None)
    # short corrIds are zero-padded on both sides (cbNonce)
    short = c.client_authorize(V3_PRIV_A, AUTHORIZED, b"abcd", SERVER_DH.public_key())
    assert c.verify_transmission_auth(pub, short, AUTHORIZED, b"abcd", SERVER_DH)


# ---------------------------------------------------------------- Ed25519 through libsodium (the stand-in's check)

ED25519_L = 2**252 + 27742317777372353535851937790883648493


def _openssl_accepts(pub: bytes, sig: bytes, msg: bytes) -> bool:
    return c.verify_signature(Ed25519PublicKey.from_public_bytes(pub), sig, msg)


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=150), data=st.data())
def test_sodium_key_accepts_the_valid_signature_and_no_bit_flip(seed: bytes, msg: bytes, data: st.DataObject) -> None:
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub = c.SodiumEd25519PublicKey.of(priv.public_key())
    sig = priv.sign(msg)
    assert pub.verify(sig, msg) and c.verify_transmission_auth(pub, sig, msg, N01_18, SERVER_DH)
    bit = data.draw(st.integers(0, (len(sig) + len(msg)) * 8 - 1))
    both = bytearray(sig + msg)
    both[bit // 8] ^= 1 << (bit % 8)
    bad_sig, bad_msg = bytes(both[:64]), bytes(both[64:])
    assert not pub.verify(bad_sig, bad_msg)
    assert not c.verify_transmission_auth(pub, bad_sig, bad_msg, N01_18, SERVER_DH)
    assert not _openssl_accepts(pub.public_bytes_raw(), bad_sig, bad_msg)
    other = c.SodiumEd25519PublicKey.of(Ed25519PrivateKey.generate().public_key())
    assert not other.verify(sig, msg)
    for wrong_len in (sig[:-1], sig + b"\x00", b"", sig + bytes(16)):  # 80 bytes: an authenticator's length
        assert not pub.verify(wrong_len, msg)
        assert not c.verify_transmission_auth(pub, wrong_len, msg, N01_18, SERVER_DH)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=40),
       edit_pub=st.binary(min_size=32, max_size=32) | st.just(bytes(32)),
       edit_sig=st.binary(min_size=64, max_size=64) | st.just(bytes(64)))
def test_sodium_key_is_never_looser_than_openssl(seed: bytes, msg: bytes, edit_pub: bytes, edit_sig: bytes) -> None:
    """A valid signature, maybe with its key and signature edited: what libsodium accepts, OpenSSL does."""
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub = _xor(priv.public_key().public_bytes_raw(), edit_pub)
    sig = _xor(priv.sign(msg), edit_sig)
    with contextlib.suppress(ValueError):  # not a point: OpenSSL cannot even load it
        if c.SodiumEd25519PublicKey(pub).verify(sig, msg):
            assert _openssl_accepts(pub, sig, msg)


def test_sodium_key_rejects_what_openssl_lets_through() -> None:
    """Stricter, never looser: S ≥ L is rejected by both; a small-order public key (here the identity, for
    which ``R = [S]B`` "signs" every message) passes OpenSSL and not libsodium."""
    sig = V6_KEY.sign(b"msg")
    s = int.from_bytes(sig[32:], "little")
    high_s = sig[:32] + (s + ED25519_L).to_bytes(32, "little")
    pub = V6_KEY.public_key()
    assert not c.SodiumEd25519PublicKey.of(pub).verify(high_s, b"msg") and not c.verify_signature(pub, high_s, b"msg")
    identity = bytes([1]) + bytes(31)
    base_point = bytes.fromhex("58" + "66" * 31)
    forged = base_point + (1).to_bytes(32, "little")
    for msg in (b"", b"NSUB"):
        assert _openssl_accepts(identity, forged, msg)
        assert not c.SodiumEd25519PublicKey(identity).verify(forged, msg)
    with pytest.raises(CodecError):
        c.SodiumEd25519PublicKey(bytes(31))


def test_verify_auth_keys_and_their_dummies() -> None:
    ed448 = Ed448PrivateKey.from_private_bytes(ED448_RAW).public_key()
    assert isinstance(c.verify_auth_key(V6_KEY.public_key()), c.SodiumEd25519PublicKey)
    assert c.verify_auth_key(ed448) is ed448 and c.verify_auth_key(V3_PRIV_A.public_key()) is not None
    sodium = c.verify_auth_key(V6_KEY.public_key())
    assert c.verify_auth_key(sodium) is sodium
    dummy, sodium_dummy = c.DUMMY_KEYS[64], c.VERIFY_DUMMY_KEYS[64]
    assert isinstance(dummy, Ed25519PublicKey) and isinstance(sodium_dummy, c.SodiumEd25519PublicKey)
    assert sodium_dummy.public_bytes_raw() == dummy.public_bytes_raw()
    assert c.VERIFY_DUMMY_KEYS[114] is c.DUMMY_KEYS[114] and c.VERIFY_DUMMY_KEYS[80] is c.DUMMY_KEYS[80]
    auth = c.client_authorize(V6_KEY, AUTHORIZED, N01_18, None)
    assert not c.verify_transmission_auth(c.VERIFY_DUMMY_KEYS[64], auth, AUTHORIZED, N01_18, SERVER_DH)


def test_signature_of_wrong_key_type_is_rejected() -> None:
    sig = c.sign(V6_KEY, AUTHORIZED)
    ed448_pub = Ed448PrivateKey.from_private_bytes(ED448_RAW).public_key()
    assert not c.verify_transmission_auth(ed448_pub, sig, AUTHORIZED, N01_18, SERVER_DH)
    assert not c.verify_transmission_auth(V3_PRIV_A.public_key(), sig, AUTHORIZED, N01_18, SERVER_DH)


def test_dummy_verify_is_false_for_every_length() -> None:
    for n in (0, 64, 80, 114, 7):
        assert not c.dummy_verify(bytes(n), AUTHORIZED, N01_18, SERVER_DH)
        assert not c.dummy_verify(bytes(n), AUTHORIZED, N01_18, None)


# ---------------------------------------------------------------- SMP block encryption (§1.6)


def test_block_cipher_chain_client_server_pair() -> None:
    session, secret = b"\xaa" * 32, V3_DH
    c_send, c_recv = c.BlockCipherChain.client_pair(session, secret)
    s_send, s_recv = c.BlockCipherChain.server_pair(session, secret)
    first = s_send.encrypt_block(b"hello")
    _, sk, nonce = c.sbc_hkdf(c.sbc_init(session, secret)[0])  # the V5 step of ck1
    assert first == c.crypto_box(sk, nonce, pad(b"hello", 16368))
    assert len(first) == 16384
    assert c_recv.decrypt_block(first) == b"hello"
    for i in range(5):
        msg = bytes([i]) * (i * 1000)
        assert s_recv.decrypt_block(c_send.encrypt_block(msg)) == msg
        assert c_recv.decrypt_block(s_send.encrypt_block(msg + b"!")) == msg + b"!"
    assert "6 blocks" in repr(s_send) and secret.hex() not in repr(s_send)


def test_block_cipher_chain_rejects_replay_tamper_and_oversize() -> None:
    c_send, _ = c.BlockCipherChain.client_pair(b"s", V3_DH)
    _, s_recv = c.BlockCipherChain.server_pair(b"s", V3_DH)
    b1 = c_send.encrypt_block(b"one", block_size=512)
    assert s_recv.decrypt_block(b1) == b"one"
    with pytest.raises(c.CryptoError):
        s_recv.decrypt_block(b1)  # the chain moved on: a replayed block fails
    with pytest.raises(CodecError):
        c_send.encrypt_block(bytes(495), block_size=512)
    b2 = c_send.encrypt_block(bytes(494), block_size=512)
    assert len(b2) == 512
    with pytest.raises(c.CryptoError):
        s_recv.decrypt_block(b2[:-1] + bytes((b2[-1] ^ 1,)))


# ---------------------------------------------------------------- SignedExact (§1.7)

SESSION_PUB = V3_PRIV_B.public_key()


def test_signed_key_tbs_layout() -> None:
    tbs = c.signed_key_tbs(SESSION_PUB)
    assert len(tbs) == 46
    assert tbs == bytes.fromhex("302c302a300506032b656e032100") + SESSION_PUB.public_bytes_raw()


def test_signed_exact_ed25519_exact_bytes() -> None:
    tbs = c.signed_key_tbs(SESSION_PUB)
    sig = c.sign(V6_KEY, tbs)
    signed = c.signed_exact(tbs, V6_KEY)
    assert signed == bytes.fromhex("3078") + tbs + bytes.fromhex("300506032b6570034100") + sig
    got = c.verify_signed_key(signed, V6_KEY.public_key())
    assert got.public_bytes_raw() == SESSION_PUB.public_bytes_raw()


def test_signed_exact_ed448_round_trip() -> None:
    priv = Ed448PrivateKey.from_private_bytes(ED448_RAW)
    tbs = c.signed_key_tbs(SESSION_PUB)
    signed = c.signed_exact(tbs, priv)
    assert signed[:3] == bytes.fromhex("3081aa")
    assert signed[3 + 46 : 3 + 46 + 10] == bytes.fromhex("300506032b6571037300")
    got = c.verify_signed_key(signed, priv.public_key())
    assert got.public_bytes_raw() == SESSION_PUB.public_bytes_raw()
    with pytest.raises(CodecError):  # an Ed25519 signer does not accept an Ed448 OID
        c.verify_signed_key(signed, V6_KEY.public_key())


def test_signed_exact_rejections() -> None:
    signed = c.signed_exact(c.signed_key_tbs(SESSION_PUB), V6_KEY)
    pub = V6_KEY.public_key()
    with pytest.raises(c.CryptoError):
        c.verify_signed_key(signed[:-1] + bytes((signed[-1] ^ 1,)), pub)
    with pytest.raises(c.CryptoError):
        c.verify_signed_key(signed, c.generate_ed25519().public_key())
    wrong_oid = signed.replace(bytes.fromhex("06032b6570"), bytes.fromhex("06032b6571"))
    with pytest.raises(CodecError):
        c.verify_signed_key(wrong_oid, pub)
    with pytest.raises(CodecError):
        c.verify_signed_key(signed + b"\x00", pub)
    inner_trailing = b"\x30\x79" + signed[2:] + b"\x00"
    with pytest.raises(CodecError):
        c.verify_signed_key(inner_trailing, pub)
    # an Ed25519 key in place of the X25519 session key, correctly signed: still refused
    tbs = b"\x30\x2c" + c.encode_public_key(pub)
    with pytest.raises(CodecError):
        c.verify_signed_key(c.signed_exact(tbs, V6_KEY), pub)


# ---------------------------------------------------------------- untrusted bytes raise only CodecError

VALID_SIGNED = c.signed_exact(c.signed_key_tbs(SESSION_PUB), V6_KEY)
VALID_PKCS8 = _pkcs8(1, ED25519_ALG, K01_20, b"\x81\x21\x00" + V6_KEY.public_key().public_bytes_raw())
VALID_SPKI = c.encode_public_key(c.DUMMY_KEYS[114])


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    def mutate(args: tuple[int, int, int]) -> bytes:
        pos, val, cut = args
        b = bytearray(valid)
        b[pos % len(b)] = val
        return bytes(b[: len(b) - cut])

    return st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 4)).map(mutate)


def _only_codec_errors(fn: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(CodecError):
        fn(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _mutations(VALID_SPKI))
def test_decode_public_key_fuzz(data: bytes) -> None:
    _only_codec_errors(c.decode_public_key, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _mutations(VALID_PKCS8))
def test_decode_private_key_fuzz(data: bytes) -> None:
    _only_codec_errors(c.decode_private_key, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | _mutations(VALID_SIGNED))
def test_verify_signed_key_fuzz(data: bytes) -> None:
    _only_codec_errors(lambda d: c.verify_signed_key(d, V6_KEY.public_key()), data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | _mutations(bytes.fromhex(V2_HEX)))
def test_crypto_box_open_and_cb_decrypt_fuzz(data: bytes) -> None:
    _only_codec_errors(lambda d: c.crypto_box_open(K01_20, N01_18, d), data)
    _only_codec_errors(lambda d: c.cb_decrypt(K01_20, N01_18, d), data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=130), st.binary(max_size=40))
def test_verify_transmission_auth_never_raises(auth: bytes, corr_id: bytes) -> None:
    for key in (*c.DUMMY_KEYS.values(), None):
        assert not c.verify_transmission_auth(key, auth, AUTHORIZED, corr_id, SERVER_DH)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([(Ed25519PrivateKey, 32), (X25519PrivateKey, 32), (Ed448PrivateKey, 57)]),
       st.binary(min_size=57, max_size=57), st.integers(-2, 2))
def test_decode_private_key_fast_path_agrees_with_der_walk(
    form: tuple[type[c.PrivateAuthKey], int], raw: bytes, delta: int
) -> None:
    """The v0 forms are read without the DER walk (resubscription decodes one key per NSUB); what they
    accept and reject must not change: a v1 wrapping of the same key decodes to the same key, and a
    near miss in length is refused as before."""
    cls, n = form
    key = cls.from_private_bytes(raw[:n])
    v0 = c.encode_private_key(key)
    v1 = bytes((0x30, v0[1])) + b"\x02\x01\x01" + v0[5:]
    assert c.encode_private_key(c.decode_private_key(v0)) == v0 == c.encode_private_key(c.decode_private_key(v1))
    if delta:
        with pytest.raises(CodecError):
            c.decode_private_key(v0[:-2] + raw[: 2 + delta])  # the key 1 or 2 bytes short or long


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_sodium_notifier_key_signs_exactly_as_cryptography(seed: bytes, msg: bytes) -> None:
    """NSUBs are signed through libsodium (faster here): Ed25519 is deterministic, so the signature must be
    the very bytes cryptography makes, whichever PKCS#8 form the key was stored in."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    v0 = c.encode_private_key(key)
    v1 = _pkcs8(1, ED25519_ALG, seed, b"\x81\x21\x00" + key.public_key().public_bytes_raw())
    for der in (v0, v1):
        nk = c.decode_notifier_key(der)
        assert isinstance(nk, c.SodiumEd25519Key) and repr(nk) == "<SodiumEd25519Key>"
        assert c.client_authorize(nk, msg, b"c" * 24, None) == key.sign(msg)
        assert c.verify_signature(key.public_key(), nk.sign(msg), msg)


def test_decode_notifier_key_keeps_other_key_types_and_refuses_what_decode_private_key_refuses() -> None:
    ed448, x25519 = Ed448PrivateKey.generate(), X25519PrivateKey.generate()
    assert isinstance(c.decode_notifier_key(c.encode_private_key(ed448)), Ed448PrivateKey)
    assert isinstance(c.decode_notifier_key(c.encode_private_key(x25519)), X25519PrivateKey)
    good = c.encode_private_key(V6_KEY)
    for bad in (good[:-1], good + b"\x00", _pkcs8(1, ED25519_ALG, K01_20, b"\x81\x21\x00" + bytes(32))):
        with pytest.raises(CodecError):
            c.decode_notifier_key(bad)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_a_notifier_key_stored_with_its_public_key_signs_as_the_key_sent(seed: bytes, msg: bytes) -> None:
    """SNEW stores an Ed25519 notifier key as PKCS#8 v1 with its public key (derived from the seed, not
    taken from the input), so resubscription signs without deriving it: the very signature all the same."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    v0 = c.encode_private_key(key)
    wrong_public = _pkcs8(1, ED25519_ALG, seed, b"\x81\x21\x00" + bytes(32))
    stored = c.notifier_key_for_storage(v0)
    assert c.notifier_key_for_storage(stored) == stored  # the same bytes again: an SNEW retry matches
    assert c.decode_private_key(stored).private_bytes_raw() == seed  # a valid PKCS#8 key, checked as such
    with pytest.raises(CodecError):
        c.notifier_key_for_storage(wrong_public)  # refused as at SNEW's parse
    nk = c.decode_stored_notifier_key(stored)
    assert isinstance(nk, c.SodiumEd25519Key) and nk.public_bytes() == key.public_key().public_bytes_raw()
    assert c.client_authorize(nk, msg, b"c" * 24, None) == key.sign(msg)
    assert c.client_authorize(c.decode_stored_notifier_key(v0), msg, b"c" * 24, None) == key.sign(msg)


def test_other_notifier_keys_are_stored_as_sent() -> None:
    for k in (Ed448PrivateKey.generate(), X25519PrivateKey.generate()):
        der = c.encode_private_key(k)
        assert c.notifier_key_for_storage(der) == der
        assert type(c.decode_stored_notifier_key(der)) is type(k)
