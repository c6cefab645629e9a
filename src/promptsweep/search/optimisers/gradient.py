"""Gradient ascent (or descent) on the objective, with torch's Adam, from
the baseline (the origin of the space), each step projected back into the
bounds.

A trial of this optimiser measures its point's objective and also its
gradient (the search job backpropagates through the last denoising steps:
``Family.differentiable_images``), which it keeps with the trial. The next
point is the last one moved by one Adam step (Kingma and Ba 2015). Optuna
asks the sampler for each point; the sampler keeps no state of its own and
replays Adam over the gradients of the study's finished trials, in order, so
a search resumed from a journal takes the very step it would have taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import math

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import OPTIMISERS_KEY, Bounds, check_settings
from promptsweep.search.optimisers.base import GRADIENT, OUTCOME_ATTR, Sampling, distributions, parameter_names

NAME = "gradient"
LEARNING_RATE = "learning_rate"
BACKPROP_STEPS = "backprop_steps"
DEFAULT_BACKPROP_STEPS = 1
LEARNING_RATE_SHARE = 0.1
"""The default step size as a share of the narrowest range of the bounds: Adam's
steps are about the learning rate long whatever the gradient's scale."""


class GradientSampler(BaseSampler):
    """Proposes the next point of an Adam ascent from the gradients that the
    study's finished trials recorded (see the module's docstring)."""

    def __init__(self, bounds: Bounds, learning_rate: float) -> None:
        self._bounds = bounds
        self._learning_rate = learning_rate
        self._distributions = distributions(bounds)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        finished = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        names = parameter_names(len(self._bounds))
        history = []
        for finished_trial in finished:
            gradient = finished_trial.user_attrs[OUTCOME_ATTR].get(GRADIENT)
            if gradient is None:
                raise ValueError(
                    f"trial #{finished_trial.number} of the gradient search {study.study_name!r} recorded no "
                    "gradient; delete its journal to start the search anew"
                )
            history.append((tuple(finished_trial.params[name] for name in names), gradient))
        point = next_point(
            self._bounds,
            self._learning_rate,
            history,
            maximise=study.direction == optuna.study.StudyDirection.MAXIMIZE,
        )
        return dict(zip(names, point))

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # Every parameter is in the relative search space; Optuna asks here
        # only for a parameter outside it, which this search does not have.
        raise ValueError(f"the gradient optimiser does not sample {param_name!r} on its own")


def start(bounds: Bounds) -> tuple[float, ...]:
    """The first point: the baseline (weight 0 on every direction), or the
    bound nearest it where 0 is outside the bounds."""
    return tuple(min(max(0.0, low), high) for low, high in bounds)


def next_point(
    bounds: Bounds,
    learning_rate: float,
    history: Sequence[tuple[Sequence[float], Sequence[float]]],
    maximise: bool,
) -> tuple[float, ...]:
    """The point after ``history``, (point, gradient) pairs of the trials so
    far in order: Adam's state rebuilt by stepping from each recorded point
    with its gradient, every step clipped into ``bounds``; :func:`start` when
    there is no history yet. A gradient component that is not finite (an
    image that overflowed, e.g. in fp16) counts as 0, so that momentum still
    moves the point and one bad trial does not stop the search."""
    import torch

    weights = torch.tensor(start(bounds), dtype=torch.float64, requires_grad=True)
    lows = torch.tensor([low for low, _ in bounds], dtype=torch.float64)
    highs = torch.tensor([high for _, high in bounds], dtype=torch.float64)
    adam = torch.optim.Adam([weights], lr=learning_rate, maximize=maximise)
    for point, gradient in history:
        with torch.no_grad():
            weights.copy_(torch.tensor(point, dtype=torch.float64))
        weights.grad = torch.tensor([value if math.isfinite(value) else 0.0 for value in gradient], dtype=torch.float64)
        adam.step()
        with torch.no_grad():
            weights.clamp_(lows, highs)
    return tuple(float(value) for value in weights.detach())


def backprop_steps(settings: Mapping[str, Any]) -> int:
    """The denoising steps a trial backpropagates through (setting ``backprop_steps``)."""
    return int(settings.get(BACKPROP_STEPS, DEFAULT_BACKPROP_STEPS))


def sampling(bounds: Bounds, seed: int, settings: Mapping[str, Any]) -> Sampling:
    """Settings: ``learning_rate``, Adam's step size, about how far one step
    moves each weight (by default a tenth of the narrowest range); ``backprop_steps``,
    the last denoising steps gradients flow through (k of DRaFT-K; default
    1, at most the generation's steps). The seed is unused: the ascent is
    deterministic."""
    check_settings(NAME, settings, (LEARNING_RATE, BACKPROP_STEPS))
    rate = settings.get(LEARNING_RATE, LEARNING_RATE_SHARE * min(high - low for low, high in bounds))
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise EmphasisConfigError(f"{OPTIMISERS_KEY}.{NAME}.{LEARNING_RATE}: {rate!r} is not a positive number")
    steps = settings.get(BACKPROP_STEPS, DEFAULT_BACKPROP_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EmphasisConfigError(f"{OPTIMISERS_KEY}.{NAME}.{BACKPROP_STEPS}: {steps!r} is not an integer of at least 1")
    return Sampling(GradientSampler(bounds, float(rate)))
