"""Figures of the study, each saved as PNG and SVG. Jobs draw them on the one
compute thread (promptsweep.threads), so pyplot's global figure registry is
never used from two threads at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on workstations' batch jobs or clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from promptsweep import files  # noqa: E402
from promptsweep.conditions import KIND_BY_NAME, kind_rank  # noqa: E402
from promptsweep.registry import METRICS as METRICS_BY_NAME  # noqa: E402
from promptsweep.registry import Metric  # noqa: E402


# SSIM maps use the colormap of the SSIM heatmap, so that dark means changed and
# yellow unchanged in every figure and in the gallery; viridis is perceptually
# uniform and reads in grey and with the common colour-vision deficiencies. The
# range is fixed, so that maps of different pairs compare, and is [0, 1] rather
# than SSIM's full [-1, 1]: nearly all local SSIM of generated images lies in
# [0, 1], and a negative value (inverted local structure) is as much "changed"
# as 0, so clipping it to the 0 colour keeps twice the colour resolution for the
# values that occur. Colorbars mark the clipping with an arrow at 0.
SSIM_MAP_COLORMAP = "viridis"
SSIM_MAP_RANGE = (0.0, 1.0)
SSIM_MAP_LABEL = "local SSIM to baseline (1 = unchanged)"


def _title(axes: plt.Axes, title: str, model_name: str, caveat: str | None) -> None:
    axes.set_title(f"{title}\n{model_name}", fontsize=11)
    if caveat:
        # Below the axes, where no data or legend can hide it.
        axes.figure.text(
            0.5, -0.04, caveat, ha="center", va="top", fontsize=9, color="darkred",
            bbox={"facecolor": "white", "edgecolor": "darkred"},
        )


def save_figure(figure: plt.Figure, png_path: str | Path, svg: bool = True) -> None:
    """Save as PNG at ``png_path`` and, with ``svg``, as SVG beside it, atomically."""
    png_path = Path(png_path)
    for path in (png_path, png_path.with_suffix(".svg")) if svg else (png_path,):
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(figure)


def _ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by kind in :data:`promptsweep.conditions.KINDS` order, by emphasis within."""
    return summary.sort_values(["kind", "emphasis"], key=lambda c: c.map(kind_rank) if c.name == "kind" else c)


def metric_by_prompt(summary: pd.DataFrame, metric: Metric, noise_floor: tuple[float, float, float], model_name: str, caveat: str | None, path: str | Path) -> None:
    """Mean ``metric`` of each prompt's variants to their baselines, 95% CI,
    prompts grouped by kind and ordered by emphasis, beside the noise floor
    (``(mean, ci_low, ci_high)`` of the metric between seeds of the same baseline)."""
    name = metric.name
    ordered = _ordered(summary).reset_index(drop=True)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(ordered) + 2), 4.5))
    # A gap between kinds: each kind's group starts 0.8 further right.
    positions = np.arange(len(ordered)) + ordered["kind"].map(kind_rank).rank(method="dense").sub(1).to_numpy() * 0.8
    mean, low, high = noise_floor
    if np.isfinite(mean):
        axes.axhspan(low if np.isfinite(low) else mean, high if np.isfinite(high) else mean, color="0.85", label="noise floor (seed alone), 95% CI")
        axes.axhline(mean, color="0.4", linestyle="--", linewidth=1)
    for kind, rows in ordered.groupby("kind", sort=False):
        x = positions[rows.index]
        errors = np.vstack([rows[f"{name}_mean"] - rows[f"{name}_ci_low"], rows[f"{name}_ci_high"] - rows[f"{name}_mean"]])
        axes.errorbar(x, rows[f"{name}_mean"], yerr=np.nan_to_num(errors), fmt="o", capsize=4, color=KIND_BY_NAME[kind].color, label=f"{kind} prompts")
    axes.set_xticks(positions, [f"{p}\n(rank {e})" for p, e in zip(ordered["prompt_id"], ordered["emphasis"])], fontsize=8)
    axes.set_ylabel(f"{metric.label} to same-seed baseline ({metric.direction})")
    axes.set_xlabel("additional prompt, ordered by emphasis")
    axes.legend(fontsize=8, loc="best")
    _title(axes, "How much each additional prompt changes the image (mean, 95% t interval over images)", model_name, caveat)
    save_figure(figure, path)


