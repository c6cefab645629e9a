"""The sdxl family (SDXL + a Canny ControlNet) on its tiny random model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import family_checks as checks
from promptsweep import families
from promptsweep.conditions import GenerationInput
from promptsweep.families import FamilyConfigError
from promptsweep.study import GenerationSettings

FAMILY = "sdxl"
SETTINGS = GenerationSettings(steps=2, guidance_scale=5.0, controlnet_scale=1.0, scheduler="unipc")
NAMES = {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"}


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("tiny-sdxl")
    return directory, checks.write_and_load(FAMILY, directory)


def test_tiny_model_loads_from_the_hub_layout(tiny_sdxl) -> None:
    directory, pipeline = tiny_sdxl
    checks.check_hub_layout(FAMILY, directory, "StableDiffusionXLPipeline", "ControlNetModel")
    assert type(pipeline).__name__ == families.get(FAMILY).pipeline_class


def test_conditioning_holds_both_encoders_and_doses_lerp_every_tensor(tiny_sdxl) -> None:
    _, pipeline = tiny_sdxl
    checks.check_doses_lerp_every_tensor(FAMILY, pipeline, NAMES)
    conditioning = families.get(FAMILY).encode(pipeline, checks.BASELINE)
    widths = pipeline.text_encoder.config.hidden_size + pipeline.text_encoder_2.config.hidden_size
    assert conditioning["prompt_embeds"].shape == (1, 77, widths)
    assert conditioning["pooled_prompt_embeds"].shape == (1, pipeline.text_encoder_2.config.projection_dim)


def test_an_empty_negative_is_the_empty_texts_encoding_not_zeros(tiny_sdxl) -> None:
    _, pipeline = tiny_sdxl
    conditioning = families.get(FAMILY).encode(pipeline, checks.BASELINE)
    empty = families.get(FAMILY).encode(pipeline, GenerationInput("", "unused"))
    assert pipeline.config.force_zeros_for_empty_prompt
    assert torch.equal(conditioning["negative_prompt_embeds"], empty["prompt_embeds"])
    assert torch.equal(conditioning["negative_pooled_prompt_embeds"], empty["pooled_prompt_embeds"])
    assert conditioning["negative_pooled_prompt_embeds"].abs().sum() > 0


def test_weighted_texts_go_through_compel_with_both_encoders(tiny_sdxl) -> None:
    _, pipeline = tiny_sdxl
    model = families.get(FAMILY)
    plain = model.encode(pipeline, GenerationInput("thing, best quality", "lowres"))
    weighted = model.encode(pipeline, GenerationInput("thing, (best quality)1.4", "lowres"))
    assert weighted["prompt_embeds"].shape == plain["prompt_embeds"].shape
    first_width = pipeline.text_encoder.config.hidden_size
    # Both encoders' halves move under the weight; the negative is untouched.
    assert not torch.allclose(weighted["prompt_embeds"][..., :first_width], plain["prompt_embeds"][..., :first_width])
    assert not torch.allclose(weighted["prompt_embeds"][..., first_width:], plain["prompt_embeds"][..., first_width:])
    assert torch.equal(weighted["negative_prompt_embeds"], plain["negative_prompt_embeds"])
    # The pooled vector has no per-token weights: the words' own.
    assert torch.equal(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])
    # Only the weighted words move: the positions before them keep the plain text's values.
    torch.testing.assert_close(weighted["prompt_embeds"][:, :7], plain["prompt_embeds"][:, :7])


def test_doses_0_and_1_give_the_baseline_and_the_word_images(tiny_sdxl) -> None:
    checks.check_dose_images(FAMILY, tiny_sdxl[1], SETTINGS)


def test_the_flow_matching_sampler_is_refused_with_the_config_key(tiny_sdxl) -> None:
    flow = GenerationSettings(steps=2, guidance_scale=5.0, controlnet_scale=1.0, scheduler="flow_match_euler")
    with pytest.raises(FamilyConfigError, match="generation.scheduler"):
        checks.images(FAMILY, tiny_sdxl[1], [families.get(FAMILY).encode(tiny_sdxl[1], checks.BASELINE)], flow)


def test_an_sd15_controlnet_is_refused(tiny_sdxl, tiny: Path, tmp_path: Path) -> None:
    directory, _ = tiny_sdxl
    reason = families.get(FAMILY).controlnet_mismatch(directory / "base", tiny / "controlnet")
    assert reason is not None and "cross_attention_dim" in reason
    checks.check_wrong_controlnet(
        FAMILY, directory / "base", directory / "controlnet", tiny, tmp_path, "cross_attention_dim", 768
    )


@pytest.mark.workflow
def test_two_image_study_through_snakemake(tmp_path: Path) -> None:
    study = checks.run_two_image_study(FAMILY, tmp_path, "  guidance_scale: 5.0\n")
    checks.check_study_outputs(study, FAMILY)
