"""Emphasis stage: prompts at doses in the text-embedding space (the
dose-response table and plot) and the latent search (selection on selection
seeds, evaluation on disjoint evaluation seeds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from promptsweep import files, registry
from promptsweep.conditions import BASELINE
from promptsweep.jobs import Ledger, job_log
from promptsweep.threads import computed_alone
from promptsweep.jobs import generate as generate_jobs
from promptsweep.jobs import metrics as metric_jobs

KEYS = ["image_id", "condition", "seed"]


# --- Per-image metrics and generations of the emphasis conditions -----------------


def condition_image_metrics(*, weights: Sequence[str], **arguments: Any) -> None:
    """Every per-image metric of one (image, condition)'s images: the
    baseline's and each dosed condition's, one file each, so that a new dose
    scores only its own images. Kept when made from images, edge map and
    learned metrics' ``weights`` of the same content and the same settings
    (:class:`promptsweep.jobs.Ledger`)."""
    ledger = Ledger(
        [arguments["output"]],
        [arguments["edge_map"], *arguments["images"], *arguments["records"], *weights],
        {key: value for key, value in arguments.items() if key not in ("images", "records", "output", "log")},
    )
    if ledger.current():
        with job_log(arguments["log"], f"image metrics {arguments['image_id']}") as logger:
            logger.info("inputs unchanged, kept")
        return
    with ledger.recording():
        metric_jobs.image_metrics(**arguments)


def search_generate(**arguments: Any) -> None:
    """The search's conditions on the selection seeds: the generation job with its own files."""
    generate_jobs.generate(**arguments)


def evaluation_generate(
    *,
    selection: str,
    slot: str,
    edge_map: str,
    weights: str,
    images: Sequence[str],
    records: Sequence[str],
    requests: Mapping[str, dict[str, Any]],
    log: str,
) -> None:
    """One evaluation slot of one image on the evaluation seeds: the condition
    the selection file names for ``slot`` (``baseline``, ``chosen`` or
    ``best_word``), generated from its request. The selection file is this
    job's input, so the DAG is fixed before the selection is made."""
    chosen = files.read_json(Path(selection))
    condition = BASELINE if slot == BASELINE else chosen[slot]
    if condition not in requests:
        raise ValueError(
            f"{selection}: {slot} {condition!r} is not one of this search's conditions; "
            "delete the file to select again"
        )
    generate_jobs.generate(
        edge_maps=[edge_map], weights=weights, requests=[{condition: requests[condition]}],
        images=[{condition: images}], records=[{condition: records}], log=log,
    )


# --- Dose response ----------------------------------------------------------------------


def dose_pairs(
    pair_metrics: pd.DataFrame, image_metrics: pd.DataFrame, doses: Mapping[str, tuple[str, float]],
    kinds: Mapping[str, str], metrics: Sequence[str],
) -> pd.DataFrame:
    """One row per (image, prompt, dose, seed): SSIM to the same-seed baseline
    and ``{m}_delta`` = m(dosed) - m(baseline) for each of ``metrics``; NaN
    where the pair was excluded."""
    table = pair_metrics.rename(columns={"prompt_id": "condition"}).copy()
    table["prompt_id"] = [doses[condition][0] for condition in table["condition"]]
    table["dose"] = [doses[condition][1] for condition in table["condition"]]
    table["kind"] = table["prompt_id"].map(kinds)
    by_image = image_metrics.set_index(KEYS)
    for metric in metrics:
        values = by_image[metric]
        variant = [values.get(key, math.nan) for key in zip(table.image_id, table.condition, table.seed)]
        baseline = [values.get((image, BASELINE, seed), math.nan) for image, seed in zip(table.image_id, table.seed)]
        table[f"{metric}_delta"] = pd.Series(variant, dtype=float) - pd.Series(baseline, dtype=float)
    excluded = table["excluded"].astype(object).where(table["excluded"].notna(), "").astype(str) != ""
    table.loc[excluded, ["ssim", *(f"{metric}_delta" for metric in metrics)]] = math.nan
    return table


