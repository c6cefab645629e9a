"""Emphasis as a number: additional prompts applied in the text-embedding space.

The study's word prompts change an image's conditioning in whole steps: a
positive prompt ``a`` turns the text ``p`` into ``"p, a"``, a negative prompt
``n`` turns the empty negative text into ``n``. Here the same change is taken
as a direction in the text encoder's output space and applied by a continuous
*dose* ``d``. With ``E(text)`` the conditioning the model family encodes for
a text (:class:`promptsweep.families.Conditioning`: every tensor the pipeline
conditions on, e.g. SD 1.5's CLIP output at all 77 positions, padding
included), and the arithmetic applied to each of its tensors:

* positive prompt: condition ``E(p) + d (E("p, a") - E(p))``, unconditional ``E("")``;
* negative prompt: condition ``E(p)``, unconditional ``E("") + d (E(n) - E(""))``.

``d = 0`` is the baseline and ``d = 1`` the word variant, exactly (see
:func:`dosed`). The positive dose is the prompt weighting proposed in
CompVis/stable-diffusion pull request #580 ("Add prompt weights to the
txt2img script", 2023, not merged): the difference between the embeddings of
the whole prompt with and without a sub-prompt is taken as that sub-prompt's
contribution and scaled by its weight. compel scales a token's offset from
the empty text's embedding in the same way, per token. Treating the
difference of two prompt embeddings as an attribute direction that can be
scaled and added is the approach of S. A. Baumann et al., "Continuous,
Subject-Specific Attribute Control in T2I Models by Identifying Semantic
Directions", 2024 (arXiv:2403.17064).

The module also holds the ids of dosed conditions, a fixed-grid search over
doses and mixtures of directions (:func:`search_candidates`,
:func:`search_cost`, :func:`latent_search_table`) and the dose-response table
(:func:`dose_response_table`). Every table function is pure and reads only
the frames it is given.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from promptsweep import stats
from promptsweep.conditions import BASELINE, GenerationInput
from promptsweep.families import Conditioning


DOSES_KEY = "emphasis.doses"
PROMPTS_KEY = "emphasis.prompts"
OBJECTIVE_KEY = "emphasis.search.objective"
BUDGET_KEY = "emphasis.search.budget"
SELECTION_SEEDS_KEY = "emphasis.search.selection_seeds"
EVALUATION_SEEDS_KEY = "emphasis.search.evaluation_seeds"

DOSE_RANGE = (-2.0, 4.0)
DOSE_DECIMALS = 4
# Mixture weights of each of two positive directions. A weight of 0 is left
# out of the grid {0, 0.5, 1}^2 on purpose: (0, 0) is the baseline, (0, 1) a
# word prompt and (0, 0.5) a single-prompt dose, all measured elsewhere.
MIXTURE_WEIGHTS = (0.5, 1.0)

# Condition ids become file names and Snakemake wildcards: TERM_PATTERN
# matches a dosed condition ("pos5@0.5"), CANDIDATE_PATTERN a search
# candidate (terms joined by "+"); both are for wildcard_constraints.
_PROMPT_ID = r"[A-Za-z0-9_-]+"
_DOSE = r"-?[0-9]+(?:\.[0-9]+)?"
TERM_PATTERN = rf"{_PROMPT_ID}@{_DOSE}"
CANDIDATE_PATTERN = rf"{TERM_PATTERN}(?:\+{TERM_PATTERN})*"

IMAGE = "image_id"
CONDITION = "condition"
SEED = "seed"
SSIM = "ssim"
EDGE_F1 = "edge_f1"
CLIP_SCORE = "clip_score"
NO_DOSE = "none"

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

ConditionEncoder = Callable[[GenerationInput], Conditioning]


class EmphasisConfigError(ValueError):
    """A value under the config's ``emphasis`` key that the user must change."""


# --- Text encoding ----------------------------------------------------------


