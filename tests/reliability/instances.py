"""Two ``ntf-server start`` processes from copies of one configuration on one Redis, an APNs simulator, and
devices registered through them (the scheduled-work kill -9 tests and tests/bench/two_instances.py).

What the processes do is observed where an operator would look: the APNs simulator's recorded pushes and
answers still pending (``in_flight``), and Redis (the due indexes, the job leases)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio
from server_process import ServerProcess, Settings, error_lines, free_port, init_config, set_key

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.protocol import crypto, ntf as P, smp as S
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.subscriber.leases import LEASE_INSTANCE_FILE

TOPIC = "chat.simplex.app"
FAST: Settings = {  # leases and claims short, so a takeover after kill -9 takes seconds
    ("registration", "per_connection_per_min"): 0.0, ("registration", "per_ip_per_min"): 0.0,
    ("subscriber", "lease_ttl_s"): 2.0, ("subscriber", "lease_renew_s"): 0.5,
    ("push", "claim_lease_s"): 2.0, ("push", "defer_scan_s"): 0.1, ("push", "cron_scan_s"): 1.0,
    ("push", "retry_backoff_base_s"): 0.2, ("push", "retry_backoff_cap_s"): 0.5,
}


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str = "") -> float:
    """Seconds until ``check`` holds (polled: processes, stand-ins and Redis share no event with the test)."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                got = check()
                if got if isinstance(got, bool) else await got:
                    return time.monotonic() - t0
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


@dataclass
class Device:
    app: SimApp
    queues: list[tuple[SmpServerStandIn, QueueCredentials]] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.app.device_token.token.decode()

    def message_ids(self, body: bytes) -> list[bytes]:
        """The message ids of one push's notifications, as the app decrypts them."""
        creds = {c.notifier_id: c for _, c in self.queues}
        out = []
        for item in self.app.message_list(body):
            where, _, nonce, meta = item.split(" ")
            nid = b64u_decode(where.rpartition("/")[2])
            out.append(S.decrypt_nmsg_meta(creds[nid].rcv_ntf_dh_secret, b64u_decode(nonce), b64u_decode(meta)).msg_id)
        return out


@dataclass
class Pair:
    sim: ApnsSimulator
    a: ServerProcess
    b: ServerProcess
    redis_url: str
    prefix: str
    r: redis.asyncio.Redis
    names: dict[str, str]  # instance id -> "a" | "b"

    def errors(self) -> list[str]:
        """Error and traceback lines in either instance's log."""
        return [line for p in (self.a, self.b) if p.log_path is not None for line in error_lines(p.log_path)]

    def process(self, name: str) -> ServerProcess:
        return self.a if name == "a" else self.b

    def in_flight(self) -> int:
        """Pushes the simulator recorded (delivered, for the device) and has not answered yet."""
        return sum(c.pending for c in self.sim.conns)

    def pushes(self, d: Device, kind: bytes = b"") -> list[bytes]:
        return [p.body for p in self.sim.pushes(d.token) if kind in p.body]

    async def zcard(self, key: str) -> int:
        return int(await self.r.zcard(self.prefix + key))

    async def idle(self) -> bool:
        """Nothing scheduled is due or claimed: no outbox entry, no pending deferred push."""
        return await self.zcard("obq") == 0 and await self.zcard("dfr") == 0

    def token_key(self, d: Device) -> str:
        return f"{self.prefix}t{{{d.app.token_id.hex()}}}"

    async def last_notices(self, devices: list[Device]) -> list[dict[bytes, bytes]]:
        """Each device's stored last notification per subscription (``t{T}:ln``): a notice is stored once its
        entry changed."""
        return [dict(await self.r.hgetall(self.token_key(d) + ":ln")) for d in devices]

    async def lease_owners(self) -> list[str | None]:
        """The owner ("a", "b" or None) of every SMP server with subscriptions, as Redis has it."""
        counts = await self.r.hgetall(self.prefix + "srv:count")
        values = [await self.r.get(f"{self.prefix}ls:{int(n)}") for n, c in counts.items() if int(c) > 0]
        return [self.names.get(v.decode().partition(" ")[2]) if v else None for v in values]

    async def job_holder(self, job: str) -> str | None:
        v = await self.r.get(f"{self.prefix}lj:{job}")
        return self.names.get(v.decode().partition(" ")[2]) if v else None

    async def register(self, n: int, stand_ins: list[SmpServerStandIn], *, queues: int = 1) -> list[Device]:
        """``n`` devices, registered and verified half through each instance, device i with ``queues`` queues
        on stand-in i mod their number (SNEW through either instance, whoever owns the SMP server)."""
        clients = [await NtfClient.connect("127.0.0.1", s.port, s.key_hash) for s in (self.a, self.b)]
        devices = []
        try:
            for i in range(n):
                client = clients[i % 2]
                d = Device(SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())))
                assert isinstance(await d.app.register(client), P.IdTkn)
                push = await self.sim.next_push(d.token, 30)
                assert await d.app.token_command(client, P.TVfy(d.app.verification_code(push.body))) == P.Ok()
                for smp in stand_ins[i % len(stand_ins):][:1] if stand_ins else []:
                    for _ in range(queues):
                        nkey = crypto.generate_ed25519()
                        creds, _ = smp.create_queue(crypto.public_of(nkey))
                        assert isinstance(await d.app.subscribe(clients[(i + 1) % 2], smp.address,
                                                                creds.notifier_id, nkey), P.IdSub)
                        d.queues.append((smp, creds))
                devices.append(d)
        finally:
            for c in clients:
                await c.close()
        await until(lambda: all(smp.subscriber_of(c.notifier_id) is not None
                                for d in devices for smp, c in d.queues),
                    30, "every queue subscribed")
        return devices


