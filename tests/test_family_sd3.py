"""The sd3 family (SD 3.5 + its Canny ControlNet) on its tiny random model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import family_checks as checks
from promptsweep import families, models
from promptsweep.conditions import GenerationInput
from promptsweep.families import FamilyConfigError
from promptsweep.study import GenerationSettings

FAMILY = "sd3"
SETTINGS = GenerationSettings(steps=2, guidance_scale=4.5, controlnet_scale=1.0, scheduler="flow_match_euler")
NAMES = {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"}


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("tiny-sd3")
    return directory, checks.write_and_load(FAMILY, directory)


def test_tiny_model_loads_from_the_hub_layout(tiny_sd3) -> None:
    directory, pipeline = tiny_sd3
    checks.check_hub_layout(FAMILY, directory, "StableDiffusion3Pipeline", "SD3ControlNetModel")
    assert type(pipeline).__name__ == families.get(FAMILY).pipeline_class
    assert (directory / "base" / "text_encoder_3" / "model.safetensors").is_file()


def test_conditioning_holds_clip_and_t5_and_doses_lerp_every_tensor(tiny_sd3) -> None:
    _, pipeline = tiny_sd3
    checks.check_doses_lerp_every_tensor(FAMILY, pipeline, NAMES)
    conditioning = families.get(FAMILY).encode(pipeline, checks.BASELINE)
    # 77 CLIP positions, then T5's 256, at T5's width; pooled: both CLIP widths.
    assert conditioning["prompt_embeds"].shape == (1, 77 + 256, pipeline.text_encoder_3.config.d_model)
    assert conditioning["pooled_prompt_embeds"].shape == (1, 2 * pipeline.text_encoder.config.projection_dim)


def test_doses_0_and_1_give_the_baseline_and_the_word_images(tiny_sd3) -> None:
    checks.check_dose_images(FAMILY, tiny_sd3[1], SETTINGS)


def test_a_weighted_text_stops_and_names_the_text(tiny_sd3) -> None:
    text = "thing, (best quality)1.4"
    with pytest.raises(ValueError, match="compel cannot encode") as error:
        families.get(FAMILY).encode(tiny_sd3[1], GenerationInput(text, ""))
    assert repr(text) in str(error.value)
    with pytest.raises(ValueError, match="compel cannot encode"):
        families.get(FAMILY).encode(tiny_sd3[1], GenerationInput("thing", "lowres--"))


def test_a_unet_sampler_is_refused_with_the_config_key(tiny_sd3) -> None:
    unipc = GenerationSettings(steps=2, guidance_scale=4.5, controlnet_scale=1.0, scheduler="unipc")
    with pytest.raises(FamilyConfigError, match="generation.scheduler"):
        checks.images(FAMILY, tiny_sd3[1], [families.get(FAMILY).encode(tiny_sd3[1], checks.BASELINE)], unipc)


def test_a_controlnet_of_another_design_is_refused(tiny_sd3, tiny: Path, tmp_path: Path) -> None:
    directory, _ = tiny_sd3
    assert "ControlNetModel, not" in families.get(FAMILY).controlnet_mismatch(directory / "base", tiny / "controlnet")
    checks.check_wrong_controlnet(
        FAMILY, directory / "base", directory / "controlnet", tiny, tmp_path, "pooled_projection_dim", 2048
    )


def test_compiling_the_transformer_is_refused_with_the_config_key(tiny_sd3) -> None:
    with pytest.raises(ValueError, match="runtime.compile"):
        models.compile_denoisers(tiny_sd3[1], backend="eager")


def test_negative_prompt_acts_through_cfg() -> None:
    model = families.get(FAMILY)
    assert model.uses_negative_prompt(SETTINGS)
    assert not model.uses_negative_prompt(GenerationSettings(2, 1.0, 1.0, "flow_match_euler"))


@pytest.mark.workflow
def test_two_image_study_through_snakemake(tmp_path: Path) -> None:
    study = checks.run_two_image_study(FAMILY, tmp_path, "  guidance_scale: 4.5\n  scheduler: flow_match_euler\n")
    checks.check_study_outputs(study, FAMILY)


@pytest.mark.workflow
def test_a_weighted_prompt_stops_the_study_before_any_job(tmp_path: Path) -> None:
    checks.check_weighted_text_stops_before_any_job(FAMILY, tmp_path, "  scheduler: flow_match_euler\n")
