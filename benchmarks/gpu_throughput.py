"""Images per second of the batched generation path, against the card's
physical limit, for several batch sizes with compile off and on.

    PYTHONPATH=src python benchmarks/gpu_throughput.py --output throughput.jsonl
    PYTHONPATH=src python benchmarks/gpu_throughput.py --smoke --output smoke.jsonl

It times ``promptsweep.generation.generate`` -- the project's own code
-- on a pipeline with Stable Diffusion 1.5's and ControlNet's real shapes and
random weights (``gpu_check.sd15_shaped_pipeline``), in fp16, 512 px, 20 UniPC
steps with guidance. Each configuration first runs one warm-up batch (which
compiles, when compile is on) and is then timed over at least two batches.
Compile ``on`` is ``promptsweep.models.compile_denoisers``, compiled afresh at
each batch size; ``prepared`` is its preparation alone (channels-last, fused
QKV projections) in eager mode. One line per configuration is printed as soon as it is
measured and written to ``--output`` as a JSON line, so that an interrupted run
still leaves its figures.

``--workflow`` then runs the same kind of work through the workflow: a
study of 4 images x 11 conditions (the default prompt sheet) x 8 seeds with
the same model, size and steps, ``snakemake --cores 4 --resources gpu=1`` (or
``--workflow-cores``) in a scratch copy of the repository, and reports the share of the run's wall
time that the generate jobs spent generating (from their logs), with the
images per second inside those jobs and over the whole run, and where the
rest of the time went: before the first generate job, after the last, and
between the first image queued and the last one generated (the gaps between
generate jobs; a job's batches are queued back to back). ``--workflow-cores`` and ``--metric-processes`` vary
its ``--cores`` and ``runtime.metric_processes``. ``--workflow-logs`` keeps
each run's job logs and Snakemake output, to read its timeline afterwards,
and ``--workflow-timeout`` stops a run that would outlast the time at hand
(its logs are kept too, with ``--workflow-logs``).

``--smoke`` runs the same code on the CPU with the tiny model at 64 px and 2
steps in seconds; there, compile uses the eager backend (graph capture only).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline
from gpu_check import edge_control, sd15_shaped_pipeline
from PIL import Image
from workflow_logs import (
    copy_workflow,
    generation_timeline,
    generation_totals,
    jobs_after_last_generate_job,
    run_workflow,
    seconds_by_stage,
)

from promptsweep import models
from promptsweep.conditions import GenerationInput
from promptsweep.families import Conditioning
from promptsweep.generation import Item, generate
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.study import GenerationSettings
from promptsweep.metrics import ssim
from promptsweep.families.sd15_tiny import write_tiny_model

# Compute of one 512 px image, in TFLOP, counted with torch.utils.flop_counter
# on the SD 1.5-shaped models: each step runs the UNet and the ControlNet on two
# samples (guidance), then the VAE decodes once. 20 steps: 46.0 TFLOP.
UNET_TFLOP = 0.803
CONTROLNET_TFLOP = 0.283
VAE_DECODE_TFLOP = 2.51
# Dense fp16 tensor-core peak (TFLOP/s, no sparsity) from NVIDIA's datasheets,
# by a part of the card's name; the first match wins. H200 has H100 SXM's
# compute and faster memory.
PEAK_FP16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
CONDITIONS = (
    ("a cat on a sofa", ""),
    ("a cat on a sofa, best quality", ""),
    ("a cat on a sofa", "lowres, bad anatomy"),
    ("a cat on a sofa, best quality", "lowres, bad anatomy"),
)
# The most useful first: a run cut short by its time limit still has them.
GPU_BATCH_SIZES = [16, 32, 8, 1]
SMOKE_BATCH_SIZES = [1, 2]
# Compile modes in the order they can run: each changes the models in place.
COMPILE_MODES = ("off", "prepared", "on")
# Images compared with eager when compile is not off: enough to see the difference,
# few enough to keep SSIM's CPU time small.
COMPARED_IMAGES = 8


@dataclass(frozen=True)
class Setup:
    model: str
    device: str
    size: int
    steps: int
    compile_backend: str


GPU = Setup(model="sd15-shaped", device="cuda", size=512, steps=20, compile_backend="inductor")
SMOKE = Setup(model="tiny", device="cpu", size=64, steps=2, compile_backend="eager")


def tflop_per_image(steps: int) -> float:
    return steps * 2 * (UNET_TFLOP + CONTROLNET_TFLOP) + VAE_DECODE_TFLOP


def peak_tflops(card: str) -> float | None:
    return next((peak for name, peak in PEAK_FP16_TFLOPS if name in card), None)


def images_per_second_limit(setup: Setup, card: str) -> float | None:
    """The card's dense fp16 peak over one image's compute; only known for the
    SD 1.5-shaped model at 512 px."""
    peak = peak_tflops(card)
    if setup.model != "sd15-shaped" or setup.size != 512 or peak is None:
        return None
    return peak / tflop_per_image(setup.steps)


def card_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def build_pipeline(setup: Setup, scratch: Path) -> StableDiffusionControlNetPipeline:
    dtype = models.resolve_dtype("auto", setup.device)
    if setup.model == "sd15-shaped":
        return sd15_shaped_pipeline(dtype)
    write_tiny_model(scratch / "base", scratch / "controlnet")
    base = models.resolve_weights(models.ModelSource(str(scratch / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(scratch / "controlnet")), [], "controlnet")
    return models.load_pipeline(base, controlnet, models.PipelineOptions(setup.device, dtype))


def timed_images(batch_size: int, timed_batches: int, min_images: int) -> int:
    """Images to time: whole batches, at least ``min_images`` (batch 1 is noisy)."""
    return max(min_images, timed_batches * batch_size)


@dataclass(frozen=True)
class Workload:
    """One control image and its conditions, generated with fixed settings."""

    pipeline: StableDiffusionControlNetPipeline
    control: Image.Image
    conditions: list[Conditioning]
    settings: GenerationSettings
    device: str


@dataclass(frozen=True)
class Run:
    seconds: float
    pixels: list[np.ndarray]
    invalid: int


def run_generation(workload: Workload, conditions: list[Conditioning], batch_size: int, images: int) -> Run:
    """Generate ``images`` images (rounded up to whole seeds across the
    conditions) and time them from a synchronised start to a synchronised end."""
    seeds = list(range(math.ceil(images / len(conditions))))
    items = [Item(pair, seed) for pair in conditions for seed in seeds]
    synchronize(workload.device)
    started = time.perf_counter()
    generated = generate(SD15, workload.pipeline, workload.control, items, workload.settings, batch_size)
    synchronize(workload.device)
    seconds = time.perf_counter() - started
    return Run(seconds, [image.pixels for image in generated], sum(image.problem is not None for image in generated))


def measure(workload: Workload, batch_size: int, images: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One warm-up batch, then the timed run: the figures and the timed images."""
    on_cuda = workload.device.startswith("cuda")
    warm_up = run_generation(workload, workload.conditions[:1], batch_size, batch_size)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(workload.device)
    timed = run_generation(workload, workload.conditions, batch_size, images)
    figures = {
        "images": len(timed.pixels),
        "seconds": round(timed.seconds, 3),
        "images_per_s": round(len(timed.pixels) / timed.seconds, 3),
        "warm_up_seconds": round(warm_up.seconds, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(workload.device) / 2**30, 2) if on_cuda else None,
        "invalid_images": timed.invalid,
    }
    return figures, timed.pixels


