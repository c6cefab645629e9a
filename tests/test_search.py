"""The optimisation search: optimisers on a noisy synthetic objective with a
known optimum, and the config checks. Pure Python and Optuna: no model is
loaded."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search import optimisers
from promptsweep.search.config import check_budget, check_space

DIMENSION = 10
BOUNDS = ((-1.0, 1.0),) * DIMENSION
# The known optimum, inside the bounds and away from their centre, where CMA-ES starts.
OPTIMUM = np.linspace(-0.6, 0.6, DIMENSION)
NOISE = 0.1


@pytest.fixture(autouse=True)
def quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


def true_objective(params) -> float:
    """Minus the squared distance to the optimum: higher is better."""
    return -float(np.sum((np.asarray(params) - OPTIMUM) ** 2))


def search(name: str, seed: int, n_trials: int, settings=None) -> list[tuple[np.ndarray, float]]:
    """(point, observed objective) of each trial of an in-memory search on
    the quadratic plus Gaussian noise."""
    optimiser = optimisers.in_memory(name, BOUNDS, seed, settings)
    noise = np.random.default_rng([seed, 1])
    trials = []
    for _ in range(n_trials):
        trial = optimiser.ask()
        observed = true_objective(trial.params) + noise.normal(0, NOISE)
        optimiser.tell(trial, observed, True)
        trials.append((np.array(trial.params), observed))
    return trials


def distance_of_best(trials: list[tuple[np.ndarray, float]]) -> float:
    """The distance to the optimum of the point observed best."""
    point, _ = max(trials, key=lambda trial: trial[1])
    return float(np.linalg.norm(point - OPTIMUM))


# --- Optimisers -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random", "cmaes"])
def test_search_stays_in_bounds_and_its_best_beats_a_typical_point(name):
    trials = search(name, seed=3, n_trials=40)
    points = np.array([point for point, _ in trials])
    assert np.all((points >= -1) & (points <= 1))
    assert len({tuple(point) for point in points}) == len(points)
    typical = np.median([float(np.linalg.norm(point - OPTIMUM)) for point in points[:10]])
    assert distance_of_best(trials) < 0.8 * typical


def test_cmaes_learns_later_generations_are_better_than_the_first():
    trials = search("cmaes", seed=5, n_trials=40, settings={"popsize": 8})
    true_values = [true_objective(point) for point, _ in trials]
    assert np.mean(true_values[-8:]) > np.mean(true_values[:9]) + 1.0


def test_seed_makes_a_search_reproducible_and_another_seed_differs():
    for name in ("random", "cmaes"):
        first, again, other = (search(name, seed, 12) for seed in (7, 7, 8))
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
        assert not np.array_equal(first[-1][0], other[-1][0])


def test_cmaes_ends_closer_to_the_optimum_than_random_search_at_equal_budget():
    wins = sum(
        distance_of_best(search("cmaes", seed, 40)) < distance_of_best(search("random", seed, 40))
        for seed in range(20)
    )
    assert wins >= 14


def test_grid_tries_each_point_once_in_order_and_finds_the_nearest():
    grid = [list(OPTIMUM * scale) for scale in (-1.0, 0.0, 0.5, 1.2, 0.9)]
    trials = search("grid", seed=0, n_trials=len(grid), settings={"points": grid})
    assert [list(point) for point, _ in trials] == grid
    nearest = min(grid, key=lambda point: np.linalg.norm(np.array(point) - OPTIMUM))
    point, _ = max(trials, key=lambda trial: trial[1])
    assert list(point) == nearest


def test_grid_refuses_to_propose_more_than_its_points():
    optimiser = optimisers.in_memory("grid", BOUNDS, 0, {"points": [[0.0] * DIMENSION]})
    trial = optimiser.ask()
    optimiser.tell(trial, 1.0, True)
    with pytest.raises(RuntimeError, match="all 1 points"):
        optimiser.ask()


# --- Config checks ----------------------------------------------------------------


def test_budget_pays_for_whole_trials_and_one_at_least():
    assert check_budget(45, 2, 3) == 7
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.budget: 5 generations .* 6"):
        check_budget(5, 2, 3)


def test_unknown_optimiser_or_setting_names_the_key_and_the_known_ones():
    unknown = r"^emphasis\.search\.optimisers: unknown optimiser 'tpe'; the optimisers are: grid, random, cmaes$"
    with pytest.raises(EmphasisConfigError, match=unknown):
        optimisers.check_optimisers({"random": None, "tpe": None}, BOUNDS)
    misspelt = r"^emphasis\.search\.optimisers\.cmaes: unknown settings \['popsise'\].*popsize"
    with pytest.raises(EmphasisConfigError, match=misspelt):
        optimisers.check_optimisers({"cmaes": {"popsise": 8}}, BOUNDS)
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.optimisers\.cmaes\.popsize"):
        optimisers.check_optimisers({"cmaes": {"popsize": 1}}, BOUNDS)
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.optimisers\.grid\.points\[1\]: .* outside"):
        optimisers.check_optimisers({"grid": {"points": [[0.0] * DIMENSION, [2.0] * DIMENSION]}}, BOUNDS)
    assert optimisers.check_optimisers({"random": None, "cmaes": {"popsize": 8}}, BOUNDS) == {
        "random": {}, "cmaes": {"popsize": 8},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("space", "message"),
    [([], ": empty"), ([[0, 1], [1, 1]], r"\[1\]: \[1.0, 1.0\] is not a range"), ([[0, "1"]], r"\[0\]: .* not a")],
)
def test_space_checks_name_the_key(space, message):
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.space" + message):
        check_space(space)
