"""Metric stage: every registered metric of each pair, each generated image,
and each two baselines of different seeds (the noise floor)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from promptsweep import files, registry
from promptsweep.jobs import Ledger, job_log
from promptsweep.threads import computed_alone, map_measure


def loaded_metrics(scope: registry.Scope, settings: Mapping[str, Any], logger: logging.Logger) -> registry.LoadedMetrics:
    """The metrics of ``scope``, warning in the job's log about learned metrics
    the config asks for but that cannot be computed (left unset, they are the
    quiet default)."""
    loaded = registry.load_metrics(scope, settings)
    for warning in loaded.warnings:
        logger.warning("%s", warning)
    return loaded


def _exclusion(baseline_record: dict[str, Any], variant_record: dict[str, Any]) -> str:
    reasons = [
        f"{name}: {record['problem']}"
        for name, record in (("baseline", baseline_record), ("variant", variant_record))
        if not record["valid"]
    ]
    return "; ".join(reasons)


@computed_alone
def pair_metrics(
    *,
    image_id: str,
    prompts: Sequence[str],
    seeds: Sequence[int],
    baselines: Sequence[str],
    baseline_records: Sequence[str],
    variants: Mapping[str, Sequence[str]],
    variant_records: Mapping[str, Sequence[str]],
    weights: Sequence[str],
    settings: Mapping[str, Any],
    outputs: Sequence[str],
    ssim_maps: Sequence[str],
    log: str,
) -> None:
    """Every pair metric of each prompt's variants of one image against the
    same seed's baseline, one table per prompt (``outputs``, in the order of
    ``prompts``), and each pair's SSIM map as a picture (``ssim_maps``,
    prompts-major, then seeds).

    ``variants`` and ``variant_records`` map each prompt (or dosed condition)
    to its per-seed files. A prompt whose table was made from inputs of the
    same content (its images, the baselines, the learned metrics' ``weights``)
    and the same ``settings`` is kept (:class:`promptsweep.jobs.Ledger`): after
    one prompt changed, only its pairs are scored again. The other prompts'
    pairs are scored together, up to :data:`_PAIRS_PER_PASS` in one pass; a
    pass that fails leaves all its prompts to be scored again.
    """
    tables = dict(zip(prompts, outputs, strict=True))
    maps = {prompt_id: ssim_maps[index * len(seeds) : (index + 1) * len(seeds)] for index, prompt_id in enumerate(prompts)}
    with job_log(log, f"pair metrics {image_id}") as logger:
        ledgers = {}
        for prompt_id in prompts:
            ledger = Ledger(
                [tables[prompt_id], *maps[prompt_id]],
                [*baselines, *baseline_records, *variants[prompt_id], *variant_records[prompt_id], *weights],
                {"settings": settings, "seeds": list(seeds)},
            )
            if ledger.current():
                logger.info("%s: inputs unchanged, kept", prompt_id)
            else:
                ledgers[prompt_id] = ledger
        if not ledgers:
            return
        loaded = loaded_metrics("pair", settings, logger)
        baseline_images = _read_generated(baselines, baseline_records)
        for scored_together in _passes(list(ledgers), len(seeds)):
            with ExitStack() as recording:
                for prompt_id in scored_together:
                    recording.enter_context(ledgers[prompt_id].recording())
                read = iter(_read_generated(
                    list(chain(*(variants[prompt_id] for prompt_id in scored_together))),
                    list(chain(*(variant_records[prompt_id] for prompt_id in scored_together))),
                ))
                _pair_tables(
                    logger, loaded, image_id, seeds, baseline_images,
                    {prompt_id: [next(read) for _ in variants[prompt_id]] for prompt_id in scored_together},
                    {prompt_id: tables[prompt_id] for prompt_id in scored_together}, maps,
                )


# Pairs scored in one pass: enough for many metric processes to be all busy,
# few enough to hold (128 variants at 512 px are 100 MB).
_PAIRS_PER_PASS = 128


def _passes(prompts: list[str], pairs_per_prompt: int) -> list[list[str]]:
    """``prompts`` in consecutive groups of at most :data:`_PAIRS_PER_PASS`
    pairs (at least one prompt each)."""
    size = max(1, _PAIRS_PER_PASS // max(1, pairs_per_prompt))
    return [prompts[start : start + size] for start in range(0, len(prompts), size)]


class _Generated(NamedTuple):
    path: str
    record: dict[str, Any]
    pixels: np.ndarray


def _read_generated(images: Sequence[str], records: Sequence[str]) -> list[_Generated]:
    """Each generated image with its record, its pixels checked against it
    and decoded in the metric processes, if any: decoding 88 images at 512 px
    took 1 s, which the job would otherwise spend alone."""
    read_records = [files.read_json(Path(path)) for path in records]
    pixels = map_measure(_checked_pixels, list(zip(images, read_records, strict=True)))
    return [_Generated(*image) for image in zip(images, read_records, pixels, strict=True)]


def _checked_pixels(path_and_record: tuple[str, dict[str, Any]]) -> np.ndarray:
    return files.read_generated(*path_and_record)


def _pair_tables(
    logger: logging.Logger,
    loaded: registry.LoadedMetrics,
    image_id: str,
    seeds: Sequence[int],
    baselines: Sequence[_Generated],
    variants: Mapping[str, Sequence[_Generated]],
    tables: Mapping[str, str],
    ssim_maps: Mapping[str, Sequence[str]],
) -> None:
    """Per prompt of ``variants`` and seed, every pair metric of the variant
    against the same seed's baseline, and the pair's SSIM map; a pair with an
    invalid image is excluded from the metrics (NaN, and why). All prompts'
    pairs are scored in one pass, so that many metric processes are all busy."""
    rows = []
    scored: list[tuple[dict[str, Any], registry.ImagePair]] = []
    pictures = []
    for prompt_id, prompt_variants in variants.items():
        for seed, baseline, variant, ssim_map in zip(seeds, baselines, prompt_variants, ssim_maps[prompt_id], strict=True):
            row: dict[str, Any] = {"image_id": image_id, "prompt_id": prompt_id, "seed": seed}
            row["excluded"] = _exclusion(baseline.record, variant.record)
            pair = registry.ImagePair(baseline.pixels, variant.pixels)
            pictures.append((pair, ssim_map))
            if not row["excluded"]:
                scored.append((row, pair))
            row.update(loaded.note_columns(), baseline_path=baseline.path, variant_path=variant.path, ssim_map_path=ssim_map)
            rows.append(row)
    map_measure(_write_ssim_map, pictures)
    fill_metrics(rows, scored, loaded)
    for prompt_id, output in tables.items():
        prompt_rows = [row for row in rows if row["prompt_id"] == prompt_id]
        for row in prompt_rows:
            logger.info("%s seed %s: %s %s", prompt_id, row["seed"], _values_text(row, loaded), row["excluded"])
        files.write_table(Path(output), _table(prompt_rows, ["image_id", "prompt_id", "seed"], loaded, trailing=["excluded"]))


def _write_ssim_map(pair_and_path: tuple[registry.ImagePair, str]) -> None:
    """A pair's SSIM map as a picture (in a metric process, if there are any)."""
    from promptsweep import plots

    pair, path = pair_and_path
    files.write_png(Path(path), plots.ssim_map_picture(pair.ssim_map()))


@computed_alone
def image_metrics(
    *,
    image_id: str,
    edge_map: str,
    conditions: Sequence[str],
    seeds: Sequence[int],
    images: Sequence[str],
    records: Sequence[str],
    canny_low: int,
    canny_high: int,
    subject: str,
    settings: Mapping[str, Any],
    output: str,
    log: str,
) -> None:
    """Every per-image metric of every generated image of one input image
    (``subject`` is its one-word prompt).

    ``images`` and ``records`` run over conditions, then seeds. Each image is
    scored against the prompt its record says it was made with; an invalid
    image is NaN.
    """
    with job_log(log, f"image metrics {image_id}") as logger:
        loaded = loaded_metrics("image", settings, logger)
        reference = files.read_png(Path(edge_map))
        keys = [(condition, seed) for condition in conditions for seed in seeds]
        rows = []
        scored: list[tuple[dict[str, Any], registry.ScoredImage]] = []
        for (condition, seed), image in zip(keys, _read_generated(images, records), strict=True):
            row: dict[str, Any] = {"image_id": image_id, "condition": condition, "seed": seed}
            if image.record["valid"]:
                scored.append(
                    (row, registry.ScoredImage(image.pixels, image.record["prompt"], subject, reference, canny_low, canny_high))
                )
            row.update(loaded.note_columns())
            rows.append(row)
        fill_metrics(rows, scored, loaded)
        table = _table(rows, ["image_id", "condition", "seed"], loaded)
        logger.info("%d images: mean %s", len(table), _values_text(table.mean(numeric_only=True), loaded))
        files.write_table(Path(output), table)


@computed_alone
def noise_floor(
    *,
    image_id: str,
    seeds: Sequence[int],
    baselines: Sequence[str],
    records: Sequence[str],
    weights: Sequence[str],
    settings: Mapping[str, Any],
    output: str,
    log: str,
) -> None:
    """Every pair metric between baselines of one image under every two seeds:
    the change the seed alone causes, against which prompt effects are read.
    Kept when made from baselines and ``weights`` of the same content and the
    same ``settings`` (:class:`promptsweep.jobs.Ledger`)."""
    ledger = Ledger([output], [*baselines, *records, *weights], {"settings": settings, "seeds": list(seeds)})
    with job_log(log, f"noise floor {image_id}") as logger:
        if ledger.current():
            logger.info("inputs unchanged, kept")
            return
        with ledger.recording():
            _noise_floor_table(logger, image_id, seeds, baselines, records, settings, output)


def _noise_floor_table(
    logger: logging.Logger,
    image_id: str,
    seeds: Sequence[int],
    baselines: Sequence[str],
    records: Sequence[str],
    settings: Mapping[str, Any],
    output: str,
) -> None:
    loaded = loaded_metrics("pair", settings, logger)
    read = zip(seeds, _read_generated(baselines, records), strict=True)
    valid = {seed: image.pixels for seed, image in read if image.record["valid"]}
    rows = []
    scored: list[tuple[dict[str, Any], registry.ImagePair]] = []
    for index, seed_a in enumerate(seeds):
        for seed_b in seeds[index + 1 :]:
            row: dict[str, Any] = {"image_id": image_id, "seed_a": seed_a, "seed_b": seed_b}
            if seed_a in valid and seed_b in valid:
                scored.append((row, registry.ImagePair(valid[seed_a], valid[seed_b])))
            rows.append(row)
    fill_metrics(rows, scored, loaded)
    logger.info("%d seed pairs", len(rows))
    table = _table(rows, ["image_id", "seed_a", "seed_b"], loaded, notes=False)
    files.write_table(Path(output), table)


def fill_metrics(rows: list[dict[str, Any]], scored: list[tuple[dict[str, Any], Any]], loaded: registry.LoadedMetrics) -> None:
    """Every metric's value into the rows of the scored samples (one batch per
    metric), NaN into the others."""
    for row in rows:
        row.update(dict.fromkeys((metric.name for metric in loaded.metrics), float("nan")))
    values = loaded.score([sample for _row, sample in scored])
    for index, (row, _sample) in enumerate(scored):
        row.update({name: column[index] for name, column in values.items()})


def _table(
    rows: list[dict[str, Any]],
    keys: list[str],
    loaded: registry.LoadedMetrics,
    trailing: Sequence[str] = (),
    notes: bool = True,
) -> pd.DataFrame:
    """Key columns, the metrics in registry order, then ``trailing`` columns,
    the learned metrics' notes and anything else the rows hold."""
    columns = [*keys, *(metric.name for metric in loaded.metrics), *trailing]
    columns += list(loaded.note_columns()) if notes else []
    extra = [column for column in (rows[0] if rows else {}) if column not in columns]
    return pd.DataFrame(rows, columns=[*columns, *extra] if notes else columns)


def _values_text(values: Mapping[str, Any], loaded: registry.LoadedMetrics) -> str:
    return " ".join(f"{metric.name} {float(values[metric.name]):.4f}" for metric in loaded.metrics)
