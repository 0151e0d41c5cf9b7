"""`ntf-server demo`: runs from an installation alone, tells what really happened, and leaves nothing behind.

The summary is checked against the events themselves (what the APNs simulator received and the phone
decrypted), never against figures typed into the test, so the same tests hold today (every message push
is an alert) and once the hidden-push budget and the admin API are in the build.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from ntf_server.demo import report
from ntf_server.demo.admin import ADMIN_API_IN_BUILD, NOT_AVAILABLE, AdminApi, AdminError, config_accepts_admin
from ntf_server.demo.report import Item, Phase, PushKind, Record, Seen, Sent
from ntf_server.demo.script import START_POLICY, run_demo

NTF_SERVER = Path(sys.executable).parent / "ntf-server"  # the console script the installation made
ROW = re.compile(r"^\s+(?P<label>\d burst|\d after policy change|total)\s.*?"
                 r"(?P<nums>(?:\s+\d+){7})\s*$")
DECRYPTED = re.compile(r"device decrypted \d+ notification\(s\) \[(?P<msgs>[^\]]*)\]")
WORKSPACE = re.compile(r"workspace (?P<path>\S+) \(removed at the end\)")


def summary_rows(text: str) -> dict[str, list[int]]:
    """label -> [sent, pushes, hidden, alert, other, own push, on device] as printed."""
    return {m["label"]: [int(n) for n in m["nums"].split()] for m in map(ROW.match, text.splitlines()) if m}


def workspace_removed(text: str) -> bool:
    workspace = WORKSPACE.search(text)
    assert workspace is not None, text
    return not Path(workspace["path"]).exists()


def check_summary(text: str, messages: int, more: int) -> None:
    """The printed table adds up, and agrees with the lines saying what the phone decrypted."""
    rows = summary_rows(text)
    assert set(rows) == {"1 burst", "2 after policy change", "total"}, text
    for label, (sent, pushes, hidden, alert, other, own, reached) in rows.items():
        assert pushes == hidden + alert + other and other == 0, label
        assert own <= sent and reached <= sent and own <= pushes, label
    assert rows["1 burst"][0] == messages and rows["2 after policy change"][0] == more
    assert [sum(v) for v in zip(rows["1 burst"], rows["2 after policy change"], strict=True)] == rows["total"]
    assert rows["1 burst"][2] <= START_POLICY.burst  # never more hidden pushes than the budget
    burst = rows["1 burst"]
    assert burst[5] == burst[6] == messages  # overflow "alert": every message gets a push and arrives
    decrypted = {m.strip() for line in DECRYPTED.finditer(text) for m in line["msgs"].split(",")}
    assert len(decrypted) == rows["total"][6]
    assert len(DECRYPTED.findall(text)) == rows["total"][1]  # every message push was decrypted
    if not ADMIN_API_IN_BUILD:
        assert NOT_AVAILABLE in text
        assert rows["2 after policy change"][5] == more  # the policy did not change: nothing held back


async def test_the_demo_tells_what_happened_and_cleans_up() -> None:
    lines: list[str] = []
    result = await run_demo(messages=5, more=3, out=lines.append)
    text = "\n".join(lines)
    check_summary(text, 5, 3)
    record = result.record
    verification = [s for s in record.seen if s.kind is PushKind.VERIFICATION]
    assert len(verification) == 1 and verification[0].push_type == "background" and verification[0].priority == 5
    for seen in record.seen:
        if seen.kind is PushKind.HIDDEN:
            assert (seen.push_type, seen.priority) == ("background", 5)
        if seen.kind is PushKind.ALERT:
            assert seen.push_type == "alert"
        assert all(item.queue.startswith("queue ") and item.server in "AB" for item in seen.items)
    assert {s.server for s in record.sent} == {"A", "B"}  # both SMP servers took part
    assert result.workdir is not None and not result.workdir.exists()
    # queue ids (24 random bytes: 32 base64url characters) never appear; the only long one is the fingerprint
    long_words = {w for line in lines if "ntf://" not in line for w in re.findall(r"[A-Za-z0-9_=-]{20,}", line)}
    assert {w for w in long_words if re.search("[A-Za-z0-9]", w) and not w.startswith("ntf-demo-")} == set()


async def test_ntf_server_demo_as_installed() -> None:
    assert NTF_SERVER.exists(), "the ntf-server console script is part of the installation"
    done = await asyncio.to_thread(
        subprocess.run, [str(NTF_SERVER), "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_summary(done.stdout, 8, 4)
    assert workspace_removed(done.stdout)
    assert done.stderr == ""


async def test_keep_running_stays_up_until_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(NTF_SERVER), "demo", "--messages", "2", "--more", "1", "--keep-running",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not seen or "stop with Ctrl-C" not in seen[-1]:
                line = (await proc.stdout.readline()).decode()
                assert line, "\n".join(seen)
                seen.append(line)
            while not seen[-1].startswith("  configuration:"):
                seen.append((await proc.stdout.readline()).decode())
        text = "".join(seen)
        assert re.search(r"server address: ntf://\S+@127\.0\.0\.1:\d+", text)
        assert "admin API: http://127.0.0.1:" in text if ADMIN_API_IN_BUILD else f"admin API: {NOT_AVAILABLE}" in text
        await asyncio.sleep(0.5)
        assert proc.returncode is None  # still up
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await proc.wait() == 0
    assert workspace_removed(text)
    assert "Stopped everything" in out.decode()


def test_the_admin_flag_follows_the_build() -> None:
    """Switch ADMIN_API_IN_BUILD on when config.py accepts `admin.enabled = true` (the admin API landed)."""
    assert config_accepts_admin() == ADMIN_API_IN_BUILD


def _seen(phase: int, number: int, kind: PushKind, *messages: str) -> Seen:
    push_type = "alert" if kind is PushKind.ALERT else "background"
    return Seen(phase, number, kind, push_type, 10 if kind is PushKind.ALERT else 5, 4000,
                tuple(Item("A", "queue A1", m) for m in messages))


def test_the_summary_counts_hidden_alert_and_held_back() -> None:
    """The budget's story (3 hidden, then alerts; then deferred) as the table will show it."""
    record = Record([Phase(1, "1 burst", "p1"), Phase(2, "2 after policy change", "p2")])
    record.sent = [Sent(1, "A", "queue A1", f"m{i}") for i in range(1, 6)] + [Sent(2, "A", "queue A1", "m6"),
                                                                               Sent(2, "A", "queue A1", "m7")]
    record.seen = [_seen(0, 1, PushKind.VERIFICATION)]
    record.seen += [_seen(1, i + 1, PushKind.HIDDEN if i <= 3 else PushKind.ALERT, *[f"m{j}" for j in range(1, i + 1)])
                    for i in range(1, 6)]
    rows = report.rows(record)
    assert [(r.sent, r.pushes, r.hidden, r.alert, r.own_push, r.reached) for r in rows] == [
        (5, 5, 3, 2, 5, 5), (2, 0, 0, 0, 0, 0), (7, 5, 3, 2, 5, 5)]
    text = "\n".join(report.table(record) + report.notes(record, budget_configured=True))
    assert "2 message(s) did not reach the device" in text and "No hidden pushes" not in text
    assert summary_rows("\n".join("  " + line for line in report.table(record)))["total"] == [7, 5, 3, 2, 0, 5, 5]


