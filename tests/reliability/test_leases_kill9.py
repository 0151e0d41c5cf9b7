"""Two ``ntf-server start`` processes from copies of one configuration on one Redis (issue 18): every SMP
server subscribed by exactly one of them; kill -9 of one, and the other subscribes its SMP servers' queues
within the lease time (``lease_ttl_s`` + ``lease_renew_s``); the notifications sent meanwhile (kept by the
SMP servers) are pushed then, and every notification sent afterwards is pushed exactly once. Before leases
(issue 18's measurement): the dead one's queues were never subscribed again."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from helpers.e2e_env import TOPIC
from instances import decrypt, last_message, lease_owners, until
from server_process import ServerProcess, free_port, init_config, set_key
from watch import LogWatch

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.subscriber.leases import LEASE_INSTANCE_FILE

TTL_S, RENEW_S = 2.0, 0.5  # as instances.FAST: a takeover within seconds
STAND_INS, QUEUES = 4, 6  # 24 queues, 6 per SMP server: each NMSG is waited on in turn, twice


async def test_kill_9_of_one_of_two_instances_its_smp_servers_are_taken_over(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object], log_watch: LogWatch) -> None:
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    p8.chmod(0o600)
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1) as sim:
        cfg_a = init_config(tmp_path / "a", {
            ("redis", "url"): redis_url, ("registration", "per_connection_per_min"): 0.0,
            ("registration", "per_ip_per_min"): 0.0, ("apns.test", "enabled"): True,
            ("apns.test", "host"): "127.0.0.1", ("apns.test", "port"): sim.port,
            ("apns.test", "ca_file"): str(sim.ca_file), ("apns.test", "key_file"): str(p8),
            ("apns.test", "key_id"): key.key_id, ("apns.test", "team_id"): key.team_id,
            ("apns.test", "topic"): TOPIC, ("push", "hidden_per_hour"): 0.0,
            ("subscriber", "lease_ttl_s"): TTL_S, ("subscriber", "lease_renew_s"): RENEW_S,
        })
        cfg_b = tmp_path / "b"  # a copy of the configuration: same certificates, store key, Redis and prefix
        shutil.copytree(cfg_a, cfg_b)
        toml = cfg_b / "ntf-server.toml"
        toml.write_text(set_key(set_key(toml.read_text(), "server", "port", free_port()),
                                "server", "state_dir", str(cfg_b / "state")))
        prefix = re.search(r'^key_prefix = "(.*)"$', toml.read_text(), re.M).group(1)  # type: ignore[union-attr]
        a, b = ServerProcess(cfg_a), ServerProcess(cfg_b)
        stand_ins: list[SmpServerStandIn] = [await make_server() for _ in range(STAND_INS)]  # type: ignore[misc]
        await asyncio.gather(a.start(), b.start())  # independent processes: started side by side
        try:
            client_a = await NtfClient.connect("127.0.0.1", a.port, a.key_hash)
            client_b = await NtfClient.connect("127.0.0.1", b.port, b.key_hash)
            app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
            assert isinstance(await app.register(client_a), P.IdTkn)
            device = app.device_token.token.decode()
            push = await sim.next_push(device, 30)
            assert await app.token_command(client_a, P.TVfy(app.verification_code(push.body))) == P.Ok()
            queues: dict[bytes, tuple[SmpServerStandIn, QueueCredentials]] = {}
            for i, smp in enumerate(stand_ins):
                for j in range(QUEUES):
                    nkey = crypto.generate_ed25519()
                    creds, _ = smp.create_queue(crypto.public_of(nkey))
                    client = client_a if (i + j) % 2 else client_b  # SNEWs on both, whoever owns the server
                    assert isinstance(await app.subscribe(client, smp.address, creds.notifier_id, nkey), P.IdSub)
                    queues[creds.notifier_id] = (smp, creds)
            await client_a.close()
            await client_b.close()

            def all_subscribed() -> bool:
                return all(smp.subscriber_of(nid) is not None for nid, (smp, _) in queues.items())

            await until(all_subscribed, 30)
            assert [smp.connections for smp in stand_ins] == [1] * STAND_INS  # one instance each
            ids = {(cfg / "state" / LEASE_INSTANCE_FILE).read_text().strip(): name
                   for cfg, name in ((cfg_a, "a"), (cfg_b, "b"))}
            owners = Counter(ids.get(o or "", "none") for o in await lease_owners(redis_url, prefix))
            assert sum(owners.values()) == STAND_INS and owners["none"] == 0

            def message_pushes() -> list[bytes]:
                return [p.body for p in sim.pushes(device) if b'"message"' in p.body]

            async def notify_each(prefix: bytes) -> None:
                """One NMSG per queue, each after the previous one's push: a push's last notice is its cause
                only while no newer notice of the token is stored (store/scripts.py newest sorts by arrival)."""
                for i, (smp, creds) in enumerate(queues.values()):
                    n = len(message_pushes())
                    smp.notify(creds.notifier_id, prefix + b"%03d" % i, 1_700_000_001)
                    await until(lambda: len(message_pushes()) > n, 30)  # noqa: B023 - awaited in the loop

            await notify_each(b"both-")

            dead, dead_name = (a, "a") if owners["a"] >= owners["b"] else (b, "b")
            await dead.kill9()
            t0 = time.monotonic()
            alive_id = next(i for i, n in ids.items() if n != dead_name)
            # the SMP servers saw the dead one's connections close (an NMSG sent to a connection as it breaks is
            # lost, in SMP as here), then notifications while nobody subscribes its queues
            await until(lambda: sum(smp.connections for smp in stand_ins) == STAND_INS - owners[dead_name], 30)
            for i, (smp, creds) in enumerate(queues.values()):
                smp.notify(creds.notifier_id, b"gap-%03d" % i, 1_700_000_001)

            async def taken_over() -> None:
                while not (all(o == alive_id for o in await lease_owners(redis_url, prefix)) and all_subscribed()  # noqa: ASYNC110
                           and [smp.connections for smp in stand_ins] == [1] * STAND_INS):
                    await asyncio.sleep(0.05)  # ^ the other process's leases and the stand-ins: no common event

            async with asyncio.timeout(TTL_S + RENEW_S + 30):
                await taken_over()
            took_s = time.monotonic() - t0

            creds_of = {n: c for n, (_, c) in queues.items()}
            await until(lambda: len(message_pushes()) >= 2 * len(queues), 30)  # the gap's, kept by the SMP servers
            seen = {decrypt(app, item, creds_of) for body in message_pushes() for item in app.message_list(body)}
            assert {b"gap-%03d" % i for i in range(len(queues))} <= seen  # none lost
            await notify_each(b"after-")
            await asyncio.sleep(2 * RENEW_S)  # a second push of any of them would come by now: none may
            after = Counter(m for body in message_pushes()
                            if (m := last_message(app, body, creds_of)).startswith(b"after-"))
            assert after == {b"after-%03d" % i: 1 for i in range(len(queues))}  # every one pushed, exactly once
            both = Counter(m for body in message_pushes()
                           if (m := last_message(app, body, creds_of)).startswith(b"both-"))
            assert set(both) == {b"both-%03d" % i for i in range(len(queues))}
            assert len(message_pushes()) == 3 * len(queues)  # one push per NMSG: none twice
        finally:
            await a.stop()
            await b.stop()
    print(f"kill -9 of one of two instances ({owners[dead_name]} of {STAND_INS} SMP servers, "
          f"{len(queues)} queues): all its queues subscribed by the other {took_s:.2f} s later "
          f"(lease {TTL_S} s, renewal {RENEW_S} s); {len(queues)} NMSGs sent in the gap all pushed, "
          f"{len(queues)} NMSGs afterwards each pushed once; "
          f"pushes of NMSGs before the kill sent again: {sum(both.values()) - len(queues)}")
    log_watch.assert_clean()
