"""Generation batched across conditions: one pipeline call per fixed-size
batch of (condition, seed) items, each image as if generated alone."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from promptsweep import generation
from promptsweep.families import Conditioning
from promptsweep.generation import Item, chunks, generate, padded, resolve_batch_size
from promptsweep.families import sd15
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.metrics import ssim
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings
from conftest import load_tiny_pipeline

SETTINGS = GenerationSettings(steps=2, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
CONDITIONS = [GenerationInput("cat", ""), GenerationInput("cat, best quality", "lowres")]
SEEDS = [5, 0]


@pytest.fixture(scope="module")
def pipeline(tiny: Path):
    return load_tiny_pipeline(tiny)


@pytest.fixture(scope="module")
def control() -> Image.Image:
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[10:50, 40] = 255
    edges[30, 5:60] = 255
    return Image.fromarray(edges)


@pytest.fixture(scope="module")
def alone(pipeline, control) -> list[list[np.ndarray]]:
    """Every (condition, seed) generated alone, the pipeline encoding its
    texts itself: one prompt, one seed, batch 1."""
    scheduled = sd15.with_scheduler(pipeline, SETTINGS.scheduler)
    return [
        [
            generation.to_uint8(
                scheduled(
                    prompt=texts.prompt, negative_prompt=texts.negative_prompt, image=control,
                    height=64, width=64, num_inference_steps=SETTINGS.steps,
                    guidance_scale=SETTINGS.guidance_scale, generator=generation.generators([seed]),
                    latents=SD15.initial_latents(pipeline, [seed], 64, 64), output_type="np",
                ).images[0]
            )
            for seed in SEEDS
        ]
        for texts in CONDITIONS
    ]


def counting_scheduler(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the pipeline calls of generation: the batch size of each call."""
    calls: list[int] = []
    real_with_scheduler = sd15.with_scheduler

    def with_counting_scheduler(pipeline, scheduler):
        scheduled = real_with_scheduler(pipeline, scheduler)

        def call(**kwargs):
            calls.append(len(kwargs["prompt_embeds"]))
            return scheduled(**kwargs)

        return call

    monkeypatch.setattr(sd15, "with_scheduler", with_counting_scheduler)
    return calls


def test_chunks_and_padding() -> None:
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunks([1, 2], 16) == [[1, 2]]
    assert padded([1, 2], 4) == [1, 2, 2, 2]
    assert padded([1, 2], 2) == [1, 2]


def test_text_embeddings_are_one_condition(pipeline) -> None:
    embeddings = SD15.encode(pipeline, GenerationInput("cat", "lowres"))
    assert embeddings["prompt_embeds"].shape == embeddings["negative_prompt_embeds"].shape == (1, 77, 32)
    assert not embeddings["prompt_embeds"].requires_grad
    without_negative = SD15.encode(pipeline, GenerationInput("cat", ""))
    assert torch.equal(embeddings["prompt_embeds"], without_negative["prompt_embeds"])
    assert not torch.equal(embeddings["negative_prompt_embeds"], without_negative["negative_prompt_embeds"])


