"""Time LPIPS per image pair on this machine's CPU, for both networks at the
default (256 px) and ControlNet's (512 px) resolution.

    python benchmarks/lpips_speed.py

Weights are PyTorch's random initialisation: the arithmetic, and so the time,
is that of the real checkpoints. Prints milliseconds per pair (median of 5).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from promptsweep.learned import Lpips, lpips_backbone, lpips_distances


def random_lpips(network: str) -> Lpips:
    backbone = lpips_backbone(network)
    backbone.features.eval()
    return Lpips(backbone, tuple(torch.rand(channels) for channels in backbone.tapped_channels))


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for network in ("alex", "vgg"):
        lpips = random_lpips(network)
        for size in (256, 512):
            image_a, image_b = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2))
            lpips_distances(lpips, [image_a], [image_b])  # warm-up
            seconds = []
            for _ in range(5):
                started = time.perf_counter()
                lpips_distances(lpips, [image_a], [image_b])
                seconds.append(time.perf_counter() - started)
            print(f"{network:5s} {size} px: {1000 * statistics.median(seconds):7.1f} ms per pair")


if __name__ == "__main__":
    main()
