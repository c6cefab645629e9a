import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from promptsweep import stats

N_RESAMPLES = 500


def make_pairs(rows: list[tuple[str, str, str, float, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["image_id", "prompt_id", "kind", "emphasis", "seed", "ssim"]
    )


def make_noise_floor(ssim_by_image: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [(image, 0, 1, value) for image, value in ssim_by_image.items()],
        columns=["image_id", "seed_a", "seed_b", "ssim"],
    )


def varied_pairs(n_images: int = 8, seed: int = 0) -> pd.DataFrame:
    """Two prompts per kind, two seeds per image, SSIM with image-level noise."""
    rng = np.random.default_rng(seed)
    prompts = [
        ("pos_1", "positive", 1.0),
        ("pos_2", "positive", 2.0),
        ("neg_1", "negative", 1.0),
        ("neg_2", "negative", 2.0),
    ]
    rows = []
    for i in range(n_images):
        image_offset = rng.normal(0, 0.1)
        for prompt_id, kind, emphasis in prompts:
            for generation_seed in (0, 1):
                value = 0.9 - 0.1 * emphasis + image_offset + rng.normal(0, 0.05)
                rows.append(
                    (f"img{i}", prompt_id, kind, emphasis, generation_seed, value)
                )
    return make_pairs(rows)


def varied_noise_floor(n_images: int = 8, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return make_noise_floor(
        {f"img{i}": 0.85 + rng.normal(0, 0.03) for i in range(n_images)}
    )


# --- mean_ci, mean_test_p, fieller_ratio_ci ----------------------------------


def test_mean_ci_of_one_image_is_nan_and_of_equal_images_that_value():
    low, high = stats.mean_ci([0.7])
    assert np.isnan(low) and np.isnan(high)
    assert stats.mean_ci([0.7] * 6) == (pytest.approx(0.7), pytest.approx(0.7))
    assert np.isnan(stats.mean_test_p([0.7])) and np.isnan(stats.mean_test_p([0.7] * 6))


def test_mean_ci_is_the_t_interval():
    image_means = np.random.default_rng(3).normal(0.5, 0.1, size=20)
    low, high = stats.mean_ci(image_means)
    half_width = scipy_stats.t.ppf(0.975, 19) * image_means.std(ddof=1) / np.sqrt(20)
    assert (low, high) == pytest.approx((image_means.mean() - half_width, image_means.mean() + half_width))


def test_mean_ci_narrows_with_confidence():
    image_means = np.random.default_rng(3).normal(0.5, 0.1, size=20)
    low_95, high_95 = stats.mean_ci(image_means, confidence=0.95)
    low_50, high_50 = stats.mean_ci(image_means, confidence=0.50)
    assert low_95 < low_50 < high_50 < high_95


def test_interval_and_test_always_agree():
    rng = np.random.default_rng(11)
    for _ in range(200):
        values = rng.lognormal(0, 1, size=int(rng.integers(3, 30))) - 1.4
        low, high = stats.mean_ci(values)
        assert (stats.mean_test_p(values) < 0.05) == (low > 0 or high < 0)


def test_fieller_interval_excludes_one_exactly_when_the_paired_test_rejects():
    rng = np.random.default_rng(12)
    for _ in range(200):
        noise = rng.uniform(0.2, 0.4, size=10)
        prompt = noise * rng.uniform(0.7, 1.5) + rng.normal(0, 0.05, size=10)
        low, high = stats.fieller_ratio_ci(prompt, noise)
        assert low < prompt.mean() / noise.mean() < high
        rejects = stats.mean_test_p(prompt - noise) < 0.05
        assert rejects == (low > 1 or high < 1)


def test_fieller_interval_is_unbounded_when_the_denominator_may_be_zero():
    rng = np.random.default_rng(13)
    low, high = stats.fieller_ratio_ci(rng.normal(1, 0.1, 8), rng.normal(0, 1, 8))
    assert np.isnan(low) and np.isnan(high)


# --- prompt_statistics ----------------------------------------------------


def test_prompt_statistics_known_values():
    pairs = make_pairs(
        [
            ("a", "p", "positive", 1.0, 0, 0.7),
            ("a", "p", "positive", 1.0, 1, 0.9),
            ("b", "p", "positive", 1.0, 0, 0.6),
            ("c", "p", "positive", 1.0, 0, 0.5),
        ]
    )
    noise_floor = make_noise_floor({"a": 0.9, "b": 0.8, "c": 0.9, "unused": 0.1})
    row = stats.prompt_statistics(pairs, noise_floor).iloc[0]
    assert row["n"] == 4
    assert row["n_images"] == 3
    # Per-image means 0.8, 0.6, 0.5: each image weighs the same.
    assert row["ssim_mean"] == pytest.approx((0.8 + 0.6 + 0.5) / 3)
    assert row["ssim_std"] == pytest.approx(np.std([0.7, 0.9, 0.6, 0.5], ddof=1))
    assert row["effect"] == pytest.approx((0.2 + 0.4 + 0.5) / 3)
    # Only the prompt's images count towards its noise floor.
    assert row["noise_floor_mean"] == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    assert row["noise_effect"] == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert row["relative_effect"] == pytest.approx(1.1 / 0.4)
    assert row["relative_effect"] == pytest.approx(row["effect"] / row["noise_effect"])
    expected_p = scipy_stats.ttest_1samp([0.2 - 0.1, 0.4 - 0.2, 0.5 - 0.1], 0.0).pvalue
    assert row["p_vs_noise_floor"] == pytest.approx(expected_p)
    assert row["ssim_ci_low"] <= row["ssim_mean"] <= row["ssim_ci_high"]
    # Three images leave the noise floor's mean too uncertain to bound the
    # ratio (its own t interval reaches 0): Fieller's set is unbounded.
    assert np.isnan(row["relative_effect_ci_low"]) and np.isnan(row["relative_effect_ci_high"])


def test_prompt_equal_to_noise_floor_has_relative_effect_one():
    noise_by_image = {"a": 0.9, "b": 0.7, "c": 0.8, "d": 0.6}
    pairs = make_pairs(
        [
            (image, "p", "negative", 1.0, 0, value)
            for image, value in noise_by_image.items()
        ]
    )
    row = stats.prompt_statistics(pairs, make_noise_floor(noise_by_image)).iloc[0]
    assert row["relative_effect"] == pytest.approx(1.0)
    # The ratio is exactly 1 in every image: no spread, a collapsed interval.
    assert row["relative_effect_ci_low"] == pytest.approx(1.0)
    assert row["relative_effect_ci_high"] == pytest.approx(1.0)
    # All paired differences are zero: the t-test is undefined.
    assert np.isnan(row["p_vs_noise_floor"])


def test_prompt_with_constant_values_has_collapsed_ci():
    pairs = make_pairs([(f"img{i}", "p", "positive", 1.0, 0, 0.8) for i in range(5)])
    noise_floor = make_noise_floor({f"img{i}": 0.9 for i in range(5)})
    row = stats.prompt_statistics(pairs, noise_floor).iloc[0]
    assert row["ssim_ci_low"] == pytest.approx(0.8)
    assert row["ssim_ci_high"] == pytest.approx(0.8)
    assert row["relative_effect"] == pytest.approx(2.0)
    assert row["relative_effect_ci_low"] == pytest.approx(2.0)
    assert row["relative_effect_ci_high"] == pytest.approx(2.0)


def test_prompt_on_one_image_has_nan_ci_and_p_value():
    pairs = make_pairs(
        [("a", "p", "positive", 1.0, s, 0.8 + 0.01 * s) for s in range(3)]
    )
    row = stats.prompt_statistics(pairs, make_noise_floor({"a": 0.9})).iloc[0]
    assert row["n"] == 3 and row["n_images"] == 1
    for column in (
        "ssim_ci_low",
        "ssim_ci_high",
        "relative_effect_ci_low",
        "p_vs_noise_floor",
    ):
        assert np.isnan(row[column])


def test_cluster_bootstrap_ignores_repeats_within_an_image():
    """Image 'big' has 100 observations, the others one each.

    The statistic is the mean of per-image means and the bootstrap redraws
    images, so 100 identical observations count as one image: the mean and
    the interval equal those of the same data with 'big' observed once. An
    observation-level bootstrap would instead give a mean near 0.2 and a
    narrow interval dominated by 'big'.
    """
    others = [
        (f"img{i}", "p", "positive", 1.0, 0, value)
        for i, value in enumerate([0.5, 0.6, 0.7, 0.8])
    ]
    once = make_pairs([("big", "p", "positive", 1.0, 0, 0.2)] + others)
    hundred = make_pairs(
        [("big", "p", "positive", 1.0, s, 0.2) for s in range(100)] + others
    )
    noise_floor = make_noise_floor({"big": 0.9, **{f"img{i}": 0.9 for i in range(4)}})
    row_once = stats.prompt_statistics(once, noise_floor).iloc[0]
    row_hundred = stats.prompt_statistics(hundred, noise_floor).iloc[0]
    assert row_hundred["n"] == 104 and row_hundred["n_images"] == 5
    assert row_hundred["ssim_mean"] == pytest.approx(0.56)
    for column in (
        "ssim_mean",
        "ssim_ci_low",
        "ssim_ci_high",
        "effect",
        "relative_effect",
        "relative_effect_ci_low",
        "relative_effect_ci_high",
    ):
        assert row_hundred[column] == pytest.approx(row_once[column])
    assert row_hundred["ssim_ci_high"] - row_hundred["ssim_ci_low"] > 0.2


def test_nan_metrics_are_dropped_and_not_counted():
    pairs = varied_pairs()
    noise_floor = varied_noise_floor()
    with_nan = pd.concat(
        [
            pairs,
            make_pairs(
                [
                    ("img0", "pos_1", "positive", 1.0, 2, np.nan),
                    ("img_bad", "pos_1", "positive", 1.0, 0, np.nan),
                ]
            ),
        ],
        ignore_index=True,
    )
    noise_with_nan = pd.concat(
        [noise_floor, make_noise_floor({"img0": np.nan})], ignore_index=True
    )
    expected = stats.prompt_statistics(pairs, noise_floor)
    actual = stats.prompt_statistics(with_nan, noise_with_nan)
    pd.testing.assert_frame_equal(actual, expected)
    assert (actual["n"] == 16).all() and (actual["n_images"] == 8).all()


def test_prompt_statistics_rows_and_columns():
    table = stats.prompt_statistics(varied_pairs(), varied_noise_floor(), metric="ssim")
    assert list(table["prompt_id"]) == ["neg_1", "neg_2", "pos_1", "pos_2"]
    assert list(table["kind"]) == ["negative", "negative", "positive", "positive"]
    assert list(table["emphasis"]) == [1.0, 2.0, 1.0, 2.0]
    assert list(table.columns) == [
        "prompt_id",
        "kind",
        "emphasis",
        "n",
        "n_images",
        "ssim_mean",
        "ssim_std",
        "ssim_ci_low",
        "ssim_ci_high",
        "noise_floor_mean",
        "effect",
        "noise_effect",
        "relative_effect",
        "relative_effect_ci_low",
        "relative_effect_ci_high",
        "p_vs_noise_floor",
        "n_below_calibrated",
    ]


def test_prompt_statistics_uses_the_named_metric_column():
    pairs = varied_pairs().rename(columns={"ssim": "edge_f1"})
    noise_floor = varied_noise_floor().rename(columns={"ssim": "edge_f1"})
    table = stats.prompt_statistics(pairs, noise_floor, metric="edge_f1")
    assert {"edge_f1_mean", "edge_f1_std", "edge_f1_ci_low", "edge_f1_ci_high"} <= set(
        table.columns
    )


def test_prompt_statistics_do_not_depend_on_row_order():
    pairs, noise_floor = varied_pairs(), varied_noise_floor()
    shuffled = pairs.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(
        stats.prompt_statistics(shuffled, noise_floor),
        stats.prompt_statistics(pairs, noise_floor),
    )


def test_few_images_are_flagged_below_the_calibrated_minimum():
    few = stats.prompt_statistics(varied_pairs(n_images=stats.CALIBRATED_MIN_IMAGES - 1), varied_noise_floor())
    enough = stats.prompt_statistics(
        varied_pairs(n_images=stats.CALIBRATED_MIN_IMAGES), varied_noise_floor(stats.CALIBRATED_MIN_IMAGES)
    )
    assert few["n_below_calibrated"].all() and not enough["n_below_calibrated"].any()


def test_prompt_row_does_not_depend_on_other_prompts():
    pairs, noise_floor = varied_pairs(), varied_noise_floor()
    full = stats.prompt_statistics(pairs, noise_floor)
    alone = stats.prompt_statistics(pairs[pairs["prompt_id"] == "pos_2"], noise_floor)
    pd.testing.assert_frame_equal(
        alone, full[full["prompt_id"] == "pos_2"].reset_index(drop=True)
    )


# --- emphasis_trend -------------------------------------------------------


def trend_pairs(
    dissimilarity_by_emphasis: dict[float, float], kind: str, n_images: int = 6
):
    return make_pairs(
        [
            (f"img{i}", f"{kind}_{emphasis}", kind, emphasis, seed, 1.0 - dissimilarity)
            for i in range(n_images)
            for emphasis, dissimilarity in dissimilarity_by_emphasis.items()
            for seed in (0, 1)
        ]
    )


def test_strictly_monotone_trend_gives_rho_one_with_collapsed_ci():
    pairs = pd.concat(
        [
            trend_pairs({1.0: 0.1, 1.5: 0.2, 2.0: 0.4}, "positive"),
            trend_pairs({1.0: 0.3, 1.5: 0.2, 2.0: 0.1}, "negative"),
        ]
    )
    table = stats.emphasis_trend(pairs, n_resamples=N_RESAMPLES).set_index("kind")
    assert table.loc["positive", "rho"] == pytest.approx(1.0)
    assert table.loc["positive", "rho_ci_low"] == pytest.approx(1.0)
    assert table.loc["positive", "rho_ci_high"] == pytest.approx(1.0)
    assert table.loc["negative", "rho"] == pytest.approx(-1.0)
    assert table.loc["negative", "rho_ci_high"] == pytest.approx(-1.0)
    assert table.loc["positive", "p_value"] < 1e-6
    assert table.loc["positive", "n_prompts"] == 3
    assert table.loc["positive", "n_images"] == 6


def test_trend_matches_scipy_on_cell_means():
    pairs = varied_pairs()
    table = stats.emphasis_trend(pairs, n_resamples=N_RESAMPLES).set_index("kind")
    positive = pairs[pairs["kind"] == "positive"]
    cells = (
        positive.groupby(["image_id", "prompt_id", "emphasis"])["ssim"]
        .mean()
        .reset_index()
    )
    expected = scipy_stats.spearmanr(cells["emphasis"], 1.0 - cells["ssim"])
    assert table.loc["positive", "rho"] == pytest.approx(expected.statistic)
    assert table.loc["positive", "p_value"] == pytest.approx(expected.pvalue)
    assert (
        table.loc["positive", "rho_ci_low"]
        <= expected.statistic
        <= table.loc["positive", "rho_ci_high"]
    )
    assert list(table.columns) == [
        "n_prompts",
        "n_images",
        "rho",
        "rho_ci_low",
        "rho_ci_high",
        "p_value",
        "rho_within_image",
        "rho_within_image_ci_low",
        "rho_within_image_ci_high",
    ]


def test_trend_without_variation_is_nan():
    pairs = trend_pairs({1.0: 0.2, 2.0: 0.2}, "positive")
    row = stats.emphasis_trend(pairs, n_resamples=N_RESAMPLES).iloc[0]
    assert row[
        ["rho", "rho_ci_low", "rho_ci_high", "rho_within_image", "rho_within_image_ci_low",
         "rho_within_image_ci_high"]
    ].isna().all()


def test_trend_drops_nan_and_is_deterministic():
    pairs = varied_pairs()
    with_nan = pd.concat(
        [pairs, make_pairs([("img_bad", "pos_1", "positive", 1.0, 0, np.nan)])],
        ignore_index=True,
    )
    first = stats.emphasis_trend(with_nan, n_resamples=N_RESAMPLES, seed=3)
    pd.testing.assert_frame_equal(
        first, stats.emphasis_trend(pairs, n_resamples=N_RESAMPLES, seed=3)
    )
    assert (first["n_images"] == 8).all()
    other = stats.emphasis_trend(pairs, n_resamples=N_RESAMPLES, seed=4)
    pd.testing.assert_series_equal(first["rho"], other["rho"])
    assert not np.allclose(first["rho_ci_low"], other["rho_ci_low"])


def test_trend_ci_resamples_images_not_cells():
    """Two images: one with a perfect trend, one flat.

    Redrawing whole images yields only three resamples: both images (the
    full data), the trending image twice (rho 1) and the flat image twice
    (constant, dropped). So the interval runs exactly from the full-data rho
    to 1; redrawing single cells would produce many other values.
    """
    rows = [
        ("trend", f"p{e}", "positive", e, 0, 1.0 - 0.1 * e) for e in (1.0, 2.0, 3.0)
    ]
    rows += [("flat", f"p{e}", "positive", e, 0, 0.5) for e in (1.0, 2.0, 3.0)]
    row = stats.emphasis_trend(make_pairs(rows), n_resamples=N_RESAMPLES).iloc[0]
    assert 0.0 < row["rho"] < 1.0
    assert row["rho_ci_low"] == pytest.approx(row["rho"])
    assert row["rho_ci_high"] == pytest.approx(1.0)
    # The flat image has no rho of its own; the trending one's is 1.
    assert row["rho_within_image"] == pytest.approx(1.0)


def test_within_image_trend_is_not_diluted_by_image_levels():
    """Both images rise strictly with emphasis, one from a higher level: the
    pooled rho is well below 1, the within-image rho is exactly 1."""
    rows = [("low", f"p{e}", "positive", e, 0, 1.0 - 0.1 * e) for e in (1.0, 2.0, 3.0)]
    rows += [("high", f"p{e}", "positive", e, 0, 0.6 - 0.1 * e) for e in (1.0, 2.0, 3.0)]
    row = stats.emphasis_trend(make_pairs(rows), n_resamples=N_RESAMPLES).iloc[0]
    assert row["rho"] < 0.6
    assert row["rho_within_image"] == pytest.approx(1.0)
    assert row["rho_within_image_ci_low"] == pytest.approx(1.0)
    assert row["rho_within_image_ci_high"] == pytest.approx(1.0)


def test_within_image_trend_averages_images_that_disagree():
    """One image rises with emphasis and one falls: the mean within-image rho
    is 0, and redrawing images spans every value from -1 to 1."""
    rows = [("rises", f"p{e}", "positive", e, 0, 1.0 - 0.1 * e) for e in (1.0, 2.0, 3.0)]
    rows += [("falls", f"p{e}", "positive", e, 0, 0.5 + 0.1 * e) for e in (1.0, 2.0, 3.0)]
    row = stats.emphasis_trend(make_pairs(rows), n_resamples=N_RESAMPLES).iloc[0]
    assert row["rho_within_image"] == pytest.approx(0.0)
    assert row["rho_within_image_ci_low"] == pytest.approx(-1.0)
    assert row["rho_within_image_ci_high"] == pytest.approx(1.0)


# Paired quality deltas ------------------------------------------------------


def test_benjamini_hochberg_by_hand():
    # Sorted: 0.01, 0.03, 0.04, 0.20 with m = 4 (the NaN is no test):
    # m p / rank = 0.04, 0.06, 0.0533, 0.20; the running minimum from the
    # largest p down lowers 0.06 to 0.0533.
    q = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.20, np.nan])
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.20, np.nan], rtol=1e-12)


