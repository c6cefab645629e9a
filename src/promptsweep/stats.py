"""Cluster-aware statistics over long-format similarity tables.

Every pair of images generated from the same source image shares that image's
content and Canny edges, so observations from one image are not independent.
Every estimate therefore first averages within each image, so that images are
the units: the intervals of means are t intervals over image means and the
tests are t-tests of the same means, calibrated by simulation in
``benchmarks/calibration.py``. The emphasis trend's Spearman correlations
keep a cluster bootstrap that resamples whole images (Davison & Hinkley,
"Bootstrap Methods and their Application", 1997, sec. 3.8).

The metric is a similarity in which 1 means identical (SSIM, MS-SSIM, edge F1);
dissimilarity is ``1 - metric``. Rows whose metric is NaN (excluded, invalid
generations) are dropped before anything is computed, and every count reports
what remains. Randomness comes only from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as scipy_stats

IMAGE = "image_id"
PROMPT = "prompt_id"
# The fewest images from which every interval and test of the tables held its
# nominal level (coverage in [0.93, 0.97], false positives 5% within
# Monte-Carlo error) in benchmarks/results/calibration.csv, for normal,
# heavy-tailed (t, 3 d.f.) and the default study's own per-image values: the
# smallest study simulated. Strongly skewed values (lognormal, skewness 6)
# need about 200: see docs/statistics.md.
CALIBRATED_MIN_IMAGES = 5
KIND = "kind"
EMPHASIS = "emphasis"


def _image_resamples(
    n_images: int, n_resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Indices of images drawn with replacement: one row per bootstrap resample."""
    return rng.integers(0, n_images, size=(n_resamples, n_images))


def _percentile_interval(
    replicates: npt.NDArray[np.float64], confidence: float
) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN replicates."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return (np.nan, np.nan)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return (float(low), float(high))


def _image_means_array(image_means: npt.ArrayLike) -> npt.NDArray[np.float64]:
    means = np.asarray(image_means, dtype=np.float64)
    if means.ndim != 1:
        raise ValueError(f"image_means must be 1-D, got shape {means.shape}")
    return means


