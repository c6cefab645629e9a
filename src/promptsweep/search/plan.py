"""The optimisation search's plan: the ``emphasis.search`` config with an
``optimisers`` key, checked before any job, and what it costs.

Without ``optimisers`` the search is the fixed grid of doses and mixtures of
:func:`promptsweep.emphasis.emphasis_plan`; with it, each optimiser runs as
one loop job (propose, generate, score, tell) on the selection images and
seeds, and its best point is judged on the evaluation images and seeds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptsweep import registry
from promptsweep.emphasis import (
    CLIP_SCORE,
    EDGE_F1,
    OBJECTIVE_KEY,
    EmphasisConfigError,
    Tolerances,
    check_search_seeds,
)
from promptsweep.search import optimisers as optimiser_registry
from promptsweep.search import spaces
from promptsweep.search import tokens as soft_tokens
from promptsweep.search.config import (
    EVALUATION_IMAGES_KEY,
    OPTIMISERS_KEY,
    SELECTION_IMAGES_KEY,
    Direction,
    check_budget,
    check_differentiable,
    check_image_split,
)

WORDS = "words"
"""The best word prompt's search: every word prompt's point, chosen among on
the selection split as an optimiser's trials are."""
BEST_WORD = "best-word"
"""The condition id of the best word prompt on the evaluation split."""
DEFAULT_WEIGHTS = (-2.0, 2.0)
"""Symmetric about 0, so that CMA-ES, which starts at the bounds' centre,
starts at the baseline: from the centre of [-1, 3] (every prompt at weight 1
at once) all of its first 13 trials on the toy model broke the edge-F1
tolerance, which left it nothing to adapt to."""
DEFAULT_SEED = 0


@dataclass(frozen=True)
class OptimisationSearch:
    """The search's settings, checked."""

    optimisers: dict[str, Mapping[str, Any]]
    """Each optimiser's name and its settings, in config order."""
    space_name: str
    space: spaces.DirectionsSpace
    """The word prompts' directions: the optimisers' space unless ``tokens``
    is set, and the space the best word prompt is chosen in."""
    objective: str
    direction: Direction
    tolerances: Tolerances
    selection_images: tuple[str, ...]
    evaluation_images: tuple[str, ...]
    selection_seeds: tuple[int, ...]
    evaluation_seeds: tuple[int, ...]
    budget: int
    """Generations each optimiser may spend on the selection split."""
    trials: int
    """Trials each optimiser runs: the budget over a trial's generations."""
    seed: int
    tokens: soft_tokens.TokensSpace | None = None
    """The soft prompt the optimisers search instead of the directions (``space: tokens``)."""

    @property
    def generations_per_trial(self) -> int:
        return len(self.selection_images) * len(self.selection_seeds)

    @property
    def searches(self) -> list[str]:
        """Every loop job's name: each optimiser's, then the word prompts'."""
        return [*self.optimisers, WORDS]

    @property
    def conditions(self) -> dict[str, str]:
        """Each search's condition on the evaluation split."""
        return {**{name: search_condition(name) for name in self.optimisers}, WORDS: BEST_WORD}

    @property
    def word_conditions(self) -> dict[str, str]:
        """In the tokens space, each optimiser's condition of its best soft
        prompt projected to words (PEZ), evaluated beside the soft prompt itself."""
        if self.tokens is None:
            return {}
        return {name: word_condition(name) for name in self.optimisers}

    @property
    def evaluated_conditions(self) -> list[str]:
        """The conditions generated on the evaluation split besides the baseline."""
        return [*self.conditions.values(), *self.word_conditions.values()]

    def cost(self) -> dict[str, int]:
        """Generations the search makes: each optimiser's trials and the
        word prompts' on the selection split (each job also generates the
        baseline once), and every evaluated condition on the evaluation split."""
        per_trial = self.generations_per_trial
        selection = len(self.optimisers) * self.trials * per_trial + len(self.space.prompt_ids) * per_trial
        selection += len(self.searches) * per_trial
        evaluation = (1 + len(self.evaluated_conditions)) * len(self.evaluation_images) * len(self.evaluation_seeds)
        return {"selection": selection, "evaluation": evaluation, "total": selection + evaluation}


def search_condition(optimiser: str) -> str:
    """The condition id of an optimiser's best point on the evaluation split."""
    return f"search-{optimiser}"


