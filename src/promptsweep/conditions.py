"""Condition kinds: what a generation varies, declared in one place.

A *condition* is one (image, additional prompt) generation: the ``baseline``
(the image's own one-word prompt alone) or an additional prompt of a kind. Each
kind says how the image's prompt and the additional text become what the
pipeline receives, and where the kind goes in tables and plots. Following
ControlNet's demo, a positive prompt is appended to the image prompt
(``prompt + ', ' + a_prompt``) and a negative prompt becomes the negative
branch of classifier-free guidance.

Adding a kind means one :class:`ConditionKind` in :data:`KINDS`; the prompt
sheet's check, the generation request, the tables and the plots read it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BASELINE = "baseline"


@dataclass(frozen=True)
class GenerationInput:
    """What the pipeline receives for one condition: its two texts."""

    prompt: str
    negative_prompt: str


@dataclass(frozen=True)
class ConditionKind:
    name: str
    description: str
    """How the additional text is used, as the prompt sheet's error shows it."""
    color: str
    """Matplotlib colour of the kind in every plot."""
    make_input: Callable[[str, str], GenerationInput]
    """(image prompt, additional text) -> what the pipeline receives."""
    in_sheet: bool = True
    """Whether rows of the prompt sheet may have this kind."""


KINDS: tuple[ConditionKind, ...] = (
    ConditionKind(
        name=BASELINE,
        description="the image prompt alone",
        color="0.3",
        make_input=lambda image_prompt, _text: GenerationInput(image_prompt, ""),
        in_sheet=False,
    ),
    ConditionKind(
        name="positive",
        description="appended to the image prompt",
        color="tab:blue",
        make_input=lambda image_prompt, text: GenerationInput(f"{image_prompt}, {text}", ""),
    ),
    ConditionKind(
        name="negative",
        description="the negative prompt",
        color="tab:red",
        make_input=lambda image_prompt, text: GenerationInput(image_prompt, text),
    ),
)
"""Every kind, in the order tables and plots show them."""

KIND_BY_NAME = {kind.name: kind for kind in KINDS}
SHEET_KINDS = tuple(kind.name for kind in KINDS if kind.in_sheet)


def kind_rank(name: str) -> int:
    """Position of a kind in :data:`KINDS`, for sorting tables and plots."""
    return [kind.name for kind in KINDS].index(name)


def generation_input(kind: str, image_prompt: str, text: str = "") -> GenerationInput:
    """What the pipeline receives for an image prompt and an additional text of ``kind``."""
    return KIND_BY_NAME[kind].make_input(image_prompt, text)
