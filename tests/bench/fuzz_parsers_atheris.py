"""Coverage-guided fuzzing (atheris, libFuzzer) of the sans-IO parsers every untrusted byte goes through
(issue 16): the NTF server's side (a client's block at versions 1–3 → transmissions → requests, the client
hello) and the SMP client's side (an SMP server's hello and blocks at versions 7–18 → events). The property
is the protocol layer's contract: bad bytes raise ``CodecError`` / ``SmpProtocolError`` or become rejects and
error events; any other exception is a bug, reported by libFuzzer with the input that caused it.

    .venv/bin/pip install atheris        # optional: not a dependency of the project
    .venv/bin/python tests/bench/fuzz_parsers_atheris.py -atheris_runs=1000000 -artifact_prefix=/tmp/

(The network-level fuzzing is tests/reliability/test_ntf_fuzz.py and tests/bench/fuzz_ntf.py.)
"""

from __future__ import annotations

import itertools
import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports(include=["ntf_server.protocol"]):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ntf_server.protocol import crypto, ntf as P
    from ntf_server.protocol.encoding import CodecError, pad
    from ntf_server.protocol.framing import (
        NTF_BLOCK_SIZE,
        SMP_BLOCK_SIZE,
        THParams,
        VersionRange,
        decode_block,
        parse_block,
    )
    from ntf_server.protocol.handshake import NtfClientHello, SmpServerHello
    from ntf_server.protocol.smp_client import SmpHandshake
    from ntf_server.protocol.smp_session import NotifierQueue, SmpClientSession, SmpProtocolError

SESSION = b"s" * 32
SERVER_DH = X25519PrivateKey.generate().public_key()
SMP_VERSIONS = (7, 9, 10, 12, 16, 17, 18)
QUEUES = [NotifierQueue(bytes([i]) * 24, crypto.generate_ed25519()) for i in range(3)]


def ntf_server_side(version: int, data: bytes) -> None:
    params = THParams.ntf(version, SESSION)
    for content in (data, _unpadded(data, NTF_BLOCK_SIZE)):
        if content is None:
            continue
        try:
            items = parse_block(params, content)
        except CodecError:
            continue
        for item in items:
            req = P.decode_request(params, item)
            assert isinstance(req, P.NtfRequest | P.NtfReject), req
    try:
        NtfClientHello.decode(data)
    except CodecError:
        pass


def smp_client_side(version: int, data: bytes) -> None:
    # Plain blocks (no block secret): block encryption would hide the parsers from the fuzzer.
    hs = SmpHandshake(THParams.smp(version, SESSION), b"", VersionRange(6, 18), SERVER_DH, None)
    ids = itertools.count(1)  # corr ids 00…01, 00…02, 00…03: easy for the fuzzer to find
    session = SmpClientSession(hs, now=0.0, random=lambda n: next(ids).to_bytes(n, "big"))
    session.subscribe(QUEUES, now=0.0)
    try:
        session.receive_data(pad(data[: SMP_BLOCK_SIZE - 2], SMP_BLOCK_SIZE), now=1.0)
    except (SmpProtocolError, CodecError):
        pass
    try:
        SmpServerHello.decode(data)
    except CodecError:
        pass


def _unpadded(data: bytes, size: int) -> bytes | None:
    try:
        return decode_block(data[:size].ljust(size, b"#"), size)
    except CodecError:
        return None


def one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    side = fdp.ConsumeIntInRange(0, 1)
    if side == 0:
        ntf_server_side(fdp.ConsumeIntInRange(1, 3), fdp.ConsumeBytes(fdp.remaining_bytes()))
    else:
        smp_client_side(SMP_VERSIONS[fdp.ConsumeIntInRange(0, len(SMP_VERSIONS) - 1)],
                        fdp.ConsumeBytes(fdp.remaining_bytes()))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