@computed_alone
def dose_response(
    *,
    pair_metrics: Sequence[str],
    image_metrics: Sequence[str],
    noise_floor: Sequence[str],
    doses: Mapping[str, tuple[str, float]],
    kinds: Mapping[str, str],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """``dose_response.csv`` and ``.md``: per (prompt, dose) the effect
    (1 - SSIM to the same-seed baseline) and the mean delta of every quality
    metric, edge F1 and (where computed) CLIP score, with CIs over images, and
    each prompt's smallest dose above the seed noise floor."""
    from promptsweep import dose_response, quality_tables, tables

    with job_log(log, "dose response") as logger:
        images = files.read_tables(image_metrics)
        metrics = quality_tables.delta_metrics(images)
        pairs = dose_pairs(files.read_tables(pair_metrics), images, doses, kinds, metrics)
        table = dose_response.dose_response_table(pairs, files.read_tables(noise_floor), metrics)
        files.write_table(Path(outputs["csv"]), table)
        files.write_text(
            Path(outputs["md"]),
            "Effect = 1 - SSIM to the same-seed baseline; deltas = dosed minus baseline, "
            "mean over images with 95% t intervals over images.\n\n" + tables.to_markdown(table),
        )
        logger.info("%d (prompt, dose) rows; deltas of %s", len(table), ", ".join(metrics))


@computed_alone
def dose_response_plot(
    *, table: str, noise_floor: str, quality_metric: str, model_name: str, caveat: str | None, output: str, log: str
) -> None:
    """Effect and the delta of ``quality_metric`` (or, when it has no values,
    the first quality metric that has) against dose, one line per prompt."""
    from promptsweep import plots, stats

    with job_log(log, "dose response plot") as logger:
        dose_table = files.read_table(table)
        per_image = 1.0 - stats.per_image_mean(files.read_table(noise_floor), registry.EFFECT_METRIC)
        floor = (float(per_image.mean()), *stats.mean_ci(per_image.to_numpy()))
        deltas = [column.removesuffix("_delta_mean") for column in dose_table if column.endswith("_delta_mean")]
        quality = [metric.name for metric in registry.quality_metrics() if metric.name in deltas]
        metric = quality_metric if quality_metric in deltas else (quality or deltas or [None])[0]
        plots.dose_response(dose_table, metric, floor, model_name, caveat, output)
        logger.info("plotted effect and %s against dose", metric)


# --- Latent search --------------------------------------------------------------------


@computed_alone
def search_selection(
    *,
    image_metrics: Sequence[str],
    candidates: Sequence[str],
    word_prompts: Sequence[str],
    selection_seeds: Sequence[int],
    objective: str,
    tolerances: Mapping[str, float],
    output: str,
    log: str,
) -> None:
    """Choose the best candidate and the best word prompt alike, on the
    selection seeds' per-image metrics only (this job's inputs hold no other
    seed), and write both names."""
    from promptsweep import emphasis
    from promptsweep.search import dose_grid

    with job_log(log, "search selection") as logger:
        rows = files.read_tables(image_metrics)
        limits = emphasis.Tolerances(**tolerances)
        chosen = dose_grid.select_condition(rows, candidates, selection_seeds, objective, limits)
        best_word = dose_grid.select_condition(rows, word_prompts, selection_seeds, objective, limits)
        files.write_json(
            Path(output),
            {"chosen": chosen, "best_word": best_word, "objective": objective,
             "selection_seeds": list(selection_seeds), "tolerances": dict(tolerances)},
        )
        logger.info("chosen %s, best word prompt %s (objective %s)", chosen, best_word, objective)


@computed_alone
def latent_search(
    *,
    selection: str,
    image_metrics: Sequence[str],
    evaluation_metrics: Sequence[str],
    candidates: Sequence[str],
    word_prompts: Sequence[str],
    selection_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
    objective: str,
    tolerances: Mapping[str, float],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """``latent_search.csv`` and ``.md``: the chosen candidate and the best
    word prompt, each scored on the evaluation seeds against the baseline."""
    from promptsweep import emphasis, tables
    from promptsweep.search import dose_grid

    with job_log(log, "latent search") as logger:
        chosen = files.read_json(Path(selection))
        evaluation = files.read_tables(evaluation_metrics)
        names = {BASELINE: BASELINE, "chosen": chosen["chosen"], "best_word": chosen["best_word"]}
        # A slot that holds the baseline repeats the baseline slot: keep one.
        evaluation = evaluation[(evaluation["condition"] == BASELINE) | (evaluation["condition"].map(names) != BASELINE)]
        evaluation = evaluation.assign(condition=evaluation["condition"].map(names))
        rows = pd.concat([files.read_tables(image_metrics), evaluation], ignore_index=True)
        table = dose_grid.latent_search_table(
            rows, candidates, word_prompts, selection_seeds, evaluation_seeds, objective,
            emphasis.Tolerances(**tolerances),
        )
        if table["candidate"].iloc[0] != chosen["chosen"]:
            raise RuntimeError(f"{selection} names {chosen['chosen']!r} but the table chose {table['candidate'].iloc[0]!r}")
        files.write_table(Path(outputs["csv"]), table)
        over_word = dose_grid.gain_over_word_ci(
            rows, table["candidate"].iloc[0], table["best_word_prompt"].iloc[0], evaluation_seeds, objective
        )
        verdict = dose_grid.latent_search_verdict(table, over_word)
        files.write_text(
            Path(outputs["md"]),
            f"Chosen on seeds {list(selection_seeds)}, evaluated on seeds {list(evaluation_seeds)}, "
            f"objective {objective} (mean over images of the paired gain over the same-seed baseline, "
            f"95% t interval over images): {verdict}.\n\n" + tables.to_markdown(table),
        )
        logger.info("latent search: %s", verdict)
