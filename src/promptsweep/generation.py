"""Generation of one control image's conditions and seeds: seeding, batched
pipeline calls, and checks.

Seeding follows diffusers' recommendation for reproducible batches: one CPU
``torch.Generator`` per seed (:func:`generators`). The model family draws the
initial latents on the CPU from those generators and hands them to the
pipeline, so that a baseline and each of its variants start from
bit-identical noise for the same seed on any device. What differs between
families (conditioning, latents, the pipeline call) is behind
:class:`promptsweep.families.Family`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from PIL import Image

from promptsweep.families import Conditioning, Family
from promptsweep.study import GenerationSettings

# unipc and ddim sample the UNet families' noise prediction; flow_match_euler
# is the native sampler of the rectified-flow families (sd3, flux), which take
# no other (a family says so when asked for one it cannot use).
SCHEDULERS = {
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "flow_match_euler": FlowMatchEulerDiscreteScheduler,
}
# Items per pipeline call when the setting is ``auto``: 16 on a GPU (32 UNet
# samples with guidance). On 2 busy CPU cores, batch 4 took the least time per
# image in every run, 1.5-2.3 s against 2.3-3.2 s one at a time (tiny model,
# 256 px, 20 steps: benchmarks/results/cpu_batch_size_2core.txt).
CUDA_BATCH_SIZE = 16
CPU_BATCH_SIZE = 4

T = TypeVar("T")


@dataclass(frozen=True)
class GeneratedImage:
    seed: int
    pixels: np.ndarray
    """HxWx3 uint8; black where the pipeline produced NaN."""
    problem: str | None
    """Why this image must not be scored (NaN, constant, flagged), or None."""


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per seed: CPU streams are the same on every machine."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Each seed's starting noise of ``shape`` (batch axis 1), float32 on the
    CPU, from one CPU generator per seed (:func:`generators`), concatenated:
    the same seed gives the same noise whatever device generates, and
    whichever other seeds share the call."""
    return torch.cat([torch.randn(shape, generator=generator, dtype=torch.float32) for generator in generators(list(seeds))])


def tokens_beyond_limit(tokenizer: Any, text: str) -> int:
    """How many of ``text``'s tokens CLIP ignores: its text encoder reads
    ``model_max_length`` (77) positions, start and end tokens included.
    Counted quietly: transformers' own warning about a long sequence would
    repeat what the caller says."""
    count = len(tokenizer(text, truncation=False, verbose=False)["input_ids"])
    return max(0, count - tokenizer.model_max_length)


def image_problem(image: np.ndarray) -> str | None:
    """Why a generated float image in [0, 1] is not a picture, or None.

    NaN comes from fp16 overflow in the VAE (diffusers#9239); a constant image
    is what the safety checker or a failed decode leaves. Either would silently
    drag an SSIM average.
    """
    if not np.isfinite(image).all():
        return "non-finite pixels (NaN/inf), typically fp16 overflow; try dtype float32 or bfloat16"
    if float(image.max() - image.min()) == 0.0:
        return "constant image (every pixel the same)"
    return None


def checked_problem(image: np.ndarray, flagged: bool) -> str | None:
    """Why an image the pipeline returned must not be scored, or None."""
    if flagged:
        return "flagged by the safety checker (replaced by a black image)"
    return image_problem(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8, rounding as diffusers does; NaN becomes 0."""
    return (np.nan_to_num(image, nan=0.0) * 255).round().clip(0, 255).astype(np.uint8)


def resolve_batch_size(setting: int | str, device: str) -> int:
    """Items per pipeline call: ``auto`` is what is fastest on the device."""
    if setting == "auto":
        return CUDA_BATCH_SIZE if device.startswith("cuda") else CPU_BATCH_SIZE
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"batch size must be a positive integer or 'auto', got {setting!r}")
    return setting


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in order, cut into lists of ``size``; the last may be shorter."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def padded(batch: list[T], size: int) -> list[T]:
    """``batch`` filled up to ``size`` by repeating its last item."""
    return batch + [batch[-1]] * (size - len(batch))


class Item(NamedTuple):
    """One image to generate: its condition's conditioning and its seed."""

    conditioning: Conditioning
    seed: int


def generate_batch(
    family: Family,
    pipeline: Any,
    control: Image.Image,
    batch: Sequence[Item],
    settings: GenerationSettings,
    batch_size: int,
) -> list[GeneratedImage]:
    """One pipeline call of exactly ``batch_size`` images: ``batch`` (at most
    ``batch_size`` items of one control image), filled up by repeating its
    last item; one result per item of ``batch``, in order.

    Each image gets its condition's conditioning, its seed's starting noise and
    its own generator, whatever else shares its call. The filler images are
    dropped: an image's pixels depend on the size of its call, not on the
    other images in it (checked on the CPU: the same bits beside other
    conditions or at another position, 1/255 apart at batch 1 against 4). So
    an image regenerated on its own is bit-identical to the one generated with
    its neighbours, and a compiled model sees one shape and is never
    recompiled.
    """
    if not 0 < len(batch) <= batch_size:
        raise ValueError(f"a batch holds 1 to {batch_size} items, got {len(batch)}")
    call = padded(list(batch), batch_size)
    output = family.generate(
        pipeline,
        control,
        Conditioning.batch([item.conditioning for item in call]),
        [item.seed for item in call],
        settings,
    )
    return [
        GeneratedImage(item.seed, to_uint8(image), checked_problem(image, is_flagged))
        for item, image, is_flagged in zip(batch, output.images, output.flagged)
    ]


def generate(
    family: Family,
    pipeline: Any,
    control: Image.Image,
    items: Sequence[Item],
    settings: GenerationSettings,
    batch_size: int,
) -> list[GeneratedImage]:
    """Generate ``items`` -- any conditions and seeds of one control image --
    in pipeline calls of exactly ``batch_size`` images
    (:func:`generate_batch`); one result per item, in order."""
    return [
        image
        for batch in chunks(items, batch_size)
        for image in generate_batch(family, pipeline, control, batch, settings, batch_size)
    ]
