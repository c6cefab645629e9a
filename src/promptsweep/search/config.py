"""The search's config values and their checks.

Every check raises :class:`promptsweep.emphasis.EmphasisConfigError` (a
``ValueError``) whose message starts with the config key to change, as the
rest of the ``emphasis`` config does, so the workflow reports them alike.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from promptsweep.emphasis import BUDGET_KEY, OBJECTIVE_KEY, EmphasisConfigError, check_disjoint_split

OPTIMISERS_KEY = "emphasis.search.optimisers"
SPACE_KEY = "emphasis.search.space"
WEIGHTS_KEY = "emphasis.search.weights"
SELECTION_IMAGES_KEY = "emphasis.search.selection_images"
EVALUATION_IMAGES_KEY = "emphasis.search.evaluation_images"

# (low, high) of each dimension of the searched space.
Bounds = tuple[tuple[float, float], ...]
# Whether a higher or a lower objective is better; the metric registry says which.
Direction = Literal["maximize", "minimize"]


def check_budget(budget_generations: int, n_images: int, n_seeds: int) -> int:
    """The number of trials ``budget_generations`` pays for.

    A trial generates every selection image with every selection seed, so
    it costs ``n_images * n_seeds`` generations; the budget is counted in
    generations because generations are what take the time."""
    per_trial = n_images * n_seeds
    if per_trial < 1:
        raise ValueError(f"a trial needs at least one image and one seed, not {n_images} x {n_seeds}")
    trials = budget_generations // per_trial
    if trials < 1:
        raise EmphasisConfigError(
            f"{BUDGET_KEY}: {budget_generations} generations do not pay for one trial, which costs "
            f"{n_images} images x {n_seeds} selection seeds = {per_trial} generations; raise "
            f"{BUDGET_KEY} to at least {per_trial}"
        )
    return trials


def check_weight_range(pair: Sequence[float]) -> tuple[float, float]:
    """Every direction's ``[low, high]`` weights: two finite numbers, ``low < high``."""
    if len(pair) != 2 or not all(_is_number(value) for value in pair):
        raise EmphasisConfigError(f"{WEIGHTS_KEY}: {list(pair)!r} is not a [low, high] pair of numbers")
    low, high = float(pair[0]), float(pair[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EmphasisConfigError(f"{WEIGHTS_KEY}: [{low}, {high}] is not a range; give finite bounds with low < high")
    return low, high


def check_settings(optimiser: str, settings: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse settings an optimiser does not read: a misspelt setting would
    otherwise be ignored without a word."""
    unknown = sorted(set(settings) - set(known))
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise EmphasisConfigError(
            f"{OPTIMISERS_KEY}.{optimiser}: unknown settings {unknown}; the settings of {optimiser} are: {listed}"
        )


def check_image_split(
    selection_images: Sequence[str], evaluation_images: Sequence[str], study_images: Collection[str]
) -> None:
    """Selection and evaluation images: every id an image of the study, and
    the two lists non-empty and disjoint (:func:`check_disjoint_split`), so
    that the candidate chosen on the selection images is judged on images its
    choice never saw."""
    for key, images in ((SELECTION_IMAGES_KEY, selection_images), (EVALUATION_IMAGES_KEY, evaluation_images)):
        unknown = sorted(set(images) - set(study_images))
        if unknown:
            raise EmphasisConfigError(f"{key}: {unknown} are not image ids of the image sheet; use ids it lists")
    check_disjoint_split(SELECTION_IMAGES_KEY, selection_images, EVALUATION_IMAGES_KEY, evaluation_images, "images")


def check_differentiable(objective: str, optimiser_names: Collection[str]) -> None:
    """Refuse the ``gradient`` optimiser for an objective whose metric has no
    differentiable torch form in the registry (e.g. BRISQUE), before any job."""
    from promptsweep import registry

    if "gradient" not in optimiser_names:
        return
    metric = registry.METRICS[objective]
    if metric.torch_form is None:
        differentiable = ", ".join(m.name for m in registry.metrics_of("image") if m.torch_form is not None)
        raise EmphasisConfigError(
            f"{OBJECTIVE_KEY}: {objective!r} has no differentiable form, so the gradient optimiser in "
            f"{OPTIMISERS_KEY} cannot follow it; choose one of {differentiable}, or drop gradient"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
