"""Seeding, batching and image checks of the generation step, on the tiny model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from promptsweep import generation
from promptsweep.families import sd15
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.generation import (
    Item,
    generate,
    image_problem,
    tokens_beyond_limit,
)
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings, ImageSpec, PromptSpec, condition_input
from conftest import load_tiny_pipeline

SETTINGS = GenerationSettings(steps=3, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")


@pytest.fixture(scope="module")
def pipeline(tiny: Path):
    return load_tiny_pipeline(tiny)


@pytest.fixture
def control() -> Image.Image:
    edges = np.zeros((64, 128, 3), np.uint8)
    edges[10:50, 40] = 255
    edges[30, 10:120] = 255
    return Image.fromarray(edges)


def items(pipeline, texts: GenerationInput, seeds: list[int]) -> list[Item]:
    pair = SD15.encode(pipeline, texts)
    return [Item(pair, seed) for seed in seeds]


def fake_items(value: float, seeds: list[int]) -> list[Item]:
    """Items with made-up embeddings, for a recording pipeline."""
    pair = sd15.conditioning(torch.full((1, 77, 4), value), torch.full((1, 77, 4), -value))
    return [Item(pair, seed) for seed in seeds]


def fake_pipeline() -> SimpleNamespace:
    """What the family reads from a pipeline around its call."""
    return SimpleNamespace(
        _execution_device="cpu",
        unet=SimpleNamespace(dtype=torch.float32),
        vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)),
        vae_scale_factor=8,
    )


def test_condition_input_follow_controlnet() -> None:
    image = ImageSpec("cat", "cat.png", "cat")
    positive = PromptSpec("p", "positive", 1, "best quality")
    negative = PromptSpec("n", "negative", 1, "lowres")
    assert condition_input(image, None) == GenerationInput("cat", "")
    assert condition_input(image, positive) == GenerationInput("cat, best quality", "")
    assert condition_input(image, negative) == GenerationInput("cat", "lowres")


def test_initial_latents_depend_on_seed_only(pipeline) -> None:
    first = SD15.initial_latents(pipeline, [3, 4], 64, 128)
    assert first.shape == (2, 4, 8, 16)  # the tiny VAE's 4 channels and 8x scale, read from its config
    assert torch.equal(first, SD15.initial_latents(pipeline, [3, 4], 64, 128))
    assert torch.equal(first[1:], SD15.initial_latents(pipeline, [4], 64, 128))  # independent of batch position
    assert not torch.equal(first[:1], SD15.initial_latents(pipeline, [5], 64, 128))


def test_baseline_and_variant_start_from_identical_latents(monkeypatch, control) -> None:
    """Record the latents each pipeline call receives for a baseline and a variant."""
    received: list[torch.Tensor] = []

    def recording_pipeline(**kwargs):
        received.append(kwargs["latents"].clone())
        images = np.random.default_rng(0).random((len(kwargs["prompt_embeds"]), 64, 128, 3))
        return SimpleNamespace(images=images, nsfw_content_detected=None)

    fake = fake_pipeline()
    monkeypatch.setattr(sd15, "with_scheduler", lambda pipeline, name: recording_pipeline)
    generate(SD15, fake, control, fake_items(1.0, [0, 1]), SETTINGS, 2)
    generate(SD15, fake, control, fake_items(2.0, [0, 1]), SETTINGS, 2)
    assert torch.equal(received[0], received[1])


def test_same_seed_gives_bit_identical_images(pipeline, control) -> None:
    first = generate(SD15, pipeline, control, items(pipeline, GenerationInput("cat", "bad"), [7]), SETTINGS, 2)
    second = generate(SD15, pipeline, control, items(pipeline, GenerationInput("cat", "bad"), [7]), SETTINGS, 2)
    assert np.array_equal(first[0].pixels, second[0].pixels)
    assert first[0].pixels.shape == (64, 128, 3) and first[0].pixels.dtype == np.uint8


def test_prompt_changes_the_image(pipeline, control) -> None:
    baseline = generate(SD15, pipeline, control, items(pipeline, GenerationInput("cat", ""), [0]), SETTINGS, 1)[0]
    variant = generate(
        SD15, pipeline, control, items(pipeline, GenerationInput("cat", "lowres, worst quality"), [0]), SETTINGS, 1
    )[0]
    assert not np.array_equal(baseline.pixels, variant.pixels)


def test_batched_seeds_match_one_at_a_time(pipeline, control) -> None:
    seeds = items(pipeline, GenerationInput("cat, good", "bad"), [0, 1, 2])
    batched = generate(SD15, pipeline, control, seeds, SETTINGS, 3)
    single = generate(SD15, pipeline, control, seeds, SETTINGS, 1)
    for one, other in zip(batched, single):
        assert one.seed == other.seed
        difference = np.abs(one.pixels.astype(float) - other.pixels.astype(float)).max() / 255
        assert difference <= 2e-3 + 1 / 255  # diffusers' 2e-3, plus one uint8 rounding step


def test_ddim_scheduler_runs(pipeline, control) -> None:
    ddim = GenerationSettings(steps=3, guidance_scale=9.0, controlnet_scale=1.0, scheduler="ddim", eta=0.0)
    images = generate(SD15, pipeline, control, items(pipeline, GenerationInput("cat", ""), [0]), ddim, 1)
    assert images[0].problem is None


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((4, 4, 3), np.nan), "non-finite"),
        (np.zeros((4, 4, 3)), "constant"),
        (np.linspace(0, 1, 48).reshape(4, 4, 3), None),
    ],
)
def test_image_problem(image: np.ndarray, expected: str | None) -> None:
    problem = image_problem(image)
    assert (problem is None) if expected is None else (expected in problem)


def test_flagged_and_nan_images_are_marked(monkeypatch, control) -> None:
    def pipeline_call(**kwargs):
        images = np.random.default_rng(0).random((2, 64, 128, 3))
        images[1] = np.nan
        return SimpleNamespace(images=images, nsfw_content_detected=[True, False])

    fake = fake_pipeline()
    monkeypatch.setattr(sd15, "with_scheduler", lambda pipeline, name: pipeline_call)
    flagged, nan = generate(SD15, fake, control, fake_items(1.0, [0, 1]), SETTINGS, 2)
    assert "safety checker" in flagged.problem
    assert "non-finite" in nan.problem and nan.pixels.max() == 0


def test_long_prompts_are_measured_against_clip_limit(pipeline) -> None:
    tokenizer = pipeline.tokenizer
    assert tokens_beyond_limit(tokenizer, "cat") == 0
    # The tiny tokenizer has one token per byte, plus start and end tokens.
    assert tokens_beyond_limit(tokenizer, "x" * 100) == 100 + 2 - 77


# The default study's longest prompt: ControlNet 1.0's negative prompt, which
# CLIP reads whole and the tiny model's byte-level tokenizer cuts by 30 tokens.
SEED_NEGATIVE = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)


@pytest.mark.parametrize(("source", "warned"), [("tiny", False), ("pretrained", True)])
def test_a_long_prompt_warns_only_for_real_weights(
    pipeline, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], source: str, warned: bool
) -> None:
    """A new user running the built-in model is not told that the seed's
    negative prompt is too long for CLIP: only the stand-in tokenizer cuts it.
    With real weights, the loaded tokenizer's count is the model's own."""
    import logging

    from promptsweep.jobs.generate import warn_long_texts
    from promptsweep.families.sd15_tiny import build_tokenizer

    logger = logging.getLogger(f"test.long_texts.{source}")
    # A fresh tokenizer: transformers warns about a long sequence once per instance.
    tokenizer = build_tokenizer()
    with caplog.at_level(logging.INFO):
        warn_long_texts(logger, tokenizer, GenerationInput("motorcycle", SEED_NEGATIVE), source)
    messages = [record.getMessage() for record in caplog.records]
    assert any("negative prompt is 30 tokens too long" in message for message in messages) == warned
    assert not any("prompt is" in message and "too long" in message for message in messages[warned:])
    assert "Token indices sequence length" not in capfd.readouterr().err + " ".join(messages)


@pytest.mark.parametrize(
    ("scheduler", "guidance", "guess_mode"),
    [("unipc", 9.0, False), ("ddim", 9.0, False), ("unipc", 9.0, True), ("ddim", 1.0, True)],
)
def test_images_generated_with_gradients_are_the_pipelines_and_carry_the_gradient(
    pipeline, control, scheduler, guidance, guess_mode
) -> None:
    from promptsweep import differentiable, families

    settings = GenerationSettings(
        steps=3, guidance_scale=guidance, controlnet_scale=1.0, scheduler=scheduler, guess_mode=guess_mode
    )
    baseline = SD15.encode(pipeline, GenerationInput("a house", ""))
    word = SD15.encode(pipeline, GenerationInput("a house, sharp", "blurry"))
    reference = generate(SD15, pipeline, control, [Item(word, 0), Item(word, 5)], settings, 2)
    weight = torch.ones((), requires_grad=True)
    pictures = SD15.differentiable_images(pipeline, control, baseline + (word - baseline).scale(weight), [0, 5], settings, 2)
    assert families.differentiable(SD15)
    assert pictures.shape == (2, 3, 64, 128)
    # The same loop as the pipeline's: the same 8-bit pictures.
    for picture, image in zip(pictures.detach().permute(0, 2, 3, 1).numpy(), reference, strict=True):
        assert np.abs(generation.to_uint8(picture).astype(int) - image.pixels).max() <= 1
    differentiable.sharpness(pictures).mean().backward()
    assert weight.grad is not None and weight.grad != 0 and torch.isfinite(weight.grad)
    # Only the conditioning gets a gradient: the model's weights would each cost their size.
    modules = (pipeline.unet, pipeline.controlnet, pipeline.vae)
    assert all(parameter.grad is None for module in modules for parameter in module.parameters())


def test_gradients_flow_only_through_the_last_steps(pipeline, control) -> None:
    # With k = 1 the first steps run without a graph: their activations cost no memory.
    settings = GenerationSettings(steps=3, guidance_scale=9.0, controlnet_scale=1.0, scheduler="ddim")
    conditioning = SD15.encode(pipeline, GenerationInput("a house", "")).map(lambda t: t.clone().requires_grad_())
    seen: list[bool] = []
    hook = pipeline.unet.register_forward_hook(lambda module, args, output: seen.append(torch.is_grad_enabled()))
    try:
        SD15.differentiable_images(pipeline, control, conditioning, [0], settings, 1)
    finally:
        hook.remove()
    assert seen == [False, False, True]
    with pytest.raises(ValueError, match="backprop_steps"):
        SD15.differentiable_images(pipeline, control, conditioning, [0], settings, 4)