def configuration_figures(
    workload: Workload, compile_mode: str, batch_size: int, images: int, eager_pixels: dict[int, list[np.ndarray]]
) -> dict[str, Any]:
    """Measure one configuration; eager images are kept to compare the others with."""
    if compile_mode == "on":
        # A fresh compile per batch size: what a study process with this batch
        # size pays once, shown by the warm-up.
        torch._dynamo.reset()
    figures, pixels = measure(workload, batch_size, images)
    if compile_mode == "off":
        eager_pixels[batch_size] = pixels
    elif batch_size in eager_pixels:
        figures |= difference_from_eager(pixels, eager_pixels[batch_size])
    return figures


def difference_from_eager(compiled: list[np.ndarray], eager: list[np.ndarray]) -> dict[str, Any]:
    """How far compiled images are from the eager ones of the same items."""
    pairs = list(zip(compiled, eager))
    return {
        "max_pixel_difference_vs_eager": int(max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in pairs)),
        "min_ssim_vs_eager": round(min(ssim(a, b) for a, b in pairs[:COMPARED_IMAGES]), 5),
    }


WORKFLOW_IMAGES = 4
WORKFLOW_SEEDS = list(range(8))


@dataclass(frozen=True)
class WorkflowRun:
    """One run of the workflow study: its compile mode, batch size, ``--cores``
    and ``runtime.metric_processes``."""

    compile_mode: str
    batch_size: int
    cores: int
    metric_processes: int | str

    @property
    def folder_name(self) -> str:
        return f"compile-{self.compile_mode}_batch{self.batch_size}_cores{self.cores}_processes-{self.metric_processes}"


