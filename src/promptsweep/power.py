"""How many images and seeds does a study need? Power from the study's own values.

Every test of the study is a t-test of a mean over images
(:func:`promptsweep.stats.mean_test_p`), so its power follows from the
spread of the per-image values. Two answers per (prompt, quantity):

* ``mde_80``: the smallest effect this study's number of images detects with
  80% power at alpha = 0.05, from the noncentral t distribution
  (statsmodels' ``TTestPower``) and the observed spread between images;
* ``images_for_80``: how many images detect the *observed* effect with 80%
  power, from resampling the study's own per-image values (Efron &
  Tibshirani 1993, ch. 25), so a skewed metric's power is not taken from a
  normal model it does not follow. It stops at :data:`MAX_IMAGES`.

And per seed count: how much a third or fourth seed per image would narrow
the interval, from the within-image (seed) and between-image variance
components of a one-way random-effects model (Searle, Casella & McCulloch,
"Variance Components", 1992, ch. 3).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as scipy_stats

from promptsweep import stats

ALPHA = 0.05
POWER = 0.8
MAX_IMAGES = 1000
SIMULATIONS = 1000
EXTRA_SEEDS = (3, 4)
EFFECT = "change_vs_noise_floor"
IMAGE, SEED, VALUE = "image_id", "seed", "value"


def minimum_detectable_effect(sd: float, n_images: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest |mean| a two-sided one-sample t-test over ``n_images``
    values of standard deviation ``sd`` detects with ``power``; NaN where
    it cannot be said (fewer than two images, no spread)."""
    from statsmodels.stats.power import TTestPower

    if n_images < 2 or not np.isfinite(sd) or sd <= 0:
        return np.nan
    effect_size = TTestPower().solve_power(nobs=n_images, alpha=alpha, power=power, alternative="two-sided")
    return float(effect_size * sd)


