"""Reference images of the built-in random tiny SD 1.5 model, at the study's
former default settings (256 px, UniPC, 20 steps, guidance 9, batch 4).

Run from the repository root, at the commit whose images are the reference:

    PYTHONPATH=src:tests python tests/reference/tiny_images.py

It writes ``tests/reference/tiny_images.json`` (the sha256 of each image's
uint8 pixels), which ``tests/test_tiny_reference.py`` compares with.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from promptsweep import edges, families, generation, models
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings

REFERENCE = Path(__file__).with_name("tiny_images.json")
PHOTO = Path("resources/images/chelsea.png")
TEXTS = {
    "baseline": GenerationInput("cat", ""),
    "positive": GenerationInput("cat, best quality", ""),
    "negative": GenerationInput("cat", "lowres, worst quality"),
}
SEEDS = (0, 1)
SETTINGS = GenerationSettings(steps=20, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")


def tiny_image_digests(directory: Path) -> dict[str, str]:
    """``{"<condition>/seed<seed>": sha256 of the uint8 pixels}``."""
    family = families.get("sd15")
    family.write_tiny_model(directory / "base", directory / "controlnet")
    weights = [models.resolve_weights(models.ModelSource(str(directory / role)), [], role) for role in ("base", "controlnet")]
    pipeline = models.load_pipeline(*weights, models.PipelineOptions("cpu", torch.float32))
    control = edges.control_image(edges.edge_map(edges.read_image(PHOTO), 256, 100, 200))
    names = [(name, seed) for name in TEXTS for seed in SEEDS]
    items = [generation.Item(family.encode(pipeline, TEXTS[name]), seed) for name, seed in names]
    images = generation.generate(family, pipeline, control, items, SETTINGS, batch_size=4)
    return {
        f"{name}/seed{seed}": hashlib.sha256(np.ascontiguousarray(image.pixels).tobytes()).hexdigest()
        for (name, seed), image in zip(names, images, strict=True)
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        REFERENCE.write_text(json.dumps(tiny_image_digests(Path(directory)), indent=2) + "\n")