def has_weights(text: str) -> bool:
    """Whether ``text`` uses compel's weight syntax: ``(words)1.3``,
    ``words+``, ``words--``, a blend or a conjunction.

    "Has weights" means compel's parser finds a fragment whose weight is not
    1, or a structure other than one plain prompt (blend, conjunction, edit).
    Parentheses or quotes alone (``"a (red) cat"``, ``(x)1.0``) are not
    weights: such a text goes to the pipeline as written, exactly as before
    compel was used, so that every text without weights generates
    bit-identical images.
    """
    from compel.prompt_parser import FlattenedPrompt, Fragment, PromptParser

    conjunction = PromptParser().parse_conjunction(text)
    if len(conjunction.prompts) != 1 or any(weight != 1.0 for weight in conjunction.weights):
        return True
    (prompt,) = conjunction.prompts
    if not isinstance(prompt, FlattenedPrompt):
        return True
    return any(not isinstance(child, Fragment) or child.weight != 1.0 for child in prompt.children)


# --- Doses --------------------------------------------------------------------


def dosed(baseline: Conditioning, word: Conditioning, dose: float) -> Conditioning:
    """The conditioning of a word prompt at ``dose``: every tensor of the
    baseline moved ``dose`` times towards the word variant's
    (``Conditioning.lerp``, exact at both ends: ``dose = 0`` gives the
    baseline and ``dose = 1`` the word variant, bit for bit).

    One branch is the same text in both (``""`` for a positive prompt, ``p``
    for a negative one) and stays exactly as it is, so this is the module's
    definition for either kind:

    * positive: condition ``E(p) + d (E("p, a") - E(p))``, unconditional ``E("")``;
    * negative: condition ``E(p)``, unconditional ``E("") + d (E(n) - E(""))``.
    """
    return baseline.lerp(word, dose)


def dose_condition(
    baseline_texts: GenerationInput, word_texts: GenerationInput, dose: float, encode: ConditionEncoder
) -> Conditioning:
    """The conditioning of a word prompt at ``dose``, from the texts of the
    baseline and of the word variant (``study.condition_input``); ``encode``
    is the model family's (``functools.partial(family.encode, pipeline)``)."""
    return dosed(encode(baseline_texts), encode(word_texts), dose)


def embedding_norms(baseline: Conditioning, word: Conditioning, dose: float) -> dict[str, float]:
    """Frobenius norms to record with a dosed generation.

    * ``<tensor>_norm``: of each tensor of the dosed conditioning;
    * ``direction_norm``: of the direction ``word - baseline``, all tensors
      together (the unchanged branch's part is zero);
    * ``shift_norm``: ``|dose| * direction_norm``, how far the dose moved the conditioning.
    """
    direction_norm = (word - baseline).norm()
    return {**dosed(baseline, word, dose).norms(), "direction_norm": direction_norm, "shift_norm": abs(dose) * direction_norm}


def mixture(baseline: Conditioning, words: Sequence[Conditioning], weights: Sequence[float]) -> Conditioning:
    """``baseline + sum_i weights[i] (words[i] - baseline)`` in every tensor:
    several attribute directions added to one conditioning, each scaled on
    its own (directions are additive in Baumann et al. 2024's sense). For
    positive prompts only the condition changes:
    ``E(p) + sum_i w_i (E("p, a_i") - E(p))``, unconditional ``E("")``."""
    if len(words) != len(weights):
        raise ValueError(f"{len(words)} directions but {len(weights)} weights; give one weight per direction")
    mixed = baseline
    for word, weight in zip(words, weights):
        mixed = mixed + (word - baseline).scale(weight)
    return mixed


# --- Dose ids -------------------------------------------------------------------


def format_dose(dose: float) -> str:
    """A dose as it appears in ids: at most ``DOSE_DECIMALS`` decimals, no
    trailing zeros (0.5 -> "0.5", 2.0 -> "2", -1.0 -> "-1", 1.25 -> "1.25")."""
    text = f"{dose:.{DOSE_DECIMALS}f}".rstrip("0").rstrip(".")
    # -0.0 and tiny negatives round to "-0"; one zero has one id.
    return "0" if text == "-0" else text


