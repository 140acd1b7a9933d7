"""sweep.raycompat: the Ray names hier-tl uses that are not public API still exist in the installed Ray.

If one of these fails after a Ray upgrade, the pin in pyproject.toml (raycompat.PIN) was widened past what was
tested: mend hier_tl/sweep/raycompat.py for the new Ray, run the whole suite, then widen the pin.
"""

import importlib
import inspect
import logging

import pytest
import ray

from hier_tl.sweep import raycompat

PRIVATE = [  # (module, attribute) pairs raycompat reaches into
    ("ray.tune.search.basic_variant", "_create_trial_from_spec"),
    ("ray.tune.search.search_generator", "_create_trial_from_spec"),
    ("ray.tune.experiment.config_parser", "_create_trial_from_spec"),
    ("ray._private.worker", "_global_node"),
]


def _fail(what: str):
    pytest.fail(f"Ray {ray.__version__}: {what} moved. hier-tl pins {raycompat.PIN} (pyproject.toml); mend "
                "hier_tl/sweep/raycompat.py before widening the pin.")


@pytest.mark.parametrize("module, name", PRIVATE)
def test_the_private_names_raycompat_uses_exist(module, name):
    if not hasattr(importlib.import_module(module), name):
        _fail(f"{module}.{name}")


def test_the_pin_in_pyproject_is_the_one_raycompat_was_written_for():
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"{raycompat.PIN}"' in text
    lo, hi = (v.split("=")[-1].lstrip("<>") for v in raycompat.PIN.split("]")[1].split(","))
    installed = tuple(int(x) for x in ray.__version__.split(".")[:2])
    if not tuple(int(x) for x in lo.split(".")[:2]) <= installed < tuple(int(x) for x in hi.split(".")[:2]):
        _fail("the installed version is outside the pin")


def test_a_restored_tuner_still_keeps_its_run_config_where_set_callbacks_looks():
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.tuner import Tuner
    if "_local_tuner" not in inspect.getsource(Tuner) or "self._run_config" not in inspect.getsource(TunerInternal):
        _fail("Tuner._local_tuner._run_config")


def test_new_trials_follow_the_folder_and_the_originals_come_back():
    import ray.tune.search.basic_variant as basic
    before = basic._create_trial_from_spec
    with raycompat.follow_folder(fs=None, root="/x", name="n"):
        assert basic._create_trial_from_spec is not before
    assert basic._create_trial_from_spec is before


def test_ray_log_records_go_to_the_file_and_the_handlers_come_back(tmp_path):
    log = logging.getLogger("ray.tune")
    before = list(logging.getLogger("ray").handlers)
    with raycompat.ray_logs_to(tmp_path / "logs" / "ray.log"):
        log.warning("Saving experiment state failed: a traceback would follow")
    assert "Saving experiment state failed" in (tmp_path / "logs" / "ray.log").read_text()
    assert logging.getLogger("ray").handlers == before


def test_node_processes_is_empty_without_an_embedded_ray():
    assert raycompat.node_processes() == [] or ray.is_initialized()
