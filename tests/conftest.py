import os
import shutil
from pathlib import Path

import pytest

# Every test run gets its own decode cache, torch hub dir and signing key: nothing is read from, or written
# to, the user's.
_SESSION_TMP = Path(os.environ.get("PYTEST_HIER_TL_TMP", "/tmp")) / f"hier-tl-tests-{os.getpid()}"
os.environ["HIER_TL_CACHE"] = str(_SESSION_TMP / "cache")
os.environ["TORCH_HOME"] = str(_SESSION_TMP / "torch")
os.environ["HIER_TL_KEY_FILE"] = str(_SESSION_TMP / "key")  # resume's signing key: not the user's
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset (3 superclasses x 3 subclasses x 16 images), shared read-only by tests."""
    from hier_tl.data.synthetic import SynthSpec, synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "data",
                      SynthSpec(subs_per_super=3, per_class=16, test_per_class=3, seed=7))


@pytest.fixture
def synth_copy(synth_dir, tmp_path) -> Path:
    """A private copy of the synthetic dataset that a test may corrupt."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture(scope="session")
def synth_ds(synth_dir):
    from hier_tl.data.dataset import load_dataset

    return load_dataset(synth_dir)


@pytest.fixture(scope="session")
def run_dir(synth_ds, tmp_path_factory):
    """A `hier-tl train`-style run folder (checkpoint.pt after one epoch of cnn_tiny), shared read-only."""
    from hier_tl.train.train_config import TrainConfig
    from hier_tl.train.trainer import fit

    out = tmp_path_factory.mktemp("run")
    fit(TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25), synth_ds,
        lambda r: r.save(out))
    return out


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """One tiny finished sweep (2 depths x 2 mixups, ASHA, open-set), shared by the slow tests that read a
    results folder: (results folder, dataset folder)."""
    import yaml

    from hier_tl.cli import main
    tmp = tmp_path_factory.mktemp("sweep")
    synth = {"seed": 2, "subs_per_super": 2, "per_class": 30, "test_per_class": 8, "size": 32}
    spec = {
        "name": "r", "data": "synthetic", "synthetic": synth,
        "base": {"backbone": "cnn_tiny", "epochs": 4, "batch_size": 16, "val_fraction": 0.25, "lr": 0.005,
                 "threshold": "tpr:0.95", "holdout_subclasses": 1},
        "space": {"depth": {"grid": ["full", "partial"]}, "mixup_alpha": {"grid": [0.0, 0.2]}},
        "search": {"algo": "grid"}, "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "num_samples": 1, "resources": {"cpu": 1}, "storage": str(tmp / "results"),
        "novelty": {"scores": ["msp", "energy"], "thresholds": [0.3, 0.5, 0.7, "tpr:0.95"]}, "smoke": {},
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp / "s.yaml")]) == 0
    from hier_tl.data.synthetic import load_source
    from hier_tl.sweep.sweep_config import load_sweep
    sw = load_sweep(tmp / "s.yaml")
    return tmp / "results" / "r", load_source(sw.data, sw.synthetic).root
