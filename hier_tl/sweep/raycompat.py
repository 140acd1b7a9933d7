"""Every use of a Ray name that is not public API, in one place, for the Ray versions pyproject.toml pins
(`ray[tune]>=2.60,<2.61`). tests/test_raycompat.py checks each name still exists and fails naming the pin:
before widening the pin, run it against the new Ray and mend what moved here.

- new trials after `--resume` write into the folder the command names (`follow_folder`);
- a restored Tuner gets this run's callbacks, never the pickled ones (`set_callbacks`);
- the processes of the embedded Ray, recorded for `hier-tl cleanup` (`node_processes`);
- Ray's own log lines go to a file in the sweep folder, not the terminal (`ray_logs_to`, `stderr_to`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path

PIN = "ray[tune]>=2.60,<2.61"
RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data")


@contextlib.contextmanager
def follow_folder(fs, root: str, name: str):
    """Ray restores its search algorithm with the storage of the run that pickled it, so trials it creates
    after a resume would write into the folder the sweep was *copied from*. Give them, as Ray itself does
    for restored trials (`TuneController._restore_trials`), the folder this command names."""
    import ray.tune.search.basic_variant as basic
    import ray.tune.search.search_generator as generator

    originals = {m: m._create_trial_from_spec for m in (basic, generator)}

    def follow(make):
        def create(spec, *args, **kwargs):
            if spec.get("storage") is not None:
                moved = copy.copy(spec["storage"])
                moved.storage_filesystem, moved.storage_fs_path = fs, root
                moved.experiment_dir_name = name
                spec = {**spec, "storage": moved}
            return make(spec, *args, **kwargs)
        return create
    for module, make in originals.items():
        module._create_trial_from_spec = follow(make)
    try:
        yield
    finally:
        for module, make in originals.items():
            module._create_trial_from_spec = make


def set_callbacks(tuner, callbacks: list) -> None:
    """A restored Tuner's callbacks: derived now, never unpickled from the folder."""
    tuner._local_tuner._run_config.callbacks = callbacks


def node_processes() -> list[int]:
    """Pids of the processes the embedded Ray node of this driver started ([] if none)."""
    import ray._private.worker as worker

    node = getattr(worker, "_global_node", None)
    if node is None:
        return []
    return [p.process.pid for infos in node.all_processes.values() for p in infos if p.process is not None]


@contextlib.contextmanager
def stderr_to(path: Path):
    """What Ray's C++ core writes straight to file descriptor 2 while it starts or stops (a warning about how
    it found the node's address, say) goes to `path` too; hier-tl's own lines are printed outside."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def ray_logs_to(path: Path):
    """Ray's log records (warnings, tracebacks of its own retries) go to `path`, not the terminal; hier-tl's
    lines stay on the terminal. Python warnings raised inside Ray go there too."""
    import ray  # noqa: F401 - importing Ray sets up its own handlers: replace them after that

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in RAY_LOGGERS:
        log = logging.getLogger(name)
        saved[name] = (list(log.handlers), log.propagate)
        for h in list(log.handlers):
            log.removeHandler(h)
        log.addHandler(handler)
        log.propagate = False
    logging.captureWarnings(True)
    warn_log = logging.getLogger("py.warnings")
    warn_saved = (list(warn_log.handlers), warn_log.propagate)
    warn_log.handlers, warn_log.propagate = [handler], False
    try:
        yield
    finally:
        for name, (handlers, propagate) in saved.items():
            log = logging.getLogger(name)
            log.removeHandler(handler)
            for h in handlers:
                log.addHandler(h)
            log.propagate = propagate
        warn_log.handlers, warn_log.propagate = warn_saved
        logging.captureWarnings(False)
        handler.close()
