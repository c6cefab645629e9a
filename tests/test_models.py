"""Model weights: the tiny model's on-disk layout, resolving local and hub
sources offline, the missing-weights message, and loading once."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from promptsweep import models
from promptsweep.threads import on_compute_thread, resolve_device
from promptsweep.families import FamilyConfigError, sd15
from promptsweep.families.sd15_tiny import write_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_tiny_model_has_the_hub_layout(tiny: Path) -> None:
    base = {str(path.relative_to(tiny / "base")) for path in (tiny / "base").rglob("*") if path.is_file()}
    assert {
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
    } <= base
    assert any(name.startswith("tokenizer/") for name in base)
    controlnet = {path.name for path in (tiny / "controlnet").iterdir()}
    assert controlnet == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert not list(tiny.rglob("*.bin")) and not list(tiny.rglob("*.ckpt"))


def test_tiny_model_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "base", tmp_path / "controlnet")
    first = models.resolve_weights(models.ModelSource(str(tiny / "controlnet")), [], "controlnet")
    second = models.resolve_weights(models.ModelSource(str(tmp_path / "controlnet")), [], "controlnet")
    assert first.sha256 == second.sha256


def test_local_directory_is_fingerprinted(tiny: Path) -> None:
    weights = models.resolve_weights(models.ModelSource(str(tiny / "base")), [], "base")
    assert weights.commit is None
    assert set(weights.sha256) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert all(len(digest) == 64 for digest in weights.sha256.values())


def test_pickled_only_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(models.MissingWeightsError, match="only pickled"):
        models.resolve_weights(models.ModelSource(str(tmp_path / "model")), [], "controlnet")


def test_missing_hub_weights_offline_name_the_fetch_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = models.ModelSource("lllyasviel/sd-controlnet-canny", "main")
    with pytest.raises(models.MissingWeightsError) as error:
        models.resolve_weights(source, sd15.CONTROLNET_PATTERNS, "controlnet")
    message = str(error.value)
    assert "lllyasviel/sd-controlnet-canny" in message
    assert "hf download lllyasviel/sd-controlnet-canny --revision main" in message
    assert "'diffusion_pytorch_model.safetensors'" in message


def put_in_hub_cache(cache: Path, repository: str, directory: Path) -> None:
    """Lay out ``directory`` as the Hugging Face cache holds a downloaded repository."""
    owner, name = repository.split("/")
    root = cache / f"models--{owner}--{name}"
    shutil.copytree(directory, root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)


def test_cached_hub_weights_load_offline(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", tiny / "base")
    put_in_hub_cache(cache, "lllyasviel/sd-controlnet-canny", tiny / "controlnet")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = models.resolve_weights(
        models.ModelSource("stable-diffusion-v1-5/stable-diffusion-v1-5", "main"), sd15.BASE_PATTERNS, "base"
    )
    controlnet = models.resolve_weights(
        models.ModelSource("lllyasviel/sd-controlnet-canny", "main"), sd15.CONTROLNET_PATTERNS, "controlnet"
    )
    assert base.commit == COMMIT and controlnet.commit == COMMIT
    pipeline = models.load_pipeline(base, controlnet, models.PipelineOptions("cpu", torch.float32))
    assert tuple(pipeline.controlnet.config.conditioning_embedding_out_channels) == (8, 16, 16, 32)


def test_cached_pipeline_loads_once(tiny: Path) -> None:
    base = models.resolve_weights(models.ModelSource(str(tiny / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(tiny / "controlnet")), [], "controlnet")
    options = models.PipelineOptions("cpu", torch.float32, attention_slicing=True)
    first = models.cached_pipeline(base, controlnet, options)
    second = models.cached_pipeline(base, controlnet, options)
    assert first.load_seconds is not None and second.load_seconds is None
    assert first.pipeline is second.pipeline


def test_device_and_dtype_defaults() -> None:
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("auto", "cuda") == torch.float16
    assert models.resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("safety_checker", [False, True])
def test_safety_checker_files_are_fetched_only_when_used(tmp_path: Path, monkeypatch, safety_checker: bool) -> None:
    from promptsweep.jobs import model as model_jobs

    requested: dict[str, list[str]] = {}

    def record_patterns(source: models.ModelSource, patterns: list[str], role: str) -> models.ResolvedWeights:
        requested[role] = patterns
        return models.ResolvedWeights(source, str(tmp_path), "0" * 40, {})

    monkeypatch.setattr(models, "resolve_weights", record_patterns)
    # The configs the ControlNet's fit is read from (both roles resolve to tmp_path).
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 768}))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "cross_attention_dim": 768}))
    model = {
        "source": "pretrained", "family": "sd15", "name": "sd15", "safety_checker": safety_checker,
        "base": {"id": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
        "controlnet": {"id": "lllyasviel/sd-controlnet-canny"},
    }
    model_jobs.model_weights(
        model=model, tiny_directory=None, output=str(tmp_path / "weights.json"), log=str(tmp_path / "model.log")
    )
    assert (set(sd15.SAFETY_CHECKER_PATTERNS) <= set(requested["base"])) == safety_checker
    assert set(sd15.BASE_PATTERNS) <= set(requested["base"])
    assert requested["controlnet"] == sd15.CONTROLNET_PATTERNS
    record = json.loads((tmp_path / "weights.json").read_text())  # names its family and pipeline
    assert (record["family"], record["pipeline_class"]) == ("sd15", "StableDiffusionControlNetPipeline")


def test_gpu_pipeline_lookup_does_not_wait_for_the_compute_thread(tiny: Path, monkeypatch) -> None:
    """On a GPU the metric jobs hold the compute thread for seconds at a time;
    a generate job looking up its pipeline must not queue behind them."""
    monkeypatch.setattr(models, "_cached_pipeline", lambda *arguments: threading.current_thread().name)
    base = models.resolve_weights(models.ModelSource(str(tiny / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(tiny / "controlnet")), [], "controlnet")
    release = threading.Event()
    with ThreadPoolExecutor(2) as jobs:
        busy = jobs.submit(on_compute_thread, release.wait, 30)
        try:
            lookup = jobs.submit(models.cached_pipeline, base, controlnet, models.PipelineOptions("cuda", torch.float16))
            assert lookup.result(timeout=10).startswith("promptsweep-accelerator")
        finally:
            release.set()
            busy.result()


def test_a_controlnet_that_does_not_fit_its_base_stops_before_generation(tiny: Path, tmp_path: Path) -> None:
    from promptsweep.jobs import model as model_jobs

    config = json.loads((tiny / "controlnet" / "config.json").read_text())
    wide = tmp_path / "wide"
    shutil.copytree(tiny / "controlnet", wide)
    (wide / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 64}))
    model = {
        "source": "pretrained", "family": "sd15", "name": "mismatch", "safety_checker": False,
        "base": {"id": str(tiny / "base")}, "controlnet": {"id": str(wide)},
    }
    with pytest.raises(FamilyConfigError, match=r"model\.controlnet\.id: .* cross_attention_dim is 64, the base UNet's 32"):
        model_jobs.model_weights(
            model=model, tiny_directory=None, output=str(tmp_path / "weights.json"), log=str(tmp_path / "model.log")
        )
    assert not (tmp_path / "weights.json").exists()
