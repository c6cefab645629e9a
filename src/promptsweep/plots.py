"""Figures of the study, each saved as PNG and SVG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on workstations' batch jobs or clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from promptsweep import files  # noqa: E402

KIND_COLORS = {"positive": "tab:blue", "negative": "tab:red"}
TINY_NOTE = "tiny random model: these numbers test the workflow and mean nothing"

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


def _title(axes: plt.Axes, title: str, model_name: str, tiny: bool) -> None:
    axes.set_title(f"{title}\n{model_name}", fontsize=11)
    if tiny:
        # Below the axes, where no data or legend can hide it.
        axes.figure.text(
            0.5, -0.04, TINY_NOTE, ha="center", va="top", fontsize=9, color="darkred",
            bbox={"facecolor": "white", "edgecolor": "darkred"},
        )


def save_figure(figure: plt.Figure, png_path: str | Path) -> None:
    """Save as PNG at ``png_path`` and as SVG beside it, atomically."""
    png_path = Path(png_path)
    for path in (png_path, png_path.with_suffix(".svg")):
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(figure)


def _ordered(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.sort_values(["kind", "emphasis"], key=lambda c: c.map({"positive": 0, "negative": 1}) if c.name == "kind" else c)


def ssim_by_prompt(summary: pd.DataFrame, noise_floor_ssim: tuple[float, float, float], model_name: str, tiny: bool, path: str | Path) -> None:
    """Mean SSIM of each prompt's variants to their baselines, 95% CI, positive
    and negative prompts grouped and ordered by emphasis, beside the noise floor
    (``(mean, ci_low, ci_high)`` SSIM between seeds of the same baseline)."""
    ordered = _ordered(summary).reset_index(drop=True)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(ordered) + 2), 4.5))
    positions = np.arange(len(ordered)) + (ordered["kind"] == "negative").to_numpy() * 0.8
    mean, low, high = noise_floor_ssim
    if np.isfinite(mean):
        axes.axhspan(low if np.isfinite(low) else mean, high if np.isfinite(high) else mean, color="0.85", label="noise floor (seed alone), 95% CI")
        axes.axhline(mean, color="0.4", linestyle="--", linewidth=1)
    for kind, rows in ordered.groupby("kind", sort=False):
        x = positions[rows.index]
        errors = np.vstack([rows["ssim_mean"] - rows["ssim_ci_low"], rows["ssim_ci_high"] - rows["ssim_mean"]])
        axes.errorbar(x, rows["ssim_mean"], yerr=np.nan_to_num(errors), fmt="o", capsize=4, color=KIND_COLORS[kind], label=f"{kind} prompts")
    axes.set_xticks(positions, [f"{p}\n(rank {e})" for p, e in zip(ordered["prompt_id"], ordered["emphasis"])], fontsize=8)
    axes.set_ylabel("SSIM to same-seed baseline (1 = unchanged)")
    axes.set_xlabel("additional prompt, ordered by emphasis")
    axes.legend(fontsize=8, loc="best")
    _title(axes, "How much each additional prompt changes the image (mean, 95% bootstrap CI over images)", model_name, tiny)
    save_figure(figure, path)


def effect_vs_emphasis(summary: pd.DataFrame, model_name: str, tiny: bool, path: str | Path) -> None:
    """Effect (1 - SSIM) against emphasis rank, one line per kind, with 95% CIs."""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for kind, rows in _ordered(summary).groupby("kind", sort=False):
        effect = 1 - rows["ssim_mean"]
        errors = np.vstack([rows["ssim_ci_high"] - rows["ssim_mean"], rows["ssim_mean"] - rows["ssim_ci_low"]])
        axes.errorbar(rows["emphasis"], effect, yerr=np.nan_to_num(errors), marker="o", capsize=4, color=KIND_COLORS[kind], label=f"{kind} prompts")
    axes.set_xlabel("emphasis rank (1 = weakest)")
    axes.set_ylabel("effect: 1 − SSIM to baseline")
    axes.legend(fontsize=8)
    _title(axes, "Effect against emphasis", model_name, tiny)
    save_figure(figure, path)


def image_prompt_heatmap(pairs: pd.DataFrame, prompt_order: Sequence[str], model_name: str, tiny: bool, path: str | Path) -> None:
    """Mean SSIM over seeds for every image x prompt."""
    grid = pairs.pivot_table(index="image_id", columns="prompt_id", values="ssim", aggfunc="mean")
    grid = grid.reindex(columns=[p for p in prompt_order if p in grid.columns])
    figure, axes = plt.subplots(figsize=(0.6 * grid.shape[1] + 3, 0.4 * grid.shape[0] + 2))
    image = axes.imshow(grid.to_numpy(), cmap="viridis", vmin=np.nanmin(grid.to_numpy()) if grid.size else 0, vmax=1, aspect="auto")
    axes.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    axes.set_xlabel("additional prompt")
    axes.set_ylabel("image")
    figure.colorbar(image, ax=axes, label="mean SSIM to baseline over seeds")
    _title(axes, "SSIM per image and prompt", model_name, tiny)
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
    tiny: bool,
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
    figure.suptitle(title + (f"\n{TINY_NOTE}" if tiny else ""), fontsize=9)
    save_figure(figure, path)
