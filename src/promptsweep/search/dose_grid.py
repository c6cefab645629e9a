"""The fixed-grid latent search over doses and mixtures of prompt directions
(``emphasis.search`` without optimisers).

The grid (:func:`search_candidates`) is every prompt at every dose and every
pair of positive prompts at the weights of :data:`MIXTURE_WEIGHTS`, known
before any job, so the workflow's DAG is static. Every candidate and word
prompt is generated on the selection seeds, the best feasible candidate and
the best word prompt are chosen there (:func:`select_condition`), and both
are generated again on the evaluation seeds, where :func:`latent_search_table`
reports them against the baseline and each other. The optimisers of
:mod:`promptsweep.search.optimisers` search the same space adaptively.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from promptsweep import stats
from promptsweep.conditions import BASELINE
from promptsweep.search.config import OPTIMISERS_KEY, SPACE_KEY
from promptsweep.emphasis import (
    BUDGET_KEY,
    CLIP_SCORE,
    DOSES_KEY,
    EDGE_F1,
    OBJECTIVE_KEY,
    PROMPTS_KEY,
    SEED,
    SELECTION_SEEDS_KEY,
    TERM_PATTERN,
    EmphasisConfigError,
    Tolerances,
    check_search_seeds,
    condition_id,
    format_dose,
    paired_differences,
    parse_condition_id,
)

# Mixture weights of each of two positive directions. A weight of 0 is left
# out of the grid {0, 0.5, 1}^2 on purpose: (0, 0) is the baseline, (0, 1) a
# word prompt and (0, 0.5) a single-prompt dose, all measured elsewhere.
MIXTURE_WEIGHTS = (0.5, 1.0)
# A candidate's id, terms joined by "+" ("pos1@0.5+pos3@1"), for wildcard_constraints.
CANDIDATE_PATTERN = rf"{TERM_PATTERN}(?:\+{TERM_PATTERN})*"

LATENT_SEARCH_COLUMNS = (
    "candidate",
    "objective",
    "selection_seeds",
    "evaluation_seeds",
    "gain_mean",
    "gain_ci_low",
    "gain_ci_high",
    "edge_f1_drop",
    "best_word_prompt",
    "best_word_gain_mean",
)


@dataclass(frozen=True)
class Candidate:
    """A point of the search grid: word prompts with their doses.

    One term is a single prompt at a dose; several terms (positive prompts
    only) are a mixture of their directions.
    """

    terms: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        """The candidate's id: its terms' condition ids joined by "+",
        e.g. "pos1@0.5+pos3@1"."""
        return "+".join(condition_id(prompt_id, dose) for prompt_id, dose in self.terms)


def parse_candidate(name: str) -> Candidate:
    """The candidate whose :attr:`Candidate.name` is ``name``."""
    if not re.fullmatch(CANDIDATE_PATTERN, name):
        raise ValueError(f"candidate {name!r} is not of the form <prompt_id>@<dose>[+<prompt_id>@<dose>...]")
    return Candidate(tuple(parse_condition_id(term) for term in name.split("+")))


def search_candidates(
    positive_prompt_ids: Sequence[str], negative_prompt_ids: Sequence[str], doses: Sequence[float]
) -> list[Candidate]:
    """The fixed, ordered candidate grid of the latent search.

    1. Every prompt (positive, then negative, in the given order) at every
       dose except 0 and 1: dose 0 is the baseline and dose 1 the word prompt,
       which the search generates from their texts anyway. Choosing among a
       prompt's doses is choosing its best dose.
    2. Every pair of positive prompts (in the given order) with both weights
       in ``MIXTURE_WEIGHTS``: ``E(p) + w_i (E("p, a_i") - E(p)) + w_j (E("p, a_j") - E(p))``.

    Count: ``(P+ + P-) * |doses other than 0 and 1| + |MIXTURE_WEIGHTS|^2 * P+ (P+ - 1) / 2``.
    The grid depends only on its arguments, so the workflow's DAG is static.
    """
    dosed = [d for d in doses if format_dose(d) not in ("0", "1")]
    singles = [
        Candidate(((prompt_id, dose),))
        for prompt_id in [*positive_prompt_ids, *negative_prompt_ids]
        for dose in dosed
    ]
    mixtures = [
        Candidate(((first, first_weight), (second, second_weight)))
        for first, second in itertools.combinations(positive_prompt_ids, 2)
        for first_weight, second_weight in itertools.product(MIXTURE_WEIGHTS, repeat=2)
    ]
    return singles + mixtures


@dataclass(frozen=True)
class SearchCost:
    """Generations of the latent search, each one (condition, image, seed).

    * selection: every candidate, every word prompt and the baseline, on
      every image and selection seed:
      ``images * selection_seeds * (candidates + word_prompts + 1)``;
    * evaluation: the chosen candidate, the best word prompt and the
      baseline on every image and evaluation seed:
      ``images * evaluation_seeds * 3``.

    The evaluation's conditions are fixed names whose content the selection
    decides, so the DAG stays static. The search's files are its own: none
    is shared with the main study.
    """

    selection: int
    evaluation: int

    @property
    def total(self) -> int:
        return self.selection + self.evaluation


def search_cost(
    n_images: int, n_candidates: int, n_word_prompts: int, n_selection_seeds: int, n_evaluation_seeds: int
) -> SearchCost:
    """The latent search's generations (see :class:`SearchCost` for the formula)."""
    evaluated_conditions = 3  # chosen candidate, best word prompt, baseline
    return SearchCost(
        selection=n_images * n_selection_seeds * (n_candidates + n_word_prompts + 1),
        evaluation=n_images * n_evaluation_seeds * evaluated_conditions,
    )


