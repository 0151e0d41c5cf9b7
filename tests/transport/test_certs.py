"""Certificate generation, files and fingerprints as `ntf-server init` writes them (spec §1.2)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ntf_server.protocol.encoding import b64u_decode
from ntf_server.transport import certs
from ntf_server.transport.certs import SignAlgorithm


@pytest.mark.parametrize(
    ("alg", "key_type"),
    [(SignAlgorithm.ED448, ed448.Ed448PublicKey), (SignAlgorithm.ED25519, ed25519.Ed25519PublicKey)],
)
def test_ca_and_server_certificates_match_simplex(alg: SignAlgorithm, key_type: type) -> None:
    ca_key, ca = certs.generate_ca(alg)
    _, leaf = certs.generate_server_cert(ca_key, ca, "ntf.example.com", alg)
    assert ca.subject.rfc4514_string() == "O=SimpleX,CN=SMP server CA"
    assert ca.issuer == ca.subject
    assert isinstance(ca.public_key(), key_type) and isinstance(leaf.public_key(), key_type)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= certs.VALIDITY_DAYS

    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ntf.example.com"
    assert leaf.issuer == ca.subject
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_agreement
    assert not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    leaf.verify_directly_issued_by(ca)


def test_create_credentials_writes_files_with_private_keys_0600(tmp_path: Path) -> None:
    made = certs.create_credentials(tmp_path, "127.0.0.1", SignAlgorithm.ED448)
    for name in certs.CREDENTIAL_FILES:
        assert (tmp_path / name).is_file(), name
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    ca_der = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert made.key_hash == hashlib.sha256(ca_der).digest()
    stored = (tmp_path / "fingerprint").read_text().strip()
    assert stored == made.fingerprint_b64u and len(stored) == 44 and stored.endswith("=")
    assert b64u_decode(stored) == made.key_hash
    assert certs.check_stored_fingerprint(tmp_path / "ca.crt", tmp_path / "fingerprint") == made.key_hash
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), None)
    assert isinstance(key, ed448.Ed448PrivateKey)


def test_create_credentials_never_overwrites(tmp_path: Path) -> None:
    certs.create_credentials(tmp_path, "localhost", SignAlgorithm.ED25519)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(certs.CredentialsError, match=r"ca\.key"):
        certs.create_credentials(tmp_path, "localhost", SignAlgorithm.ED25519)
    assert (tmp_path / "ca.key").read_bytes() == before


def test_replaced_ca_is_detected(tmp_path: Path) -> None:
    certs.create_credentials(tmp_path, "localhost", SignAlgorithm.ED25519)
    other = tmp_path / "other"
    other.mkdir()
    certs.create_credentials(other, "localhost", SignAlgorithm.ED25519)
    (tmp_path / "ca.crt").write_bytes((other / "ca.crt").read_bytes())
    with pytest.raises(certs.CredentialsError, match="does not match"):
        certs.check_stored_fingerprint(tmp_path / "ca.crt", tmp_path / "fingerprint")


def test_server_address_omits_default_port() -> None:
    fp = bytes(range(32))
    assert certs.server_address(fp, "ntf.example.com", 443) == (
        "ntf://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=@ntf.example.com"
    )
    assert certs.server_address(fp, "localhost", 8443).endswith("@localhost:8443")
