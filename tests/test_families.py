"""The model-family seam: conditioning arithmetic, the registry, and SD 1.5's
checks that read configs, not names."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from promptsweep import families
from promptsweep.families import Conditioning, FamilyConfigError
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.study import MODEL_DEFAULT_KEYS, GenerationSettings


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


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3", "flux"])
def test_every_built_in_family_keeps_the_protocol_and_fetches_safetensors_only(name: str) -> None:
    family = families.get(name)
    assert name in families.FAMILY_MODULES and family.name == name
    assert isinstance(family, families.Family)
    assert set(family.defaults) == set(MODEL_DEFAULT_KEYS)
    for role in ("base", "controlnet"):
        patterns = family.weight_patterns(role, False)
        assert any(pattern.endswith(".safetensors") for pattern in patterns)
        # Weights are named file by file; only tokenizer folders are taken whole.
        weights = [pattern for pattern in patterns if not pattern.startswith("tokenizer")]
        assert not any(pattern.endswith((".bin", ".ckpt", ".pt", ".pth", "*")) for pattern in weights)


def test_sd15_refuses_the_flow_matching_sampler(tiny: Path) -> None:
    from promptsweep import models
    from promptsweep.families import sd15

    base, controlnet = (
        models.resolve_weights(models.ModelSource(str(tiny / role)), [], role) for role in ("base", "controlnet")
    )
    pipeline = models.load_pipeline(base, controlnet, models.PipelineOptions("cpu", torch.float32))
    with pytest.raises(FamilyConfigError, match="generation.scheduler: 'flow_match_euler'.*unipc, ddim"):
        sd15.with_scheduler(pipeline, "flow_match_euler")
    assert type(sd15.with_scheduler(pipeline, "ddim").scheduler).__name__ == "DDIMScheduler"


def test_sd15_weight_patterns_are_safetensors_only() -> None:
    for role, safety_checker in (("base", False), ("base", True), ("controlnet", False)):
        patterns = SD15.weight_patterns(role, safety_checker)
        assert any(pattern.endswith(".safetensors") for pattern in patterns)
        assert not any(pattern.endswith((".bin", ".ckpt", ".pt", ".pth")) for pattern in patterns)
    assert not any("safety_checker" in pattern for pattern in SD15.weight_patterns("base", False))


class StubFamily:
    """A family of made-up shapes (a pooled tensor, 3 latent channels, scale 4)
    whose pipeline call returns each row's mean prompt embedding as a gray image:
    generation and doses must work through the protocol alone."""

    name = "stub"
    pipeline_class = "StubPipeline"
    defaults = {"resolution": 64, "steps": 1, "guidance_scale": 1.0, "controlnet_scale": 1.0, "scheduler": "unipc"}
    reads_weights = True

    def weight_patterns(self, role, safety_checker):
        return ["*.safetensors"]

    def load_pipeline(self, base, controlnet, options):
        return object()

    def encode(self, pipeline, texts):
        def embed(text: str, width: int) -> torch.Tensor:
            return torch.full((1, width), float(len(text)))

        return Conditioning(
            {
                "prompt_embeds": embed(texts.prompt, 6),
                "pooled_prompt_embeds": embed(texts.prompt, 2),
                "negative_prompt_embeds": embed(texts.negative_prompt, 6),
            }
        )

    def initial_latents(self, pipeline, seeds, height, width):
        from promptsweep.generation import generators

        return torch.cat([torch.randn((1, 3, height // 4, width // 4), generator=g) for g in generators(list(seeds))])

    def generate(self, pipeline, control, conditioning, seeds, settings):
        gray = conditioning["prompt_embeds"].mean(dim=1) / 100
        images = [np.full((control.height, control.width, 3), float(value)) for value in gray]
        return families.PipelineOutput(images, [False] * len(seeds))

    def write_tiny_model(self, base_dir, controlnet_dir):
        pass

    def controlnet_mismatch(self, base_dir, controlnet_dir):
        return None

    def uses_negative_prompt(self, settings):
        return settings.guidance_scale > 1.0


def test_a_family_without_a_default_for_every_model_setting_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    older = type("Older", (StubFamily,), {"name": "older", "defaults": {**StubFamily.defaults}})()
    del older.defaults["controlnet_scale"]
    with pytest.raises(TypeError, match="'older'.*controlnet_scale"):
        families.register(older)
    assert "older" not in families.names()


def test_a_registered_family_generates_and_doses_through_the_protocol_alone(monkeypatch) -> None:
    from promptsweep import emphasis, generation
    from promptsweep.conditions import GenerationInput

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))  # registered for this test only
    stub = families.register(StubFamily())
    assert families.get("stub") is stub and "stub" in families.names()
    assert isinstance(stub, families.Family)
    encode = functools.partial(stub.encode, None)
    baseline, word = GenerationInput("cat", ""), GenerationInput("cat, best quality", "")
    request = emphasis.embedding_request(baseline, {"pos": word}, [("pos", 0.5)])
    dosed = emphasis.condition_embeddings(encode, word, request)
    assert dosed.method == "dose" and set(dosed.norms) >= {"pooled_prompt_embeds_norm", "shift_norm"}
    # Halfway in every tensor, the pooled one included.
    assert dosed.conditioning == encode(baseline).lerp(encode(word), 0.5)
    assert float(dosed.conditioning["pooled_prompt_embeds"][0, 0]) == (3 + 17) / 2
    control = Image.new("RGB", (16, 8))
    items = [generation.Item(encode(baseline), 0), generation.Item(dosed.conditioning, 1), generation.Item(encode(word), 2)]
    images = generation.generate(stub, None, control, items, GenerationSettings(1, 1.0, 1.0, "unipc"), 2)
    assert [image.seed for image in images] == [0, 1, 2]
    assert [int(image.pixels[0, 0, 0]) for image in images] == [round(v / 100 * 255) for v in (3, 10, 17)]


def test_tables_say_when_a_family_ignored_the_negative_prompts() -> None:
    from promptsweep.study import PromptSpec, study_caveat

    negative = [PromptSpec("neg1", "negative", 1, "blurry")]
    generation = {
        "steps": 2, "guidance_scale": 3.5, "controlnet_scale": 1.0, "scheduler": "flow_match_euler",
        "eta": 0.0, "guess_mode": False, "true_cfg_scale": 1.0,
    }
    flux = {"source": "pretrained", "family": "flux"}
    assert "ignored every negative prompt" in study_caveat(flux, {**generation, "true_cfg_scale": 1.0}, negative)
    assert study_caveat(flux, {**generation, "true_cfg_scale": 4.0}, negative) is None
    assert study_caveat(flux, {**generation, "true_cfg_scale": 1.0}, []) is None
    sd15 = {"source": "tiny", "family": "sd15"}
    caveat = study_caveat(sd15, {**generation, "guidance_scale": 9.0, "scheduler": "unipc"}, negative)
    assert caveat is not None and "tiny random model" in caveat and "ignored" not in caveat
