"""The optimisers, one module each, and their registry.

Every optimiser is built from its bounds (one ``(low, high)`` per
dimension), a seed and its settings (the mapping under its own name in the
config, ``emphasis.search.optimisers.<name>``), and runs as an Optuna
sampler behind the :class:`Optimiser` ask/tell protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import OPTIMISERS_KEY, Bounds, Direction
from promptsweep.search.optimisers import cma_es, gradient, grid, random_search
from promptsweep.search.optimisers.base import (
    OUTCOME_ATTR,
    Optimiser,
    Sampling,
    StudyOptimiser,
    Trial,
    distributions,
    parameter_names,
)

__all__ = [
    "OPTIMISERS",
    "OUTCOME_ATTR",
    "Optimiser",
    "Sampling",
    "StudyOptimiser",
    "Trial",
    "check_optimisers",
    "distributions",
    "in_memory",
    "parameter_names",
    "sampling",
]

SamplingFactory = Callable[[Bounds, int, Mapping[str, Any]], Sampling]

OPTIMISERS: Mapping[str, SamplingFactory] = {
    grid.NAME: grid.sampling,
    random_search.NAME: random_search.sampling,
    cma_es.NAME: cma_es.sampling,
    gradient.NAME: gradient.sampling,
}


def sampling(name: str, bounds: Bounds, seed: int, settings: Mapping[str, Any] | None = None) -> Sampling:
    """The registered optimiser ``name`` as Optuna runs it; an unknown name
    is an error that lists the known ones."""
    if name not in OPTIMISERS:
        raise EmphasisConfigError(
            f"{OPTIMISERS_KEY}: unknown optimiser {name!r}; the optimisers are: {', '.join(OPTIMISERS)}"
        )
    return OPTIMISERS[name](bounds, seed, settings or {})


def in_memory(
    name: str, bounds: Bounds, seed: int, settings: Mapping[str, Any] | None = None, direction: Direction = "maximize"
) -> StudyOptimiser:
    """Optimiser ``name`` on a study kept in memory: for comparisons and
    tests, which need no journal."""
    study = optuna.create_study(sampler=sampling(name, bounds, seed, settings).sampler, direction=direction)
    return StudyOptimiser(study, bounds)


def check_optimisers(raw: object, bounds: Bounds) -> dict[str, Mapping[str, Any]]:
    """The config's optimisers, each name with its settings (``null`` for
    none), checked by building each one."""
    if not isinstance(raw, Mapping) or not raw:
        raise EmphasisConfigError(
            f"{OPTIMISERS_KEY}: {raw!r} is not a mapping of optimiser names to their settings; "
            f"e.g. {{random: null, cmaes: {{popsize: 8}}}}"
        )
    checked: dict[str, Mapping[str, Any]] = {}
    for name, settings in raw.items():
        if settings is not None and not isinstance(settings, Mapping):
            raise EmphasisConfigError(f"{OPTIMISERS_KEY}.{name}: {settings!r} is not a mapping of settings")
        sampling(name, bounds, 0, settings)
        checked[name] = settings or {}
    return checked
