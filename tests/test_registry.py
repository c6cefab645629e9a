"""The metric registry and the condition kinds: one declaration reaches every
table, with no other edit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from promptsweep import conditions, files, registry, tables, threads
from promptsweep.jobs import metrics as metric_jobs
from promptsweep.jobs import tables as table_jobs
from promptsweep.study import ImageSpec, PromptSpec, condition_input

SEEDS = [0, 1]
PROMPTS = [PromptSpec("good", "positive", 1, "good"), PromptSpec("bad", "negative", 1, "bad")]
SETTINGS = {
    "lpips": {"network": "alex", "backbone": None, "linear": None}, "clip_model": None,
    "aesthetic": {"clip_model": None, "mlp": None}, "pickscore": {"processor": None, "model": None},
}


def mean_brightness_difference(pair: registry.ImagePair) -> float:
    return float(pair.variant.mean() - pair.baseline.mean())


def red_share(image: registry.ScoredImage) -> float:
    return float(image.pixels[..., 0].sum() / max(image.pixels.sum(), 1))


THROWAWAY_PAIR = registry.Metric(
    "brightness_shift", "pair", "brightness shift", "", "lower is closer", "change",
    registry.each(mean_brightness_difference),
)
THROWAWAY_IMAGE = registry.Metric(
    "red_share", "image", "red share", "", "higher is better", "quality", registry.each(red_share),
)


def write_generated(path: Path, pixels: np.ndarray, prompt: str) -> None:
    files.write_png(path, pixels)
    files.write_json(
        path.with_suffix(".json"),
        {"valid": True, "problem": None, "prompt": prompt, "sha256": files.file_sha256(path)},
    )


def run_metric_jobs(root: Path) -> dict[str, str]:
    """The metric and table jobs of a 2-image study, on random pictures."""
    rng = np.random.default_rng(0)
    condition_ids = ["baseline", *(prompt.prompt_id for prompt in PROMPTS)]
    outputs: dict[str, list[str]] = {"pair_metrics": [], "image_metrics": [], "noise_floor": []}
    for image_id in ("i1", "i2"):
        edge_map = root / image_id / "edges.png"
        files.write_png(edge_map, (rng.random((64, 64)) > 0.9).astype(np.uint8) * 255)
        paths = {
            (condition, seed): root / image_id / condition / f"seed{seed}.png"
            for condition in condition_ids for seed in SEEDS
        }
        for path in paths.values():
            write_generated(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "cat")
        prompt_ids = [prompt.prompt_id for prompt in PROMPTS]
        pair_outputs = {prompt_id: str(root / "pair_metrics" / image_id / f"{prompt_id}.tsv") for prompt_id in prompt_ids}
        metric_jobs.pair_metrics(
            image_id=image_id, prompts=prompt_ids, seeds=SEEDS,
            baselines=[str(paths["baseline", seed]) for seed in SEEDS],
            baseline_records=[str(paths["baseline", seed].with_suffix(".json")) for seed in SEEDS],
            variants={prompt_id: [str(paths[prompt_id, seed]) for seed in SEEDS] for prompt_id in prompt_ids},
            variant_records={
                prompt_id: [str(paths[prompt_id, seed].with_suffix(".json")) for seed in SEEDS] for prompt_id in prompt_ids
            },
            weights=[], settings=SETTINGS, outputs=list(pair_outputs.values()),
            ssim_maps=[str(root / "maps" / image_id / prompt_id / f"seed{seed}.png") for prompt_id in prompt_ids for seed in SEEDS],
            log=str(root / "logs" / f"{image_id}-pairs.log"),
        )
        outputs["pair_metrics"] += list(pair_outputs.values())
        keys = [(condition, seed) for condition in condition_ids for seed in SEEDS]
        output = str(root / "image_metrics" / f"{image_id}.tsv")
        metric_jobs.image_metrics(
            image_id=image_id, edge_map=str(edge_map), conditions=condition_ids, seeds=SEEDS,
            images=[str(paths[key]) for key in keys], records=[str(paths[key].with_suffix(".json")) for key in keys],
            canny_low=100, canny_high=200, subject="cat", settings=SETTINGS, output=output,
            log=str(root / "logs" / f"{image_id}.log"),
        )
        outputs["image_metrics"].append(output)
        output = str(root / "noise_floor" / f"{image_id}.tsv")
        metric_jobs.noise_floor(
            image_id=image_id, seeds=SEEDS, baselines=[str(paths["baseline", seed]) for seed in SEEDS],
            records=[str(paths["baseline", seed].with_suffix(".json")) for seed in SEEDS], weights=[],
            settings=SETTINGS, output=output, log=str(root / "logs" / f"{image_id}-floor.log"),
        )
        outputs["noise_floor"].append(output)
    tables_out = {name: str(root / "tables" / f"{name}.csv") for name in ("pairs", "image_metrics", "noise_floor")}
    table_jobs.pairs_table(**outputs, prompts=PROMPTS, outputs=tables_out, log=str(root / "logs" / "tables.log"))
    return tables_out


def test_a_registered_metric_reaches_every_table_with_no_other_edit(tmp_path: Path) -> None:
    with registry.registered(THROWAWAY_PAIR), registry.registered(THROWAWAY_IMAGE):
        written = run_metric_jobs(tmp_path)
        pairs = pd.read_csv(written["pairs"])
        noise_floor = pd.read_csv(written["noise_floor"])
        summary = table_jobs.study_summary(pairs, noise_floor, PROMPTS).set_index("prompt_id")
        assert list(pairs.columns) == tables.pair_columns()
    baseline = pairs["baseline_path"].map(lambda path: files.read_png(Path(path)).mean())
    variant = pairs["variant_path"].map(lambda path: files.read_png(Path(path)).mean())
    assert pairs["brightness_shift"].to_numpy() == pytest.approx((variant - baseline).to_numpy())
    assert pairs["red_share_variant"].between(0, 1).all() and pairs["red_share_baseline"].notna().all()
    assert noise_floor["brightness_shift"].notna().all()
    for prompt in ("good", "bad"):
        rows = pairs[pairs["prompt_id"] == prompt]
        assert summary.loc[prompt, "brightness_shift_mean"] == pytest.approx(rows["brightness_shift"].mean())
        assert summary.loc[prompt, "red_share_variant_mean"] == pytest.approx(rows["red_share_variant"].mean())
        assert "brightness_shift_noise_floor_mean" in summary.columns
    # Unregistered again: the tables no longer have it.
    assert "brightness_shift" not in tables.pair_columns()
    assert "red_share_variant" not in table_jobs.summary_columns()


class WithPid:
    """Runs a per-sample function and returns its result with the id of the process it ran in."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function

    def __call__(self, sample: Any) -> tuple[Any, int]:
        return self.function(sample), os.getpid()


