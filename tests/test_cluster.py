"""Running on a cluster. The cluster configs in cluster/: checked against Ray's own schema and code, offline;
and `sweep.cluster`: what `hier-tl sweep` refuses before any trial starts.

The config checks start no Ray and reach no network:
* aws.yaml / gcp.yaml go through the same steps `ray up` takes before it calls the
  cloud (ray.autoscaler._private.util.prepare_config, then validate_config, which
  checks against the ray-schema.json shipped inside the installed ray package);
* kuberay.yaml's RayCluster goes through the function Ray's KubeRay autoscaler uses
  to turn a RayCluster into an autoscaling config, and that config is validated too;
* local.sh is only asked for --help and for its argument checks.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from hier_tl.results.storage import Storage
from hier_tl.sweep.sweep_config import SweepConfig

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
VM_CONFIGS = ["aws.yaml", "gcp.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a config before touching the cloud: fill in the provider's
    defaults, then validate against Ray's schema (and Ray's extra cross-field checks)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_the_schema_is_the_installed_rays():
    assert RAY_SCHEMA.is_file(), f"no cluster-config schema in the installed ray ({RAY_SCHEMA})"
    schema = json.loads(RAY_SCHEMA.read_text())
    assert schema["additionalProperties"] is False  # so unknown keys are errors, not ignored


@pytest.mark.parametrize("name", VM_CONFIGS)
def test_vm_config_is_valid_for_ray(name):
    config = load(name)
    # As written, against the raw schema ...
    jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))
    # ... and as `ray up` sees it after merging the provider defaults.
    prepared = ray_up_checks(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _mutations():
    def unknown_top_level_key(c):
        c["max_worker"] = 4  # a typo of max_workers

    def max_workers_as_string(c):
        c["max_workers"] = "8"

    def node_max_workers_as_string(c):
        c["available_node_types"]["gpu_spot"]["max_workers"] = "8"

    def node_type_without_resources(c):
        del c["available_node_types"]["gpu_spot"]["resources"]

    def unknown_node_type_key(c):
        c["available_node_types"]["gpu_spot"]["max_worker"] = 8

    def fractional_gpu_resource(c):
        c["available_node_types"]["gpu_spot"]["resources"]["GPU"] = 0.5

    def min_workers_over_global_max(c):
        c["available_node_types"]["gpu_spot"]["min_workers"] = c["max_workers"] + 1

    return [unknown_top_level_key, max_workers_as_string, node_max_workers_as_string,
            node_type_without_resources, unknown_node_type_key, fractional_gpu_resource,
            min_workers_over_global_max]


@pytest.mark.parametrize("name", VM_CONFIGS)
@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_a_broken_copy_fails_validation(name, mutate):
    config = load(name)
    ray_up_checks(config)  # the original passes ...
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):  # ... the broken copy does not
        ray_up_checks(broken)


def _start_commands(config: dict) -> tuple[str, str]:
    return " ".join(config["head_start_ray_commands"]), " ".join(config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", VM_CONFIGS)
def test_vm_config_secure_and_autoscaling_defaults(name):
    config = load(name)
    head_start, worker_start = _start_commands(config)
    setup = " ".join(config["setup_commands"])
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}

    # private addresses only; dashboard on the head's loopback; token auth everywhere
    assert config["provider"]["use_internal_ips"] is True
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_AUTH_MODE=token" in worker_start
    assert "RAY_AUTH_MODE=token" in setup
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert "--disable-usage-stats" in head_start

    # CPU head with no trials; GPU workers that autoscale from zero
    assert head["resources"]["CPU"] == 0 and not head["resources"].get("GPU")
    assert workers and all(w["resources"].get("GPU", 0) >= 1 for w in workers.values())
    assert all(w["min_workers"] == 0 for w in workers.values())
    assert any(w["max_workers"] > 0 for w in workers.values())
    assert config["idle_timeout_minutes"] <= 15

    # hier-tl with [pretrained] from the repository; results to the bucket
    assert '"hier-tl[pretrained] @ git+${HIER_TL_REPO}@${HIER_TL_REF}"' in setup
    assert "export HIER_TL_REPO=https://github.com/YOUR_ORG/hier-tl" in setup
    scheme = {"aws.yaml": "s3://", "gcp.yaml": "gs://"}[name]
    assert f"export HIER_TL_STORAGE={scheme}" in setup


def test_aws_no_public_ip_no_default_security_group():
    config = load("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]
    (nic,) = head["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is False and nic["Groups"]
    for node_type in types.values():
        nc = node_type["node_config"]
        # A security group on every node type, so Ray never creates its own
        # (Ray's would open SSH to 0.0.0.0/0) ...
        assert nc.get("SecurityGroupIds") or all(n.get("Groups") for n in nc.get("NetworkInterfaces", []))
        # ... and an instance profile, so Ray never creates its broad default role.
        assert nc["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
        assert nc["MetadataOptions"]["HttpTokens"] == "required"
        assert all(b["Ebs"]["Encrypted"] for b in nc["BlockDeviceMappings"])
    assert "security_group" not in config["provider"]  # no extra inbound rules
    assert types["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_gcp_no_external_ip_dedicated_service_accounts():
    config = load("gcp.yaml")
    for name, node_type in config["available_node_types"].items():
        nc = node_type["node_config"]
        assert nc["networkInterfaces"] and all("accessConfigs" not in n for n in nc["networkInterfaces"]), name
        (sa,) = nc["serviceAccounts"]
        assert sa["email"].startswith("hier-tl-ray-"), name
        assert "hier-tl-ray" in nc["tags"]["items"], name  # what the firewall rules select
    assert config["available_node_types"]["gpu_spot"]["node_config"]["scheduling"]["provisioningModel"] == "SPOT"


# --- KubeRay -----------------------------------------------------------------

def kuberay_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]


def ray_cluster() -> dict:
    (rc,) = [d for d in kuberay_docs() if d.get("kind") == "RayCluster"]
    return rc


def all_containers(rc: dict) -> list[dict]:
    spec = rc["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for p in pods for c in p["spec"]["containers"]]


def env_of(container_or_options: dict) -> dict:
    return {e["name"]: e for e in container_or_options.get("env", [])}


def test_kuberay_structure():
    rc = ray_cluster()
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    spec = rc["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group with an nvidia.com/gpu limit"
    for g in gpu_groups:
        assert 0 == g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"] and g["maxReplicas"] >= 1
    images = {c["image"] for c in all_containers(rc)}
    assert len(images) == 1  # head and workers run the same image
    (major, minor) = map(int, spec["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)  # token authentication
    assert all(isinstance(v, str)
               for g in [spec["headGroupSpec"]] + spec["workerGroupSpecs"] for v in g["rayStartParams"].values())


def test_kuberay_nothing_exposed():
    docs = kuberay_docs()
    head = ray_cluster()["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert head.get("enableIngress", False) is False
    for d in docs:
        assert d["kind"] not in ("Ingress", "Route", "Gateway", "HTTPRoute")
        if d["kind"] == "Service":
            assert d.get("spec", {}).get("type", "ClusterIP") not in ("LoadBalancer", "NodePort")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": ray_cluster()["metadata"]["name"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_kuberay_token_auth_and_storage_env_everywhere():
    rc = ray_cluster()
    for env in [env_of(c) for c in all_containers(rc)] + [env_of(rc["spec"]["autoscalerOptions"])]:
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"
    for c in all_containers(rc):
        env = env_of(c)
        assert env["HIER_TL_STORAGE"]["value"].startswith(("s3://", "gs://"))
        assert env["HIER_TL_REPO"]["value"] == "https://github.com/YOUR_ORG/hier-tl"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    service_accounts = {d["metadata"]["name"] for d in kuberay_docs() if d["kind"] == "ServiceAccount"}
    pods = [rc["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
    assert {p["spec"]["serviceAccountName"] for p in pods} <= service_accounts


def test_kuberay_as_rays_autoscaler_reads_it():
    """Ray's KubeRay autoscaler turns the RayCluster into an autoscaling config; that
    config must pass Ray's schema and show a zero-CPU head and GPU workers 0..max."""
    rc = copy.deepcopy(ray_cluster())
    rc["metadata"].setdefault("namespace", "default")
    config = _derive_autoscaling_config_from_ray_cr(rc)
    validate_config(config)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    (group,) = rc["spec"]["workerGroupSpecs"]
    worker = types[group["groupName"]]
    assert worker["resources"]["GPU"] == 1
    assert (worker["min_workers"], worker["max_workers"]) == (group["minReplicas"], group["maxReplicas"])
    assert config["idle_timeout_minutes"] == rc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] / 60


