"""End-to-end wall time of the default study against the same generations in
one Python loop in one process.

    python benchmarks/loop_vs_workflow.py            # both
    python benchmarks/loop_vs_workflow.py --loop     # the loop only

The workflow is run in a scratch copy of the repository (so results/ here is
untouched) with the README's command; the loop loads the pipeline once and
calls the same generation function for every (image, condition), writing
nothing. Prints both figures and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def loop_seconds() -> float:
    from promptsweep import edges, models
    from promptsweep.generation import generate
    from promptsweep.study import GenerationSettings, condition_input, read_images, read_prompts
    from promptsweep.tiny import write_tiny_model

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    generation = config["generation"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        write_tiny_model(Path(scratch) / "base", Path(scratch) / "controlnet")
        base = models.resolve_weights(models.ModelSource(f"{scratch}/base"), [], "base")
        controlnet = models.resolve_weights(models.ModelSource(f"{scratch}/controlnet"), [], "controlnet")
        options = models.PipelineOptions(device="cpu", dtype=models.resolve_dtype("auto", "cpu"))
        pipeline = models.load_pipeline(base, controlnet, options)
        settings = GenerationSettings(
            steps=generation["steps"], guidance_scale=generation["guidance_scale"],
            controlnet_scale=generation["controlnet_scale"], scheduler=generation["scheduler"],
            eta=generation["eta"], guess_mode=generation["guess_mode"],
        )
        images = read_images(REPO / config["images"])
        prompts = read_prompts(REPO / config["prompts"])
        for image in images:
            edge = edges.edge_map(
                edges.read_image(REPO / image.path), generation["resolution"],
                generation["canny_low"], generation["canny_high"],
            )
            control = edges.control_image(edge)
            for condition in [None, *prompts]:
                generate(pipeline, control, condition_input(image, condition), config["seeds"], settings, 8)
    return time.perf_counter() - started


def workflow_seconds() -> float:
    with tempfile.TemporaryDirectory() as scratch:
        for name in ["Snakefile", "workflow", "profiles", "config", "resources"]:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, Path(scratch) / name)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=1", "--quiet"],
            cwd=scratch, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", action="store_true", help="time only the in-process loop")
    arguments = parser.parse_args()
    loop = loop_seconds()
    print(f"one Python loop, one process: {loop:.1f} s")
    if not arguments.loop:
        workflow = workflow_seconds()
        print(f"snakemake --cores 4 --resources gpu=1: {workflow:.1f} s")
        print(f"ratio workflow / loop: {workflow / loop:.2f}")


if __name__ == "__main__":
    main()
