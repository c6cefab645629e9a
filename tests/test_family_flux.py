"""The flux family (FLUX.1 + an InstantX Canny ControlNet) on its tiny random model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import family_checks as checks
from promptsweep import families
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings

FAMILY = "flux"
# True CFG on, so that the negative prompt acts and every tensor matters.
SETTINGS = GenerationSettings(
    steps=2, guidance_scale=3.5, controlnet_scale=1.0, scheduler="flow_match_euler", true_cfg_scale=2.0
)
NAMES = {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"}


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("tiny-flux")
    return directory, checks.write_and_load(FAMILY, directory)


def test_tiny_model_loads_from_the_hub_layout(tiny_flux) -> None:
    directory, pipeline = tiny_flux
    checks.check_hub_layout(FAMILY, directory, "FluxPipeline", "FluxControlNetModel")
    assert type(pipeline).__name__ == families.get(FAMILY).pipeline_class


def test_conditioning_holds_t5_and_pooled_clip_and_doses_lerp_every_tensor(tiny_flux) -> None:
    _, pipeline = tiny_flux
    checks.check_doses_lerp_every_tensor(FAMILY, pipeline, NAMES)
    conditioning = families.get(FAMILY).encode(pipeline, checks.BASELINE)
    assert conditioning["prompt_embeds"].shape == (1, 512, pipeline.text_encoder_2.config.d_model)
    assert conditioning["pooled_prompt_embeds"].shape == (1, pipeline.text_encoder.config.hidden_size)


def test_latents_are_packed_2x2_from_one_generator_per_seed(tiny_flux) -> None:
    _, pipeline = tiny_flux
    model = families.get(FAMILY)
    latents = model.initial_latents(pipeline, [5, 6], 64, 96)
    # 16 channels at 1/8 of 64 x 96, in 2x2 patches: (8/2) x (12/2) tokens of 64.
    assert latents.shape == (2, 4 * 6, pipeline.transformer.config.in_channels)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    assert torch.equal(model.initial_latents(pipeline, [6], 64, 96)[0], latents[1])


def test_sides_not_multiples_of_16_name_the_resolution(tiny_flux) -> None:
    with pytest.raises(ValueError, match="generation.resolution.*multiples of 16"):
        families.get(FAMILY).initial_latents(tiny_flux[1], [0], 72, 64)


def test_doses_0_and_1_give_the_baseline_and_the_word_images(tiny_flux) -> None:
    checks.check_dose_images(FAMILY, tiny_flux[1], SETTINGS)


def test_negative_prompt_acts_only_through_true_cfg(tiny_flux) -> None:
    _, pipeline = tiny_flux
    model = families.get(FAMILY)
    without, with_negative = (model.encode(pipeline, GenerationInput("thing", negative)) for negative in ("", "lowres"))
    off = dataclasses.replace(SETTINGS, true_cfg_scale=1.0)
    assert not model.uses_negative_prompt(off) and model.uses_negative_prompt(SETTINGS)
    plain, negated = checks.images(FAMILY, pipeline, [without, with_negative], off)
    assert np.array_equal(plain, negated)
    plain, negated = checks.images(FAMILY, pipeline, [without, with_negative], SETTINGS)
    assert not np.array_equal(plain, negated)


def test_a_weighted_text_stops_and_names_the_text(tiny_flux) -> None:
    text = "thing, (best quality)1.4"
    with pytest.raises(ValueError, match="compel cannot encode") as error:
        families.get(FAMILY).encode(tiny_flux[1], GenerationInput(text, ""))
    assert repr(text) in str(error.value)


def test_a_controlnet_of_another_design_is_refused(tiny_flux, tiny: Path, tmp_path: Path) -> None:
    directory, _ = tiny_flux
    assert "ControlNetModel, not" in families.get(FAMILY).controlnet_mismatch(directory / "base", tiny / "controlnet")
    checks.check_wrong_controlnet(
        FAMILY, directory / "base", directory / "controlnet", tiny, tmp_path, "joint_attention_dim", 4096
    )


@pytest.mark.workflow
def test_two_image_study_through_snakemake(tmp_path: Path) -> None:
    study = checks.run_two_image_study(
        FAMILY, tmp_path, "  guidance_scale: 3.5\n  scheduler: flow_match_euler\n  true_cfg_scale: 2.0\n"
    )
    checks.check_study_outputs(study, FAMILY)


@pytest.mark.workflow
def test_a_weighted_prompt_stops_the_study_before_any_job(tmp_path: Path) -> None:
    checks.check_weighted_text_stops_before_any_job(FAMILY, tmp_path, "  scheduler: flow_match_euler\n")
