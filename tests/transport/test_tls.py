"""NTF/SMP TLS contexts over real loopback TLS (asyncio streams, port 0) and chain pinning (spec §1.1-1.3)."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import NameOID

from ntf_server.transport import certs, tls
from ntf_server.transport.certs import SignAlgorithm

DER = serialization.Encoding.DER


@dataclass(frozen=True)
class ServerSide:
    version: str | None
    cipher: str
    alpn: str | None
    tls_unique: bytes


@dataclass(frozen=True)
class Creds:
    dir: Path
    key_hash: bytes
    alg: SignAlgorithm

    def server_context(self) -> ssl.SSLContext:
        return tls.server_context(self.dir / "server.crt", self.dir / "server.key", self.dir / "ca.crt")


@pytest.fixture(params=[SignAlgorithm.ED448, SignAlgorithm.ED25519])
def creds(request: pytest.FixtureRequest, tmp_path: Path) -> Creds:
    made = certs.create_credentials(tmp_path, "localhost", request.param)
    return Creds(tmp_path, made.key_hash, request.param)


@asynccontextmanager
async def serving(ctx: ssl.SSLContext) -> AsyncIterator[tuple[int, asyncio.Queue[ServerSide]]]:
    seen: asyncio.Queue[ServerSide] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        so = writer.get_extra_info("ssl_object")
        seen.put_nowait(ServerSide(so.version(), so.cipher()[0], tls.negotiated_alpn(so), tls.tls_unique(so)))
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def connect(port: int, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=""), 10)


def chain_of(creds: Creds) -> list[bytes]:
    return [
        x509.load_pem_x509_certificate((creds.dir / name).read_bytes()).public_bytes(DER)
        for name in ("server.crt", "ca.crt")
    ]


async def test_tls13_chacha_handshake_pins_chain_and_agrees_on_tls_unique(creds: Creds) -> None:
    async with serving(creds.server_context()) as (port, seen):
        reader, writer, leaf_key = await tls.connect_pinned(
            "127.0.0.1", port, tls.ntf_client_context(), creds.key_hash, timeout_s=10
        )
        so = writer.get_extra_info("ssl_object")
        server = await asyncio.wait_for(seen.get(), 10)
        assert await reader.read() == b"hello"
        writer.close()
    assert so.version() == server.version == "TLSv1.3"
    assert so.cipher()[0] == server.cipher  # OpenSSL's default TLS 1.3 suites (the SimpleX peer case: below)
    assert tls.tls_unique(so) == server.tls_unique
    assert len(server.tls_unique) == (48 if server.cipher.endswith("SHA384") else 32)  # Finished size
    assert server.alpn == tls.NTF_ALPN
    assert tls.peer_chain_der(so) == chain_of(creds)
    expected = ed448.Ed448PublicKey if creds.alg is SignAlgorithm.ED448 else ed25519.Ed25519PublicKey
    assert isinstance(leaf_key, expected)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_simplex_tls_profile_client_negotiates_chacha20_ed_curves(creds: Creds) -> None:
    """A peer with the exact SimpleX TLS profile (spec §1.1: TLS 1.3, only CHACHA20-POLY1305, groups
    X448/X25519, Ed448/Ed25519 signatures) — played by ``openssl s_client`` — is served by our defaults."""
    async with serving(creds.server_context()) as (port, seen):
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
            "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", "-groups", "X448:X25519",
            "-sigalgs", "ed448:ed25519", "-alpn", "ntf/1", "-quiet",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        server = await asyncio.wait_for(seen.get(), 10)
    assert out == b"hello"
    assert server.version == "TLSv1.3"
    assert server.cipher == "TLS_CHACHA20_POLY1305_SHA256"
    assert server.alpn == tls.NTF_ALPN


async def test_no_alpn_client_gets_no_alpn(creds: Creds) -> None:
    async with serving(creds.server_context()) as (port, seen):
        _, writer = await connect(port, tls.ntf_client_context(alpn=False))
        server = await asyncio.wait_for(seen.get(), 10)
        writer.close()
    assert server.alpn is None  # => NTF version range 1..1 (spec §1.7)


async def test_foreign_alpn_in_server_list_counts_as_alpn(creds: Creds) -> None:
    # Haskell selects from ["ntf/1","h2","http/1.1"]; any selected value gives the 1..3 range.
    client = tls.ntf_client_context()
    client.set_alpn_protocols(["h2"])
    async with serving(creds.server_context()) as (port, seen):
        _, writer = await connect(port, client)
        server = await asyncio.wait_for(seen.get(), 10)
        writer.close()
    assert server.alpn == "h2"


async def test_unknown_alpn_is_not_fatal(creds: Creds) -> None:
    client = tls.ntf_client_context()
    client.set_alpn_protocols(["smp/1"])
    async with serving(creds.server_context()) as (port, seen):
        _, writer = await connect(port, client)
        server = await asyncio.wait_for(seen.get(), 10)
        writer.close()
    assert server.alpn is None


async def test_wrong_pin_is_rejected_before_use(creds: Creds) -> None:
    async with serving(creds.server_context()) as (port, _):
        with pytest.raises(tls.ChainError) as err:
            await tls.connect_pinned("127.0.0.1", port, tls.ntf_client_context(), bytes(32), timeout_s=10)
    assert err.value.kind is tls.ChainErrorKind.UNKNOWN_CA


async def test_forced_tls12_client_uses_ecdsa_chacha(creds: Creds) -> None:
    client = tls.ntf_client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(creds.server_context()) as (port, seen):
        _, writer = await connect(port, client)
        so = writer.get_extra_info("ssl_object")
        server = await asyncio.wait_for(seen.get(), 10)
        writer.close()
    assert so.version() == server.version == "TLSv1.2"
    assert server.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert tls.tls_unique(so) == server.tls_unique
    assert len(server.tls_unique) == 12  # TLS 1.2 Finished verify_data (spec §1.3)


async def test_tls12_client_offering_only_aes_is_rejected(creds: Creds) -> None:
    client = tls.ntf_client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    async with serving(creds.server_context()) as (port, seen):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # alert or reset, per timing
            await connect(port, client)
    assert seen.empty()


def test_contexts_carry_the_simplex_settings(creds: Creds) -> None:
    server = creds.server_context()
    assert server.minimum_version is ssl.TLSVersion.TLSv1_2
    assert server.maximum_version is ssl.TLSVersion.TLSv1_3
    assert server.num_tickets == 0
    assert server.options & ssl.OP_NO_TICKET and server.options & ssl.OP_NO_RENEGOTIATION
    assert server.verify_mode is ssl.CERT_NONE  # no client certificates requested
    names = [c["name"] for c in server.get_ciphers()]
    assert "ECDHE-ECDSA-CHACHA20-POLY1305" in names
    assert not [n for n in names if n.startswith("ECDHE") and "CHACHA20" not in n]
    assert "TLS_CHACHA20_POLY1305_SHA256" in names  # the only TLS 1.3 suite SimpleX peers offer
    smp = tls.smp_client_context()
    assert smp.check_hostname is False and smp.verify_mode is ssl.CERT_NONE


async def test_smp_client_sends_no_sni_and_offers_smp_alpn(creds: Creds) -> None:
    sni: list[str | None] = []
    server_ctx = creds.server_context()
    server_ctx.set_alpn_protocols(["smp/1"])
    server_ctx.sni_callback = lambda _obj, name, _ctx: sni.append(name)  # type: ignore[assignment,misc,unused-ignore]
    async with serving(server_ctx) as (port, seen):
        _, writer, _ = await tls.connect_pinned(
            "localhost", port, tls.smp_client_context(), creds.key_hash, timeout_s=10
        )
        server = await asyncio.wait_for(seen.get(), 10)
        writer.close()
    assert server.alpn == "smp/1"
    assert sni == [None]


async def test_openssl_client_with_x448_key_share_gets_x448(creds: Creds) -> None:
    # The Haskell client sends its TLS 1.3 key share for x448 first (spec §1.1); OpenSSL's own client
    # can model that. Not our code under test beyond the server context.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not installed")
    async with serving(creds.server_context()) as (port, _):
        proc = await asyncio.create_subprocess_exec(
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-groups",
            "X448:X25519",
            "-ciphersuites",
            "TLS_CHACHA20_POLY1305_SHA256",
            "-alpn",
            "ntf/1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(b""), 20)
    text = out.decode(errors="replace")
    assert "Server Temp Key: X448" in text
    assert "TLS_CHACHA20_POLY1305_SHA256" in text


# ---------------------------------------------------------------- validate_server_chain


def make_chain(
    alg: SignAlgorithm, n: int, *, now: dt.datetime | None = None, days: int = 10
) -> tuple[list[bytes], bytes]:
    """Chain of n certs, TLS order: [leaf, id, (x,) ca]; returns (DER list, expected key hash)."""
    der = serialization.Encoding.DER
    ca_key, ca = certs.generate_ca(alg, now=now, days=days)
    issuers = [(ca_key, ca)]
    for i in range(n - 2):  # intermediate CAs: reuse generate_ca's shape but sign by the previous CA
        key = alg.new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"i{i}")]))
            .issuer_name(issuers[-1][1].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ca.not_valid_before_utc)
            .not_valid_after(ca.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        issuers.append((key, builder.sign(issuers[-1][0], None)))
    _, leaf = certs.generate_server_cert(issuers[-1][0], issuers[-1][1], "h", alg, now=now, days=days)
    chain = [leaf] + [c for _, c in reversed(issuers)]
    ders = [c.public_bytes(der) for c in chain]
    return ders, certs.fingerprint(ders[1])


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("alg", list(SignAlgorithm))
def test_chain_shapes_2_to_4_accepted(alg: SignAlgorithm, n: int) -> None:
    ders, key_hash = make_chain(alg, n)
    key = tls.validate_server_chain(ders, key_hash)
    leaf = x509.load_der_x509_certificate(ders[0])
    assert key == leaf.public_key()
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain(ders, certs.fingerprint(ders[-1]) if n > 2 else bytes(32))
    assert err.value.kind is tls.ChainErrorKind.UNKNOWN_CA


@pytest.mark.parametrize(("n", "kind"), [(0, "EMPTY_CHAIN"), (1, "EMPTY_CHAIN"), (5, "AUTHORITY_TOO_DEEP")])
def test_chain_lengths_rejected(n: int, kind: str) -> None:
    ders, _ = make_chain(SignAlgorithm.ED25519, 4)
    chain = (ders + ders)[:n] if n != 5 else [*ders[:1], ders[1], ders[1], ders[2], ders[3]]
    key_hash = certs.fingerprint(chain[1]) if n > 1 else certs.fingerprint(ders[1])
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain(chain, key_hash)
    assert err.value.kind is tls.ChainErrorKind[kind]


def test_tampered_signature_rejected() -> None:
    ders, key_hash = make_chain(SignAlgorithm.ED448, 2)
    leaf = bytearray(ders[0])
    leaf[-1] ^= 0x01  # last byte is inside the signature BIT STRING
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain([bytes(leaf), ders[1]], key_hash)
    assert err.value.kind is tls.ChainErrorKind.INVALID_SIGNATURE


def test_leaf_from_another_ca_rejected() -> None:
    ders, key_hash = make_chain(SignAlgorithm.ED25519, 2)
    other, _ = make_chain(SignAlgorithm.ED25519, 2)
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain([other[0], ders[1]], key_hash)
    assert err.value.kind is tls.ChainErrorKind.INVALID_SIGNATURE


def test_expired_and_future_certificates_rejected() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    ders, key_hash = make_chain(SignAlgorithm.ED25519, 2, now=past, days=10)
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain(ders, key_hash)
    assert err.value.kind is tls.ChainErrorKind.EXPIRED
    assert tls.validate_server_chain(ders, key_hash, now=past + dt.timedelta(days=1))
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain(ders, key_hash, now=past - dt.timedelta(days=1))
    assert err.value.kind is tls.ChainErrorKind.IN_FUTURE


def test_issuer_without_ca_flag_rejected() -> None:
    # A leaf "issued" by another leaf: names and signature line up, but the issuer is not a CA.
    ca_key, ca = certs.generate_ca(SignAlgorithm.ED25519)
    mid_key, mid = certs.generate_server_cert(ca_key, ca, "mid", SignAlgorithm.ED25519)
    _, leaf = certs.generate_server_cert(mid_key, mid, "leaf", SignAlgorithm.ED25519)
    der = serialization.Encoding.DER
    chain = [leaf.public_bytes(der), mid.public_bytes(der), ca.public_bytes(der)]
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain(chain, certs.fingerprint(chain[1]))
    assert err.value.kind is tls.ChainErrorKind.NOT_CA


def test_garbage_certificate_rejected() -> None:
    ders, key_hash = make_chain(SignAlgorithm.ED25519, 2)
    with pytest.raises(tls.ChainError) as err:
        tls.validate_server_chain([b"\x30\x03\x02\x01\x00", ders[1]], key_hash)
    assert err.value.kind is tls.ChainErrorKind.MALFORMED


def test_tls_unique_missing_is_an_error() -> None:
    class NoBinding:
        def get_channel_binding(self, _cb_type: str = "tls-unique") -> bytes | None:
            return None

    with pytest.raises(tls.TlsError):
        tls.tls_unique(NoBinding())  # type: ignore[arg-type]


def test_no_memory_layout_tricks_in_our_packages() -> None:
    """Reading C structures out of Python objects (``from_address``/``from_buffer`` on ``id(...)``) breaks
    with any change of CPython's object layout, as a crash rather than an error: none of it in our code."""
    root = Path(tls.__file__).resolve().parents[2]
    offenders = []
    for pkg in ("ntf_server", "apns"):
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in {"from_address", "from_buffer"}:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
