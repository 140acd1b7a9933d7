"""hier_tl.analysis.mlflow_export against a real MLflow tracking server on 127.0.0.1 (sqlite backend, proxied
artifacts) and real file stores: runs, incremental re-export, duplicates left by racing exports."""
import math
import sys
import time

import pandas as pd
import pytest

pytest.importorskip("mlflow")

import mlflow_server  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from hier_tl.analysis.mlflow_export import export_mlflow  # noqa: E402

server = mlflow_server.server  # the fixture: a real tracking server on 127.0.0.1
free_port = mlflow_server.free_port

CONFIG_KEYS = ["lr", "backbone", "depth", "mixup_alpha", "seed", "threshold"]
STATUSES = {"t0": ("completed", "FINISHED"), "t1": ("interrupted", "KILLED"), "t2": ("errored", "FAILED")}
T0 = 1_790_000_000.0  # epoch seconds of the first epoch


def _trials() -> pd.DataFrame:
    rows = []
    for i, (tid, (status, _)) in enumerate(STATUSES.items()):
        rows.append({"trial_id": tid, "status": status, "epochs_run": 3, "lr": 10.0 ** -(i + 2),
                     "backbone": "resnet18", "depth": i + 1, "mixup_alpha": None if i == 1 else 0.2,
                     "seed": i, "threshold": "auto", "hier_tl_version": "0.1.0", "git_commit": "abc1234",
                     "final_objective": 0.5 + i / 10, "final_seen_super_acc": 0.7, "best_epoch": 3,
                     "wall_s": 12.5, "compute_s": 10.0, "error": "RuntimeError: boom" if status == "errored" else None,
                     "node": "node-a", "device": "cpu"})
    return pd.DataFrame(rows)


def _epoch_row(trial: dict, epoch: int) -> dict:
    i = int(trial["trial_id"][1:])
    row = {"trial_id": trial["trial_id"], "epoch": epoch, "objective": 0.1 * epoch + i / 100,
           "train_loss": 1.0 / epoch, "val_loss": math.nan if epoch == 2 else 1.5 / epoch,
           "seen_super_acc": None, "phase": "train", "replayed": False, "time": T0 + 60 * epoch + i}
    row.update({k: trial[k] for k in CONFIG_KEYS})
    return row