def test_benjamini_hochberg_edge_cases():
    assert stats.benjamini_hochberg([]).shape == (0,)
    assert np.isnan(stats.benjamini_hochberg([np.nan, np.nan])).all()
    np.testing.assert_allclose(stats.benjamini_hochberg([0.5, 0.9]), [0.9, 0.9])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got \[1.5\]"):
        stats.benjamini_hochberg([0.1, 1.5])


def quality_table(rows: list[tuple[str, str, int, float]], metric: str = "sharpness") -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "condition", "seed", metric])


# Three images, two seeds. Deltas of "sharp": a (1, 3), b (4, 2), c (-1, 3):
# image means 2, 3, 1. Baseline seed differences: a 2, b 6, c 0.
KNOWN_VALUES = [
    ("a", "base", 0, 10.0), ("a", "base", 1, 12.0), ("a", "sharp", 0, 11.0), ("a", "sharp", 1, 15.0),
    ("b", "base", 0, 20.0), ("b", "base", 1, 26.0), ("b", "sharp", 0, 24.0), ("b", "sharp", 1, 28.0),
    ("c", "base", 0, 5.0), ("c", "base", 1, 5.0), ("c", "sharp", 0, 4.0), ("c", "sharp", 1, 8.0),
]


def test_quality_deltas_known_values():
    row = stats.quality_deltas(quality_table(KNOWN_VALUES), "base", ["sharpness"]).iloc[0]
    assert (row["condition"], row["metric"], row["n"], row["n_images"]) == ("sharp", "sharpness", 6, 3)
    assert row["delta_mean"] == pytest.approx(2.0)
    assert row["noise_floor"] == pytest.approx(8.0 / 3.0)
    # Image deltas 2, 3, 1: mean 2, standard error 1 / sqrt(3).
    half_width = scipy_stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((2.0 - half_width, 2.0 + half_width))
    assert row["p_value"] == pytest.approx(2 * scipy_stats.t.sf(2.0 * np.sqrt(3), 2))
    assert row["n_below_calibrated"]


