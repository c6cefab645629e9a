"""The ask/tell protocol every optimiser follows, and its implementation on
an Optuna study.

Each built-in optimiser is an Optuna sampler: the search asks an Optuna
study for a trial, and the study's sampler (random, CMA-ES, the grid's
points) proposes its parameters. Optuna then keeps every trial in its
storage, so the same code runs in memory (tests, comparisons) and on a
journal file (the resumable search of :mod:`promptsweep.search.journal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler

from promptsweep.search.config import Bounds

# The user attribute holding what a trial measured (see StudyOptimiser.tell).
OUTCOME_ATTR = "outcome"
# The key of a gradient trial's gradient among what it measured.
GRADIENT = "gradient"


@dataclass(frozen=True)
class Trial:
    """One proposal: its number in the study and the point to generate with."""

    number: int
    params: tuple[float, ...]


class Optimiser(Protocol):
    """Proposes points and learns from their objectives.

    ``tell`` takes ``feasible=False`` for a point that broke a constraint
    (or has no objective); ``record`` holds values kept with the trial for
    the trials table (constraints, seconds), which the optimiser does not
    learn from."""

    def ask(self) -> Trial: ...

    def tell(
        self, trial: Trial, objective: float | None, feasible: bool, record: Mapping[str, Any] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Sampling:
    """An optimiser as Optuna runs it: its sampler, and how many trials it
    proposes (``None``: as many as asked; the grid: its points)."""

    sampler: BaseSampler
    trials: int | None = None


def parameter_names(dimension: int) -> tuple[str, ...]:
    """The parameters' names in the study and in the trials table: w0, w1, ..."""
    return tuple(f"w{index}" for index in range(dimension))


def distributions(bounds: Bounds) -> dict[str, FloatDistribution]:
    """Each parameter uniform between its bounds, in dimension order."""
    return {name: FloatDistribution(low, high) for name, (low, high) in zip(parameter_names(len(bounds)), bounds)}


class StudyOptimiser:
    """The :class:`Optimiser` protocol on an Optuna study.

    An infeasible trial (a broken constraint, or an objective that is None
    or NaN) is told to the study with the worst value there is (``-inf``
    when maximising, ``inf`` when minimising). CMA-ES ranks a generation's
    trials, so it then ranks every infeasible trial below every feasible
    one (the "death penalty"), which Optuna's ``CmaEsSampler`` needs
    because it ignores Optuna's constraints mechanism. Failing the trial
    instead would hide the infeasible region from CMA-ES, which would keep
    sampling it. The objective actually measured, whether the trial was
    feasible and ``record`` go to the trial's ``outcome`` user attribute,
    which the trials table reads."""

    def __init__(self, study: optuna.Study, bounds: Bounds) -> None:
        self._study = study
        self._distributions = distributions(bounds)
        self._asked: dict[int, optuna.Trial] = {}

    @property
    def study(self) -> optuna.Study:
        """The study holding every trial, for :func:`promptsweep.search.journal.trials_table`."""
        return self._study

    def ask(self) -> Trial:
        trial = self._study.ask(self._distributions)
        self._asked[trial.number] = trial
        return Trial(trial.number, tuple(float(trial.params[name]) for name in self._distributions))

    def tell(
        self, trial: Trial, objective: float | None, feasible: bool, record: Mapping[str, Any] | None = None
    ) -> None:
        asked = self._asked.pop(trial.number)
        measured = objective if objective is not None and math.isfinite(objective) else None
        feasible = feasible and measured is not None
        asked.set_user_attr(OUTCOME_ATTR, {"objective": measured, "feasible": feasible, **(record or {})})
        worst = -math.inf if self._study.direction == optuna.study.StudyDirection.MAXIMIZE else math.inf
        self._study.tell(asked, measured if feasible else worst)
