"""Table stage: the study's long tables, and the per-prompt summary and trend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptsweep import files, registry, tables
from promptsweep.jobs import job_log
from promptsweep.threads import computed_alone
from promptsweep.study import PromptSpec


def model_note(model_name: str, caveat: str | None) -> str:
    """The line above every table: the model, and what must be said about it."""
    return f"Model: {model_name}." + (f" {caveat[0].upper()}{caveat[1:]}." if caveat else "")


def pairs_table(
    *,
    pair_metrics: Sequence[str],
    image_metrics: Sequence[str],
    noise_floor: Sequence[str],
    prompts: Sequence[PromptSpec],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """Gather the per-job files into the study's long tables: ``pairs``,
    ``image_metrics`` and ``noise_floor``."""
    with job_log(log, "tables") as logger:
        images = files.read_tables(image_metrics)
        pairs = tables.pairs_table(files.read_tables(pair_metrics), images, prompts)
        files.write_table(Path(outputs["pairs"]), pairs)
        files.write_table(Path(outputs["image_metrics"]), images)
        files.write_table(Path(outputs["noise_floor"]), files.read_tables(noise_floor))
        logger.info("%d pairs, %d excluded", len(pairs), int((pairs["excluded"] != "").sum()))


@computed_alone
def summary_tables(
    *,
    pairs: str,
    noise_floor: str,
    image_metrics: str,
    prompts: Sequence[PromptSpec],
    model_name: str,
    caveat: str | None,
    settings: Mapping[str, Any],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """Per-prompt statistics, the emphasis trend, the image-quality tables
and the verdict, as CSV, Markdown and LaTeX."""
    from promptsweep import plots, quality_tables, stats

    with job_log(log, "summary") as logger:
        pair_table = files.read_table(pairs)
        image_table = files.read_table(image_metrics)
        summary, quality = quality_tables.with_q_values(
            study_summary(pair_table, files.read_table(noise_floor), prompts),
            quality_tables.quality_summary(image_table, prompts),
        )
        trend = stats.emphasis_trend(pair_table, metric=registry.EFFECT_METRIC)
        note = model_note(model_name, caveat)
        learned_notes = "\n".join(f"- {line}." for line in learned_metric_notes(pair_table, image_table, settings))
        effect = registry.METRICS[registry.EFFECT_METRIC].display_name
        files.write_table(Path(outputs["quality_csv"]), quality_tables.quality_table(image_table))
        files.write_table(Path(outputs["quality_summary_csv"]), quality)
        files.write_text(
            Path(outputs["quality_summary_md"]), f"{note}\n\n{learned_notes}\n\n" + tables.to_markdown(quality)
        )
        files.write_text(
            Path(outputs["quality_summary_tex"]),
            tables.to_latex(quality, f"Paired change of each per-image metric against the same-seed baseline. {note}", "tab:quality-summary"),
        )
        verdict = quality_tables.verdict_table(summary, quality)
        files.write_table(Path(outputs["verdict_csv"]), verdict)
        files.write_text(Path(outputs["verdict_md"]), quality_tables.verdict_markdown(verdict))
        files.write_table(Path(outputs["summary_csv"]), summary)
        files.write_text(
            Path(outputs["summary_md"]), f"{note}\n\n{learned_notes}\n\n" + tables.to_markdown(summary)
        )
        files.write_text(
            Path(outputs["summary_tex"]),
            tables.to_latex(summary.drop(columns=["text"]), f"Effect of each additional prompt on {effect}. {note}", "tab:prompt-summary"),
        )
        files.write_table(Path(outputs["trend_csv"]), trend)
        files.write_text(Path(outputs["trend_md"]), f"{note}\n\n" + tables.to_markdown(trend))
        files.write_text(
            Path(outputs["trend_tex"]),
            tables.to_latex(trend, f"Spearman correlation of effect (1 - {effect}) with emphasis rank. {note}", "tab:emphasis-trend"),
        )
        logger.info("%d prompts summarised", len(summary))


def learned_metric_notes(pairs: pd.DataFrame, image_metrics: pd.DataFrame, settings: Mapping[str, Any]) -> list[str]:
    """What the learned metrics were computed with, or why they were not."""
    lines = []
    for metric in registry.learned_metrics():
        table = pairs if metric.scope == "pair" else image_metrics
        lines += sorted(set(tables.notes(table[metric.note_column])) - {""})
    for metric in registry.learned_metrics():
        column = metric.name if metric.scope == "pair" else f"{metric.name}_variant"
        if metric.computed_with is not None and pairs[column].notna().any():
            lines.append(metric.computed_with(settings[metric.config_key]))
    return lines


def summary_columns() -> list[str]:
    """The columns of ``summary.csv``: the effect metric's statistics, then the
    mean of every other pair metric with its noise floor, then the mean of
    every per-image metric over baselines and over variants."""
    effect = registry.EFFECT_METRIC
    others = [metric.name for metric in registry.metrics_of("pair") if metric.name != effect]
    return [
        "prompt_id", "kind", "emphasis", "text", "n", "n_images", "n_excluded",
        f"{effect}_mean", f"{effect}_std", f"{effect}_ci_low", f"{effect}_ci_high",
        "noise_floor_mean", "effect", "noise_effect", "relative_effect",
        "relative_effect_ci_low", "relative_effect_ci_high", "p_vs_noise_floor", "n_below_calibrated",
        *(column for name in others for column in (f"{name}_mean", f"{name}_noise_floor_mean")),
        *(f"{column}_mean" for column in tables.per_image_pair_columns()),
    ]


def _noise_floor_means(pairs: pd.DataFrame, noise_floor: pd.DataFrame, metric: str) -> pd.Series:
    """Per prompt, the mean per-image noise floor of ``metric`` over the images
    the prompt's mean of that metric comes from."""
    from promptsweep import stats

    by_image = stats.per_image_mean(noise_floor, metric)
    images = pairs.dropna(subset=[metric])[["prompt_id", "image_id"]].drop_duplicates()
    images["floor"] = images["image_id"].map(by_image).astype(float)
    return images.groupby("prompt_id")["floor"].mean()


