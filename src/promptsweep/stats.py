"""Cluster-aware statistics over long-format similarity tables.

Every pair of images generated from the same source image shares that image's
content and Canny edges, so observations from one image are not independent.
All confidence intervals here therefore come from a cluster bootstrap that
resamples whole images (Davison & Hinkley, "Bootstrap Methods and their
Application", 1997, sec. 3.8), and every estimate weights each image equally
by first averaging within the image.

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


def bootstrap_mean_ci(
    image_means: npt.ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile cluster-bootstrap confidence interval of a mean over images.

    ``image_means`` holds one value per image (cluster): the mean of that
    image's observations. Each of ``n_resamples`` resamples draws as many
    images as given, with replacement, and takes the mean of their per-image
    means; the interval is the (1 - confidence)/2 and (1 + confidence)/2
    quantiles of those resample means (Efron & Tibshirani, "An Introduction to
    the Bootstrap", 1993, ch. 13).

    Scheme: the statistic is the mean of per-image means, so every image
    weighs the same however many observations it has, and the interval's
    width reflects the number of images, not of observations: repeating an
    observation within an image leaves the interval unchanged.

    With fewer than two images there is no between-image variation to
    resample and ``(nan, nan)`` is returned.
    """
    means = np.asarray(image_means, dtype=np.float64)
    if means.ndim != 1:
        raise ValueError(f"image_means must be 1-D, got shape {means.shape}")
    if means.size < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    resample_means = means[_image_resamples(means.size, n_resamples, rng)].mean(axis=1)
    return _percentile_interval(resample_means, confidence)


def per_image_mean(observations: pd.DataFrame, value: str) -> pd.Series:
    """Mean of ``value`` per image over its non-NaN rows, indexed by image_id
    in sorted order; an image with no such row is absent."""
    return observations.dropna(subset=[value]).groupby(IMAGE, sort=True)[value].mean()


def _wilcoxon_p_value(differences: npt.NDArray[np.float64]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN when it is undefined."""
    if differences.size < 2 or np.all(differences == 0):
        return np.nan
    return float(scipy_stats.wilcoxon(differences, alternative="two-sided").pvalue)


def _ratio_of_means_ci(
    numerators: npt.NDArray[np.float64],
    denominators: npt.NDArray[np.float64],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Cluster-bootstrap interval of mean(numerators) / mean(denominators).

    Element i of both arrays belongs to image i; a resample draws images, so
    numerator and denominator always come from the same images.
    """
    if numerators.size < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    drawn = _image_resamples(numerators.size, n_resamples, rng)
    numerator_sums = numerators[drawn].sum(axis=1)
    denominator_sums = denominators[drawn].sum(axis=1)
    # A resample whose denominator is zero has no defined ratio.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            denominator_sums > 0, numerator_sums / denominator_sums, np.nan
        )
    return _percentile_interval(ratios, confidence)


def _prompt_row(
    prompt_pairs: pd.DataFrame,
    noise_metric_by_image: pd.Series,
    metric: str,
    n_resamples: int,
    seed: int,
) -> dict[str, float | int]:
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
    # Both intervals reseed with the same seed, so a prompt's numbers do not
    # depend on which other prompts are in the table or on their order.
    metric_ci = bootstrap_mean_ci(image_metric.to_numpy(), n_resamples, 0.95, seed)
    relative_ci = _ratio_of_means_ci(
        paired_prompt_dissimilarity, paired_noise_dissimilarity, n_resamples, 0.95, seed
    )
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
        "p_vs_noise_floor": _wilcoxon_p_value(
            paired_prompt_dissimilarity - paired_noise_dissimilarity
        ),
    }


