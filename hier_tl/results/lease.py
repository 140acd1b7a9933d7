"""One live driver per sweep: a lease file in the sweep folder, renewed while the sweep runs.

A second `hier-tl sweep` of the same name and storage is refused while the lease is fresh; a lease not
renewed for `TTL` seconds (its driver was killed), or held by a process of this host that no longer
exists, is taken over with a note. So is a lease file that is not one hier-tl wrote (damaged, or of
another program): it names no live driver.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time

from ..core.errors import SweepError
from ..core.numbers import finite
from .storage import Storage

NAME = ".hier_tl-lease"
TTL = 60.0  # seconds without renewal after which a lease is stale
RENEW = 10.0


class Lease:
    def __init__(self, storage: Storage):
        self.st = storage
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
        self.renewed = 0.0

    def acquire(self) -> None:
        held = self._read()
        if held and held.get("token") != self.me["token"] and not self._stale(held):
            age = time.time() - held["renewed"]
            raise SweepError(f"sweep {self.st.name!r} at {self.st.uri} is already running (driver pid "
                             f"{held['pid']} on {held['host']}, alive {age:.0f} s ago). Wait for it to end, "
                             f"or start another with --name NEW; a driver silent for {TTL:.0f} s is taken over.")
        if held:
            what = "a damaged lease file (not one hier-tl wrote)" if held.get("damaged") else \
                f"the lease of a driver that stopped (pid {held['pid']} on {held['host']})"
            print(f"note: taking over {what}: {self.st.file_uri(NAME)}", flush=True)
        self.renew(force=True)
        time.sleep(0.2)  # two drivers that started together: the later write wins, the other stops here
        if (self._read() or {}).get("token") != self.me["token"]:
            raise SweepError(f"sweep {self.st.name!r} at {self.st.uri} was started by another driver at the same "
                             "moment; use --name NEW")

    def renew(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.renewed >= RENEW:
            self.st.write_text(NAME, json.dumps({**self.me, "renewed": now}))
            self.renewed = now

    def release(self) -> None:
        if (self._read() or {}).get("token") == self.me["token"]:
            self.st.delete(NAME)

    def _read(self) -> dict | None:
        """The lease held now (None: no lease file); a damaged one reads as `{"damaged": True}`, stale."""
        if not self.st.exists(NAME):
            return None
        try:
            held = json.loads(self.st.read_text(NAME))
        except ValueError:  # not JSON, or not text
            held = None
        return held if _valid(held) else {"damaged": True, "token": None, "renewed": 0.0}

    def _stale(self, held: dict) -> bool:
        if held.get("damaged") or time.time() - held["renewed"] > TTL:
            return True
        return held["host"] == self.me["host"] and not _alive(held["pid"])


def _valid(held) -> bool:
    """Is this the lease record `renew` writes (host, pid, token, a finite renewal time)?"""
    return isinstance(held, dict) and isinstance(held.get("host"), str) and isinstance(held.get("token"), str) \
        and type(held.get("pid")) is int and 0 < held["pid"] < 2**31 and finite(held.get("renewed")) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