def effect_vs_emphasis(summary: pd.DataFrame, metric: Metric, model_name: str, caveat: str | None, path: str | Path) -> None:
    """Effect (1 - ``metric``) against emphasis rank, one line per kind, with 95% CIs."""
    name = metric.name
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for kind, rows in _ordered(summary).groupby("kind", sort=False):
        effect = 1 - rows[f"{name}_mean"]
        errors = np.vstack([rows[f"{name}_ci_high"] - rows[f"{name}_mean"], rows[f"{name}_mean"] - rows[f"{name}_ci_low"]])
        axes.errorbar(rows["emphasis"], effect, yerr=np.nan_to_num(errors), marker="o", capsize=4, color=KIND_BY_NAME[kind].color, label=f"{kind} prompts")
    axes.set_xlabel("emphasis rank (1 = weakest)")
    axes.set_ylabel(f"effect: 1 − {metric.display_name} to baseline")
    axes.legend(fontsize=8)
    _title(axes, "Effect against emphasis", model_name, caveat)
    save_figure(figure, path)


def image_prompt_heatmap(pairs: pd.DataFrame, metric: Metric, prompt_order: Sequence[str], model_name: str, caveat: str | None, path: str | Path) -> None:
    """Mean ``metric`` over seeds for every image x prompt."""
    grid = pairs.pivot_table(index="image_id", columns="prompt_id", values=metric.name, aggfunc="mean")
    grid = grid.reindex(columns=[p for p in prompt_order if p in grid.columns])
    figure, axes = plt.subplots(figsize=(0.6 * grid.shape[1] + 3, 0.4 * grid.shape[0] + 2))
    image = axes.imshow(grid.to_numpy(), cmap="viridis", vmin=np.nanmin(grid.to_numpy()) if grid.size else 0, vmax=1, aspect="auto")
    axes.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    axes.set_xlabel("additional prompt")
    axes.set_ylabel("image")
    figure.colorbar(image, ax=axes, label=f"mean {metric.label} to baseline over seeds")
    _title(axes, f"{metric.display_name} per image and prompt", model_name, caveat)
    save_figure(figure, path)


def dose_response(
    table: pd.DataFrame, metric: str | None, noise_effect: tuple[float, float, float],
    model_name: str, caveat: str | None, path: str | Path,
) -> None:
    """Effect (1 - SSIM to the baseline) and ``metric``'s delta against dose,
    one line per prompt in its kind's colour, 95% CI bands, and the noise
    effect (``(mean, ci_low, ci_high)`` of 1 - SSIM between seeds) as a band."""
    panels = [("effect", "effect: 1 − SSIM to same-seed baseline")]
    if metric is not None:
        panels.append((f"{metric}_delta", f"Δ {metric} (dosed − baseline)"))
    figure, axes_list = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for axes, (column, label) in zip(axes_list[0], panels):
        if column == "effect":
            mean, low, high = noise_effect
            if np.isfinite(mean):
                axes.axhspan(low if np.isfinite(low) else mean, high if np.isfinite(high) else mean,
                             color="0.85", label="noise floor (seed alone), 95% CI")
                axes.axhline(mean, color="0.4", linestyle="--", linewidth=1)
        else:
            axes.axhline(0.0, color="0.4", linewidth=1)
        stem = column if column == "effect" else f"{column}_mean"
        low_column = "effect_ci_low" if column == "effect" else f"{column}_ci_low"
        high_column = "effect_ci_high" if column == "effect" else f"{column}_ci_high"
        ordered = table.sort_values(["kind", "prompt_id"], key=lambda c: c.map(kind_rank) if c.name == "kind" else c)
        for index, (prompt_id, rows) in enumerate(ordered.groupby("prompt_id", sort=False)):
            rows = rows.sort_values("dose")
            color = KIND_BY_NAME[rows["kind"].iloc[0]].color
            line_column = "effect_mean" if column == "effect" else stem
            axes.plot(rows["dose"], rows[line_column], marker="o", color=color, linestyle=styles[index % len(styles)],
                      label=f"{prompt_id} ({rows['kind'].iloc[0]})")
            axes.fill_between(rows["dose"], rows[low_column], rows[high_column], color=color, alpha=0.15)
        axes.axvline(0.0, color="0.7", linewidth=0.8)
        axes.axvline(1.0, color="0.7", linewidth=0.8, linestyle=":")
        axes.set_xlabel("dose (0 = baseline, 1 = word prompt)")
        axes.set_ylabel(label)
        axes.legend(fontsize=7, loc="best")
        _title(axes, "Dose response (mean, 95% t interval over images)", model_name, caveat)
    save_figure(figure, path)


