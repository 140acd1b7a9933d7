"""A sweep file's `space` and `search`: the sampler vocabulary (one table below: arguments, bounds rule, Ray
Tune sampler, Optuna distribution) and the search algorithms, registered by name. Ray is imported inside the
functions, so validating a sweep file never starts or imports Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..core.registry import Registry

if TYPE_CHECKING:
    from .sweep_config import SweepConfig

SAMPLERS = Registry("sampler")  # entries: Sampler
SEARCHERS = Registry("search algorithm")  # meta: grid (accepts grid samplers), only_lists, needs_space


@dataclass(frozen=True)
class Sampler:
    """One sampler of a sweep file's `space` (`lr: {loguniform: [1.0e-4, 1.0e-2]}`)."""

    name: str
    args: str | int  # "list" (choices) or how many numbers it takes
    log: bool = False  # a log scale: bounds must be positive
    integer: bool = False  # integer bounds, upper bound exclusive (Ray's randint)
    step: bool = False  # the third number is a positive step

    @property
    def lists(self) -> bool:
        return self.args == "list"

    def check(self, where: str, args: list) -> None:
        """Numeric, finite, ordered bounds; positive for log scales, integers for randint, a positive step."""
        where = f"{where}.{self.name}"
        for v in args:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}: bound {v!r} is not a number (write 1.0e-3, not 1e-3 in quotes)")
        lo, hi = args[0], args[1]
        if not lo < hi:
            raise ConfigError(f"{where}: lower bound {lo} must be below upper bound {hi}")
        if self.log and lo <= 0:
            raise ConfigError(f"{where}: a log scale needs positive bounds, got {lo}")
        if self.integer and not all(isinstance(v, int) for v in args):
            raise ConfigError(f"{where}: {self.name} takes integer bounds, got {args}")
        if self.step and not args[2] > 0:
            raise ConfigError(f"{where}: the step must be positive, got {args[2]}")
        if self.step and not all(math.isclose(x / args[2], round(x / args[2]), abs_tol=1e-9) for x in (lo, hi)):
            raise ConfigError(f"{where}: bounds {lo:g} and {hi:g} must be multiples of the step {args[2]:g} (Ray "
                              "samples on that grid)")

    def ray(self, args: list) -> Any:
        """The Ray Tune sampler (or grid) for these arguments."""
        from ray import tune

        fn = getattr(tune, "grid_search" if self.name == "grid" else self.name)
        return fn(args) if self.lists else fn(*args)

    def distribution(self, args: list):
        """The Optuna distribution of the same values (what the dashboard and the HPO panels show)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.lists:
            return CategoricalDistribution(list(dict.fromkeys(args)))
        lo, hi = float(args[0]), float(args[1])
        if self.integer:  # Ray's upper bound is exclusive
            return IntDistribution(int(args[0]), int(args[1]) - 1)
        q = float(args[2]) if self.step else None
        on_grid = q is not None and all(math.isclose(x / q, round(x / q), abs_tol=1e-9) for x in (lo, hi))
        return FloatDistribution(lo, hi, log=self.log, step=q if on_grid else None)


for _s in (Sampler("choice", "list"), Sampler("grid", "list"), Sampler("uniform", 2), Sampler("loguniform", 2, log=True),
           Sampler("randint", 2, integer=True), Sampler("quniform", 3, step=True)):
    SAMPLERS.register(_s.name)(_s)


def param_space(sweep: SweepConfig) -> dict:
    """Tune's param_space: every key through its sampler (`search.algo: grid` turns choices into grids)."""
    lists_as_grid = SEARCHERS.meta(sweep.search.algo).get("only_lists")
    out = {}
    for key, spec in sweep.space.items():
        (kind, args), = spec.items()
        out[key] = SAMPLERS.get("grid" if lists_as_grid else kind).ray(args)
    return out


@SEARCHERS.register("optuna", needs_space=True)
def optuna_search(sweep: SweepConfig):
    """TPE, seeded. (The live journal for optuna-dashboard is written from hier-tl's records: journal.py.)"""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed))


@SEARCHERS.register("random", grid=True)
def random_search(sweep: SweepConfig):
    from ray.tune.search.basic_variant import BasicVariantGenerator
    return BasicVariantGenerator(random_state=sweep.search.seed, max_concurrent=sweep.max_concurrent or 0)


@SEARCHERS.register("grid", grid=True, only_lists=True)
def grid_search(sweep: SweepConfig):
    return random_search(sweep)


def expected_trials(sweep: SweepConfig) -> int:
    """How many trials the sweep runs in all (grids multiply; optuna samples num_samples)."""
    if SEARCHERS.meta(sweep.search.algo).get("needs_space"):
        return sweep.num_samples
    sizes = [len(next(iter(s.values()))) for s in sweep.space.values()
             if "grid" in s or SEARCHERS.meta(sweep.search.algo).get("only_lists")]
    return math.prod(sizes) * sweep.num_samples
