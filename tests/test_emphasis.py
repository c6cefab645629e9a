"""Emphasis as a number: encodings, doses, ids, the latent search and the
dose-response table. Encodings and generations run on the tiny model."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from promptsweep import dose_response, emphasis, generation, models, stats
from promptsweep.emphasis import (
    EmphasisConfigError,
    Tolerances,
    condition_id,
    dosed,
    format_dose,
    parse_condition_id,
    validated_doses,
)
from promptsweep.search import dose_grid
from promptsweep.search.dose_grid import Candidate, parse_candidate
from promptsweep.families import Conditioning, sd15
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.families.sd15 import encode_literal_text, encode_text
from promptsweep.generation import GenerationSettings, GeneratedImage, Item, generate
from promptsweep.metrics import ssim
from promptsweep.conditions import GenerationInput
from promptsweep.study import ImageSpec, PromptSpec, condition_input
from promptsweep.families.sd15_tiny import write_tiny_model

SETTINGS = GenerationSettings(steps=2, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
SEEDS = [0, 1]
IMAGE = ImageSpec("cat", "cat.png", "cat")
POSITIVE = PromptSpec("pos3", "positive", 3, "best quality")
OTHER_POSITIVE = PromptSpec("pos1", "positive", 1, "good")
NEGATIVE = PromptSpec("neg3", "negative", 3, "lowres, worst quality")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[models.ResolvedWeights, models.ResolvedWeights]:
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    return (
        models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base"),
        models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet"),
    )


@pytest.fixture(scope="module")
def pipeline(tiny_weights):
    return models.load_pipeline(*tiny_weights, models.PipelineOptions("cpu", torch.float32))


@pytest.fixture(scope="module")
def control() -> Image.Image:
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[10:50, 30] = 255
    edges[40, 5:60] = 255
    return Image.fromarray(edges)


@pytest.fixture(scope="module")
def encode(pipeline):
    return functools.partial(SD15.encode, pipeline)


@pytest.fixture(scope="module")
def word_images(pipeline, control) -> dict[str, list[GeneratedImage]]:
    """The baseline and two word variants generated from their texts, once."""
    return {
        name: from_texts(pipeline, control, condition_input(IMAGE, prompt))
        for name, prompt in [("baseline", None), ("pos3", POSITIVE), ("neg3", NEGATIVE)]
    }


def pipeline_embedding(pipeline, text: str) -> torch.Tensor:
    prompt_embeds, _ = pipeline.encode_prompt(text, pipeline._execution_device, 1, False)
    return prompt_embeds


def generated(pipeline, control, pair: Conditioning) -> list[GeneratedImage]:
    """``generation.generate`` of ``pair`` on every seed: the generation job's batches."""
    return generate(SD15, pipeline, control, [Item(pair, seed) for seed in SEEDS], SETTINGS, batch_size=2)


