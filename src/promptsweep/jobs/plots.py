"""Plot stage: the summary's figures and one contact sheet per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from promptsweep import files, registry
from promptsweep.jobs import job_log
from promptsweep.threads import computed_alone, map_measure


@computed_alone
def summary_plots(
    *,
    pairs: str,
    summary: str,
    noise_floor: str,
    quality_summary: str,
    quality_metric: str,
    prompt_order: Sequence[str],
    model_name: str,
    caveat: str | None,
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """The effect metric by prompt, the effect against emphasis, the image x
    prompt heatmap, the quality deltas' forest plot and change against gain
    (the gain measured by ``quality_metric``)."""
    from promptsweep import plots, stats

    with job_log(log, "plots") as logger:
        metric = registry.METRICS[registry.EFFECT_METRIC]
        pair_table = files.read_table(pairs)
        summary_table = files.read_table(summary)
        per_image = stats.per_image_mean(files.read_table(noise_floor), metric.name)
        floor = (float(per_image.mean()), *stats.mean_ci(per_image.to_numpy()))
        plots.metric_by_prompt(summary_table, metric, floor, model_name, caveat, outputs["by_prompt"])
        plots.effect_vs_emphasis(summary_table, metric, model_name, caveat, outputs["effect_vs_emphasis"])
        plots.image_prompt_heatmap(pair_table, metric, prompt_order, model_name, caveat, outputs["heatmap"])
        quality = files.read_table(quality_summary)
        plots.quality_forest(quality, model_name, caveat, outputs["quality_forest"])
        plots.change_vs_gain(
            summary_table, quality, metric, registry.METRICS[quality_metric], model_name, caveat, outputs["change_vs_gain"]
        )
        logger.info("plots written")


@computed_alone
def contact_sheet(
    *,
    image_id: str,
    edge_map: str,
    labels: Sequence[str],
    images: Sequence[str],
    title: str,
    caveat: str | None,
    output: str,
    log: str,
) -> None:
    """The edge map, the baseline and every variant of one image, side by
    side, with each variant's SSIM map to the baseline under it. ``images``
    and ``labels`` start with the baseline."""
    from promptsweep import plots

    with job_log(log, f"sheet {image_id}") as logger:
        panels = [(label, files.read_png(Path(path))) for label, path in zip(labels, images, strict=True)]
        baseline = panels[0][1]
        maps = map_measure(
            registry.ImagePair.ssim_map, [registry.ImagePair(baseline, picture) for _, picture in panels[1:]]
        )
        plots.contact_sheet(
            files.read_png(Path(edge_map)), panels, title, caveat, output,
            maps=list(zip(labels[1:], maps, strict=True)),
        )
        logger.info("%d panels in %s", len(panels), output)
