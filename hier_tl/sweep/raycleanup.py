"""Ray processes an embedded sweep starts are recorded, so that a driver killed with -9 does not leave them
running (its trial workers would go on training into the results folder): the next `hier-tl sweep` (or
`cluster/local.sh down`, via `hier-tl cleanup`) stops them.

Recorded per driver: its pid and start time, a random token that every Ray process it starts carries in its
environment (`HIER_TL_DRIVER`, so workers started later are found too), and the pid and start time of each
process Ray reported at start. Pids are reused, so nothing is trusted by pid alone: a driver counts as alive
only if a process with its pid *and* its start time exists, and a process is stopped only if it carries the
token or has the recorded pid *and* start time.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

from ..core.fileio import cache_dir
from . import raycompat

MARK = "HIER_TL_DRIVER"
_TOKEN = f"{os.getpid()}-{secrets.token_hex(8)}"


def mark_value() -> str:
    """What this driver's Ray processes carry in `HIER_TL_DRIVER`: unique to this driver process."""
    return _TOKEN


def _records() -> Path:
    return cache_dir() / "ray-processes"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if it is gone (or a
    zombie, which only waits for its parent to read its exit status)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _carrying(token: str) -> list[int]:
    """Processes whose environment carries this driver's token."""
    tag, found = f"{MARK}={token}".encode(), []
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
    """Write this driver's record: its identity, its token, the Ray processes it started (and their children)."""
    pids = raycompat.node_processes()
    pids += [k for p in list(pids) for k in _children(p)]
    _records().mkdir(parents=True, exist_ok=True)
    (_records() / f"{os.getpid()}.json").write_text(json.dumps({
        "driver": os.getpid(), "driver_start": start_time(os.getpid()), "token": _TOKEN,
        "pids": {str(p): start_time(p) for p in sorted(set(pids))}}))


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
            driver, born, token = int(data["driver"]), data.get("driver_start"), str(data["token"])
            recorded = {int(p): t for p, t in dict(data["pids"]).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            rec.unlink(missing_ok=True)  # unreadable, or written by an older hier-tl: nothing it names is trusted
            continue
        if born is not None and start_time(driver) == born:
            continue  # that very driver is still alive
        same = [p for p, t in recorded.items() if t is not None and start_time(p) == t]
        found = _stop(list(dict.fromkeys(same + _carrying(token))))
        rec.unlink(missing_ok=True)
        n += found
        if verbose and found:
            print(f"cleaned up {found} Ray process(es) left by a killed hier-tl driver (pid {driver})", flush=True)
    return n


def _stop(pids: list[int]) -> int:
    """SIGTERM, then SIGKILL, each verified pid and its children; returns how many were alive."""
    born = {p: start_time(p) for p in pids}
    live = [p for p, t in born.items() if t is not None]
    live = list(dict.fromkeys(live + [k for p in live for k in _children(p)]))
    born.update({p: start_time(p) for p in live if p not in born})
    found = len(live)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in live:
            if start_time(p) == born[p]:  # still the process we verified
                try:
                    os.kill(p, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.time() + 3
        while sig == signal.SIGTERM and time.time() < deadline and any(start_time(p) == born[p] for p in live):
            time.sleep(0.1)
        live = [p for p in live if start_time(p) == born[p]]
    return found
