"""hier_tl.analysis.export and `hier-tl export mlflow`: a results folder into a file store, a sqlite database
and a real tracking server on 127.0.0.1; artifacts beside the results; two concurrent exports; a failing server."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mlflow")

import mlflow_server  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from hier_tl.analysis.export import default_artifacts, s3_endpoint  # noqa: E402
from hier_tl.cli import main  # noqa: E402
from hier_tl.results.storage import Storage  # noqa: E402
from hier_tl.train import checkpoint  # noqa: E402

server = mlflow_server.server  # the fixture: a real tracking server on 127.0.0.1
bad_gateway = mlflow_server.bad_gateway
ROOT = Path(__file__).resolve().parent.parent
S3 = "s3://bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"


def _results(root: Path | str, name: str = "sw") -> str:
    """A finished two-trial sweep folder as `hier-tl sweep` writes it (t1 is the best and has a checkpoint)."""
    st = Storage(str(root), name)
    st.write_text("sweep.yaml", yaml.safe_dump({"name": name, "base": {}, "space": {}, "search": {"algo": "grid"},
                                                "scheduler": {"kind": "none", "metric": "objective", "mode": "max"}}))
    st.write_trials([{"trial_id": f"t{i}", "status": "completed", "epochs_run": 2, "lr": 0.01 * (i + 1), "seed": i,
                      "final_objective": 0.5 + 0.1 * i, "trial_dir": f"runs/t{i}"} for i in range(2)])
    with st.table("epochs") as t:
        t.append([{"trial_id": f"t{i}", "epoch": e, "objective": 0.2 * e + 0.1 * i, "time": 1.79e9 + 60 * e + i}
                  for i in range(2) for e in (1, 2)])
    st.write_bytes("runs/t1/checkpoint_000002/checkpoint.pt", checkpoint.to_bytes(
        {"model": {}, "epoch": 2, "config": {}, "space": {}, "history": [], "norm": [[0.5], [0.5]]}))
    return st.uri


@pytest.mark.parametrize("results, tracking, want", [
    ("/r/sw", "http://127.0.0.1:5000", None),
    ("/r/sw", "databricks", None),
    ("/r/sw", "sqlite:////db/mlflow.db", "file:///r/sw/mlflow-artifacts"),
    ("/r/sw", "file:///mlruns", "file:///r/sw/mlflow-artifacts"),
    ("/r/sw", "/mlruns", "file:///r/sw/mlflow-artifacts"),
    (S3.replace("prefix", "prefix/sw"), "sqlite:////db/mlflow.db", "s3://bucket/prefix/sw/mlflow-artifacts"),
    (S3.replace("prefix", "prefix/sw"), "https://mlflow.example.org", None),
])
def test_artifacts_go_beside_the_results_unless_a_server_keeps_them(results, tracking, want):
    assert default_artifacts(Storage.open(results), tracking) == want


@pytest.mark.parametrize("results, want", [
    (S3, "http://127.0.0.1:9"),
    (S3.replace("&scheme=http", ""), "https://127.0.0.1:9"),
    ("s3://bucket/prefix?endpoint_override=http://minio:9000", "http://minio:9000"),
    ("s3://bucket/prefix?region=us-east-1", None),
    ("/r/sw", None),
])
def test_s3_results_tell_mlflow_their_endpoint(results, want):
    assert s3_endpoint(Storage.open(results.replace("prefix", "prefix/sw"))) == want


def _uri(kind: str, tmp: Path, server_url: str | None) -> str:
    return {"file": (tmp / "mlruns").as_uri(), "sqlite": f"sqlite:///{tmp}/mlflow.db", "server": server_url}[kind]


@pytest.mark.parametrize("kind", [pytest.param("file"), pytest.param("sqlite", marks=pytest.mark.slow),
                                  pytest.param("server", marks=pytest.mark.slow)])
def test_the_cli_exports_to_every_kind_of_tracking_uri_once(kind, tmp_path, monkeypatch, capsys, request):
    """Twice: runs the first time, nothing the second; the checkpoint beside the results (or in the server's
    store), nothing in the working directory; the experiment opens with the model-training views."""
    uri = _uri(kind, tmp_path, request.getfixturevalue("server") if kind == "server" else None)
    results = _results(tmp_path / "results")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for _ in range(2):
        assert main(["export", "mlflow", results, "--tracking-uri", uri, "--experiment", f"cli-{kind}"]) == 0
    out = capsys.readouterr().out
    assert "2 new run(s), 0 updated, 8 metric values" in out and "0 new run(s), 0 updated, 0 metric values" in out
    assert os.listdir(tmp_path / "cwd") == []
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"cli-{kind}")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    best = next(r for r in runs if r.data.tags.get("hier_tl.trial_id") == "t1")
    assert len(runs) == 3 and [m.step for m in client.get_metric_history(best.info.run_id, "objective")] == [1, 2]
    assert [a.path for a in client.list_artifacts(best.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    beside = Path(results) / "mlflow-artifacts" / best.info.run_id / "artifacts" / "checkpoint" / "checkpoint.pt"
    assert beside.is_file() is (kind != "server")


def test_artifact_location_puts_the_checkpoint_there(tmp_path, capsys):
    results, arts = _results(tmp_path / "results"), tmp_path / "arts"
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["export", "mlflow", results, "--tracking-uri", uri, "--artifact-location", arts.as_uri()]) == 0
    assert f"artifacts in {arts.as_uri()}" in capsys.readouterr().out
    assert [p.name for p in arts.rglob("*.pt")] == ["checkpoint.pt"]
    assert not (Path(results) / "mlflow-artifacts").exists()


@pytest.mark.slow
def test_object_store_results_keep_artifacts_in_their_bucket(tmp_path, monkeypatch, capsys):
    """s3:// results on a real S3-compatible server (moto) on 127.0.0.1: the checkpoint goes to
    <results>/mlflow-artifacts in the bucket, through the results' endpoint_override."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    port = mlflow_server.free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    try:
        bucket = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        bucket.create_bucket(Bucket="hier")
        results = _results(f"s3://hier/sweeps?region=us-east-1&endpoint_override=127.0.0.1:{port}&scheme=http")
        assert main(["export", "mlflow", results, "--tracking-uri", (tmp_path / "mlruns").as_uri()]) == 0
        assert "artifacts in s3://hier/sweeps/sw/mlflow-artifacts" in capsys.readouterr().out
        keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="hier", Prefix="sweeps/sw/mlflow-artifacts/")["Contents"]]
        assert len(keys) == 1 and keys[0].endswith("/artifacts/checkpoint/checkpoint.pt")
    finally:
        s3.stop()


