"""SimpleX crypto primitives on the wire (§1.6, §1.7, §2.2, §2.4, §2.7).

Theory of operation: every primitive comes from a vetted library — X25519/Ed25519/Ed448/HKDF from
``cryptography``, XSalsa20-Poly1305 secretbox from libsodium (through PyNaCl), and HSalsa20 from the same
libsodium through ctypes (PyNaCl's cffi ``lib`` does not expose ``crypto_core_hsalsa20``). Nothing here is a
hand-written cipher.

SimpleX ``cryptoBox(key, nonce, msg)`` is NaCl secretbox keyed with ``HSalsa20(key, 0^16)`` (§2.7, errata 2):
with ``key`` = a raw X25519 output this is exactly NaCl ``crypto_box``; with a symmetric key (SMP block
encryption) it is *not* plain ``crypto_secretbox(key)``. Output is ``tag(16) ‖ ciphertext``.

Keys travel as DER (SPKI / PKCS#8 v0) with the exact byte prefixes of §2.2; we emit those bytes ourselves
and check them byte for byte on input, so no library's DER leniency decides what we accept. Every decoder
of untrusted bytes raises only ``CodecError`` (``CryptoError`` is a subclass for failed crypto).

Why one module of about 620 lines: every use of key material on the wire is in this one module, so a security
review reads one file; its sections follow the §.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import hmac
import importlib.util
from collections.abc import Mapping
from typing import Final

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x448 import X448PrivateKey, X448PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ntf_server.protocol import der
from ntf_server.protocol.encoding import CodecError, pad, unpad

PublicAuthKey = Ed25519PublicKey | Ed448PublicKey | X25519PublicKey
PrivateAuthKey = Ed25519PrivateKey | Ed448PrivateKey | X25519PrivateKey
SignPublicKey = Ed25519PublicKey | Ed448PublicKey
SignPrivateKey = Ed25519PrivateKey | Ed448PrivateKey
# X448 is defined by SimpleX but unused by NTF; we can encode it (§2.2 table) but never accept it.
AnyPublicKey = PublicAuthKey | X448PublicKey
AnyPrivateKey = PrivateAuthKey | X448PrivateKey

TAG_LEN: Final = 16
NONCE_LEN: Final = 24
KEY_LEN: Final = 32
AUTHENTICATOR_LEN: Final = 80  # tag(16) ‖ sha512(64), §2.4
ED25519_SIG_LEN: Final = 64
ED25519_SEED_LEN: Final = 32
ED25519_KEY_LEN: Final = 32
ED448_SIG_LEN: Final = 114
SMP_BLOCK_SIZE: Final = 16384


class CryptoError(CodecError):
    """Decryption, verification or key agreement failed (bad tag, bad signature, low-order point)."""


# ---------------------------------------------------------------- keys (§2.2)

OID_X25519: Final = b"\x06\x03\x2b\x65\x6e"
OID_X448: Final = b"\x06\x03\x2b\x65\x6f"
OID_ED25519: Final = b"\x06\x03\x2b\x65\x70"
OID_ED448: Final = b"\x06\x03\x2b\x65\x71"

# (SPKI prefix, PKCS#8 v0 prefix, raw key length) per key class; the prefixes are §2.2 byte for byte.
_PUB_FORMS: Final[dict[type[AnyPublicKey], tuple[bytes, int]]] = {
    Ed25519PublicKey: (bytes.fromhex("302a300506032b6570032100"), 32),
    X25519PublicKey: (bytes.fromhex("302a300506032b656e032100"), 32),
    Ed448PublicKey: (bytes.fromhex("3043300506032b6571033a00"), 57),
    X448PublicKey: (bytes.fromhex("3042300506032b656f033900"), 56),
}
_PRIV_FORMS: Final[dict[type[AnyPrivateKey], tuple[bytes, int]]] = {
    Ed25519PrivateKey: (bytes.fromhex("302e020100300506032b657004220420"), 32),
    X25519PrivateKey: (bytes.fromhex("302e020100300506032b656e04220420"), 32),
    Ed448PrivateKey: (bytes.fromhex("3047020100300506032b6571043b0439"), 57),
    X448PrivateKey: (bytes.fromhex("3046020100300506032b656f043a0438"), 56),
}
_AUTH_PUB_BY_PREFIX: Final[dict[bytes, type[PublicAuthKey]]] = {
    _PUB_FORMS[Ed25519PublicKey][0]: Ed25519PublicKey,
    _PUB_FORMS[X25519PublicKey][0]: X25519PublicKey,
    _PUB_FORMS[Ed448PublicKey][0]: Ed448PublicKey,
}
_AUTH_PRIV_BY_OID: Final[dict[bytes, tuple[type[PrivateAuthKey], int]]] = {
    OID_ED25519: (Ed25519PrivateKey, 32),
    OID_X25519: (X25519PrivateKey, 32),
    OID_ED448: (Ed448PrivateKey, 57),
}


def _form(k: object, table: Mapping[type, tuple[bytes, int]]) -> tuple[bytes, int]:
    # isinstance, not type(k): cryptography's concrete key classes are Rust types registered with the ABCs.
    for cls, form in table.items():
        if isinstance(k, cls):
            return form
    raise TypeError(f"unsupported key type {type(k).__name__}")


def encode_public_key(k: AnyPublicKey) -> bytes:
    """SPKI DER exactly as Haskell emits it (§2.2)."""
    prefix, _ = _form(k, _PUB_FORMS)
    return prefix + k.public_bytes(Encoding.Raw, PublicFormat.Raw)


def encode_private_key(k: AnyPrivateKey) -> bytes:
    """PKCS#8 version 0, no attributes, no public key (§2.2)."""
    prefix, _ = _form(k, _PRIV_FORMS)
    return prefix + k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def decode_public_key(data: bytes) -> PublicAuthKey:
    """An Ed25519/Ed448/X25519 SPKI in exactly the §2.2 form; anything else is a ``CodecError``."""
    data = bytes(data)
    cls = _AUTH_PUB_BY_PREFIX.get(data[:12])
    if cls is None:
        raise CodecError("unsupported or malformed public key")
    prefix, n = _PUB_FORMS[cls]
    if len(data) != len(prefix) + n:
        raise CodecError("public key of wrong length")
    try:
        return cls.from_public_bytes(data[len(prefix) :])
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CodecError("invalid public key") from e


