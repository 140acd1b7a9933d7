"""Progress of long work (decoding images, predicting): tqdm's bar with rate and ETA on a terminal; plain lines
with the same numbers, a few per minute, when the output is a log file or a pipe (no carriage returns)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class _Lines:
    """tqdm's `update` / `close` interface, printing `desc: n/total unit (rate/s, ETA s)` lines."""

    def __init__(self, total: int, desc: str, unit: str, every: float, file):
        self.total, self.desc, self.unit, self.every, self.file = total, desc, unit, every, file
        self.n, self.t0 = 0, time.monotonic()
        self.last = self.t0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every and self.n < self.total:
            self.last = now
            self._say(now)

    def _say(self, now: float) -> None:
        rate = self.n / max(now - self.t0, 1e-9)
        eta = f", ETA {(self.total - self.n) / rate:.0f} s" if rate > 0 and self.n < self.total else ""
        print(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit} ({rate:,.0f}/s{eta})", file=self.file, flush=True)

    def close(self) -> None:
        self._say(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total: int, desc: str, unit: str = "images", every: float = 15.0, file=None):
    """A progress counter for `total` units of work: `with progress(n, "predict") as bar: bar.update(k)`."""
    file = file or sys.stderr
    if getattr(file, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, unit=f" {unit}", file=file, dynamic_ncols=True, unit_scale=False)
    return _Lines(total, desc, unit, every, file)
