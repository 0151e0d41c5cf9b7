"""SMP client session CPU cost (run by hand, not collected by pytest).

Measures, in one process and without sockets, what the sans-IO layer costs per queue: building NSUB
blocks (signature + encoding + block encryption at v18) and turning the server's answer blocks into
events, against the floor of one Ed25519 signature (each NSUB needs one). The issue-9 goal for the whole
ntf-server is CPU per subscription ≤ 2.0 × one signature; this shows the protocol layer's share.

    .venv/bin/python tests/bench/smp_session_bench.py            # 20,000 queues, 5 rounds
    .venv/bin/python tests/bench/smp_session_bench.py --queues 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from cryptography.hazmat.primitives import serialization

from ntf_server.protocol import crypto
from ntf_server.protocol.framing import VersionRange
from ntf_server.protocol.smp_client import client_handshake
from ntf_server.protocol.smp_session import NotifierQueue, SmpClientSession
from ntf_server.sim.smp_core import SmpServerCore, accept_client_hello, server_hello_block
from ntf_server.transport import certs

SID = bytes(range(32))


def pair(version: int) -> tuple[SmpClientSession, SmpServerCore, object]:
    ca_key, ca = certs.generate_ca(certs.SignAlgorithm.ED25519)
    leaf_key, leaf = certs.generate_server_cert(ca_key, ca, "localhost", certs.SignAlgorithm.ED25519)
    chain = (leaf.public_bytes(serialization.Encoding.DER), ca.public_bytes(serialization.Encoding.DER))
    dh = crypto.generate_x25519()
    vr = VersionRange(6, version)
    hs = client_handshake(server_hello_block(vr, SID, chain, leaf_key, dh), key_hash=certs.fingerprint(chain[1]),
                          tls_unique=SID, peer_chain=list(chain))
    server = accept_client_hello(hs.client_hello, 1, versions=vr, key_hash=certs.fingerprint(chain[1]),
                                 session_id=SID, dh_key=dh)
    return SmpClientSession(hs, now=0.0), SmpServerCore(), server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--version", type=int, default=18)
    args = ap.parse_args()
    keys = [crypto.generate_ed25519() for _ in range(args.queues)]
    msg = bytes(100)
    sign_t, build_t, recv_t = [], [], []
    for _ in range(args.rounds):
        t0 = time.process_time()
        for k in keys:
            k.sign(msg)
        sign_t.append((time.process_time() - t0) / args.queues)
        client, core, server = pair(args.version)
        queues = [NotifierQueue(core.create_queue(k.public_key(), bytes(32)), k) for k in keys]
        t0 = time.process_time()
        blocks = client.subscribe(queues)
        build_t.append((time.process_time() - t0) / args.queues)
        answers = [b for blk in blocks for b in server.encode(core.receive_block(server, blk))]  # type: ignore[attr-defined]
        t0 = time.process_time()
        n = sum(len(client.receive_block(b, now=1.0)) for b in answers)
        recv_t.append((time.process_time() - t0) / args.queues)
        assert n == args.queues
    sign, build, recv = (statistics.median(x) for x in (sign_t, build_t, recv_t))
    print(f"v{args.version}, {args.queues} queues, {len(blocks)} NSUB blocks, median of {args.rounds} rounds (CPU)")
    print(f"  Ed25519 signature:       {sign * 1e6:7.1f} µs")
    print(f"  NSUB build (sign+block): {build * 1e6:7.1f} µs  = {build / sign:4.2f} × signature")
    print(f"  OK/SOK → event:          {recv * 1e6:7.1f} µs  = {recv / sign:4.2f} × signature")
    print(f"  session total per queue: {(build + recv) * 1e6:7.1f} µs  = {(build + recv) / sign:4.2f} × signature")


if __name__ == "__main__":
    main()