def decode_x25519_public_key(data: bytes) -> X25519PublicKey:
    k = decode_public_key(data)
    if not isinstance(k, X25519PublicKey):
        raise CodecError("expected an X25519 public key")
    return k


# The exact PKCS#8 v0 forms Haskell emits (§2.2), read without the general DER walk: resubscription decodes
# one stored key per NSUB, and the walk cost a third of a signature (tests/bench/resubscribe.py).
_AUTH_PRIV_BY_PREFIX: Final[dict[bytes, tuple[type[PrivateAuthKey], int]]] = {
    _PRIV_FORMS[cls][0]: (cls, _PRIV_FORMS[cls][1]) for cls in (Ed25519PrivateKey, X25519PrivateKey, Ed448PrivateKey)
}
_PREFIX_LENS: Final = frozenset(len(p) for p in _AUTH_PRIV_BY_PREFIX)


def decode_private_key(data: bytes) -> PrivateAuthKey:
    """PKCS#8 (RFC 5958) v0 or v1, optional ``[0]`` attributes and ``[1]`` public key, nothing else."""
    for n in _PREFIX_LENS:
        form = _AUTH_PRIV_BY_PREFIX.get(data[:n])
        if form is not None and len(data) == n + form[1]:
            return _private_from_raw(form[0], data[n:])
    r = der.DerReader(data)
    body = der.DerReader(r.expect(der.SEQUENCE))
    r.end()
    version = body.expect(der.INTEGER)
    if version not in (b"\x00", b"\x01"):
        raise CodecError("unsupported PKCS#8 version")
    alg = der.DerReader(body.expect(der.SEQUENCE))
    oid = alg.element(der.OID)
    alg.end()
    if oid not in _AUTH_PRIV_BY_OID:
        raise CodecError("unsupported private key algorithm")
    cls, n = _AUTH_PRIV_BY_OID[oid]
    inner = der.DerReader(body.expect(der.OCTET_STRING))
    raw = inner.expect(der.OCTET_STRING)
    inner.end()
    if len(raw) != n:
        raise CodecError("private key of wrong length")
    if body.peek_tag() == der.CTX_0_CONSTRUCTED:
        body.expect(der.CTX_0_CONSTRUCTED)  # attributes are ignored, as crypton does
    public = body.expect(der.CTX_1_PRIMITIVE) if body.peek_tag() == der.CTX_1_PRIMITIVE else None
    body.end()
    key = _private_from_raw(cls, raw)
    # Stricter than crypton (which ignores it): an embedded public key must belong to the private key.
    if public is not None and public != b"\x00" + key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw):
        raise CodecError("PKCS#8 public key does not match the private key")
    return key