def unused_folder(parent: Path, name: str) -> Path:
    """A new folder ``parent/name_runN``, N the first number not taken yet
    (by an earlier run, or a benchmark beside this one)."""
    repeat = 1
    while True:
        folder = parent / f"{name}_run{repeat}"
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            repeat += 1


def keep_logs(root: Path, folder: Path) -> None:
    """The workflow's job logs and Snakemake's own output, copied out of its
    scratch copy into ``folder``: as much of them as a failed run wrote."""
    if (root / "logs").is_dir():
        shutil.copytree(root / "logs", folder / "logs")
    if (root / "snakemake.log").is_file():
        shutil.copy2(root / "snakemake.log", folder / "snakemake.log")


def write_model(setup: Setup, base: Path, controlnet: Path) -> None:
    """The benchmark's model as two directories in the layouts the workflow reads."""
    if setup.model == "tiny":
        write_tiny_model(base, controlnet)
        return
    pipeline = sd15_shaped_pipeline(models.resolve_dtype("auto", setup.device))
    components = {name: module for name, module in pipeline.components.items() if name != "controlnet"}
    StableDiffusionPipeline(**components).save_pretrained(base, safe_serialization=True)
    pipeline.controlnet.save_pretrained(controlnet, safe_serialization=True)


def write_workflow_study(setup: Setup, root: Path, run: WorkflowRun) -> None:
    """A scratch copy of the workflow with a study of WORKFLOW_IMAGES pictures,
    the default prompt sheet and WORKFLOW_SEEDS, on the benchmark's model."""
    copy_workflow(root)
    write_model(setup, root / "model" / "base", root / "model" / "controlnet")
    rows = ["image_id\tpath\tprompt"]
    for index in range(WORKFLOW_IMAGES):
        picture = np.asarray(edge_control(setup.size).rotate(90 * index))
        path = root / "resources" / f"picture{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(path)
        rows.append(f"picture{index}\tresources/picture{index}.png\tthing")
    (root / "config" / "images.tsv").write_text("\n".join(rows) + "\n")
    config = {
        "images": "config/images.tsv",
        "prompts": "config/prompts.tsv",
        "seeds": WORKFLOW_SEEDS,
        "generation": {"resolution": setup.size, "steps": setup.steps},
        "model": {
            "source": "pretrained", "name": setup.model,
            "base": {"id": "model/base"}, "controlnet": {"id": "model/controlnet"},
        },
        "runtime": {
            "device": setup.device, "batch_size": run.batch_size, "compile": run.compile_mode == "on",
            "metric_processes": run.metric_processes,
        },
    }
    (root / "config" / "config.yaml").write_text(json.dumps(config))


def workflow_figures(
    setup: Setup, run: WorkflowRun, logs_parent: Path | None, timeout: float | None
) -> dict[str, Any]:
    """Run the workflow study once; the generate jobs' share of its wall time,
    and where the rest of it went. With ``logs_parent``, the run's job logs
    and Snakemake's output are copied to a new folder in it, to read its
    timeline afterwards, also from a run stopped after ``timeout`` seconds."""
    kept = unused_folder(logs_parent, run.folder_name) if logs_parent is not None else None
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_workflow_study(setup, root, run)
        started = datetime.now()
        try:
            wall = run_workflow(root, run.cores, timeout)
        finally:
            if kept is not None:
                keep_logs(root, kept)
                print(f"workflow logs kept in {kept}", flush=True)
        logs = root / "logs"
        images, generating = generation_totals(logs)
        timeline = generation_timeline(logs, started, datetime.now())
        stages = seconds_by_stage(logs)
        after = jobs_after_last_generate_job(logs)
    return {
        **({"logs": str(kept)} if kept is not None else {}),
        "images": images,
        "wall_seconds": round(wall, 1),
        "generating_seconds": round(generating, 1),
        "generating_share": round(generating / wall, 3),
        "images_per_s_generating": round(images / generating, 3),
        "images_per_s_overall": round(images / wall, 3),
        **timeline,
        "job_seconds_by_stage": {stage: round(seconds, 1) for stage, seconds in stages.items()},
        "jobs_after_last_generate_job": [[job, round(start, 1), round(end, 1)] for job, start, end in after],
    }