@pytest.mark.parametrize(("push_type", "body", "kind"), [
    ("background", {"aps": {"content-available": 1}, "notificationData": {"verification": "x"}},
     PushKind.VERIFICATION),
    ("background", {"aps": {"content-available": 1}, "notificationData": {"checkMessages": True}}, PushKind.HIDDEN),
    ("alert", {"aps": {"mutable-content": 1, "alert": "Encrypted message"}}, PushKind.ALERT),
    ("alert", {"aps": {"alert": "no extension"}}, PushKind.OTHER),
    ("background", {"aps": {"mutable-content": 1}}, PushKind.OTHER),
])
def test_pushes_are_classified_from_what_apns_received(push_type: str, body: dict[str, object],
                                                       kind: PushKind) -> None:
    assert report.classify(push_type, body) is kind


async def test_the_admin_client_speaks_the_contract() -> None:
    """AdminApi against a stand-in serving the issue-10 contract (PUT /v1/policy, GET /v1/stats, bearer
    token), so the demo's side of the seam is tried before the real admin API lands."""
    got: list[tuple[str, str | None, object]] = []

    async def policy(request: web.Request) -> web.Response:
        got.append((request.method, request.headers.get("Authorization"), await request.json()))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(await request.json())

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"pushes": {"hidden": 3, "alert": 5}})

    app = web.Application()
    app.router.add_put("/v1/policy", policy)
    app.router.add_get("/v1/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        api = AdminApi(f"http://127.0.0.1:{port}", "s3cret")
        assert await api.put_policy(3, 3, "defer") == {"hidden_per_hour": 3, "burst": 3, "overflow": "defer"}
        assert got == [("PUT", "Bearer s3cret", {"hidden_per_hour": 3, "burst": 3, "overflow": "defer"})]
        assert await api.stats() == {"pushes": {"hidden": 3, "alert": 5}}
        with pytest.raises(AdminError, match="HTTP 401"):
            await AdminApi(api.url, "wrong").put_policy(3, 3, "alert")
    finally:
        await runner.cleanup()
    with pytest.raises(AdminError, match="PUT /v1/policy"):  # nobody listening any more
        await api.put_policy(3, 3, "alert")
