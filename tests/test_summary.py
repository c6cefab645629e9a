"""The per-prompt summary table and its notes, on small tables whose answers
are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptsweep import tables
from promptsweep.jobs.tables import learned_metric_notes, study_summary
from promptsweep.study import PromptSpec

PROMPTS = [PromptSpec("wide", "positive", 1, "good"), PromptSpec("narrow", "positive", 2, "best")]


def pair(image: str, prompt: str, seed: int, ssim: float, lpips: float, excluded: str = "") -> dict:
    emphasis = {"wide": 1, "narrow": 2}[prompt]
    return {
        "image_id": image, "prompt_id": prompt, "kind": "positive", "emphasis": emphasis, "seed": seed,
        "ssim": ssim, "ms_ssim": ssim, "psnr": 30.0, "lpips": lpips,
        **dict.fromkeys(tables.per_image_pair_columns(), np.nan),
        "excluded": excluded, "lpips_note": "",
    }


def noise_floor(lpips_by_image: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"image_id": image, "seed_a": 0, "seed_b": 1, "ssim": 0.5, "ms_ssim": 0.5, "psnr": 20.0, "lpips": value}
         for image, value in lpips_by_image.items()]
    )


def test_lpips_noise_floor_covers_the_prompts_own_images() -> None:
    """'wide' has pairs of i1 and i2, 'narrow' only of i1 (i2's are excluded);
    i3 has a noise floor but no pairs at all."""
    pairs = pd.DataFrame([
        pair("i1", "wide", 0, 0.9, 0.10), pair("i1", "wide", 1, 0.9, 0.20),
        pair("i2", "wide", 0, 0.8, 0.30), pair("i2", "wide", 1, 0.8, 0.40),
        pair("i1", "narrow", 0, 0.7, 0.50), pair("i1", "narrow", 1, 0.7, 0.60),
        pair("i2", "narrow", 0, np.nan, np.nan, "variant: constant image"),
    ])
    summary = study_summary(pairs, noise_floor({"i1": 0.2, "i2": 0.4, "i3": 0.9}), PROMPTS).set_index("prompt_id")
    assert summary.loc["wide", "lpips_mean"] == pytest.approx(0.25)
    assert summary.loc["wide", "lpips_noise_floor_mean"] == pytest.approx(0.3)
    assert summary.loc["narrow", "lpips_mean"] == pytest.approx(0.55)
    assert summary.loc["narrow", "lpips_noise_floor_mean"] == pytest.approx(0.2)
    assert summary.loc["narrow", "n_excluded"] == 1 and summary.loc["wide", "n_excluded"] == 0


def test_summary_without_lpips_has_float_nan_columns() -> None:
    """Read back from CSV as the workflow does: empty note and LPIPS columns."""
    pairs = pd.DataFrame([pair(image, prompt, seed, 0.9, np.nan) for image in ("i1", "i2")
                          for prompt in ("wide", "narrow") for seed in (0, 1)])
    pairs["excluded"] = np.nan
    summary = study_summary(pairs, noise_floor({"i1": np.nan, "i2": np.nan}), PROMPTS)
    for column in ("lpips_mean", "lpips_noise_floor_mean"):
        assert summary[column].dtype == np.float64 and summary[column].isna().all(), column
    assert (summary["n_excluded"] == 0).all()


def settings(network: str) -> dict:
    return {
        "lpips": {"network": network, "backbone": None, "linear": None}, "clip_model": None,
        "aesthetic": {"clip_model": None, "mlp": None}, "pickscore": {"processor": None, "model": None},
    }


def test_learned_metric_notes_say_why_or_with_what() -> None:
    image_metrics = pd.DataFrame({
        "clip_score_note": ["CLIP score not computed: no"] * 2,
        "aesthetic_note": ["aesthetic score not computed: no"] * 2,
        "pickscore_note": ["PickScore not computed: no"] * 2,
    })
    per_image = {f"{name}_variant": [np.nan, np.nan] for name in ("clip_score", "aesthetic", "pickscore")}
    not_computed = pd.DataFrame({
        "lpips": [np.nan, np.nan], "lpips_note": ["LPIPS not computed: x", "LPIPS not computed: x"], **per_image,
    })
    assert learned_metric_notes(not_computed, image_metrics, settings("alex")) == [
        "LPIPS not computed: x", "CLIP score not computed: no", "aesthetic score not computed: no",
        "PickScore not computed: no",
    ]
    computed = pd.DataFrame({"lpips": [0.1, np.nan], "lpips_note": [np.nan, np.nan], **per_image})
    assert learned_metric_notes(computed, image_metrics.assign(clip_score_note=np.nan), settings("vgg")) == [
        "aesthetic score not computed: no", "PickScore not computed: no",
        "LPIPS: vgg network with the v0.1 linear layers (Zhang et al. 2018)",
    ]
