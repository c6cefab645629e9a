"""The SSIM maps' pictures and the contact sheet's map row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from promptsweep import metrics, plots

# Width and height of the synthetic pictures: larger than a thumbnail, not square.
SIZE = (160, 192)


def synthetic_picture(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour gradients with a few rectangles: something to see."""
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, rng.integers(0, 256))], axis=2)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        pixels[y0 : y0 + 40, x0 : x0 + 40] = rng.integers(0, 256, 3)
    return pixels.astype(np.uint8)


def changed(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``picture`` with one region replaced by noise: a local change to find."""
    variant = picture.copy()
    y0, x0 = rng.integers(0, SIZE[1] - 60), rng.integers(0, SIZE[0] - 60)
    variant[y0 : y0 + 60, x0 : x0 + 60] = rng.integers(0, 256, (60, 60, 3))
    return variant


# --- SSIM map pictures and the contact sheet ---------------------------------


def test_ssim_map_picture_uses_the_fixed_range_and_clips_below_it() -> None:
    ssim_map = np.array([[-0.5, 0.0, 0.5, 1.0]])
    picture = plots.ssim_map_picture(ssim_map)
    assert picture.shape == (1, 4, 3) and picture.dtype == np.uint8
    viridis_ends = plots.matplotlib.colormaps["viridis"]([0.0, 1.0], bytes=True)[:, :3]
    np.testing.assert_array_equal(picture[0, 0], picture[0, 1])
    np.testing.assert_array_equal(picture[0, [1, 3]], viridis_ends)


def test_contact_sheet_draws_a_map_under_each_variant(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    baseline = synthetic_picture(rng)
    variants = [("good", changed(baseline, rng)), ("bad", changed(baseline, rng))]
    maps = [(label, metrics.ssim_map(baseline, variant)) for label, variant in variants]
    path = tmp_path / "sheet.png"
    plots.contact_sheet(np.zeros(SIZE[::-1], np.uint8), [("baseline", baseline), *variants], "cat, seed 0", False, path, maps=maps)
    with Image.open(path) as sheet:
        assert sheet.height > sheet.width / 3  # two rows: pictures, then maps
    assert path.with_suffix(".svg").is_file()
