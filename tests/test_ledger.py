"""TrialLedger: status transitions, incremental summaries against brute force, wall time, resume."""

import math
import random

import pandas as pd
import pytest

from hier_tl.results.ledger import NO_EPOCH_ERROR, STATUSES, TrialLedger


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def ledger(mode="max", clock=None) -> TrialLedger:
    return TrialLedger("acc", mode, clock=clock or Clock())


def report(led, tid, epochs, values=None, epoch_time=1.0):
    for i, e in enumerate(epochs):
        led.result(tid, e, {"epoch": e, "acc": values[i] if values else e / 10, "epoch_time": epoch_time})


# -- status transitions --
def test_start_creates_a_running_row_with_its_columns():
    led = ledger()
    led.start("t1", {"lr": 0.1, "backbone": "resnet18", "status": "ignored"})
    row = led.row("t1")
    assert row["status"] == "running" and row["lr"] == 0.1 and row["backbone"] == "resnet18"
    assert (row["error"], row["epochs_run"], row["retries"], row["compute_s"]) == (None, 0, 0, 0.0)
    assert led.running() == ["t1"]


@pytest.mark.parametrize("ran, planned, status", [(3, 3, "completed"), (4, 3, "completed"), (2, 3, "stopped"),
                                                  (0, 3, "errored")])
def test_complete_status_depends_on_epochs_run(ran, planned, status):
    led = ledger()
    led.start("t", {})
    report(led, "t", range(1, ran + 1))
    led.complete("t", planned)
    row = led.row("t")
    assert row["status"] == status and row["epochs_run"] == ran
    assert row["error"] == (NO_EPOCH_ERROR if ran == 0 else None)
    assert led.running() == []


def test_complete_without_epochs_keeps_an_earlier_error():
    led = ledger()
    led.start("t", {})
    led.recover("t", "OOM")
    led.start("t", {})
    led.complete("t", 5)
    assert (led.row("t")["status"], led.row("t")["error"]) == ("errored", "OOM")


def test_error_and_recover():
    led = ledger()
    led.start("t", {})
    report(led, "t", [1, 2])
    led.recover("t", "node died")
    row = led.row("t")
    assert (row["status"], row["retries"], row["error"]) == ("pending", 1, "node died")
    led.start("t", {})
    led.recover("t", "node died again")
    led.start("t", {})
    assert led.row("t")["status"] == "running" and led.row("t")["retries"] == 2
    led.error("t", "ValueError: boom")
    row = led.row("t")
    assert (row["status"], row["error"], row["retries"], row["epochs_run"]) == ("errored", "ValueError: boom", 2, 2)


def test_end_interrupts_pending_and_running_only():
    led = ledger()
    for tid in "abcd":
        led.start(tid, {})
    report(led, "a", [1, 2, 3])
    led.complete("a", 3)
    led.recover("b", "x")  # pending
    led.error("c", "y")
    led.end()
    assert [r["status"] for r in led.rows()] == ["completed", "interrupted", "errored", "interrupted"]
    assert led.counts() == {**dict.fromkeys(STATUSES, 0), "completed": 1, "interrupted": 2, "errored": 1}


def test_events_for_an_unknown_trial_create_it():
    led = ledger()
    led.error("ghost", "actor failed to start")
    assert led.row("ghost")["status"] == "errored"
    with pytest.raises(KeyError):
        led.row("nobody")


def test_counts_track_every_transition():
    led, rng = ledger(), random.Random(3)
    for i in range(200):
        tid = f"t{rng.randrange(20)}"
        op = rng.randrange(6)
        if op == 0:
            led.start(tid, {})
        elif op == 1:
            led.result(tid, rng.randint(1, 5), {"acc": rng.random()})
        elif op == 2:
            led.recover(tid, "e")
        elif op == 3:
            led.complete(tid, 3)
        elif op == 4:
            led.error(tid, "e")
        elif i % 50 == 0:
            led.end()
        expect = dict.fromkeys(STATUSES, 0)
        for r in led.rows():
            expect[r["status"]] += 1
        assert led.counts() == expect


