"""A sweep file's `space` and `search` as Ray Tune sees them: samplers and search algorithms, registered by
name. Ray is imported inside the functions, so validating a sweep file never starts or imports Ray."""

from __future__ import annotations

import functools
import math

from .registry import SAMPLERS, SEARCHERS
from .sweep import SweepConfig


def _ray_sampler(name: str, args: list):
    """The Ray Tune sampler of that name: lists for choice / grid_search, bounds for the others."""
    from ray import tune

    fn = getattr(tune, "grid_search" if name == "grid" else name)
    return fn(args) if name in ("choice", "grid") else fn(*args)


for _name, _args in (("choice", "list"), ("grid", "list"), ("uniform", 2), ("loguniform", 2), ("randint", 2),
                     ("quniform", 3)):
    SAMPLERS.register(_name, args=_args)(functools.partial(_ray_sampler, _name))


def param_space(sweep: SweepConfig) -> dict:
    """Tune's param_space: every key through its sampler (`search.algo: grid` turns choices into grids)."""
    lists_as_grid = SEARCHERS.meta(sweep.search.algo).get("only_lists")
    out = {}
    for key, spec in sweep.space.items():
        (kind, args), = spec.items()
        out[key] = SAMPLERS.get("grid" if lists_as_grid else kind)(args)
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
    return BasicVariantGenerator(random_state=sweep.search.seed, max_concurrent=sweep.max_concurrent)


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
