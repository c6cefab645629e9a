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

The module also holds the ids of dosed conditions, their generation
requests, the checks of the ``emphasis:`` config and the pairing of a
condition's images with the same image and seed's baseline
(:func:`paired_differences`). The fixed-grid search over doses and mixtures
is :mod:`promptsweep.search.dose_grid`, the optimisers' search the rest of
:mod:`promptsweep.search`, and the dose-response table
:mod:`promptsweep.dose_response`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from promptsweep.conditions import BASELINE, GenerationInput
from promptsweep.families import Conditioning

if TYPE_CHECKING:
    from promptsweep.search.dose_grid import SearchPlan


DOSES_KEY = "emphasis.doses"
PROMPTS_KEY = "emphasis.prompts"
OBJECTIVE_KEY = "emphasis.search.objective"
BUDGET_KEY = "emphasis.search.budget"
SELECTION_SEEDS_KEY = "emphasis.search.selection_seeds"
EVALUATION_SEEDS_KEY = "emphasis.search.evaluation_seeds"

DOSE_RANGE = (-2.0, 4.0)
DOSE_DECIMALS = 4

# Condition ids become file names and Snakemake wildcards: TERM_PATTERN
# matches a dosed condition ("pos5@0.5"), for wildcard_constraints.
_PROMPT_ID = r"[A-Za-z0-9_-]+"
_DOSE = r"-?[0-9]+(?:\.[0-9]+)?"
TERM_PATTERN = rf"{_PROMPT_ID}@{_DOSE}"

IMAGE = "image_id"
CONDITION = "condition"
SEED = "seed"
SSIM = "ssim"
EDGE_F1 = "edge_f1"
CLIP_SCORE = "clip_score"
NO_DOSE = "none"

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


def terms_conditioning(
    terms: Sequence[tuple[str, float]], baseline: Conditioning, words: Mapping[str, Conditioning]
) -> Conditioning:
    """The conditioning of ``terms``, (prompt id, dose or weight) pairs, from
    the baseline's and the word variants' it names (``words``, by prompt
    id): one term is that prompt at its dose (:func:`dosed`, exact at dose
    1), several a mixture of their directions (:func:`mixture`)."""
    if len(terms) == 1:
        ((prompt_id, dose),) = terms
        return dosed(baseline, words[prompt_id], dose)
    return mixture(baseline, [words[prompt_id] for prompt_id, _ in terms], [weight for _, weight in terms])


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
METHOD_SOFT_TOKENS = "soft tokens"


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


def soft_tokens_request(baseline: GenerationInput, tokens: Sequence[Sequence[float]]) -> dict[str, Any]:
    """What a condition of learnable tokens depends on, as plain values: the
    baseline's texts and the tokens' embeddings (n rows of D values), which
    :func:`condition_embeddings` appends to the prompt (the search's
    ``tokens`` space, :mod:`promptsweep.search.tokens`)."""
    return {
        "method": METHOD_SOFT_TOKENS,
        "baseline": {"prompt": baseline.prompt, "negative_prompt": baseline.negative_prompt},
        "tokens": [[float(value) for value in row] for row in tokens],
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
    encode: ConditionEncoder,
    texts: GenerationInput,
    request: Mapping[str, Any] | None,
    encode_tokens: Callable[[GenerationInput, Any], Conditioning] | None = None,
) -> ConditionEmbeddings:
    """The conditioning of one condition from its generation request's parts,
    with ``encode`` the model family's (``functools.partial(family.encode, pipeline)``)
    and ``encode_tokens`` its ``soft_prompt_conditioning`` where it has one.

    * ``request`` None: the condition's texts, method "compel" when either
      has weights (:func:`has_weights`), else "text" (no norms recorded);
    * an :func:`embedding_request`: method "dose" (:func:`dosed`) or
      "mixture" (:func:`mixture`), from the baseline's and word variants'
      conditionings;
    * a :func:`soft_tokens_request`: method "soft tokens", the baseline's
      texts with the tokens appended by ``encode_tokens``.
    """
    if request is not None and request["method"] == METHOD_SOFT_TOKENS:
        import torch

        if encode_tokens is None:
            raise ValueError("this model family cannot hold learnable tokens in its prompt")
        with torch.no_grad():
            conditioning = encode_tokens(GenerationInput(**request["baseline"]), torch.tensor(request["tokens"]))
        return ConditionEmbeddings(conditioning, METHOD_SOFT_TOKENS, None, conditioning.norms())
    if request is None:
        conditioning = encode(texts)
        if not (has_weights(texts.prompt) or has_weights(texts.negative_prompt)):
            return ConditionEmbeddings(conditioning, METHOD_TEXT, None, {})
        return ConditionEmbeddings(conditioning, METHOD_COMPEL, None, conditioning.norms())
    baseline = encode(GenerationInput(**request["baseline"]))
    words = {prompt_id: encode(GenerationInput(**word)) for prompt_id, word in request["words"].items()}
    terms = tuple((prompt_id, float(dose)) for prompt_id, dose in request["terms"])
    conditioning = terms_conditioning(terms, baseline, words)
    if len(terms) == 1:
        (prompt_id, dose), = terms
        return ConditionEmbeddings(conditioning, METHOD_DOSE, dose, embedding_norms(baseline, words[prompt_id], dose))
    shift = (conditioning - baseline).norm()
    return ConditionEmbeddings(conditioning, METHOD_MIXTURE, None, {**conditioning.norms(), "shift_norm": shift})


# --- The study's plan ---------------------------------------------------------------


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
        from promptsweep.search import dose_grid

        search = dose_grid.grid_search_plan(search_settings, prompt_ids, prompt_kinds, doses, n_images, per_image_metrics)
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


@dataclass(frozen=True)
class Tolerances:
    """How much a candidate may lower fidelity and prompt agreement on
    average (mean over images of the paired drop) and still be chosen."""

    edge_f1: float
    clip_score: float
