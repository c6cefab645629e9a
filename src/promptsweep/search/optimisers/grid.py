"""The fixed grid: points given up front, each tried once, in the order
given; the search the study ran before it had optimisers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import OPTIMISERS_KEY, Bounds, check_settings
from promptsweep.search.optimisers.base import Sampling, distributions

NAME = "grid"
POINTS = "points"

Point = tuple[float, ...]


class PointsSampler(BaseSampler):
    """Proposes the first of its points that no trial of the study has.

    The points already tried are read from the study, not counted here, so
    the sampler holds no state to lose: a resumed search proposes the
    points its journal lacks, and an interrupted point, which the search
    retries itself, is never proposed twice."""

    def __init__(self, points: Sequence[Point], bounds: Bounds) -> None:
        self._points = tuple(points)
        self._distributions = distributions(bounds)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        names = tuple(self._distributions)
        tried = {
            tuple(other.params[name] for name in names)
            for other in study.get_trials(deepcopy=False)
            if all(name in other.params for name in names)
        }
        for point in self._points:
            if point not in tried:
                return dict(zip(names, point))
        raise RuntimeError(f"{NAME}: all {len(self._points)} points have been tried; ask for no more trials")

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # Every parameter is in the relative search space, so Optuna only
        # gets here for a parameter the search did not declare.
        raise RuntimeError(f"{NAME}: parameter {param_name!r} is not one of the grid's {tuple(self._distributions)}")


def sampling(bounds: Bounds, seed: int, settings: Mapping[str, Any]) -> Sampling:
    """A :class:`PointsSampler` over the setting ``points`` (a list of
    vectors, one number per dimension, within the bounds, none twice);
    ``seed`` is unused: the grid draws nothing. The grid proposes exactly
    its points, so its number of trials is theirs."""
    check_settings(NAME, settings, (POINTS,))
    points = _checked_points(settings.get(POINTS), bounds)
    return Sampling(PointsSampler(points, bounds), trials=len(points))


def _checked_points(raw: object, bounds: Bounds) -> tuple[Point, ...]:
    key = f"{OPTIMISERS_KEY}.{NAME}.{POINTS}"
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise EmphasisConfigError(f"{key}: {raw!r} is not a non-empty list of points; list [w0, w1, ...] vectors")
    points = []
    for index, point in enumerate(raw):
        if (
            not isinstance(point, Sequence)
            or len(point) != len(bounds)
            or not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in point)
        ):
            raise EmphasisConfigError(f"{key}[{index}]: {point!r} is not a vector of {len(bounds)} numbers")
        if not all(low <= value <= high for value, (low, high) in zip(point, bounds)):
            raise EmphasisConfigError(f"{key}[{index}]: {list(point)} lies outside the bounds {list(bounds)}")
        points.append(tuple(float(value) for value in point))
    repeated = sorted({point for point in points if points.count(point) > 1})
    if repeated:
        raise EmphasisConfigError(f"{key}: points {repeated} are listed more than once; list each point once")
    return tuple(points)
