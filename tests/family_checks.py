"""What every model family's test file checks, on the family's tiny random
model: it writes and loads like real weights, its conditioning doses hold in
every tensor, its images follow the doses, a wrong ControlNet is caught, and
a two-image study runs through the real ``snakemake`` command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from conftest import Study
from promptsweep import families, models
from promptsweep.conditions import GenerationInput
from promptsweep.emphasis import dosed
from promptsweep.families import Conditioning
from promptsweep.generation import Item, generate
from promptsweep.metrics import ssim
from promptsweep.study import GenerationSettings

# A baseline and a word variant that differ in both texts, so that every
# tensor of the conditioning (negative and pooled ones too) differs.
BASELINE = GenerationInput("thing", "")
VARIANT = GenerationInput("thing, best quality", "lowres, bad anatomy")


def write_and_load(family: str, directory: Path) -> Any:
    """The family's tiny model written to ``directory`` and loaded from it
    through ``models.load_pipeline``, as real weights are."""
    model = families.get(family)
    model.write_tiny_model(directory / "base", directory / "controlnet")
    base = models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet")
    return models.load_pipeline(base, controlnet, models.PipelineOptions("cpu", torch.float32), family=family)


def check_hub_layout(family: str, directory: Path, base_class: str, controlnet_class: str) -> None:
    """A base pipeline directory and a separate ControlNet directory, weights
    in safetensors only."""
    index = json.loads((directory / "base" / "model_index.json").read_text())
    assert index["_class_name"] == base_class
    assert json.loads((directory / "controlnet" / "config.json").read_text())["_class_name"] == controlnet_class
    assert (directory / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    weights = [path.suffix for path in directory.rglob("*") if path.suffix in (".safetensors", ".bin", ".ckpt")]
    assert weights and set(weights) == {".safetensors"}
    assert families.get(family).controlnet_mismatch(directory / "base", directory / "controlnet") is None


def check_doses_lerp_every_tensor(family: str, pipeline: Any, names: set[str]) -> None:
    model = families.get(family)
    baseline, variant = model.encode(pipeline, BASELINE), model.encode(pipeline, VARIANT)
    assert set(baseline) == names
    assert dosed(baseline, variant, 0.0) == baseline
    assert dosed(baseline, variant, 1.0) == variant
    half = dosed(baseline, variant, 0.5)
    for name in names:
        assert not torch.equal(baseline[name], variant[name]), name
        torch.testing.assert_close(half[name], (baseline[name] + variant[name]) / 2)
        assert not torch.equal(half[name], baseline[name]) and not torch.equal(half[name], variant[name])


def control_image(size: int = 64) -> Image.Image:
    """An edge map: white rectangle outlines on black."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[16:48, 16] = pixels[16:48, 47] = pixels[16, 16:48] = pixels[47, 16:48] = 255
    return Image.fromarray(pixels)


def images(family: str, pipeline: Any, conditionings: list[Conditioning], settings: GenerationSettings) -> list:
    """Each conditioning's image for seed 3, one pipeline call each."""
    items = [Item(conditioning, 3) for conditioning in conditionings]
    return [image.pixels for image in generate(families.get(family), pipeline, control_image(), items, settings, 1)]


def check_dose_images(family: str, pipeline: Any, settings: GenerationSettings) -> None:
    """d = 0 gives the baseline's image, d = 1 the word variant's (SSIM >=
    0.99; on the CPU bit for bit), and the two differ."""
    model = families.get(family)
    baseline, variant = model.encode(pipeline, BASELINE), model.encode(pipeline, VARIANT)
    base_image, variant_image, dose_0, dose_1 = images(
        family, pipeline, [baseline, variant, dosed(baseline, variant, 0.0), dosed(baseline, variant, 1.0)], settings
    )
    assert not np.array_equal(base_image, variant_image)
    assert ssim(dose_0, base_image) >= 0.99 and np.array_equal(dose_0, base_image)
    assert ssim(dose_1, variant_image) >= 0.99 and np.array_equal(dose_1, variant_image)


def check_wrong_controlnet(family: str, base_dir: Path, controlnet_dir: Path, sd15_tiny: Path, tmp_path: Path,
                           field: str, value: Any) -> None:
    """An SD 1.5 ControlNet, and the family's own with one config field
    changed (its name unchanged), are both refused with the reason."""
    model = families.get(family)
    assert model.controlnet_mismatch(base_dir, sd15_tiny / "controlnet") is not None
    edited = tmp_path / "edited-controlnet"
    shutil.copytree(controlnet_dir, edited)
    config = json.loads((edited / "config.json").read_text())
    config[field] = value
    (edited / "config.json").write_text(json.dumps(config))
    reason = model.controlnet_mismatch(base_dir, edited)
    assert reason is not None and field in reason


STUDY_PROMPTS = "prompt_id\tkind\temphasis\ttext\nbest\tpositive\t1\tbest quality\nbad\tnegative\t1\tlowres\n"


def two_image_study(family: str, root: Path, generation: str) -> Study:
    """The family's tiny model, set up to run through the real ``snakemake``
    command line: two control images x (baseline + one positive + one
    negative prompt) x one seed, 64 px, 2 steps; ``generation`` adds the
    family's settings."""
    study = Study(root)
    (root / "config" / "config.yaml").write_text(
        "images: config/images.tsv\nprompts: config/prompts.tsv\nseeds: [0]\n"
        f"generation:\n  resolution: 64\n  steps: 2\n{generation}"
        f"model:\n  source: tiny\n  family: {family}\n  name: tiny {family} (random weights)\n"
    )
    (root / "config" / "prompts.tsv").write_text(STUDY_PROMPTS)
    return study


def run_two_image_study(family: str, root: Path, generation: str) -> Study:
    """:func:`two_image_study`, run to the end."""
    study = two_image_study(family, root, generation)
    study.snakemake()
    return study


def check_weighted_text_stops_before_any_job(family: str, root: Path, generation: str) -> None:
    """A prompt in compel's weight syntax, for a family that cannot read it,
    stops the dry run, naming the sheet row, before any job is planned."""
    study = two_image_study(family, root, generation)
    (root / "config" / "prompts.tsv").write_text(STUDY_PROMPTS + "heavy\tpositive\t2\t(best quality)1.3\n")
    result = study.snakemake("--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config/prompts.tsv: prompt heavy" in output and "weight syntax" in output
    assert "Job stats" not in output


def check_study_outputs(study: Study, family: str) -> None:
    root = study.root
    weights = json.loads((root / "results" / "models" / "weights.json").read_text())
    assert weights["family"] == family
    assert weights["pipeline_class"] == families.get(family).pipeline_class
    record = json.loads((root / "results" / "generated" / "square" / "bad" / "seed0.json").read_text())
    assert record["model"]["family"] == family and record["negative_prompt"] == "lowres"
    summary = pd.read_csv(root / "results" / "tables" / "summary.csv")
    assert list(summary["prompt_id"]) == ["best", "bad"] and list(summary["n"]) == [2, 2]
    for image in ("square", "blocks"):
        for condition in ("baseline", "best", "bad"):
            assert (root / "results" / "generated" / image / condition / "seed0.png").is_file()