# Imports first, then the start both processes wait for: their exports overlap whatever the machine's load.
BARRIER = """import os, sys, time
import hier_tl.analysis.export, mlflow.tracking
from hier_tl.cli import main
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists(sys.argv[1] + ".go"):
    time.sleep(0.01)
sys.exit(main(sys.argv[2:]))
"""


def _concurrently(tmp: Path, argv: list[str], caches: list[Path]) -> list[subprocess.CompletedProcess]:
    procs = []
    for i, cache in enumerate(caches):
        env = {**os.environ, "HIER_TL_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", BARRIER, str(tmp / "barrier"), *argv], cwd=tmp, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 300
        while not (tmp / "barrier.ready").exists() or sum(p.poll() is None for p in procs) < len(procs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "an exporter died"
            time.sleep(0.1)
        (tmp / "barrier.go").touch()
        return [subprocess.CompletedProcess(p.args, p.wait(300), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.parametrize("machines", [1, 2])
def test_two_concurrent_exports_leave_one_parent_and_one_run_per_trial(server, tmp_path, machines):
    """Two real processes export one sweep at the same instant: on one machine they take turns (a lock file);
    on two (each its own cache, so no shared lock) the converge step deletes what the other duplicated."""
    results = _results(tmp_path / "results")
    exp = f"race-{machines}"
    caches = [tmp_path / "cache"] * 2 if machines == 1 else [tmp_path / "cache-a", tmp_path / "cache-b"]
    done = _concurrently(tmp_path, ["export", "mlflow", results, "--tracking-uri", server, "--experiment", exp],
                         caches)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(r.data.tags["hier_tl.trial_id"] for r in runs if r not in parents)
    assert len(parents) == 1 and children == ["t0", "t1"]
    for r in runs:
        if r not in parents:
            assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "objective")) == [1, 2]
    if machines == 1:
        assert sum("waiting for another export" in d.stdout for d in done) == 1


def test_a_server_answering_502_ends_the_command_at_once_in_one_line(tmp_path, capsys):
    results = _results(tmp_path / "results")
    with bad_gateway() as (url, hits):
        t = time.monotonic()
        assert main(["export", "mlflow", results, "--tracking-uri", url]) == 2
        assert time.monotonic() - t < 5 and hits == ["/health"]
    assert capsys.readouterr() == ("", f"error: MLflow tracking server {url} answers 502 Bad Gateway: start it (or "
                                       "fix the proxy in front of it) and export again\n")


@pytest.mark.slow
def test_a_server_failing_mid_export_ends_the_command_in_one_line(tmp_path, capsys):
    results = _results(tmp_path / "results")
    with bad_gateway(health_ok=True) as (url, hits):
        t = time.monotonic()
        assert main(["export", "mlflow", results, "--tracking-uri", url]) == 2
        assert time.monotonic() - t < 20
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: MLflow tracking server {url} failed (too many 502 error")
    assert len(hits) == 4  # one call and its 3 retries, then the export stops
