"""How long Snakemake takes to plan a large study, and how much memory.

    python benchmarks/dag_scale.py [--images 400] [--prompts 20] [--seeds 5] [--runs 3]

Writes the sheets of a study of that size into a fresh copy of the workflow
(every image row points at one small picture: planning does not read images),
then times `snakemake --dry-run` there, several times, and prints the job
count, the wall time of each run with their median, and the peak resident
memory of the Snakemake process.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from workflow_logs import copy_workflow


def write_study(root: Path, n_images: int, n_prompts: int, n_seeds: int) -> None:
    copy_workflow(root)
    picture = root / "resources" / "picture.png"
    picture.parent.mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(picture)
    images = ["image_id\tpath\tprompt"] + [f"img{index}\tresources/picture.png\tthing" for index in range(n_images)]
    (root / "config" / "images.tsv").write_text("\n".join(images) + "\n")
    prompts = ["prompt_id\tkind\temphasis\ttext"] + [
        f"p{index}\t{'positive' if index % 2 == 0 else 'negative'}\t{index // 2 + 1}\tprompt number {index}"
        for index in range(n_prompts)
    ]
    (root / "config" / "prompts.tsv").write_text("\n".join(prompts) + "\n")
    config = root / "config" / "config.yaml"
    seeds = ", ".join(str(seed) for seed in range(n_seeds))
    config.write_text(re.sub(r"^seeds: .*$", f"seeds: [{seeds}]", config.read_text(), flags=re.M))


def dry_run(root: Path) -> tuple[float, int, str]:
    """Wall seconds, peak resident memory (MiB) of the child, and the job count line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules", "--cores", "4"],
        cwd=root, capture_output=True, text=True, check=True,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    total = next((line for line in result.stdout.splitlines() if line.startswith("total")), "total ?")
    # ru_maxrss of children is the largest child so far (KiB on Linux).
    return seconds, max(peak, before) // 1024, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_study(root, arguments.images, arguments.prompts, arguments.seeds)
        print(f"study: {arguments.images} images x {arguments.prompts} prompts x {arguments.seeds} seeds")
        times = []
        for run in range(arguments.runs):
            seconds, peak_mib, total = dry_run(root)
            times.append(seconds)
            print(f"dry run {run + 1}: {seconds:.1f} s, {total.split()[-1]} jobs, peak memory so far {peak_mib} MiB", flush=True)
        print(f"median {statistics.median(times):.1f} s (range {min(times):.1f}-{max(times):.1f} s)")


if __name__ == "__main__":
    main()
