"""Generation stage: every seed of (image, condition) pairs, with provenance."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptsweep import edges, files
from promptsweep.conditions import GenerationInput
from promptsweep.jobs import job_log


class GenerationError(RuntimeError):
    """A generation that must not be scored; the message says what to change."""


OOM_REMEDIES = (
    "reduce runtime.seeds_per_batch, or set runtime.attention_slicing: true, "
    "or runtime.cpu_offload: true"
)


def pipeline_options(runtime: dict[str, Any]) -> Any:
    from promptsweep import models

    device = models.resolve_device(runtime["device"])
    return models.PipelineOptions(
        device=device,
        dtype=models.resolve_dtype(runtime["dtype"], device),
        safety_checker=runtime["safety_checker"],
        attention_slicing=runtime["attention_slicing"],
        cpu_offload=runtime["cpu_offload"],
        compile=runtime["compile"],
    )


def generate(
    *,
    edge_maps: Sequence[str],
    weights: str,
    images: Sequence[Sequence[str]],
    records: Sequence[Sequence[str]],
    requests: Sequence[dict[str, Any]],
    log: str,
) -> None:
    """Generate one or more (image, condition) pairs in one job, loading the
    pipeline once, and write an image and a record per seed.

    Element i of ``edge_maps``, ``images``, ``records`` and ``requests`` is
    pair i; ``images[i]`` and ``records[i]`` run over its seeds. A request
    holds everything a pair's images depend on (texts, seeds, generation
    settings, runtime options); the workflow passes it as a rule parameter, so
    a change to any of it reruns exactly the jobs it concerns. On a cluster,
    where every job is a new process, several pairs per job keep a GPU job
    generating rather than loading.
    """
    from promptsweep import models, provenance

    labels = [f"{request['image_id']}/{request['condition']}" for request in requests]
    name = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more"
    with job_log(log, f"generate {name}") as logger:
        weights_record = files.read_json(Path(weights))
        options = pipeline_options(requests[0]["runtime"])
        loaded = models.cached_pipeline(
            models.ResolvedWeights.from_record(weights_record["base"]),
            models.ResolvedWeights.from_record(weights_record["controlnet"]),
            options,
        )
        if loaded.load_seconds is None:
            logger.info("pipeline: reused (already loaded in this process)")
        else:
            logger.info("pipeline: loaded in %.2f s on %s, %s", loaded.load_seconds, options.device, options.dtype)
        # Provenance shared by every image of the job, looked up once.
        job_provenance = {
            "model": weights_record,
            "device": provenance.device_description(options.device),
            "dtype": str(options.dtype).removeprefix("torch."),
            "packages": provenance.package_versions(),
        }
        for label, edge_map, pair_images, pair_records, request in zip(
            labels, edge_maps, images, records, requests, strict=True
        ):
            _generate_pair(
                logger, label, loaded.pipeline, job_provenance, edge_map, pair_images, pair_records, request
            )


def _warn_long_texts(logger: logging.Logger, tokenizer: Any, inputs: GenerationInput) -> None:
    from promptsweep import generation

    for name, text in (("prompt", inputs.prompt), ("negative prompt", inputs.negative_prompt)):
        ignored = generation.tokens_beyond_limit(tokenizer, text)
        if ignored:
            logger.warning(
                "%s is %d tokens too long for CLIP (%d at most): its last %d tokens "
                "are ignored; shorten it: %r",
                name, ignored, tokenizer.model_max_length, ignored, text,
            )


def _generate_pair(
    logger: logging.Logger,
    label: str,
    pipeline: Any,
    job_provenance: dict[str, Any],
    edge_map: str,
    image_paths: Sequence[str],
    record_paths: Sequence[str],
    request: dict[str, Any],
) -> None:
    import torch

    from promptsweep import emphasis, generation, models
    from promptsweep.study import GenerationSettings

    control = edges.control_image(files.read_png(Path(edge_map)))
    inputs = GenerationInput(request["prompt"], request["negative_prompt"])
    _warn_long_texts(logger, pipeline.tokenizer, inputs)
    settings = GenerationSettings(**request["generation"])
    seeds = list(request["seeds"])
    # Only dosed and mixed conditions carry "embedding"; the study's word
    # conditions keep their request (and their cached images) as before.
    embedded = models.on_model_thread(emphasis.condition_embeddings, pipeline, inputs, request.get("embedding"))
    if embedded.method != emphasis.METHOD_TEXT:
        logger.info("%s: %s embeddings, dose %s, norms %s", label, embedded.method, embedded.dose, embedded.norms)
    started = time.perf_counter()
    try:
        generated = models.on_model_thread(
            generation.generate, pipeline, control, embedded.pair or inputs, seeds, settings,
            request["runtime"]["seeds_per_batch"],
        )
    except torch.cuda.OutOfMemoryError as error:
        raise GenerationError(
            f"{label}: out of GPU memory ({str(error).splitlines()[0]}); {OOM_REMEDIES}"
        ) from None
    seconds = time.perf_counter() - started
    logger.info("%s: %d seeds in %.2f s (%.2f s per image)", label, len(seeds), seconds, seconds / len(seeds))

    problems = [image for image in generated if image.problem]
    if problems and request["runtime"]["on_invalid_image"] == "fail":
        details = "; ".join(f"seed {image.seed}: {image.problem}" for image in problems)
        raise GenerationError(
            f"{label}: {details}. Set runtime.on_invalid_image: exclude to record such "
            "images and leave them out of every metric instead"
        )
    common = {
        "image_id": request["image_id"],
        "condition": request["condition"],
        "prompt": inputs.prompt,
        "negative_prompt": inputs.negative_prompt,
        "method": embedded.method,
        "dose": embedded.dose,
        "embedding_norms": embedded.norms,
        **({"embedding": request["embedding"]} if "embedding" in request else {}),
        "edge_map": edge_map,
        "generation": request["generation"],
        "resolution": [control.width, control.height],
        "runtime": request["runtime"],
        **job_provenance,
        "seeds_in_job": seeds,
        "wall_seconds_per_image": seconds / len(seeds),
    }
    for image, image_path, record_path in zip(generated, image_paths, record_paths, strict=True):
        if image.problem:
            logger.warning("seed %d excluded: %s", image.seed, image.problem)
        files.write_png(Path(image_path), image.pixels)
        files.write_json(
            Path(record_path),
            {**common, "seed": image.seed, "image": image_path, "sha256": files.file_sha256(image_path),
             "valid": image.problem is None, "problem": image.problem},
        )