def test_quality_deltas_rows_columns_and_metrics():
    table = quality_table(KNOWN_VALUES)
    table["brisque"] = -table["sharpness"]
    extra = table[table["condition"] == "sharp"].assign(condition="another")
    result = stats.quality_deltas(pd.concat([table, extra]), "base", ["sharpness", "brisque"])
    assert list(result.columns) == [
        "condition", "metric", "n", "n_images", "delta_mean", "delta_ci_low", "delta_ci_high",
        "noise_floor", "p_value", "n_below_calibrated",
    ]
    assert list(zip(result["condition"], result["metric"])) == [
        ("another", "sharpness"), ("another", "brisque"), ("sharp", "sharpness"), ("sharp", "brisque"),
    ]
    assert result["delta_mean"].tolist() == pytest.approx([2.0, -2.0, 2.0, -2.0])
    assert result["noise_floor"].tolist() == pytest.approx([8.0 / 3.0] * 4)


def test_noise_floor_averages_seed_pairs_within_an_image_first():
    # Image x: three seeds 0, 1, 3 -> pair differences 1, 3, 2, mean 2.
    # Image y: two seeds, difference 5. Per image first: (2 + 5) / 2 = 3.5,
    # where pooling the four pairs would give 2.75.
    rows = [("x", "base", 0, 0.0), ("x", "base", 1, 1.0), ("x", "base", 2, 3.0),
            ("y", "base", 0, 0.0), ("y", "base", 1, 5.0)]
    rows += [(image, "v", seed, value + 1.0) for image, _, seed, value in rows]
    row = stats.quality_deltas(quality_table(rows), "base", ["sharpness"]).iloc[0]
    assert row["noise_floor"] == pytest.approx(3.5)
    assert (row["n"], row["delta_mean"]) == (5, pytest.approx(1.0))