def check_search_budget(cost: SearchCost, budget: int) -> None:
    """Refuse a search grid that needs more generations than ``budget``."""
    if cost.total > budget:
        raise EmphasisConfigError(
            f"{BUDGET_KEY}: the latent search needs {cost.total} generations ({cost.selection} to "
            f"select, {cost.evaluation} to evaluate) but the budget is {budget}; raise "
            f"{BUDGET_KEY}, or list fewer {DOSES_KEY} or {SELECTION_SEEDS_KEY}"
        )


def check_objective(objective: str, per_image_metrics: Sequence[str]) -> None:
    """The search objective must be a registered per-image metric (higher is better)."""
    if objective not in per_image_metrics:
        raise EmphasisConfigError(
            f"{OBJECTIVE_KEY}: {objective!r} is not a registered per-image metric whose higher values are better; use one of "
            f"{sorted(per_image_metrics)}"
        )


@dataclass(frozen=True)
class SearchPlan:
    """The latent search's fixed grid, seeds and objective."""

    objective: str
    tolerances: Tolerances
    selection_seeds: tuple[int, ...]
    evaluation_seeds: tuple[int, ...]
    budget: int
    candidates: tuple[Candidate, ...]
    word_prompts: tuple[str, ...]
    cost: SearchCost

    @property
    def conditions(self) -> list[str]:
        """What is generated on the selection seeds: baseline, word prompts, candidates."""
        return [BASELINE, *self.word_prompts, *(candidate.name for candidate in self.candidates)]


def grid_search_plan(
    search_settings: Mapping[str, Any],
    prompt_ids: Sequence[str],
    prompt_kinds: Mapping[str, str],
    doses: Sequence[float],
    n_images: int,
    per_image_metrics: Sequence[str],
) -> SearchPlan:
    """Check ``emphasis.search`` (without optimisers) against the prompts it
    doses (``prompt_ids``, each with its kind in ``prompt_kinds``), the doses
    and the metric registry, and lay out the grid. Raises
    :class:`EmphasisConfigError` naming the key to change."""
    # The grid doses the word prompts; another space needs an optimiser to search it.
    if search_settings.get("space", "directions") != "directions" or "tokens" in search_settings:
        raise EmphasisConfigError(
            f"{SPACE_KEY}: the grid (no {OPTIMISERS_KEY}) searches the directions only; "
            f"set {OPTIMISERS_KEY} (e.g. [gradient]) to search {search_settings.get('space')}, or remove it"
        )
    check_objective(search_settings["objective"], per_image_metrics)
    selection = tuple(int(seed) for seed in search_settings["selection_seeds"])
    evaluation = tuple(int(seed) for seed in search_settings["evaluation_seeds"])
    check_search_seeds(selection, evaluation)
    positives = [p for p in prompt_ids if prompt_kinds[p] == "positive"]
    negatives = [p for p in prompt_ids if prompt_kinds[p] == "negative"]
    candidates = tuple(search_candidates(positives, negatives, doses))
    if not candidates:
        raise EmphasisConfigError(
            f"{DOSES_KEY}: the search has no candidate; give a dose other than 0 and 1, or "
            f"two positive prompts in {PROMPTS_KEY} (whose directions it mixes)"
        )
    cost = search_cost(n_images, len(candidates), len(prompt_ids), len(selection), len(evaluation))
    check_search_budget(cost, int(search_settings["budget"]))
    tolerances = search_settings.get("tolerances") or {}
    return SearchPlan(
        objective=search_settings["objective"],
        tolerances=Tolerances(float(tolerances.get("edge_f1", 0.05)), float(tolerances.get("clip_score", 0.01))),
        selection_seeds=selection,
        evaluation_seeds=evaluation,
        budget=int(search_settings["budget"]),
        candidates=candidates,
        word_prompts=prompt_ids,
        cost=cost,
    )