# -- summaries --
def test_final_columns_and_info():
    led = ledger()
    led.start("t", {"lr": 1})
    led.result("t", 1, {"epoch": 1, "acc": 0.5, "loss": 2.0, "extra": 1}, info={"node": "n1", "device": "cuda:0"})
    led.result("t", 2, {"epoch": 2, "acc": 0.4, "loss": 1.0}, info={"node": "n2", "node_id": "abc"})
    row = led.row("t")
    assert (row["final_acc"], row["final_loss"], row["final_extra"]) == (0.4, 1.0, None)
    assert "final_epoch" not in row
    assert (row["node"], row["node_id"], row["device"]) == ("n2", "abc", "cuda:0")
    assert (row["best_acc"], row["best_epoch"], row["epochs_run"]) == (0.5, 1, 2)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_incremental_summary_equals_brute_force(mode):
    """Random reports with restores (re-reported epochs), ties, NaN and None: best, best epoch, compute and
    epochs run always equal a brute force over the surviving history (a report at e supersedes epochs >= e)."""
    rng = random.Random(1234)
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    for case in range(300):
        led = ledger(mode)
        led.start("t", {})
        history: dict[int, tuple] = {}
        epoch = 0
        for _ in range(rng.randint(1, 40)):
            epoch = rng.randint(1, epoch) if epoch and rng.random() < 0.2 else epoch + 1  # restore or go on
            value = rng.choice([None, math.nan, rng.choice([0.1, 0.2, 0.3]), rng.random(), rng.randint(-3, 3)])
            t = rng.choice([0.5, 1.0, 2.25, None])
            led.result("t", epoch, {"epoch": epoch, "acc": value, **({} if t is None else {"epoch_time": t})})
            history = {e: v for e, v in history.items() if e < epoch}
            history[epoch] = (value, t or 0.0)
            best = best_epoch = None
            for e in sorted(history):
                v = history[e][0]
                if v is not None and not math.isnan(v) and (best is None or better(v, best)):
                    best, best_epoch = v, e
            row = led.row("t")
            assert (row["best_acc"], row["best_epoch"]) == (best, best_epoch), case
            assert row["compute_s"] == pytest.approx(sum(t for _, t in history.values())), case
            assert row["epochs_run"] == epoch


def test_compute_not_double_counted_on_re_reported_epochs():
    led = ledger()
    led.start("t", {})
    report(led, "t", [1, 2, 3], epoch_time=10.0)
    assert led.row("t")["compute_s"] == 30.0
    led.recover("t", "died after epoch 3, checkpoint at 1")
    led.start("t", {})
    report(led, "t", [2, 3, 4], epoch_time=10.0)
    assert led.row("t")["compute_s"] == 40.0
    report(led, "t", [4], epoch_time=7.0)
    assert led.row("t")["compute_s"] == 37.0


def test_tie_keeps_earlier_epoch_and_none_never_beats_a_number():
    led = ledger("min")
    led.start("t", {})
    report(led, "t", [1, 2, 3, 4], values=[None, 0.5, 0.5, math.nan])
    assert (led.row("t")["best_acc"], led.row("t")["best_epoch"]) == (0.5, 2)


def best(led):
    """The one best-trial rule (results.best_trial) applied to the ledger's rows, as the progress line does."""
    import pandas as pd

    from hier_tl.results.reading import best_trial
    return best_trial(pd.DataFrame(led.rows()), led.metric, led.mode)


def test_best_uses_final_value_and_earliest_trial_on_ties():
    led = ledger()
    assert best(led) is None
    for tid, values in (("a", [0.9, 0.1]), ("b", [0.5, 0.6]), ("c", [0.2, 0.6]), ("d", [0.99, math.nan])):
        led.start(tid, {})
        report(led, tid, [1, 2], values=values)
    assert best(led)["trial_id"] == "b"
    assert best(TrialLedger.from_rows(led.rows(), "acc", "min"))["trial_id"] == "a"