def _epochs(trials: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame([_epoch_row(t, e) for t in trials.to_dict("records") for e in range(1, n + 1)])


def _meta(name: str) -> dict:
    return {"name": name, "config_keys": CONFIG_KEYS, "metric": "objective", "mode": "max",
            "best_trial_id": "t2", "search_algo": "optuna", "scheduler": "asha"}


def _children(client: MlflowClient, out: dict) -> dict:
    runs = client.search_runs([out["experiment_id"]], f"tags.`mlflow.parentRunId` = '{out['parent_run_id']}'")
    return {r.data.tags["hier_tl.trial_id"]: r for r in runs}


def _export(server, name, trials, epochs, **kw):
    lines = []
    out = export_mlflow(trials, epochs, _meta(name), server, f"file:///results/{name}", log=lines.append, **kw)
    assert sum("trial" in line for line in lines) >= len(trials)
    return out


@pytest.mark.slow
def test_export_creates_runs(server, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights" * 100)
    trials = _trials()
    out = _export(server, "s1", trials, _epochs(trials), checkpoint=ckpt)
    assert out["created"] == 3 and out["updated"] == 0 and out["metrics_logged"] > 0
    client = MlflowClient(server)
    assert client.get_experiment(out["experiment_id"]).name == "hier-tl/s1"
    all_runs = client.search_runs([out["experiment_id"]])
    assert len(all_runs) == 4
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.run_name == "s1" and parent.info.status == "FINISHED"
    assert parent.data.tags["hier_tl.sweep_uri"] == "file:///results/s1"
    assert parent.data.tags["hier_tl.sweep_name"] == "s1"
    assert parent.data.params["scheduler"] == "asha" and parent.data.params["metric"] == "objective"
    kids = _children(client, out)
    assert sorted(kids) == ["t0", "t1", "t2"]
    for tid, (status, mlflow_status) in STATUSES.items():
        run = kids[tid]
        assert run.info.run_name == tid and run.info.status == mlflow_status
        tags = run.data.tags
        assert tags["status"] == status and tags["seed"] == tid[1:] and tags["hier_tl_version"] == "0.1.0"
        assert tags["git_commit"] == "abc1234"
        assert run.data.metrics["final_objective"] == pytest.approx(0.5 + int(tid[1:]) / 10)
    assert kids["t2"].data.tags["error"] == "RuntimeError: boom" and "error" not in kids["t0"].data.tags
    assert kids["t0"].data.params == {"lr": "0.01", "backbone": "resnet18", "depth": "1", "mixup_alpha": "0.2",
                                      "seed": "0", "threshold": "auto"}
    assert "mixup_alpha" not in kids["t1"].data.params
    hist = sorted(client.get_metric_history(kids["t1"].info.run_id, "objective"), key=lambda m: m.step)
    assert [m.step for m in hist] == [1, 2, 3]
    assert [m.value for m in hist] == pytest.approx([0.11, 0.21, 0.31])
    assert hist[0].timestamp == int((T0 + 61) * 1000)
    assert len(client.get_metric_history(kids["t1"].info.run_id, "val_loss")) == 2  # the NaN epoch is skipped
    assert set(kids["t0"].data.metrics).isdisjoint({"seen_super_acc", "phase", "replayed", "lr", "depth", "time"})
    arts = [f.path for f in client.list_artifacts(kids["t2"].info.run_id, "checkpoint")]
    assert arts == ["checkpoint/best.pt"]
    assert client.list_artifacts(kids["t0"].info.run_id) == []


@pytest.mark.slow
def test_reexport_is_idempotent_and_incremental(server, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"w")
    trials = _trials()
    epochs = _epochs(trials)
    first = _export(server, "s2", trials, epochs, checkpoint=ckpt)
    again = _export(server, "s2", trials, epochs, checkpoint=ckpt)
    assert again == {**first, "created": 0, "updated": 0, "metrics_logged": 0}
    client = MlflowClient(server)
    assert len(client.search_runs([first["experiment_id"]])) == 4
    kids = _children(client, first)
    for run in kids.values():
        assert len(client.get_metric_history(run.info.run_id, "objective")) == 3
    assert len(client.list_artifacts(kids["t2"].info.run_id, "checkpoint")) == 1

    # t0 runs a 4th epoch: only that epoch (and t0's changed summary metrics) is logged
    grown = trials.copy()
    grown.loc[0, ["epochs_run", "final_objective"]] = [4, 0.9]
    epochs4 = pd.concat([epochs, pd.DataFrame([_epoch_row(trials.iloc[0].to_dict(), 4)])], ignore_index=True)
    out = _export(server, "s2", grown, epochs4)
    assert out["created"] == 0 and out["updated"] == 1
    assert out["metrics_logged"] == 3 + 2  # objective, train_loss, val_loss; final_objective, epochs_run
    kids = _children(client, first)
    hist = sorted(client.get_metric_history(kids["t0"].info.run_id, "objective"), key=lambda m: m.step)
    assert [m.step for m in hist] == [1, 2, 3, 4] and hist[-1].value == pytest.approx(0.4)
    assert [len(client.get_metric_history(kids[t].info.run_id, "objective")) for t in ("t1", "t2")] == [3, 3]
    assert kids["t0"].data.metrics["final_objective"] == pytest.approx(0.9)

    # a new trial joins (still running): one new child, the parent is running again
    new = {**trials.iloc[0].to_dict(), "trial_id": "t3", "status": "running", "epochs_run": 1, "seed": 3}
    more = pd.concat([grown, pd.DataFrame([new])], ignore_index=True)
    out = _export(server, "s2", more, pd.concat([epochs4, pd.DataFrame([_epoch_row(new, 1)])], ignore_index=True))
    assert out["created"] == 1 and out["updated"] == 0
    kids = _children(client, first)
    assert sorted(kids) == ["t0", "t1", "t2", "t3"] and kids["t3"].info.status == "RUNNING"
    assert client.get_run(first["parent_run_id"]).info.status == "RUNNING"
    assert len(client.search_runs([first["experiment_id"]])) == 5


def test_unreachable_server_raises_quickly():
    port = free_port()  # closed again: nothing listens there
    trials = _trials()
    t = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port} is unreachable") as e:
        export_mlflow(trials, _epochs(trials), _meta("s3"), f"http://127.0.0.1:{port}", "file:///results/s3",
                      log=lambda _: None)
    assert time.monotonic() - t < 10 and "\n" not in str(e.value)


def test_missing_mlflow_says_how_to_install(monkeypatch):
    for mod in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"pip install 'hier-tl\[mlflow\]'"):
        export_mlflow(pd.DataFrame(), pd.DataFrame(), {"name": "x"}, "http://127.0.0.1:1", "u")


