"""Sample-size planning: power and images needed, on tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from promptsweep import power


def exactly(mean: float, sd: float, n_images: int) -> np.ndarray:
    """n values with exactly this mean and standard deviation (ddof=1), shaped like a normal sample."""
    z = scipy_stats.norm.ppf((np.arange(n_images) + 0.5) / n_images)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def per_seed(image_values: np.ndarray, prompt_id: str = "p") -> pd.DataFrame:
    """Two seeds per image whose mean is the image's value."""
    rows = [(prompt_id, f"i{i}", seed, value + (0.1 if seed else -0.1)) for i, value in enumerate(image_values)
            for seed in (0, 1)]
    return pd.DataFrame(rows, columns=["prompt_id", "image_id", "seed", "value"])


def test_images_for_80_finds_a_planted_normal_effect() -> None:
    for effect, sd in [(0.5, 1.0), (2.0, 5.0), (-0.3, 0.6)]:
        row = power.power_row("p", "delta:x", per_seed(exactly(effect, sd, 40)))
        analytic = power.analytic_images_for_power(effect, sd)
        assert row["images_for_80"] == pytest.approx(analytic, rel=0.25)
        assert row["observed_effect"] == pytest.approx(effect)
        assert row["reading"].startswith("detected")


def test_minimum_detectable_effect_is_what_that_many_images_detect() -> None:
    mde = power.minimum_detectable_effect(sd=2.0, n_images=10)
    assert power.analytic_images_for_power(mde, 2.0) == pytest.approx(10, rel=1e-3)
    assert np.isnan(power.minimum_detectable_effect(sd=2.0, n_images=1))


def test_a_study_without_effect_promises_no_detection() -> None:
    row = power.power_row("p", "delta:x", per_seed(exactly(0.0, 1.0, 10)))
    assert row["images_for_80"] is None and row["images_for_80_capped"]
    assert row["reading"].startswith("not detected") and "even 1,000 images" in row["reading"]
    rng = np.random.default_rng(5)
    for _ in range(20):
        values = rng.normal(0.0, 1.0, 10)
        row = power.power_row("p", "delta:x", per_seed(values))
        low_excludes_zero = row["reading"].startswith("detected")
        # Whatever it sizes, an effect it did not detect is never promised.
        assert low_excludes_zero or row["reading"].startswith("not detected: compatible with no effect")


def test_more_seeds_narrow_only_the_within_image_part() -> None:
    # Image means all 0, seeds at -1 and +1: all the spread is within images.
    values = pd.DataFrame(
        [("p", f"i{i}", seed, (-1.0, 1.0)[seed]) for i in range(6) for seed in (0, 1)],
        columns=["prompt_id", "image_id", "seed", "value"],
    )
    ratios = power.interval_width_ratios(values)
    assert ratios[3] == pytest.approx(np.sqrt(2 / 3)) and ratios[4] == pytest.approx(np.sqrt(2 / 4))
    # No spread within images: extra seeds change nothing.
    same = values.assign(value=values["image_id"].str[1:].astype(float))
    assert power.interval_width_ratios(same) == {3: pytest.approx(1.0), 4: pytest.approx(1.0)}


def test_resampled_power_rises_with_images() -> None:
    values = exactly(0.5, 1.0, 30)
    curve = [power.resampled_power(values, n) for n in (5, 20, 80)]
    assert curve == sorted(curve) and curve[0] < 0.5 < curve[-1]


def test_power_table_covers_each_prompt_and_quantity() -> None:
    images = [f"i{i}" for i in range(6)]
    pairs = pd.DataFrame(
        [(image, prompt, seed, 0.7 + 0.01 * i + 0.02 * seed) for i, image in enumerate(images)
         for prompt in ("a", "b") for seed in (0, 1)],
        columns=["image_id", "prompt_id", "seed", "ssim"],
    )
    noise_floor = pd.DataFrame({"image_id": images, "seed_a": 0, "seed_b": 1, "ssim": 0.8})
    metrics = pd.DataFrame(
        [(image, condition, seed, 10.0 + (3.0 if condition == "a" else 0.0) + i + seed)
         for i, image in enumerate(images) for condition in ("baseline", "a", "b") for seed in (0, 1)],
        columns=["image_id", "condition", "seed", "sharpness"],
    )
    effects = power.effect_values(pairs, noise_floor, "ssim")
    table = power.power_table(effects, metrics, ["a", "b"], "baseline", ["sharpness"])
    assert list(zip(table["prompt_id"], table["quantity"])) == [
        ("a", "change_vs_noise_floor"), ("a", "delta:sharpness"), ("b", "change_vs_noise_floor"), ("b", "delta:sharpness"),
    ]
    assert table.set_index(["prompt_id", "quantity"]).loc[("a", "delta:sharpness"), "observed_effect"] == pytest.approx(3.0)
