"""The compile option of the pipeline: off changes nothing; on, the UNet and
ControlNet are channels-last, have fused QKV projections and are compiled as
whole graphs. Inductor takes minutes for a CPU, so the real compile here uses
the eager backend (graph capture only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0
from PIL import Image
from torch._dynamo.utils import counters

from promptsweep import models
from promptsweep.conditions import GenerationInput
from promptsweep.generation import GenerationSettings, Item, generate
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.metrics import ssim
from promptsweep.families.sd15_tiny import write_tiny_model

SETTINGS = GenerationSettings(steps=2, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
CPU = models.PipelineOptions("cpu", torch.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[models.ResolvedWeights, models.ResolvedWeights]:
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    return (
        models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base"),
        models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet"),
    )


@pytest.fixture(scope="module")
def control() -> Image.Image:
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[10:50, 40] = 255
    edges[30, 5:60] = 255
    return Image.fromarray(edges)


def images(pipeline, control: Image.Image) -> list[np.ndarray]:
    pair = SD15.encode(pipeline, GenerationInput("cat", "lowres"))
    return [image.pixels for image in generate(SD15, pipeline, control, [Item(pair, 0), Item(pair, 1)], SETTINGS, 2)]


def is_prepared(model: torch.nn.Module) -> bool:
    """Every convolution weight channels-last, every attention layer fused."""
    # A 1x1 kernel is contiguous in both layouts; the others tell them apart.
    convolutions = [p for p in model.parameters() if p.ndim == 4 and p.shape[2] * p.shape[3] > 1]
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    return (
        bool(convolutions)
        and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convolutions)
        and bool(attentions)
        and all(hasattr(m, "to_kv" if m.is_cross_attention else "to_qkv") for m in attentions)
        and all(isinstance(p, FusedAttnProcessor2_0) for p in model.attn_processors.values())
    )


def is_compiled(model: torch.nn.Module) -> bool:
    return model._compiled_call_impl is not None


def test_compile_off_by_default_leaves_the_models_alone(tiny) -> None:
    assert CPU.compile is False
    pipeline = models.load_pipeline(*tiny, CPU)
    for model in (pipeline.unet, pipeline.controlnet):
        assert not is_prepared(model) and not is_compiled(model)
        assert not any(isinstance(p, FusedAttnProcessor2_0) for p in model.attn_processors.values())


def test_prepared_denoisers_generate_the_same_images(tiny, control) -> None:
    pipeline = models.load_pipeline(*tiny, CPU)
    eager = images(pipeline, control)
    for model in (pipeline.unet, pipeline.controlnet):
        models.prepare_denoiser(model)
        assert is_prepared(model)
    for prepared, reference in zip(images(pipeline, control), eager):
        assert ssim(prepared, reference) >= 0.999


def test_compile_option_prepares_and_compiles_both_denoisers(tiny, monkeypatch) -> None:
    compiled: list[tuple[torch.nn.Module, dict]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: compiled.append((self, kwargs)))
    pipeline = models.load_pipeline(*tiny, models.PipelineOptions("cpu", torch.float32, compile=True))
    assert [model for model, _ in compiled] == [pipeline.unet, pipeline.controlnet]
    for model, options in compiled:
        assert is_prepared(model)
        assert options == {"backend": "inductor", "fullgraph": True, "dynamic": False}
    assert torch._dynamo.config.recompile_limit >= models.COMPILED_GRAPHS_LIMIT


def test_compiled_denoisers_are_whole_graphs_compiled_once(tiny, control) -> None:
    pipeline = models.load_pipeline(*tiny, CPU)
    eager = images(pipeline, control)
    models.compile_denoisers(pipeline, backend="eager")
    assert is_compiled(pipeline.unet) and is_compiled(pipeline.controlnet)
    graphs_before = counters["stats"]["unique_graphs"]
    first = images(pipeline, control)  # fullgraph=True: a graph break would raise here
    second = images(pipeline, control)
    assert counters["stats"]["unique_graphs"] - graphs_before == 2  # UNet and ControlNet, no recompile
    for compiled, again, reference in zip(first, second, eager):
        assert np.array_equal(compiled, again)
        assert ssim(compiled, reference) >= 0.999


@pytest.mark.parametrize("other", [{"attention_slicing": True}, {"cpu_offload": True}])
def test_compile_refuses_options_that_would_undo_it(other: dict) -> None:
    with pytest.raises(ValueError, match="compile cannot be combined"):
        models.PipelineOptions("cpu", torch.float32, compile=True, **other)


def test_compile_is_part_of_the_pipeline_cache_key(tiny, monkeypatch) -> None:
    loaded: list[models.PipelineOptions] = []
    monkeypatch.setattr(models, "_pipelines", {})
    monkeypatch.setattr(models, "load_pipeline", lambda base, controlnet, options, family: loaded.append(options) or object())
    compiled = models.PipelineOptions("cpu", torch.float32, compile=True)
    for options in (CPU, compiled, CPU, compiled):
        models.cached_pipeline(*tiny, options)
    assert loaded == [CPU, compiled]


def test_the_config_switches_compile_on_for_generation_jobs() -> None:
    from promptsweep.jobs.generate import pipeline_options

    runtime = {
        "device": "cpu", "dtype": "auto", "safety_checker": False, "attention_slicing": False,
        "cpu_offload": False, "compile": True,
    }
    assert pipeline_options(runtime).compile is True
    assert pipeline_options({**runtime, "compile": False}).compile is False
