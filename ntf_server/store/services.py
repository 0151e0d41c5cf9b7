"""Our SMP service per SMP server (``[subscriber] use_service_credentials``): its certificate and key, the
service id the SMP server gave it, and the subscriptions tied to it (count and IdsHash).

Keys (keys.py): `P svc:<server number>` hash: c (sealed certificate chain), k (sealed private key), i (the
service id), n (count of subscriptions tied to the service), h (their IdsHash: XOR of MD5(notifier id)).
The certificate and key are created when first needed (``credentials``; two instances agree, the first
stored wins) and sealed like every secret at rest (atrest.py). n and h change in the same script as the
subscription statuses (scripts.py SET_SUB_STATUS, whose callers pass the MD5s), so they never disagree
with the records' `assoc` flags; a deleted tied subscription is untied right after its deletion script
(servers.py ``untie_deleted``: the scripts cannot compute MD5 and the notifier ids are sealed), so a crash in between
leaves the count one off: the next NSUBS then reports drift, and the subscriber re-subscribes that
server's tied queues one by one and sets the count and IdsHash from the records it paged (``set_ties``;
Haskell keeps them with triggers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.encoding import CodecError, Reader, SMPServer, enc_large, enc_nonempty
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.base import ServiceState, ServiceStore
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.sub_scripts import SubScripts


def md5_of(notifier_ids: Iterable[bytes]) -> list[bytes]:
    return [S.queue_ids_hash([n]) for n in notifier_ids]


class RedisServices:
    def __init__(self, data: DataSet, servers: ServerRegistry) -> None:
        self._d = data
        self._servers = servers
        self._lua = SubScripts(data)

    def __repr__(self) -> str:
        return f"<RedisServices prefix={self._d.keys.prefix!r}>"

    def _key(self, srv: int) -> str:
        return self._d.keys.g(f"svc:{srv}")

    async def _number(self, server: SMPServer) -> int:
        n = await self._servers.number(server.normalized(), create=True)
        assert n is not None
        return n

    async def credentials(self, server: SMPServer, make: Callable[[], ServiceCredentials]) -> ServiceCredentials:
        """Our service certificate and key for ``server``; made by ``make`` (and stored, sealed) when first
        needed — unless another instance stored some first: then those."""
        srv = await self._number(server)
        aad = b"svc" + str(srv).encode()
        stored = await self._d.call(self._d.r.hmget, self._key(srv), "c", "k")
        if stored[0] is None or stored[1] is None:
            new = make()
            stored = await self._lua.set_service_creds(
                srv, self._d.a.seal(enc_nonempty(new.chain, enc_large), b"c" + aad),
                self._d.a.seal(crypto.encode_private_key(new.key), b"k" + aad))
        try:
            chain_der = tuple(Reader(self._d.a.open(stored[0], b"c" + aad)).nonempty(Reader.large))
            key = crypto.decode_private_key(self._d.a.open(stored[1], b"k" + aad))
        except CodecError as e:
            raise StoreError(f"corrupted service credentials: {e}") from e
        if not isinstance(key, Ed25519PrivateKey | Ed448PrivateKey):
            raise StoreError("service key is not a signing key")
        return ServiceCredentials(chain_der, key)

    async def state(self, server: SMPServer) -> ServiceState:
        srv = await self._number(server)
        sid, n, h = await self._d.call(self._d.r.hmget, self._key(srv), "i", "n", "h")
        return ServiceState(sid or None, int(n or 0), h or S.EMPTY_IDS_HASH)

    async def set_ties(self, server: SMPServer, count: int, ids_hash: bytes) -> None:
        """The count and IdsHash as counted from the records (after all were untied: 0 and the empty hash;
        after a drift: the tied records paged), whatever a crash between a deletion and its untie left."""
        srv = await self._number(server)
        await self._d.call(self._d.r.hset, self._key(srv), None, None, {"n": count, "h": ids_hash})

    async def set_service_id(self, server: SMPServer, service_id: bytes | None) -> None:
        srv = await self._number(server)
        if service_id is None:
            await self._d.call(self._d.r.hdel, self._key(srv), "i")
        else:
            await self._d.call(self._d.r.hset, self._key(srv), "i", service_id)


async def carry_service(store: ServiceStore, server: SMPServer, creds: ServiceCredentials, service_id: bytes) -> None:
    """(import-simplex, move-store) The imported service for ``server`` becomes ours, unless we already have
    one there (then its imported ties, which were the Haskell service's, make the first NSUBS drift, and the subscriber
    recounts); the count and IdsHash are counted from the tied records, so a second run of the import
    leaves them right."""
    ours = await store.service_credentials(server, lambda: creds)
    if ours.cert_hash == creds.cert_hash:
        await store.set_service_id(server, service_id)
    tied = [s.notifier_id async for page in store.tied_subscriptions(server) for s in page]
    await store.set_service_ties(server, len(tied), S.queue_ids_hash(tied))