# -- time --
def test_wall_time_with_a_fake_clock():
    clock = Clock(100.0)
    led = ledger(clock=clock)
    led.start("t", {})
    clock.t = 105.0
    led.result("t", 1, {"acc": 1.0, "epoch_time": 4.0})
    assert led.row("t")["wall_s"] == 5.0
    clock.t = 107.0
    assert led.rows()[0]["wall_s"] == 7.0  # running: up to now
    clock.t = 110.0
    led.recover("t", "x")
    clock.t = 150.0  # waiting to be retried does not count
    assert led.row("t")["wall_s"] == 10.0
    led.start("t", {})
    clock.t = 153.0
    led.complete("t", 1)
    clock.t = 999.0
    assert led.row("t")["wall_s"] == 13.0 and led.row("t")["compute_s"] == 4.0


def test_end_closes_wall_time():
    clock = Clock(0.0)
    led = ledger(clock=clock)
    led.start("t", {})
    clock.t = 4.0
    led.end()
    clock.t = 50.0
    assert led.row("t")["wall_s"] == 4.0


def test_dirty_flag():
    led = ledger()
    assert not led.pop_dirty()
    led.start("t", {})
    assert led.pop_dirty() and not led.pop_dirty()
    led.rows(), led.counts(), led.running()
    assert not led.pop_dirty()
    led.result("t", 1, {"acc": 1.0})
    assert led.pop_dirty()


# -- resume --
def _saved(led, tmp_path) -> pd.DataFrame:
    """The rows as they come back from a trials table on disk (NaN for missing, numpy scalars)."""
    path = tmp_path / "trials.parquet"
    pd.DataFrame(led.rows()).to_parquet(path)
    return pd.read_parquet(path)


def test_from_rows_round_trip(tmp_path):
    clock = Clock(0.0)
    led = ledger(clock=clock)
    for tid in "abc":
        led.start(tid, {"lr": 0.1, "backbone": "vgg"})
    report(led, "a", [1, 2, 3], values=[0.3, 0.7, 0.5], epoch_time=2.0)
    led.complete("a", 3)
    report(led, "b", [1], values=[None])
    clock.t = 9.0
    led.error("c", "boom")
    before = led.rows()
    back = TrialLedger.from_rows(_saved(led, tmp_path), "acc", "max", clock=clock)
    rows = back.rows()
    assert [r["status"] for r in rows] == ["completed", "interrupted", "errored"]
    assert back.pop_dirty()  # b became interrupted: the table needs rewriting
    for old, new in zip(before, rows):
        old = {k: v for k, v in old.items() if k != "status"}
        new = {k: v for k, v in new.items() if k != "status"}
        assert set(old) <= set(new) and new == {k: old.get(k) for k in new}  # columns a row lacked: None
    assert type(rows[0]["epochs_run"]) is int and type(rows[0]["best_epoch"]) is int
    assert back.counts()["interrupted"] == 1 and best(back)["trial_id"] == "a"


def test_resume_continues_summaries(tmp_path):
    """An interrupted trial restarted after a resume: best, compute and wall time go on from the saved row."""
    clock = Clock(0.0)
    led = ledger(clock=clock)
    led.start("t", {})
    clock.t = 30.0
    report(led, "t", [1, 2, 3], values=[0.1, 0.9, 0.2], epoch_time=10.0)
    led.end()
    back = TrialLedger.from_rows(_saved(led, tmp_path), "acc", "max", clock=clock)
    clock.t = 100.0
    back.start("t", {})
    clock.t = 110.0
    report(back, "t", [4], values=[0.95], epoch_time=10.0)
    row = back.row("t")
    assert (row["status"], row["best_acc"], row["best_epoch"], row["compute_s"]) == ("running", 0.95, 4, 40.0)
    assert row["wall_s"] == 40.0


