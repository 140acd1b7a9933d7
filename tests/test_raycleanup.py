"""sweep.raycleanup: Ray processes of a killed driver are stopped by the next sweep, and nothing else is: a pid
is trusted only with its start time, or when the process carries the driver's token in its environment."""

import json
import os
import signal
import subprocess

import pytest

from hier_tl.sweep import raycleanup as rc


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path))
    return tmp_path / "ray-processes"


@pytest.fixture
def spawn():
    """`sleep 60` children (with extra environment variables); every one is ended after the test."""
    procs = []

    def start(**env) -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"], env={**os.environ, **env})
        procs.append(p)
        return p
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def write_record(folder, driver: int, driver_start, token: str, pids: dict) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{driver}.json"
    path.write_text(json.dumps({"driver": driver, "driver_start": driver_start, "token": token,
                                "pids": {str(p): t for p, t in pids.items()}}))
    return path


def gone_driver() -> tuple[int, int]:
    """A driver that no longer exists: this very pid, with a start time it does not have (the pid was reused)."""
    return os.getpid(), rc.start_time(os.getpid()) + 1


def test_start_time_of_a_live_process_and_none_once_it_is_gone_or_a_zombie(spawn):
    assert isinstance(rc.start_time(os.getpid()), int)
    p = spawn()
    assert rc.start_time(p.pid) >= rc.start_time(os.getpid())
    p.kill()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
    assert rc.start_time(p.pid) is None
    p.wait()
    assert rc.start_time(p.pid) is None


def test_a_recorded_pid_whose_start_time_no_longer_matches_is_never_signalled(records, spawn):
    stranger = spawn()  # took over a pid the killed driver's Ray once had
    rec = write_record(records, *gone_driver(), "tok-a", {stranger.pid: rc.start_time(stranger.pid) + 7})
    assert rc.cleanup(verbose=False) == 0
    assert stranger.poll() is None and not rec.exists()


def test_a_recorded_pid_with_its_start_time_is_stopped(records, spawn, capsys):
    worker = spawn()
    driver, _ = gone_driver()
    write_record(records, driver, rc.start_time(driver) + 1, "tok-b", {worker.pid: rc.start_time(worker.pid)})
    assert rc.cleanup() == 1
    assert worker.wait(timeout=10) == -signal.SIGTERM
    assert capsys.readouterr().out == f"cleaned up 1 Ray process(es) left by a killed hier-tl driver (pid {driver})\n"


def test_a_process_carrying_the_token_of_the_driver_is_stopped(records, spawn):
    worker = spawn(**{rc.MARK: "tok-c"})  # started by Ray after the record was written
    bystander = spawn(**{rc.MARK: "tok-other"})
    rec = write_record(records, *gone_driver(), "tok-c", {})
    assert rc.cleanup(verbose=False) == 1
    assert worker.wait(timeout=10) == -signal.SIGTERM
    assert bystander.poll() is None and not rec.exists()


def test_the_processes_of_a_live_driver_are_left_alone(records, spawn):
    driver = spawn()
    worker = spawn(**{rc.MARK: "tok-d"})
    rec = write_record(records, driver.pid, rc.start_time(driver.pid), "tok-d", {worker.pid: rc.start_time(worker.pid)})
    assert rc.cleanup(verbose=False) == 0
    assert worker.poll() is None and driver.poll() is None and rec.exists()


@pytest.mark.parametrize("text", ["not json", "[]", '{"driver": 1}', '{"driver": "x", "token": "t", "pids": {}}',
                                  '{"driver": 1, "token": "t", "pids": [1, 2]}'])
def test_an_unreadable_record_is_removed_and_trusted_for_nothing(records, spawn, text):
    worker = spawn(**{rc.MARK: "t"})
    records.mkdir(parents=True)
    (records / "1.json").write_text(text)
    assert rc.cleanup(verbose=False) == 0
    assert not (records / "1.json").exists() and worker.poll() is None


def test_the_record_of_this_driver_names_it_and_is_forgotten_when_it_shuts_ray_down(records):
    rc.record()
    rec = records / f"{os.getpid()}.json"
    data = json.loads(rec.read_text())
    assert data["driver"] == os.getpid() and data["driver_start"] == rc.start_time(os.getpid())
    assert data["token"] == rc.mark_value() and data["token"].startswith(f"{os.getpid()}-")
    assert rc.cleanup(verbose=False) == 0 and rec.exists()  # alive: left alone
    rc.forget()
    assert not rec.exists()


def test_nothing_recorded_nothing_done(records):
    assert not records.exists() and rc.cleanup() == 0