def test_quality_deltas_pair_by_seed_and_drop_nan():
    rows = KNOWN_VALUES + [
        ("a", "sharp", 2, 99.0),  # no baseline of seed 2: not paired
        ("d", "base", 0, np.nan), ("d", "sharp", 0, 3.0),  # baseline not computed
        ("e", "base", 0, 1.0), ("e", "sharp", 0, np.nan),  # variant not computed
    ]
    row = stats.quality_deltas(quality_table(rows), "base", ["sharpness"]).iloc[0]
    assert (row["n"], row["n_images"]) == (6, 3)
    assert row["delta_mean"] == pytest.approx(2.0)
    assert row["noise_floor"] == pytest.approx(8.0 / 3.0)


def test_quality_deltas_without_change_or_data_do_not_crash():
    same = [(image, condition, seed, value) for image, _, seed, value in KNOWN_VALUES[::4] + KNOWN_VALUES[1::4]
            for condition in ("base", "same")]
    row = stats.quality_deltas(quality_table(same), "base", ["sharpness"]).iloc[0]
    assert (row["delta_mean"], row["delta_ci_low"], row["delta_ci_high"]) == (0.0, 0.0, 0.0)
    assert np.isnan(row["p_value"])

    nothing = quality_table(KNOWN_VALUES).assign(sharpness=np.nan)
    row = stats.quality_deltas(nothing, "base", ["sharpness"]).iloc[0]
    assert (row["n"], row["n_images"]) == (0, 0)
    assert row[["delta_mean", "delta_ci_low", "delta_ci_high", "noise_floor", "p_value"]].isna().all()


def test_quality_deltas_refuse_tables_they_cannot_pair():
    table = quality_table(KNOWN_VALUES)
    with pytest.raises(ValueError, match=r"baseline condition 'none' is not in the table; it has \['base', 'sharp'\]"):
        stats.quality_deltas(table, "none", ["sharpness"])
    with pytest.raises(ValueError, match="quality table has no column 'brisque'"):
        stats.quality_deltas(table, "base", ["sharpness", "brisque"])
    with pytest.raises(ValueError, match=r"2 rows repeat a \(condition, image_id, seed\), e.g. \('base', 'a', 0\)"):
        stats.quality_deltas(pd.concat([table, table.iloc[:1]]), "base", ["sharpness"])
