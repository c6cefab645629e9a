"""Random search: each point uniform within the bounds, the honest baseline
any other optimiser must beat at the same budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.samplers import RandomSampler

from promptsweep.search.config import Bounds, check_settings
from promptsweep.search.optimisers.base import Sampling

NAME = "random"


def sampling(bounds: Bounds, seed: int, settings: Mapping[str, Any]) -> Sampling:
    """Optuna's ``RandomSampler`` with ``seed``; it has no settings."""
    check_settings(NAME, settings, ())
    return Sampling(RandomSampler(seed=seed))
