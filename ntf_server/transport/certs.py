"""Server identity: CA and online certificates, the fingerprint, the server address (§1.2).

Theory of operation: a SimpleX server has two keys. The offline CA (``ca.key``/``ca.crt``) *is* the
server's identity: clients pin ``SHA-256(DER(ca.crt))`` (the "key hash" in ``ntf://<fp>@host``). The
online key (``server.key``/``server.crt``, signed by the CA) signs TLS handshakes, and the TLS chain is
``[server.crt, ca.crt]``. ``ca.key`` is only needed to issue a new online certificate, so it can be moved
offline after ``init``.

Generation mirrors the Haskell ``createServerX509_`` (which drives the openssl CLI) with ``cryptography``:
same algorithms (Ed448 default, Ed25519), subjects, extensions and "999999 days" validity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ntf_server.protocol.encoding import b64u_encode
from ntf_server.protocol.smp_service import ServiceCredentials

# openssl `-days 999999` in the Haskell init: the certificates never expire in practice.
VALIDITY_DAYS: Final = 999_999
CA_COMMON_NAME: Final = "SMP server CA"  # same subject as SimpleX servers (§1.2)
CA_ORGANIZATION: Final = "SimpleX"
DEFAULT_PORT: Final = 443

CA_KEY_FILE: Final = "ca.key"
CA_CERT_FILE: Final = "ca.crt"
SERVER_KEY_FILE: Final = "server.key"
SERVER_CERT_FILE: Final = "server.crt"
FINGERPRINT_FILE: Final = "fingerprint"
CREDENTIAL_FILES: Final = (CA_KEY_FILE, CA_CERT_FILE, SERVER_KEY_FILE, SERVER_CERT_FILE, FINGERPRINT_FILE)

SigningKey = ed448.Ed448PrivateKey | ed25519.Ed25519PrivateKey


class SignAlgorithm(StrEnum):
    ED448 = "ed448"
    ED25519 = "ed25519"

    def new_key(self) -> SigningKey:
        if self is SignAlgorithm.ED448:
            return ed448.Ed448PrivateKey.generate()
        return ed25519.Ed25519PrivateKey.generate()


class CredentialsError(Exception):
    """Server credentials missing, unreadable or inconsistent (e.g. fingerprint file vs ca.crt)."""


def fingerprint(ca_cert_der: bytes) -> bytes:
    """Server identity: SHA-256 of the whole DER certificate (``getFingerprint idCert HashSHA256``)."""
    return hashlib.sha256(ca_cert_der).digest()


def fingerprint_b64u(ca_cert_der: bytes) -> str:
    return b64u_encode(fingerprint(ca_cert_der))


def server_address(key_hash: bytes, host: str, port: int) -> str:
    """``ntf://<b64u fp>@host[:port]``; the port is omitted when it is the default 443."""
    suffix = "" if port == DEFAULT_PORT else f":{port}"
    return f"ntf://{b64u_encode(key_hash)}@{host}{suffix}"


def generate_ca(
    algorithm: SignAlgorithm, *, now: dt.datetime | None = None, days: int = VALIDITY_DAYS
) -> tuple[SigningKey, x509.Certificate]:
    """Self-signed identity CA: SKI, AKI (keyid), critical ``CA:TRUE``."""
    key = algorithm.new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANIZATION),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _base_builder(name, name, key, now, days)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return key, builder.sign(key, None)


def generate_server_cert(
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    common_name: str,
    algorithm: SignAlgorithm,
    *,
    now: dt.datetime | None = None,
    days: int = VALIDITY_DAYS,
) -> tuple[SigningKey, x509.Certificate]:
    """Online (TLS) certificate: ``CN=<fqdn or ip>``, ``CA:FALSE``, serverAuth, signed by the CA."""
    key = algorithm.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,  # "nonRepudiation" in openssl terms
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        _base_builder(subject, ca_cert.subject, key, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(usage, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    return key, builder.sign(ca_key, None)


def generate_service_cert(*, now: dt.datetime | None = None, days: int = VALIDITY_DAYS, common_name: str = "simplex"
                          ) -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
    """A notification service's certificate for one SMP server (SMP v16 services): self-signed Ed25519,
    ``CN=simplex`` as Haskell's ``genCredentials``; used both as the TLS client certificate and in the
    SMP client hello."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = _base_builder(name, name, key, now, days).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return key, builder.sign(key, None)


def new_service_credentials(common_name: str = "simplex") -> ServiceCredentials:
    key, cert = generate_service_cert(common_name=common_name)
    return ServiceCredentials((cert.public_bytes(serialization.Encoding.DER),), key)


def _base_builder(
    subject: x509.Name, issuer: x509.Name, key: SigningKey, now: dt.datetime | None, days: int
) -> x509.CertificateBuilder:
    start = now or dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))  # tolerate small clock skew on clients
        .not_valid_after(start + dt.timedelta(days=days))
    )


@dataclass(frozen=True)
class CreatedCredentials:
    key_hash: bytes
    algorithm: SignAlgorithm

    @property
    def fingerprint_b64u(self) -> str:
        return b64u_encode(self.key_hash)


def create_credentials(config_dir: Path, common_name: str, algorithm: SignAlgorithm) -> CreatedCredentials:
    """Write ca.key, ca.crt, server.key, server.crt and fingerprint; never overwrites a file."""
    existing = [n for n in CREDENTIAL_FILES if (config_dir / n).exists()]
    if existing:
        raise CredentialsError(f"refusing to overwrite existing {', '.join(existing)} in {config_dir}")
    ca_key, ca_cert = generate_ca(algorithm)
    server_key, server_cert = generate_server_cert(ca_key, ca_cert, common_name, algorithm)
    key_hash = fingerprint(ca_cert.public_bytes(serialization.Encoding.DER))
    write_private_file(config_dir / CA_KEY_FILE, _key_pem(ca_key))
    write_public_file(config_dir / CA_CERT_FILE, ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private_file(config_dir / SERVER_KEY_FILE, _key_pem(server_key))
    write_public_file(config_dir / SERVER_CERT_FILE, server_cert.public_bytes(serialization.Encoding.PEM))
    write_public_file(config_dir / FINGERPRINT_FILE, (b64u_encode(key_hash) + "\n").encode())
    return CreatedCredentials(key_hash, algorithm)


def _key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private_file(path: Path, data: bytes) -> None:
    """Create a 0600 file; fails if it exists (O_EXCL), so a key is never silently replaced."""
    _write_new(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    _write_new(path, data, 0o644)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
    finally:
        os.close(fd)


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def read_ca_der(ca_cert_file: Path) -> bytes:
    """DER of the *first* certificate in ca.crt (Haskell ``loadFingerprint``)."""
    try:
        certs = x509.load_pem_x509_certificates(ca_cert_file.read_bytes())
    except (OSError, ValueError) as e:
        raise CredentialsError(f"cannot read CA certificate {ca_cert_file}: {e}") from e
    return certs[0].public_bytes(serialization.Encoding.DER)


def check_stored_fingerprint(ca_cert_file: Path, fingerprint_file: Path) -> bytes:
    """The key hash of ca.crt, after checking it equals the one ``init`` recorded (Haskell start check)."""
    key_hash = fingerprint(read_ca_der(ca_cert_file))
    try:
        stored = fingerprint_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"cannot read fingerprint file {fingerprint_file}: {e}") from e
    if stored != b64u_encode(key_hash):
        raise CredentialsError(
            f"stored fingerprint in {fingerprint_file} does not match {ca_cert_file}: "
            "the CA certificate was replaced; clients pinned to the old identity would reject this server"
        )
    return key_hash