def analytic_images_for_power(effect: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """Images a t-test needs to detect ``effect`` on normal values of
    standard deviation ``sd`` with ``power`` (not rounded)."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(effect_size=abs(effect) / sd, alpha=alpha, power=power))


def resampled_power(
    image_values: npt.ArrayLike, n_images: int, n_simulations: int = SIMULATIONS, seed: int = 0
) -> float:
    """Share of studies of ``n_images`` images, drawn with replacement from
    ``image_values``, whose t-test rejects a zero mean at alpha = 0.05. The
    test is :func:`stats.mean_test_p`'s, applied to all studies at once."""
    values = np.asarray(image_values, dtype=np.float64)
    draws = np.random.default_rng(seed).choice(values, size=(n_simulations, n_images))
    with warnings.catch_warnings():
        # A draw of equal values has no t statistic: NaN, which does not reject.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = scipy_stats.ttest_1samp(draws, 0.0, axis=1).pvalue
    return float(np.mean(p < ALPHA))


def images_for_power(
    image_values: npt.ArrayLike,
    power: float = POWER,
    max_images: int = MAX_IMAGES,
    n_simulations: int = SIMULATIONS,
    seed: int = 0,
) -> int | None:
    """The fewest images whose resampled power reaches ``power``; ``None``
    where even ``max_images`` do not (or the values cannot tell: fewer than
    two, or all equal). Bisection over the number of images, every size
    drawn with the same seed so that the power curve is smooth."""
    values = np.asarray(image_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or np.all(values == values[0]):
        return None
    if resampled_power(values, max_images, n_simulations, seed) < power:
        return None
    low, high = 1, max_images
    while high - low > 1:
        middle = (low + high) // 2
        if resampled_power(values, middle, n_simulations, seed) >= power:
            high = middle
        else:
            low = middle
    return high


def interval_width_ratios(per_seed: pd.DataFrame, seeds: Sequence[int] = EXTRA_SEEDS) -> dict[int, float]:
    """Width of the interval with k seeds per image, as a share of today's.

    ``per_seed`` has columns image_id, seed, value. The within-image
    variance s_w^2 is the pooled variance over seeds; the between-image
    variance of an image mean with k0 seeds is s_b^2 + s_w^2 / k0, so
    s_b^2 = var(image means) - s_w^2 / k0 (at least 0). With k seeds the
    interval's width scales with sqrt(s_b^2 + s_w^2 / k). NaN where there
    is one seed per image or no spread.
    """
    valid = per_seed.dropna(subset=[VALUE])
    counts = valid.groupby(IMAGE)[VALUE].count()
    seeds_now = float(counts.mean()) if len(counts) else 0.0
    multi = valid[valid[IMAGE].isin(counts[counts >= 2].index)]
    if multi.empty or len(counts) < 2:
        return {k: np.nan for k in seeds}
    within = float(multi.groupby(IMAGE)[VALUE].var(ddof=1).mean())
    total = float(valid.groupby(IMAGE)[VALUE].mean().var(ddof=1))
    between = max(total - within / seeds_now, 0.0)
    now = between + within / seeds_now
    if now <= 0:
        return {k: np.nan for k in seeds}
    return {k: float(np.sqrt((between + within / k) / now)) for k in seeds}


def _reading(detected: bool, images: int | None) -> str:
    if detected:
        return "detected" + (f"; {images} images give 80% power" if images is not None else "")
    if images is None:
        return f"not detected: compatible with no effect; even {MAX_IMAGES:,} images would not detect one this small"
    return (
        "not detected: compatible with no effect; only if the true effect is as large as observed "
        f"would {images} images detect it with 80% power"
    )


def power_row(prompt_id: str, quantity: str, per_seed: pd.DataFrame, seed: int = 0) -> dict:
    """One row of the power table from one quantity's per-(image, seed) values."""
    image_values = stats.per_image_mean(per_seed, VALUE)
    values = image_values.to_numpy()
    low, high = stats.mean_ci(values)
    detected = bool(low > 0 or high < 0)
    images = images_for_power(values, seed=seed)
    sd = float(values.std(ddof=1)) if values.size >= 2 else np.nan
    ratios = interval_width_ratios(per_seed)
    return {
        "prompt_id": prompt_id,
        "quantity": quantity,
        "n_images": int(values.size),
        "observed_effect": float(values.mean()) if values.size else np.nan,
        "sd_between_images": sd,
        "mde_80": minimum_detectable_effect(sd, values.size),
        "images_for_80": images,
        "images_for_80_capped": images is None,
        **{f"ci_width_{k}_seeds": ratio for k, ratio in ratios.items()},
        "reading": _reading(detected, images),
    }


def effect_values(pairs: pd.DataFrame, noise_floor: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (prompt, image, seed): the prompt's dissimilarity to the same-seed
    baseline minus the image's noise-floor dissimilarity, the quantity the
    summary tests against the noise floor."""
    noise = 1.0 - stats.per_image_mean(noise_floor, metric)
    valid = pairs.dropna(subset=[metric])
    values = valid[["prompt_id", IMAGE, SEED]].copy()
    values[VALUE] = (1.0 - valid[metric]) - valid[IMAGE].map(noise)
    return values.dropna(subset=[VALUE])


def delta_values(image_metrics: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """Per (condition, image, seed): the metric's change against the
    same-seed baseline, paired as :func:`stats.quality_deltas` pairs them."""
    paired = stats.paired_deltas(image_metrics, baseline, metric)
    return paired.rename(columns={"condition": "prompt_id", "delta": VALUE}).dropna(subset=[VALUE])


def power_table(
    effects: pd.DataFrame,
    image_metrics: pd.DataFrame,
    prompt_ids: Sequence[str],
    baseline: str,
    delta_metrics: Sequence[str],
) -> pd.DataFrame:
    """One row per (prompt, quantity): the change against the noise floor
    (``change_vs_noise_floor``, from :func:`effect_values`), then each
    metric's delta (``delta:<metric>``)."""
    sources = [(EFFECT, effects)]
    sources += [(f"delta:{metric}", delta_values(image_metrics, baseline, metric)) for metric in delta_metrics]
    rows = []
    for prompt_id in prompt_ids:
        for quantity, values in sources:
            per_seed = values[values["prompt_id"] == prompt_id]
            if not per_seed.empty:
                rows.append(power_row(prompt_id, quantity, per_seed))
    table = pd.DataFrame(rows)
    # Counts of images, empty where capped.
    return table.astype({"images_for_80": "Int64"}) if len(table) else table


def power_curves(effects: pd.DataFrame, image_counts: Sequence[int]) -> pd.DataFrame:
    """Resampled power of the test against the noise floor per prompt and
    number of images, from :func:`effect_values`: columns prompt_id,
    n_images, power."""
    rows = []
    for prompt_id, per_seed in effects.groupby("prompt_id", sort=False):
        image_values = stats.per_image_mean(per_seed, VALUE).to_numpy()
        if image_values.size < 2:
            continue
        for n_images in image_counts:
            rows.append({"prompt_id": prompt_id, "n_images": n_images, "power": resampled_power(image_values, n_images)})
    return pd.DataFrame(rows, columns=["prompt_id", "n_images", "power"])
