"""Emphasis as a number: encodings, doses, ids, the latent search and the
dose-response table. Encodings and generations run on the tiny model."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from promptsweep import emphasis, generation, models
from promptsweep.emphasis import (
    EmbeddingPair,
    EmphasisConfigError,
    condition_id,
    dosed_pair,
    encode_condition,
    encode_literal_text,
    encode_text,
    format_dose,
    parse_condition_id,
    validated_doses,
)
from promptsweep.generation import GenerationSettings, GeneratedImage, generate
from promptsweep.metrics import ssim
from promptsweep.study import ConditionPrompts, ImageSpec, PromptSpec, condition_prompts
from promptsweep.tiny import write_tiny_model

SETTINGS = GenerationSettings(steps=2, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
SEEDS = [0, 1]
IMAGE = ImageSpec("cat", "cat.png", "cat")
POSITIVE = PromptSpec("pos3", "positive", 3, "best quality")
OTHER_POSITIVE = PromptSpec("pos1", "positive", 1, "good")
NEGATIVE = PromptSpec("neg3", "negative", 3, "lowres, worst quality")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    base = models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet")
    return models.load_pipeline(base, controlnet, models.PipelineOptions("cpu", torch.float32))


@pytest.fixture(scope="module")
def control() -> Image.Image:
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[10:50, 30] = 255
    edges[40, 5:60] = 255
    return Image.fromarray(edges)


@pytest.fixture(scope="module")
def encode(pipeline):
    return functools.partial(encode_literal_text, pipeline)


@pytest.fixture(scope="module")
def word_images(pipeline, control) -> dict[str, list[GeneratedImage]]:
    """The baseline and two word variants generated from their texts, once."""
    return {
        name: from_texts(pipeline, control, condition_prompts(IMAGE, prompt))
        for name, prompt in [("baseline", None), ("pos3", POSITIVE), ("neg3", NEGATIVE)]
    }


def pipeline_embedding(pipeline, text: str) -> torch.Tensor:
    prompt_embeds, _ = pipeline.encode_prompt(text, "cpu", 1, False)
    return prompt_embeds


def from_texts(pipeline, control, texts: ConditionPrompts) -> list[GeneratedImage]:
    return generate(pipeline, control, texts, SEEDS, SETTINGS, seeds_per_batch=2)


def from_embeddings(pipeline, control, pair: EmbeddingPair, monkeypatch) -> list[GeneratedImage]:
    """``generation.generate``, with the pipeline called with ``pair`` in place
    of the texts: same scheduler, latents, generators and image checks."""
    unused = "text not used"
    real_with_scheduler = generation.with_scheduler

    def with_embeddings(pipe, scheduler):
        scheduled = real_with_scheduler(pipe, scheduler)

        def call(prompt: list[str], negative_prompt: list[str], **kwargs):
            assert set(prompt) == set(negative_prompt) == {unused}
            return scheduled(**pair.pipeline_arguments(len(prompt)), **kwargs)

        return call

    with monkeypatch.context() as patch:
        patch.setattr(generation, "with_scheduler", with_embeddings)
        return generate(pipeline, control, ConditionPrompts(unused, unused), SEEDS, SETTINGS, seeds_per_batch=2)


def assert_same_pixels(first: list[GeneratedImage], second: list[GeneratedImage]) -> None:
    assert [image.seed for image in first] == [image.seed for image in second]
    for one, other in zip(first, second):
        assert one.problem is None and other.problem is None
        assert np.array_equal(one.pixels, other.pixels)


# --- Text encoding ----------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["cat", "cat, best quality", "", "lowres, bad anatomy, worst quality", "x" * 100, "extra-digit, 8k"]
)
def test_plain_text_encodes_exactly_as_the_pipeline(pipeline, text: str) -> None:
    embedding = encode_text(pipeline, text)
    assert embedding.shape == (1, 77, pipeline.text_encoder.config.hidden_size)
    assert torch.equal(embedding, pipeline_embedding(pipeline, text))
    assert torch.equal(encode_literal_text(pipeline, text), embedding)


@pytest.mark.parametrize("weighted", ["(best quality)1.3", "(best quality)0.7", "best quality++"])
def test_weights_change_the_encoding(pipeline, weighted: str) -> None:
    assert not torch.equal(encode_text(pipeline, weighted), encode_text(pipeline, "best quality"))


def test_literal_encoding_ignores_compel_syntax(pipeline) -> None:
    # compel reads "(a)" as "a" and drops quotes; the pipeline reads them as written.
    text = 'a (red) "cat", 1+1'
    assert torch.equal(encode_literal_text(pipeline, text), pipeline_embedding(pipeline, text))
    assert not torch.equal(encode_text(pipeline, text), pipeline_embedding(pipeline, text))


def test_conjunctions_are_refused(pipeline) -> None:
    with pytest.raises(ValueError, match="and\\(\\)"):
        encode_text(pipeline, '("cat", "dog").and()')


@pytest.mark.parametrize(
    ("name", "prompt"), [("baseline", None), ("pos3", POSITIVE), ("neg3", NEGATIVE)], ids=["baseline", "positive", "negative"]
)
def test_embeddings_generate_the_same_images_as_texts(
    pipeline, control, encode, word_images, monkeypatch, name, prompt
) -> None:
    pair = encode_condition(condition_prompts(IMAGE, prompt), encode)
    assert_same_pixels(from_embeddings(pipeline, control, pair, monkeypatch), word_images[name])


# --- Doses ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(encode) -> dict[str, EmbeddingPair]:
    return {
        name: encode_condition(condition_prompts(IMAGE, prompt), encode)
        for name, prompt in [("baseline", None), ("pos3", POSITIVE), ("pos1", OTHER_POSITIVE), ("neg3", NEGATIVE)]
    }


@pytest.mark.parametrize("word", ["pos3", "neg3"])
def test_dose_ends_are_baseline_and_word_and_half_is_halfway(pairs, word: str) -> None:
    baseline, variant = pairs["baseline"], pairs[word]
    for field in ("prompt_embeds", "negative_prompt_embeds"):
        at_zero = getattr(dosed_pair(baseline, variant, 0.0), field)
        at_one = getattr(dosed_pair(baseline, variant, 1.0), field)
        at_half = getattr(dosed_pair(baseline, variant, 0.5), field)
        start, end = getattr(baseline, field), getattr(variant, field)
        assert torch.equal(at_zero, start)
        assert torch.equal(at_one, end)
        torch.testing.assert_close(at_half, (start + end) / 2)


def test_only_the_prompts_branch_moves(pairs) -> None:
    baseline = pairs["baseline"]
    positive = dosed_pair(baseline, pairs["pos3"], 2.5)
    negative = dosed_pair(baseline, pairs["neg3"], 2.5)
    assert torch.equal(positive.negative_prompt_embeds, baseline.negative_prompt_embeds)
    assert not torch.equal(positive.prompt_embeds, baseline.prompt_embeds)
    assert torch.equal(negative.prompt_embeds, baseline.prompt_embeds)
    assert not torch.equal(negative.negative_prompt_embeds, baseline.negative_prompt_embeds)


def test_dose_condition_pair_matches_the_definition(pipeline, encode) -> None:
    """Positive: E(p) + d (E("p, a") - E(p)) and E(""); negative: E(p) and E("") + d (E(n) - E(""))."""
    dose = 1.5
    positive = emphasis.dose_condition_pair(
        condition_prompts(IMAGE, None), condition_prompts(IMAGE, POSITIVE), dose, encode
    )
    p, pa, empty = encode_text(pipeline, "cat"), encode_text(pipeline, "cat, best quality"), encode_text(pipeline, "")
    torch.testing.assert_close(positive.prompt_embeds, p + dose * (pa - p))
    assert torch.equal(positive.negative_prompt_embeds, empty)
    negative = emphasis.dose_condition_pair(
        condition_prompts(IMAGE, None), condition_prompts(IMAGE, NEGATIVE), dose, encode
    )
    n = encode_text(pipeline, "lowres, worst quality")
    assert torch.equal(negative.prompt_embeds, p)
    torch.testing.assert_close(negative.negative_prompt_embeds, empty + dose * (n - empty))


@pytest.mark.parametrize(("name", "prompt"), [("pos3", POSITIVE), ("neg3", NEGATIVE)], ids=["positive", "negative"])
def test_dose_one_generates_the_word_variant(
    pipeline, control, encode, word_images, monkeypatch, name, prompt
) -> None:
    pair = emphasis.dose_condition_pair(condition_prompts(IMAGE, None), condition_prompts(IMAGE, prompt), 1.0, encode)
    dosed = from_embeddings(pipeline, control, pair, monkeypatch)
    for one, other in zip(dosed, word_images[name]):
        assert ssim(one.pixels, other.pixels) >= 0.99


def test_embedding_norms(pairs) -> None:
    baseline, word = pairs["baseline"], pairs["pos3"]
    norms = emphasis.embedding_norms(baseline, word, -2.0)
    direction = float(torch.linalg.vector_norm((word.prompt_embeds - baseline.prompt_embeds).double()))
    assert norms["direction_norm"] == pytest.approx(direction)
    assert norms["shift_norm"] == pytest.approx(2 * direction)
    at_zero = emphasis.embedding_norms(baseline, word, 0.0)
    assert at_zero["prompt_embeds_norm"] == pytest.approx(float(baseline.prompt_embeds.double().norm()))
    assert at_zero["negative_prompt_embeds_norm"] == pytest.approx(float(baseline.negative_prompt_embeds.double().norm()))
    assert at_zero["shift_norm"] == 0.0


def test_mixture_embedding() -> None:
    base = torch.tensor([1.0, 2.0])
    directions = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])]
    assert torch.equal(emphasis.mixture_embedding(base, directions, [0.5, 1.0]), torch.tensor([1.5, 6.0]))
    assert torch.equal(emphasis.mixture_embedding(base, directions, [0.0, 0.0]), base)
    assert torch.equal(base, torch.tensor([1.0, 2.0]))  # not changed in place
    with pytest.raises(ValueError, match="one weight per direction"):
        emphasis.mixture_embedding(base, directions, [1.0])


# --- Dose ids -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dose", "text"), [(0.5, "0.5"), (2.0, "2"), (-1.0, "-1"), (1.25, "1.25"), (0, "0"), (-0.0, "0"), (0.1, "0.1")]
)
def test_format_dose(dose: float, text: str) -> None:
    assert format_dose(dose) == text
    assert emphasis.parse_dose(text) == dose


def test_condition_ids_round_trip() -> None:
    assert condition_id("pos5", 0.5) == "pos5@0.5"
    assert condition_id("neg-1", -1.0) == "neg-1@-1"
    assert parse_condition_id("pos5@0.5") == ("pos5", 0.5)
    assert parse_condition_id("neg-1@-1") == ("neg-1", -1.0)
    for wrong in ["pos5@0.50", "pos5@2.0", "pos5", "pos5@", "pos 5@1", "pos5@1@2", "pos5@1e3"]:
        with pytest.raises(ValueError):
            parse_condition_id(wrong)


def test_validated_doses() -> None:
    assert validated_doses([0.5, 2, -1.0, 4]) == (0.5, 2.0, -1.0, 4.0)
    for wrong, message in [
        ([0.5, 0.50], "more than once"),
        ([1, 1.0], "more than once"),
        ([4.5], "outside"),
        ([-2.01], "outside"),
        (["1"], "not a number"),
        ([True], "not a number"),
        ([math.nan], "not a number"),
        ([0.12345], "decimals"),
    ]:
        with pytest.raises(EmphasisConfigError, match=message) as error:
            validated_doses(wrong)
        assert "emphasis.doses" in str(error.value)
