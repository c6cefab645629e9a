"""Do the study's intervals and tests hold their nominal level? Simulated studies.

A simulated study has the study's structure: images are clusters, each with
an image-level deviation drawn from a named distribution, and seeds nested in
them with normal noise. Its tables are made by the same functions the
workflow runs (:func:`promptsweep.stats.quality_deltas`,
:func:`promptsweep.stats.prompt_statistics`, :func:`promptsweep.stats.mean_test_p`,
:func:`promptsweep.stats.benjamini_hochberg`), and each function returns one
row of ``quantity, distribution, n_images, nominal, observed, n_simulations``:

* ``ci:<name>``: how often the 95% interval covers the true value;
* ``test:<name>``: how often the test rejects at alpha = 0.05 when there is
  no effect (the false-positive rate);
* ``power:<name>@<d>sd``: how often it rejects an effect of ``d`` standard
  deviations of the image means; ``nominal`` is the power a t-test has on
  normal values (statsmodels' ``TTestPower``);
* ``fdr:bh``: the false discovery rate of the Benjamini-Hochberg family.

``benchmarks/calibration.py`` runs them all and keeps the results.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from promptsweep import stats

ALPHA = 0.05
CONFIDENCE = 0.95
SEEDS_PER_IMAGE = 2
# Seed noise within an image, in standard deviations of the image-level deviation.
SEED_NOISE = 0.5

Sampler = Callable[[np.random.Generator, tuple[int, ...]], npt.NDArray[np.float64]]


def _lognormal(rng: np.random.Generator, size: tuple[int, ...]) -> npt.NDArray[np.float64]:
    # Lognormal(0, 1) centred and scaled to unit variance: skewness 6.2, like
    # a Laplacian variance across images.
    e = np.e
    return (rng.lognormal(0.0, 1.0, size) - np.sqrt(e)) / np.sqrt((e - 1.0) * e)


def resampled_sampler(values: npt.ArrayLike) -> Sampler:
    """Draws with replacement from ``values`` after centring and scaling them
    to mean 0 and variance 1."""
    pool = np.asarray(values, dtype=np.float64)
    pool = (pool - pool.mean()) / pool.std()
    return lambda rng, size: rng.choice(pool, size=size)


def distributions(study_deltas: Path | None = None) -> dict[str, Sampler]:
    """Image-level deviations, each with mean 0 and variance 1: normal,
    heavy-tailed (t, 3 d.f.), skewed (lognormal) and, given a CSV with a
    ``standardized_delta`` column (per-image quality deltas of a study),
    values resampled from it."""
    samplers: dict[str, Sampler] = {
        "normal": lambda rng, size: rng.standard_normal(size),
        "t3": lambda rng, size: rng.standard_t(3, size) / np.sqrt(3.0),
        "lognormal": _lognormal,
    }
    if study_deltas is not None:
        samplers["resampled"] = resampled_sampler(pd.read_csv(study_deltas)["standardized_delta"])
    return samplers


def image_mean_sd() -> float:
    """Standard deviation of an image's mean over its seeds in a simulated study."""
    return float(np.sqrt(1.0 + SEED_NOISE**2 / SEEDS_PER_IMAGE))


def seed_values(
    sampler: Sampler, n_studies: int, n_images: int, effect: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Per (study, image, seed) values: ``effect`` + image deviation + seed noise."""
    images = sampler(rng, (n_studies, n_images, 1))
    noise = SEED_NOISE * rng.standard_normal((n_studies, n_images, SEEDS_PER_IMAGE))
    return effect + images + noise


def quality_table(values: npt.NDArray[np.float64], metric: str = "value") -> pd.DataFrame:
    """The long table :func:`stats.quality_deltas` reads: one condition per
    simulated study, whose deltas against an all-zero baseline are ``values``."""
    n_studies, n_images, n_seeds = values.shape
    study, image, seed = np.indices(values.shape).reshape(3, -1)
    variants = pd.DataFrame(
        {"image_id": image, "condition": study, "seed": seed, metric: values.reshape(-1)}
    )
    baseline = variants[variants["condition"] == 0].assign(condition=-1, **{metric: 0.0})
    return pd.concat([baseline, variants], ignore_index=True)


def _row(quantity: str, distribution: str, n_images: int, nominal: float, outcomes: npt.ArrayLike) -> dict:
    """One CSV row: ``observed`` is the mean of one outcome per simulated study."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    return {
        "quantity": quantity, "distribution": distribution, "n_images": n_images,
        "nominal": nominal, "observed": float(outcomes.mean()), "n_simulations": int(outcomes.size),
    }


def quality_delta_rows(
    distribution: str, sampler: Sampler, n_images: int, n_studies: int, seed: int = 0
) -> list[dict]:
    """Coverage of ``quality_deltas``' interval and its test's false-positive
    rate, on studies without an effect."""
    rng = np.random.default_rng(seed)
    values = seed_values(sampler, n_studies, n_images, 0.0, rng)
    table = stats.quality_deltas(quality_table(values), -1, ["value"])
    covered = (table["delta_ci_low"] <= 0.0) & (0.0 <= table["delta_ci_high"])
    rejected = table["p_value"] < ALPHA
    return [
        _row("ci:quality_delta", distribution, n_images, CONFIDENCE, covered),
        _row("test:quality_delta", distribution, n_images, ALPHA, rejected),
    ]