def ssim_map_picture(ssim_map: np.ndarray) -> np.ndarray:
    """An SSIM map as an ``(H, W, 3)`` uint8 RGB picture in :data:`SSIM_MAP_COLORMAP`
    over the fixed :data:`SSIM_MAP_RANGE` (values below it get its lowest colour)."""
    low, high = SSIM_MAP_RANGE
    scaled = np.clip((ssim_map - low) / (high - low), 0.0, 1.0)
    return matplotlib.colormaps[SSIM_MAP_COLORMAP](scaled, bytes=True)[..., :3]


def draw_ssim_map(axes: plt.Axes, ssim_map: np.ndarray, title: str) -> matplotlib.image.AxesImage:
    """Draw an SSIM map on ``axes`` in the fixed colours of :func:`ssim_map_picture`;
    pass the result to :func:`ssim_colorbar`."""
    low, high = SSIM_MAP_RANGE
    image = axes.imshow(ssim_map, cmap=SSIM_MAP_COLORMAP, vmin=low, vmax=high)
    axes.set_title(title, fontsize=7)
    axes.axis("off")
    return image


def ssim_colorbar(image: matplotlib.image.AxesImage, axes: plt.Axes | Sequence[plt.Axes]) -> None:
    """A colorbar for SSIM maps drawn by :func:`draw_ssim_map`, beside ``axes``."""
    image.figure.colorbar(image, ax=axes, extend="min", label=SSIM_MAP_LABEL, shrink=0.8)


def contact_sheet(
    edge_map: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    title: str,
    caveat: str | None,
    path: str | Path,
    maps: Sequence[tuple[str, np.ndarray]] | None = None,
) -> None:
    """The edge map, the baseline and every variant of one image, one seed.

    ``maps`` holds (label, SSIM map) pairs, each drawn under the panel with the
    same label, with one colorbar for all of them (they share one range).
    """
    columns = 6
    count = 1 + len(panels)
    rows = int(np.ceil(count / columns))
    # With maps, every row of pictures has a row of their SSIM maps under it.
    stride = 2 if maps else 1
    figure, grid = plt.subplots(rows * stride, columns, figsize=(2.2 * columns, 2.4 * rows * stride), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    picture_cells = list(grid[::stride].flat)
    picture_cells[0].imshow(edge_map, cmap="gray")
    picture_cells[0].set_title("edge map", fontsize=8)
    for axes, (label, picture) in zip(picture_cells[1:], panels):
        axes.imshow(picture)
        axes.set_title(label, fontsize=7)
    if maps:
        map_cells = dict(zip([label for label, _ in panels], list(grid[1::stride].flat)[1:]))
        drawn = [draw_ssim_map(map_cells[label], ssim_map, f"SSIM {label}") for label, ssim_map in maps]
        ssim_colorbar(drawn[-1], list(grid.flat))
    figure.suptitle(title + (f"\n{caveat}" if caveat else ""), fontsize=9)
    # PNG only: a sheet is pictures, which an SVG would only wrap, at twice the time.
    save_figure(figure, path, svg=False)


def quality_forest(quality: pd.DataFrame, model_name: str, caveat: str | None, path: str | Path) -> None:
    """Per metric, one panel: each prompt's mean paired change against the
    same-seed baseline with its 95% CI, beside the band of the seed noise
    floor (± the mean change between baselines of two seeds)."""
    metrics = list(dict.fromkeys(quality["metric"]))
    ordered = _ordered(quality.drop_duplicates("prompt_id"))["prompt_id"].tolist()
    columns = min(3, max(1, len(metrics)))
    rows = int(np.ceil(len(metrics) / columns)) if metrics else 1
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 0.32 * len(ordered) * rows + 1.8 * rows), squeeze=False)
    for axes in grid.flat[len(metrics):]:
        axes.axis("off")
    positions = {prompt: index for index, prompt in enumerate(reversed(ordered))}
    for axes, name in zip(grid.flat, metrics):
        rows_of_metric = quality[quality["metric"] == name]
        floor = float(rows_of_metric["noise_floor"].mean())
        if np.isfinite(floor):
            axes.axvspan(-floor, floor, color="0.88", label="seed noise floor")
        axes.axvline(0, color="0.4", linewidth=1)
        for kind, rows_of_kind in rows_of_metric.groupby("kind", sort=False):
            y = rows_of_kind["prompt_id"].map(positions)
            errors = np.vstack([rows_of_kind["delta_mean"] - rows_of_kind["delta_ci_low"], rows_of_kind["delta_ci_high"] - rows_of_kind["delta_mean"]])
            axes.errorbar(rows_of_kind["delta_mean"], y, xerr=np.nan_to_num(errors), fmt="o", capsize=3, color=KIND_BY_NAME[kind].color, label=f"{kind} prompts")
        axes.set_yticks(list(positions.values()), list(positions), fontsize=7)
        metric = METRICS_BY_NAME.get(name)
        axes.set_xlabel(f"Δ {metric.label if metric else name} ({metric.direction if metric else ''})", fontsize=8)
    grid.flat[0].legend(fontsize=7, loc="best")
    figure.suptitle(f"Paired change against the same-seed baseline (mean, 95% t interval over images)\n{model_name}", fontsize=10)
    if caveat:
        figure.text(0.5, -0.02, caveat, ha="center", va="top", fontsize=9, color="darkred", bbox={"facecolor": "white", "edgecolor": "darkred"})
    figure.tight_layout()
    save_figure(figure, path)


