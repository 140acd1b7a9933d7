"""sweep.board: trials announce their phase, the driver's progress line reads the latest of each, and a board
that does not answer never holds the sweep up."""

import time

import pytest

from hier_tl.sweep.board import BOARD, ProgressBoard, read_board, start_board


def test_the_board_keeps_the_latest_phase_of_each_trial():
    b = ProgressBoard()
    t0 = time.time()
    b.update("t1", "decoding", 0, 0)
    b.update("t2", "reference features", 3, 10)
    b.update("t1", "training", 2.0, 5.0)  # counts are whole numbers, however they arrive
    snap = b.snapshot()
    assert {k: v[:3] for k, v in snap.items()} == {"t1": ("training", 2, 5), "t2": ("reference features", 3, 10)}
    assert all(isinstance(n, int) for v in snap.values() for n in v[1:3])
    assert all(t0 <= v[3] <= time.time() for v in snap.values())  # when it was announced


def test_a_snapshot_is_a_copy_later_updates_do_not_change():
    b = ProgressBoard()
    b.update("t1", "training", 1, 5)
    snap = b.snapshot()
    b.update("t1", "evaluating", 5, 5)
    b.update("t2", "decoding", 0, 0)
    assert list(snap) == ["t1"] and snap["t1"][0] == "training"


def test_no_board_or_a_broken_one_reads_as_no_phases():
    assert read_board(None) == {}
    assert read_board(object()) == {}  # not an actor at all: the progress line goes without phases


@pytest.mark.slow
def test_trials_update_the_named_actor_and_the_driver_reads_it(tmp_path):
    import ray

    from hier_tl.sweep.cluster import start_ray, stop_ray

    start_ray(None, tmp_path / "ray.log")
    try:
        board = start_board()
        found = ray.get_actor(BOARD)  # what each trial looks up by name
        ray.get(found.update.remote("t1", "training", 1, 4))
        assert {k: v[:3] for k, v in read_board(board).items()} == {"t1": ("training", 1, 4)}
        ray.kill(board)
        deadline = time.time() + 60  # ray.kill returns before the actor is gone: wait until it is
        while time.time() < deadline:
            try:
                ray.get(board.snapshot.remote(), timeout=5)
            except ray.exceptions.RayActorError:
                break
            except ray.exceptions.GetTimeoutError:
                continue
            time.sleep(0.1)
        t0 = time.perf_counter()
        assert read_board(board, timeout=1.0) == {}  # a dead board: no phases, and no wait beyond the timeout
        assert time.perf_counter() - t0 < 5
    finally:
        stop_ray(tmp_path / "ray.log")
