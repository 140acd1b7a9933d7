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
    from hier_tl.synthetic import SynthSpec, synthesize

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
    from hier_tl.data import load_dataset

    return load_dataset(synth_dir)


@pytest.fixture(scope="session")
def run_dir(synth_ds, tmp_path_factory):
    """A `hier-tl train`-style run folder (checkpoint.pt after one epoch of cnn_tiny), shared read-only."""
    from hier_tl.config import TrainConfig
    from hier_tl.train import fit

    out = tmp_path_factory.mktemp("run")
    fit(TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25), synth_ds,
        lambda r: r.save(out))
    return out