def change_vs_gain(summary: pd.DataFrame, quality: pd.DataFrame, effect: Metric, gain: Metric, model_name: str, caveat: str | None, path: str | Path) -> None:
    """One point per prompt: how much it changes the image (1 - ``effect``)
    against how much it changes ``gain``, both with 95% CIs."""
    deltas = quality[quality["metric"] == gain.name].set_index("prompt_id")
    table = summary.set_index("prompt_id").join(deltas[["delta_mean", "delta_ci_low", "delta_ci_high"]], how="inner")
    figure, axes = plt.subplots(figsize=(6.5, 5))
    name = effect.name
    for kind, rows in table.groupby("kind", sort=False):
        x = 1 - rows[f"{name}_mean"]
        x_errors = np.vstack([rows[f"{name}_ci_high"] - rows[f"{name}_mean"], rows[f"{name}_mean"] - rows[f"{name}_ci_low"]])
        y_errors = np.vstack([rows["delta_mean"] - rows["delta_ci_low"], rows["delta_ci_high"] - rows["delta_mean"]])
        axes.errorbar(x, rows["delta_mean"], xerr=np.nan_to_num(x_errors), yerr=np.nan_to_num(y_errors), fmt="o", capsize=3, color=KIND_BY_NAME[kind].color, label=f"{kind} prompts")
        for prompt_id, x_value, y_value in zip(rows.index, x, rows["delta_mean"]):
            axes.annotate(prompt_id, (x_value, y_value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.axhline(0, color="0.4", linewidth=1)
    axes.set_xlabel(f"change: 1 − {effect.display_name} to the same-seed baseline")
    # Up is a gain only where higher is better: say which it is (BRISQUE up is worse).
    axes.set_ylabel(f"Δ {gain.label} (up: {gain.judge(1)}, down: {gain.judge(-1)})")
    axes.legend(fontsize=8, loc="best")
    _title(axes, "Change against gain, per additional prompt (95% CIs)", model_name, caveat)
    save_figure(figure, path)


def power_curves(curves: pd.DataFrame, n_images: int, model_name: str, caveat: str | None, path: str | Path) -> None:
    """Resampled power of each prompt's test against the noise floor by number
    of images, with the 80% target and this study's number of images."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for prompt_id, rows in curves.groupby("prompt_id", sort=False):
        axes.plot(rows["n_images"], rows["power"], marker=".", label=prompt_id)
    axes.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="80% power")
    axes.axvline(n_images, color="black", linestyle=":", linewidth=1, label=f"this study ({n_images} images)")
    axes.set_xscale("log")
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("images in the study (log scale)")
    axes.set_ylabel("power at alpha = 0.05")
    axes.legend(fontsize=7, ncol=2, loc="lower right")
    _title(axes, "Power to detect each prompt's change against the noise floor", model_name, caveat)
    save_figure(figure, path, svg=False)


def search_convergence(
    trials: dict[str, pd.DataFrame], generations_per_trial: int, metric: Metric, model_name: str,
    caveat: str | None, path: str | Path, word_search: str,
) -> None:
    """Each optimiser's best feasible objective so far against the
    generations it has spent on the selection split, one line per
    optimiser, and the best word prompt's level as a dashed line."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for search, table in trials.items():
        if search == word_search:
            continue
        axes.step(table["trial"] * generations_per_trial, table["best_so_far"], where="post", marker=".", label=search)
    words = trials.get(word_search)
    if words is not None and words["best_so_far"].notna().any():
        level = words["best_so_far"].iloc[-1]
        axes.axhline(level, color="0.3", linestyle="--", label=f"best word prompt ({level:.3g})")
    axes.set_xlabel("generations spent on the selection split")
    axes.set_ylabel(f"best {metric.display_name} so far ({metric.direction})")
    axes.legend(fontsize=8, loc="best")
    _title(axes, "Search convergence (feasible trials only)", model_name, caveat)
    save_figure(figure, path)


def search_contact_sheet(
    images: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]]]], seed: int, model_name: str,
    caveat: str | None, path: str | Path,
) -> None:
    """One row per evaluation image: its edge map, then its pictures
    (the baseline, each optimiser's best, the best word prompt), all with ``seed``."""
    columns = 1 + max(len(panels) for _, _, panels in images)
    figure, grid = plt.subplots(len(images), columns, figsize=(2.0 * columns, 2.2 * len(images)), squeeze=False)
    for row, (image_id, edge_map, panels) in zip(grid, images):
        for axes in row:
            axes.axis("off")
        row[0].imshow(edge_map, cmap="gray")
        row[0].set_title(f"{image_id}: edges", fontsize=7)
        for axes, (label, picture) in zip(row[1:], panels):
            axes.imshow(picture)
            axes.set_title(label, fontsize=7)
    title = f"Held-out images, seed {seed}: baseline, each optimiser's best, best word prompt\n{model_name}"
    figure.suptitle(title + (f"\n{caveat}" if caveat else ""), fontsize=9)
    save_figure(figure, path, svg=False)


