"""Generation on a CUDA GPU: fp16 validity, seeding across devices, batching.

Skipped cleanly without a GPU; run on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from promptsweep import models
from promptsweep.generation import Item, generate
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings
from promptsweep.families.sd15_tiny import write_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SETTINGS = GenerationSettings(steps=4, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[models.ResolvedWeights, models.ResolvedWeights]:
    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    return (
        models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base"),
        models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet"),
    )


def control_image() -> "object":
    from PIL import Image

    edges = np.zeros((128, 128, 3), np.uint8)
    edges[32:96, 64] = 255
    edges[64, 16:112] = 255
    return Image.fromarray(edges)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_images_are_valid(tiny_weights, dtype: str) -> None:
    base, controlnet = tiny_weights
    options = models.PipelineOptions(device="cuda", dtype=models.resolve_dtype(dtype, "cuda"))
    pipeline = models.load_pipeline(base, controlnet, options)
    pair = SD15.encode(pipeline, GenerationInput("cat", "bad"))
    images = generate(SD15, pipeline, control_image(), [Item(pair, 0), Item(pair, 1)], SETTINGS, 8)
    assert pipeline.unet.dtype == options.dtype
    assert [image.problem for image in images] == [None, None]


def test_initial_latents_are_the_same_on_every_device() -> None:
    fake = SimpleNamespace(vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)), vae_scale_factor=8)
    cpu = SD15.initial_latents(fake, [0, 1], 128, 128)
    assert torch.equal(cpu.to("cuda").cpu(), SD15.initial_latents(fake, [0, 1], 128, 128))


def test_batched_conditions_and_seeds_match_one_at_a_time_on_gpu(tiny_weights) -> None:
    base, controlnet = tiny_weights
    options = models.PipelineOptions(device="cuda", dtype=torch.float32)
    pipeline = models.load_pipeline(base, controlnet, options)
    pairs = [SD15.encode(pipeline, GenerationInput(prompt, "")) for prompt in ("cat", "cat, best quality")]
    items = [Item(pair, seed) for pair in pairs for seed in (0, 1, 2)]
    batched = generate(SD15, pipeline, control_image(), items, SETTINGS, 4)
    single = generate(SD15, pipeline, control_image(), items, SETTINGS, 1)
    for one, other in zip(batched, single):
        difference = np.abs(one.pixels.astype(float) - other.pixels.astype(float)).max() / 255
        assert difference <= 2e-3 + 1 / 255  # 2e-3 in [0, 1], plus one uint8 rounding step


def test_generation_job_defaults_to_fp16_on_the_gpu_and_records_it(tmp_path: Path) -> None:
    """The workflow's generation job with the default runtime settings (device
    and dtype auto): fp16 on the GPU, valid images, and records naming the card."""
    from promptsweep import files
    from promptsweep.jobs import generate as generate_jobs
    from promptsweep.jobs import model as model_jobs

    write_tiny_model(tmp_path / "tiny" / "base", tmp_path / "tiny" / "controlnet")
    model_jobs.model_weights(
        model={"source": "tiny", "family": "sd15", "name": "tiny"}, tiny_directory=str(tmp_path / "tiny"),
        output=str(tmp_path / "weights.json"), log=str(tmp_path / "model.log"),
    )
    files.write_png(tmp_path / "edges.png", np.asarray(control_image())[:, :, 0])
    seeds = [0, 1, 2]
    request = {
        "image_id": "square", "condition": "good", "prompt": "thing, good", "negative_prompt": "",
        "seeds": seeds,
        "generation": {"steps": 4, "guidance_scale": 9.0, "controlnet_scale": 1.0,
                       "scheduler": "unipc", "eta": 0.0, "guess_mode": False},
        "runtime": {"device": "auto", "dtype": "auto", "batch_size": "auto", "on_invalid_image": "fail",
                    "safety_checker": False, "attention_slicing": False, "cpu_offload": False, "compile": False},
    }
    image_paths = [str(tmp_path / f"seed{seed}.png") for seed in seeds]
    record_paths = [str(tmp_path / f"seed{seed}.json") for seed in seeds]
    generate_jobs.generate(
        edge_maps=[str(tmp_path / "edges.png")], weights=str(tmp_path / "weights.json"),
        images=[{"good": image_paths}], records=[{"good": record_paths}], requests=[{"good": request}],
        log=str(tmp_path / "generate.log"),
    )
    for image_path, record_path in zip(image_paths, record_paths):
        record = files.read_json(Path(record_path))
        assert (record["device"], record["dtype"], record["valid"]) == (torch.cuda.get_device_name(), "float16", True)
        assert files.read_generated(image_path, record).std() > 0


def test_a_learned_objective_scores_on_cpu_and_follows_on_gpu(tmp_path: Path) -> None:
    """The gradient search moves a learned score's model to the GPU for its
    torch form; scoring the same model afterwards (as each trial does) must
    still work, and give the torch form's values."""
    from clip_weights import write_tiny_clip
    from test_preference import write_aesthetic_mlp

    from promptsweep import preference, registry

    write_tiny_clip(tmp_path / "clip", projection_dim=preference.AESTHETIC_EMBEDDING_SIZE)
    write_aesthetic_mlp(tmp_path / "mlp.pth")
    model = preference.load_aesthetic(tmp_path / "clip", tmp_path / "mlp.pth")
    pictures = [np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8) for seed in range(2)]
    images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().cuda() / 255
    values = registry.METRICS["aesthetic"].differentiable(model)(images.requires_grad_(True), "a house")
    values.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert all(parameter.grad is None for parameter in model.clip.parameters())
    scores = preference.aesthetic_scores(model, pictures)
    np.testing.assert_allclose(scores, values.detach().cpu().numpy(), atol=0.05 * np.ptp(scores) + 1e-4)
