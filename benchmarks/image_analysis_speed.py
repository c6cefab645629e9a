"""Time the analysis jobs of one image as the workflow runs them: its
per-image metrics, pair metrics and noise floor.

    PYTHONPATH=src:tests python benchmarks/image_analysis_speed.py [--processes 0 2] [--runs 3]
        [--source src OTHER/src]

The image has the shape of ``gpu_throughput.py --workflow``'s: 11 conditions
(a baseline and 10 prompts) x 8 seeds at 512 px, so 88 images, 80 pairs and
28 seed pairs; the pictures are those of ``gallery_size.py``. On a GPU these
jobs of the last image are the tail of a run, after the last generation.
The metrics are the default config's (no learned weights).

Each run starts a fresh Python process per source tree (``--source``, a
folder holding the ``promptsweep`` package; several compare versions of the
code) and per ``runtime.metric_processes`` value, in turn, so that versions
alternate on the same machine. Prints the median and range of each job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONDITIONS = ["baseline", *(f"p{index}" for index in range(10))]
SEEDS = list(range(8))
JOBS = ("image_metrics", "pair_metrics", "noise_floor")


def write_image_folder(folder: Path, side: int) -> None:
    """Every condition's and seed's picture with its record, and the edge map."""
    from gallery_size import photograph_crop, variant_of

    from promptsweep import edges, files

    rng = np.random.default_rng(0)
    files.write_png(folder / "edges.png", edges.canny(photograph_crop(rng, side), 100, 200))
    for seed in SEEDS:
        baseline = photograph_crop(rng, side)
        for condition in CONDITIONS:
            path = folder / condition / f"seed{seed}.png"
            files.write_png(path, baseline if condition == "baseline" else variant_of(baseline, rng))
            record = {"valid": True, "sha256": files.file_sha256(path), "prompt": f"a photograph, {condition}"}
            files.write_json(path.with_suffix(".json"), record)


def time_jobs(folder: Path, output: Path, processes: int) -> dict[str, float]:
    """Seconds of each job, run as the workflow's rules call them, with
    ``processes`` metric processes (started before the clock runs)."""
    import yaml

    from promptsweep import registry
    from promptsweep.jobs import metrics
    from promptsweep.threads import map_measure, use_metric_processes

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["metrics"]
    use_metric_processes(processes, "cuda", processes + 1)
    map_measure(abs, list(range(processes + 1)))

    def files_of(condition: str, suffix: str) -> list[str]:
        return [str(folder / condition / f"seed{seed}.{suffix}") for seed in SEEDS]

    prompts = CONDITIONS[1:]
    jobs = {
        "image_metrics": lambda: metrics.image_metrics(
            image_id="image", edge_map=str(folder / "edges.png"), conditions=CONDITIONS, seeds=SEEDS,
            images=[path for condition in CONDITIONS for path in files_of(condition, "png")],
            records=[path for condition in CONDITIONS for path in files_of(condition, "json")],
            canny_low=100, canny_high=200, subject="photograph",
            settings=registry.metric_settings(config, "image"),
            output=str(output / "image_metrics.tsv"), log=str(output / "image_metrics.log"),
        ),
        "pair_metrics": lambda: metrics.pair_metrics(
            image_id="image", prompts=prompts, seeds=SEEDS,
            baselines=files_of("baseline", "png"), baseline_records=files_of("baseline", "json"),
            variants={prompt: files_of(prompt, "png") for prompt in prompts},
            variant_records={prompt: files_of(prompt, "json") for prompt in prompts},
            weights=[], settings=registry.metric_settings(config, "pair"),
            outputs=[str(output / "pair_metrics" / f"{prompt}.tsv") for prompt in prompts],
            ssim_maps=[str(output / "ssim_maps" / prompt / f"seed{seed}.png") for prompt in prompts for seed in SEEDS],
            log=str(output / "pair_metrics.log"),
        ),
        "noise_floor": lambda: metrics.noise_floor(
            image_id="image", seeds=SEEDS, baselines=files_of("baseline", "png"),
            records=files_of("baseline", "json"), weights=[], settings=registry.metric_settings(config, "pair"),
            output=str(output / "noise_floor.tsv"), log=str(output / "noise_floor.log"),
        ),
    }
    seconds = {}
    for name in JOBS:
        started = time.perf_counter()
        jobs[name]()
        seconds[name] = time.perf_counter() - started
    return seconds


def run_in_process(source: str, folder: Path, processes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as output:
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([source, str(Path(__file__).parent)]) + os.pathsep
                       + os.environ.get("PYTHONPATH", "")}
        command = [sys.executable, __file__, "--time-jobs", str(folder), output, str(processes)]
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode:
            raise SystemExit(f"timing the jobs with {source} failed:\n{finished.stderr}")
        return json.loads(finished.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--source", nargs="+", default=[str(Path(__file__).parents[1] / "src")])
    arguments = parser.parse_args()
    timings: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_image_folder(folder, arguments.side)
        for run in range(arguments.runs):
            for source in arguments.source:
                for processes in arguments.processes:
                    seconds = run_in_process(source, folder, processes)
                    timings.setdefault((source, processes), []).append(seconds)
                    print(f"run {run + 1}, {source}, {processes} metric processes: "
                          + ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items()), flush=True)
    print(f"{len(CONDITIONS)} conditions x {len(SEEDS)} seeds at {arguments.side} px; median (range) of {arguments.runs} runs")
    for (source, processes), runs in timings.items():
        parts = []
        for name in [*JOBS, "all"]:
            values = [sum(seconds.values()) if name == "all" else seconds[name] for seconds in runs]
            parts.append(f"{name} {statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})")
        print(f"{source}, {processes} metric processes: " + ", ".join(parts))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--time-jobs"]:
        folder, output, processes = sys.argv[2:5]
        print(json.dumps(time_jobs(Path(folder), Path(output), int(processes))))
    else:
        main()
