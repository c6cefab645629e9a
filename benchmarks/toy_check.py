"""A quick check of a trained toy model, before a full study.

    python benchmarks/toy_check.py DIR [--steps 10] [--guidance 5]
        [--controlnet-scale 1.5] [--condition NAME=POSITIVE|NEGATIVE[|GUIDANCE] ...]
        [--images 6]

generates, for held-out toy pictures and seeds 0 and 1, the baseline and each
condition (by default: quality words; "blurry" as a negative; every
degradation word as a negative; a word the captions never used) with the
model in DIR (``base/`` and ``controlnet/``), on one CPU thread, and prints
the seconds per image, each condition's mean edge F1 against the control and
mean of every quality metric that needs no weights
(``promptsweep.toy.planted``), and each condition's change of each metric
against the baseline as the study's verdict tests it
(``stats.quality_deltas``: image means of paired deltas, t-test over images)
with one Benjamini-Hochberg family over the check's own tests: the change in
paired standard deviations, marked ``*`` where q < 0.05, and whether it is
better or worse by the metric's declared direction. A study's family also
holds its change tests, most of them with tiny p-values, so the same p-value
can get a smaller q there than here.

A ``--condition`` replaces the default conditions: POSITIVE is the positive
prompt, with ``{subject}`` for the picture's own prompt; NEGATIVE the
negative prompt; GUIDANCE, when given, the guidance scale of that condition
alone (the baseline keeps ``--guidance``), so that a prompt's change can be
set beside a change of guidance.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from promptsweep import edges, families, metrics, models, registry, stats, toy
from promptsweep.conditions import GenerationInput
from promptsweep.families import Conditioning
from promptsweep.study import GenerationSettings
from promptsweep.toy import planted, world


class Condition(NamedTuple):
    positive: str
    negative: str
    guidance: float | None = None


DEFAULT_CONDITIONS = {
    "quality words": Condition("{subject}, best quality, sharp", ""),
    "negative blurry": Condition("{subject}", "blurry"),
    "negative degradations": Condition(
        "{subject}", "worst quality, low quality, blurry, lowres, noisy, low contrast, washed out"
    ),
    "unseen word": Condition("{subject}, masterpiece", ""),
}


def parse_condition(text: str) -> tuple[str, Condition]:
    name, _, rest = text.partition("=")
    parts = rest.split("|")
    if not name or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--condition {text!r}: write NAME=POSITIVE|NEGATIVE[|GUIDANCE]")
    guidance = float(parts[2]) if len(parts) == 3 else None
    return name, Condition(parts[0], parts[1], guidance)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    # The toy model's own settings (promptsweep.toy.GENERATION_DEFAULTS), as a default study uses them.
    parser.add_argument("--steps", type=int, default=toy.GENERATION_DEFAULTS["steps"])
    parser.add_argument("--guidance", type=float, default=toy.GENERATION_DEFAULTS["guidance_scale"])
    parser.add_argument("--controlnet-scale", type=float, default=toy.GENERATION_DEFAULTS["controlnet_scale"])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--condition", type=parse_condition, action="append", default=[])
    arguments = parser.parse_args()
    chosen = dict(arguments.condition) or DEFAULT_CONDITIONS
    if "baseline" in chosen or len(chosen) < len(arguments.condition):
        parser.error("--condition names must differ from each other and from 'baseline'")
    conditions = {"baseline": Condition("{subject}", ""), **chosen}
    torch.set_num_threads(1)
    weights = [
        models.resolve_weights(models.ModelSource(str(arguments.directory / role)), [], role)
        for role in ("base", "controlnet")
    ]
    family = families.get(toy.FAMILY)
    pipeline = models.load_pipeline(*weights, models.PipelineOptions("cpu", torch.float32))
    settings = GenerationSettings(
        steps=arguments.steps,
        guidance_scale=arguments.guidance,
        controlnet_scale=arguments.controlnet_scale,
        scheduler=toy.GENERATION_DEFAULTS["scheduler"],
    )
    by_guidance: dict[float, list[str]] = {}
    for name, condition in conditions.items():
        guidance = arguments.guidance if condition.guidance is None else condition.guidance
        by_guidance.setdefault(guidance, []).append(name)
    rows, pictures = [], []
    started = time.perf_counter()
    for image_id, picture, subject in world.study_scenes(arguments.images):
        edge_map = edges.canny(picture, 100, 200)
        for guidance, batch in by_guidance.items():
            conditionings = [
                family.encode(
                    pipeline,
                    GenerationInput(conditions[name].positive.format(subject=subject), conditions[name].negative),
                )
                for name in batch
            ]
            for seed in (0, 1):
                output = family.generate(
                    pipeline, edges.control_image(edge_map), Conditioning.batch(conditionings),
                    [seed] * len(conditionings), replace(settings, guidance_scale=guidance),
                )
                for name, image in zip(batch, output.images):
                    pixels = (np.asarray(image) * 255).round().astype(np.uint8)
                    pictures.append(pixels)
                    rows.append({
                        "image_id": image_id, "seed": seed, "condition": name,
                        "edge_f1": metrics.canny_f1(pixels, edge_map, 100, 200),
                    })
    seconds = (time.perf_counter() - started) / len(rows)
    table = pd.concat([pd.DataFrame(rows), planted.scores(pictures)], axis=1)
    names = [metric.name for metric in planted.planted_metrics()]
    print(f"{seconds:.3f} s per image")
    print(table.groupby("condition", sort=False)[["edge_f1", *names]].mean().round(3).to_string())
    print("change against the baseline, in paired standard deviations (* q < 0.05, then better or worse):")
    print(changes(table, names).to_string())
    return 0


def tested(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Each condition's change of each metric against the baseline
    (``stats.quality_deltas``), with q-values over these tests alone."""
    deltas = stats.quality_deltas(table, "baseline", names)
    deltas["q_value"] = stats.benjamini_hochberg(deltas["p_value"])
    return deltas


def changes(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Each condition's change of each metric against the baseline, tested as
    the study tests it (the t-test over image means), shown as the mean
    paired change over generations in paired standard deviations, ``*``
    where q < 0.05, then "better" or "worse" where significant."""
    deltas = tested(table, names)
    standardised = {
        metric: stats.paired_deltas(table, "baseline", metric).groupby("condition")["delta"].agg(
            lambda delta: delta.mean() / delta.std()
        )
        for metric in names
    }
    cells = {}
    for row in deltas.itertuples():
        significant = row.q_value < 0.05
        judged = registry.METRICS[row.metric].judge(int(np.sign(row.delta_mean))) if significant else ""
        cells[row.condition, row.metric] = (
            f"{standardised[row.metric][row.condition]:+.2f}{'*' if significant else ' '} {judged}"
        )
    variants = [name for name in table["condition"].unique() if name != "baseline"]
    return pd.Series(cells).unstack().reindex(index=variants, columns=names)


if __name__ == "__main__":
    raise SystemExit(main())
