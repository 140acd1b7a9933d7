"""One live driver per sweep: a lease file in the sweep folder, renewed while the sweep runs.

A second `hier-tl sweep` of the same name and storage is refused while the lease is fresh; a lease not
renewed for `TTL` seconds (its driver was killed), or held by a process of this host that no longer
exists, is taken over with a note.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time

from ..core.errors import SweepError
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
            age = time.time() - float(held.get("renewed", 0))
            raise SweepError(f"sweep {self.st.name!r} at {self.st.uri} is already running (driver pid "
                             f"{held.get('pid')} on {held.get('host')}, alive {age:.0f} s ago). Wait for it to end, "
                             f"or start another with --name NEW; a driver silent for {TTL:.0f} s is taken over.")
        if held:
            print(f"note: taking over the lease of a driver that stopped (pid {held.get('pid')} on "
                  f"{held.get('host')})", flush=True)
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
        if not self.st.exists(NAME):
            return None
        try:
            return json.loads(self.st.read_text(NAME))
        except ValueError:
            return None

    def _stale(self, held: dict) -> bool:
        if time.time() - float(held.get("renewed", 0)) > TTL:
            return True
        return held.get("host") == self.me["host"] and not _alive(int(held.get("pid", 0)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
