"""End-to-end wall time of the default study against the same generations in
one Python loop in one process.

    python benchmarks/loop_vs_workflow.py            # both
    python benchmarks/loop_vs_workflow.py --loop     # the loop only

The workflow is run in a scratch copy of the repository (so results/ here is
untouched) with the README's command; the loop loads the pipeline once and
calls the same generation function for every image, with every condition and
seed in batches of the CPU batch size as the workflow's jobs do, writing
nothing. Prints both wall times and their ratio, and the generation time per
image in each (the workflow's from its generation jobs' logs) with their ratio
as ``generation ratio: X``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from workflow_logs import REPO, copy_workflow, generation_totals, run_workflow, seconds_by_stage


def loop_seconds() -> tuple[float, float]:
    """Wall time of the loop, and its generation time per image."""
    from promptsweep import edges, models
    from promptsweep.generation import CPU_BATCH_SIZE, Item, generate
    from promptsweep.families.sd15 import FAMILY as SD15
    from promptsweep.study import (
        GenerationSettings, condition_input, read_images, read_prompts, with_generation_defaults,
    )
    from promptsweep.families.sd15_tiny import write_tiny_model

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    generation = with_generation_defaults(config["generation"], config["model"])
    started = time.perf_counter()
    generating, generated = 0.0, 0
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
            # As the workflow's generate job does: every condition and seed of
            # the image in batches of the CPU's batch size.
            items = [
                Item(SD15.encode(pipeline, condition_input(image, condition)), seed)
                for condition in [None, *prompts]
                for seed in config["seeds"]
            ]
            generation_started = time.perf_counter()
            generate(SD15, pipeline, control, items, settings, CPU_BATCH_SIZE)
            generating += time.perf_counter() - generation_started
            generated += len(items)
    return time.perf_counter() - started, generating / generated


def workflow_seconds() -> tuple[float, float, dict[str, float]]:
    """Wall time of the workflow, its generation time per image, and its time by stage."""
    with tempfile.TemporaryDirectory() as scratch:
        copy_workflow(Path(scratch), extra=["resources"])
        wall = run_workflow(Path(scratch))
        logs = Path(scratch) / "logs"
        images, generating = generation_totals(logs)
        return wall, generating / images, seconds_by_stage(logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", action="store_true", help="time only the in-process loop")
    arguments = parser.parse_args()
    loop, loop_per_image = loop_seconds()
    print(f"one Python loop, one process: {loop:.1f} s; generation {loop_per_image:.3f} s per image", flush=True)
    if not arguments.loop:
        workflow, workflow_per_image, stages = workflow_seconds()
        print(f"snakemake --cores 4 --resources gpu=1: {workflow:.1f} s; generation {workflow_per_image:.3f} s per image")
        print(f"ratio workflow / loop: {workflow / loop:.2f}")
        print(f"generation ratio: {workflow_per_image / loop_per_image:.2f}")
        print("job time by stage, first to last log line:", ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items()))


if __name__ == "__main__":
    main()
