"""sweep.space: the sampler table (arguments, bounds rule, Ray Tune sampler, Optuna distribution), the search
algorithms, and Tune's param_space. The Optuna distribution of a key must hold every value Ray can sample."""

import math

import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from ray.tune.search.sample import Categorical, Float

from hier_tl.core.config import from_dict
from hier_tl.core.errors import ConfigError
from hier_tl.sweep.space import (
    SAMPLERS,
    SEARCHERS,
    Sampler,
    expected_trials,
    param_space,
)
from hier_tl.sweep.sweep_config import SweepConfig


@pytest.mark.parametrize("name, args, log, integer, step", [
    ("choice", "list", False, False, False), ("grid", "list", False, False, False),
    ("uniform", 2, False, False, False), ("loguniform", 2, True, False, False),
    ("randint", 2, False, True, False), ("quniform", 3, False, False, True),
])
def test_the_sampler_table(name, args, log, integer, step):
    s = SAMPLERS.get(name)
    assert (s.name, s.args, s.log, s.integer, s.step, s.lists) == (name, args, log, integer, step, args == "list")


def test_the_table_holds_exactly_these_samplers():
    assert SAMPLERS.names() == ["choice", "grid", "loguniform", "quniform", "randint", "uniform"]


@pytest.mark.parametrize("name, args", [("uniform", [0, 1]), ("uniform", [-1.5, 2]), ("loguniform", [1e-5, 1]),
                                        ("randint", [1, 2]), ("quniform", [0.0, 1.0, 0.25])])
def test_good_bounds_pass(name, args):
    SAMPLERS.get(name).check("space.x", args)


@pytest.mark.parametrize("name, args, message", [
    ("uniform", ["1e-3", 1], "bound '1e-3' is not a number (write 1.0e-3, not 1e-3 in quotes)"),
    ("uniform", [True, 2], "bound True is not a number"),
    ("uniform", [0, math.nan], "bound nan is not a number"),
    ("uniform", [0, math.inf], "bound inf is not a number"),
    ("uniform", [1, 1], "lower bound 1 must be below upper bound 1"),
    ("loguniform", [1e-2, 1e-4], "lower bound 0.01 must be below upper bound 0.0001"),
    ("loguniform", [0, 1], "a log scale needs positive bounds, got 0"),
    ("loguniform", [-1, 1], "a log scale needs positive bounds, got -1"),
    ("randint", [1.5, 4], "randint takes integer bounds, got [1.5, 4]"),
    ("randint", [1, 4.0], "randint takes integer bounds, got [1, 4.0]"),
    ("quniform", [0, 1, 0], "the step must be positive, got 0"),
    ("quniform", [0, 1, -0.5], "the step must be positive, got -0.5"),
])
def test_bad_bounds_are_one_line_naming_the_key_and_sampler(name, args, message):
    with pytest.raises(ConfigError) as e:
        SAMPLERS.get(name).check("space.lr", args)
    assert str(e.value).startswith(f"space.lr.{name}: {message}") and "\n" not in str(e.value)


def test_quniform_bounds_off_the_step_grid_are_refused_before_ray_sees_them():
    with pytest.raises(ConfigError, match="space.weight_decay.quniform"):
        SAMPLERS.get("quniform").check("space.weight_decay", [0.0005, 0.01, 0.001])


def _ray_values(sampler: Sampler, args: list) -> list:
    domain = sampler.ray(args)
    if sampler.lists:
        return list(domain["grid_search"]) if sampler.name == "grid" else list(domain.categories)
    return list(domain.sample(size=300, random_state=0))


@pytest.mark.parametrize("name, args, want", [
    ("uniform", [0.1, 0.5], FloatDistribution(0.1, 0.5)),
    ("loguniform", [1e-4, 1e-2], FloatDistribution(1e-4, 1e-2, log=True)),
    ("randint", [2, 5], IntDistribution(2, 4)),  # Ray's upper bound is exclusive, Optuna's inclusive
    ("quniform", [0.1, 1.0, 0.1], FloatDistribution(0.1, 1.0, step=0.1)),
    ("choice", ["cnn", "resnet18", "cnn"], CategoricalDistribution(["cnn", "resnet18"])),
    ("grid", [16, 32, 64], CategoricalDistribution([16, 32, 64])),
])
def test_the_optuna_distribution_holds_every_value_ray_samples_and_no_more(name, args, want):
    sampler = SAMPLERS.get(name)
    dist = sampler.distribution(args)
    assert dist == want
    values = _ray_values(sampler, args)
    assert all(dist._contains(dist.to_internal_repr(v.item() if hasattr(v, "item") else v)) for v in values)
    if isinstance(want, IntDistribution):  # every integer Optuna shows, Ray draws, and nothing else
        assert sorted({int(v) for v in values}) == [2, 3, 4]
    elif isinstance(want, FloatDistribution):
        lo, hi = sampler.ray(args).lower, sampler.ray(args).upper
        assert (lo, hi) == (want.low, want.high) and lo <= min(values) and max(values) <= hi
    else:
        assert set(values) == set(want.choices)


def sweep(space: dict, algo: str, num_samples: int = 1) -> SweepConfig:
    return from_dict(SweepConfig, {"name": "s", "space": space, "search": {"algo": algo}, "num_samples": num_samples,
                                   "base": {"epochs": 2}})


SPACE = {"lr": {"choice": [0.1, 0.01]}, "depth": {"grid": ["full", "partial", "linear"]}}


def test_param_space_turns_each_key_into_its_ray_sampler():
    ps = param_space(sweep({**SPACE, "weight_decay": {"loguniform": [1e-4, 1e-1]}}, "random"))
    assert isinstance(ps["lr"], Categorical) and ps["lr"].categories == [0.1, 0.01]
    assert ps["depth"] == {"grid_search": ["full", "partial", "linear"]}
    assert isinstance(ps["weight_decay"], Float) and (ps["weight_decay"].lower, ps["weight_decay"].upper) == (1e-4, 0.1)


def test_a_grid_search_turns_every_choice_into_a_grid():
    ps = param_space(sweep(SPACE, "grid"))
    assert ps == {"lr": {"grid_search": [0.1, 0.01]}, "depth": {"grid_search": ["full", "partial", "linear"]}}


@pytest.mark.parametrize("algo, space, num_samples, want", [
    ("grid", SPACE, 2, 2 * 3 * 2),  # every list is a grid: 2 x 3 combinations, each twice
    ("random", SPACE, 2, 3 * 2),  # only `grid` multiplies; choices are sampled once per sample
    ("random", {"lr": {"uniform": [0.01, 0.1]}}, 5, 5),
    ("optuna", {"lr": {"choice": [0.1, 0.01]}}, 7, 7),
])
def test_expected_trials(algo, space, num_samples, want):
    assert expected_trials(sweep(space, algo, num_samples)) == want


def test_each_search_algorithm_says_what_it_accepts():
    assert SEARCHERS.names() == ["grid", "optuna", "random"]
    assert SEARCHERS.names(grid=True) == ["grid", "random"]
    assert SEARCHERS.names(only_lists=True) == ["grid"] and SEARCHERS.names(needs_space=True) == ["optuna"]


@pytest.mark.parametrize("algo, cls", [("random", "BasicVariantGenerator"), ("grid", "BasicVariantGenerator"),
                                       ("optuna", "OptunaSearch")])
def test_each_search_algorithm_builds_its_ray_searcher(algo, cls):
    assert type(SEARCHERS.get(algo)(sweep({"lr": {"choice": [0.1, 0.01]}}, algo))).__name__ == cls
