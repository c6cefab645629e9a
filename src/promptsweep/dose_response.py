"""The dose-response table: how much each prompt at each dose changes the
image (1 - SSIM to the same-seed baseline) and each quality metric, with 95%
intervals over images, against the change the seed alone causes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from promptsweep import stats
from promptsweep.emphasis import NO_DOSE, SSIM, format_dose


def _mean_and_ci(image_means: np.ndarray) -> tuple[float, float, float]:
    mean = float(image_means.mean()) if image_means.size else math.nan
    low, high = stats.mean_ci(image_means)
    return mean, low, high


def _dose_row(dose_pairs: pd.DataFrame, quality_metrics: Sequence[str]) -> dict[str, float | int]:
    valid = dose_pairs.dropna(subset=[SSIM])
    effects = 1.0 - stats.per_image_mean(valid, SSIM).to_numpy()
    effect = _mean_and_ci(effects)
    row: dict[str, float | int] = {
        "n": len(valid),
        "effect_mean": effect[0],
        "effect_ci_low": effect[1],
        "effect_ci_high": effect[2],
    }
    for metric in quality_metrics:
        column = f"{metric}_delta"
        mean, low, high = _mean_and_ci(stats.per_image_mean(dose_pairs, column).to_numpy())
        row.update({f"{column}_mean": mean, f"{column}_ci_low": low, f"{column}_ci_high": high})
    return row


def smallest_dose_above_noise(doses: pd.Series, effect_ci_low: pd.Series, noise_effect: float) -> str:
    """The smallest positive dose whose effect interval lies wholly above the
    noise effect, formatted, or ``"none"``. Negative doses point away from
    the word and are not a "smallest amount" of it."""
    above = doses[(doses > 0) & (effect_ci_low > noise_effect)]
    return format_dose(float(above.min())) if len(above) else NO_DOSE


def dose_response_table(
    pairs: pd.DataFrame,
    noise_floor: pd.DataFrame,
    quality_metrics: Sequence[str],
) -> pd.DataFrame:
    """How a prompt's effect and the image quality change with its dose.

    ``pairs``: one row per (image, prompt, dose, seed), columns image_id,
    prompt_id, kind, dose, seed, ssim (SSIM of the dosed generation to the
    same-seed baseline) and ``{m}_delta`` for each ``m`` in
    ``quality_metrics`` (the metric of the dosed generation minus the
    baseline's). ``noise_floor``: columns image_id, seed_a, seed_b, ssim
    (SSIM between an image's baselines of two seeds).

    One row per (prompt_id, dose), sorted by kind, prompt_id and dose, with:

    * prompt_id, kind, dose;
    * n: pairs with a non-NaN SSIM;
    * effect_mean: mean over images of each image's mean ``1 - ssim``;
    * effect_ci_low/high: its 95% t interval over images (``stats.mean_ci``);
    * ``{m}_delta_mean``, ``{m}_delta_ci_low/high``: the same for each quality metric's delta;
    * noise_effect: ``1 - `` the mean over images of each image's mean
      noise-floor SSIM: what a new seed alone changes;
    * smallest_dose_above_noise: per prompt, the smallest positive dose whose
      effect_ci_low exceeds noise_effect (see :func:`smallest_dose_above_noise`),
      or "none"; the same on each of the prompt's rows.

    A row depends only on its own pairs.
    """
    noise_effect = 1.0 - float(stats.per_image_mean(noise_floor, SSIM).mean())
    rows = [
        {stats.PROMPT: prompt_id, stats.KIND: kind, "dose": float(dose),
         **_dose_row(dose_pairs, quality_metrics)}
        for (prompt_id, kind, dose), dose_pairs in pairs.groupby([stats.PROMPT, stats.KIND, "dose"], sort=True)
    ]
    if not rows:
        raise ValueError("no dosed pairs to tabulate")
    table = pd.DataFrame(rows).sort_values([stats.KIND, stats.PROMPT, "dose"], ignore_index=True)
    table["noise_effect"] = noise_effect
    smallest = {
        prompt_id: smallest_dose_above_noise(prompt_rows["dose"], prompt_rows["effect_ci_low"], noise_effect)
        for prompt_id, prompt_rows in table.groupby(stats.PROMPT)
    }
    table["smallest_dose_above_noise"] = table[stats.PROMPT].map(smallest)
    return table
