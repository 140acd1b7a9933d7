"""The progress board: where running trials announce their phase (`TuneReporter.phase`) and the driver's
progress line reads it. A named, CPU-less Ray actor; this module imports nothing heavy, so the actor's
process stays small."""

from __future__ import annotations

import time

BOARD = "hier_tl_progress"  # the actor's name, in the driver's Ray namespace


class ProgressBoard:
    """Latest phase of every trial (a Ray actor; plain Python here so it can be tested without Ray)."""

    def __init__(self):
        self.phases: dict[str, tuple[str, int, int, float]] = {}

    def update(self, trial_id: str, phase: str, done: int, total: int) -> None:
        self.phases[trial_id] = (phase, int(done), int(total), time.time())

    def snapshot(self) -> dict[str, tuple[str, int, int, float]]:
        return dict(self.phases)


def start_board(name: str = BOARD):
    """The board as a named, CPU-less Ray actor (ended with the driver's Ray)."""
    import ray

    return ray.remote(num_cpus=0)(ProgressBoard).options(name=name, max_concurrency=4).remote()


def read_board(board, timeout: float = 2.0) -> dict:
    """The board's snapshot, or {} if it does not answer in time (a progress line never blocks a sweep)."""
    if board is None:
        return {}
    import ray

    try:
        return ray.get(board.snapshot.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - the line goes without phases
        return {}
