"""Edge stage: the Canny edge map of each input image."""

from __future__ import annotations

from pathlib import Path

from promptsweep import edges, files
from promptsweep.jobs import job_log


def edge_map(*, image: str, output: str, resolution: int, low: int, high: int, log: str) -> None:
    """The control input of one image: ControlNet's preprocessing, then Canny."""
    with job_log(log, f"edges {Path(image).name}") as logger:
        pixels = edges.read_image(Path(image))
        edge = edges.edge_map(pixels, resolution, low, high)
        files.write_png(Path(output), edge)
        logger.info(
            "%s: %dx%d -> edge map %dx%d, %.1f%% edge pixels",
            image, pixels.shape[1], pixels.shape[0], edge.shape[1], edge.shape[0],
            100.0 * (edge > 0).mean(),
        )