def effect_by_model(models: pd.DataFrame, notes: Sequence[str], path: str | Path) -> None:
    """Each prompt's effect (1 − SSIM to the same-seed baseline, mean and 95%
    t interval over images) in every model of ``models.csv``, prompts in
    rows, models side by side; a dashed line marks each model's noise floor
    (what a new seed alone changes). ``notes`` (each model's caveats) go
    below the axes."""
    names = list(dict.fromkeys(models["model"]))
    # Prompts grouped by kind, in the table's order within a kind.
    first = models.drop_duplicates("prompt_id")
    prompts = first.sort_values("kind", key=lambda kinds: kinds.map(kind_rank), kind="stable")["prompt_id"].tolist()
    row = {prompt_id: index for index, prompt_id in enumerate(prompts)}
    figure, axes = plt.subplots(figsize=(7.5, max(3.0, 0.35 * len(prompts) * max(1, len(names)) ** 0.5 + 1.5)))
    colours = plt.get_cmap("tab10")
    spread = 0.7 / max(1, len(names))
    for index, name in enumerate(names):
        rows = models[models["model"] == name]
        y = rows["prompt_id"].map(row).to_numpy(float) + (index - (len(names) - 1) / 2) * spread
        errors = np.vstack([rows["effect_mean"] - rows["effect_ci_low"], rows["effect_ci_high"] - rows["effect_mean"]])
        colour = colours(index % 10)
        axes.errorbar(rows["effect_mean"], y, xerr=np.nan_to_num(errors), fmt="o", capsize=3, color=colour, label=name)
        floor = float(rows["noise_floor_mean"].mean())
        if np.isfinite(floor):
            axes.axvline(floor, color=colour, linestyle="--", linewidth=1)
    axes.set_yticks(range(len(prompts)), prompts, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("effect: 1 − SSIM to same-seed baseline (dashed: each model's noise floor)")
    axes.legend(fontsize=8, loc="best", title="model")
    axes.set_title("How much each additional prompt changes the image, per model\n(mean, 95% t interval over images)", fontsize=11)
    if notes:
        figure.text(0.5, -0.06, "\n".join(notes), ha="center", va="top", fontsize=8, color="darkred", wrap=True)
    save_figure(figure, path)