def every_item(pipeline) -> list[Item]:
    """Every (condition, seed), condition-major, each condition encoded once."""
    embeddings = [SD15.encode(pipeline, texts) for texts in CONDITIONS]
    return [Item(pair, seed) for pair in embeddings for seed in SEEDS]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_images_match_images_generated_alone(
    pipeline, control, alone, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_scheduler(monkeypatch)
    images = generate(SD15, pipeline, control, every_item(pipeline), SETTINGS, batch_size)
    items = len(CONDITIONS) * len(SEEDS)
    assert calls == [batch_size] * math.ceil(items / batch_size)  # the last call padded
    assert [image.seed for image in images] == SEEDS * len(CONDITIONS)  # padding dropped
    twins = [twin for condition_twins in alone for twin in condition_twins]
    for image, twin in zip(images, twins, strict=True):
        assert image.problem is None
        assert ssim(image.pixels, twin) >= 0.999


def test_an_image_regenerated_alone_has_the_same_bits(pipeline, control) -> None:
    """What the generation job relies on when it regenerates only the images
    of a changed condition: each call has the same size, and an image does not
    depend on the others in its call."""
    items = every_item(pipeline)
    together = generate(SD15, pipeline, control, items, SETTINGS, 4)
    for index in (0, len(items) - 1):
        [alone] = generate(SD15, pipeline, control, [items[index]], SETTINGS, 4)
        assert np.array_equal(alone.pixels, together[index].pixels)


def fake_scheduler(monkeypatch: pytest.MonkeyPatch, received: list[dict], nan_at: int | None = None):
    """Replace the pipeline by a recorder that returns random images, NaN at ``nan_at``."""

    def pipeline_call(**kwargs):
        received.append(kwargs)
        count = len(kwargs["prompt_embeds"])
        images = np.random.default_rng(0).random((count, 64, 64, 3))
        if nan_at is not None:
            images[nan_at] = np.nan
        flagged = [index == 0 for index in range(count)]
        return SimpleNamespace(images=images, nsfw_content_detected=flagged)

    monkeypatch.setattr(sd15, "with_scheduler", lambda pipeline, name: pipeline_call)
    return SimpleNamespace(
        _execution_device="cpu",
        unet=SimpleNamespace(dtype=torch.float32),
        vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)),
        vae_scale_factor=8,
    )


def embeddings(value: float) -> Conditioning:
    return sd15.conditioning(torch.full((1, 77, 4), value), torch.full((1, 77, 4), -value))


def items(values: list[float], seeds: list[int]) -> list[Item]:
    return [Item(embeddings(value), seed) for value in values for seed in seeds]


def test_each_item_gets_its_condition_seed_noise_and_generator(monkeypatch, control) -> None:
    received: list[dict] = []
    fake = fake_scheduler(monkeypatch, received)
    generate(SD15, fake, control, items([1.0, 2.0], [7, 8, 9]), SETTINGS, 4)
    assert len(received) == 2
    prompt_values = [float(value) for call in received for value in call["prompt_embeds"][:, 0, 0]]
    negative_values = [float(value) for call in received for value in call["negative_prompt_embeds"][:, 0, 0]]
    assert prompt_values == [1, 1, 1, 2, 2, 2, 2, 2]  # condition-major, last item repeated
    assert negative_values == [-value for value in prompt_values]
    latents = torch.cat([call["latents"] for call in received])
    seeds = [7, 8, 9, 7, 8, 9, 9, 9]
    assert torch.equal(latents, SD15.initial_latents(fake, seeds, 64, 64))  # same seed, same noise
    draws = [generator.initial_seed() for call in received for generator in call["generator"]]
    assert draws == seeds


def test_flagged_and_nan_images_are_marked_and_padding_dropped(monkeypatch, control) -> None:
    received: list[dict] = []
    fake = fake_scheduler(monkeypatch, received, nan_at=1)
    images = generate(SD15, fake, control, items([1.0], [0, 1, 2]), SETTINGS, 2)
    assert [len(call["prompt_embeds"]) for call in received] == [2, 2]
    assert [image.seed for image in images] == [0, 1, 2]
    assert "safety checker" in images[0].problem and "safety checker" in images[2].problem
    assert "non-finite" in images[1].problem and images[1].pixels.max() == 0


def test_resolve_batch_size() -> None:
    assert resolve_batch_size("auto", "cuda") == resolve_batch_size("auto", "cuda:1") == 16
    assert resolve_batch_size("auto", "cpu") == generation.CPU_BATCH_SIZE
    assert resolve_batch_size(8, "cpu") == 8
    for invalid in (0, -1, "8", 2.0, True):
        with pytest.raises(ValueError, match="batch size"):
            resolve_batch_size(invalid, "cpu")