def prompt_statistics(
    pairs: pd.DataFrame,
    noise_floor: pd.DataFrame,
    metric: str = "ssim",
    n_resamples: int = 2000,
    seed: int = 0,
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
    - ``{metric}_ci_low/high``: 95% cluster-bootstrap interval of
      ``{metric}_mean`` (see :func:`bootstrap_mean_ci`).
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
    - ``relative_effect_ci_low/high``: 95% cluster-bootstrap interval of the
      ratio, resampling images jointly for numerator and denominator.
    - ``p_vs_noise_floor``: two-sided Wilcoxon signed-rank test (Wilcoxon,
      Biometrics Bulletin 1(6), 1945) of per-image prompt dissimilarity
      against per-image noise-floor dissimilarity, paired by image. NaN with
      fewer than two paired images or when all differences are zero.

    Each prompt's bootstrap draws from ``default_rng(seed)`` afresh, so a
    prompt's row depends only on its own data, the noise floor and the seed.
    """
    valid_pairs = pairs.dropna(subset=[metric])
    noise_metric_by_image = per_image_mean(noise_floor, metric)
    rows = []
    for (prompt_id, kind, emphasis), prompt_pairs in valid_pairs.groupby(
        [PROMPT, KIND, EMPHASIS], sort=True
    ):
        row = _prompt_row(
            prompt_pairs, noise_metric_by_image, metric, n_resamples, seed
        )
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


def quality_deltas(
    values: pd.DataFrame,
    baseline: str,
    metrics: Sequence[str],
    n_resamples: int = 2000,
    seed: int = 0,
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
    - ``delta_ci_low/high``: 95% cluster-bootstrap interval of ``delta_mean``
      over images (:func:`bootstrap_mean_ci`); each row reseeds with ``seed``.
    - ``noise_floor``: how much the metric moves with the seed alone: per
      image, the mean |difference| between the baselines of each two seeds;
      then the mean over the condition's images that have two or more
      baseline seeds. A ``|delta_mean|`` well below it is a change smaller
      than a reseed causes in one image.
    - ``p_value``: two-sided Wilcoxon signed-rank test (Wilcoxon, Biometrics
      Bulletin 1(6), 1945) that the per-image mean deltas are symmetric about
      0. Images, not seeds, are the independent units, so the test takes one
      value per image. It is a rank test because quality metrics are skewed
      and heavy-tailed across images (a Laplacian variance grows with the
      square of edge contrast), which a paired t-test's normality assumption
      does not fit and a few outlying images would dominate. Zero deltas are
      dropped (Wilcoxon's method); NaN with fewer than two images or when
      every delta is 0. With n images the smallest two-sided p is 2 / 2**n:
      below 0.05 needs at least six images. Adjust for the number of tests
      with :func:`benjamini_hochberg`.
    """
    _check_quality_table(values, baseline, metrics)
    baseline_rows = values[values[CONDITION] == baseline]
    noise_by_metric = {metric: _seed_noise_by_image(baseline_rows, metric) for metric in metrics}
    rows = []
    for condition, variant_rows in values[values[CONDITION] != baseline].groupby(CONDITION, sort=True):
        for metric in metrics:
            paired = variant_rows[[IMAGE, SEED, metric]].merge(
                baseline_rows[[IMAGE, SEED, metric]], on=[IMAGE, SEED], suffixes=("", "_baseline")
            )
            paired["delta"] = paired[metric] - paired[f"{metric}_baseline"]
            image_deltas = per_image_mean(paired, "delta")
            noise_by_image = noise_by_metric[metric]
            image_noise = noise_by_image.loc[image_deltas.index.intersection(noise_by_image.index)]
            ci_low, ci_high = bootstrap_mean_ci(image_deltas.to_numpy(), n_resamples, 0.95, seed)
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
                    "p_value": _wilcoxon_p_value(image_deltas.to_numpy()),
                }
            )
    columns = [CONDITION, "metric", "n", "n_images", "delta_mean", "delta_ci_low",
               "delta_ci_high", "noise_floor", "p_value"]
    return pd.DataFrame(rows, columns=columns)
