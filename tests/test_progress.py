"""sweep.progress: the line a person follows while a sweep runs (n/N trials, ETA, each trial's epoch of E and
phase, the best of the deciding protocol)."""

import re

from hier_tl.results.ledger import TrialLedger
from hier_tl.sweep.progress import eta_seconds, progress_line
from hier_tl.train.train_config import TrainConfig, config_columns


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def ledger(clock) -> TrialLedger:
    """Two trials of protocol '1 sub held out' (one finished after 2 epochs of 10 s) and one closed-set trial
    running its first epoch."""
    led = TrialLedger("objective", "max", clock)
    for tid, holdout in (("a", 1), ("b", 1), ("c", 0)):
        led.start(tid, config_columns(TrainConfig(holdout_subclasses=holdout, depth="full", epochs=4)))
    for epoch, obj in ((1, 0.5), (2, 0.6)):
        led.result("a", epoch, {"objective": obj, "epoch_time": 10.0})
    led.complete("a", planned_epochs=2)
    led.result("b", 1, {"objective": 0.4, "epoch_time": 10.0})
    led.result("c", 1, {"objective": 0.9, "epoch_time": 10.0})
    return led


def test_eta_shares_the_epochs_left_among_the_running_trials():
    led = ledger(Clock())
    # 4 epochs timed, 40 s: 10 s each. Running: b and c have 3 epochs left each (max 4); 2 trials not started
    # will run as long as the finished one did (2 epochs). (3 + 3 + 2 * 2) * 10 s / 2 running = 50 s.
    assert eta_seconds(led, planned=5, max_epochs=4) == 50.0
    assert eta_seconds(TrialLedger("objective", "max"), planned=5, max_epochs=4) is None  # nothing timed yet


def test_eta_follows_the_pace_now_not_a_slow_first_epoch():
    # a first epoch of 100 s (reference features, a busy machine), then 10 s epochs: 3 epochs left at 10 s
    clock = Clock()
    led = TrialLedger("objective", "max", clock)
    led.start("a", config_columns(TrainConfig(epochs=5)))
    led.result("a", 1, {"objective": 0.5, "epoch_time": 100.0})
    assert eta_seconds(led, planned=1, max_epochs=5) == 400.0  # one epoch timed: the mean is all there is
    led.result("a", 2, {"objective": 0.6, "epoch_time": 10.0})
    assert eta_seconds(led, planned=1, max_epochs=5) == 30.0
    led.result("a", 2, {"objective": 0.6, "epoch_time": 12.0})  # a re-report of epoch 2 (restored) replaces it
    assert eta_seconds(led, planned=1, max_epochs=5) == 36.0


def test_the_line_says_trials_done_of_planned_each_epoch_and_phase_and_the_eta():
    phases = {"b": ("reference features", 1536, 5029, 0.0)}
    line = progress_line(ledger(Clock()), planned=5, max_epochs=4, elapsed=12, metric="objective", mode="max",
                         keys=("depth",), phases=phases, protocol="1 sub held out")
    assert line.startswith("[    12s] 1/5 trials done (1 completed), 2 running | ETA ~50 s")
    assert "b reference features 1,536/5,029" in line  # a long phase is visible, not "epoch 0"
    assert re.search(r"\| .*c epoch 1/4", line)
    assert "best objective 0.6000 (1 sub held out: a depth=full)" in line
    assert "0.9000" not in line  # the closed-set trial is not compared with the deciding protocol


def test_without_a_deciding_protocol_each_protocol_shows_its_own_best():
    line = progress_line(ledger(Clock()), planned=3, max_epochs=4, elapsed=1, metric="objective", mode="max")
    assert "best objective 0.6000 (1 sub held out: a)" in line and "best objective 0.9000 (closed set: c)" in line
