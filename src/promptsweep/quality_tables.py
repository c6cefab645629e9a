"""Does a prompt make the image better? Paired quality deltas and the verdict.

Every per-image metric of quality and fidelity in the registry is compared,
image by image and seed by seed, with the same-seed baseline
(:func:`promptsweep.stats.quality_deltas`). One Benjamini-Hochberg family
(Benjamini & Hochberg 1995) covers every test of the study: each prompt x
metric delta test and each prompt's test of its change against the seed noise
floor, so a q-value below 0.05 keeps the expected share of false discoveries
among all the study's significant findings at 5%.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from promptsweep import registry, stats
from promptsweep.conditions import BASELINE
from promptsweep.study import PromptSpec

SIGNIFICANCE = 0.05
VERDICT_WIDTH = 120
QUALITY_SUMMARY_COLUMNS = [
    "prompt_id", "kind", "emphasis", "metric", "n", "delta_mean", "delta_ci_low", "delta_ci_high",
    "noise_floor", "p_value", "q_value", "n_below_calibrated",
]


def computed(table: pd.DataFrame, metrics: Sequence[registry.Metric]) -> list[str]:
    """Names of the metrics with at least one value (learned ones may be not computed)."""
    return [metric.name for metric in metrics if metric.name in table and table[metric.name].notna().any()]


def quality_table(image_metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per generated image: image_id, condition, seed and every
    computed quality metric."""
    return image_metrics[["image_id", "condition", "seed", *computed(image_metrics, registry.quality_metrics())]]


def delta_metrics(image_metrics: pd.DataFrame) -> list[str]:
    """The metrics whose paired deltas are tested: quality, then fidelity."""
    fidelity = [metric for metric in registry.metrics_of("image") if metric.role == "fidelity"]
    return computed(image_metrics, [*registry.quality_metrics(), *fidelity])


def quality_summary(image_metrics: pd.DataFrame, prompts: Sequence[PromptSpec]) -> pd.DataFrame:
    """One row per (prompt, metric): the paired delta against the baseline, its
    95% t interval over images, the seed noise floor and the t-test's p-value
    (``q_value`` is filled by :func:`with_q_values`)."""
    deltas = stats.quality_deltas(image_metrics, BASELINE, delta_metrics(image_metrics))
    sheet = pd.DataFrame([{"prompt_id": p.prompt_id, "kind": p.kind, "emphasis": p.emphasis} for p in prompts])
    table = sheet.merge(deltas.rename(columns={"condition": "prompt_id"}), on="prompt_id", how="inner")
    table["q_value"] = np.nan
    return table[QUALITY_SUMMARY_COLUMNS]