@pytest.mark.slow
def test_the_cli_exports_a_real_sweep_once(server, tmp_path, capsys):
    """`hier-tl export mlflow` on a sweep's folder: a parent and a run per trial, epochs as steps, the best
    trial's checkpoint as an artifact; a second export adds nothing."""
    import yaml

    from hier_tl import load_results
    from hier_tl.cli import main
    spec = {"name": "ex", "data": "synthetic",
            "synthetic": {"seed": 3, "subs_per_super": 2, "per_class": 12, "test_per_class": 1, "size": 32},
            "base": {"backbone": "cnn_tiny", "epochs": 2, "batch_size": 16, "val_fraction": 0.25},
            "space": {"lr": {"grid": [0.002, 0.004]}}, "search": {"algo": "grid"}, "scheduler": {"kind": "none"},
            "resources": {"cpu": 1}, "storage": str(tmp_path / "results"),
            "novelty": {"scores": ["msp"], "thresholds": [0.5]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp_path / "s.yaml")]) == 0
    uri = str(tmp_path / "results" / "ex")
    for _ in range(2):
        assert main(["export", "mlflow", uri, "--tracking-uri", server, "--experiment", "cli-test"]) == 0
    out = capsys.readouterr().out
    assert "2 new run(s)" in out and "0 new run(s), 0 updated, 0 metric values" in out
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("cli-test")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    res = load_results(uri)
    for r in children:
        tid = r.data.tags["hier_tl.trial_id"]
        history = client.get_metric_history(r.info.run_id, "objective")
        assert [m.step for m in history] == [1, 2]
        want = res.epochs[res.epochs.trial_id == tid].sort_values("epoch").objective.tolist()
        assert [m.value for m in history] == pytest.approx(want)
        assert r.data.params["lr"] in ("0.002", "0.004")
    best = res.trials.loc[res.trials.final_objective.idxmax(), "trial_id"]
    best_run = next(r for r in children if r.data.tags["hier_tl.trial_id"] == best)
    assert [a.path for a in client.list_artifacts(best_run.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]


def _file_store(tmp_path) -> str:
    return (tmp_path / "mlruns").as_uri()


def _active(client: MlflowClient, eid: str) -> tuple[list, dict]:
    """The experiment's active parents, and its active children by trial id (lists: duplicates show)."""
    runs = client.search_runs([eid])
    kids = {}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            kids.setdefault(r.data.tags["hier_tl.trial_id"], []).append(r)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], kids