def _private_from_raw(cls: type[PrivateAuthKey], raw: bytes) -> PrivateAuthKey:
    try:
        return cls.from_private_bytes(raw)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CodecError("invalid private key") from e


def public_of(priv: PrivateAuthKey) -> PublicAuthKey:
    return priv.public_key()


def generate_x25519() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def generate_ed25519() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_hash(cert_der: bytes) -> bytes:
    """Server identity: SHA-256 of the identity certificate's DER (§1.2)."""
    return hashlib.sha256(cert_der).digest()


# ---------------------------------------------------------------- signatures and DH


def sign(priv: SignPrivateKey, msg: bytes) -> bytes:
    """Pure EdDSA (RFC 8032, no context): 64 bytes Ed25519, 114 bytes Ed448."""
    return priv.sign(msg)


def verify_signature(pub: PublicAuthKey, sig: bytes, msg: bytes) -> bool:
    """True only for a valid signature of the key's own type; never raises."""
    expected = ED25519_SIG_LEN if isinstance(pub, Ed25519PublicKey) else ED448_SIG_LEN
    if isinstance(pub, X25519PublicKey) or len(sig) != expected:
        return False
    try:
        pub.verify(bytes(sig), bytes(msg))
    except (InvalidSignature, ValueError):
        return False
    return True