def _image_means(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return values.mean(axis=2)


def p_values(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The quality-delta test's p-value of each simulated study (its image means)."""
    return np.array([stats.mean_test_p(means) for means in _image_means(values)])


def analytic_power(effect_sd: float, n_images: int) -> float:
    """A two-sided one-sample t-test's power on normal values (statsmodels)."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().power(effect_size=effect_sd, nobs=n_images, alpha=ALPHA))


def power_rows(
    distribution: str, sampler: Sampler, n_images: int, n_studies: int, effects_sd: tuple[float, ...], seed: int = 0
) -> list[dict]:
    """How often the quality-delta test detects planted effects of the given
    sizes, in standard deviations of the image means."""
    rng = np.random.default_rng(seed)
    rows = []
    for effect_sd in effects_sd:
        values = seed_values(sampler, n_studies, n_images, effect_sd * image_mean_sd(), rng)
        rows.append(
            _row(
                f"power:quality_delta@{effect_sd:g}sd", distribution, n_images,
                analytic_power(effect_sd, n_images), p_values(values) < ALPHA,
            )
        )
    return rows


def fdr_row(
    distribution: str, sampler: Sampler, n_images: int, n_studies: int,
    n_tests: int = 20, n_null: int = 10, effect_sd: float = 1.0, seed: int = 0,
) -> dict:
    """The Benjamini-Hochberg family's false discovery rate: each study has
    ``n_tests`` tests, ``n_null`` of them without an effect and the rest with
    ``effect_sd``; a study's false discovery proportion is its false
    rejections over its rejections (0 when none), and the rate their mean."""
    rng = np.random.default_rng(seed)
    null = seed_values(sampler, n_studies * n_null, n_images, 0.0, rng)
    planted = seed_values(sampler, n_studies * (n_tests - n_null), n_images, effect_sd * image_mean_sd(), rng)
    p = np.concatenate(
        [p_values(null).reshape(n_studies, n_null), p_values(planted).reshape(n_studies, n_tests - n_null)],
        axis=1,
    )
    rejected = np.array([stats.benjamini_hochberg(study) < ALPHA for study in p])
    false = rejected[:, :n_null].sum(axis=1)
    proportion = false / np.maximum(rejected.sum(axis=1), 1)
    return _row("fdr:bh", distribution, n_images, ALPHA, proportion)


def _pairs_and_noise_floor(
    sampler: Sampler, n_prompts: int, n_images: int, ratio: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One study's pairs and noise floor: per image a noise dissimilarity
    (lognormal around 0.2) and, per prompt and seed, a dissimilarity of
    ``ratio`` times it plus the prompt's image deviation and seed noise, so
    that the true relative effect is ``ratio``."""
    noise = 0.2 * np.exp(0.3 * rng.standard_normal(n_images))
    deviation = 0.03 * seed_values(sampler, n_prompts, n_images, 0.0, rng)
    dissimilarity = ratio * noise[None, :, None] + deviation
    prompt, image, seed = np.indices(dissimilarity.shape).reshape(3, -1)
    pairs = pd.DataFrame({
        "image_id": image, "prompt_id": prompt, "kind": "positive", "emphasis": 1.0, "seed": seed,
        "ssim": 1.0 - dissimilarity.reshape(-1),
    })
    noise_floor = pd.DataFrame({"image_id": np.arange(n_images), "seed_a": 0, "seed_b": 1, "ssim": 1.0 - noise})
    return pairs, noise_floor


def relative_effect_rows(
    distribution: str, sampler: Sampler, n_images: int, n_studies: int, prompts_per_study: int = 20, seed: int = 0
) -> list[dict]:
    """Coverage of ``prompt_statistics``' relative-effect interval, and its
    test against the noise floor's false-positive rate, on prompts that change
    the image exactly as much as a new seed (relative effect 1). An unbounded
    interval (NaN) covers."""
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(max(1, n_studies // prompts_per_study)):
        pairs, noise_floor = _pairs_and_noise_floor(sampler, prompts_per_study, n_images, 1.0, rng)
        tables.append(stats.prompt_statistics(pairs, noise_floor))
    table = pd.concat(tables, ignore_index=True)
    low, high = table["relative_effect_ci_low"], table["relative_effect_ci_high"]
    covered = low.isna() | ((low <= 1.0) & (1.0 <= high))
    return [
        _row("ci:relative_effect", distribution, n_images, CONFIDENCE, covered),
        _row("test:vs_noise_floor", distribution, n_images, ALPHA, table["p_vs_noise_floor"] < ALPHA),
    ]


def bootstrap_candidate_rows(
    distribution: str, sampler: Sampler, n_images: int, n_studies: int, seed: int = 0, n_resamples: int = 999
) -> list[dict]:
    """Coverage of the bootstrap intervals that were the alternatives to the
    t interval (SciPy's percentile and BCa), on the same kind of studies."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(seed)
    means = _image_means(seed_values(sampler, n_studies, n_images, 0.0, rng))
    rows = []
    for method in ("percentile", "BCa"):
        interval = scipy_stats.bootstrap(
            (means,), np.mean, axis=-1, vectorized=True, n_resamples=n_resamples,
            method=method, random_state=rng, batch=50,
        ).confidence_interval
        low, high = np.asarray(interval.low), np.asarray(interval.high)
        covered = np.isnan(low) | ((low <= 0.0) & (0.0 <= high))
        rows.append(_row(f"candidate:{method.lower()}_bootstrap", distribution, n_images, CONFIDENCE, covered))
    return rows