def with_q_values(summary: pd.DataFrame, quality: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with q-values from one Benjamini-Hochberg family: the
    summary's tests of change against the noise floor (``q_vs_noise_floor``)
    and every prompt x metric delta test (``q_value``)."""
    p_values = np.concatenate([summary["p_vs_noise_floor"].to_numpy(float), quality["p_value"].to_numpy(float)])
    q_values = stats.benjamini_hochberg(p_values)
    summary = summary.copy()
    summary.insert(summary.columns.get_loc("p_vs_noise_floor") + 1, "q_vs_noise_floor", q_values[: len(summary)])
    quality = quality.assign(q_value=q_values[len(summary) :])
    return summary, quality


def _significant_direction(quality: pd.DataFrame, prompt_id: str, metric: str) -> int | None:
    """+1 or -1 where the delta is significant (q < 0.05), 0 where not, None where not tested."""
    rows = quality[(quality["prompt_id"] == prompt_id) & (quality["metric"] == metric)]
    if rows.empty or not np.isfinite(rows["delta_mean"].iloc[0]):
        return None
    row = rows.iloc[0]
    return int(np.sign(row["delta_mean"])) if row["q_value"] < SIGNIFICANCE else 0


NO_CHANGE = "–"
CHANGES = {1: "rose", -1: "fell", 0: NO_CHANGE, None: ""}
"""How a metric moved, kept beside its judgement in the verdict's CSV."""


def _judged(metric: registry.Metric, direction: int | None) -> str:
    """"better" or "worse" where the change is significant, from the metric's
    declared direction; – where not, blank where not tested."""
    if direction is None:
        return ""
    return NO_CHANGE if direction == 0 else metric.judge(direction)


def _holds(metric: registry.Metric, direction: int | None) -> str:
    """A fidelity metric holds unless it got significantly worse."""
    return "n/a" if direction is None else ("no" if _judged(metric, direction) == "worse" else "yes")


def verdict_table(summary: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt: whether it changes the image beyond the seed's
    noise (a change larger than a reseed's, q < 0.05), per quality metric
    whether a significant delta made the image better or worse by that
    metric's declared direction (– where none; ``<metric>_change`` says
    whether it rose or fell), and whether edge fidelity and CLIP alignment
    hold (not significantly worse)."""
    tested = set(quality["metric"])
    quality_names = [metric.name for metric in registry.quality_metrics() if metric.name in tested]
    rows = []
    for prompt in summary.itertuples(index=False):
        beyond_noise = prompt.relative_effect > 1 and prompt.q_vs_noise_floor < SIGNIFICANCE
        row = {
            "prompt_id": prompt.prompt_id, "kind": prompt.kind, "text": prompt.text,
            "changes_image": "yes" if beyond_noise else "no",
        }
        for name in quality_names:
            direction = _significant_direction(quality, prompt.prompt_id, name)
            row[name] = _judged(registry.METRICS[name], direction)
            row[f"{name}_change"] = CHANGES[direction]
        for column, name in [("edges_hold", "edge_f1"), ("clip_holds", "clip_score")]:
            row[column] = _holds(registry.METRICS[name], _significant_direction(quality, prompt.prompt_id, name))
        row["n_images"] = prompt.n_images
        row["n_below_calibrated"] = prompt.n_below_calibrated
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_markdown(verdict: pd.DataFrame, width: int = VERDICT_WIDTH) -> str:
    """The verdict as a Markdown table of at most ``width`` characters a line:
    metric columns under five-letter abbreviations explained in a legend, the
    prompt's text shortened to what room is left."""
    metric_columns = [column for column in verdict.columns if column in registry.METRICS]
    short = {column: column[:5] for column in metric_columns}
    legend = ", ".join(
        f"{short[name]} = {registry.METRICS[name].display_name} ({registry.METRICS[name].direction})"
        for name in metric_columns
    )
    headers = ["prompt", "text", "changes", *short.values(), "edges", "CLIP"]
    fixed = ["prompt_id", "changes_image", *metric_columns, "edges_hold", "clip_holds"]
    cells = [[str(row[column]) for column in fixed] for _, row in verdict.iterrows()]
    other_widths = [max([len(headers[0])] + [len(row[0]) for row in cells])] + [
        max([len(header)] + [len(row[index]) for row in cells]) for index, header in enumerate(headers[2:], start=1)
    ]
    # "| " + cells joined by " | " + " |"
    room = width - (sum(other_widths) + 3 * len(headers) + 1)
    text_width = max(4, min(room, max([4] + [len(text) for text in verdict["text"]])))

    def line(values: Sequence[str], widths: Sequence[int]) -> str:
        return "| " + " | ".join(value.ljust(size) for value, size in zip(values, widths)) + " |"

    widths = [other_widths[0], text_width, *other_widths[1:]]
    rows = [
        [row[0], _shorten(text, text_width), *row[1:]]
        for row, text in zip(cells, verdict["text"])
    ]
    lines = [
        line(headers, widths),
        "| " + " | ".join("-" * size for size in widths) + " |",
        *(line(row, widths) for row in rows),
    ]
    notes = [
        "changes: the prompt changes the image more than a new seed does (q < 0.05).",
        *_wrapped(
            "better, worse: a significant change against the same-seed baseline (q < 0.05), read by the metric's "
            "own direction below; – no significant change.",
            width,
        ),
        *_wrapped(legend + ".", width),
        "edges, CLIP: edge F1 and CLIP score show no significant drop (n/a: not computed).",
        *_wrapped(_calibration_note(verdict), width),
    ]
    return "\n".join([*lines, "", *notes]) + "\n"


def _calibration_note(verdict: pd.DataFrame) -> str:
    """Words for a study with fewer images than its intervals were checked for."""
    if not verdict["n_below_calibrated"].astype(bool).any():
        return ""
    fewest = int(verdict["n_images"].min())
    return (
        f"Caution: only {fewest} images. The 95% intervals and the tests behind better and worse "
        f"were checked to hold their level from {stats.CALIBRATED_MIN_IMAGES} images on; with fewer, "
        "they may be too narrow and find effects that are not there. Read results/tables/power.md "
        "for how many images this study needs."
    )


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrapped(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