def dh(pub: X25519PublicKey, priv: X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 output, unhashed (``C.dh'``)."""
    try:
        return priv.exchange(pub)
    except ValueError as e:  # all-zero output: low-order point
        raise CryptoError("X25519 agreement produced an all-zero secret") from e


# ---------------------------------------------------------------- cryptoBox (§2.7)

_sodium: ctypes.CDLL | None = None


def _libsodium() -> ctypes.CDLL:
    """PyNaCl's bundled libsodium, loaded once; PyNaCl has already run ``sodium_init``."""
    global _sodium  # noqa: PLW0603 - a lazily loaded process-wide library handle
    if _sodium is None:
        spec = importlib.util.find_spec("nacl._sodium")  # PyNaCl's extension module links libsodium in
        if spec is None or spec.origin is None:
            raise CryptoError("PyNaCl's libsodium extension module not found")
        lib = ctypes.CDLL(spec.origin)
        fn = lib.crypto_core_hsalsa20
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        nacl.bindings.sodium_init()
        _sodium = lib
    return _sodium


def hsalsa20(key32: bytes, inp16: bytes = bytes(16)) -> bytes:
    """libsodium ``crypto_core_hsalsa20`` with the standard "expand 32-byte k" constant."""
    if len(key32) != KEY_LEN or len(inp16) != 16:
        raise CryptoError("HSalsa20 needs a 32-byte key and a 16-byte input")
    out = ctypes.create_string_buffer(32)
    if _libsodium().crypto_core_hsalsa20(out, bytes(inp16), bytes(key32), None) != 0:
        raise CryptoError("crypto_core_hsalsa20 failed")
    return out.raw


def _check_key_nonce(key32: bytes, nonce24: bytes) -> None:
    if len(key32) != KEY_LEN or len(nonce24) != NONCE_LEN:
        raise CryptoError("cryptoBox needs a 32-byte key and a 24-byte nonce")


def crypto_box(key32: bytes, nonce24: bytes, msg: bytes) -> bytes:
    """SimpleX ``cryptoBox``: secretbox keyed with ``HSalsa20(key32, 0^16)``; returns ``tag ‖ ciphertext``."""
    _check_key_nonce(key32, nonce24)
    return nacl.bindings.crypto_secretbox_easy(bytes(msg), bytes(nonce24), hsalsa20(key32))


def crypto_box_open(key32: bytes, nonce24: bytes, data: bytes) -> bytes:
    _check_key_nonce(key32, nonce24)
    if len(data) < TAG_LEN:
        raise CryptoError("ciphertext shorter than its tag")
    try:
        return nacl.bindings.crypto_secretbox_open_easy(bytes(data), bytes(nonce24), hsalsa20(key32))
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError) as e:
        raise CryptoError("decryption failed") from e


def cb_encrypt(secret: bytes, nonce: bytes, msg: bytes, padded_len: int) -> bytes:
    return crypto_box(secret, nonce, pad(msg, padded_len))


def cb_decrypt(secret: bytes, nonce: bytes, data: bytes) -> bytes:
    return unpad(crypto_box_open(secret, nonce, data))


def cb_nonce(corr_id: bytes) -> bytes:
    """corrId truncated or zero-padded to 24 bytes (``cbNonce``)."""
    return bytes(corr_id[:NONCE_LEN]).ljust(NONCE_LEN, b"\x00")


# ---------------------------------------------------------------- transmission authorization (§2.4)


def authenticator(dh_secret: bytes, nonce24: bytes, authorized: bytes) -> bytes:
    return crypto_box(dh_secret, nonce24, hashlib.sha512(authorized).digest())


def _verify_authenticator(
    key: X25519PublicKey, auth: bytes, authorized: bytes, corr_id: bytes, server_dh_priv: X25519PrivateKey
) -> bool:
    try:
        digest = crypto_box_open(dh(key, server_dh_priv), cb_nonce(corr_id), auth)
    except CryptoError:
        return False
    return hmac.compare_digest(digest, hashlib.sha512(authorized).digest())


class SodiumEd25519PublicKey:
    """An Ed25519 public key checked by libsodium (PyNaCl's ``crypto_sign_open``), for a verifier that checks
    many signatures against keys it holds (the SMP stand-in: one per NSUB).

    Why not cryptography's key: its OpenSSL build here verifies in about twice libsodium's time
    (tests/bench/resubscribe.py). Never looser: both check RFC 8032 §5.1.7 without the cofactor (``S < L``,
    then the encoding of ``[S]B - [k]A`` must equal ``R`` byte for byte), and libsodium also rejects a
    small-order ``R``, and a small-order or non-canonical public key (whose every signature then fails).
    """

    __slots__ = ("_pk",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != ED25519_KEY_LEN:
            raise CodecError("Ed25519 public key of wrong length")
        self._pk = bytes(raw)

    @classmethod
    def of(cls, key: Ed25519PublicKey) -> SodiumEd25519PublicKey:
        return cls(key.public_bytes_raw())

    def public_bytes_raw(self) -> bytes:
        return self._pk

    def __repr__(self) -> str:
        return "<SodiumEd25519PublicKey>"

    def verify(self, sig: bytes, msg: bytes) -> bool:
        """True only for a valid 64-byte signature of ``msg``; never raises."""
        if len(sig) != ED25519_SIG_LEN:
            return False
        try:
            nacl.bindings.crypto_sign_open(bytes(sig) + bytes(msg), self._pk)
        except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError):
            return False
        return True


VerifyAuthKey = PublicAuthKey | SodiumEd25519PublicKey  # a notifier key as a verifier of many NSUBs keeps it


def verify_auth_key(key: VerifyAuthKey) -> VerifyAuthKey:
    """The form to keep a key in for :func:`verify_transmission_auth`: Ed25519 as a
    :class:`SodiumEd25519PublicKey` (made once, at the key's registration), the others as they are."""
    return SodiumEd25519PublicKey.of(key) if isinstance(key, Ed25519PublicKey) else key


def verify_transmission_auth(
    key: VerifyAuthKey | None,
    auth: bytes,
    authorized: bytes,
    corr_id: bytes,
    server_dh_priv: X25519PrivateKey | None,
) -> bool:
    """Check ``auth`` over ``authorized`` (§2.4); no key or a wrong key type costs a dummy check (False)."""
    n = len(auth)
    if isinstance(key, SodiumEd25519PublicKey):
        return key.verify(auth, authorized) if n == ED25519_SIG_LEN else dummy_verify(
            auth, authorized, corr_id, server_dh_priv)
    if n == AUTHENTICATOR_LEN and isinstance(key, X25519PublicKey) and server_dh_priv is not None:
        return _verify_authenticator(key, auth, authorized, corr_id, server_dh_priv)
    if (n == ED25519_SIG_LEN and isinstance(key, Ed25519PublicKey)) or (
        n == ED448_SIG_LEN and isinstance(key, Ed448PublicKey)
    ):
        return verify_signature(key, auth, authorized)
    return dummy_verify(auth, authorized, corr_id, server_dh_priv)


def _b64_key(text: str) -> PublicAuthKey:
    try:
        return decode_public_key(base64.b64decode(text, validate=True))
    except binascii.Error as e:
        raise CodecError("invalid base64 key") from e


# The fixed dummy keys of the Haskell servers (§2.4, standard base64), keyed by the auth length they check.
_DUMMY_KEYS_B64: Final[dict[int, str]] = {
    ED25519_SIG_LEN: "MCowBQYDK2VwAyEA139Oqs4QgpqbAmB0o7rZf6T19ryl7E65k4AYe0kE3Qs=",
    ED448_SIG_LEN: "MEMwBQYDK2VxAzoA6ibQc9XpkSLtwrf7PLvp81qW/etiumckVFImCMRdftcG/XopbOSaq9qyLhrgJWKOLyNrQPNVvpMA",
    AUTHENTICATOR_LEN: "MCowBQYDK2VuAyEA4JGSMYht18H4mas/jHeBwfcM7jLwNYJNOAhi2/g4RXg=",
}
DUMMY_KEYS: Final[dict[int, PublicAuthKey]] = {n: _b64_key(k) for n, k in _DUMMY_KEYS_B64.items()}
_DUMMY_KEY_DER: Final[dict[int, bytes]] = {n: base64.b64decode(k) for n, k in _DUMMY_KEYS_B64.items()}


# The same dummy keys in :func:`verify_auth_key` form: a verifier that keeps its keys so passes the one of
# an unknown entity's auth length, and spends what a real key of that type costs it.
VERIFY_DUMMY_KEYS: Final[dict[int, VerifyAuthKey]] = {n: verify_auth_key(k) for n, k in DUMMY_KEYS.items()}


def dummy_key_der(auth_len: int) -> bytes:
    """SPKI of the dummy key for an auth of this length (Ed25519 for lengths no key type has): a verifier
    with no registered key decodes and checks this one, doing what a real key would cost (STYLE 4)."""
    return _DUMMY_KEY_DER.get(auth_len, _DUMMY_KEY_DER[ED25519_SIG_LEN])


def dummy_verify(
    auth: bytes, authorized: bytes, corr_id: bytes, server_dh_priv: X25519PrivateKey | None
) -> bool:
    """Spend the time a real check of this auth type would take, then fail (timing equalisation)."""
    dummy = DUMMY_KEYS.get(len(auth))
    if isinstance(dummy, X25519PublicKey) and server_dh_priv is not None:
        _verify_authenticator(dummy, auth, authorized, corr_id, server_dh_priv)
    elif isinstance(dummy, Ed25519PublicKey | Ed448PublicKey):
        verify_signature(dummy, auth, authorized)
    return False


class SodiumEd25519Key:
    """An Ed25519 private key as libsodium's secret key (seed ‖ public key), for NSUB signatures.

    Why not cryptography's key: resubscribing makes one key object per NSUB from the stored seed, and both
    steps cost one fixed-base scalar multiplication. libsodium (PyNaCl, a dependency already) does each
    in ~60% of the time of the OpenSSL build cryptography ships here (tests/bench/resubscribe.py measures
    it). Ed25519 is deterministic (RFC 8032): the signatures are byte for byte the same.
    """

    __slots__ = ("_sk",)

    def __init__(self, seed: bytes, public: bytes | None = None) -> None:
        """``public``: the seed's public key when known (skips one scalar multiplication); trusted as is."""
        if len(seed) != ED25519_SEED_LEN or (public is not None and len(public) != ED25519_SEED_LEN):
            raise CodecError("Ed25519 private key of wrong length")
        self._sk = seed + public if public is not None else nacl.bindings.crypto_sign_seed_keypair(seed)[1]

    def public_bytes(self) -> bytes:
        return self._sk[ED25519_SEED_LEN:]

    def __repr__(self) -> str:
        return "<SodiumEd25519Key>"

    def sign(self, msg: bytes) -> bytes:
        return nacl.bindings.crypto_sign(msg, self._sk)[:ED25519_SIG_LEN]


NotifierKey = PrivateAuthKey | SodiumEd25519Key  # what signs or authenticates an NSUB
_ED25519_PKCS8_V0: Final = _PRIV_FORMS[Ed25519PrivateKey][0]


# What SNEW stores for an Ed25519 notifier key: PKCS#8 v1 (RFC 5958) with the public key, which is what
# libsodium signs with besides the seed. Deriving it costs as much as the NSUB's signature itself, once per
# NSUB for a v0 key (tests/bench/resubscribe.py): stored, it is derived once per subscription, at SNEW.
_ED25519_PKCS8_V1: Final = bytes.fromhex("3051020101300506032b657004220420")
_ED25519_V1_PUBLIC: Final = bytes.fromhex("812100")
_ED25519_V1_LEN: Final = len(_ED25519_PKCS8_V1) + ED25519_SEED_LEN + len(_ED25519_V1_PUBLIC) + ED25519_SEED_LEN


def notifier_key_for_storage(data: bytes) -> bytes:
    """A valid notifier key (``decode_private_key`` accepts it) in the form to store: an Ed25519 key as
    PKCS#8 v1 with its public key derived here from the seed (whatever public key the input carried);
    other key types unchanged. The same input always gives the same bytes."""
    key = decode_private_key(data)
    if not isinstance(key, Ed25519PrivateKey):
        return data
    seed = key.private_bytes_raw()
    public = nacl.bindings.crypto_sign_seed_keypair(seed)[0]
    return _ED25519_PKCS8_V1 + seed + _ED25519_V1_PUBLIC + public


def decode_stored_notifier_key(data: bytes) -> NotifierKey:
    """:func:`decode_notifier_key` for a key the store holds: the form :func:`notifier_key_for_storage`
    writes is read with its public key as stored, not derived again (the store seals and authenticates
    it, and SNEW wrote it from the seed); any other form is decoded and checked as usual."""
    if len(data) == _ED25519_V1_LEN and data.startswith(_ED25519_PKCS8_V1):
        seed_at, public_at = len(_ED25519_PKCS8_V1), _ED25519_V1_LEN - ED25519_SEED_LEN
        if data[seed_at + ED25519_SEED_LEN:public_at] == _ED25519_V1_PUBLIC:
            return SodiumEd25519Key(data[seed_at:seed_at + ED25519_SEED_LEN], data[public_at:])
    return decode_notifier_key(data)


def decode_notifier_key(data: bytes) -> NotifierKey:
    """``decode_private_key`` for signing NSUBs: an Ed25519 key becomes a :class:`SodiumEd25519Key`."""
    if len(data) == len(_ED25519_PKCS8_V0) + ED25519_SEED_LEN and data.startswith(_ED25519_PKCS8_V0):
        return SodiumEd25519Key(data[len(_ED25519_PKCS8_V0):])  # the form Haskell emits: no OpenSSL key made
    key = decode_private_key(data)
    if isinstance(key, Ed25519PrivateKey):
        return SodiumEd25519Key(key.private_bytes_raw())
    return key


def client_authorize(
    priv: NotifierKey, authorized: bytes, corr_id: bytes, server_dh_pub: X25519PublicKey | None
) -> bytes:
    """Client side of §2.4: a signature, or an authenticator to the server's per-session DH key."""
    if isinstance(priv, SodiumEd25519Key):
        return priv.sign(authorized)
    if isinstance(priv, X25519PrivateKey):
        if server_dh_pub is None:
            raise CryptoError("an X25519 authenticator needs the server's session DH key")
        return authenticator(dh(server_dh_pub, priv), cb_nonce(corr_id), authorized)
    return sign(priv, authorized)


# ---------------------------------------------------------------- SMP block encryption chain (§1.6)


def _hkdf_sha512(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA512(), length=length, salt=salt, info=info).derive(ikm)


def sbc_init(session_id: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """``(ck1, ck2)``: server sends with ck1 and receives with ck2; the client the other way round."""
    okm = _hkdf_sha512(session_id, secret, b"SimpleXSbChainInit", 64)
    return okm[:32], okm[32:]


def sbc_hkdf(ck: bytes) -> tuple[bytes, bytes, bytes]:
    """One chain step: ``(next ck, sk, nonce)``."""
    okm = _hkdf_sha512(b"", ck, b"SimpleXSbChain", 88)
    return okm[:32], okm[32:64], okm[64:88]


class BlockCipherChain:
    """One direction of an SMP connection's block encryption; each block advances the chain key."""

    __slots__ = ("_ck", "_count")

    def __init__(self, chain_key: bytes) -> None:
        if len(chain_key) != KEY_LEN:
            raise CryptoError("chain key must be 32 bytes")
        self._ck = bytes(chain_key)
        self._count = 0

    @classmethod
    def client_pair(cls, session_id: bytes, secret: bytes) -> tuple[BlockCipherChain, BlockCipherChain]:
        """``(send, receive)`` for the SMP client (the ntf server): send with ck2, receive with ck1."""
        ck1, ck2 = sbc_init(session_id, secret)
        return cls(ck2), cls(ck1)

    @classmethod
    def server_pair(cls, session_id: bytes, secret: bytes) -> tuple[BlockCipherChain, BlockCipherChain]:
        """``(send, receive)`` for an SMP server (used by the simulator)."""
        ck1, ck2 = sbc_init(session_id, secret)
        return cls(ck1), cls(ck2)

    def _next(self) -> tuple[bytes, bytes]:
        self._ck, sk, nonce = sbc_hkdf(self._ck)
        self._count += 1
        return sk, nonce

    def encrypt_block(self, content: bytes, block_size: int = SMP_BLOCK_SIZE) -> bytes:
        padded = pad(content, block_size - TAG_LEN)  # fails before the chain advances
        sk, nonce = self._next()
        return crypto_box(sk, nonce, padded)

    def decrypt_block(self, block: bytes) -> bytes:
        """The chain advances even when the block is bad, as in Haskell (the session is then unusable)."""
        sk, nonce = self._next()
        return unpad(crypto_box_open(sk, nonce, block))

    def __repr__(self) -> str:
        return f"<BlockCipherChain after {self._count} blocks>"


# ---------------------------------------------------------------- SignedExact (§1.7)


def signed_key_tbs(pub: AnyPublicKey) -> bytes:
    """``SEQUENCE { SPKI }`` — 46 bytes for an X25519 key (the extra SEQUENCE is crypton's)."""
    return der.tlv(der.SEQUENCE, encode_public_key(pub))


def signed_exact(tbs_der: bytes, priv: SignPrivateKey) -> bytes:
    """``SEQUENCE { tbs, SEQUENCE { OID }, BIT STRING(0 unused bits) sig }`` over the raw tbs bytes."""
    oid = OID_ED25519 if isinstance(priv, Ed25519PrivateKey) else OID_ED448
    sig = sign(priv, tbs_der)
    return der.tlv(der.SEQUENCE, tbs_der + der.tlv(der.SEQUENCE, oid) + der.tlv(der.BIT_STRING, b"\x00" + sig))


def verify_signed_key(signed: bytes, signer_pub: SignPublicKey) -> X25519PublicKey:
    """Parse a signed X25519 key strictly, check the signature over the tbs bytes as received."""
    return decode_x25519_public_key(_verified_spki(signed, signer_pub))


def verify_signed_sign_key(signed: bytes, signer_pub: SignPublicKey) -> Ed25519PublicKey:
    """The same for a service's Ed25519 session key, signed by its certificate (SMP v16 services)."""
    key = decode_public_key(_verified_spki(signed, signer_pub))
    if not isinstance(key, Ed25519PublicKey):
        raise CodecError("a service session key must be Ed25519")
    return key


def _verified_spki(signed: bytes, signer_pub: SignPublicKey) -> bytes:
    r = der.DerReader(signed)
    body = der.DerReader(r.expect(der.SEQUENCE))
    r.end()
    tbs_raw = body.element(der.SEQUENCE)
    alg = der.DerReader(body.expect(der.SEQUENCE))
    oid = alg.element(der.OID)
    alg.end()
    bits = body.expect(der.BIT_STRING)
    body.end()
    expected_oid, sig_len = (
        (OID_ED25519, ED25519_SIG_LEN)
        if isinstance(signer_pub, Ed25519PublicKey)
        else (OID_ED448, ED448_SIG_LEN)
    )
    if oid != expected_oid:
        raise CodecError("signature algorithm does not match the signing key")
    if len(bits) != 1 + sig_len or bits[0] != 0:
        raise CodecError("malformed signature bit string")
    tbs = der.DerReader(der.DerReader(tbs_raw).expect(der.SEQUENCE))
    spki = tbs.element(der.SEQUENCE)
    tbs.end()
    if not verify_signature(signer_pub, bits[1:], tbs_raw):
        raise CryptoError("bad signature on the session key")
    return spki