def parse_dose(text: str) -> float:
    """The dose of an id's dose part; only :func:`format_dose`'s own form is
    accepted, so that each dose has exactly one id."""
    if not re.fullmatch(_DOSE, text):
        raise ValueError(f"dose {text!r} is not a number like 0.5, 2 or -1")
    dose = float(text)
    if format_dose(dose) != text:
        raise ValueError(f"dose {text!r} is not in canonical form; write it as {format_dose(dose)!r}")
    return dose


def condition_id(prompt_id: str, dose: float) -> str:
    """The id of a prompt at a dose: ``condition_id("pos5", 0.5) == "pos5@0.5"``."""
    return f"{prompt_id}@{format_dose(dose)}"


def parse_condition_id(text: str) -> tuple[str, float]:
    """The (prompt id, dose) of an id made by :func:`condition_id`."""
    if not re.fullmatch(TERM_PATTERN, text):
        raise ValueError(f"condition {text!r} is not of the form <prompt_id>@<dose>, e.g. 'pos5@0.5'")
    prompt_id, dose = text.split("@")
    return prompt_id, parse_dose(dose)


def validated_doses(doses: Sequence[Any]) -> tuple[float, ...]:
    """The configured doses as floats, checked: numbers in ``DOSE_RANGE``
    with at most ``DOSE_DECIMALS`` decimals, and no two with the same id
    (0.5 and 0.50 are one dose)."""
    checked: list[float] = []
    for dose in doses:
        if isinstance(dose, bool) or not isinstance(dose, (int, float)) or not math.isfinite(dose):
            raise EmphasisConfigError(f"{DOSES_KEY}: {dose!r} is not a number; list doses such as [0.5, 1.5, 2]")
        low, high = DOSE_RANGE
        if not low <= dose <= high:
            raise EmphasisConfigError(
                f"{DOSES_KEY}: dose {dose} lies outside [{low:g}, {high:g}]; beyond it the "
                "embedding leaves the range the text encoder produces. Remove it"
            )
        if float(format_dose(dose)) != float(dose):
            raise EmphasisConfigError(
                f"{DOSES_KEY}: dose {dose} has more than {DOSE_DECIMALS} decimals; round it "
                f"(its id would read {format_dose(dose)!r})"
            )
        checked.append(float(dose))
    repeated = sorted(text for text, count in Counter(map(format_dose, checked)).items() if count > 1)
    if repeated:
        raise EmphasisConfigError(f"{DOSES_KEY}: doses {repeated} are listed more than once; list each dose once")
    return tuple(checked)


# --- Search candidates and their cost -------------------------------------------------


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


def candidate_conditioning(
    candidate: Candidate, baseline: Conditioning, words: Mapping[str, Conditioning]
) -> Conditioning:
    """The conditioning to generate a candidate with, from the baseline's
    and those of the word variants it names (by prompt id)."""
    if len(candidate.terms) == 1:
        # The dose path, exact at dose 1.
        (prompt_id, dose), = candidate.terms
        return dosed(baseline, words[prompt_id], dose)
    return mixture(
        baseline, [words[prompt_id] for prompt_id, _ in candidate.terms], [w for _, w in candidate.terms]
    )


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


def check_disjoint_split(
    selection_key: str, selection: Sequence[Any], evaluation_key: str, evaluation: Sequence[Any], items: str
) -> None:
    """A selection and an evaluation list (of seeds, of images) must be
    non-empty and disjoint: an item in both would let the choice be scored on
    the data that made it. ``items`` names them in the message."""
    for key, values in ((selection_key, selection), (evaluation_key, evaluation)):
        if not values:
            raise EmphasisConfigError(f"{key}: empty; list at least one of the {items}")
    shared = sorted(set(selection) & set(evaluation))
    if shared:
        raise EmphasisConfigError(
            f"{selection_key} and {evaluation_key} share {items} {shared}; remove them from one of the two lists"
        )


