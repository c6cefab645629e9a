"""The ``tokens`` space: a soft additional prompt, searched by gradient with
PEZ's projection onto the vocabulary.

A point is ``n`` learnable token embeddings appended to each image's prompt
(``"p, <t1 ... tn>"``) and fed through the text encoder, as the positive
prompt's additional words are. Following PEZ (Wen et al. 2023, "Hard Prompts
Made Easy", NeurIPS), every trial generates with the *projection* of the
continuous embeddings, each replaced by its nearest vocabulary token
(cosine similarity), and the gradient at the projection updates the
continuous embeddings. The search therefore also yields words a person can
read and reuse; both the continuous embeddings and their words are
evaluated.

The space's coordinates are the displacement from the starting tokens, drawn
from the vocabulary with the search's seed: the origin is where the search
starts, as the baseline is for the ``directions`` space. Each coordinate is
bounded by :data:`SPREAD` standard deviations of the vocabulary's values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.search.config import OPTIMISERS_KEY, SPACE_KEY, Bounds

if TYPE_CHECKING:
    import torch

NAME = "tokens"
TOKENS_KEY = "emphasis.search.tokens"
DEFAULT_TOKENS = 4
MAX_TOKENS = 16
SPREAD = 5.0
"""How far a coordinate may move from the start, in standard deviations of
the vocabulary's embedding values; the gradient optimiser's default step is
a tenth of the range, one standard deviation."""


@dataclass(frozen=True)
class TokensSpace:
    """``count`` soft tokens; their width is the loaded text encoder's."""

    count: int


def tokens_space(settings: Mapping[str, Any], space_name: str, optimisers: Sequence[str]) -> TokensSpace | None:
    """The tokens space of ``emphasis.search`` when ``space`` is ``tokens``,
    checked: 1 to 16 tokens, and the gradient optimiser alone (PEZ follows
    the gradient; the other optimisers would search thousands of
    coordinates blind). None for another space, where ``tokens`` is refused."""
    from promptsweep.search.optimisers import gradient

    if space_name != NAME:
        if "tokens" in settings:
            raise EmphasisConfigError(f"{TOKENS_KEY}: only the {NAME} space has tokens; remove it, or set {SPACE_KEY} to {NAME}")
        return None
    others = [name for name in optimisers if name != gradient.NAME]
    if others:
        raise EmphasisConfigError(
            f"{OPTIMISERS_KEY}: the {NAME} space is searched by {gradient.NAME} alone (PEZ), not by "
            f"{', '.join(others)}; remove them, or set {SPACE_KEY} to directions"
        )
    count = settings.get("tokens", DEFAULT_TOKENS)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TOKENS:
        raise EmphasisConfigError(f"{TOKENS_KEY}: {count!r} is not a number of tokens from 1 to {MAX_TOKENS}")
    return TokensSpace(count)


def nearest_tokens(embeddings: torch.Tensor, vocabulary: torch.Tensor) -> torch.Tensor:
    """The row of ``vocabulary`` (V, D) nearest each row of ``embeddings``
    (n, D) by cosine similarity, as PEZ projects: their indices, (n,)."""
    import torch

    with torch.no_grad():
        similarity = torch.nn.functional.normalize(embeddings.float(), dim=-1) @ torch.nn.functional.normalize(
            vocabulary.float(), dim=-1
        ).T
    return similarity.argmax(dim=-1)


@dataclass(frozen=True)
class SoftPrompt:
    """The tokens space over a loaded vocabulary: ``embeddings`` (V, D) of
    the tokens a prompt may hold (special tokens left out), their ids in the
    tokenizer (``token_ids``), and the ``start`` rows (indices into the
    vocabulary) of the search's origin."""

    token_ids: torch.Tensor
    embeddings: torch.Tensor
    start: tuple[int, ...]

    @property
    def width(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def dimension(self) -> int:
        return len(self.start) * self.width

    def bounds(self) -> Bounds:
        spread = SPREAD * float(self.embeddings.float().std())
        return ((-spread, spread),) * self.dimension

    def continuous(self, point: Sequence[float]) -> torch.Tensor:
        """The soft tokens of ``point``, (n, D): the start's embeddings moved by it."""
        import torch

        moved = torch.as_tensor(np.asarray(point, dtype=np.float32)).view(len(self.start), self.width)
        return self.embeddings[list(self.start)].float() + moved

    def projected(self, point: Sequence[float]) -> tuple[list[int], torch.Tensor]:
        """The tokenizer ids of the tokens nearest the soft tokens of
        ``point``, and their embeddings (n, D): the prompt PEZ generates with."""
        rows = nearest_tokens(self.continuous(point), self.embeddings)
        return [int(self.token_ids[row]) for row in rows], self.embeddings[rows].float()


def soft_prompt(token_ids: torch.Tensor, embeddings: torch.Tensor, count: int, seed: int) -> SoftPrompt:
    """The tokens space over a vocabulary, starting at ``count`` tokens drawn
    at random (with ``seed``), as PEZ starts."""
    rows = np.random.default_rng(seed).choice(len(token_ids), size=count, replace=False)
    return SoftPrompt(token_ids, embeddings, tuple(int(row) for row in rows))
