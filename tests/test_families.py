"""The model-family seam: conditioning arithmetic, the registry, and SD 1.5's
checks that read configs, not names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from promptsweep import families
from promptsweep.families import Conditioning, FamilyConfigError
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.families.sd15_tiny import write_tiny_model
from promptsweep.study import GenerationSettings


def conditioning(seed: int) -> Conditioning:
    generator = torch.Generator().manual_seed(seed)
    return Conditioning(
        {
            "prompt_embeds": torch.randn((1, 5, 3), generator=generator),
            "pooled_prompt_embeds": torch.randn((1, 3), generator=generator),
        }
    )


def test_arithmetic_acts_on_every_tensor() -> None:
    first, second = conditioning(0), conditioning(1)
    total, difference, scaled = first + second, first - second, first.scale(-2.0)
    for name in first:
        assert torch.equal(total[name], first[name] + second[name])
        assert torch.equal(difference[name], first[name] - second[name])
        assert torch.equal(scaled[name], -2.0 * first[name])
    assert first.lerp(second, 0.0) == first and first.lerp(second, 1.0) == second  # exact ends
    half = first.lerp(second, 0.5)
    for name in first:
        torch.testing.assert_close(half[name], (first[name] + second[name]) / 2)


def test_conditioning_is_a_value() -> None:
    first = conditioning(0)
    copy = Conditioning({name: tensor.clone() for name, tensor in first.items()})
    assert first == copy and first != conditioning(1)
    with pytest.raises(TypeError):
        first.tensors["prompt_embeds"] = torch.zeros(1)  # type: ignore[index]
    _ = first + first.scale(3.0)
    assert first == copy  # arithmetic returns new values


def test_conditionings_of_different_tensors_do_not_combine() -> None:
    only_prompt = Conditioning({"prompt_embeds": torch.zeros((1, 5, 3))})
    with pytest.raises(ValueError, match="different tensors"):
        _ = conditioning(0) + only_prompt


def test_norms_and_batch() -> None:
    first, second = conditioning(0), conditioning(1)
    norms = first.norms()
    assert set(norms) == {"prompt_embeds_norm", "pooled_prompt_embeds_norm"}
    assert first.norm() == pytest.approx(sum(value**2 for value in norms.values()) ** 0.5)
    batch = Conditioning.batch([first, second, second])
    assert batch["prompt_embeds"].shape == (3, 5, 3) and batch["pooled_prompt_embeds"].shape == (3, 3)
    assert torch.equal(batch["pooled_prompt_embeds"][2], second["pooled_prompt_embeds"][0])


def test_unknown_family_names_the_key_and_the_choices() -> None:
    with pytest.raises(FamilyConfigError, match=r"model\.family: unknown model family 'sd99'.*sd15"):
        families.get("sd99")
    assert families.get("sd15") is SD15
    assert isinstance(SD15, families.Family)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    return directory


def test_controlnet_fit_is_read_from_the_configs(tiny: Path, tmp_path: Path) -> None:
    assert SD15.controlnet_mismatch(tiny / "base", tiny / "controlnet") is None
    config = json.loads((tiny / "controlnet" / "config.json").read_text())
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 2048}))
    assert "cross_attention_dim is 2048" in SD15.controlnet_mismatch(tiny / "base", tmp_path / "wide")
    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "config.json").write_text(json.dumps({"_class_name": "FluxControlNetModel"}))
    assert "FluxControlNetModel" in SD15.controlnet_mismatch(tiny / "base", tmp_path / "flux")


def test_negative_prompt_acts_only_with_guidance() -> None:
    assert SD15.uses_negative_prompt(GenerationSettings(2, 9.0, 1.0, "unipc"))
    assert not SD15.uses_negative_prompt(GenerationSettings(2, 1.0, 1.0, "unipc"))


def test_sd15_weight_patterns_are_safetensors_only() -> None:
    for role, safety_checker in (("base", False), ("base", True), ("controlnet", False)):
        patterns = SD15.weight_patterns(role, safety_checker)
        assert any(pattern.endswith(".safetensors") for pattern in patterns)
        assert not any(pattern.endswith((".bin", ".ckpt", ".pt", ".pth")) for pattern in patterns)
    assert not any("safety_checker" in pattern for pattern in SD15.weight_patterns("base", False))