def check_search_seeds(selection_seeds: Sequence[int], evaluation_seeds: Sequence[int]) -> None:
    """Selection and evaluation seeds: :func:`check_disjoint_split`."""
    check_disjoint_split(SELECTION_SEEDS_KEY, selection_seeds, EVALUATION_SEEDS_KEY, evaluation_seeds, "seeds")


# --- Generation requests ------------------------------------------------------------

METHOD_TEXT = "text"
METHOD_COMPEL = "compel"
METHOD_DOSE = "dose"
METHOD_MIXTURE = "mixture"


def embedding_request(
    baseline: GenerationInput, words: Mapping[str, GenerationInput], terms: Sequence[tuple[str, float]]
) -> dict[str, Any]:
    """What a dosed or mixed condition's embeddings depend on, as plain values
    for a generation request: the texts of the baseline (``p`` and ``""``),
    of each word variant it names (``"p, a"`` and ``""``, or ``p`` and ``n``)
    and each term's prompt id and dose (one term: a dose; several: a mixture
    of positive directions). Only the named prompts' texts are in it, so an
    edit of another prompt leaves the request unchanged."""
    return {
        "method": METHOD_DOSE if len(terms) == 1 else METHOD_MIXTURE,
        "baseline": {"prompt": baseline.prompt, "negative_prompt": baseline.negative_prompt},
        "words": {
            prompt_id: {"prompt": words[prompt_id].prompt, "negative_prompt": words[prompt_id].negative_prompt}
            for prompt_id, _ in terms
        },
        "terms": [[prompt_id, float(dose)] for prompt_id, dose in terms],
    }


@dataclass(frozen=True)
class ConditionEmbeddings:
    """What a generation job hands to ``generation.generate_batch`` and records."""

    conditioning: Conditioning
    method: str
    """"text" (the texts as the pipeline encodes them), "compel", "dose" or "mixture"."""
    dose: float | None
    norms: dict[str, float]


def condition_embeddings(
    encode: ConditionEncoder, texts: GenerationInput, request: Mapping[str, Any] | None
) -> ConditionEmbeddings:
    """The conditioning of one condition from its generation request's parts,
    with ``encode`` the model family's (``functools.partial(family.encode, pipeline)``).

    * ``request`` None: the condition's texts, method "compel" when either
      has weights (:func:`has_weights`), else "text" (no norms recorded);
    * an :func:`embedding_request`: method "dose" (:func:`dosed`) or
      "mixture" (:func:`mixture`), from the baseline's and word variants'
      conditionings.
    """
    if request is None:
        conditioning = encode(texts)
        if not (has_weights(texts.prompt) or has_weights(texts.negative_prompt)):
            return ConditionEmbeddings(conditioning, METHOD_TEXT, None, {})
        return ConditionEmbeddings(conditioning, METHOD_COMPEL, None, conditioning.norms())
    baseline = encode(GenerationInput(**request["baseline"]))
    words = {prompt_id: encode(GenerationInput(**word)) for prompt_id, word in request["words"].items()}
    terms = tuple((prompt_id, float(dose)) for prompt_id, dose in request["terms"])
    conditioning = candidate_conditioning(Candidate(terms), baseline, words)
    if len(terms) == 1:
        (prompt_id, dose), = terms
        return ConditionEmbeddings(conditioning, METHOD_DOSE, dose, embedding_norms(baseline, words[prompt_id], dose))
    shift = (conditioning - baseline).norm()
    return ConditionEmbeddings(conditioning, METHOD_MIXTURE, None, {**conditioning.norms(), "shift_norm": shift})


# --- The study's plan ---------------------------------------------------------------


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


@dataclass(frozen=True)
class EmphasisPlan:
    """The ``emphasis:`` config, checked: the dosed conditions and the search."""

    doses: tuple[float, ...]
    prompt_ids: tuple[str, ...]
    dose_conditions: dict[str, tuple[str, float]]
    """Condition id -> (prompt id, dose), prompts in sheet order, doses as listed."""
    search: SearchPlan | None