def _image_means(differences: pd.DataFrame, metric: str) -> np.ndarray:
    return stats.per_image_mean(differences, metric).to_numpy()


def _mean_over_images(differences: pd.DataFrame, metric: str) -> float:
    """Mean over images of each image's mean difference: every image weighs
    the same, as in promptsweep.stats."""
    means = _image_means(differences, metric)
    return float(means.mean()) if means.size else math.nan


def _has_values(rows: pd.DataFrame, metric: str) -> bool:
    return metric in rows.columns and bool(rows[metric].notna().any())


def _selection_score(
    selection_rows: pd.DataFrame, condition: str, objective: str, tolerances: Tolerances
) -> float:
    """The condition's mean paired gain in ``objective``, or NaN when it has
    no paired rows or breaks a tolerance."""
    constrained = {EDGE_F1: tolerances.edge_f1} if objective != EDGE_F1 else {}
    # CLIP score is a constraint only where it was computed and is not the objective itself.
    if objective != CLIP_SCORE and _has_values(selection_rows, CLIP_SCORE):
        constrained[CLIP_SCORE] = tolerances.clip_score
    differences = paired_differences(selection_rows, condition, [objective, *constrained])
    for metric, tolerance in constrained.items():
        drop = -_mean_over_images(differences, metric)
        if not drop <= tolerance:  # NaN (no data) fails too
            return math.nan
    return _mean_over_images(differences, objective)


def select_condition(
    rows: pd.DataFrame,
    conditions: Sequence[str],
    selection_seeds: Sequence[int],
    objective: str,
    tolerances: Tolerances,
) -> str:
    """The condition with the largest mean paired gain in ``objective`` over
    the same-seed baseline, on the selection seeds only.

    A condition is eligible when its mean edge-F1 drop (and mean CLIP-score
    drop, where CLIP scores exist and the objective is another metric) is at
    most the tolerance. The baseline (gain 0) is the answer when no eligible
    condition gains more than 0; ties go to the condition listed first.
    Only rows of ``selection_seeds`` are read: the first line of the
    function discards every other row.
    """
    selection_rows = rows[rows[SEED].isin(list(selection_seeds))]
    best, best_gain = BASELINE, 0.0
    for condition in conditions:
        gain = _selection_score(selection_rows, condition, objective, tolerances)
        if gain > best_gain:  # NaN never wins
            best, best_gain = condition, gain
    return best


@dataclass(frozen=True)
class Evaluation:
    gain_mean: float
    gain_ci: tuple[float, float]
    edge_f1_drop: float


def _evaluate(evaluation_rows: pd.DataFrame, condition: str, objective: str) -> Evaluation:
    differences = paired_differences(evaluation_rows, condition, list(dict.fromkeys([objective, EDGE_F1])))
    gains = _image_means(differences, objective)
    if gains.size == 0:
        raise ValueError(
            f"condition {condition!r} has no {objective!r} paired with the baseline on the "
            "evaluation seeds; generate and score it on those seeds"
        )
    return Evaluation(
        gain_mean=float(gains.mean()),
        gain_ci=stats.mean_ci(gains),
        edge_f1_drop=-_mean_over_images(differences, EDGE_F1),
    )


def _seed_list(seeds: Sequence[int]) -> str:
    return ",".join(str(seed) for seed in seeds)


