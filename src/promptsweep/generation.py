"""One (image, condition) generation: seeding, the pipeline call, and checks.

Seeding follows diffusers' recommendation for reproducible batches: one CPU
``torch.Generator`` per seed. The initial latents are drawn here, on the CPU,
from those generators and handed to the pipeline, so that a baseline and each
of its variants start from bit-identical noise for the same seed on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline, UniPCMultistepScheduler
from PIL import Image

from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings

if TYPE_CHECKING:
    from promptsweep.emphasis import EmbeddingPair

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

    Schedulers keep per-call state; a fresh one per job keeps concurrent jobs
    from sharing it.
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
    ``model_max_length`` (77) positions, start and end tokens included."""
    count = len(tokenizer(text, truncation=False)["input_ids"])
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


def generate(
    pipeline: StableDiffusionControlNetPipeline,
    control: Image.Image,
    inputs: GenerationInput | EmbeddingPair,
    seeds: list[int],
    settings: GenerationSettings,
    seeds_per_batch: int,
) -> list[GeneratedImage]:
    """Generate one image per seed for one (image, condition).

    ``inputs`` is the condition's two texts, which the pipeline encodes, or
    an :class:`promptsweep.emphasis.EmbeddingPair` computed beforehand (a
    dose, a mixture, a weighted text), passed as ``prompt_embeds`` and
    ``negative_prompt_embeds``. Seeds run in batches of ``seeds_per_batch``
    pipeline calls; each image's result does not depend on the batching (up
    to float rounding).
    """
    scheduled = with_scheduler(pipeline, settings.scheduler)
    device = pipeline._execution_device
    dtype = pipeline.unet.dtype
    results: list[GeneratedImage] = []
    for start in range(0, len(seeds), seeds_per_batch):
        batch = seeds[start : start + seeds_per_batch]
        latents = initial_latents(batch, control.height, control.width)
        if isinstance(inputs, GenerationInput):
            conditioning: dict[str, Any] = {
                "prompt": [inputs.prompt] * len(batch),
                "negative_prompt": [inputs.negative_prompt] * len(batch),
            }
        else:
            conditioning = {
                name: embeds.to(device=device, dtype=dtype)
                for name, embeds in inputs.pipeline_arguments(len(batch)).items()
            }
        output = scheduled(
            **conditioning,
            image=control,
            height=control.height,
            width=control.width,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            controlnet_conditioning_scale=settings.controlnet_scale,
            guess_mode=settings.guess_mode,
            eta=settings.eta,
            generator=generators(batch),
            latents=latents.to(device=device, dtype=dtype),
            output_type="np",
        )
        flagged = output.nsfw_content_detected or [False] * len(batch)
        for seed, image, is_flagged in zip(batch, output.images, flagged):
            results.append(GeneratedImage(seed, to_uint8(image), checked_problem(image, is_flagged)))
    return results


class TextEmbeddings(NamedTuple):
    """The text encoder's output for one condition, each of shape (1, 77, D)."""

    prompt: torch.Tensor
    negative_prompt: torch.Tensor


def text_embeddings(
    pipeline: StableDiffusionControlNetPipeline, prompt: str, negative_prompt: str
) -> TextEmbeddings:
    """Encode a condition's prompts once, as the pipeline would for each call.

    Always with the negative prompt: the pipeline uses it only when guidance is
    on, so the embeddings do not depend on the settings.
    """
    with torch.no_grad():
        positive, negative = pipeline.encode_prompt(
            prompt, pipeline._execution_device, 1, True, negative_prompt
        )
    return TextEmbeddings(positive, negative)


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


def generate_batched(
    pipeline: StableDiffusionControlNetPipeline,
    control: Image.Image,
    conditions: Sequence[TextEmbeddings],
    seeds: list[int],
    settings: GenerationSettings,
    batch_size: int,
) -> list[list[GeneratedImage]]:
    """Generate every (condition, seed) of one control image, batched across conditions.

    Returns one list per condition, in the order of ``conditions``, of one image
    per seed in the order of ``seeds``. Each image matches the one generated
    alone (up to float rounding): it gets its condition's embeddings, its seed's
    starting noise and its own generator.

    Every pipeline call has exactly ``batch_size`` items -- the last is padded
    by repeating an item, and the padding's images are dropped -- so that a
    compiled model sees one shape and is never recompiled.
    """
    scheduled = with_scheduler(pipeline, settings.scheduler)
    device = pipeline._execution_device
    dtype = pipeline.unet.dtype
    items = [(condition, seed) for condition in range(len(conditions)) for seed in seeds]
    results: list[list[GeneratedImage]] = [[] for _ in conditions]
    for batch in chunks(items, batch_size):
        call = padded(batch, batch_size)
        call_seeds = [seed for _, seed in call]
        output = scheduled(
            prompt_embeds=torch.cat([conditions[condition].prompt for condition, _ in call]),
            negative_prompt_embeds=torch.cat([conditions[condition].negative_prompt for condition, _ in call]),
            image=control,
            height=control.height,
            width=control.width,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            controlnet_conditioning_scale=settings.controlnet_scale,
            guess_mode=settings.guess_mode,
            eta=settings.eta,
            generator=generators(call_seeds),
            latents=initial_latents(call_seeds, control.height, control.width).to(device=device, dtype=dtype),
            output_type="np",
        )
        flagged = output.nsfw_content_detected or [False] * len(call)
        for (condition, seed), image, is_flagged in zip(batch, output.images, flagged):
            results[condition].append(GeneratedImage(seed, to_uint8(image), checked_problem(image, is_flagged)))
    return results
