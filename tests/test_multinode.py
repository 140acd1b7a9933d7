"""The same sweep on a head + 2 worker nodes on 127.0.0.1 (cluster/local.sh), and surviving a lost node: its
interrupted trial resumes on another node with every reported epoch kept once (results in object storage)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hier_tl import load_results

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path_factory):
    """(address, state dir) of a fresh head + 2 workers, each worker with 1 CPU; torn down afterwards."""
    state = Path(f"/tmp/htl-{os.getpid()}-{free_port()}")  # short: Ray puts Unix sockets under it
    env = {**os.environ, "RAY": RAY, "LOCAL_RAY_PORT": str(free_port()), "LOCAL_RAY_DIR": str(state),
           "LOCAL_RAY_WORKER_CPUS": "1", "RAY_AUTH_MODE": "disabled"}
    up = subprocess.run(["bash", str(ROOT / "cluster" / "local.sh"), "up", "2"], env=env, capture_output=True,
                        text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    try:
        yield up.stdout.strip().splitlines()[-1], state, env
    finally:
        subprocess.run(["bash", str(ROOT / "cluster" / "local.sh"), "down"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def sweep_file(tmp_path, epochs, samples, max_failures=0, storage=None) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({
        "name": "mn", "data": "synthetic",
        "synthetic": {"seed": 4, "subs_per_super": 2, "per_class": 20, "test_per_class": 1, "size": 32},
        "base": {"backbone": "cnn_tiny", "epochs": epochs, "batch_size": 8, "val_fraction": 0.25},
        "space": {"lr": {"grid": [0.002 + 0.001 * i for i in range(samples)]}},
        "search": {"algo": "grid"}, "scheduler": {"kind": "none"}, "num_samples": 1,
        "resources": {"cpu": 1}, "max_failures": max_failures, "storage": storage or str(tmp_path / "results"),
        "novelty": {"scores": ["msp"], "thresholds": [0.5]}, "smoke": {}}))
    return p


def hier_tl(args, env, log: Path):
    """The CLI in a subprocess, its output in a file (a pipe nobody reads could fill and block it)."""
    f = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "hier_tl.cli", *args], env={**env, "PYTHONUNBUFFERED": "1"},
                            stdout=f, stderr=subprocess.STDOUT, text=True)


def test_sweep_spreads_over_nodes_into_one_storage(cluster, tmp_path):
    address, _, env = cluster
    proc = hier_tl(["sweep", str(sweep_file(tmp_path, 2, 4)), "--address", address], env, tmp_path / "log")
    proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "log").read_text()
    trials = pd.read_parquet(tmp_path / "results" / "mn" / "trials.parquet")
    assert len(trials) == 4 and (trials.status == "completed").all()
    assert trials.node_id.nunique() >= 2  # trials ran on more than one node
    epochs = load_results(tmp_path / "results" / "mn").epochs
    assert len(epochs) == 8


def kill_node(state: Path, victim_node: str) -> None:
    """Kill the worker node (raylet and everything started from its temp dir) with this node id."""
    ps = subprocess.run(["ps", "-ewwo", "pid=,args="], capture_output=True, text=True).stdout
    killed, victims = 0, [k for k in (1, 2) if _node_runs(state, k, victim_node)]
    assert len(victims) == 1, victims
    for k in victims:
        for pid in [int(line.split()[0]) for line in ps.splitlines() if f"{state}/w{k}" in line]:
            os.kill(pid, signal.SIGKILL)
            killed += 1
    assert killed, (victim_node, [ln for ln in ps.splitlines() if str(state) in ln][:3])


def wait_for_epoch(uri: str, epoch: int, timeout: float = 180) -> str:
    """The node id of a trial that has reported `epoch` epochs (read back from the results, local or S3)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        time.sleep(0.3)
        try:
            e = load_results(uri).epochs
        except Exception:
            continue
        if len(e) and (e.epoch >= epoch).any():
            return e[e.epoch >= epoch].node_id.iloc[0]
    raise AssertionError(f"no trial reported {epoch} epochs in time")


def _node_runs(state: Path, k: int, node_id_prefix: str) -> bool:
    """Is worker k the node with this id? (its raylet logs its own id once as "Setting node ID")"""
    for f in Path(state, f"w{k}").glob("session_*/logs/raylet.out"):
        if f"Setting node ID node_id={node_id_prefix}" in f.read_text(errors="ignore"):
            return True
    return False


@pytest.fixture
def s3(monkeypatch):
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket `hier`; yields the storage URI."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    port = free_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)  # before the cluster starts: its workers inherit them
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1").create_bucket(Bucket="hier")
    try:
        yield f"s3://hier/sweeps?region=us-east-1&endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.stop()


def test_object_storage_end_to_end_with_a_lost_node(s3, cluster, tmp_path, capsys):
    """Sweep into S3 on 3 nodes, lose a worker mid-sweep, then report / best / predict (--refit) from the URI."""
    address, state, env = cluster
    epochs = 30
    proc = hier_tl(["sweep", str(sweep_file(tmp_path, epochs, 2, max_failures=3, storage=s3)), "--address", address],
                   env, tmp_path / "log")
    uri = s3.replace("sweeps?", "sweeps/mn?")
    victim_node = wait_for_epoch(uri, 2)
    before = load_results(uri).epochs
    assert before[before.node_id == victim_node].epoch.max() < epochs, "the trial finished before the kill"
    kill_node(state, victim_node)
    proc.wait(timeout=400)
    log = (tmp_path / "log").read_text()
    assert proc.returncode == 0, log
    assert f"results: {uri}" in log  # the exact string to paste back, scheme and query kept
    res = load_results(uri)
    assert (res.trials.status == "completed").all()
    assert res.trials.retries.sum() >= 1 and res.trials.error.notna().any()  # the lost attempt is on record
    for tid, g in res.epochs.groupby("trial_id"):
        assert sorted(g.epoch) == list(range(1, epochs + 1))  # no reported epoch lost or duplicated
    kept = before.merge(res.epochs, on=["trial_id", "epoch"], suffixes=("", "_after"))
    assert len(kept) == len(before) and (kept.time == kept.time_after).all()  # nothing reported was rewritten
    moved = res.epochs[res.epochs.trial_id == before[before.node_id == victim_node].trial_id.iloc[0]]
    assert moved.node_id.nunique() == 2  # the interrupted trial finished on another node
    assert not (tmp_path / "results").exists()  # nothing went to a local folder

    from hier_tl.cli import main
    from hier_tl.data.synthetic import SynthSpec, load_source
    data = load_source("synthetic", SynthSpec(seed=4, subs_per_super=2, per_class=20, test_per_class=1, size=32)).root
    n_test = len(list((data / "test_images").iterdir()))
    assert main(["report", uri, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "curves.png").is_file()
    assert main(["best", uri]) == 0
    best = yaml.safe_load(capsys.readouterr().out.split("wrote")[-1].split("\n", 1)[-1])
    assert best["checkpoint"].startswith("s3://hier/sweeps/mn/") and best["status"] == "completed"
    for extra, name in (([], "p.csv"), (["--refit"], "r.csv")):
        out = tmp_path / name
        assert main(["predict", uri, "--images", str(data / "test_images"), "--out", str(out), *extra]) == 0
        df = pd.read_csv(out)
        assert list(df.columns) == ["image", "superclass_index", "subclass_index"] and len(df) == n_test
    assert "refit epoch" in capsys.readouterr().out  # a line per epoch, not minutes of silence
