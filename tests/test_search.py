"""The resumable optimisation search: optimisers on a noisy synthetic
objective with a known optimum, kill-and-resume on a journal file, and the
config checks. Pure Python and Optuna: no model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search import journal, optimisers
from promptsweep.search.config import check_budget, check_weight_range
from promptsweep.search.journal import RETRY_ATTR, Outcome, run_search

DIMENSION = 10
BOUNDS = ((-1.0, 1.0),) * DIMENSION
# The known optimum, inside the bounds and away from their centre, where CMA-ES starts.
OPTIMUM = np.linspace(-0.6, 0.6, DIMENSION)
NOISE = 0.1

SRC = Path(__file__).resolve().parents[1] / "src"


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


def true_gradient(params) -> np.ndarray:
    return -2.0 * (np.asarray(params) - OPTIMUM)


def gradient_search(seed: int, n_trials: int, settings=None) -> list[tuple[np.ndarray, float]]:
    """(point, observed objective) of each trial of an in-memory gradient
    search on the quadratic, its objective and each gradient component with
    Gaussian noise."""
    optimiser = optimisers.in_memory("gradient", BOUNDS, seed, settings)
    noise = np.random.default_rng([seed, 2])
    trials = []
    for _ in range(n_trials):
        trial = optimiser.ask()
        observed = true_objective(trial.params) + noise.normal(0, NOISE)
        gradient = true_gradient(trial.params) + noise.normal(0, NOISE, DIMENSION)
        optimiser.tell(trial, observed, True, {"gradient": gradient.tolist()})
        trials.append((np.array(trial.params), observed))
    return trials


def test_gradient_ascent_starts_at_the_baseline_and_ends_near_the_optimum():
    trials = gradient_search(seed=0, n_trials=40)
    assert np.array_equal(trials[0][0], np.zeros(DIMENSION))
    # Adam's steps stay about a learning rate (a fifth of the range) long, so it ends in a jitter around the optimum.
    assert np.linalg.norm(trials[-1][0] - OPTIMUM) < 0.25 * np.linalg.norm(OPTIMUM)


def test_gradient_ascent_gets_closer_than_random_search_at_equal_budget():
    wins = sum(
        distance_of_best(gradient_search(seed, 40)) < distance_of_best(search("random", seed, 40))
        for seed in range(20)
    )
    assert wins >= 14


def test_gradient_steps_are_clipped_into_the_bounds_and_follow_the_direction():
    # The optimum outside the bounds: the ascent must stop at the bound it points to.
    optimiser = optimisers.in_memory("gradient", ((-1.0, 1.0), (0.0, 0.5)), 0, {"learning_rate": 0.4})
    for _ in range(8):
        trial = optimiser.ask()
        optimiser.tell(trial, 0.0, True, {"gradient": [1.0, -1.0]})
    assert optimiser.ask().params == (1.0, 0.0)
    descending = optimisers.in_memory("gradient", BOUNDS[:2], 0, {"learning_rate": 0.1}, direction="minimize")
    trial = descending.ask()
    descending.tell(trial, 0.0, True, {"gradient": [1.0, -1.0]})
    first, second = descending.ask().params
    assert first == pytest.approx(-0.1) and second == pytest.approx(0.1)


def test_a_gradient_that_is_not_finite_counts_as_zero_and_a_missing_one_is_an_error():
    optimiser = optimisers.in_memory("gradient", BOUNDS[:2], 0, {"learning_rate": 0.1})
    optimiser.tell(optimiser.ask(), 0.0, True, {"gradient": [1.0, 1.0]})
    optimiser.tell(optimiser.ask(), None, False, {"gradient": [float("nan"), 1.0]})
    first, second = optimiser.ask().params
    # Momentum carries the first weight on; the second takes two steps.
    assert 0.1 < first < second <= 0.2 + 1e-9
    broken = optimisers.in_memory("gradient", BOUNDS[:2], 0)
    broken.tell(broken.ask(), 0.0, True, {})
    with pytest.raises(ValueError, match="recorded no gradient; delete its journal"):
        broken.ask()


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


def test_infeasible_trials_are_told_the_worst_value_and_kept_apart():
    for direction, worst in (("maximize", -np.inf), ("minimize", np.inf)):
        optimiser = optimisers.in_memory("random", BOUNDS, 0, direction=direction)
        for objective, feasible in ((0.5, False), (None, True), (0.25, True)):
            optimiser.tell(optimiser.ask(), objective, feasible, {"constraints": {"edge": 0.1}, "seconds": 0.0})
        table = journal.trials_table("random", optimiser.study.trials, DIMENSION, direction)
        assert [trial.value for trial in optimiser.study.trials] == [worst, worst, 0.25]
        assert table["feasible"].tolist() == [False, False, True]
        assert table["objective"].tolist()[0] == 0.5 and np.isnan(table["objective"].tolist()[1])
        assert np.isnan(table["best_so_far"].iloc[1]) and table["best_so_far"].iloc[2] == 0.25


# --- The journal ------------------------------------------------------------------


def constrained(params) -> Outcome:
    """The quadratic with its gradient, and a constraint that the first weight is at most 0.8."""
    return Outcome(true_objective(params), {"w0_excess": params[0] - 0.8}, tuple(true_gradient(params)))


def test_search_writes_a_trials_table_and_logs_progress(tmp_path):
    lines: list[str] = []
    table = run_search(
        tmp_path / "journal.log", "s", "random", BOUNDS, constrained, 12, "maximize", 0, log=lines.append
    )
    assert list(table.columns) == [
        "optimiser", "trial", *(f"w{i}" for i in range(DIMENSION)),
        "objective", "feasible", "w0_excess", "seconds", "best_so_far",
    ]  # fmt: skip
    assert table["trial"].tolist() == list(range(1, 13))
    assert (table["feasible"] == (table["w0"] <= 0.8)).all()
    expected_best = table["objective"].where(table["feasible"]).cummax().ffill()
    assert np.allclose(table["best_so_far"], expected_best, equal_nan=True)
    last = table.iloc[-1]
    infeasible = "" if last["feasible"] else " (infeasible)"
    assert lines[-1] == f"trial 12/12: objective {last['objective']:.3g}{infeasible}, best {last['best_so_far']:.3g}"
    assert len(lines) == 12 and not any("resumed" in line for line in lines)


def test_a_finished_search_rerun_does_nothing_more(tmp_path):
    arguments = (tmp_path / "journal.log", "s", "random", BOUNDS, constrained, 5, "maximize", 0)
    first = run_search(*arguments, log=lambda line: None)
    lines: list[str] = []
    again = run_search(*arguments, log=lines.append)
    assert lines == ["resumed from 5 finished trials"]
    assert first.drop(columns="seconds").equals(again.drop(columns="seconds"))


def test_resuming_with_another_optimiser_or_space_is_refused(tmp_path):
    path = tmp_path / "journal.log"
    run_search(path, "s", "random", BOUNDS, constrained, 2, "maximize", 0, log=lambda line: None)
    with pytest.raises(journal.JournalMismatchError, match="optimiser"):
        run_search(path, "s", "cmaes", BOUNDS, constrained, 2, "maximize", 0, log=lambda line: None)
    with pytest.raises(journal.JournalMismatchError, match="bounds"):
        run_search(path, "s", "random", ((0.0, 1.0),) * DIMENSION, constrained, 2, "maximize", 0, log=lambda line: None)


def finished(path: Path) -> list[FrozenTrial]:
    return [t for t in load(path).trials if t.state == TrialState.COMPLETE]


def load(path: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))


def check_resumed(path: Path, before: list[FrozenTrial], interrupted: tuple[float, ...], budget: int, log: str):
    """What a resumed search must keep, retry and not redo."""
    study = load(path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert f"resumed from {len(before)} finished trials" in log
    assert len(done) == budget
    kept = {t.number: (t.params, t.value) for t in done}
    assert all(kept[t.number] == (t.params, t.value) for t in before)
    points = [tuple(t.params[f"w{i}"] for i in range(DIMENSION)) for t in done]
    assert len(set(points)) == budget  # none done twice
    assert len(failed) == 1 and tuple(failed[0].params[f"w{i}"] for i in range(DIMENSION)) == interrupted
    (retry,) = [t for t in done if t.user_attrs.get(RETRY_ATTR) == failed[0].number]
    assert tuple(retry.params[f"w{i}"] for i in range(DIMENSION)) == interrupted
    return done


class Killed(BaseException):
    """Stands for the job being killed: nothing in the search catches it."""


@pytest.mark.parametrize(
    ("name", "settings"),
    [("random", {}), ("grid", {"points": [[x / 10] * DIMENSION for x in range(-5, 5)]}), ("gradient", {})],
)
def test_a_search_killed_in_a_trial_resumes_from_its_last_finished_trial(tmp_path, name, settings):
    path, budget, kill_in = tmp_path / "journal.log", 10, 4
    evaluated: list[tuple[float, ...]] = []

    def dying(params):
        evaluated.append(params)
        if len(evaluated) == kill_in:
            raise Killed
        return constrained(params)

    with pytest.raises(Killed):
        run_search(path, "s", name, BOUNDS, dying, budget, "maximize", 0, settings, log=lambda line: None)
    before = finished(path)
    assert len(before) == kill_in - 1
    again: list[tuple[float, ...]] = []
    lines: list[str] = []

    def counting(params):
        again.append(params)
        return constrained(params)

    table = run_search(path, "s", name, BOUNDS, counting, budget, "maximize", 0, settings, log=lines.append)
    check_resumed(path, before, evaluated[-1], budget, "\n".join(lines))
    assert again[0] == evaluated[-1] and len(again) == budget - len(before)
    assert len(table) == budget and lines[-1].startswith(f"trial {budget}/{budget}:")


def test_a_resumed_gradient_search_takes_the_steps_an_unbroken_one_takes(tmp_path):
    weights = [f"w{i}" for i in range(DIMENSION)]
    unbroken = run_search(tmp_path / "unbroken.log", "s", "gradient", BOUNDS, constrained, 8, "maximize", 0, log=lambda line: None)
    calls = 0

    def dying(params):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Killed
        return constrained(params)

    path = tmp_path / "killed.log"
    with pytest.raises(Killed):
        run_search(path, "s", "gradient", BOUNDS, dying, 8, "maximize", 0, log=lambda line: None)
    resumed = run_search(path, "s", "gradient", BOUNDS, constrained, 8, "maximize", 0, log=lambda line: None)
    np.testing.assert_allclose(resumed[weights].to_numpy(), unbroken[weights].to_numpy(), rtol=0, atol=1e-12)
    assert resumed["objective"].iloc[-1] > resumed["objective"].iloc[0]


KILLED_SEARCH = """
import json, os, sys
from pathlib import Path
import optuna
from promptsweep.search.journal import Outcome, run_search