def latent_search_table(
    rows: pd.DataFrame,
    candidates: Sequence[str],
    word_prompts: Sequence[str],
    selection_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
    objective: str,
    tolerances: Tolerances,
) -> pd.DataFrame:
    """The latent search's result: the chosen candidate against the best word prompt.

    ``rows``: one row per generation, columns image_id, condition (baseline,
    word prompt ids, candidate names), seed, ``objective`` (higher is
    better), edge_f1 and optionally clip_score; it holds the selection seeds'
    generations and the evaluation seeds' ones of the baseline, the chosen
    candidate and the best word prompt.

    The candidate and the best word prompt are chosen alike by
    :func:`select_condition` on the selection seeds; then both are scored on
    the disjoint evaluation seeds. The table has two rows, the chosen
    candidate's and the best word prompt's (one when both are the
    baseline), with columns ``LATENT_SEARCH_COLUMNS``:

    * candidate: the condition scored in the row;
    * objective: the objective's column name;
    * selection_seeds, evaluation_seeds: the seeds, comma-separated;
    * gain_mean: on the evaluation seeds, the mean over images of each
      image's mean paired gain ``objective(condition) - objective(baseline)``
      (same image and seed);
    * gain_ci_low/high: its 95% t interval over images (``stats.mean_ci``);
    * edge_f1_drop: the same mean for ``edge_f1(baseline) - edge_f1(condition)``;
    * best_word_prompt, best_word_gain_mean: the best word prompt and its gain_mean.

    The chosen candidate is ``baseline`` when nothing within tolerance
    gained on the selection seeds. Whether it beat the best word prompt is
    read on :func:`gain_over_word_ci` (paired by image) by
    :func:`latent_search_verdict`.
    """
    check_search_seeds(selection_seeds, evaluation_seeds)
    chosen = select_condition(rows, candidates, selection_seeds, objective, tolerances)
    best_word = select_condition(rows, word_prompts, selection_seeds, objective, tolerances)
    evaluation_rows = rows[rows[SEED].isin(list(evaluation_seeds))]
    evaluations = {
        condition: _evaluate(evaluation_rows, condition, objective)
        for condition in dict.fromkeys([chosen, best_word])
    }
    table = pd.DataFrame(
        [
            {
                "candidate": condition,
                "objective": objective,
                "selection_seeds": _seed_list(selection_seeds),
                "evaluation_seeds": _seed_list(evaluation_seeds),
                "gain_mean": evaluation.gain_mean,
                "gain_ci_low": evaluation.gain_ci[0],
                "gain_ci_high": evaluation.gain_ci[1],
                "edge_f1_drop": evaluation.edge_f1_drop,
                "best_word_prompt": best_word,
                "best_word_gain_mean": evaluations[best_word].gain_mean,
            }
            for condition, evaluation in evaluations.items()
        ]
    )
    return table[list(LATENT_SEARCH_COLUMNS)]


def gain_over_word_ci(
    rows: pd.DataFrame,
    candidate: str,
    word: str,
    evaluation_seeds: Sequence[int],
    objective: str,
) -> tuple[float, float, float]:
    """The candidate's gain minus the word prompt's, paired by image on the
    evaluation seeds: per image, the mean paired gain of each over the
    same-seed baseline, their difference, then the mean over images and its
    95% t interval over images. Two intervals of the same images overlap
    far more often than their paired difference includes 0, so the verdict
    reads this one."""
    evaluation_rows = rows[rows[SEED].isin(list(evaluation_seeds))]
    gains = {
        condition: stats.per_image_mean(paired_differences(evaluation_rows, condition, [objective]), objective)
        for condition in (candidate, word)
    }
    difference = (gains[candidate] - gains[word]).dropna().to_numpy()
    mean = float(difference.mean()) if difference.size else math.nan
    return (mean, *stats.mean_ci(difference))


def latent_search_verdict(table: pd.DataFrame, over_word: tuple[float, float, float]) -> str:
    """One sentence on a :func:`latent_search_table`: whether the chosen
    candidate beat the baseline (its gain's interval lies above 0) and the
    best word prompt (``over_word``, from :func:`gain_over_word_ci`, lies
    above 0) on the evaluation seeds."""
    chosen = table.iloc[0]
    name, word = chosen["candidate"], chosen["best_word_prompt"]
    if name == BASELINE:
        return "no candidate gained within the tolerances on the selection seeds: no better than the baseline"
    parts = []
    if not chosen["gain_ci_low"] > 0:
        parts.append(f"{name}'s gain interval includes 0 (no better than the baseline)")
    mean, low, high = over_word
    if name == word:
        parts.append(f"{name} is the best word prompt itself")
    elif low > 0:
        parts.append(f"{name} is better than the best word prompt {word} (gain over it {mean:.3g}, 95% CI {low:.3g} to {high:.3g})")
    else:
        parts.append(
            f"{name} is no better than the best word prompt {word} (gain over it {mean:.3g}, 95% CI "
            f"{low:.3g} to {high:.3g}, paired by image)"
        )
    return "; ".join(parts)