def emphasis_plan(
    settings: Mapping[str, Any],
    prompt_kinds: Mapping[str, str],
    n_images: int,
    per_image_metrics: Sequence[str],
) -> EmphasisPlan:
    """Check the ``emphasis:`` config against the prompt sheet (prompt id ->
    kind, in sheet order) and the metric registry, and lay out its conditions.
    Raises :class:`EmphasisConfigError` naming the key to change."""
    doses = validated_doses(settings.get("doses") or [])
    chosen = settings.get("prompts")
    prompt_ids = tuple(prompt_kinds) if chosen is None else tuple(chosen)
    unknown = [prompt_id for prompt_id in prompt_ids if prompt_id not in prompt_kinds]
    if unknown:
        raise EmphasisConfigError(
            f"{PROMPTS_KEY}: {unknown} are not prompt ids of the prompt sheet; use some of {list(prompt_kinds)}"
        )
    dose_conditions = {
        condition_id(prompt_id, dose): (prompt_id, dose) for prompt_id in prompt_ids for dose in doses
    }
    search_settings = settings.get("search")
    search = None
    # With optimisers the search is promptsweep.search.plan's, not this grid.
    if search_settings and "optimisers" not in search_settings:
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
        search = SearchPlan(
            objective=search_settings["objective"],
            tolerances=Tolerances(float(tolerances.get("edge_f1", 0.05)), float(tolerances.get("clip_score", 0.01))),
            selection_seeds=selection,
            evaluation_seeds=evaluation,
            budget=int(search_settings["budget"]),
            candidates=candidates,
            word_prompts=prompt_ids,
            cost=cost,
        )
    return EmphasisPlan(doses, prompt_ids, dose_conditions, search)


# --- Selection and evaluation -----------------------------------------------------


def paired_differences(
    rows: pd.DataFrame, condition: str, metrics: Sequence[str]
) -> pd.DataFrame:
    """Each metric of ``condition`` minus the same (image, seed) baseline's.

    ``rows`` is a long table with columns image_id, condition, seed and the
    metrics, one row per generation. Returns columns image_id, seed and the
    metrics (as differences), one row per (image, seed) that has both the
    condition and the baseline; a NaN on either side stays NaN.
    """
    keys = [IMAGE, SEED]
    columns = [*keys, *metrics]
    variant = rows.loc[rows[CONDITION] == condition, columns]
    baseline = rows.loc[rows[CONDITION] == BASELINE, columns]
    for frame, name in ((variant, condition), (baseline, BASELINE)):
        if frame.duplicated(keys).any():
            raise ValueError(f"condition {name!r} has more than one row for an (image_id, seed); keep one")
    joined = variant.merge(baseline, on=keys, suffixes=("", "_baseline"), validate="one_to_one")
    differences = joined[keys].copy()
    for metric in metrics:
        differences[metric] = joined[metric] - joined[f"{metric}_baseline"]
    return differences.reset_index(drop=True)


def _image_means(differences: pd.DataFrame, metric: str) -> np.ndarray:
    return stats.per_image_mean(differences, metric).to_numpy()


def _mean_over_images(differences: pd.DataFrame, metric: str) -> float:
    """Mean over images of each image's mean difference: every image weighs
    the same, as in promptsweep.stats."""
    means = _image_means(differences, metric)
    return float(means.mean()) if means.size else math.nan


def _has_values(rows: pd.DataFrame, metric: str) -> bool:
    return metric in rows.columns and bool(rows[metric].notna().any())


@dataclass(frozen=True)
class Tolerances:
    """How much a candidate may lower fidelity and prompt agreement on
    average (mean over images of the paired drop) and still be chosen."""

    edge_f1: float
    clip_score: float


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


# --- Dose response ------------------------------------------------------------------