def test_metric_jobs_decode_images_in_metric_processes_into_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs' images are decoded and checked in the metric processes, from
    relative paths in a working directory the workers were not started in."""
    alone = run_metric_jobs(tmp_path / "alone")
    decoded_in: list[int] = []

    def recorded(function: Callable[[Any], Any], samples: list[Any]) -> list[Any]:
        results = threads.map_measure(WithPid(function), samples)
        if function is metric_jobs._checked_pixels:
            decoded_in.extend(pid for _, pid in results)
        return [result for result, _ in results]

    monkeypatch.setattr(metric_jobs, "map_measure", recorded)
    threads.use_metric_processes(2, "cpu", 2)
    try:
        (tmp_path / "start").mkdir()
        monkeypatch.chdir(tmp_path / "start")
        threads.map_measure(abs, [1, -1])  # the workers start here, in another directory
        monkeypatch.chdir(tmp_path)
        shared = run_metric_jobs(Path("shared"))
    finally:
        threads.use_metric_processes(0, "cpu", 1)
    # Per image: 6 for the pairs, 6 for the per-image metrics, 2 for the noise floor.
    assert len(decoded_in) == 28 and os.getpid() not in decoded_in
    pairs = pd.read_csv(Path(shared["pairs"]))
    assert all((tmp_path / path).is_file() for path in pairs["ssim_map_path"])
    assert not list((tmp_path / "start").iterdir())
    for name, path in alone.items():
        expected, written = pd.read_csv(path), pd.read_csv(Path(shared[name]))
        values = [column for column in expected.columns if not column.endswith("_path")]
        pd.testing.assert_frame_equal(written[values], expected[values])


def test_a_metric_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        with registry.registered(registry.METRICS["ssim"]):
            pass


def test_learned_metrics_without_weights_are_not_computed_with_the_reason(tmp_path: Path) -> None:
    written = run_metric_jobs(tmp_path)
    pairs = pd.read_csv(written["pairs"])
    images = pd.read_csv(written["image_metrics"])
    assert pairs["lpips"].isna().all() and pairs["ssim"].notna().all()
    assert pairs["lpips_note"].str.startswith("LPIPS not computed: metrics.lpips.backbone").all()
    assert images["clip_score_note"].eq("CLIP score not computed: metrics.clip_model is not set").all()
    assert images["edge_f1"].between(0, 1).all()


def test_each_metric_job_reads_only_its_own_config_keys() -> None:
    assert registry.metric_settings(SETTINGS, "pair") == {"lpips": SETTINGS["lpips"]}
    assert registry.metric_settings(SETTINGS, "image") == {
        key: SETTINGS[key] for key in ("clip_model", "aesthetic", "pickscore")
    }


def test_condition_kinds_declare_their_input_order_and_colour() -> None:
    image = ImageSpec("cat", "cat.png", "cat")
    assert condition_input(image, None) == conditions.GenerationInput("cat", "")
    assert condition_input(image, PROMPTS[0]) == conditions.GenerationInput("cat, good", "")
    assert condition_input(image, PROMPTS[1]) == conditions.GenerationInput("cat", "bad")
    assert conditions.SHEET_KINDS == ("positive", "negative")
    assert [conditions.kind_rank(kind) for kind in ("baseline", "positive", "negative")] == [0, 1, 2]
    assert len({kind.color for kind in conditions.KINDS}) == len(conditions.KINDS)


def test_a_new_condition_kind_is_drawn_with_no_other_edit(tmp_path: Path, monkeypatch) -> None:
    from promptsweep import plots

    neutral = conditions.ConditionKind(
        "neutral", "prepended to the image prompt", "tab:green", lambda prompt, text: conditions.GenerationInput(f"{text} {prompt}", "")
    )
    monkeypatch.setattr(conditions, "KINDS", (*conditions.KINDS, neutral))
    monkeypatch.setitem(conditions.KIND_BY_NAME, "neutral", neutral)
    summary = pd.DataFrame({
        "prompt_id": ["good", "bad", "plain"], "kind": ["positive", "negative", "neutral"], "emphasis": [1, 1, 1],
        "ssim_mean": [0.8, 0.7, 0.9], "ssim_ci_low": [0.7, 0.6, 0.85], "ssim_ci_high": [0.9, 0.8, 0.95],
    })
    ssim = registry.METRICS["ssim"]
    plots.metric_by_prompt(summary, ssim, (0.5, 0.4, 0.6), "tiny", "a caveat", tmp_path / "by_prompt.png")
    plots.effect_vs_emphasis(summary, ssim, "tiny", "a caveat", tmp_path / "effect.png")
    assert (tmp_path / "by_prompt.png").stat().st_size > 0 and (tmp_path / "effect.svg").stat().st_size > 0
    assert conditions.generation_input("neutral", "cat", "plain") == conditions.GenerationInput("plain cat", "")
