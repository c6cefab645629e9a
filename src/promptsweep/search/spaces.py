"""The spaces a search moves in: what a point is, and the conditioning it stands for.

``directions``: a point is one weight per prompt of the study, and its
conditioning is the baseline's plus each prompt's direction times its
weight, in every tensor of the family's conditioning
(:func:`promptsweep.emphasis.mixture`). A positive prompt's direction is
``E("p, a") - E(p)`` (the condition branch), a negative prompt's
``E(n) - E("")`` (the unconditional branch), so both kinds mix in one point.
The word prompt ``k`` is the point with weight 1 at ``k`` and 0 elsewhere;
the baseline is the origin. The best word prompt is chosen in this space
whatever space the optimisers search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptsweep import emphasis
from promptsweep.emphasis import EmphasisConfigError
from promptsweep.families import Conditioning
from promptsweep.search.config import SPACE_KEY, Bounds, check_weight_range

SPACES = ("directions", "tokens")
"""The spaces a search can move in; ``tokens`` is :mod:`promptsweep.search.tokens`'s."""


@dataclass(frozen=True)
class DirectionsSpace:
    """Weights over ``prompt_ids``' directions, each within its bounds."""

    prompt_ids: tuple[str, ...]
    bounds: Bounds

    def conditioning(
        self, baseline: Conditioning, words: Mapping[str, Conditioning], point: Sequence[float]
    ) -> Conditioning:
        """The conditioning of ``point``, from the baseline's and each word
        prompt's conditioning (``words``, by prompt id)."""
        if len(point) != len(self.prompt_ids):
            raise ValueError(f"a point of this space has {len(self.prompt_ids)} weights, not {len(point)}")
        return emphasis.mixture(baseline, [words[prompt_id] for prompt_id in self.prompt_ids], point)

    def word_point(self, prompt_id: str) -> tuple[float, ...]:
        """The point that is the word prompt ``prompt_id``: weight 1 on its direction."""
        return tuple(1.0 if other == prompt_id else 0.0 for other in self.prompt_ids)


def directions_space(prompt_ids: Sequence[str], weights: Sequence[float]) -> DirectionsSpace:
    """One dimension per prompt, each weight in ``weights``, ``[low, high]``."""
    if not prompt_ids:
        raise EmphasisConfigError(f"{SPACE_KEY}: directions needs at least one prompt in the prompt sheet")
    return DirectionsSpace(tuple(prompt_ids), (check_weight_range(weights),) * len(prompt_ids))


def check_space_name(name: str) -> None:
    """Refuse a space that does not exist, naming the key and the known ones."""
    if name not in SPACES:
        raise EmphasisConfigError(f"{SPACE_KEY}: unknown space {name!r}; choose one of {', '.join(SPACES)}")
