"""Generation of one control image's conditions and seeds: seeding, batched
pipeline calls, and checks.

Seeding follows diffusers' recommendation for reproducible batches: one CPU
``torch.Generator`` per seed. The initial latents are drawn here, on the CPU,
from those generators and handed to the pipeline, so that a baseline and each
of its variants start from bit-identical noise for the same seed on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline, UniPCMultistepScheduler
from PIL import Image

from promptsweep.conditions import GenerationInput
from promptsweep.emphasis import EmbeddingPair
from promptsweep.study import GenerationSettings

SCHEDULERS = {"unipc": UniPCMultistepScheduler, "ddim": DDIMScheduler}
LATENT_CHANNELS = 4
VAE_SCALE = 8
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


def initial_latents(seeds: list[int], height: int, width: int) -> torch.Tensor:
    """The starting noise of each seed, float32 on the CPU, shape (n, 4, h/8, w/8).

    Depends on the seed and the image size only, never on the prompt, so every
    condition of an image starts from the same noise per seed.
    """
    shape = (1, LATENT_CHANNELS, height // VAE_SCALE, width // VAE_SCALE)
    return torch.cat(
        [torch.randn(shape, generator=generator, dtype=torch.float32) for generator in generators(seeds)]
    )


def with_scheduler(
    pipeline: StableDiffusionControlNetPipeline, scheduler: str
) -> StableDiffusionControlNetPipeline:
    """A pipeline sharing the loaded modules but with its own scheduler.

    Schedulers keep per-call state; a fresh one per pipeline call keeps
    concurrent jobs from sharing it.
    """
    scheduler_class = SCHEDULERS[scheduler]
    components = dict(pipeline.components)
    components["scheduler"] = scheduler_class.from_config(pipeline.scheduler.config)
    scheduled = StableDiffusionControlNetPipeline(
        **components, requires_safety_checker=pipeline.config.requires_safety_checker
    )
    scheduled.set_progress_bar_config(disable=True)
    return scheduled


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


def text_embeddings(pipeline: StableDiffusionControlNetPipeline, texts: GenerationInput) -> EmbeddingPair:
    """A condition's two texts encoded once, exactly as the pipeline encodes
    them for each call (``encode_prompt``; CLIP reads 77 positions, the rest
    is cut).

    Always with the negative prompt: the pipeline uses it only when guidance is
    on, so the embeddings do not depend on the settings.
    """
    with torch.no_grad():
        positive, negative = pipeline.encode_prompt(
            texts.prompt, pipeline._execution_device, 1, True, texts.negative_prompt
        )
    return EmbeddingPair(positive, negative)


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
    """One image to generate: its condition's embeddings and its seed."""

    embeddings: EmbeddingPair
    seed: int


def generate_batch(
    pipeline: StableDiffusionControlNetPipeline,
    control: Image.Image,
    batch: Sequence[Item],
    settings: GenerationSettings,
    batch_size: int,
) -> list[GeneratedImage]:
    """One pipeline call of exactly ``batch_size`` images: ``batch`` (at most
    ``batch_size`` items of one control image), filled up by repeating its
    last item; one result per item of ``batch``, in order.

    Each image gets its condition's embeddings, its seed's starting noise and
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
    scheduled = with_scheduler(pipeline, settings.scheduler)
    device = pipeline._execution_device
    dtype = pipeline.unet.dtype
    call = padded(list(batch), batch_size)
    seeds = [item.seed for item in call]
    output = scheduled(
        prompt_embeds=torch.cat([item.embeddings.prompt_embeds for item in call]).to(device=device, dtype=dtype),
        negative_prompt_embeds=torch.cat([item.embeddings.negative_prompt_embeds for item in call]).to(
            device=device, dtype=dtype
        ),
        image=control,
        height=control.height,
        width=control.width,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        controlnet_conditioning_scale=settings.controlnet_scale,
        guess_mode=settings.guess_mode,
        eta=settings.eta,
        generator=generators(seeds),
        latents=initial_latents(seeds, control.height, control.width).to(device=device, dtype=dtype),
        output_type="np",
    )
    flagged = output.nsfw_content_detected or [False] * len(call)
    return [
        GeneratedImage(item.seed, to_uint8(image), checked_problem(image, is_flagged))
        for item, image, is_flagged in zip(batch, output.images, flagged)
    ]


def generate(
    pipeline: StableDiffusionControlNetPipeline,
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
        for image in generate_batch(pipeline, control, batch, settings, batch_size)
    ]
