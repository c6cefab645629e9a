"""CMA-ES (covariance matrix adaptation evolution strategy) through Optuna's
``CmaEsSampler``, which runs the ``cmaes`` package.

The sampler keeps no state of its own between trials: after each
generation it stores the pickled CMA-ES state in a trial of the study and
rebuilds it from the study's finished trials on the next proposal, so a
search resumed from a journal continues the same evolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.samplers import CmaEsSampler

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import OPTIMISERS_KEY, Bounds, check_settings
from promptsweep.search.optimisers.base import Sampling

NAME = "cmaes"
POPSIZE = "popsize"


def sampling(bounds: Bounds, seed: int, settings: Mapping[str, Any]) -> Sampling:
    """``CmaEsSampler`` with ``seed``, starting at the centre of the bounds
    with a step of a sixth of the narrowest range (Optuna's defaults).

    Setting ``popsize``: trials per generation, at least 2; by default
    ``4 + floor(3 ln(dimension))``. A smaller population adapts sooner on a
    small budget, a larger one averages more noise."""
    check_settings(NAME, settings, (POPSIZE,))
    popsize = settings.get(POPSIZE)
    if popsize is not None and (not isinstance(popsize, int) or isinstance(popsize, bool) or popsize < 2):
        raise EmphasisConfigError(f"{OPTIMISERS_KEY}.{NAME}.{POPSIZE}: {popsize!r} is not an integer of at least 2")
    return Sampling(CmaEsSampler(seed=seed, popsize=popsize))
