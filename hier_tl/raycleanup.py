"""Ray processes an embedded sweep starts are recorded by id, so that a driver killed with -9 does not leave
them running (its trial workers would go on training into the results folder): the next `hier-tl` start
(or `cluster/local.sh down`, via `hier-tl cleanup`) stops them. Recorded: the pids Ray reports at start,
and the driver's pid, which every Ray process it starts carries in its environment (`HIER_TL_DRIVER`),
so workers started later are found too."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from .images import cache_dir


def _records() -> Path:
    return cache_dir() / "ray-processes"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


MARK = "HIER_TL_DRIVER"


def _marked(driver: int) -> list[int]:
    """Processes whose environment says this driver started them."""
    tag, found = f"{MARK}={driver}".encode(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if tag in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def record() -> None:
    """Write the ids of the Ray processes this driver started (and their children) under the cache."""
    import ray._private.worker as w

    node = getattr(w, "_global_node", None)
    if node is None:
        return
    pids = [p.process.pid for infos in node.all_processes.values() for p in infos if p.process is not None]
    pids += [k for p in list(pids) for k in _children(p)]
    _records().mkdir(parents=True, exist_ok=True)
    (_records() / f"{os.getpid()}.json").write_text(json.dumps({"driver": os.getpid(), "pids": sorted(set(pids)),
                                                                "cmdlines": {p: _cmdline(p) for p in pids}}))


def forget() -> None:
    """The driver shut Ray down itself: nothing to clean up later."""
    (_records() / f"{os.getpid()}.json").unlink(missing_ok=True)


def cleanup(verbose: bool = True) -> int:
    """Stop the recorded Ray processes of drivers that are gone; returns how many processes were signalled."""
    n = 0
    folder = _records()
    for rec in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(rec.read_text())
        except (OSError, ValueError):
            rec.unlink(missing_ok=True)
            continue
        if _cmdline(int(data["driver"])):
            continue  # that driver is still alive
        marked = _marked(int(data["driver"]))
        n += _stop([int(p) for p in data["pids"]] + marked, {int(k): v for k, v in data["cmdlines"].items()})
        rec.unlink(missing_ok=True)
        if verbose and n:
            print(f"cleaned up {n} Ray process(es) left by a killed hier-tl driver (pid {data['driver']})", flush=True)
    return n


def _stop(pids: list[int], cmdlines: dict[int, str]) -> int:
    """SIGTERM, then SIGKILL, each pid (and its children) whose command line is still the recorded one
    (pids get reused); returns how many were alive."""
    ours = [p for p in dict.fromkeys(pids) if _cmdline(p) and (_cmdline(p) == cmdlines.get(p) or p not in cmdlines)]
    live = list(dict.fromkeys(ours + [k for p in ours for k in _children(p)]))
    found = len(live)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in live:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 3
        while sig == signal.SIGTERM and time.time() < deadline and any(_cmdline(p) for p in live):
            time.sleep(0.1)
        live = [p for p in live if _cmdline(p)]
    return found
