"""Every failure a user can act on is a `HierTLError`: the CLI prints its one-line message and exits with
its `exit_code`; anything else is a bug and keeps its traceback (or shows it with `--debug`)."""

from __future__ import annotations


class HierTLError(Exception):
    """A problem the user can fix (input, environment, state); the message says what, where and what to do."""

    exit_code = 2

    def lines(self) -> list[str]:
        """What the CLI prints, one line each (subclasses with several problems override)."""
        return [f"error: {self}"]


class ConfigError(HierTLError, ValueError):
    """A configuration problem; the message names the offending key path."""


class DataError(HierTLError):
    """Bad input data; `problems` holds one line per problem, each naming the file and CSV line."""

    MAX_SHOWN = 50

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the data:\n" + "\n".join(self._shown()))

    def _shown(self) -> list[str]:
        more = len(self.problems) - self.MAX_SHOWN
        return self.problems[:self.MAX_SHOWN] + ([f"... and {more} more problems"] if more > 0 else [])

    def lines(self) -> list[str]:
        return [f"error: {len(self.problems)} problem(s) in the data:"] + [f"  {p}" for p in self._shown()]


class WeightsError(HierTLError):
    """Pretrained weights could not be found or loaded; the message says where to put them."""

    exit_code = 1


class CheckpointError(HierTLError):
    """A checkpoint is missing, damaged, incomplete or not one hier-tl wrote."""


class DivergedError(HierTLError):
    """The training loss became NaN or infinite."""

    exit_code = 1


class SweepError(HierTLError):
    """The sweep cannot start or resume, or every trial failed."""


class StorageError(HierTLError):
    """The results storage cannot be read or written (missing folder, full disk, no permission, held lease)."""


class SelectionError(HierTLError):
    """No trial matches, the metric does not exist, or a folder is not a sweep or run folder."""


class ScoreError(HierTLError):
    """Predictions and labels do not line up; the message says how."""


class Interrupted(HierTLError):
    """The sweep stopped before every trial finished; the message says how to resume."""

    exit_code = 130
