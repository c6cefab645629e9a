"""The optimisation search's plan, its trial outcomes and its evaluation
table, on plain values: no model, no workflow."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from promptsweep.conditions import BASELINE
from promptsweep.emphasis import EmphasisConfigError, Tolerances
from promptsweep.search import evaluation, objective, plan

PROMPTS = ["good", "best", "bad"]
IMAGES = ["a", "b", "c", "d"]
SETTINGS = {
    "optimisers": ["random", "cmaes"],
    "objective": "sharpness",
    "budget": 40,
    "selection_seeds": [5, 6],
    "evaluation_seeds": [7],
    "selection_images": ["a", "b"],
    "evaluation_images": ["c", "d"],
}


def planned(**changes: object) -> plan.OptimisationSearch:
    return plan.optimisation_search({**SETTINGS, **changes}, PROMPTS, IMAGES)


def test_the_plan_counts_trials_and_generations() -> None:
    search = planned()
    assert list(search.optimisers) == ["random", "cmaes"]
    assert search.generations_per_trial == 4 and search.trials == 10
    assert search.searches == ["random", "cmaes", plan.WORDS]
    assert search.conditions == {"random": "search-random", "cmaes": "search-cmaes", plan.WORDS: plan.BEST_WORD}
    cost = search.cost()
    # Two optimisers' 10 trials, the 3 word prompts, a baseline per search; then 4 conditions x 2 images x 1 seed.
    assert cost["selection"] == 2 * 10 * 4 + 3 * 4 + 3 * 4
    assert cost["evaluation"] == 4 * 2 * 1
    assert "10 trials each" in plan.describe(search)


def test_a_lower_is_better_objective_is_minimised() -> None:
    assert planned().direction == "maximize"
    assert planned(objective="brisque").direction == "minimize"


def test_settings_of_an_optimiser_go_under_its_name() -> None:
    search = planned(optimisers={"cmaes": {"popsize": 4}, "random": None})
    assert search.optimisers == {"cmaes": {"popsize": 4}, "random": {}}
    with pytest.raises(EmphasisConfigError, match=r"emphasis\.search\.optimisers\.cmaes"):
        planned(optimisers={"cmaes": {"population": 4}})


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"evaluation_images": ["b", "c"]}, "emphasis.search.selection_images"),
        ({"selection_images": ["a", "z"]}, "emphasis.search.selection_images"),
        ({"evaluation_seeds": [6]}, "emphasis.search.selection_seeds"),
        ({"budget": 3}, "emphasis.search.budget"),
        ({"optimisers": ["annealing"]}, "emphasis.search.optimisers"),
        ({"optimisers": ["words"]}, "emphasis.search.optimisers"),
        ({"space": "tokens2"}, "emphasis.search.space"),
        ({"weights": [2, 1]}, "emphasis.search.weights"),
        ({"objective": "ssim"}, "emphasis.search.objective"),
        ({"optimisers": ["gradient"], "objective": "brisque"}, "emphasis.search.objective"),
    ],
)
def test_bad_settings_name_their_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(EmphasisConfigError, match="^" + re.escape(key)):
        planned(**changes)


def test_missing_image_split_is_an_error() -> None:
    settings = {key: value for key, value in SETTINGS.items() if key != "evaluation_images"}
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.evaluation_images: missing"):
        plan.optimisation_search(settings, PROMPTS, IMAGES)


def metrics(values: dict[tuple[str, int], tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"image_id": image, "seed": seed, "sharpness": value, "edge_f1": f1} for (image, seed), (value, f1) in values.items()]
    )


def test_a_trial_outcome_is_the_level_and_the_edge_f1_drop_over_tolerance() -> None:
    baseline = metrics({("a", 0): (10, 0.5), ("a", 1): (12, 0.5), ("b", 0): (20, 0.4), ("b", 1): (20, 0.4)})
    trial = metrics({("a", 0): (14, 0.45), ("a", 1): (16, 0.45), ("b", 0): (30, 0.4), ("b", 1): (np.nan, 0.4)})
    outcome = objective.trial_outcome(trial, baseline, "sharpness", Tolerances(edge_f1=0.05, clip_score=0.01))
    # Image a: 15; image b: 30 (its NaN seed left out); every image weighs the same.
    assert outcome.objective == pytest.approx(22.5)
    # Edge F1 drops 0.05 on a and 0 on b: a mean drop of 0.025, 0.025 under the tolerance.
    assert outcome.constraints == {"edge_f1_drop_over_tolerance": pytest.approx(-0.025)}
    assert outcome.feasible
    strict = objective.trial_outcome(trial, baseline, "sharpness", Tolerances(edge_f1=0.01, clip_score=0.01))
    assert not strict.feasible


def test_edge_f1_as_objective_is_not_also_a_constraint() -> None:
    baseline = metrics({("a", 0): (10, 0.5)})
    outcome = objective.trial_outcome(metrics({("a", 0): (10, 0.1)}), baseline, "edge_f1", Tolerances(0.05, 0.01))
    assert outcome.constraints == {} and outcome.objective == pytest.approx(0.1)


def evaluation_rows(gains: dict[str, list[float]]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for index, image in enumerate(["c", "d", "e", "f", "g", "h"]):
        level = float(rng.normal(50, 5))
        rows.append({"image_id": image, "condition": BASELINE, "seed": 7, "sharpness": level, "edge_f1": 0.5})
        for condition, values in gains.items():
            rows.append({"image_id": image, "condition": condition, "seed": 7, "sharpness": level + values[index], "edge_f1": 0.45})
    return pd.DataFrame(rows)


def test_the_table_compares_each_optimiser_with_the_best_word_prompt() -> None:
    rows = evaluation_rows({
        plan.BEST_WORD: [1.0, 1.2, 0.8, 1.1, 0.9, 1.0],
        "search-cmaes": [3.0, 3.3, 2.9, 3.1, 3.2, 2.8],
        "search-random": [1.1, 0.9, 1.0, 1.2, 0.8, 1.0],
    })
    bests = {
        "random": {"objective": 51.0, "point": {"good": 0.5, "best": 0.0}, "prompt_id": None},
        "cmaes": {"objective": 53.0, "point": {"best": -0.25, "good": 1.5}, "prompt_id": None},
        plan.WORDS: {"objective": 50.5, "point": {"good": 1.0, "best": 0.0}, "prompt_id": "good"},
    }
    conditions = {"random": "search-random", "cmaes": "search-cmaes", plan.WORDS: plan.BEST_WORD}
    table = evaluation.search_table(
        rows, bests, conditions, {"random": 8, "cmaes": 8, plan.WORDS: 6}, "sharpness", "directions", ["good", "best"],
        ["a", "b"], ["c", "d", "e", "f", "g", "h"], [5, 6], [7],
    ).set_index("optimiser")
    assert list(table.reset_index().columns) == list(evaluation.COLUMNS)
    assert table.loc["cmaes", "gain_mean"] == pytest.approx(3.05)
    assert table.loc["cmaes", "vs_best_word_mean"] == pytest.approx(3.05 - 1.0)
    assert table.loc["cmaes", "vs_best_word_ci_low"] > 0 and table.loc["cmaes", "q_value"] < 0.05
    assert table.loc["cmaes", "verdict"] == "better than the baseline; better than the best word prompt"
    assert table.loc["random", "verdict"] == "better than the baseline; no different from the best word prompt"
    assert math.isnan(table.loc[plan.WORDS, "vs_best_word_mean"])
    assert table.loc[plan.WORDS, "best_word_prompt"] == "good"
    assert table.loc["cmaes", "point"] == "good=1.5 best=-0.25"
    assert table.loc["cmaes", "edge_f1_drop"] == pytest.approx(0.05)


def test_for_a_lower_is_better_objective_a_fall_reads_better() -> None:
    assert evaluation.judged(-2.0, -3.0, -1.0, "lower is better") == "better"
    assert evaluation.judged(-2.0, -3.0, -1.0, "higher is better") == "worse"
    assert evaluation.judged(0.5, -1.0, 2.0, "higher is better") == "no different"


def test_a_tokens_search_has_a_row_for_its_soft_tokens_and_one_for_their_words() -> None:
    rows = evaluation_rows({
        plan.BEST_WORD: [1.0, 1.2, 0.8, 1.1, 0.9, 1.0],
        "search-gradient": [2.0, 2.1, 1.9, 2.2, 1.8, 2.0],
        plan.word_condition("gradient"): [0.0, 0.1, -0.1, 0.2, -0.2, 0.0],
    })
    tokens = {"embeddings": [[0.1, 0.2], [0.3, 0.4]], "token_ids": [5, 9], "words": "crisp edge", "words_round_trip": True}
    bests = {
        "gradient": {"objective": 52.0, "point": {}, "prompt_id": None, "tokens": tokens},
        plan.WORDS: {"objective": 50.5, "point": {"good": 1.0}, "prompt_id": "good"},
    }
    conditions = {"gradient": "search-gradient", plan.WORDS: plan.BEST_WORD}
    table = evaluation.search_table(
        rows, bests, conditions, {"gradient": 8, plan.WORDS: 6}, "sharpness", "tokens", ["good"],
        ["a", "b"], ["c", "d", "e", "f", "g", "h"], [5, 6], [7],
    ).set_index("optimiser")
    assert list(table.reset_index().columns) == list(evaluation.TOKENS_COLUMNS)
    assert list(table.index) == ["gradient", "gradient words", plan.WORDS]
    # The trials measured the words: the soft tokens have no selection objective of their own.
    assert math.isnan(table.loc["gradient", "selection_objective"])
    assert table.loc["gradient words", "selection_objective"] == 52.0
    assert table.loc["gradient", "gain_mean"] == pytest.approx(2.0)
    assert table.loc["gradient words", "gain_mean"] == pytest.approx(0.0)
    assert table.loc["gradient words", "evaluations"] == 8
    assert (table.loc[["gradient", "gradient words"], "projected_words"] == "crisp edge").all()
    assert table.loc[plan.WORDS, "projected_words"] == ""


def test_a_tokens_search_without_a_feasible_trial_is_judged_as_the_baseline() -> None:
    rows = evaluation_rows({
        plan.BEST_WORD: [1.0, 1.2, 0.8, 1.1, 0.9, 1.0],
        "search-gradient": [0.0] * 6,
        plan.word_condition("gradient"): [0.0] * 6,
    })
    bests = {
        "gradient": {"objective": None, "point": {}, "prompt_id": BASELINE, "tokens": None},
        plan.WORDS: {"objective": 50.5, "point": {"good": 1.0}, "prompt_id": "good"},
    }
    table = evaluation.search_table(
        rows, bests, {"gradient": "search-gradient", plan.WORDS: plan.BEST_WORD}, {"gradient": 8, plan.WORDS: 6},
        "sharpness", "tokens", ["good"], ["a", "b"], ["c", "d", "e", "f", "g", "h"], [5, 6], [7],
    ).set_index("optimiser")
    assert table.loc["gradient", "point"] == "baseline" and table.loc["gradient words", "point"] == "baseline"
    assert math.isnan(table.loc["gradient words", "selection_objective"])
    assert table.loc["gradient", "gain_mean"] == 0.0
