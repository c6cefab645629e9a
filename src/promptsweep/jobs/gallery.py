"""Gallery stage: a static page to look at every pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from promptsweep import files, registry, tables
from promptsweep.jobs import job_log
from promptsweep.threads import computed_alone


def gallery_pairs(pairs: pd.DataFrame, edge_maps: Mapping[str, str]) -> pd.DataFrame:
    """The pairs table as the gallery shows it: each pair's change metrics, its
    variant's fidelity, the change of every quality metric against the
    baseline (``{metric}_delta``) and the path of its image's edge map."""
    shown = pairs[[
        "image_id", "prompt_id", "kind", "emphasis", "seed", "excluded",
        "baseline_path", "variant_path", "ssim_map_path",
    ]].copy()
    for metric in registry.metrics_of("pair"):
        if pairs[metric.name].notna().any():
            shown[metric.name] = pairs[metric.name]
    for metric in registry.metrics_of("image"):
        variant, baseline = pairs[f"{metric.name}_variant"], pairs[f"{metric.name}_baseline"]
        if not variant.notna().any():
            continue  # not computed
        if metric.role == "quality":
            shown[f"{metric.name}_delta"] = variant - baseline
        else:
            shown[metric.name] = variant
    shown["edge_path"] = shown["image_id"].map(edge_maps)
    shown["excluded"] = tables.notes(shown["excluded"])
    return shown


def dosed_gallery_pairs(
    pair_metrics: pd.DataFrame,
    image_metrics: pd.DataFrame,
    doses: Mapping[str, tuple[str, float]],
    kinds: Mapping[str, str],
    edge_maps: Mapping[str, str],
) -> pd.DataFrame:
    """The pairs of prompts at doses, shown like :func:`gallery_pairs` with
    their dose; ``prompt_id`` is the condition (``pos5@0.5``), so that filters
    tell doses apart."""
    from promptsweep.jobs.emphasis import dose_pairs

    quality = [m.name for m in registry.quality_metrics() if m.name in image_metrics and image_metrics[m.name].notna().any()]
    dosed = dose_pairs(pair_metrics, image_metrics, doses, kinds, quality)
    by_image = image_metrics.set_index(["image_id", "condition", "seed"])
    for metric in registry.metrics_of("image"):
        if metric.role != "quality" and by_image[metric.name].notna().any():
            keys = zip(dosed["image_id"], dosed["condition"], dosed["seed"])
            dosed[metric.name] = [by_image[metric.name].get(key, float("nan")) for key in keys]
    dosed["prompt_id"] = dosed["condition"]
    dosed["edge_path"] = dosed["image_id"].map(edge_maps)
    dosed["excluded"] = tables.notes(dosed["excluded"])
    return dosed.drop(columns=["condition", *(m.note_column for m in registry.learned_metrics("pair"))], errors="ignore")


SEARCH_KIND = "latent search"
"""The kind the gallery shows a latent search's pairs under."""


def search_gallery_pairs(
    image_metrics: pd.DataFrame,
    images: Mapping[str, Mapping[str, Sequence[str]]],
    seeds: Sequence[int],
    edge_maps: Mapping[str, str],
    ssim_maps: Path,
) -> pd.DataFrame:
    """The latent search's held-out pairs, shown like :func:`gallery_pairs`:
    each evaluated condition (``images``: image -> condition -> one file per
    seed, the baseline's included) against the same seed's baseline, with
    its SSIM and SSIM map (drawn into ``ssim_maps``, since the search
    computes no pair metrics), its fidelity and the change of every quality
    metric (``image_metrics``: the search's evaluation metrics)."""
    from promptsweep import metrics, plots
    from promptsweep.conditions import BASELINE

    by_image = image_metrics.set_index(["image_id", "condition", "seed"])
    rows = []
    for image, by_condition in images.items():
        baselines = [files.read_png(Path(path)) for path in by_condition[BASELINE]]
        for condition, paths in by_condition.items():
            if condition == BASELINE:
                continue
            for seed, baseline, baseline_path, variant_path in zip(
                seeds, baselines, by_condition[BASELINE], paths, strict=True
            ):
                variant = files.read_png(Path(variant_path))
                ssim_map_path = ssim_maps / f"{image}_{condition}_seed{seed}.png"
                files.write_png(ssim_map_path, plots.ssim_map_picture(metrics.ssim_map(baseline, variant)))
                record = files.read_json(Path(variant_path).with_suffix(".json"))
                row: dict[str, object] = {
                    "image_id": image, "prompt_id": condition, "kind": SEARCH_KIND, "seed": seed,
                    "excluded": record.get("problem") or "",
                    "baseline_path": baseline_path, "variant_path": variant_path, "ssim_map_path": str(ssim_map_path),
                    "ssim": metrics.ssim(baseline, variant), "edge_path": edge_maps[image],
                }
                for metric in registry.metrics_of("image"):
                    value = by_image[metric.name].get((image, condition, seed), float("nan"))
                    if metric.role == "quality":
                        row[f"{metric.name}_delta"] = value - by_image[metric.name].get((image, BASELINE, seed), float("nan"))
                    else:
                        row[metric.name] = value
                rows.append(row)
    shown = pd.DataFrame(rows)
    # Metrics not computed (NaN throughout) are left out, as gallery_pairs does.
    return shown.dropna(axis="columns", how="all") if len(shown) else shown


@computed_alone
def gallery(
    *,
    pairs: str,
    dose_pair_metrics: Sequence[str],
    dose_image_metrics: Sequence[str],
    doses: Mapping[str, tuple[str, float]],
    kinds: Mapping[str, str],
    edge_maps: Mapping[str, str],
    title: str,
    output: str,
    log: str,
    search_metrics: Sequence[str] = (),
    search_images: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    search_seeds: Sequence[int] = (),
) -> None:
    """The gallery of every pair: word prompts from ``pairs.csv``, with
    ``emphasis.doses`` every prompt at every dose, and with the optimisers'
    latent search each evaluated choice on the held-out images and seeds
    (``search_images``, :func:`search_gallery_pairs`)."""
    import tempfile

    from promptsweep import gallery as page

    with job_log(log, "gallery") as logger:
        shown = gallery_pairs(files.read_table(pairs), edge_maps)
        if dose_pair_metrics:
            dosed = dosed_gallery_pairs(
                files.read_tables(dose_pair_metrics),
                files.read_tables(dose_image_metrics),
                doses, kinds, edge_maps,
            )
            shown = pd.concat([shown, dosed], ignore_index=True)
        with tempfile.TemporaryDirectory() as ssim_maps:
            if search_images:
                searched = search_gallery_pairs(
                    files.read_tables(search_metrics), search_images, search_seeds, edge_maps, Path(ssim_maps)
                )
                shown = pd.concat([shown, searched], ignore_index=True)
            index = page.write_gallery(shown, Path(output), title)
        logger.info("%d pairs in %s", len(shown), index)


@computed_alone
def models_gallery(
    *, models: str, plot: str, galleries: Sequence[str], names: Sequence[str], output: str, log: str
) -> None:
    """The front page of a study of several models: its table and plot, and
    a link to each model's gallery (``galleries``, in the order of ``names``)."""
    from promptsweep import gallery as page

    with job_log(log, "gallery") as logger:
        page.write_models_page(
            files.read_table(models), plot, dict(zip(names, galleries, strict=True)), output,
            "promptsweep: every model's answers",
        )
        logger.info("%d models in %s", len(names), output)
