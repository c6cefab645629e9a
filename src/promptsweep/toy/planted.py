"""What each prompt should do in the toy world, known before any generation.

Every degradation of :mod:`promptsweep.toy.world` moves each image-quality
metric of the registry one way: blur lowers the Laplacian variance, noise
raises it. :func:`degradation_effects` measures those moves on the world's
own pictures. A prompt's planted effect follows from the words it holds:

* quality words ("best quality", "sharp") in a positive prompt pull the
  ordinary picture that a prompt naming no quality gets towards a clean one:
  against the ordinary degradations (``world.ORDINARY``);
* a degradation's word ("blurry") in a negative prompt pushes away from that
  degradation; "low quality" and "worst quality" away from the ordinary ones;
* a word the captions never used has no planted effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from promptsweep import registry
from promptsweep.study import PromptSpec
from promptsweep.toy import world

SMALLEST_PLANTED = 0.2
"""The smallest change, in standard deviations of the metric over clean
pictures, that counts as a planted effect; a smaller one is "none"."""


def planted_metrics() -> list[registry.Metric]:
    """The registered image-quality metrics that need no weights."""
    return [metric for metric in registry.quality_metrics() if metric.config_key is None]


def scores(pictures: Sequence[np.ndarray]) -> pd.DataFrame:
    """Every planted metric of each picture (uint8 RGB), one row per picture."""
    samples = [
        registry.ScoredImage(picture, "", "", np.zeros(picture.shape[:2], np.uint8), 100, 200)
        for picture in pictures
    ]
    return pd.DataFrame({metric.name: metric.score(None, samples) for metric in planted_metrics()})


def degradation_effects(
    count: int = 100,
    seed: int = 20_000,
    autoencode: Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per (degradation, metric): the mean change the degradation
    makes to the metric over ``count`` clean pictures of the world
    (``mean_change``), and that change in standard deviations of the metric
    over the clean pictures (``standardised_change``). Each degradation is
    applied at :func:`typical_level`.

    ``autoencode`` (uint8 picture to uint8 picture), when given, is applied
    to every picture before it is scored: a model's autoencoder round trip,
    so that the changes are those the model can represent (a latent
    keeps little of pixel noise)."""
    rng = np.random.default_rng(seed)
    seen = autoencode or (lambda picture: picture)
    clean = [world.draw_scene(rng)[0] for _ in range(count)]
    clean_scores = scores([seen(world.to_uint8(picture)) for picture in clean])
    rows = []
    for degradation in world.DEGRADATIONS:
        applied = (world.Applied(degradation, typical_level(degradation)),)
        degraded = [world.apply(picture, applied, rng) for picture in clean]
        change = scores([seen(world.to_uint8(picture)) for picture in degraded]) - clean_scores
        for metric in planted_metrics():
            rows.append({
                "degradation": degradation.name,
                "word": degradation.word,
                "metric": metric.name,
                "mean_change": change[metric.name].mean(),
                "standardised_change": change[metric.name].mean() / clean_scores[metric.name].std(),
            })
    return pd.DataFrame(rows)


def typical_level(degradation: world.Degradation) -> float:
    """The level at which a study's baseline holds ``degradation``: the middle
    of the mild levels for an ordinary degradation, of the strong ones (a
    defect's) for the others."""
    levels = world.MILD_LEVELS if degradation.name in world.ORDINARY else world.STRONG_LEVELS
    return float(np.mean(levels))


def phrases(text: str) -> set[str]:
    """The comma-separated phrases of a prompt or caption, lowercased."""
    return {phrase.strip().lower() for phrase in text.split(",")}


def involved_degradations(prompt: PromptSpec) -> tuple[list[str], int]:
    """The degradations a prompt's words name, and whether it moves the
    picture towards them (+1) or away (-1); ``([], 0)`` without a trained
    quality word."""
    named_phrases = phrases(prompt.text)
    by_word = {degradation.word: degradation.name for degradation in world.DEGRADATIONS}
    degradations = [name for word, name in by_word.items() if word in named_phrases]
    if named_phrases & set(world.LOW_QUALITY_WORDS):
        degradations = list(dict.fromkeys([*degradations, *world.ORDINARY]))
    if prompt.kind == "negative":
        return degradations, -1 if degradations else 0
    if named_phrases & set(world.QUALITY_WORDS):
        return list(world.ORDINARY), -1
    return degradations, 1 if degradations else 0


def expected_changes(prompts: Sequence[PromptSpec], effects: pd.DataFrame) -> pd.DataFrame:
    """One row per (prompt, metric): the planted direction of the metric's
    change, +1, -1 or 0 (none), from the mean standardised change of the
    degradations the prompt names (:func:`involved_degradations`)."""
    rows = []
    for prompt in prompts:
        degradations, sign = involved_degradations(prompt)
        for metric in planted_metrics():
            change = 0.0
            if degradations:
                of_metric = effects[(effects["metric"] == metric.name) & effects["degradation"].isin(degradations)]
                change = sign * float(of_metric["standardised_change"].mean())
            expected = int(np.sign(change)) if abs(change) >= SMALLEST_PLANTED else 0
            rows.append({"prompt_id": prompt.prompt_id, "metric": metric.name, "expected": expected})
    return pd.DataFrame(rows)


def compare_with_study(expected: pd.DataFrame, quality_summary: pd.DataFrame, significance: float = 0.05) -> pd.DataFrame:
    """Each (prompt, metric) of ``expected`` beside what a study found: its
    significant direction (``found``: +1, -1, or 0 where q >= ``significance``)
    and whether the two agree, and whether the found change is better."""
    found = quality_summary[["prompt_id", "metric", "delta_mean", "q_value"]]
    table = expected.merge(found, on=["prompt_id", "metric"], how="left")
    table["found"] = np.where(table["q_value"] < significance, np.sign(table["delta_mean"]), 0).astype(int)
    table["agrees"] = table["found"] == table["expected"]
    table["judged"] = [
        registry.METRICS[metric].judge(found) if found else "" for metric, found in zip(table["metric"], table["found"])
    ]
    return table
