"""A live Optuna view of a sweep: every finished trial mirrored into an Optuna journal file in the results
folder, so `optuna-dashboard <sweep>/optuna.journal` shows the sweep while it runs and after.

The journal is derived from hier-tl's own records (never from a pickled searcher), so it follows the
folder it lives in and survives `--resume`; trials already in it are not added twice. Local storage only:
Optuna's journal needs a file system with locks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..results.storage import Storage
from .sweep_config import SweepConfig

FILE = "optuna.journal"


class Journal:
    def __init__(self, storage: Storage, sweep: SweepConfig):
        self.sweep, self.study, self.done = sweep, None, set()
        if not storage.is_local:
            return
        try:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            backend = JournalStorage(JournalFileBackend(str(Path(storage.exp) / FILE)))
            self.study = optuna.create_study(study_name=sweep.name, storage=backend, load_if_exists=True,
                                             direction="maximize" if sweep.scheduler.mode == "max" else "minimize")
            self.done = {t.user_attrs.get("trial_id") for t in self.study.get_trials(deepcopy=False)}
        except Exception as e:  # noqa: BLE001 - a dashboard nicety must never stop a sweep
            self._off(e)

    def add(self, row: dict, curve: dict[int, float]) -> None:
        """Mirror one finished trial (its row and its per-epoch metric) unless it is there already."""
        if self.study is None or row["trial_id"] in self.done:
            return
        from .studies import build_study

        epochs = pd.DataFrame([{"trial_id": row["trial_id"], "epoch": e, self.sweep.scheduler.metric: v}
                               for e, v in curve.items()])
        try:
            one = build_study(pd.DataFrame([row]), epochs, self.sweep.space, self.sweep.scheduler.metric,
                              self.sweep.scheduler.mode)
            for t in one.trials:
                self.study.add_trial(t)
            self.done.add(row["trial_id"])
        except Exception as e:  # noqa: BLE001
            self._off(e)

    def _off(self, e: Exception) -> None:
        print(f"warning: the Optuna journal (live dashboard) is off for this sweep: {type(e).__name__}: {e}",
              file=sys.stderr)
        self.study = None