def test_resume_with_epochs_is_exact_on_rollback(tmp_path):
    """Restored from a checkpoint below the saved epoch count: with the epochs table the summary is exact."""
    led = ledger()
    led.start("t", {})
    vals = [0.1, 0.9, 0.2, 0.3]
    report(led, "t", [1, 2, 3, 4], values=vals, epoch_time=10.0)
    led.end()
    epochs = pd.DataFrame([{"trial_id": "t", "epoch": e, "acc": v, "epoch_time": 10.0}
                           for e, v in zip([1, 2, 3, 4], vals)])
    back = TrialLedger.from_rows(_saved(led, tmp_path), "acc", "max", epochs=epochs)
    report(back, "t", [2], values=[0.5], epoch_time=3.0)  # checkpoint was at 1
    row = back.row("t")
    assert (row["best_acc"], row["best_epoch"], row["compute_s"], row["epochs_run"]) == (0.5, 2, 13.0, 2)


def test_resume_without_epochs_estimates_a_rollback(tmp_path):
    led = ledger()
    led.start("t", {})
    report(led, "t", [1, 2, 3, 4], values=[0.1, 0.9, 0.2, 0.3], epoch_time=10.0)
    led.end()
    back = TrialLedger.from_rows(_saved(led, tmp_path), "acc", "max")
    report(back, "t", [4], values=[0.0], epoch_time=10.0)  # best epoch 2 survives; 3 epochs pro rata
    row = back.row("t")
    assert (row["best_acc"], row["best_epoch"], row["compute_s"]) == (0.9, 2, 40.0)
    report(back, "t", [2], values=[0.4], epoch_time=10.0)  # the best epoch itself is superseded
    row = back.row("t")
    assert (row["best_acc"], row["best_epoch"], row["compute_s"]) == (0.4, 2, 20.0)


def test_bad_mode():
    with pytest.raises(ValueError):
        TrialLedger("acc", "maximum")


# A saved row with values no ledger writes (a damaged or edited trials.parquet): (column, value, what the restored
# row holds there); the restore never fails and the trial can run again. Best values come from the epochs table.
DAMAGED_VALUES = [
    ("epochs_run", "three", 0), ("epochs_run", math.nan, 0), ("epochs_run", math.inf, 0), ("epochs_run", 2.0, 2),
    ("retries", "x", 0), ("wall_s", "soon", 0.0), ("wall_s", -5.0, 0.0), ("compute_s", None, 0.0),
    ("best_epoch", "first", 2), ("best_epoch", math.nan, 2), ("best_acc", "high", 0.2),
    ("status", "exploded", "interrupted"), ("status", None, "interrupted"),
]


@pytest.mark.parametrize("column,value,want", DAMAGED_VALUES)
def test_restoring_values_no_ledger_writes_never_fails(column, value, want):
    row = {"trial_id": "t", "status": "completed", "epochs_run": 2, "retries": 0, "wall_s": 1.0, "compute_s": 1.0,
           "best_epoch": 1, "best_acc": 0.5, column: value}
    epochs = [{"trial_id": "t", "epoch": e, "acc": 0.1 * e} for e in (1, 2)] + [{"trial_id": "t", "epoch": "x"}]
    back = TrialLedger.from_rows(pd.DataFrame([row]), "acc", "max", epochs=pd.DataFrame(epochs))
    assert back.row("t")[column] == pytest.approx(want) and sum(back.counts().values()) == 1
    back.start("t", {})
    report(back, "t", [1])  # and the trial runs again from it
    assert back.row("t")["status"] == "running"


def test_rows_without_an_id_are_skipped():
    back = TrialLedger.from_rows([{"status": "completed"}, {"trial_id": None}, {"trial_id": "t"}], "acc", "max")
    assert [r["trial_id"] for r in back.rows()] == ["t"]
