"""deploy/: every file parses, its invariants hold, and the tools that can check it here do (promtool,
systemd-analyze). No Docker engine runs here: the Dockerfile is parsed (dockerfile-parse), not built.
Tools that are missing skip locally and fail under $CI (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ntf_server import cli
from ntf_server.config import AdminConfig, ServerConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def load_yaml(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


# ------------------------------------------------------------------ Dockerfile


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    parser.build_args = {}
    return parser


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


def final_stage(name: str) -> list[str]:
    structure = dockerfile().structure
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return [ins["value"] for ins in structure[last_from:] if ins["instruction"] == name]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = final_stage("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any("useradd" in run and user in run for run in final_stage("RUN"))


def test_dockerfile_exposes_the_default_ports_and_healthchecks_the_admin_api() -> None:
    exposed = {int(p) for value in final_stage("EXPOSE") for p in value.split()}
    assert exposed == {ServerConfig().port, AdminConfig().port}
    (check,) = final_stage("HEALTHCHECK")
    assert f"http://{AdminConfig().bind}:{AdminConfig().port}/healthz" in check
    assert "curl" not in check and "wget" not in check  # neither is in the slim image


def test_dockerfile_volumes_are_the_config_and_state_dirs_compose_mounts() -> None:
    (volume,) = final_stage("VOLUME")
    volumes = set(json.loads(volume))
    env = dockerfile().envs
    assert env["NTF_SERVER_CFG_PATH"] in volumes
    compose = load_yaml("compose.yaml")["services"]["ntf-server"]
    mounted = {v.split(":")[1] for v in compose["volumes"]}
    assert volumes == mounted


def test_dockerfile_copies_exist_and_pass_the_dockerignore() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for value in instructions("COPY"):
        if value.startswith("--from"):
            continue
        *sources, _ = value.split()
        for src in sources:
            assert (REPO / src).exists(), src
            assert src.rstrip("/") in allowed, f"{src} is excluded from the build context"


def pins() -> dict[str, tuple[str, int]]:
    """deploy/constraints.txt: name -> (pinned version, number of hashes)."""
    text = (DEPLOY / "constraints.txt").read_text()
    found = {}
    for entry in re.split(r"\n(?=[A-Za-z])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry)
        if m:
            found[canonicalize_name(m[1])] = (m[2], entry.count("--hash=sha256:"))
    return found


def test_constraints_pin_every_dependency_with_hashes_within_the_floors() -> None:
    """Issue 16.11: the image installs exactly these files; each pin meets pyproject.toml's (security) floors."""
    pinned = pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    required = [Requirement(r) for r in project["project"]["dependencies"]]
    required += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in required:
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(pinned[name][0], prereleases=True), f"{name}=={pinned[name][0]} vs {req}"
    assert all(n >= 1 for _, n in pinned.values()), "a pin without a hash"
    for floor in ("aiohttp>=3.10.11", "cryptography>=42.0.4"):
        assert Requirement(floor).specifier.contains(pinned[canonicalize_name(Requirement(floor).name)][0])


def test_dockerfile_installs_only_hash_checked_packages() -> None:
    (install,) = [r for r in instructions("RUN") if "pip install" in r]
    assert "--require-hashes -r constraints.txt" in install
    assert "--upgrade" not in install  # pip itself comes from the constraints too
    assert "--no-deps --no-build-isolation --no-index ." in install


# ------------------------------------------------------------------ compose


def test_compose_has_redis_with_aof_and_the_server_with_volumes_and_healthchecks() -> None:
    compose = load_yaml("compose.yaml")
    services = compose["services"]
    assert set(services) == {"redis", "ntf-server"}
    redis, server = services["redis"], services["ntf-server"]
    conf_mount = next(v for v in redis["volumes"] if v.startswith("./redis.conf:"))
    assert conf_mount.split(":")[1] in redis["command"]
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    assert "healthcheck" in redis and "healthcheck" in server
    assert server["depends_on"]["redis"]["condition"] == "service_healthy"
    named = {v.split(":")[0] for s in services.values() for v in s["volumes"] if not v.startswith(".")}
    assert named == set(compose["volumes"])
    assert (DEPLOY / server["build"]["context"] / server["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert f"{ServerConfig().port}:{ServerConfig().port}" in server["ports"]
    assert str(AdminConfig().port) not in " ".join(server["ports"])  # the admin API is never published
    assert "/healthz" in " ".join(server["healthcheck"]["test"])


def test_compose_init_command_is_one_the_cli_accepts() -> None:
    """The `docker compose run --rm ntf-server init ...` lines of compose.yaml and deploy/README.md."""
    texts = [(DEPLOY / "compose.yaml").read_text(), (DEPLOY / "README.md").read_text()]
    commands = []
    for text in texts:
        joined = re.sub(r"\\\n#?\s*", " ", text)
        commands += re.findall(r"docker compose run --rm ntf-server (init [^\n]*)", joined)
    assert len(commands) >= 2
    for command in commands:
        args = cli.build_parser().parse_args(shlex.split(command.split("#")[0]))
        assert args.redis_url == "redis://redis:6379/0" and args.state_dir == Path("/var/lib/ntf-server")


# ------------------------------------------------------------------ Prometheus and Grafana


def test_prometheus_rules_pass_promtool() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """deploy/prometheus/alerts.test.yml: series in, alerts (labels and rendered annotations) out."""
    result = subprocess.run([tool("promtool"), "test", "rules", "alerts.test.yml"], cwd=DEPLOY / "prometheus",
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """The token file it names exists only on a real Prometheus host: point it at a temporary one."""
    token = tmp_path / "token"
    token.write_text("x" * 32)
    config = load_yaml("prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"]
    job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert job["static_configs"][0]["targets"] == [f"{AdminConfig().bind}:{AdminConfig().port}"]


def test_alerts_have_a_severity_and_a_summary() -> None:
    rules = [r for g in load_yaml("prometheus/alerts.yml")["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def dashboard() -> Any:
    return json.loads((DEPLOY / "grafana" / "ntf-server-dashboard.json").read_text())


def test_dashboard_panels_have_targets_and_unique_ids() -> None:
    dash = dashboard()
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 15
    for p in graphs:
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "instance"}


# ------------------------------------------------------------------ systemd


def verify_unit(unit: Path) -> str:
    result = subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                            check=False)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f" (rc {result.returncode})")


def test_systemd_unit_verifies_without_warnings(tmp_path: Path) -> None:
    """The unit's ExecStart points at the installed venv; here it is this checkout's ntf-server."""
    text = (DEPLOY / "ntf-server.service").read_text()
    exe = shutil.which("ntf-server") or str(Path(sys.executable).parent / "ntf-server")
    unit = tmp_path / "ntf-server.service"
    unit.write_text(text.replace("/opt/ntf-server/bin/ntf-server", exe))
    assert verify_unit(unit) == ""
    # the check can fail: a misspelt key is reported
    unit.write_text(text.replace("/opt/ntf-server/bin/ntf-server", exe).replace("ProtectHome=", "ProtectHomes="))
    assert "Unknown key" in verify_unit(unit)
    for needed in ("User=ntf", "Restart=on-failure", "ExecStartPre=/opt/ntf-server/bin/ntf-server check-config",
                   "NoNewPrivileges=true", "ProtectSystem=strict"):
        assert needed in text