def word_condition(optimiser: str) -> str:
    """The condition id of the words a tokens search's best soft prompt projects to."""
    return f"{search_condition(optimiser)}-words"


def is_optimisation_search(settings: Mapping[str, Any] | None) -> bool:
    """Whether ``emphasis.search`` asks for optimisers (else it is the grid)."""
    return bool(settings) and "optimisers" in settings


def _named_optimisers(raw: object) -> object:
    """A list of names is a mapping of each name to no settings."""
    if isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        return dict.fromkeys(raw)
    return raw


def optimisation_search(
    settings: Mapping[str, Any], prompt_ids: Sequence[str], image_ids: Collection[str]
) -> OptimisationSearch:
    """Check ``emphasis.search`` against the prompt sheet (``prompt_ids``,
    the directions' prompts) and the image sheet, and lay out the search.
    Raises :class:`EmphasisConfigError` naming the key to change."""
    space_name = settings.get("space", spaces.SPACES[0])
    spaces.check_space_name(space_name)
    space = spaces.directions_space(prompt_ids, settings.get("weights", DEFAULT_WEIGHTS))
    raw_optimisers = _named_optimisers(settings["optimisers"])
    if isinstance(raw_optimisers, Mapping) and WORDS in raw_optimisers:
        raise EmphasisConfigError(f"{OPTIMISERS_KEY}: {WORDS!r} names the word prompts' own search; remove it")
    objective = settings["objective"]
    per_image = [metric.name for metric in registry.metrics_of("image")]
    if objective not in per_image:
        raise EmphasisConfigError(f"{OBJECTIVE_KEY}: {objective!r} is not a registered per-image metric; use one of {per_image}")
    if isinstance(raw_optimisers, Mapping):
        check_differentiable(objective, list(raw_optimisers))
    optimisers = optimiser_registry.check_optimisers(raw_optimisers, space.bounds)
    tokens = soft_tokens.tokens_space(settings, space_name, list(optimisers))
    direction: Direction = "maximize" if registry.METRICS[objective].direction == "higher is better" else "minimize"

    selection_seeds = tuple(int(seed) for seed in settings["selection_seeds"])
    evaluation_seeds = tuple(int(seed) for seed in settings["evaluation_seeds"])
    check_search_seeds(selection_seeds, evaluation_seeds)
    for key in (SELECTION_IMAGES_KEY, EVALUATION_IMAGES_KEY):
        if key.rsplit(".", 1)[1] not in settings:
            raise EmphasisConfigError(f"{key}: missing; the optimisers need disjoint selection and evaluation images")
    selection_images = tuple(settings["selection_images"])
    evaluation_images = tuple(settings["evaluation_images"])
    check_image_split(selection_images, evaluation_images, image_ids)

    budget = int(settings["budget"])
    trials = check_budget(budget, len(selection_images), len(selection_seeds))
    tolerances = settings.get("tolerances") or {}
    return OptimisationSearch(
        optimisers=optimisers,
        space_name=space_name,
        space=space,
        objective=objective,
        direction=direction,
        tolerances=Tolerances(float(tolerances.get(EDGE_F1, 0.05)), float(tolerances.get(CLIP_SCORE, 0.01))),
        selection_images=selection_images,
        evaluation_images=evaluation_images,
        selection_seeds=selection_seeds,
        evaluation_seeds=evaluation_seeds,
        budget=budget,
        trials=trials,
        seed=int(settings.get("seed", DEFAULT_SEED)),
        tokens=tokens,
    )


def describe(search: OptimisationSearch) -> str:
    """The line the workflow logs before the search starts: its budget in generations."""
    cost = search.cost()
    extent = (
        f"{search.tokens.count} soft tokens" if search.tokens is not None else f"{len(search.space.prompt_ids)} directions"
    )
    return (
        f"{OPTIMISERS_KEY}: {', '.join(search.optimisers)} in the {search.space_name} space "
        f"({extent}), {search.trials} trials each of "
        f"{len(search.selection_images)} images x {len(search.selection_seeds)} seeds "
        f"({search.budget} generations budgeted for each); objective {search.objective} ({search.direction}); "
        f"{cost['total']} generations in all ({cost['selection']} on the selection split "
        f"{list(search.selection_seeds)}, {cost['evaluation']} on the evaluation split {list(search.evaluation_seeds)})"
    )