def test_duplicates_left_by_racing_exports_converge_to_the_earliest(tmp_path, monkeypatch):
    """Runs another machine's export created at the same time: the earliest parent and child of each trial
    stay (start time, then run id); the later ones and the children of a deleted parent are deleted."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri, trials = _file_store(tmp_path), _trials()
    first = _export(uri, "c", trials, _epochs(trials))
    client = MlflowClient(uri)
    eid, pid = first["experiment_id"], first["parent_run_id"]
    late_parent = client.create_run(eid, run_name="c", tags={"hier_tl.sweep_uri": "file:///results/c"})
    orphan = client.create_run(eid, tags={"mlflow.parentRunId": late_parent.info.run_id, "hier_tl.trial_id": "t0"})
    t1 = _children(client, first)["t1"]
    early_twin = client.create_run(eid, start_time=t1.info.start_time - 1,
                                   tags={"mlflow.parentRunId": pid, "hier_tl.trial_id": "t1"})
    out = _export(uri, "c", trials, _epochs(trials))
    assert out["parent_run_id"] == pid and out["created"] == 0
    parents, kids = _active(client, eid)
    assert [p.info.run_id for p in parents] == [pid]
    assert {tid: [r.info.run_id for r in rs] for tid, rs in kids.items()} == {
        "t0": [_children(client, first)["t0"].info.run_id], "t1": [early_twin.info.run_id],
        "t2": [_children(client, first)["t2"].info.run_id]}
    for gone in (late_parent, orphan, t1):
        assert client.get_run(gone.info.run_id).info.lifecycle_stage == "deleted"
    history = client.get_metric_history(early_twin.info.run_id, "objective")  # the kept twin was empty: filled
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_an_export_whose_parent_a_concurrent_export_deleted_starts_again_into_the_kept_one(tmp_path, monkeypatch):
    """Another machine's converge step keeps its own (earlier) parent and deletes ours mid-export: the export
    starts again, into that parent, and leaves one child per trial there."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri, trials = _file_store(tmp_path), _trials()
    client, theirs, lines = MlflowClient(uri), {}, []

    def log(line):
        lines.append(line)
        if line.startswith("mlflow: trial t0") and not theirs:  # our runs exist: the other machine converges
            child = client.get_run(line.split(" run ")[1].split(":")[0])  # "... new run <id>: 3 metrics"
            theirs["run"] = client.create_run(child.info.experiment_id, start_time=1, run_name="d",
                                              tags={"hier_tl.sweep_uri": "file:///results/d"})
            client.delete_run(child.data.tags["mlflow.parentRunId"])

    out = export_mlflow(trials, _epochs(trials), _meta("d"), uri, "file:///results/d", log=log)
    assert out["parent_run_id"] == theirs["run"].info.run_id and out["created"] == 3
    assert "mlflow: a concurrent export kept its own run of this sweep: exporting again into it" in lines
    parents, kids = _active(client, out["experiment_id"])
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]]
    assert sorted(kids) == ["t0", "t1", "t2"] and all(len(rs) == 1 for rs in kids.values())
    for rs in kids.values():
        assert rs[0].data.tags["mlflow.parentRunId"] == out["parent_run_id"]
        assert sorted(m.step for m in client.get_metric_history(rs[0].info.run_id, "objective")) == [1, 2, 3]


def test_params_a_concurrent_export_logged_meanwhile_are_kept_not_fatal(tmp_path, monkeypatch):
    """Between our search and our write, another export logged t1's params (here a different lr): the
    refused write is retried against the run as it is now, which keeps its value and says so."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri, trials = _file_store(tmp_path), _trials()
    first = _export(uri, "p", trials.iloc[:1], _epochs(trials.iloc[:1]))  # t0 only: t1 and t2 are new next time
    client, lines = MlflowClient(uri), []

    def log(line):
        lines.append(line)
        if line.startswith("mlflow: trial t0"):  # t1's run exists (created with the others), not yet synced
            t1 = _children(client, first)["t1"]
            client.log_param(t1.info.run_id, "lr", "999")

    out = export_mlflow(trials, _epochs(trials), _meta("p"), uri, "file:///results/p", log=log)
    assert out["created"] == 2
    t1 = _children(client, first)["t1"]
    assert t1.data.params["lr"] == "999" and t1.data.params["backbone"] == "resnet18"
    assert f"mlflow: run {t1.info.run_id}: param lr='999' kept (now '0.001'; params are immutable)" in lines