journal, calls, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
optimum = [i / 10 - 0.3 for i in range({dimension})]
count = 0

def objective(params):
    global count
    count += 1
    with calls.open("a") as file:
        file.write(json.dumps(params) + "\\n")
    if count == kill_after + 1:
        os._exit(3)
    return Outcome(-sum((x - o) ** 2 for x, o in zip(params, optimum)))

run_search(journal, "s", "cmaes", {bounds}, objective, {budget}, "maximize", 0, {{"popsize": 4}},
           log=lambda line: print(line, flush=True))
"""


def test_cmaes_killed_by_the_os_resumes_and_continues_its_evolution(tmp_path):
    budget, kill_after = 16, 7
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(KILLED_SEARCH).format(dimension=DIMENSION, bounds=BOUNDS, budget=budget))
    path = tmp_path / "journal.log"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

    def run(calls: Path, kill_after: int) -> subprocess.CompletedProcess:
        command = [sys.executable, str(script), str(path), str(calls), str(kill_after)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    killed = run(tmp_path / "calls-1.jsonl", kill_after)
    assert killed.returncode == 3, killed.stderr
    before = finished(path)
    assert len(before) == kill_after
    interrupted = tuple(json.loads((tmp_path / "calls-1.jsonl").read_text().splitlines()[-1]))
    resumed = run(tmp_path / "calls-2.jsonl", budget)  # never reached
    assert resumed.returncode == 0, resumed.stderr
    done = check_resumed(path, before, interrupted, budget, resumed.stdout)
    calls = [tuple(json.loads(line)) for line in (tmp_path / "calls-2.jsonl").read_text().splitlines()]
    assert calls[0] == interrupted and len(calls) == budget - kill_after

    # CMA-ES's state came back from the journal: the resumed run's own
    # proposals continue the generation the killed run was in, where a
    # fresh CMA-ES would start again at generation 0.
    generation = "cma:generation"
    last_before = max(t.system_attrs[generation] for t in before if generation in t.system_attrs)
    resumed_numbers = range(max(t.number for t in before) + 1, len(load(path).trials))
    after = [t.system_attrs[generation] for t in done if t.number in resumed_numbers and generation in t.system_attrs]
    assert last_before >= 1 and after and min(after) == last_before and max(after) > last_before


# --- Config checks ----------------------------------------------------------------


def test_budget_pays_for_whole_trials_and_one_at_least():
    assert check_budget(45, 2, 3) == 7
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.budget: 5 generations .* 6"):
        check_budget(5, 2, 3)


def test_grid_with_more_points_than_the_budget_names_the_budget(tmp_path):
    settings = {"points": [[0.0] * DIMENSION, [0.5] * DIMENSION]}
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.budget: grid needs 2 trials"):
        run_search(tmp_path / "j.log", "s", "grid", BOUNDS, constrained, 1, "maximize", 0, settings)


def test_unknown_optimiser_or_setting_names_the_key_and_the_known_ones():
    unknown = r"^emphasis\.search\.optimisers: unknown optimiser 'tpe'; the optimisers are: grid, random, cmaes, gradient$"
    with pytest.raises(EmphasisConfigError, match=unknown):
        optimisers.check_optimisers({"random": None, "tpe": None}, BOUNDS)
    misspelt = r"^emphasis\.search\.optimisers\.cmaes: unknown settings \['popsise'\].*popsize"
    with pytest.raises(EmphasisConfigError, match=misspelt):
        optimisers.check_optimisers({"cmaes": {"popsise": 8}}, BOUNDS)
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.optimisers\.cmaes\.popsize"):
        optimisers.check_optimisers({"cmaes": {"popsize": 1}}, BOUNDS)
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.optimisers\.grid\.points\[1\]: .* outside"):
        optimisers.check_optimisers({"grid": {"points": [[0.0] * DIMENSION, [2.0] * DIMENSION]}}, BOUNDS)
    for settings, key in (({"learning_rate": 0}, "learning_rate"), ({"backprop_steps": 0}, "backprop_steps")):
        with pytest.raises(EmphasisConfigError, match=rf"^emphasis\.search\.optimisers\.gradient\.{key}: 0 is not"):
            optimisers.check_optimisers({"gradient": settings}, BOUNDS)
    assert optimisers.check_optimisers({"random": None, "cmaes": {"popsize": 8}}, BOUNDS) == {
        "random": {}, "cmaes": {"popsize": 8},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("weights", "message"),
    [([], r": \[\] is not a"), ([1, 1], r": \[1.0, 1.0\] is not a range"), ([0, "1"], r": \[0, '1'\] is not a")],
)
def test_weight_range_checks_name_the_key(weights, message):
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.weights" + message):
        check_weight_range(weights)
