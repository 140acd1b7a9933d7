"""Sweep state at scale: a killed driver, a copied folder, a changed file, a second driver, a planted pickle
and a full disk each end in one clear line with nothing reported lost and nothing outside the sweep changed."""

import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hier_tl import load_results
from hier_tl.cli import main

pytestmark = pytest.mark.slow
EPOCHS = 8


def sweep_file(tmp_path: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({
        "name": "k", "data": "synthetic",
        "synthetic": {"seed": 5, "subs_per_super": 3, "per_class": 40, "test_per_class": 1, "size": 64},
        "base": {"backbone": "cnn_tiny", "epochs": EPOCHS, "batch_size": 8, "val_fraction": 0.25},
        "space": {"lr": {"grid": [0.002, 0.003, 0.004]}}, "search": {"algo": "grid"},
        "scheduler": {"kind": "none"}, "num_samples": 1, "resources": {"cpu": 1}, "max_concurrent": 1,
        "storage": str(tmp_path / "results"), "novelty": {"scores": ["msp"], "thresholds": [0.5]}, "smoke": {}}))
    return p


def start(args, log: Path, env=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HIER_TL_HEARTBEAT_S": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "hier_tl.cli", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env)


def run(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hier_tl.cli", *args], capture_output=True, text=True, timeout=300)


def wait_epochs(uri: Path, n: int, timeout=180) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            got = len(load_results(str(uri)).epochs)
        except Exception:
            got = 0
        if got >= n:
            return got
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} epochs recorded in time")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def ray_records() -> list[dict]:
    folder = Path(os.environ["HIER_TL_CACHE"]) / "ray-processes"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_killed_driver_copied_folder_changed_file_second_driver_planted_pickle(tmp_path):
    p, exp = sweep_file(tmp_path), tmp_path / "results" / "k"
    a = start(["sweep", str(p)], tmp_path / "a.log")
    wait_epochs(exp, 1)
    os.kill(a.pid, signal.SIGKILL)  # kill -9 of the driver, instant 1: after its first epoch
    a.wait()
    left = [r for r in ray_records() if r["driver"] == a.pid]
    assert left and any(alive(pid) for pid in left[0]["pids"])  # its Ray processes outlive it...
    assert re.search(r"\d+ running\b.*\| \S+ epoch \d+/\d+", (tmp_path / "a.log").read_text())  # heartbeat: its epoch of E

    changed = run(["sweep", str(p), "--name", "k", "--resume", "--set", "base.epochs=9"])
    assert changed.returncode == 2 and "base.epochs: 8 stored, 9 now" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    assert "cleaned up" in changed.stdout and not any(alive(pid) for pid in left[0]["pids"])  # ...until
    # the next hier-tl start stops them (they would go on training into the folder otherwise)

    copy_root = tmp_path / "synced"  # e.g. synced down from a bucket, under another root
    shutil.copytree(exp, copy_root / "k")
    original = snapshot(exp)
    b = start(["sweep", str(p), "--name", "k", "--resume", "--storage", str(copy_root)], tmp_path / "b.log")
    wait_epochs(copy_root / "k", len(load_results(str(copy_root / "k")).epochs) + 1)
    # a second driver of the same sweep is refused while one is alive, with or without --resume
    args = ["sweep", str(p), "--name", "k", "--storage", str(copy_root)]
    second = run(args + ["--resume"])
    assert second.returncode == 2 and "is already running" in second.stderr, second.stderr
    second = run(args)
    assert second.returncode == 2 and "already holds a sweep named 'k'" in second.stderr
    assert b.poll() is None, (tmp_path / "b.log").read_text()
    os.kill(b.pid, signal.SIGKILL)  # instant 2: in the middle of a resumed run
    b.wait()
    done = run(["sweep", str(p), "--name", "k", "--resume", "--storage", str(copy_root)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(exp) == original  # the original folder was never written
    assert sorted(os.listdir(copy_root)) == ["k"]  # nothing outside the sweep folder
    res = load_results(str(copy_root / "k"))
    assert len(res.trials) == 3 and (res.trials.status == "completed").all()
    for tid, g in res.epochs.groupby("trial_id"):  # every reported epoch, once
        assert sorted(g.epoch) == list(range(1, EPOCHS + 1)), (tid, sorted(g.epoch))
    assert len(res.thresholds) == 3 * EPOCHS

    planted = next(exp.glob("searcher-state-*.pkl"), None) or next(exp.glob("experiment_state-*.json"))
    planted.write_bytes(pickle.dumps(Evil()))
    refused = run(["sweep", str(p), "--name", "k", "--resume"])
    assert refused.returncode == 2 and f"{planted.name} was not written by hier-tl" in refused.stderr
    assert not (tmp_path / "pwned").exists()


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(__file__).parent}/pwned",))


def test_a_full_disk_ends_the_sweep_with_one_line_naming_the_storage(tmp_path, monkeypatch, capsys):
    from hier_tl.results import tables
    real, calls = tables._write_atomic, []

    def fill_up(fs, path, table):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fs, path, table)
    monkeypatch.setattr(tables, "_write_atomic", fill_up)
    assert main(["sweep", str(sweep_file(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device" in err[0] and str(tmp_path / "results" / "k") in err[0]
    res = load_results(str(tmp_path / "results" / "k"))  # what was written is readable
    assert len(res.trials) >= 1


@pytest.mark.parametrize("address,storage,shared_fs,shares", [
    (None, "s3://b/sweeps?endpoint_override=127.0.0.1:1&scheme=http", "", False),  # embedded Ray: one machine
    ("127.0.0.1:6379", "s3://b/sweeps?endpoint_override=127.0.0.1:1&scheme=http", "", True),
    ("127.0.0.1:6379", "LOCAL", "", False),  # a node-local folder: one machine (check_cluster refuses more)
    ("127.0.0.1:6379", "LOCAL", "1", True),  # a file system mounted on every machine
    (None, "LOCAL", "1", False),
])
def test_caches_are_shared_through_the_storage_only_where_other_machines_reach_it(tmp_path, monkeypatch, address,
                                                                                   storage, shared_fs, shares):
    from hier_tl.results.storage import Storage
    from hier_tl.sweep.runner import shares_caches, trial_spec
    from hier_tl.sweep.sweep_config import load_sweep

    monkeypatch.setenv("HIER_TL_SHARED_FS", shared_fs)
    st = Storage(str(tmp_path) if storage == "LOCAL" else storage, "k")
    assert shares_caches(address, st) is shares
    spec = trial_spec(load_sweep(sweep_file(tmp_path)), st, shares)
    assert spec.share == (st.uri if shares else None)


def test_a_bad_setting_in_the_environment_is_refused_before_the_data_is_decoded(tmp_path, monkeypatch, capsys):
    from hier_tl.sweep import runner
    monkeypatch.setenv("HIER_TL_HEARTBEAT_S", "inf")
    monkeypatch.setattr(runner, "load_source", lambda *a: pytest.fail("the dataset was decoded first"))
    assert main(["sweep", str(sweep_file(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HIER_TL_HEARTBEAT_S='inf' is not a finite number" in err[0]
    assert not (tmp_path / "results" / "k").exists()


def test_a_resume_on_changed_images_or_labels_is_refused(tmp_path):
    import dataclasses

    from hier_tl.core.errors import SweepError
    from hier_tl.results.storage import Storage
    from hier_tl.sweep.runner import check_same_data
    from hier_tl.sweep.sweep_config import SweepConfig

    st = Storage(str(tmp_path), "k")
    st.write_text("sweep.yaml", yaml.safe_dump({**dataclasses.asdict(SweepConfig(name="k")),
                                                "provenance": {"dataset": {"sha256": "a" * 64}}}))
    check_same_data(st, {"dataset": {"sha256": "a" * 64}})  # the same data: resumes
    with pytest.raises(SweepError, match=r"the dataset changed since this sweep started .* bbbbbbbbbbbb, aaaaaaaaaaaa"):
        check_same_data(st, {"dataset": {"sha256": "b" * 64}})
