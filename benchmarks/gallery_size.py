"""Size of the pair gallery on disk, and how fast it is ready in headless Chromium.

    PYTHONPATH=src:tests python benchmarks/gallery_size.py           # 10 images x 10 prompts x 2 seeds
    PYTHONPATH=src:tests python benchmarks/gallery_size.py --large   # and 10 x 11 x 8

The default case is the default study's size (10 images, 5 + 5 prompts, 2
seeds, 256 px); goals: at most 10 MB, ready in under 2 s. Pictures are crops
of scikit-image's bundled photographs; a variant is its baseline with noise
everywhere (a diffusion model redraws every pixel, so real SSIM maps are
textured, which compresses worse than a clean map) and one region redrawn.

"Ready" is the ``gallery-ready`` performance mark that the page sets in the
frame after its first render, in milliseconds from navigation start; "load"
is the load event's end. Each of three runs starts a fresh browser (no
cache); the median is printed. Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data, transform

import headless_chromium
from promptsweep import edges, files, gallery, metrics, plots

PHOTOGRAPHS = (data.astronaut, data.chelsea, data.coffee, data.rocket)
RUNS = 3


def photograph_crop(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random square crop of a bundled photograph, resized to ``side``."""
    photograph = PHOTOGRAPHS[rng.integers(len(PHOTOGRAPHS))]()
    crop = int(rng.integers(min(photograph.shape[:2]) // 2, min(photograph.shape[:2])))
    top = int(rng.integers(0, photograph.shape[0] - crop + 1))
    left = int(rng.integers(0, photograph.shape[1] - crop + 1))
    resized = transform.resize(photograph[top : top + crop, left : left + crop], (side, side), anti_aliasing=True)
    return (resized * 255).round().astype(np.uint8)


def variant_of(baseline: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = baseline + rng.normal(0, 6, baseline.shape)
    side = baseline.shape[0]
    size = side // 3
    top, left = rng.integers(0, side - size, 2)
    noisy[top : top + size, left : left + size] = photograph_crop(rng, size)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_study(directory: Path, n_images: int, n_prompts: int, n_seeds: int, side: int) -> pd.DataFrame:
    """PNGs of a synthetic study and its pairs table, with the metrics the
    workflow's pairs table has (values for show, not measured)."""
    rng = np.random.default_rng(0)
    rows = []
    for image in range(n_images):
        edge_path = directory / "edges" / f"image{image}.png"
        files.write_png(edge_path, edges.canny(photograph_crop(rng, side), 100, 200))
        for seed in range(n_seeds):
            baseline = photograph_crop(rng, side)
            baseline_path = directory / f"image{image}" / "baseline" / f"seed{seed}.png"
            files.write_png(baseline_path, baseline)
            for prompt in range(n_prompts):
                kind = "positive" if prompt < n_prompts // 2 else "negative"
                variant_path = directory / f"image{image}" / f"p{prompt}" / f"seed{seed}.png"
                variant = variant_of(baseline, rng)
                files.write_png(variant_path, variant)
                map_path = directory / "ssim_maps" / f"image{image}" / f"p{prompt}" / f"seed{seed}.png"
                files.write_png(map_path, plots.ssim_map_picture(metrics.ssim_map(baseline, variant)))
                rows.append({
                    "image_id": f"image{image}", "prompt_id": f"{kind[:3]}{prompt}@0.5", "kind": kind,
                    "dose": 0.5, "seed": seed, "emphasis": prompt % 5 + 1,
                    **dict(zip(("ssim", "ms_ssim", "psnr", "lpips"), rng.random(4))),
                    **dict(zip(("edge_f1_baseline", "edge_f1_variant", "sharpness_delta"), rng.random(3))),
                    "excluded": "", "edge_path": str(edge_path),
                    "baseline_path": str(baseline_path), "variant_path": str(variant_path),
                    "ssim_map_path": str(map_path),
                })
    return pd.DataFrame(rows)


def folder_megabytes(directory: Path) -> float:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file()) / 1e6


def ready_and_load_ms(index: Path) -> tuple[float, float]:
    driver = headless_chromium.start()
    try:
        driver.get(index.as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.documentElement.dataset.ready") == "true"
        )
        ready, load = driver.execute_script(
            "return [performance.getEntriesByName('gallery-ready')[0].startTime,"
            " performance.getEntriesByType('navigation')[0].loadEventEnd]"
        )
        if errors := headless_chromium.severe_console_messages(driver):
            raise RuntimeError(f"console errors: {errors}")
        return ready, load
    finally:
        driver.quit()


def measure(n_images: int, n_prompts: int, n_seeds: int, side: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        pairs = write_study(Path(scratch) / "study", n_images, n_prompts, n_seeds, side)
        started = time.perf_counter()
        index = gallery.write_gallery(pairs, Path(scratch) / "gallery", "benchmark")
        written = time.perf_counter() - started
        output = index.parent
        sizes = {part: folder_megabytes(output / part) for part in ("thumbs", "full")}
        timings = [ready_and_load_ms(index) for _ in range(RUNS)]
        ready = statistics.median(t[0] for t in timings)
        load = statistics.median(t[1] for t in timings)
        print(
            f"{n_images} images x {n_prompts} prompts x {n_seeds} seeds at {side} px ({len(pairs)} pairs): "
            f"{folder_megabytes(output):.2f} MB (thumbnails {sizes['thumbs']:.2f}, full size {sizes['full']:.2f}, "
            f"data.js {(output / gallery.DATA_FILE).stat().st_size / 1e6:.2f}); written in {written:.1f} s; "
            f"ready {ready:.0f} ms, load {load:.0f} ms (median of {RUNS}: "
            + ", ".join(f"{r:.0f}" for r, _ in timings) + " ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also 10 images x 11 conditions x 8 seeds")
    parser.add_argument("--side", type=int, default=256, help="picture side in px (default 256)")
    arguments = parser.parse_args()
    if reason := headless_chromium.missing_reason():
        raise SystemExit(reason)
    measure(10, 10, 2, arguments.side)
    if arguments.large:
        measure(10, 11, 8, arguments.side)


if __name__ == "__main__":
    main()