def study_summary(pairs: pd.DataFrame, noise_floor: pd.DataFrame, prompts: Sequence[PromptSpec]) -> pd.DataFrame:
    """One row per prompt: the effect metric's statistics against the noise
    floor, the other metrics' means, and how many pairs were excluded as invalid.

    An infinite PSNR (identical images) is left out of its mean."""
    from promptsweep import stats

    effect = registry.EFFECT_METRIC
    statistics = stats.prompt_statistics(pairs, noise_floor, metric=effect)
    others = [metric.name for metric in registry.metrics_of("pair") if metric.name != effect]
    finite = pairs.replace([np.inf], np.nan)
    means = finite.groupby("prompt_id")[[*others, *tables.per_image_pair_columns()]].mean().add_suffix("_mean")
    for name in others:
        means[f"{name}_noise_floor_mean"] = _noise_floor_means(finite, noise_floor.replace([np.inf], np.nan), name)
    excluded = (tables.notes(pairs["excluded"]) != "").groupby(pairs["prompt_id"]).sum()
    sheet = tables.prompt_sheet(prompts)
    summary = sheet.merge(statistics.drop(columns=["kind", "emphasis"]), on="prompt_id", how="left")
    summary = summary.merge(means, left_on="prompt_id", right_index=True, how="left")
    summary["n_excluded"] = summary["prompt_id"].map(excluded).fillna(0).astype(int)
    summary["n"] = summary["n"].fillna(0).astype(int)
    return summary[summary_columns()]


# Numbers of images the power plot shows, from a pilot's few to the cap.
POWER_CURVE_IMAGES = (2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000)


@computed_alone
def power_tables(
    *,
    pairs: str,
    noise_floor: str,
    image_metrics: str,
    prompts: Sequence[PromptSpec],
    model_name: str,
    caveat: str | None,
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """How many images the study needs: the power table (CSV and Markdown)
    and the power curves of the main effect."""
    from promptsweep import plots, power, quality_tables
    from promptsweep.conditions import BASELINE

    with job_log(log, "power") as logger:
        pair_table = files.read_table(pairs)
        image_table = files.read_table(image_metrics)
        effects = power.effect_values(pair_table, files.read_table(noise_floor), registry.EFFECT_METRIC)
        table = power.power_table(
            effects, image_table, [prompt.prompt_id for prompt in prompts], BASELINE,
            quality_tables.delta_metrics(image_table),
        )
        note = model_note(model_name, caveat)
        files.write_table(Path(outputs["power_csv"]), table)
        files.write_text(Path(outputs["power_md"]), f"{note}\n\n" + tables.to_markdown(table))
        curves = power.power_curves(effects, POWER_CURVE_IMAGES)
        plots.power_curves(curves, int(pair_table["image_id"].nunique()), model_name, caveat, outputs["power_plot"])
        logger.info("power of %d prompts x %d quantities", table["prompt_id"].nunique(), table["quantity"].nunique())


@computed_alone
def models_tables(
    *,
    summaries: Sequence[str],
    verdicts: Sequence[str],
    models: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """The study of several models: every model's answer for every prompt in
    ``models.csv`` and ``models.md``, and their effects side by side in a
    plot. ``models`` maps each name, in the order of ``summaries`` and
    ``verdicts``, to its family, label and caveat."""
    from promptsweep import model_comparison, plots

    with job_log(log, "models") as logger:
        table = model_comparison.models_table(
            {
                name: (model["family"], files.read_table(summary), files.read_table(verdict))
                for (name, model), summary, verdict in zip(models.items(), summaries, verdicts, strict=True)
            }
        )
        notes = [
            name + (f" ({model['label']})" if model["label"] != name else "") + (f": {model['caveat']}" if model["caveat"] else "")
            for name, model in models.items()
        ]
        files.write_table(Path(outputs["csv"]), table)
        files.write_text(
            Path(outputs["md"]),
            "\n".join(f"- {note}" for note in notes)
            + "\n\nEffect and noise floor: 1 − SSIM to the same-seed baseline, and between two seeds of the "
            "baseline. A quality metric's column says where the prompt made the image significantly better "
            "or worse (q < 0.05), blank where not.\n\n"
            + tables.to_markdown(table),
        )
        plots.effect_by_model(table, [note for note, model in zip(notes, models.values()) if model["caveat"]], outputs["plot"])
        logger.info("%d models x %d prompts", len(models), table["prompt_id"].nunique())
