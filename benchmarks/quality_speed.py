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

from promptsweep.quality import QUALITY_MEASURES


def main() -> None:
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")
    for size in (256, 512):
        image = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
        for measure in QUALITY_MEASURES:
            measure.compute(image)  # warm-up
            seconds = []
            for _ in range(7):
                started = time.perf_counter()
                measure.compute(image)
                seconds.append(time.perf_counter() - started)
            print(f"{measure.name:13s} {size} px: {1000 * statistics.median(seconds):8.2f} ms per image")


if __name__ == "__main__":
    main()
