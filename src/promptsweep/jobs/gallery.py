"""Gallery stage: a static page to look at every pair."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from promptsweep import files, registry, tables
from promptsweep.jobs import job_log


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


def gallery(*, pairs: str, edge_maps: Mapping[str, str], title: str, output: str, log: str) -> None:
    from promptsweep import gallery as page

    with job_log(log, "gallery") as logger:
        shown = gallery_pairs(files.read_table(pairs), edge_maps)
        index = page.write_gallery(shown, Path(output), title)
        logger.info("%d pairs in %s", len(shown), index)
