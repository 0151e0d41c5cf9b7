"""The whole server in cluster mode (README "Cluster mode") on a Valkey cluster of its own: the primary
holding the data set is killed (kill -9) while an app uses the server, its replica is promoted, and the same
server process carries on: NTF commands answer again, and a notification stored after the failover
reaches APNs. No restart, no configuration change."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.e2e_env import Env, active_app, running_env
from helpers.valkey_cluster import ValkeyCluster

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.device import NtfClient
from ntf_server.store.records import Notice

pytestmark = pytest.mark.slow
SMP = SMPServer(("smp1.example.com",), "5223", b"\x07" * 32)
RECOVER_WITHIN_S = 60.0


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
async def cluster_env(tmp_path: Path, own_cluster: ValkeyCluster) -> AsyncIterator[Env]:
    async with running_env(tmp_path, own_cluster.url, cluster=True) as e:
        yield e


async def _push_one(env: Env, nid: bytes, device: str, at_ms: int) -> None:
    assert env.server.push is not None
    await env.server.push.accept(SMP, [Notice(SMP, nid, at_ms, os.urandom(24), os.urandom(144))])
    push = await env.sim.next_push(device)
    assert push.push_type == "alert"


async def test_the_server_survives_a_primary_killed_under_it(cluster_env: Env, own_cluster: ValkeyCluster) -> None:
    env = cluster_env
    server = env.server
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    nid = os.urandom(24)
    assert isinstance(await app.subscribe(client, SMP, nid, crypto.generate_ed25519()), P.IdSub)
    device = app.device_token.token.decode()
    await _push_one(env, nid, device, 1_700_000_000_000)

    # the primary of the token's slot (one-shard: the data set's only one; sharded: its token's shard's)
    primary, replica = own_cluster.owner_of(server.store.shard(app.token_id).prefix + "meta")
    own_cluster.kill(primary)
    answers = []
    async with asyncio.timeout(RECOVER_WITHIN_S):  # ERR STORE while the slot has no primary, then OK again
        while not answers or not isinstance(answers[-1], P.Tkn):
            answers.append(await app.token_command(client, P.TChk()))
            await asyncio.sleep(0.1)
    assert answers[-1] == P.Tkn(P.TokenStatus(P.TokenStatusKind.ACTIVE))
    assert all(isinstance(a, P.Tkn | P.Err) for a in answers)
    with replica.client() as c:
        assert c.execute_command("ROLE")[0] == b"master"
    await _push_one(env, nid, device, 1_700_000_060_000)  # stored and pushed through the promoted replica
    assert env.server is server  # the same process all along
    await client.close()
