"""Time each per-image quality measure on this machine's CPU, on the
astronaut photograph shipped with scikit-image at 256 and 512 px.

    python benchmarks/quality_speed.py

Prints milliseconds per image (median of 7, after one warm-up that also loads
BRISQUE's model).
"""

from __future__ import annotations

import statistics
import time

import cv2
import skimage.data

from promptsweep.registry import ScoredImage, quality_metrics


def main() -> None:
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")
    for size in (256, 512):
        image = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
        sample = [ScoredImage(image, "astronaut", "astronaut", image[..., 0], 100, 200)]
        for metric in quality_metrics():
            if metric.load is not None:
                continue  # learned: benchmarks/preference_speed.py
            metric.score(None, sample)  # warm-up
            seconds = []
            for _ in range(7):
                started = time.perf_counter()
                metric.score(None, sample)
                seconds.append(time.perf_counter() - started)
            print(f"{metric.name:13s} {size} px: {1000 * statistics.median(seconds):8.2f} ms per image")


if __name__ == "__main__":
    main()