def workflow_line(record: dict[str, Any]) -> str:
    head = (
        f"workflow, compile {record['compile']}, batch {record['batch_size']}, --cores {record['cores']}, "
        f"metric processes {record['metric_processes']}:"
    )
    if "error" in record:
        return f"{head} FAILED {record['error']}"
    return (
        f"{head} {record['images']} images in {record['wall_seconds']:.1f} s, generating "
        f"{record['generating_seconds']:.1f} s = {100 * record['generating_share']:.1f}% of the wall time; "
        f"{record['images_per_s_generating']:.2f} images/s while generating, "
        f"{record['images_per_s_overall']:.2f} overall; {record['before_first_generate_job_seconds']:.1f} s "
        f"before the first generate job, pipeline loads {record['pipeline_load_seconds']:.1f} s, "
        f"{record['after_last_generate_job_seconds']:.1f} s after the last; from the first image queued to the last "
        f"generated ({record['generation_span_seconds']:.1f} s), generating "
        f"{100 * record['generating_share_of_span']:.1f}% of the time; job time by stage: "
        + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in record["job_seconds_by_stage"].items())
        + "\n  after the last generate job (job: its first and last log line, s after it): "
        + ", ".join(f"{job} {start:+.1f} {end:+.1f}" for job, start, end in record["jobs_after_last_generate_job"])
    )


def summary_line(record: dict[str, Any]) -> str:
    head = f"compile {record['compile']:<8} batch {record['batch_size']:>2}:"
    if "error" in record:
        return f"{head} FAILED {record['error']}"
    line = f"{head} {record['images']} images in {record['seconds']:.2f} s = {record['images_per_s']:.2f} images/s"
    if record["percent_of_limit"] is not None:
        line += f" ({record['percent_of_limit']:.1f} % of the limit)"
    line += f", warm-up {record['warm_up_seconds']:.1f} s"
    if record["peak_memory_gib"] is not None:
        line += f", peak {record['peak_memory_gib']:.2f} GiB"
    line += f", invalid {record['invalid_images']}"
    if "min_ssim_vs_eager" in record:
        line += (
            f", vs eager: SSIM >= {record['min_ssim_vs_eager']:.4f},"
            f" max |difference| {record['max_pixel_difference_vs_eager']}/255"
        )
    return line


def emit(record: dict[str, Any], output: TextIO, line: str) -> None:
    output.write(json.dumps(record) + "\n")
    output.flush()
    print(line, flush=True)


