"""Paired quality deltas, the study's q-values and the verdict, on small
tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from promptsweep import quality_tables
from promptsweep.study import PromptSpec

PROMPTS = [
    PromptSpec("sharper", "positive", 1, "best quality, extremely detailed, masterpiece, 8k, award winning photo"),
    PromptSpec("same", "negative", 1, "lowres"),
]
IMAGES = [f"i{index}" for index in range(8)]


def image_metrics() -> pd.DataFrame:
    """8 images x 2 seeds: 'sharper' raises sharpness by 10 +- a little on
    every image and lowers edge F1 by 0.2; 'same' changes nothing but noise."""
    rng = np.random.default_rng(0)
    rows = []
    for image in IMAGES:
        for seed in (0, 1):
            base = {"sharpness": 100 + rng.normal(0, 5), "entropy": 6 + rng.normal(0, 0.1), "edge_f1": 0.5}
            rows.append({"image_id": image, "condition": "baseline", "seed": seed, **base})
            rows.append({
                "image_id": image, "condition": "sharper", "seed": seed,
                "sharpness": base["sharpness"] + 10 + rng.normal(0, 0.5), "entropy": base["entropy"],
                "edge_f1": base["edge_f1"] - 0.2 + rng.normal(0, 0.01),
            })
            rows.append({
                "image_id": image, "condition": "same", "seed": seed,
                "sharpness": base["sharpness"] + rng.normal(0, 3), "entropy": base["entropy"] + rng.normal(0, 0.1),
                "edge_f1": base["edge_f1"] + rng.normal(0, 0.01),
            })
    table = pd.DataFrame(rows)
    table["clip_score"] = np.nan  # not computed
    return table


def summary() -> pd.DataFrame:
    return pd.DataFrame({
        "prompt_id": ["sharper", "same"], "kind": ["positive", "negative"], "emphasis": [1, 1],
        "text": [prompt.text for prompt in PROMPTS], "relative_effect": [2.0, 0.5],
        "p_vs_noise_floor": [0.004, 0.3], "n_images": [8, 8], "n_below_calibrated": [False, False],
    })


def test_quality_summary_finds_the_known_deltas() -> None:
    table = quality_tables.quality_summary(image_metrics(), PROMPTS)
    assert list(table.columns) == quality_tables.QUALITY_SUMMARY_COLUMNS
    row = table.set_index(["prompt_id", "metric"]).loc[("sharper", "sharpness")]
    assert row["delta_mean"] == pytest.approx(10, abs=0.5)
    assert row["delta_ci_low"] > 9 and row["delta_ci_high"] < 11
    assert row["p_value"] < 1e-6  # every one of 8 images rose by about 10
    assert not row["n_below_calibrated"]  # 8 images
    assert row["noise_floor"] > 0
    assert set(table["metric"]) == {"sharpness", "entropy", "edge_f1"}  # CLIP not computed: not tested


def test_one_benjamini_hochberg_family_covers_every_test() -> None:
    quality = quality_tables.quality_summary(image_metrics(), PROMPTS)
    study, quality = quality_tables.with_q_values(summary(), quality)
    p_values = np.concatenate([study["p_vs_noise_floor"], quality["p_value"]])
    defined = np.isfinite(p_values)
    expected = multipletests(p_values[defined], method="fdr_bh")[1]
    q_values = np.concatenate([study["q_vs_noise_floor"], quality["q_value"]])
    assert q_values[defined] == pytest.approx(expected)
    assert list(study.columns).index("q_vs_noise_floor") == list(study.columns).index("p_vs_noise_floor") + 1


def test_the_verdict_says_what_changed_within_120_characters() -> None:
    quality = quality_tables.quality_summary(image_metrics(), PROMPTS)
    study, quality = quality_tables.with_q_values(summary(), quality)
    verdict = quality_tables.verdict_table(study, quality).set_index("prompt_id")
    assert verdict.loc["sharper", "changes_image"] == "yes" and verdict.loc["same", "changes_image"] == "no"
    assert verdict.loc["sharper", "sharpness"] == "better" and verdict.loc["sharper", "sharpness_change"] == "rose"
    assert verdict.loc["same", "sharpness"] == "–" and verdict.loc["same", "sharpness_change"] == "–"
    assert verdict.loc["sharper", "edges_hold"] == "no" and verdict.loc["same", "edges_hold"] == "yes"
    assert verdict.loc["sharper", "clip_holds"] == "n/a"
    text = quality_tables.verdict_markdown(verdict.reset_index())
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "best quality" in text and "sharp = sharpness" in text
    assert "Caution" not in text


def test_the_verdict_cautions_a_study_with_too_few_images() -> None:
    quality = quality_tables.quality_summary(image_metrics(), PROMPTS)
    study, quality = quality_tables.with_q_values(summary().assign(n_images=3, n_below_calibrated=True), quality)
    text = quality_tables.verdict_markdown(quality_tables.verdict_table(study, quality))
    assert "Caution: only 3 images" in " ".join(text.split())


def test_a_rising_brisque_reads_as_worse() -> None:
    """BRISQUE is lower-is-better: a significant rise is a worse image, and the
    CSV keeps that it rose."""
    table = image_metrics()
    table["brisque"] = 30.0 + np.where(table["condition"] == "sharper", 10.0, 0.0) + np.random.default_rng(1).normal(0, 0.5, len(table))
    quality = quality_tables.quality_summary(table, PROMPTS)
    study, quality = quality_tables.with_q_values(summary(), quality)
    verdict = quality_tables.verdict_table(study, quality).set_index("prompt_id")
    assert verdict.loc["sharper", "brisque"] == "worse" and verdict.loc["sharper", "brisque_change"] == "rose"
    assert verdict.loc["sharper", "sharpness"] == "better"
    text = quality_tables.verdict_markdown(verdict.reset_index())
    assert "↑" not in text and "| worse" in text and "BRISQUE (lower is better)" in " ".join(text.split())


@pytest.mark.parametrize(
    ("direction", "rise", "fall"),
    [
        ("higher is better", "better", "worse"),
        ("lower is better", "worse", "better"),
        ("higher is closer", "closer", "further"),
        ("lower is closer", "further", "closer"),
    ],
)
def test_a_metric_judges_a_change_by_its_declared_direction(direction: str, rise: str, fall: str) -> None:
    from dataclasses import replace

    from promptsweep import registry

    metric = replace(registry.METRICS["sharpness"], direction=direction)
    assert (metric.judge(1), metric.judge(-1)) == (rise, fall)
    with pytest.raises(ValueError):
        metric.judge(0)