def _mean_and_ci(image_means: np.ndarray) -> tuple[float, float, float]:
    mean = float(image_means.mean()) if image_means.size else math.nan
    low, high = stats.mean_ci(image_means)
    return mean, low, high


def _dose_row(dose_pairs: pd.DataFrame, quality_metrics: Sequence[str]) -> dict[str, float | int]:
    valid = dose_pairs.dropna(subset=[SSIM])
    effects = 1.0 - stats.per_image_mean(valid, SSIM).to_numpy()
    effect = _mean_and_ci(effects)
    row: dict[str, float | int] = {
        "n": len(valid),
        "effect_mean": effect[0],
        "effect_ci_low": effect[1],
        "effect_ci_high": effect[2],
    }
    for metric in quality_metrics:
        column = f"{metric}_delta"
        mean, low, high = _mean_and_ci(stats.per_image_mean(dose_pairs, column).to_numpy())
        row.update({f"{column}_mean": mean, f"{column}_ci_low": low, f"{column}_ci_high": high})
    return row


def smallest_dose_above_noise(doses: pd.Series, effect_ci_low: pd.Series, noise_effect: float) -> str:
    """The smallest positive dose whose effect interval lies wholly above the
    noise effect, formatted, or ``"none"``. Negative doses point away from
    the word and are not a "smallest amount" of it."""
    above = doses[(doses > 0) & (effect_ci_low > noise_effect)]
    return format_dose(float(above.min())) if len(above) else NO_DOSE


def dose_response_table(
    pairs: pd.DataFrame,
    noise_floor: pd.DataFrame,
    quality_metrics: Sequence[str],
) -> pd.DataFrame:
    """How a prompt's effect and the image quality change with its dose.

    ``pairs``: one row per (image, prompt, dose, seed), columns image_id,
    prompt_id, kind, dose, seed, ssim (SSIM of the dosed generation to the
    same-seed baseline) and ``{m}_delta`` for each ``m`` in
    ``quality_metrics`` (the metric of the dosed generation minus the
    baseline's). ``noise_floor``: columns image_id, seed_a, seed_b, ssim
    (SSIM between an image's baselines of two seeds).

    One row per (prompt_id, dose), sorted by kind, prompt_id and dose, with:

    * prompt_id, kind, dose;
    * n: pairs with a non-NaN SSIM;
    * effect_mean: mean over images of each image's mean ``1 - ssim``;
    * effect_ci_low/high: its 95% t interval over images (``stats.mean_ci``);
    * ``{m}_delta_mean``, ``{m}_delta_ci_low/high``: the same for each quality metric's delta;
    * noise_effect: ``1 - `` the mean over images of each image's mean
      noise-floor SSIM: what a new seed alone changes;
    * smallest_dose_above_noise: per prompt, the smallest positive dose whose
      effect_ci_low exceeds noise_effect (see :func:`smallest_dose_above_noise`),
      or "none"; the same on each of the prompt's rows.

    A row depends only on its own pairs.
    """
    noise_effect = 1.0 - float(stats.per_image_mean(noise_floor, SSIM).mean())
    rows = [
        {stats.PROMPT: prompt_id, stats.KIND: kind, "dose": float(dose),
         **_dose_row(dose_pairs, quality_metrics)}
        for (prompt_id, kind, dose), dose_pairs in pairs.groupby([stats.PROMPT, stats.KIND, "dose"], sort=True)
    ]
    if not rows:
        raise ValueError("no dosed pairs to tabulate")
    table = pd.DataFrame(rows).sort_values([stats.KIND, stats.PROMPT, "dose"], ignore_index=True)
    table["noise_effect"] = noise_effect
    smallest = {
        prompt_id: smallest_dose_above_noise(prompt_rows["dose"], prompt_rows["effect_ci_low"], noise_effect)
        for prompt_id, prompt_rows in table.groupby(stats.PROMPT)
    }
    table["smallest_dose_above_noise"] = table[stats.PROMPT].map(smallest)
    return table