def guarded(device: str, function: Callable[..., dict[str, Any]], *arguments: Any) -> dict[str, Any]:
    """A configuration's figures, or its error: one failure (out of memory, a
    compile error) must not cost the other configurations' figures."""
    try:
        return function(*arguments)
    except Exception as error:  # noqa: BLE001 -- reported in the output, run goes on
        traceback.print_exc()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0]}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="JSON lines, one per configuration")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 64 px, 2 steps")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"default: {GPU_BATCH_SIZES} (smoke: {SMOKE_BATCH_SIZES})")
    parser.add_argument(
        "--compile", choices=COMPILE_MODES, nargs="+", default=["off", "on"],
        help="off: eager; prepared: channels-last and fused QKV, eager; on: prepared and compiled",
    )
    parser.add_argument("--timed-batches", type=int, default=2, help="batches timed per configuration")
    parser.add_argument("--min-images", type=int, default=8, help="images timed at least per configuration")
    parser.add_argument("--size", type=int, help="image side in px (default: 512, smoke: 64)")
    parser.add_argument(
        "--workflow", choices=("off", "on"), nargs="*", default=[],
        help="also run the workflow study with these compile modes, at the first batch size",
    )
    parser.add_argument("--workflow-cores", type=int, nargs="+", default=[4], help="the workflow's --cores, each in turn")
    parser.add_argument(
        "--metric-processes", nargs="+", default=["auto"],
        help="the workflow's runtime.metric_processes (a number or auto), each in turn",
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default: 20, smoke: 2)")
    parser.add_argument(
        "--workflow-timeout", type=float, metavar="SECONDS",
        help="stop a workflow run (Snakemake and the processes it started) after this many seconds of Snakemake "
        "(writing the study's model before it is not counted) and report it as failed",
    )
    parser.add_argument(
        "--workflow-logs", type=Path, metavar="DIR",
        help="copy each workflow run's job logs and Snakemake output to DIR/<run>_runN (N: the first free number), "
        "also when the run fails or is stopped",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    base = SMOKE if arguments.smoke else GPU
    setup = Setup(base.model, base.device, arguments.size or base.size, arguments.steps or base.steps, base.compile_backend)
    batch_sizes = arguments.batch_sizes or (SMOKE_BATCH_SIZES if arguments.smoke else GPU_BATCH_SIZES)
    if setup.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    card = card_name(setup.device)
    limit = images_per_second_limit(setup, card)
    settings = GenerationSettings(steps=setup.steps, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    if arguments.workflow_logs is not None:
        arguments.workflow_logs.mkdir(parents=True, exist_ok=True)  # a bad DIR fails here, not after a run
    with tempfile.TemporaryDirectory() as scratch, arguments.output.open("w") as output:
        started = time.perf_counter()
        pipeline = build_pipeline(setup, Path(scratch))
        conditions = [SD15.encode(pipeline, GenerationInput(prompt, negative)) for prompt, negative in CONDITIONS]
        workload = Workload(pipeline, edge_control(setup.size), conditions, settings, setup.device)
        header = {
            "card": card, "torch": torch.__version__, "model": setup.model, "device": setup.device,
            "dtype": str(pipeline.unet.dtype), "size": setup.size, "steps": setup.steps, "scheduler": "unipc",
            "tflop_per_image": round(tflop_per_image(setup.steps), 2) if setup.model == "sd15-shaped" else None,
            "peak_fp16_tflops": peak_tflops(card), "limit_images_per_s": round(limit, 2) if limit else None,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        limit_text = (
            f"physical limit {header['peak_fp16_tflops']:.0f} TFLOP/s / {header['tflop_per_image']:.1f} TFLOP "
            f"per image = {limit:.2f} images/s" if limit else "physical limit unknown for this card or model"
        )
        emit(
            {"kind": "setup", **header}, output,
            f"{card} | torch {torch.__version__} | {setup.model} {header['dtype']} {setup.size} px, "
            f"{setup.steps} UniPC steps, guidance on | {limit_text}",
        )
        eager_pixels: dict[int, list[np.ndarray]] = {}
        failed = 0
        for compile_mode in sorted(set(arguments.compile), key=COMPILE_MODES.index):
            if compile_mode == "prepared":
                models.prepare_denoiser(pipeline.unet)
                models.prepare_denoiser(pipeline.controlnet)
            if compile_mode == "on":
                models.compile_denoisers(pipeline, backend=setup.compile_backend)
            for batch_size in batch_sizes:
                images = timed_images(batch_size, arguments.timed_batches, arguments.min_images)
                record = {"kind": "configuration", "compile": compile_mode, "batch_size": batch_size}
                record |= guarded(
                    setup.device, configuration_figures, workload, compile_mode, batch_size, images, eager_pixels
                )
                if "images_per_s" in record:
                    record["percent_of_limit"] = round(100 * record["images_per_s"] / limit, 1) if limit else None
                emit(record, output, summary_line(record))
                failed += "error" in record
        for compile_mode in arguments.workflow:
            for cores in arguments.workflow_cores:
                for processes in arguments.metric_processes:
                    run = WorkflowRun(compile_mode, batch_sizes[0], cores, processes if processes == "auto" else int(processes))
                    record = {"kind": "workflow", "compile": compile_mode, "batch_size": run.batch_size}
                    record |= {"cores": cores, "metric_processes": run.metric_processes}
                    record |= guarded(
                        setup.device, workflow_figures, setup, run, arguments.workflow_logs, arguments.workflow_timeout
                    )
                    emit(record, output, workflow_line(record))
                    failed += "error" in record
        print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
