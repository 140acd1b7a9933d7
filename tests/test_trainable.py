"""End-to-end sweeps on an embedded local Ray (inside the loopback-only namespace in CI)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hier_tl import load_results
from hier_tl.cli import main
from hier_tl.results.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
pytestmark = pytest.mark.slow


def tiny_sweep(tmp_path, **over) -> Path:
    data = {
        "name": "t", "data": "synthetic",
        "synthetic": {"seed": 1, "subs_per_super": 2, "per_class": 12, "test_per_class": 2, "size": 32},
        "base": {"backbone": "cnn_tiny", "epochs": 3, "batch_size": 16, "val_fraction": 0.25,
                 "holdout_subclasses": 1, "threshold": "tpr:0.95"},
        "space": {"lr": {"loguniform": [1e-3, 1e-2]}, "mixup_alpha": {"choice": [0.0, 0.2]}},
        "search": {"algo": "optuna", "seed": 0},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "num_samples": 3, "resources": {"cpu": 1}, "max_concurrent": 1, "storage": str(tmp_path / "results"),
        "novelty": {"scores": ["msp", "energy"], "thresholds": [0.5, "tpr:0.95"]},
        "smoke": {"num_samples": 2},
    }
    for k, v in over.items():
        data[k] = v
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_sweep_writes_parquet_matching_what_trials_reported(tmp_path, capsys):
    assert main(["sweep", str(tiny_sweep(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "backbone" in out and "objective" in out  # the comparison table
    exp = tmp_path / "results" / "t"
    trials, epochs = pd.read_parquet(exp / "trials.parquet"), load_results(exp).epochs
    thresholds = load_results(exp).thresholds
    assert len(trials) == 3 and set(trials.status) <= {"completed", "stopped"}
    for col in ("trial_id", "status", "error", "backbone", "lr", "mixup_alpha", "seed", "epochs_run", "wall_s",
                "compute_s", "node", "device", "hier_tl_version", "git_commit", "best_objective", "final_objective"):
        assert col in trials, col
    assert (trials.device == "cpu").all() and trials.lr.between(1e-3, 1e-2).all()
    for table in (epochs, thresholds):  # every row carries its resolved config, seed and code version
        assert {"backbone", "lr", "mixup_alpha", "seed", "hier_tl_version", "git_commit"} <= set(table.columns)
    merged = epochs.merge(trials[["trial_id", "lr"]], on="trial_id", suffixes=("", "_trial"))
    assert (merged.lr == merged.lr_trial).all() and "current_lr" in epochs
    # every reported epoch is there once, numbered 1..epochs_run
    for t in trials.itertuples():
        got = sorted(epochs[epochs.trial_id == t.trial_id].epoch)
        assert got == list(range(1, t.epochs_run + 1))
        last = epochs[(epochs.trial_id == t.trial_id) & (epochs.epoch == t.epochs_run)].iloc[0]
        assert last.objective == pytest.approx(t.final_objective)
        assert t.best_objective == pytest.approx(epochs[epochs.trial_id == t.trial_id].objective.max())
        assert t.status == ("completed" if t.epochs_run == 3 else "stopped")
    assert len(thresholds) == len(epochs) * 2 * 2  # scores x thresholds per epoch
    assert set(thresholds.columns) >= {"score", "threshold", "seen_super_acc", "novel_super_acc", "seen_sub_acc",
                                       "novel_sub_acc", "auroc_super", "auroc_sub"}
    # the trial's own threshold rule (tpr:0.95 with msp) re-scored post hoc equals what it reported
    row = thresholds[(thresholds.score == "msp") & (thresholds.threshold == "tpr:0.95")].merge(
        epochs, on=["trial_id", "epoch"], suffixes=("", "_epoch"))
    assert (row.seen_sub_acc - row.seen_sub_acc_epoch).abs().max() < 1e-9
    saved = yaml.safe_load((exp / "sweep.yaml").read_text())
    assert saved["name"] == "t" and "git_commit" in saved
    assert saved["provenance"]["dataset"]["images"] == 3 * 2 * 12 and saved["provenance"]["command"].startswith("hier-tl sweep")
    # Ray's own lines (warnings, its retries' tracebacks) go to the sweep's log file, not the terminal
    assert "Traceback" not in capsys.readouterr().err and (exp / "logs" / "ray.log").is_file()


def test_gpu_request_without_gpus_fails_fast_and_the_refused_start_leaves_nothing(tmp_path, capsys):
    t0 = time.time()
    assert main(["sweep", str(tiny_sweep(tmp_path)), "--name", "g", "--set", "resources.gpu=1"]) == 2
    assert time.time() - t0 < 60
    err = capsys.readouterr().err
    assert "GPU" in err and "resources.gpu=0" in err and err.count("\n") == 1
    assert not (tmp_path / "results" / "g").exists()  # so the corrected command may use the same name
    assert main(["sweep", str(tiny_sweep(tmp_path, num_samples=1)), "--name", "g", "--smoke"]) == 0


def test_errored_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    p = tiny_sweep(tmp_path, search={"algo": "grid"}, scheduler={"kind": "none"}, num_samples=1,
                   space={"weights": {"grid": ["none", str(tmp_path / "missing.pt")]}})
    assert main(["sweep", str(p)]) == 0
    trials = pd.read_parquet(tmp_path / "results" / "t" / "trials.parquet")
    assert sorted(trials.status) == ["completed", "errored"]
    err = trials[trials.status == "errored"].error.iloc[0]
    assert "missing.pt" in err and "does not exist" in err


def test_every_trial_failing_exits_nonzero_with_a_summary(tmp_path, capsys):
    p = tiny_sweep(tmp_path, search={"algo": "random"}, scheduler={"kind": "none"}, num_samples=2, space={},
                   base={"backbone": "cnn_tiny", "epochs": 1, "weights": str(tmp_path / "missing.pt")})
    assert main(["sweep", str(p)]) == 2
    assert "every trial failed" in capsys.readouterr().err


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_shipped_sweep_runs_in_smoke_mode(path, tmp_path):
    assert main(["sweep", str(path), "--smoke", "--storage", str(tmp_path)]) == 0
    trials = pd.read_parquet(next(tmp_path.glob("*/trials.parquet")))
    assert len(trials) >= 2 and (trials.status != "errored").all(), trials[["status", "error"]]


def _wait_for(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_sigint_then_resume_keeps_finished_trials_and_ids(tmp_path):
    p = tiny_sweep(tmp_path, num_samples=4, base={"backbone": "cnn_tiny", "epochs": 4, "batch_size": 16},
                   scheduler={"kind": "none"})
    exp = tmp_path / "results" / "t"

    def read_trials():  # through the library: while a sweep runs, its trials table is a snapshot plus parts
        return Storage.open(str(exp)).read("trials")

    def finished_and_running():
        try:
            status = read_trials().status
        except Exception:  # not written yet (or no row yet: no status column)
            return False
        return (status == "completed").sum() >= 1 and (status == "running").sum() >= 1

    cmd = [sys.executable, "-m", "hier_tl.cli", "sweep", str(p), "--name", "t"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        assert _wait_for(finished_and_running, 120), "sweep never had a finished and a running trial"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "--resume" in out
    before = read_trials()
    before_epochs = load_results(tmp_path / "results" / "t").epochs
    done = set(before[before.status == "completed"].trial_id)
    assert "interrupted" in set(before.status)

    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    after = read_trials()
    after_epochs = load_results(tmp_path / "results" / "t").epochs
    assert set(before.trial_id) <= set(after.trial_id) and len(after) == 4  # Optuna's count continued
    assert (after.status == "completed").all()
    for tid in done:  # finished trials were not rerun: their epoch rows are untouched
        a = before_epochs[before_epochs.trial_id == tid].sort_values("epoch")
        b = after_epochs[after_epochs.trial_id == tid].sort_values("epoch")
        assert list(a.time) == list(b.time)
    for tid, g in after_epochs.groupby("trial_id"):  # no epoch lost or duplicated
        assert sorted(g.epoch) == [1, 2, 3, 4]
    # the live view: every finished trial once in the Optuna journal, across the resume
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "results" / "t" / "optuna.journal")))
    study = optuna.load_study(study_name="t", storage=journal)
    ids = [t.user_attrs["trial_id"] for t in study.trials]
    assert sorted(ids) == sorted(after.trial_id)
    values = {t.user_attrs["trial_id"]: t.value for t in study.trials}
    assert all(values[r.trial_id] == pytest.approx(r.final_objective) for r in after.itertuples())


def test_trials_differing_only_in_threshold_share_one_training_run(tmp_path):
    p = tiny_sweep(tmp_path, search={"algo": "grid"}, scheduler={"kind": "none"}, num_samples=1,
                   space={"threshold": {"grid": [0.3, 0.6, 0.9]}})
    assert main(["sweep", str(p)]) == 0
    exp = tmp_path / "results" / "t"
    trials = pd.read_parquet(exp / "trials.parquet").sort_values("threshold")
    epochs = load_results(exp).epochs
    assert (trials.status == "completed").all() and len(trials) == 3
    replayed = epochs.groupby("trial_id").replayed.apply(lambda s: bool(s.fillna(False).all()))
    assert replayed.sum() == 2  # one trial trained, the other two replayed its epochs
    trained = replayed[~replayed].index[0]
    assert trials.set_index("trial_id").loc[replayed[replayed].index, "compute_s"].max() == 0
    # same network, so identical losses; different thresholds, so different novelty decisions
    by_trial = epochs.pivot(index="epoch", columns="trial_id", values="val_loss")
    assert (by_trial.nunique(axis=1) == 1).all()
    assert trials.final_threshold_sub.nunique() == 3
    assert trained in set(trials.trial_id)
    # a replayed trial's checkpoint is its own: predict uses its threshold, not the trained trial's
    from hier_tl.predict.predict import Predictor
    from hier_tl.results.reading import trial_checkpoint
    from hier_tl.results.storage import Storage
    for t in trials[trials.trial_id.isin(replayed[replayed].index)].itertuples():
        p = Predictor.from_checkpoint(trial_checkpoint(Storage.open(str(exp)), pd.Series(t._asdict()))[0])
        assert p.thr_super == pytest.approx(float(t.threshold))


def test_a_metric_registered_in_one_place_reaches_epochs_replays_trials_and_report(tmp_path, monkeypatch):
    """One registration (here from a plugin module, as a user would) is all a new per-epoch metric needs."""
    import os

    from hier_tl.core.registry import load_plugins
    from hier_tl.train.registries import EPOCH_METRICS
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "my_metric.py").write_text(
        "from hier_tl.train.metrics import register_epoch_metric\n\n\n"
        "@register_epoch_metric('lr_x1000', label='lr x1000')\n"
        "def lr_x1000(s):\n    return s.lr * 1000\n")
    monkeypatch.setenv("PYTHONPATH", f"{plug}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # Ray workers
    monkeypatch.setenv("HIER_TL_PLUGINS", "my_metric")
    monkeypatch.syspath_prepend(str(plug))
    load_plugins()
    try:
        p = tiny_sweep(tmp_path, search={"algo": "grid"}, scheduler={"kind": "none"}, num_samples=1,
                       space={"threshold": {"grid": [0.3, 0.6]}})
        assert main(["sweep", str(p)]) == 0
        res = load_results(tmp_path / "results" / "t")
        e = res.epochs
        assert e.replayed.fillna(False).any()  # one trial replayed the other's epochs...
        assert (e.lr_x1000 - 1000 * e.current_lr).abs().max() < 1e-9  # ...and both carry the new metric
        assert res.trials.final_lr_x1000.notna().all()
        assert main(["report", str(tmp_path / "results" / "t")]) == 0
        assert "| lr x1000 |" in (tmp_path / "results" / "t" / "report.md").read_text()
    finally:
        EPOCH_METRICS._entries.pop("lr_x1000", None)


def test_a_sweep_with_rotating_folds_ranks_by_the_fold_mean_and_records_the_spread(tmp_path, capsys):
    base = {"backbone": "cnn_tiny", "epochs": 2, "batch_size": 16, "val_fraction": 0.25, "holdout_subclasses": 1,
            "holdout_superclasses": 1, "threshold": "tpr:0.95/best", "folds": 3, "novelty_score": "pretrained_hier",
            "reference_size": 32}
    p = tiny_sweep(tmp_path, base=base, num_samples=2, scheduler={"kind": "none"},
                   novelty={"scores": ["msp", "fusion", "pretrained_hier"], "thresholds": ["tpr:0.95"]})
    assert main(["sweep", str(p)]) == 0
    res = load_results(tmp_path / "results" / "t")
    assert {"objective_std", "novel_super_acc_std", "seen_sub_acc_std"} <= set(res.epochs.columns)
    assert res.trials.final_objective_std.notna().all() and (res.trials.folds == 3).all()
    assert set(res.thresholds.score) == {"msp", "fusion", "pretrained_hier"}
    assert res.thresholds.novel_super_acc.notna().all()
    best = res.trials.loc[res.trials.final_objective.idxmax()]
    assert f"±{100 * best.final_objective_std:.1f} pts" in capsys.readouterr().out  # the table shows the fold spread
    # predict from the best trial (fold 0's model, its bank with the reference features in the checkpoint),
    # then refit it once
    from hier_tl.data.synthetic import load_source
    from hier_tl.results.reading import trial_checkpoint
    from hier_tl.sweep.sweep_config import load_sweep
    from hier_tl.train import checkpoint

    sw = load_sweep(p)
    images = load_source(sw.data, sw.synthetic).root / "test_images"
    for extra in ([], ["--refit"]):
        out = tmp_path / f"p{len(extra)}.csv"
        assert main(["predict", str(tmp_path / "results" / "t"), "--images", str(images), "--out", str(out),
                     *extra]) == 0
        assert len(pd.read_csv(out)) == len(list(images.iterdir()))
    refit = checkpoint.load(next((tmp_path / "results" / "t" / "refit").glob("*/checkpoint.pt")))
    assert refit["config"]["folds"] == 1 and "folds" not in refit and refit["bank"]["bank_backbone"] is not None
    assert refit["bank"]["bank_ref"].shape[0] == refit["bank"]["bank_backbone"].shape[0]
    # per-level rules: the tpr level is recalibrated on held-back images, the `best` level keeps the trial's value
    trial, _ = trial_checkpoint(res.storage, best)
    assert refit["calibration"]["levels"] == ["super"] and refit["calibration"]["rule"] == "tpr:0.95/best"
    assert refit["history"][-1]["threshold_sub"] == trial["history"][-1]["threshold_sub"]


def test_a_second_machine_downloads_the_shared_caches_instead_of_decoding_or_computing(synth_dir, tmp_path,
                                                                                       monkeypatch):
    """Two cache folders stand for two machines, a real S3-compatible server for the sweep's storage: the
    driver shares the decoded store, a trial on the first machine computes and shares the reference
    features, and a trial on the second downloads both (once) and trains exactly alike."""
    from dataclasses import replace

    import torch

    from hier_tl.data import images
    from hier_tl.data.dataset import load_dataset
    from hier_tl.results.storage import Storage
    from hier_tl.sweep.runner import share_data
    from hier_tl.sweep.trainable import StorageShare, open_data
    from hier_tl.train import reference
    from hier_tl.train.train_config import TrainConfig
    from hier_tl.train.trainer import fit

    from s3_server import s3_bucket

    cfg = TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25, holdout_subclasses=1,
                      novelty_score="pretrained_hier", threshold="tpr:0.95", reference_size=32)
    with s3_bucket(monkeypatch) as uri:
        storage = Storage(uri, "sw")
        share = StorageShare(storage.uri)
        monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path / "a"))
        data = load_dataset(synth_dir)
        share_data(data, storage)  # the driver, on machine a
        first = fit(cfg, replace(data, share=share))  # a trial on machine a: computes and shares the features
        assert storage.listdir("cache") == sorted([data.store.key, "reference"])
        assert storage.listdir(f"cache/{data.store.key}") == ["images.npy", "meta.json"]

        monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path / "b"))  # machine b: its own, empty cache
        never = lambda *a, **k: pytest.fail("decoded or computed on the second machine")  # noqa: E731
        monkeypatch.setattr(images, "_decode_one", never)
        monkeypatch.setattr(reference, "_compute", never)
        for trial in range(2):
            phases = []
            ds = open_data(data.ref(), share, lambda *a: phases.append(a))
            second = fit(cfg, ds, progress=lambda *a: phases.append(a))
            assert torch.equal(ds.images, data.images) and ds.store.folder == tmp_path / "b" / data.store.key
            assert second.history[-1]["objective"] == pytest.approx(first.history[-1]["objective"])
            said = [p[0] for p in phases]
            assert said[0] == "mapping the dataset" and said[-1] == "evaluating"
            # once per machine: the first trial there downloads both, the next maps and reads what is there
            assert {p for p in said if p.startswith("downloading")} == (set() if trial else {
                "downloading the dataset cache (MB)", "downloading reference features"})