async def lease_owners(url: str, prefix: str) -> list[str | None]:
    """The owner (instance id) of every SMP server with subscriptions, read from Redis as an operator would."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        counts = await client.hgetall(prefix + "srv:count")
        values = [await client.get(f"{prefix}ls:{int(n)}") for n, c in counts.items() if int(c) > 0]
    finally:
        await client.aclose()
    return [v.decode().split(" ")[1] if v else None for v in values]


def decrypt(app: SimApp, item: str, creds: dict[bytes, QueueCredentials]) -> bytes:
    """The message id of one notification of a push's list, as the app decrypts it."""
    where, _, nonce, enc_meta = item.split(" ")
    nid = b64u_decode(where.rpartition("/")[2])
    return S.decrypt_nmsg_meta(creds[nid].rcv_ntf_dh_secret, b64u_decode(nonce), b64u_decode(enc_meta)).msg_id


def last_message(app: SimApp, body: bytes, creds: dict[bytes, QueueCredentials]) -> bytes:
    return decrypt(app, app.message_list(body)[-1], creds)


def verification_free(pushes: list[bytes]) -> list[bytes]:
    return [b for b in pushes if b'"verification"' not in b]


@contextlib.asynccontextmanager
async def two_instances(directory: Path, redis_url: str, settings: Settings) -> AsyncIterator[Pair]:
    """Instances "a" and "b" from copies of one configuration (same certificates, store key, Redis and key
    prefix; their own ports and state directories), both started; stopped (SIGTERM) on exit."""
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = directory / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    p8.chmod(0o600)
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1) as sim:
        cfg_a = init_config(directory / "a", {
            ("redis", "url"): redis_url, ("apns.test", "enabled"): True, ("apns.test", "host"): "127.0.0.1",
            ("apns.test", "port"): sim.port, ("apns.test", "ca_file"): str(sim.ca_file),
            ("apns.test", "key_file"): str(p8), ("apns.test", "key_id"): key.key_id,
            ("apns.test", "team_id"): key.team_id, ("apns.test", "topic"): TOPIC, ("admin", "enabled"): True,
            **FAST, **settings,
        })
        cfg_b = directory / "b"
        shutil.copytree(cfg_a, cfg_b)
        toml = cfg_b / "ntf-server.toml"
        toml.write_text(set_key(set_key(toml.read_text(), "server", "port", free_port()),
                                "server", "state_dir", str(cfg_b / "state")))
        m = re.search(r'^key_prefix = "(.*)"$', toml.read_text(), re.M)
        assert m is not None
        a, b = ServerProcess(cfg_a, directory / "a.log"), ServerProcess(cfg_b, directory / "b.log")
        r = redis.asyncio.Redis.from_url(redis_url)
        try:
            await asyncio.gather(a.start(), b.start())  # independent processes: started side by side
            names = {(cfg / "state" / LEASE_INSTANCE_FILE).read_text().strip(): name
                     for cfg, name in ((cfg_a, "a"), (cfg_b, "b"))}
            yield Pair(sim, a, b, redis_url, m.group(1), r, names)
        finally:
            await a.stop()
            await b.stop()
            await r.aclose()
