"""Sweep files: strict parsing with key paths in errors, smoke merging, overrides."""

import os
from pathlib import Path

import pytest
import yaml

from hier_tl.core.config import ConfigError
from hier_tl.sweep.sweep_config import load_sweep

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def write(tmp_path, data) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweeps_parse_with_and_without_smoke(path):
    full, smoke = load_sweep(path), load_sweep(path, smoke=True)
    assert full.smoke, f"{path.name} has no smoke variant"
    assert smoke.max_epochs <= full.max_epochs


@pytest.mark.parametrize("data,needle", [
    ({"nmae": "x"}, "nmae"),
    ({"scheduler": {"kind": "asha", "grace": 1}}, "scheduler.grace"),
    ({"base": {"lerning_rate": 1}}, "base.lerning_rate"),
    ({"space": {"lr": {"logunifrom": [1, 2]}}}, "space.lr: unknown sampler"),
    ({"space": {"lr": {"loguniform": [1]}}}, "space.lr.loguniform"),
    ({"space": {"learning_rate": {"choice": [1]}}}, "space.learning_rate"),
    ({"space": {"backbone": {"choice": ["cnn", "vgg"]}}}, "vgg"),
    ({"space": {"lr": {"grid": [0.1, 0.01]}}, "search": {"algo": "optuna"}}, "space.lr: 'grid'"),
    ({"search": {"algo": "bayes"}}, "search.algo"),
    ({"num_samples": "many"}, "num_samples"),
    ({"novelty": {"thresholds": [0.5, "tpr:3"]}}, "novelty.thresholds[1]"),
    ({"novelty": {"scores": ["odin"]}}, "odin"),
])
def test_bad_sweep_files_name_the_key_path(tmp_path, data, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_sweep(write(tmp_path, data))


def test_smoke_and_overrides(tmp_path):
    p = write(tmp_path, {"name": "a", "base": {"epochs": 9, "lr": 0.1}, "space": {"lr": {"choice": [0.1, 0.2]}},
                         "smoke": {"base": {"epochs": 1}, "space": {"depth": {"choice": ["full"]}}}})
    s = load_sweep(p, smoke=True, overrides=["resources.gpu=0.5", "base.batch_size=16"], name="b")
    assert s.base == {"epochs": 1, "lr": 0.1, "batch_size": 16} and s.space == {"depth": {"choice": ["full"]}}
    assert s.resources.gpu == 0.5 and s.name == "b" and s.max_epochs == 1


def test_asha_horizon_covers_sampled_epochs(tmp_path):
    p = write(tmp_path, {"base": {"epochs": 10}, "space": {"epochs": {"choice": [5, 20]}}})
    assert load_sweep(p).max_epochs == 20
    p = write(tmp_path, {"base": {"epochs": 10}, "search": {"algo": "grid"},
                         "space": {"backbone+epochs": {"grid": [["cnn", 3], ["cnn_tiny", 30]]}}})
    assert load_sweep(p).max_epochs == 30


@pytest.mark.parametrize("data,needle", [
    ({"space": {"lr": {"loguniform": [1e-2, 1e-3]}}}, "space.lr.loguniform: lower bound 0.01 must be below"),
    ({"space": {"lr": {"loguniform": ["1e-3", 1e-2]}}}, "space.lr.loguniform: bound '1e-3' is not a number"),
    ({"space": {"lr": {"loguniform": [0.0, 1e-2]}}}, "space.lr.loguniform: a log scale needs positive bounds"),
    ({"space": {"batch_size": {"randint": [16.5, 64]}}}, "randint takes integer bounds"),
    ({"space": {"lr": {"quniform": [0.001, 0.01, 0]}}}, "the step must be positive"),
    ({"space": {"lr": {"uniform": [-1.0, 0.01]}}}, "space.lr.uniform: lr: -1.0 is out of range"),
    ({"space": {}, "search": {"algo": "optuna"}}, "space: search.algo optuna needs at least one key"),
    ({"space": {"lr": {"choice": [0.1]}}, "scheduler": {"metric": "accuracy"}},
     "scheduler.metric: 'accuracy' is not a metric trials report"),
    ({"space": {"lr": {"choice": [0.1]}}, "scheduler": {"metric": "auroc_sub_knn"}}, "auroc_sub_knn"),
    ({"name": "../escape"}, "not a valid sweep name"),
])
def test_sweep_mistakes_are_found_before_anything_runs(tmp_path, data, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_sweep(write(tmp_path, data))


def test_a_metric_of_the_novelty_grid_or_a_sampled_score_is_accepted(tmp_path):
    ok = load_sweep(write(tmp_path, {"space": {"novelty_score": {"choice": ["msp", "knn"]}},
                                     "scheduler": {"metric": "auroc_sub_knn"}}))
    assert ok.scheduler.metric == "auroc_sub_knn"


def test_memory_that_cannot_fit_is_refused_with_the_numbers(tmp_path):
    sweep = load_sweep(write(tmp_path, {"space": {"batch_size": {"choice": [64, 65536]}}, "max_concurrent": 1}))
    with pytest.raises(ConfigError, match=r"memory: 1 trial\(s\) at once would need about .* GiB .*host memory: 8\.0 GiB"):
        sweep.check_memory(5000, 64, 8 * 2**30, None)
    load_sweep(write(tmp_path, {"space": {"image_size": {"choice": [64, 128]}}})).check_memory(5000, 64, 8 * 2**30, None)


def test_the_cli_stops_a_bad_sweep_with_one_line_and_writes_nothing(tmp_path, capsys):
    from hier_tl.cli import main
    p = write(tmp_path, {"space": {"lr": {"loguniform": [1e-2, 1e-3]}}, "storage": str(tmp_path / "results")})
    assert main(["sweep", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: space.lr.loguniform") and "Traceback" not in err[0]
    assert not (tmp_path / "results").exists()


def test_trials_sharing_a_mapped_dataset_count_it_once_not_per_trial(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)  # 16 one-CPU trials at once on a 128 GiB machine
    sweep = load_sweep(write(tmp_path, {"resources": {"cpu": 1}, "space": {"lr": {"choice": [0.001, 0.01]}}}))
    with pytest.raises(ConfigError, match=r"memory: 16 trial\(s\) at once"):  # 12 GiB each, in memory
        sweep.check_memory(1_000_000, 64, 128 * 2**30, None)
    sweep.check_memory(1_000_000, 64, 128 * 2**30, None, shared=True)  # one mapped store: fits
    sweep.check_memory(3_000_000, 64, 16 * 2**30, None, shared=True)  # larger than memory: paged from disk
