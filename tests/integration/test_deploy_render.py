"""`orchestra deploy render --config lab` writes a lab's deployment files from its profile; each is checked
with what can run here: nats-server validates its configs (`-t`), systemd units parse as INI, the
Kubernetes manifests as YAML; every command, module and path they name exists; the users and their
permissions are exactly those of bus/permissions.py."""

from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bus import clusterconf, permissions
from bus.credentials import AuthDir
from bus.server import nats_server_binary
from schemas.config import load_config
from tests.support.procs import REPO
from tests.support.profile import write_profile
from tests.support.tls import make_ca

PREFIX = "/opt/orchestra"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("deploy")
    out, auth = base / "out", base / "auth"
    cmd = [str(Path(sys.executable).parent / "orchestra"), "--config", "lab", "deploy", "render"]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--auth-dir", str(auth), "--prefix", PREFIX],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out, auth


def expected_users(auth: Path) -> dict[str, object]:
    return {u.credentials.user: u.grants.as_config() for u in AuthDir(auth).users()}


def test_nats_node_configs_are_valid_and_form_one_cluster_with_the_bus_users(rendered: tuple[Path, Path]) -> None:
    out, auth = rendered
    cfg = load_config("lab")
    nodes = clusterconf.nodes_of(cfg.bus.servers)
    assert sorted(p.name for p in (out / "nats").iterdir()) == sorted(f"{n.name}.conf" for n in nodes)
    users = expected_users(auth)
    assert set(permissions.ROLES) <= set(users)
    for node in nodes:
        path = out / "nats" / f"{node.name}.conf"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # every user's secret is in it
        check = subprocess.run([str(nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True)
        assert check.returncode == 0 and "is valid" in check.stderr + check.stdout, check.stderr
        conf = clusterconf.parse(path.read_text().split("\n", 1)[1])
        assert conf["server_name"] == node.name and conf["port"] == node.client_port
        cluster = conf["cluster"]
        assert isinstance(cluster, dict)
        route = AuthDir(auth).route()
        login = f"{route.user}:{route.password}@"
        others = {f"nats-route://{login}{n.host}:{n.cluster_port}" for n in nodes if n != node}
        assert set(cluster["routes"]) == others  # each route dials with the route credentials ...
        assert cluster["authorization"] == {
            "user": route.user,
            "password": route.password,
            "timeout": 2,
        }  # ... and needs them
        assert route.user not in users  # a route's identity is no client's: it cannot connect as one
        block = conf["authorization"]
        assert isinstance(block, dict)
        assert {u["user"]: u.get("permissions", {}) for u in block["users"]} == users


def test_with_bus_tls_the_nodes_serve_clients_and_routes_over_tls_and_stay_valid(tmp_path: Path) -> None:
    """The lab profile with ``bus.tls`` on: clients over TLS (mutual), routes over mutual TLS with the
    route credentials; nats-server -t loads the certificates and accepts each node's config."""
    ca = make_ca(tmp_path / "ca")
    servers = ["nats://nats-1.lab:4222", "nats://nats-2.lab:4222", "nats://nats-3.lab:4222"]
    tls = {"enabled": True, "ca_file": str(ca.ca_file), "cert_file": str(ca.client_cert_file),
           "key_file": str(ca.client_key_file), "server_cert_file": str(ca.cert_file),
           "server_key_file": str(ca.key_file), "verify_clients": True}  # fmt: skip
    profile = write_profile(
        tmp_path / "lab", servers[0], base="lab", overrides={"bus": {"servers": servers, "tls": tls}}
    )
    out, auth = tmp_path / "out", tmp_path / "auth"
    cmd = [str(Path(sys.executable).parent / "orchestra"), "--config", str(profile), "deploy", "render"]
    done = subprocess.run([*cmd, "--out", str(out), "--auth-dir", str(auth)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for node in ("nats-1", "nats-2", "nats-3"):
        path = out / "nats" / f"{node}.conf"
        check = subprocess.run([str(nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True)
        assert check.returncode == 0 and "is valid" in check.stderr + check.stdout, check.stderr
        conf = clusterconf.parse(path.read_text().split("\n", 1)[1])
        assert conf["tls"] == {"cert_file": str(ca.cert_file), "key_file": str(ca.key_file),
                               "ca_file": str(ca.ca_file), "verify": True}  # fmt: skip
        cluster = conf["cluster"]
        assert isinstance(cluster, dict) and cluster["tls"]["verify"] is True
        assert cluster["authorization"]["user"] == AuthDir(auth).route().user


def test_the_kubernetes_nats_config_is_valid_for_every_pod(rendered: tuple[Path, Path]) -> None:
    out, auth = rendered
    path = out / "k8s" / "nats.conf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = {**os.environ, "POD_NAME": "nats-1"}
    check = subprocess.run([str(nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    text = path.read_text()
    routes = re.findall(r"nats-route://orchestra-route:[^@]+@nats-\d\.nats\.", text)  # authenticated routes
    assert "server_name: $POD_NAME" in text and len(routes) == 3
    (stateful,) = [d for d in yaml.safe_load_all((out / "k8s" / "nats.yaml").read_text()) if d["kind"] == "StatefulSet"]
    assert stateful["spec"]["replicas"] == 3 and stateful["spec"]["serviceName"] == "nats"


def _module_exists(module: str) -> bool:
    parts = module.split(".")
    return (REPO.joinpath(*parts) / "__main__.py").is_file() or REPO.joinpath(*parts[:-1], parts[-1] + ".py").is_file()


def test_systemd_units_parse_and_name_what_exists(rendered: tuple[Path, Path]) -> None:
    out, _ = rendered
    cfg = load_config("lab")
    units = sorted((out / "systemd").iterdir())
    names = {u.name for u in units}
    assert {f"orchestra-{a}.service" for a in ("router", "gateway", "budget_guard", "rotator")} <= names
    assert "orchestra-gpu_host@.service" in names and "nats@.service" in names
    for unit in units:
        ini = configparser.ConfigParser(interpolation=None, strict=True)
        ini.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
        ini.read_string(unit.read_text())
        service = ini["Service"]
        assert service["Restart"] == "always" and ini["Install"]["WantedBy"] == "multi-user.target"
        exec_start = service["ExecStart"].split()
        assert exec_start[0].startswith(PREFIX + "/.venv/bin/")
        assert (Path(sys.executable).parent / Path(exec_start[0]).name).exists()  # python / nats-server
        if "-m" in exec_start:
            assert _module_exists(exec_start[exec_start.index("-m") + 1]), exec_start
        config = re.search(r"ORCHESTRA_CONFIG=(\S+)", unit.read_text())
        assert config and (REPO / config.group(1).removeprefix(PREFIX + "/")).is_dir()
    gpu = (out / "systemd" / "orchestra-gpu_host@.service").read_text()
    assert "-m actors.gpu_host --host %i" in gpu
    assert cfg.hosts  # each instance name (orchestra-gpu_host@<host>) is a host of hosts.yaml


def test_kubernetes_manifests_run_each_actor_and_one_gpu_host_per_card_group(rendered: tuple[Path, Path]) -> None:
    out, auth = rendered
    cfg = load_config("lab")
    docs = list(yaml.safe_load_all((out / "k8s" / "actors.yaml").read_text()))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    hosts = set()
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = container["command"]
        assert command[:2] == ["python", "-m"] and _module_exists(command[2]), command
        role = command[2].split(".")[1]
        assert role in permissions.ACTOR_ROLES and (auth / f"{role}.json").is_file()
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (REPO / env["ORCHESTRA_CONFIG"].removeprefix("/app/")).is_dir()
        volumes = {v["name"] for v in pod["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
        (auth_mount,) = [m for m in container["volumeMounts"] if m["name"] == "auth"]
        assert auth_mount["mountPath"] == f"{cfg.data_dir}/auth/{role}.json"
        if role in ("budget_guard", "rotator", "diversity_monitor", "gpu_host"):
            assert d["spec"]["strategy"]["type"] == "Recreate" and d["spec"]["replicas"] == 1
        if role == "gpu_host":
            host = command[command.index("--host") + 1]
            hosts.add(host)
            assert pod["nodeSelector"]["kubernetes.io/hostname"] == cfg.hosts[host].machine
            assert container["resources"]["limits"]["nvidia.com/gpu"] == len(cfg.hosts[host].cards)
    assert hosts == set(cfg.hosts)
    assert {d["spec"]["template"]["spec"]["containers"][0]["command"][2] for d in deployments} == {
        f"actors.{a}" for a in permissions.ACTOR_ROLES
    }