# --- local.sh ----------------------------------------------------------------

def local_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(["bash", str(CLUSTER / "local.sh"), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env})


def test_local_sh_help():
    r = local_sh("--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: cluster/local.sh up N | down | status" in r.stdout
    for word in ("RAY ", "LOCAL_RAY_PORT", "RAY_AUTH_MODE"):
        assert word in r.stdout


def test_local_sh_is_strict_bash():
    text = (CLUSTER / "local.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "${RAY:-ray}" in text
    assert subprocess.run(["bash", "-n", str(CLUSTER / "local.sh")]).returncode == 0


@pytest.mark.parametrize("args, env, status", [
    ((), {}, 2),
    (("sideways",), {}, 2),
    (("up",), {}, 1),
    (("up", "two"), {}, 1),
    (("up", "2"), {"LOCAL_RAY_DIR": "relative/dir"}, 1),
    (("up", "2"), {"LOCAL_RAY_PORT": "port"}, 1),
])
def test_local_sh_rejects_bad_arguments_before_starting_anything(args, env, status, tmp_path):
    env = {"RAY": str(tmp_path / "no-such-ray"), **env}  # a start attempt would fail loudly
    r = local_sh(*args, **env)
    assert r.returncode == status, (r.stdout, r.stderr)
    assert r.stdout == ""


# --- sweep.cluster: what `hier-tl sweep` checks before any trial starts ---


def _fake_ray(monkeypatch, hosts, resources):
    import ray
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeManagerAddress": h, "Alive": True} for h in hosts])


def test_node_local_storage_is_refused_on_a_multi_host_cluster(monkeypatch, tmp_path):
    from hier_tl.core.errors import SweepError
    from hier_tl.sweep.cluster import check_cluster
    _fake_ray(monkeypatch, ["10.0.0.1", "10.0.0.2"], {"CPU": 8})
    with pytest.raises(SweepError, match="node-local path"):
        check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))
    check_cluster(SweepConfig(), Storage("s3://b/p?region=us-east-1", "x"))  # object storage is fine
    _fake_ray(monkeypatch, ["127.0.0.1", "127.0.0.1"], {"CPU": 8})
    check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))  # nodes on one host share its disk


