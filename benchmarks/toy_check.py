"""A quick check of a trained toy model, before a full study.

    python benchmarks/toy_check.py DIR [--steps 10] [--guidance 7.5]

generates, for six held-out toy pictures and seeds 0 and 1, the baseline and
four conditions (quality words; "blurry" as a negative; every degradation
word as a negative; a word the captions never used) with the model in DIR
(``base/`` and ``controlnet/``), on one CPU thread, and prints the seconds per
image, each condition's mean edge F1 against the control, Laplacian variance,
colourfulness and RMS contrast, and each condition's mean paired change
against the baseline in paired standard deviations.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from promptsweep import edges, families, metrics, models, quality, toy
from promptsweep.conditions import GenerationInput
from promptsweep.families import Conditioning
from promptsweep.study import GenerationSettings
from promptsweep.toy import world

CONDITIONS = {
    "baseline": ("{subject}", ""),
    "quality words": ("{subject}, best quality, sharp", ""),
    "negative blurry": ("{subject}", "blurry"),
    "negative degradations": ("{subject}", "worst quality, low quality, blurry, lowres, noisy, low contrast, washed out"),
    "unseen word": ("{subject}, masterpiece", ""),
}
MEASURES = {"sharpness": quality.sharpness, "colorfulness": quality.colorfulness, "rms_contrast": quality.rms_contrast}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=7.5)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    weights = [
        models.resolve_weights(models.ModelSource(str(arguments.directory / role)), [], role)
        for role in ("base", "controlnet")
    ]
    family = families.get(toy.FAMILY)
    pipeline = models.load_pipeline(*weights, models.PipelineOptions("cpu", torch.float32))
    settings = GenerationSettings(
        steps=arguments.steps, guidance_scale=arguments.guidance, controlnet_scale=1.0, scheduler="unipc"
    )
    rows = []
    started = time.perf_counter()
    for image_id, picture, subject in world.study_scenes(6):
        edge_map = edges.canny(picture, 100, 200)
        conditionings = [
            family.encode(pipeline, GenerationInput(prompt.format(subject=subject), negative))
            for prompt, negative in CONDITIONS.values()
        ]
        for seed in (0, 1):
            output = family.generate(
                pipeline, edges.control_image(edge_map), Conditioning.batch(conditionings),
                [seed] * len(conditionings), settings,
            )
            for condition, image in zip(CONDITIONS, output.images):
                pixels = (np.asarray(image) * 255).round().astype(np.uint8)
                rows.append({
                    "image_id": image_id, "seed": seed, "condition": condition,
                    "edge_f1": metrics.canny_f1(pixels, edge_map, 100, 200),
                    **{name: measure(pixels) for name, measure in MEASURES.items()},
                })
    table = pd.DataFrame(rows)
    print(f"{(time.perf_counter() - started) / len(table):.3f} s per image")
    print(table.groupby("condition")[["edge_f1", *MEASURES]].mean().round(3).to_string())
    baseline = table[table["condition"] == "baseline"].set_index(["image_id", "seed"])
    print("mean paired change against the baseline, in paired standard deviations:")
    for condition in list(CONDITIONS)[1:]:
        change = table[table["condition"] == condition].set_index(["image_id", "seed"])[list(MEASURES)] - baseline[list(MEASURES)]
        print(f"  {condition}: " + ", ".join(f"{name} {change[name].mean() / change[name].std():+.2f}" for name in MEASURES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
