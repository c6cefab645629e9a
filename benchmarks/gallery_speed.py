"""Time writing the pair gallery here and in metric processes, as the
gallery job does on a CPU (no processes) and on a GPU (``--cores`` - 1).

    PYTHONPATH=src:tests python benchmarks/gallery_speed.py [--processes 2] [--runs 3]

The study has the shape of ``gpu_throughput.py --workflow``'s: 4 images x 10
prompts x 8 seeds at 512 px, 320 pairs and 676 pictures (the synthetic
pictures of ``gallery_size.py``). The gallery job is the last one of a run,
so its time is all tail, after the GPU has finished. The two ways alternate,
each writing a fresh folder; prints the median and range of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gallery_size import write_study

from promptsweep import gallery
from promptsweep.threads import map_measure, use_metric_processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", type=int, default=512)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pairs = write_study(Path(scratch) / "study", 4, 10, 8, arguments.side)
        pictures = len(gallery.unique_pictures(gallery.plan_pictures(pairs)))
        seconds: dict[int, list[float]] = {0: [], arguments.processes: []}
        for run in range(arguments.runs):
            for processes in seconds:
                use_metric_processes(processes, "cpu", processes)
                map_measure(abs, [1, -1])  # starts the workers, outside the timing
                started = time.perf_counter()
                gallery.write_gallery(pairs, Path(scratch) / f"gallery{run}-{processes}", "benchmark")
                seconds[processes].append(time.perf_counter() - started)
        use_metric_processes(0, "cpu", 1)
    print(f"{len(pairs)} pairs, {pictures} pictures at {arguments.side} px")
    for processes, times in seconds.items():
        way = f"{processes} metric processes" if processes else "here (no metric processes)"
        print(f"{way}: median {statistics.median(times):.1f} s (range {min(times):.1f}-{max(times):.1f})")


if __name__ == "__main__":
    main()