def from_texts(pipeline, control, texts: GenerationInput) -> list[GeneratedImage]:
    """The pipeline encoding the texts itself, once, as the generate job
    does, and one call for every seed, from the same starting noise."""
    scheduled = sd15.with_scheduler(pipeline, SETTINGS.scheduler)
    latents = SD15.initial_latents(pipeline, SEEDS, control.height, control.width)
    output = scheduled(
        prompt=texts.prompt, negative_prompt=texts.negative_prompt, num_images_per_prompt=len(SEEDS), image=control,
        height=control.height, width=control.width, num_inference_steps=SETTINGS.steps,
        guidance_scale=SETTINGS.guidance_scale, generator=generation.generators(SEEDS),
        latents=latents.to(device=pipeline.device, dtype=pipeline.unet.dtype), output_type="np",
    )
    return [GeneratedImage(seed, generation.to_uint8(image), None) for seed, image in zip(SEEDS, output.images)]


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
    ("device", "dtype"),
    [
        ("cpu", torch.bfloat16),
        pytest.param(
            "cuda",
            torch.float16,
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
def test_encodings_match_the_pipeline_in_its_device_and_dtype(tiny_weights, device: str, dtype: torch.dtype) -> None:
    reduced = models.load_pipeline(*tiny_weights, models.PipelineOptions(device, dtype))
    for text in ["cat, best quality", "", 'a (red) "cat", 1+1']:
        expected = pipeline_embedding(reduced, text)
        literal = encode_literal_text(reduced, text)
        assert literal.dtype == dtype and literal.device.type == device
        assert torch.equal(literal, expected)
    assert torch.equal(encode_text(reduced, "cat, best quality"), pipeline_embedding(reduced, "cat, best quality"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dose_one_generates_the_word_variant_in_fp16_on_the_gpu(tiny_weights, control) -> None:
    gpu = models.load_pipeline(*tiny_weights, models.PipelineOptions("cuda", torch.float16))
    encode = functools.partial(SD15.encode, gpu)
    for prompt in (POSITIVE, NEGATIVE):
        pair = emphasis.dose_condition(condition_input(IMAGE, None), condition_input(IMAGE, prompt), 1.0, encode)
        dosed = generated(gpu, control, pair)
        assert_same_pixels(dosed, from_texts(gpu, control, condition_input(IMAGE, prompt)))


@pytest.mark.parametrize(
    ("name", "prompt"), [("baseline", None), ("pos3", POSITIVE), ("neg3", NEGATIVE)], ids=["baseline", "positive", "negative"]
)
def test_embeddings_generate_the_same_images_as_texts(
    pipeline, control, encode, word_images, name, prompt
) -> None:
    pair = encode(condition_input(IMAGE, prompt))
    assert_same_pixels(generated(pipeline, control, pair), word_images[name])


# --- Doses ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(encode) -> dict[str, Conditioning]:
    return {
        name: encode(condition_input(IMAGE, prompt))
        for name, prompt in [("baseline", None), ("pos3", POSITIVE), ("pos1", OTHER_POSITIVE), ("neg3", NEGATIVE)]
    }


@pytest.mark.parametrize("word", ["pos3", "neg3"])
def test_dose_ends_are_baseline_and_word_and_half_is_halfway(pairs, word: str) -> None:
    baseline, variant = pairs["baseline"], pairs[word]
    for field in ("prompt_embeds", "negative_prompt_embeds"):
        at_zero = dosed(baseline, variant, 0.0)[field]
        at_one = dosed(baseline, variant, 1.0)[field]
        at_half = dosed(baseline, variant, 0.5)[field]
        start, end = baseline[field], variant[field]
        assert torch.equal(at_zero, start)
        assert torch.equal(at_one, end)
        torch.testing.assert_close(at_half, (start + end) / 2)


def test_only_the_prompts_branch_moves(pairs) -> None:
    baseline = pairs["baseline"]
    positive = dosed(baseline, pairs["pos3"], 2.5)
    negative = dosed(baseline, pairs["neg3"], 2.5)
    assert torch.equal(positive["negative_prompt_embeds"], baseline["negative_prompt_embeds"])
    assert not torch.equal(positive["prompt_embeds"], baseline["prompt_embeds"])
    assert torch.equal(negative["prompt_embeds"], baseline["prompt_embeds"])
    assert not torch.equal(negative["negative_prompt_embeds"], baseline["negative_prompt_embeds"])


def test_dose_condition_pair_matches_the_definition(pipeline, encode) -> None:
    """Positive: E(p) + d (E("p, a") - E(p)) and E(""); negative: E(p) and E("") + d (E(n) - E(""))."""
    dose = 1.5
    positive = emphasis.dose_condition(
        condition_input(IMAGE, None), condition_input(IMAGE, POSITIVE), dose, encode
    )
    p, pa, empty = encode_text(pipeline, "cat"), encode_text(pipeline, "cat, best quality"), encode_text(pipeline, "")
    torch.testing.assert_close(positive["prompt_embeds"], p + dose * (pa - p))
    assert torch.equal(positive["negative_prompt_embeds"], empty)
    negative = emphasis.dose_condition(
        condition_input(IMAGE, None), condition_input(IMAGE, NEGATIVE), dose, encode
    )
    n = encode_text(pipeline, "lowres, worst quality")
    assert torch.equal(negative["prompt_embeds"], p)
    torch.testing.assert_close(negative["negative_prompt_embeds"], empty + dose * (n - empty))


@pytest.mark.parametrize(("name", "prompt"), [("pos3", POSITIVE), ("neg3", NEGATIVE)], ids=["positive", "negative"])
def test_dose_one_generates_the_word_variant(
    pipeline, control, encode, word_images, name, prompt
) -> None:
    pair = emphasis.dose_condition(condition_input(IMAGE, None), condition_input(IMAGE, prompt), 1.0, encode)
    dosed = generated(pipeline, control, pair)
    for one, other in zip(dosed, word_images[name]):
        assert ssim(one.pixels, other.pixels) >= 0.99


def test_embedding_norms(pairs) -> None:
    baseline, word = pairs["baseline"], pairs["pos3"]
    norms = emphasis.embedding_norms(baseline, word, -2.0)
    direction = float(torch.linalg.vector_norm((word["prompt_embeds"] - baseline["prompt_embeds"]).double()))
    assert norms["direction_norm"] == pytest.approx(direction)
    assert norms["shift_norm"] == pytest.approx(2 * direction)
    at_zero = emphasis.embedding_norms(baseline, word, 0.0)
    assert at_zero["prompt_embeds_norm"] == pytest.approx(float(baseline["prompt_embeds"].double().norm()))
    assert at_zero["negative_prompt_embeds_norm"] == pytest.approx(float(baseline["negative_prompt_embeds"].double().norm()))
    assert at_zero["shift_norm"] == 0.0


def test_mixture_adds_each_weighted_direction_to_every_tensor() -> None:
    def conditioning(first: list[float], pooled: list[float]) -> Conditioning:
        return Conditioning({"prompt_embeds": torch.tensor(first), "pooled_prompt_embeds": torch.tensor(pooled)})

    base = conditioning([1.0, 2.0], [0.0])
    words = [conditioning([2.0, 2.0], [1.0]), conditioning([1.0, 6.0], [-2.0])]
    assert emphasis.mixture(base, words, [0.5, 1.0]) == conditioning([1.5, 6.0], [-1.5])
    assert emphasis.mixture(base, words, [0.0, 0.0]) == base
    assert base == conditioning([1.0, 2.0], [0.0])  # not changed in place
    with pytest.raises(ValueError, match="one weight per direction"):
        emphasis.mixture(base, words, [1.0])


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


# --- Search grid and cost ---------------------------------------------------------


def test_search_candidates() -> None:
    candidates = dose_grid.search_candidates(["p1", "p2", "p3"], ["n1"], [0, 0.5, 1, 2])
    names = [candidate.name for candidate in candidates]
    # (3 + 1) prompts x 2 doses (0 and 1 are baseline and word), then 3 pairs x 4 weightings.
    assert len(names) == 4 * 2 + 3 * 4 == len(set(names))
    assert names[:4] == ["p1@0.5", "p1@2", "p2@0.5", "p2@2"]
    assert "n1@2" in names and not any("n1" in name and "+" in name for name in names)
    assert names[8:12] == ["p1@0.5+p2@0.5", "p1@0.5+p2@1", "p1@1+p2@0.5", "p1@1+p2@1"]
    assert candidates == dose_grid.search_candidates(["p1", "p2", "p3"], ["n1"], [0, 0.5, 1, 2])
    assert all(parse_candidate(name) == candidate for name, candidate in zip(names, candidates))


def test_candidate_conditionings(pairs) -> None:
    baseline = pairs["baseline"]
    single = emphasis.terms_conditioning(Candidate((("pos3", 1.0),)).terms, baseline, pairs)
    assert torch.equal(single["prompt_embeds"], pairs["pos3"]["prompt_embeds"])
    mixed = emphasis.terms_conditioning(parse_candidate("pos1@0.5+pos3@1").terms, baseline, pairs)
    expected = (
        baseline["prompt_embeds"]
        + 0.5 * (pairs["pos1"]["prompt_embeds"] - baseline["prompt_embeds"])
        + (pairs["pos3"]["prompt_embeds"] - baseline["prompt_embeds"])
    )
    torch.testing.assert_close(mixed["prompt_embeds"], expected)
    assert torch.equal(mixed["negative_prompt_embeds"], baseline["negative_prompt_embeds"])


def test_search_cost_and_budget() -> None:
    cost = dose_grid.search_cost(
        n_images=10, n_candidates=70, n_word_prompts=10, n_selection_seeds=2, n_evaluation_seeds=4
    )
    assert cost.selection == 10 * 2 * (70 + 10 + 1)
    assert cost.evaluation == 10 * 4 * 3
    assert cost.total == 1740
    dose_grid.check_search_budget(cost, 1740)
    with pytest.raises(EmphasisConfigError, match=r"emphasis\.search\.budget.*1740"):
        dose_grid.check_search_budget(cost, 1739)


def test_search_seeds_must_be_disjoint() -> None:
    emphasis.check_search_seeds([0, 1], [2, 3])
    with pytest.raises(EmphasisConfigError, match=r"share seeds \[1\]"):
        emphasis.check_search_seeds([0, 1], [1, 2])
    with pytest.raises(EmphasisConfigError, match="evaluation_seeds: empty"):
        emphasis.check_search_seeds([0], [])


# --- Selection and evaluation ------------------------------------------------------

SELECTION_SEEDS = [0, 1]
EVALUATION_SEEDS = [2, 3]
IMAGES = ["a", "b", "c"]
MIX = "pos1@0.5+pos2@1"
TOLERANCES = Tolerances(edge_f1=0.05, clip_score=0.02)
WORDS = ["pos1", "pos2"]
CANDIDATES = ["pos1@2", MIX, "pos2@3"]

# condition -> (objective gain, edge F1 drop, CLIP-score drop) against the baseline
SELECTION_EFFECTS = {
    "pos1": (0.1, 0.0, 0.0),
    "pos2": (0.2, 0.0, 0.0),  # the best word prompt
    "pos1@2": (0.5, 0.1, 0.0),  # largest gain, but loses edge fidelity
    MIX: (0.3, 0.01, 0.0),  # the choice
    "pos2@3": (0.4, 0.0, 0.05),  # loses prompt agreement
}
# On the evaluation seeds the excluded candidates would win if they were read.
EVALUATION_EFFECTS = {
    "pos1": (0.1, 0.0, 0.0),
    "pos2": (0.15, 0.0, 0.0),
    "pos1@2": (5.0, 0.0, 0.0),
    MIX: (0.25, 0.02, 0.0),
    "pos2@3": (5.0, 0.0, 0.0),
}


def search_rows(selection_effects, evaluation_effects) -> pd.DataFrame:
    rows = []
    for image_index, image in enumerate(IMAGES):
        for seed in SELECTION_SEEDS + EVALUATION_SEEDS:
            effects = selection_effects if seed in SELECTION_SEEDS else evaluation_effects
            for condition, (gain, edge_drop, clip_drop) in {"baseline": (0.0, 0.0, 0.0), **effects}.items():
                # Images and seeds differ in level; gains are paired, so levels cancel.
                level = 0.5 * image_index + 0.1 * seed
                rows.append(
                    {
                        "image_id": image,
                        "condition": condition,
                        "seed": seed,
                        "aesthetic": 5.0 + level + gain,
                        "edge_f1": 0.8 - 0.01 * image_index - edge_drop,
                        "clip_score": 0.3 + 0.01 * seed - clip_drop,
                    }
                )
    return pd.DataFrame(rows)


def latent_table(rows: pd.DataFrame) -> pd.DataFrame:
    return dose_grid.latent_search_table(
        rows, CANDIDATES, WORDS, SELECTION_SEEDS, EVALUATION_SEEDS, "aesthetic", TOLERANCES
    )


def test_selection_respects_tolerances() -> None:
    rows = search_rows(SELECTION_EFFECTS, EVALUATION_EFFECTS)
    select = functools.partial(
        dose_grid.select_condition, selection_seeds=SELECTION_SEEDS, objective="aesthetic", tolerances=TOLERANCES
    )
    assert select(rows, CANDIDATES) == MIX
    assert select(rows, WORDS) == "pos2"
    # Without CLIP scores the CLIP constraint is gone and pos2@3 wins.
    assert select(rows.assign(clip_score=math.nan), CANDIDATES) == "pos2@3"
    loose = Tolerances(edge_f1=0.2, clip_score=0.1)
    assert dose_grid.select_condition(rows, CANDIDATES, SELECTION_SEEDS, "aesthetic", loose) == "pos1@2"
    # With CLIP score as the objective it is not also a constraint.
    assert dose_grid.select_condition(rows, ["pos2@3"], SELECTION_SEEDS, "clip_score", TOLERANCES) == "baseline"


def test_selection_never_reads_evaluation_seeds() -> None:
    rows = search_rows(SELECTION_EFFECTS, EVALUATION_EFFECTS)
    selection_only = rows[rows["seed"].isin(SELECTION_SEEDS)]
    reversed_evaluation = search_rows(SELECTION_EFFECTS, {name: (-9.0, 1.0, 1.0) for name in EVALUATION_EFFECTS})
    for variant in (selection_only, reversed_evaluation):
        for pool in (CANDIDATES, WORDS):
            assert dose_grid.select_condition(
                variant, pool, SELECTION_SEEDS, "aesthetic", TOLERANCES
            ) == dose_grid.select_condition(rows, pool, SELECTION_SEEDS, "aesthetic", TOLERANCES)
    # The table reads only the evaluated conditions on the evaluation seeds.
    evaluated = rows["condition"].isin(["baseline", MIX, "pos2"]) | rows["seed"].isin(SELECTION_SEEDS)
    pd.testing.assert_frame_equal(latent_table(rows[evaluated]), latent_table(rows))


def test_latent_search_table() -> None:
    table = latent_table(search_rows(SELECTION_EFFECTS, EVALUATION_EFFECTS))
    assert list(table.columns) == list(dose_grid.LATENT_SEARCH_COLUMNS)
    assert list(table["candidate"]) == [MIX, "pos2"]
    chosen, word = table.iloc[0], table.iloc[1]
    assert chosen["objective"] == "aesthetic"
    assert chosen["selection_seeds"] == "0,1" and chosen["evaluation_seeds"] == "2,3"
    assert chosen["gain_mean"] == pytest.approx(0.25)
    assert chosen["gain_ci_low"] == pytest.approx(0.25) and chosen["gain_ci_high"] == pytest.approx(0.25)
    assert chosen["edge_f1_drop"] == pytest.approx(0.02)
    assert chosen["best_word_prompt"] == word["best_word_prompt"] == "pos2"
    assert chosen["best_word_gain_mean"] == word["gain_mean"] == pytest.approx(0.15)
    assert word["edge_f1_drop"] == pytest.approx(0.0)


def test_latent_search_can_say_no_better_than_words() -> None:
    worse = {**EVALUATION_EFFECTS, MIX: (0.05, 0.0, 0.0)}
    chosen = latent_table(search_rows(SELECTION_EFFECTS, worse)).iloc[0]
    assert chosen["candidate"] == MIX
    assert chosen["gain_mean"] < chosen["best_word_gain_mean"]


def test_latent_search_with_nothing_better_than_the_baseline() -> None:
    losing = {name: (-0.1, 0.0, 0.0) for name in SELECTION_EFFECTS}
    table = latent_table(search_rows(losing, EVALUATION_EFFECTS))
    assert list(table["candidate"]) == ["baseline"]
    assert table.iloc[0]["best_word_prompt"] == "baseline"
    assert table.iloc[0]["gain_mean"] == 0.0 and table.iloc[0]["best_word_gain_mean"] == 0.0


def test_latent_search_gain_interval_covers_image_spread() -> None:
    rows = search_rows(SELECTION_EFFECTS, EVALUATION_EFFECTS)
    spread = rows["condition"].eq(MIX) & rows["seed"].isin(EVALUATION_SEEDS)
    rows.loc[spread, "aesthetic"] += rows.loc[spread, "image_id"].map({"a": -0.1, "b": 0.0, "c": 0.4})
    chosen = latent_table(rows).iloc[0]
    assert chosen["gain_mean"] == pytest.approx(0.25 + 0.1)
    assert chosen["gain_ci_low"] < chosen["gain_mean"] < chosen["gain_ci_high"]
    # Image gains 0.15, 0.25, 0.65: the t interval over the three images.
    gains = np.array([0.15, 0.25, 0.65])
    half_width = 4.302652729911275 * gains.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 d.f.)
    assert (chosen["gain_ci_low"], chosen["gain_ci_high"]) == pytest.approx(
        (gains.mean() - half_width, gains.mean() + half_width)
    )


def test_missing_evaluation_generations_are_named() -> None:
    rows = search_rows(SELECTION_EFFECTS, EVALUATION_EFFECTS)
    without = rows[~(rows["condition"].eq(MIX) & rows["seed"].isin(EVALUATION_SEEDS))]
    with pytest.raises(ValueError, match="pos1@0.5\\+pos2@1.*evaluation seeds"):
        latent_table(without)


# --- Dose response -------------------------------------------------------------------

# (prompt, kind, dose) -> SSIM to the same-seed baseline, equal on every image and seed
DOSE_SSIM = {
    ("pos1", "positive", -1.0): 0.5,  # far from the baseline, but a negative dose
    ("pos1", "positive", 0.5): 0.95,  # effect 0.05: within the noise
    ("pos1", "positive", 1.0): 0.8,  # effect 0.2: the smallest dose above the noise
    ("pos1", "positive", 2.0): 0.6,
    ("neg1", "negative", 1.0): 0.95,
    ("neg1", "negative", 2.0): 0.92,
}


def dose_pairs() -> pd.DataFrame:
    rows = []
    for (prompt_id, kind, dose), value in DOSE_SSIM.items():
        for image, slope in [("a", 0.01), ("b", 0.03)]:
            for seed in SEEDS:
                rows.append(
                    {
                        "image_id": image,
                        "prompt_id": prompt_id,
                        "kind": kind,
                        "dose": dose,
                        "seed": seed,
                        "ssim": value,
                        "clip_score_delta": slope * dose,
                    }
                )
    return pd.DataFrame(rows)


NOISE_FLOOR = pd.DataFrame(
    {"image_id": ["a", "b"], "seed_a": [0, 0], "seed_b": [1, 1], "ssim": [0.88, 0.92]}
)


def test_dose_response_table() -> None:
    pairs = dose_pairs()
    pairs.loc[0, "ssim"] = math.nan  # an excluded generation
    table = dose_response.dose_response_table(pairs, NOISE_FLOOR, ["clip_score"])
    assert list(table.columns) == [
        "prompt_id", "kind", "dose", "n", "effect_mean", "effect_ci_low", "effect_ci_high",
        "clip_score_delta_mean", "clip_score_delta_ci_low", "clip_score_delta_ci_high",
        "noise_effect", "smallest_dose_above_noise",
    ]  # fmt: skip
    assert list(zip(table["prompt_id"], table["dose"])) == [
        ("neg1", 1.0), ("neg1", 2.0), ("pos1", -1.0), ("pos1", 0.5), ("pos1", 1.0), ("pos1", 2.0)
    ]
    assert list(table["n"]) == [4, 4, 3, 4, 4, 4]
    for row in table.itertuples():
        effect = 1 - DOSE_SSIM[(row.prompt_id, row.kind, row.dose)]
        assert row.effect_mean == pytest.approx(effect)
        assert row.effect_ci_low == pytest.approx(effect) and row.effect_ci_high == pytest.approx(effect)
        assert row.clip_score_delta_mean == pytest.approx(0.02 * row.dose)
        # Two images whose deltas are 0.01 and 0.03 times the dose: their t interval.
        expected = stats.mean_ci([0.01 * row.dose, 0.03 * row.dose])
        assert (row.clip_score_delta_ci_low, row.clip_score_delta_ci_high) == pytest.approx(expected)
    assert table["noise_effect"].tolist() == pytest.approx([0.1] * len(table))
    smallest = dict(zip(table["prompt_id"], table["smallest_dose_above_noise"]))
    assert smallest == {"pos1": "1", "neg1": "none"}


# --- Weights in sheet texts and the generation job's embeddings ----------------------


@pytest.mark.parametrize(
    ("text", "weighted"),
    [
        ("cat, best quality", False),
        ("a (red) \"cat\", 1+1", False),  # compel syntax without a weight: read as written
        ("(best quality)1.0", False),
        ("lowres, bad-hands", False),
        ("(best quality)1.3", True),
        ("(best quality)0.7", True),
        ("best quality++", True),
        ("best quality-", True),
    ],
)
def test_has_weights(text: str, weighted: bool) -> None:
    assert emphasis.has_weights(text) is weighted


def test_texts_without_weights_keep_the_text_path(pipeline) -> None:
    for texts in [condition_input(IMAGE, None), condition_input(IMAGE, POSITIVE), GenerationInput("cat", 'a (red) "cat"')]:
        embedded = emphasis.condition_embeddings(functools.partial(SD15.encode, pipeline), texts, None)
        assert embedded.method == "text" and embedded.dose is None and embedded.norms == {}
        assert embedded.conditioning == sd15.conditioning(
            *pipeline.encode_prompt(texts.prompt, "cpu", 1, True, texts.negative_prompt)
        )


def test_weighted_text_goes_through_compel(pipeline, control) -> None:
    texts = GenerationInput("cat, (best quality)1.3", "")
    embedded = emphasis.condition_embeddings(functools.partial(SD15.encode, pipeline), texts, None)
    assert embedded.method == "compel"
    assert torch.equal(embedded.conditioning["prompt_embeds"], encode_text(pipeline, texts.prompt))
    assert torch.equal(embedded.conditioning["negative_prompt_embeds"], pipeline_embedding(pipeline, ""))
    images = generated(pipeline, control, embedded.conditioning)
    assert all(image.problem is None for image in images)


@pytest.mark.parametrize(("prompt", "name"), [(POSITIVE, "pos3"), (NEGATIVE, "neg3")])
def test_dose_request_at_one_generates_the_word_variant(pipeline, control, word_images, prompt, name) -> None:
    """The generation job's path: a request, its embeddings, their batches."""
    request = emphasis.embedding_request(
        condition_input(IMAGE, None), {prompt.prompt_id: condition_input(IMAGE, prompt)}, [(prompt.prompt_id, 1.0)]
    )
    embedded = emphasis.condition_embeddings(functools.partial(SD15.encode, pipeline), condition_input(IMAGE, prompt), request)
    assert embedded.method == "dose" and embedded.dose == 1.0
    assert embedded.norms["shift_norm"] == pytest.approx(embedded.norms["direction_norm"])
    dosed = generated(pipeline, control, embedded.conditioning)
    for one, other in zip(dosed, word_images[name]):
        assert ssim(one.pixels, other.pixels) >= 0.99


def test_mixture_request(pipeline) -> None:
    words = {p.prompt_id: condition_input(IMAGE, p) for p in (POSITIVE, OTHER_POSITIVE)}
    request = emphasis.embedding_request(condition_input(IMAGE, None), words, [("pos3", 0.5), ("pos1", 1.0)])
    embedded = emphasis.condition_embeddings(functools.partial(SD15.encode, pipeline), condition_input(IMAGE, None), request)
    assert embedded.method == "mixture" and embedded.norms["shift_norm"] > 0


def _search_table(rows: list[tuple[str, float, float, float]], best_word: str) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["candidate", "gain_mean", "gain_ci_low", "gain_ci_high"])
    table["best_word_prompt"] = best_word
    table["best_word_gain_mean"] = float(table.loc[table.candidate == best_word, "gain_mean"].iloc[0])
    return table


@pytest.mark.parametrize(
    ("rows", "over_word", "says"),
    [
        ([("pos3@2", 0.5, 0.4, 0.6), ("pos3", 0.1, 0.0, 0.2)], (0.4, 0.3, 0.5), "pos3@2 is better than the best word prompt pos3"),
        # Overlapping intervals, yet paired by image the gain over the word prompt is clear.
        ([("pos3@2", 0.3, 0.1, 0.5), ("pos3", 0.2, 0.1, 0.3)], (0.1, 0.05, 0.15), "pos3@2 is better than the best word prompt"),
        ([("pos3@2", 0.3, 0.1, 0.5), ("pos3", 0.2, 0.1, 0.3)], (0.1, -0.1, 0.3), "pos3@2 is no better than the best word prompt pos3"),
        ([("pos3@2", 0.1, -0.1, 0.3), ("pos3", 0.0, -0.1, 0.1)], (0.1, -0.1, 0.3), "includes 0 (no better than the baseline)"),
        ([("baseline", 0.0, math.nan, math.nan), ("pos3", 0.1, 0.0, 0.2)], (math.nan,) * 3, "no better than the baseline"),
    ],
)
def test_latent_search_verdict_reads_the_paired_difference(rows, over_word, says) -> None:
    assert says in dose_grid.latent_search_verdict(_search_table(rows, "pos3"), over_word)


def test_gain_over_word_is_paired_by_image() -> None:
    """Three images: the candidate beats the word prompt by exactly 0.1 on each,
    while the images' own gains differ widely (so both intervals are wide)."""
    rows = []
    for image, level in (("i1", 0.0), ("i2", 5.0), ("i3", 10.0)):
        for seed in (7, 8):
            rows += [
                {"image_id": image, "condition": "baseline", "seed": seed, "sharpness": 1.0},
                {"image_id": image, "condition": "pos3", "seed": seed, "sharpness": 1.0 + level},
                {"image_id": image, "condition": "pos3@2", "seed": seed, "sharpness": 1.1 + level},
            ]
    mean, low, high = dose_grid.gain_over_word_ci(pd.DataFrame(rows), "pos3@2", "pos3", [7, 8], "sharpness")
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1))
