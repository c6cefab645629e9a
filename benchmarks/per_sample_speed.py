"""Time the model-free pair metrics (SSIM, MS-SSIM, PSNR) in metric
processes: all of them in one pass over the pairs, as a job computes them
(``LoadedMetrics.score``), against a pass per metric.

    python benchmarks/per_sample_speed.py [--processes 2] [--pairs 16] [--runs 3]

Pairs are random 512 px pictures and a noisy copy of each; every run scores
fresh pair objects, so no cached statistics carry over. Prints the median and
range of the runs for each way.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from promptsweep import registry
from promptsweep.threads import use_metric_processes

METRICS = ("ssim", "ms_ssim", "psnr")


def fresh(pairs: list[registry.ImagePair]) -> list[registry.ImagePair]:
    return [registry.ImagePair(pair.baseline, pair.variant) for pair in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(arguments.pairs):
        baseline = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        noise = rng.integers(-20, 20, baseline.shape)
        pairs.append(registry.ImagePair(baseline, np.clip(baseline + noise, 0, 255).astype(np.uint8)))
    loaded = registry.LoadedMetrics([registry.METRICS[name] for name in METRICS], {}, {}, [])
    use_metric_processes(arguments.processes, "cpu", arguments.processes)
    loaded.score(fresh(pairs[:4]))  # starts the workers

    def one_pass() -> None:
        loaded.score(fresh(pairs))

    def pass_per_metric() -> None:
        samples = fresh(pairs)
        for metric in loaded.metrics:
            metric.score(None, samples)

    print(f"{arguments.pairs} pairs at 512 px, {', '.join(METRICS)}, {arguments.processes} metric processes")
    for name, way in (("one pass", one_pass), ("a pass per metric", pass_per_metric)):
        seconds = []
        for _ in range(arguments.runs):
            started = time.perf_counter()
            way()
            seconds.append(time.perf_counter() - started)
        print(f"{name}: median {statistics.median(seconds):.2f} s (range {min(seconds):.2f}-{max(seconds):.2f})")
    use_metric_processes(0, "cpu", 1)


if __name__ == "__main__":
    main()
