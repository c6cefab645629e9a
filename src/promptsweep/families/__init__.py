"""Model families behind one seam.

Everything that differs between model families (SD 1.5, SDXL, SD 3.5, FLUX.1)
lives in one module per family, which implements :class:`Family` and
registers itself by name (:func:`register`). The rest of the package speaks
only of a family's :class:`Conditioning`, its starting latents and its
generation call, and never knows a tensor's shape.

A family module registers at import; :data:`FAMILY_MODULES` names the
built-in ones, imported the first time a family is looked up, so that
importing this package stays cheap (no torch, no diffusers).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from PIL import Image

    from promptsweep.conditions import GenerationInput
    from promptsweep.models import PipelineOptions, ResolvedWeights
    from promptsweep.study import GenerationSettings

FAMILY_KEY = "model.family"
DEFAULT_FAMILY = "sd15"
# Built-in families: name -> module that registers it when imported.
FAMILY_MODULES = {
    "sd15": "promptsweep.families.sd15",
    "sdxl": "promptsweep.families.sdxl",
    "sd3": "promptsweep.families.sd3",
    "flux": "promptsweep.families.flux",
}


class FamilyConfigError(ValueError):
    """A model family setting the user must change; the message names the config key."""


@dataclass(frozen=True)
class Conditioning(Mapping[str, "torch.Tensor"]):
    """Every tensor a pipeline call is conditioned on, by the name of the
    pipeline argument it goes to (``prompt_embeds``,
    ``negative_prompt_embeds``, ``pooled_prompt_embeds`` ...), each with a
    batch axis of one image.

    A value: its arithmetic applies to every tensor it holds, pooled ones
    included, and returns a new conditioning. Two conditionings combine only
    when they hold the same names.
    """

    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        """Same names and bit-identical tensors."""
        if not isinstance(other, Conditioning) or set(self) != set(other):
            return False
        return all(self[name].equal(other[name]) for name in self)

    def combine(self, other: Conditioning, operation: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Conditioning:
        """``operation`` applied to each pair of same-named tensors."""
        if set(self) != set(other):
            raise ValueError(f"conditionings hold different tensors: {sorted(self)} and {sorted(other)}")
        return Conditioning({name: operation(self[name], other[name]) for name in self})

    def map(self, operation: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        """``operation`` applied to each tensor."""
        return Conditioning({name: operation(tensor) for name, tensor in self.items()})

    def __add__(self, other: Conditioning) -> Conditioning:
        return self.combine(other, lambda a, b: a + b)

    def __sub__(self, other: Conditioning) -> Conditioning:
        return self.combine(other, lambda a, b: a - b)

    def scale(self, factor: float) -> Conditioning:
        """Every tensor times ``factor``."""
        return self.map(lambda tensor: factor * tensor)

    def lerp(self, end: Conditioning, weight: float) -> Conditioning:
        """``self + weight (end - self)`` in every tensor, by ``Tensor.lerp``:
        exact at both ends (weight 0 gives ``self``, 1 gives ``end``, bit for
        bit); any other real weight inter- or extrapolates."""
        return self.combine(end, lambda start, stop: start.lerp(stop, weight))

    def norms(self) -> dict[str, float]:
        """The Frobenius norm of each tensor, as ``<name>_norm``."""
        return {f"{name}_norm": _frobenius(tensor) for name, tensor in self.items()}

    def norm(self) -> float:
        """The Frobenius norm of all tensors together."""
        return math.sqrt(sum(_frobenius(tensor) ** 2 for tensor in self.values()))

    @classmethod
    def batch(cls, items: Sequence[Conditioning]) -> Conditioning:
        """The conditionings of one pipeline call's images, concatenated along
        the batch axis."""
        import torch

        return cls({name: torch.cat([item[name] for item in items]) for name in items[0]})


def _frobenius(tensor: torch.Tensor) -> float:
    # In float64: an fp16 sum of squares over 77 x 768 values overflows.
    return float(tensor.double().norm())


@dataclass(frozen=True)
class PipelineOutput:
    """What one generation call returns: float images in [0, 1], HxWx3, and
    which of them a safety checker replaced."""

    images: Sequence[Any]
    flagged: Sequence[bool]


@runtime_checkable
class Family(Protocol):
    """What a model family provides. One module per family implements it;
    nothing outside that module knows its tensors' shapes or its pipeline class."""

    name: str
    """The value of ``model.family`` that selects it."""
    pipeline_class: str
    """The diffusers pipeline class it generates with, for the records."""
    defaults: Mapping[str, Any]
    """Its ``generation:`` defaults (resolution, steps, guidance_scale, controlnet_scale, scheduler) that a config overrides."""
    reads_weights: bool
    """Whether compel can encode a text in its weight syntax for this family's text encoders."""

    def weight_patterns(self, role: str, safety_checker: bool) -> list[str]:
        """The files to fetch for ``role`` ("base" or "controlnet"), safetensors only."""
        ...

    def load_pipeline(self, base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions) -> Any:
        """The pipeline from local directories, safetensors only, on ``options.device``."""
        ...

    def encode(self, pipeline: Any, texts: GenerationInput) -> Conditioning:
        """A (prompt, negative prompt) as the conditioning of one image.
        Always with the negative branch, whatever the settings."""
        ...

    def initial_latents(self, pipeline: Any, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """The starting noise of each seed, float32 on the CPU, drawn from one
        CPU generator per seed; shape from the loaded model's config."""
        ...

    def generate(
        self,
        pipeline: Any,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> PipelineOutput:
        """One batched pipeline call: ``conditioning`` holds one row per seed."""
        ...

    def write_tiny_model(self, base_dir: Path, controlnet_dir: Path) -> None:
        """Build the family's tiny random model from a fixed seed, in its on-disk layout."""
        ...

    def controlnet_mismatch(self, base_dir: Path, controlnet_dir: Path) -> str | None:
        """Why the ControlNet does not fit the base, read from their config
        files (not their names); None when it fits."""
        ...

    def uses_negative_prompt(self, settings: GenerationSettings) -> bool:
        """Whether the negative prompt acts at all under ``settings``."""
        ...


@runtime_checkable
class DifferentiableFamily(Family, Protocol):
    """A family whose images a search can follow by gradient: it can run its
    denoising loop with gradients flowing back to the conditioning."""

    def differentiable_images(
        self,
        pipeline: Any,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
        backprop_steps: int,
    ) -> torch.Tensor:
        """The images :meth:`Family.generate` makes of ``conditioning`` (one
        image's, shared by every seed) with each of ``seeds``, in one call, as
        one float tensor (n, 3, H, W) of RGB in [0, 1] that gradients flow
        through to ``conditioning``'s tensors by the last ``backprop_steps``
        denoising steps and the decoder."""
        ...


def differentiable(family: Family) -> bool:
    """Whether ``family`` can generate with gradients (:class:`DifferentiableFamily`)."""
    return isinstance(family, DifferentiableFamily)


@runtime_checkable
class SoftPromptFamily(DifferentiableFamily, Protocol):
    """A family whose prompt can hold learnable token embeddings (the latent
    search's ``tokens`` space, :mod:`promptsweep.search.tokens`)."""

    def vocabulary(self, pipeline: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens a prompt may hold, special tokens left out: their ids
        (V,) and their input embeddings (V, D), float32 on the CPU."""
        ...

    def soft_prompt_conditioning(self, pipeline: Any, texts: GenerationInput, tokens: torch.Tensor) -> Conditioning:
        """The conditioning of ``texts`` with ``tokens`` (n, D) appended to
        the prompt as ``"prompt, <tokens>"``, gradients flowing back to them."""
        ...

    def token_words(self, pipeline: Any, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, as a person would write it in a prompt."""
        ...

    def token_ids(self, pipeline: Any, text: str) -> list[int]:
        """The tokens the prompt's tokenizer makes of ``text``, without start or end."""
        ...


def soft_prompts(family: Family) -> bool:
    """Whether ``family`` can take learnable tokens in its prompt (:class:`SoftPromptFamily`)."""
    return isinstance(family, SoftPromptFamily)


def refuse_weights(family: str, text: str) -> None:
    """Stop on a text in compel's weight syntax (``emphasis.has_weights``),
    for a family whose text encoders compel cannot encode: read as written,
    the weights would be words."""
    from promptsweep.emphasis import has_weights

    if has_weights(text):
        raise FamilyConfigError(
            f"text {text!r} uses compel's weight syntax, which compel cannot encode for the {family} family "
            "(its T5 text encoder); remove the weights from that row of the prompt sheet, or use the sd15 "
            "or sdxl family"
        )


def check_weighted_texts(family: Family, texts: Mapping[str, str]) -> None:
    """Before any job: stop on the first of ``texts`` (where it is, e.g. a
    sheet row, to its text) in a weight syntax that ``family`` cannot read."""
    if family.reads_weights:
        return
    for where, text in texts.items():
        try:
            refuse_weights(family.name, text)
        except FamilyConfigError as error:
            raise FamilyConfigError(f"{where}: {error}") from None


def with_scheduler(pipeline: Any, scheduler: str, accepted: Sequence[str], **options: Any) -> Any:
    """A pipeline of the same class sharing ``pipeline``'s loaded modules,
    with its own ``scheduler`` (a key of ``generation.SCHEDULERS``) built from
    the loaded scheduler's config; ``options`` are the class's other
    constructor arguments.

    Schedulers keep per-call state; a fresh one per pipeline call keeps
    concurrent jobs from sharing it. A scheduler not in ``accepted`` (the
    family's samplers) stops with an error that names the config key.
    """
    from promptsweep.generation import SCHEDULERS

    if scheduler not in accepted:
        raise FamilyConfigError(
            f"generation.scheduler: {scheduler!r} cannot sample {type(pipeline).__name__}; "
            f"set it to one of {', '.join(accepted)}"
        )
    components = dict(pipeline.components)
    components["scheduler"] = SCHEDULERS[scheduler].from_config(pipeline.scheduler.config)
    scheduled = type(pipeline)(**components, **options)
    scheduled.set_progress_bar_config(disable=True)
    return scheduled


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make ``family`` selectable by ``model.family: <family.name>``; its
    ``defaults`` must hold every ``generation:`` key a model defaults."""
    from promptsweep.study import MODEL_DEFAULT_KEYS

    missing = [key for key in MODEL_DEFAULT_KEYS if key not in family.defaults]
    if missing:
        raise TypeError(f"model family {family.name!r}: its defaults lack {', '.join(missing)}; add them to `defaults`")
    _FAMILIES[family.name] = family
    return family


def names() -> list[str]:
    """Every family that can be selected."""
    return sorted(set(_FAMILIES) | set(FAMILY_MODULES))


def get(name: str) -> Family:
    """The family called ``name``, importing its module if it is a built-in one."""
    if name not in _FAMILIES and name in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in _FAMILIES:
        raise FamilyConfigError(
            f"{FAMILY_KEY}: unknown model family {name!r}; set it to one of {', '.join(names())}"
        )
    return _FAMILIES[name]