@pytest.mark.slow
@pytest.mark.parametrize("how", ["RAY_ADDRESS", "latest cluster"])
def test_the_embedded_ray_never_joins_another_ray_running_on_the_machine(tmp_path, monkeypatch, how):
    """Another Ray instance runs here, named by RAY_ADDRESS or recorded as the machine's latest cluster (what a
    plain `ray.init()` would connect to): `hier-tl sweep` without --address still starts a Ray of its own."""
    import os
    import socket

    import ray

    from hier_tl.sweep.cluster import start_ray, stop_ray
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = Path(tempfile.mkdtemp(prefix="htl-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(other)}
    ray_bin = str(Path(ray.__file__).parents[3].parent / "bin" / "ray")
    start = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                            "--num-cpus=1", "--include-dashboard=false"], capture_output=True, text=True, env=env,
                           timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        if how == "RAY_ADDRESS":
            monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        else:
            monkeypatch.setenv("RAY_TMPDIR", str(other))
            assert (other / "ray" / "ray_current_cluster").read_text().strip().endswith(str(port))
        start_ray(None, tmp_path / "ray.log")
        try:
            assert not ray.get_runtime_context().gcs_address.endswith(f":{port}")
        finally:
            stop_ray(tmp_path / "ray.log")
    finally:  # that instance's processes only (`ray stop` would stop every Ray on the machine)
        subprocess.run(["pkill", "-9", "-f", str(other)], capture_output=True, timeout=60)
        shutil.rmtree(other, ignore_errors=True)