def mean_ci(image_means: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student t confidence interval of the mean over images.

    ``image_means`` holds one value per image (cluster): the mean of that
    image's observations over its seeds, so every image weighs the same and
    the interval's width reflects the number of images, not of
    observations. The interval is ``mean -+ t_{n-1} * s / sqrt(n)`` (Student,
    Biometrika 6(1), 1908), computed by SciPy's ``ttest_1samp``.

    Why t and not a bootstrap: in ``benchmarks/results/calibration.csv``
    (2,000 simulated studies a row) the percentile cluster bootstrap covered
    the true mean 90.7% of the time with ten normal images and 89.3% with
    heavy-tailed (t, 3 d.f.) ones, and BCa no better (90.4%, 86.9%); the t
    interval covered 95.0% and 95.8%, and 95.4% and 95.9% with five images.
    It is also exactly the interval of :func:`mean_test_p`, so an interval
    that excludes 0 and a p-value below 0.05 always go together.

    With fewer than two images the spread is unknown and ``(nan, nan)`` is
    returned; when every image has the same value the interval is that value.
    """
    means = _image_means_array(image_means)
    if means.size < 2:
        return (np.nan, np.nan)
    if np.all(means == means[0]):
        return (float(means[0]), float(means[0]))
    interval = scipy_stats.ttest_1samp(means, 0.0).confidence_interval(confidence)
    return (float(interval.low), float(interval.high))


def mean_test_p(image_means: npt.ArrayLike) -> float:
    """Two-sided one-sample t-test p-value that the mean over images is 0.

    The test of the same quantity as :func:`mean_ci` (the mean, not the
    median or symmetry about 0): p < 1 - confidence exactly when that
    interval excludes 0. NaN with fewer than two images or equal values.
    """
    means = _image_means_array(image_means)
    if means.size < 2 or np.all(means == means[0]):
        return np.nan
    return float(scipy_stats.ttest_1samp(means, 0.0).pvalue)


def fieller_ratio_ci(
    numerators: npt.ArrayLike, denominators: npt.ArrayLike, confidence: float = 0.95
) -> tuple[float, float]:
    """Fieller's confidence interval of mean(numerators) / mean(denominators).

    Element i of both arrays belongs to image i. The interval is every ratio
    r for which a paired t-test does not reject mean(numerators - r *
    denominators) = 0 (Fieller, J. R. Stat. Soc. Suppl. 7(1), 1940), so r
    = 1 lies outside it exactly when the paired t-test of numerators against
    denominators has p < 1 - confidence. Neither SciPy nor statsmodels
    provides it; it is the root pair of one quadratic. Where the
    denominators' mean is not clearly above 0 the set is unbounded and
    ``(nan, nan)`` is returned.
    """
    x = np.asarray(numerators, dtype=np.float64)
    y = np.asarray(denominators, dtype=np.float64)
    n = x.size
    if n < 2:
        return (np.nan, np.nan)
    t_squared = scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1) ** 2
    covariance = np.cov(x, y, ddof=1) / n
    x_bar, y_bar = x.mean(), y.mean()
    a = y_bar**2 - t_squared * covariance[1, 1]
    b = x_bar * y_bar - t_squared * covariance[0, 1]
    c = x_bar**2 - t_squared * covariance[0, 0]
    discriminant = b**2 - a * c
    if a <= 0 or discriminant < 0:
        return (np.nan, np.nan)
    root = np.sqrt(discriminant)
    return (float((b - root) / a), float((b + root) / a))


def below_calibrated(n_images: int) -> bool:
    """Whether a mean over ``n_images`` images has fewer than the calibrated minimum."""
    return n_images < CALIBRATED_MIN_IMAGES


def per_image_mean(observations: pd.DataFrame, value: str) -> pd.Series:
    """Mean of ``value`` per image over its non-NaN rows, indexed by image_id
    in sorted order; an image with no such row is absent."""
    return observations.dropna(subset=[value]).groupby(IMAGE, sort=True)[value].mean()


def _prompt_row(
    prompt_pairs: pd.DataFrame,
    noise_metric_by_image: pd.Series,
    metric: str,
) -> dict[str, float | int | bool]:
    image_metric = per_image_mean(prompt_pairs, metric)
    paired_images = image_metric.index.intersection(noise_metric_by_image.index)
    paired_prompt_dissimilarity = 1.0 - image_metric.loc[paired_images].to_numpy()
    paired_noise_dissimilarity = (
        1.0 - noise_metric_by_image.loc[paired_images].to_numpy()
    )

    noise_effect = (
        float(paired_noise_dissimilarity.mean()) if paired_images.size else np.nan
    )
    relative_effect = (
        float(paired_prompt_dissimilarity.mean()) / noise_effect
        if noise_effect > 0
        else np.nan
    )
    metric_ci = mean_ci(image_metric.to_numpy())
    relative_ci = fieller_ratio_ci(paired_prompt_dissimilarity, paired_noise_dissimilarity)
    return {
        "n": len(prompt_pairs),
        "n_images": image_metric.size,
        f"{metric}_mean": float(image_metric.mean()),
        f"{metric}_std": float(prompt_pairs[metric].std(ddof=1)),
        f"{metric}_ci_low": metric_ci[0],
        f"{metric}_ci_high": metric_ci[1],
        "noise_floor_mean": float(noise_metric_by_image.loc[paired_images].mean()),
        "effect": float((1.0 - image_metric).mean()),
        "noise_effect": noise_effect,
        "relative_effect": relative_effect,
        "relative_effect_ci_low": relative_ci[0],
        "relative_effect_ci_high": relative_ci[1],
        "p_vs_noise_floor": mean_test_p(
            paired_prompt_dissimilarity - paired_noise_dissimilarity
        ),
        "n_below_calibrated": below_calibrated(image_metric.size),
    }


def prompt_statistics(
    pairs: pd.DataFrame,
    noise_floor: pd.DataFrame,
    metric: str = "ssim",
) -> pd.DataFrame:
    """Per-prompt change of the generation relative to the seed-alone change.

    ``pairs`` has columns image_id, prompt_id, kind, emphasis, seed and
    ``metric``: the similarity between the baseline generation and the
    generation with the extra prompt, same image and seed. ``noise_floor`` has
    columns image_id, seed_a, seed_b and ``metric``: the similarity between
    two baseline generations of one image under different seeds, i.e. the
    change the seed alone causes.

    Returns one row per prompt_id, sorted by kind, emphasis and prompt_id,
    with kind, emphasis and:

    - ``n``, ``n_images``: pairs and images left after dropping NaN metrics.
    - ``{metric}_mean``: mean over images of the per-image mean metric
      (equals the mean over pairs when every image has equally many pairs).
    - ``{metric}_std``: standard deviation (ddof=1) over pairs.
    - ``{metric}_ci_low/high``: 95% t interval over images of
      ``{metric}_mean`` (see :func:`mean_ci`).
    - ``effect``: mean over images of per-image mean dissimilarity
      ``1 - metric``, i.e. ``1 - {metric}_mean``.
    - ``noise_floor_mean``, ``noise_effect``: mean per-image noise-floor
      metric and its dissimilarity ``1 - metric``, over the prompt's images
      that have a noise-floor measurement.
    - ``relative_effect``: prompt dissimilarity / noise-floor dissimilarity
      over those same images: the prompt's change as a multiple of the change
      a new seed causes (1: as large as a reseed; 0: no change). When every
      image has a noise floor, as in a complete run, it equals
      ``effect / noise_effect``. NaN if the noise effect is 0.
    - ``relative_effect_ci_low/high``: 95% Fieller interval of the ratio
      (:func:`fieller_ratio_ci`), images paired.
    - ``p_vs_noise_floor``: two-sided paired t-test that the mean per-image
      prompt dissimilarity equals the mean noise-floor dissimilarity, i.e.
      that ``relative_effect`` is 1; it rejects exactly when the interval
      above excludes 1. NaN with fewer than two paired images or when all
      differences are equal.
    - ``n_below_calibrated``: fewer images than :data:`CALIBRATED_MIN_IMAGES`.

    A prompt's row depends only on its own data and the noise floor.
    """
    valid_pairs = pairs.dropna(subset=[metric])
    noise_metric_by_image = per_image_mean(noise_floor, metric)
    rows = []
    for (prompt_id, kind, emphasis), prompt_pairs in valid_pairs.groupby(
        [PROMPT, KIND, EMPHASIS], sort=True
    ):
        row = _prompt_row(prompt_pairs, noise_metric_by_image, metric)
        rows.append({PROMPT: prompt_id, KIND: kind, EMPHASIS: emphasis, **row})
    if not rows:
        raise ValueError(f"no pairs with a non-NaN {metric!r} value")
    table = pd.DataFrame(rows)
    return table.sort_values([KIND, EMPHASIS, PROMPT], ignore_index=True)


def _spearman_rho(emphasis: np.ndarray, dissimilarity: np.ndarray) -> float:
    with warnings.catch_warnings():
        # Constant input (e.g. a resample of one image) has no defined rho; NaN
        # is the intended answer, so scipy's warning is noise here.
        warnings.simplefilter("ignore", scipy_stats.ConstantInputWarning)
        return float(scipy_stats.spearmanr(emphasis, dissimilarity).statistic)


def _mean_of_defined(values: npt.NDArray[np.float64]) -> float:
    """Mean of the non-NaN values; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else np.nan


def emphasis_trend(
    pairs: pd.DataFrame,
    metric: str = "ssim",
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Monotone trend of a prompt's effect with its emphasis, per prompt kind.

    For each kind, the points are the (image, prompt) cells: x is the
    prompt's emphasis and y the cell's mean dissimilarity ``1 - metric``
    (averaged over seeds). ``rho`` is Spearman's rank correlation over all
    cells pooled (Spearman, Am. J. Psychol. 15(1), 1904), and ``p_value`` is
    scipy's p-value for it, which treats cells as independent. The 95%
    interval ``rho_ci_low/high`` is the honest uncertainty: a percentile
    cluster bootstrap that redraws images with replacement, keeping all
    cells of a drawn image; resamples with undefined rho (constant data) are
    left out of the interval.

    Pooling mixes two things: how emphasis changes an image, and how much
    images differ from each other overall. An image that reacts strongly to
    every prompt sits above one that reacts weakly, and that spread pulls the
    pooled rho toward 0 even when every image rises with emphasis. So
    ``rho_within_image`` is the mean over images of each image's own
    Spearman rho between emphasis and its cells' dissimilarity (images with
    fewer than two cells of the kind, or whose cells are all equal, have none
    and are left out of this mean; ``n_images`` still counts them), with its own
    cluster-bootstrap interval ``rho_within_image_ci_low/high``. It is 1 when
    every image's effect rises strictly with emphasis, whatever their levels.

    Returns columns kind, n_prompts, n_images, rho, rho_ci_low, rho_ci_high,
    p_value, rho_within_image, rho_within_image_ci_low,
    rho_within_image_ci_high, one row per kind in sorted order. Each kind's
    bootstrap draws from ``default_rng(seed)`` afresh.
    """
    valid_pairs = pairs.dropna(subset=[metric])
    cells = (
        valid_pairs.groupby([KIND, IMAGE, PROMPT, EMPHASIS], sort=True)[metric]
        .mean()
        .reset_index()
    )
    cells["dissimilarity"] = 1.0 - cells[metric]

    rows = []
    for kind, kind_cells in cells.groupby(KIND, sort=True):
        emphasis = kind_cells[EMPHASIS].to_numpy(dtype=np.float64)
        dissimilarity = kind_cells["dissimilarity"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy_stats.ConstantInputWarning)
            correlation = scipy_stats.spearmanr(emphasis, dissimilarity)

        # Row positions of each image's cells, so a resample is a concatenation.
        cells_by_image = list(
            kind_cells.reset_index(drop=True).groupby(IMAGE, sort=True).indices.values()
        )
        image_rhos = np.array(
            [
                _spearman_rho(emphasis[image_rows], dissimilarity[image_rows])
                for image_rows in cells_by_image
            ]
        )
        rng = np.random.default_rng(seed)
        replicate_rhos = np.full(n_resamples, np.nan)
        replicate_within = np.full(n_resamples, np.nan)
        if len(cells_by_image) >= 2:
            for i, drawn in enumerate(
                _image_resamples(len(cells_by_image), n_resamples, rng)
            ):
                rows_drawn = np.concatenate([cells_by_image[j] for j in drawn])
                replicate_rhos[i] = _spearman_rho(
                    emphasis[rows_drawn], dissimilarity[rows_drawn]
                )
                replicate_within[i] = _mean_of_defined(image_rhos[drawn])
        rho_ci = _percentile_interval(replicate_rhos, 0.95)
        within_ci = _percentile_interval(replicate_within, 0.95)

        rows.append(
            {
                KIND: kind,
                "n_prompts": kind_cells[PROMPT].nunique(),
                "n_images": len(cells_by_image),
                "rho": float(correlation.statistic),
                "rho_ci_low": rho_ci[0],
                "rho_ci_high": rho_ci[1],
                "p_value": float(correlation.pvalue),
                "rho_within_image": _mean_of_defined(image_rhos),
                "rho_within_image_ci_low": within_ci[0],
                "rho_within_image_ci_high": within_ci[1],
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            KIND,
            "n_prompts",
            "n_images",
            "rho",
            "rho_ci_low",
            "rho_ci_high",
            "p_value",
            "rho_within_image",
            "rho_within_image_ci_low",
            "rho_within_image_ci_high",
        ],
    )


# Paired quality deltas ------------------------------------------------------

CONDITION = "condition"
SEED = "seed"


def benjamini_hochberg(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (q-values), same shape as given.

    With the m defined p-values sorted ascending, p_(i) becomes
    ``min over j >= i of m * p_(j) / j``, capped at 1; rejecting every
    hypothesis with q <= alpha keeps the expected false discovery rate at
    most alpha for independent or positively dependent tests (Benjamini &
    Hochberg, J. R. Stat. Soc. B 57(1), 1995). Computed by statsmodels'
    ``multipletests(method="fdr_bh")``. NaN p-values (tests not made) stay
    NaN and are not counted in m.
    """
    # statsmodels takes seconds to import: only callers of this pay for it.
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    defined = ~np.isnan(p)
    if np.any((p[defined] < 0) | (p[defined] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[defined & ((p < 0) | (p > 1))]}")
    q = np.full(p.shape, np.nan)
    if defined.any():
        q[defined] = multipletests(p[defined], method="fdr_bh")[1]
    return q


def _seed_noise_by_image(baseline: pd.DataFrame, metric: str) -> pd.Series:
    """Per image, the mean |difference| of ``metric`` between the baselines
    of each two of its seeds; images with fewer than two seeds are absent."""
    valid = baseline.dropna(subset=[metric])[[IMAGE, SEED, metric]]
    pairs = valid.merge(valid, on=IMAGE, suffixes=("_a", "_b"))
    pairs = pairs[pairs[f"{SEED}_a"] < pairs[f"{SEED}_b"]]
    differences = pd.DataFrame(
        {IMAGE: pairs[IMAGE], "difference": (pairs[f"{metric}_a"] - pairs[f"{metric}_b"]).abs()}
    )
    return per_image_mean(differences, "difference")


def _check_quality_table(values: pd.DataFrame, baseline: str, metrics: Sequence[str]) -> None:
    missing = [column for column in (IMAGE, CONDITION, SEED, *metrics) if column not in values.columns]
    if missing:
        raise ValueError(f"quality table has no column {', '.join(map(repr, missing))}")
    conditions = set(values[CONDITION])
    if baseline not in conditions:
        raise ValueError(
            f"baseline condition {baseline!r} is not in the table; it has {sorted(conditions, key=str)}"
        )
    repeated = values[values.duplicated([CONDITION, IMAGE, SEED], keep=False)]
    if not repeated.empty:
        # to_dict gives Python scalars, which print without numpy's type names.
        first = tuple(repeated[[CONDITION, IMAGE, SEED]].head(1).to_dict("records")[0].values())
        raise ValueError(
            f"{len(repeated)} rows repeat a (condition, image_id, seed), e.g. {first!r}: "
            "each generation must appear once to be paired"
        )


def paired_deltas(values: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """Per variant generation paired with the same image and seed's
    ``baseline``: columns condition, image_id, seed and ``delta``, the
    variant's ``metric`` minus the baseline's (NaN where either is NaN).
    Variants without a baseline generation are left out."""
    base = values[values[CONDITION] == baseline][[IMAGE, SEED, metric]]
    variants = values[values[CONDITION] != baseline][[CONDITION, IMAGE, SEED, metric]]
    paired = variants.merge(base, on=[IMAGE, SEED], suffixes=("", "_baseline"))
    paired["delta"] = paired[metric] - paired[f"{metric}_baseline"]
    return paired[[CONDITION, IMAGE, SEED, "delta"]]


def quality_deltas(
    values: pd.DataFrame,
    baseline: str,
    metrics: Sequence[str],
) -> pd.DataFrame:
    """How each condition changes each quality metric against the baseline.

    ``values`` is a long table with one row per generated image: columns
    image_id, condition, seed and one column per name in ``metrics`` (NaN
    where a value was not computed). Each (condition, image_id, seed) may
    appear once. A variant's delta is its value minus the ``baseline``
    condition's value for the same image and seed; pairs where either is NaN,
    or the baseline generation is missing, are left out.

    Returns one row per (condition, metric), conditions other than the
    baseline in sorted order and metrics in the given order, with:

    - ``n``, ``n_images``: paired deltas and images they come from.
    - ``delta_mean``: mean over images of each image's mean delta over its
      seeds, so every image weighs the same (as everywhere in this module).
    - ``delta_ci_low/high``: 95% t interval of ``delta_mean`` over images
      (:func:`mean_ci`).
    - ``noise_floor``: how much the metric moves with the seed alone: per
      image, the mean |difference| between the baselines of each two seeds;
      then the mean over the condition's images that have two or more
      baseline seeds. A ``|delta_mean|`` well below it is a change smaller
      than a reseed causes in one image.
    - ``p_value``: two-sided one-sample t-test that ``delta_mean`` is 0
      (:func:`mean_test_p`), over one value per image, since images, not
      seeds, are the independent units. It tests the mean, the quantity of
      the interval beside it, so the two always agree. (A Wilcoxon
      signed-rank test, used before, tests symmetry about 0: on skewed
      deltas with mean 0 it rejected far more often than 5%.) NaN with fewer
      than two images or when every delta is equal. Adjust for the number
      of tests with :func:`benjamini_hochberg`.
    - ``n_below_calibrated``: fewer images than :data:`CALIBRATED_MIN_IMAGES`.
    """
    _check_quality_table(values, baseline, metrics)
    baseline_rows = values[values[CONDITION] == baseline]
    noise_by_metric = {metric: _seed_noise_by_image(baseline_rows, metric) for metric in metrics}
    deltas_by_metric = {
        metric: dict(tuple(paired_deltas(values, baseline, metric).groupby(CONDITION, sort=False)))
        for metric in metrics
    }
    no_pairs = pd.DataFrame(columns=[IMAGE, "delta"], dtype=np.float64)
    rows = []
    for condition in sorted(set(values[CONDITION]) - {baseline}):
        for metric in metrics:
            paired = deltas_by_metric[metric].get(condition, no_pairs)
            image_deltas = per_image_mean(paired, "delta")
            noise_by_image = noise_by_metric[metric]
            image_noise = noise_by_image.loc[image_deltas.index.intersection(noise_by_image.index)]
            ci_low, ci_high = mean_ci(image_deltas.to_numpy())
            rows.append(
                {
                    CONDITION: condition,
                    "metric": metric,
                    "n": int(paired["delta"].notna().sum()),
                    "n_images": image_deltas.size,
                    "delta_mean": float(image_deltas.mean()),
                    "delta_ci_low": ci_low,
                    "delta_ci_high": ci_high,
                    "noise_floor": float(image_noise.mean()),
                    "p_value": mean_test_p(image_deltas.to_numpy()),
                    "n_below_calibrated": below_calibrated(image_deltas.size),
                }
            )
    columns = [CONDITION, "metric", "n", "n_images", "delta_mean", "delta_ci_low",
               "delta_ci_high", "noise_floor", "p_value", "n_below_calibrated"]
    return pd.DataFrame(rows, columns=columns)
