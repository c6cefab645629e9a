"""Generation stage: every condition and seed of a control image, batched, with provenance."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from promptsweep import edges, files, threads
from promptsweep.conditions import GenerationInput
from promptsweep.jobs import job_log

if TYPE_CHECKING:  # the model code is imported by the jobs that generate
    from PIL.Image import Image

    from promptsweep.emphasis import ConditionEmbeddings
    from promptsweep.families import Family
    from promptsweep.generation import GeneratedImage


# The modules that import torch, diffusers and transformers for generation.
MODEL_CODE = ("promptsweep.generation", "promptsweep.models", "promptsweep.provenance")


class GenerationError(RuntimeError):
    """A generation that must not be scored; the message says what to change."""


OOM_REMEDIES = (
    "reduce runtime.batch_size, or set runtime.attention_slicing: true, "
    "or runtime.cpu_offload: true"
)


def pipeline_options(runtime: dict[str, Any]) -> Any:
    from promptsweep import models

    device = threads.resolve_device(runtime["device"])
    return models.PipelineOptions(
        device=device,
        dtype=models.resolve_dtype(runtime["dtype"], device),
        safety_checker=runtime["safety_checker"],
        attention_slicing=runtime["attention_slicing"],
        cpu_offload=runtime["cpu_offload"],
        compile=runtime["compile"],
    )


def image_fingerprint(request: Mapping[str, Any], seed: int, edge_map_sha256: str, weights: Mapping[str, Any]) -> str:
    """What one generated image depends on, as a digest: its condition's
    request (texts, embeddings, settings, runtime options) without the seed
    list, its seed, and the content of its edge map and of the model's weight
    files (``weights`` is the model record; where it lies does not count).
    Equal digests mean the image would come out the same, so it is kept."""
    content = {
        "request": {key: value for key, value in request.items() if key != "seeds"},
        "seed": seed,
        "edge_map_sha256": edge_map_sha256,
        "weights_sha256": {part: weights[part]["sha256"] for part in ("base", "controlnet")},
    }
    return files.json_digest(content)


def is_current(image: Path, record: Path, fingerprint: str) -> bool:
    """Whether ``image`` and its ``record`` exist, the record has
    ``fingerprint``, and the image is the one the record describes."""
    if not (image.exists() and record.exists()):
        return False
    recorded = files.read_json(record)
    return recorded.get("fingerprint") == fingerprint and recorded.get("sha256") == files.file_sha256(image)


# In each control image's folder: the images its last generate job left
# there, one path (relative to the folder) per line.
GENERATED_LIST = ".generated"
# The file Snakemake touches in a directory output when its job ends.
FINISHED_MARK = ".snakemake_timestamp"


def write_generated_list(folder: Path, images: Mapping[str, Sequence[str]]) -> None:
    """List in ``folder`` the images of every condition (``images`` maps each
    to its per-seed paths), as :func:`folder_problems` reads them; a list that
    is already so is left as it is."""
    listed = "".join(f"{Path(path).relative_to(folder)}\n" for paths in images.values() for path in paths)
    path = folder / GENERATED_LIST
    if not (path.exists() and path.read_text() == listed):
        files.write_text(path, listed)


def folder_problems(folder: Path, images: Sequence[str], mark: str) -> list[str]:
    """What was done by hand to a finished generation folder: each of
    ``images`` (paths relative to ``folder``) changed after the folder was
    finished (newer than its ``mark`` file, which Snakemake touches when the
    job ends), present without its record or its record without it, or
    deleted with its record although the folder's job generated it (it is in
    the folder's :data:`GENERATED_LIST`). An image missing with its record and
    not in that list is new (another seed or condition, whose changed request
    runs the job again anyway), and an unfinished folder (no mark) has no
    problems: its job runs again too."""
    finished = folder / mark
    if not finished.exists():
        return []
    finished_at = finished.stat().st_mtime
    listed = folder / GENERATED_LIST
    generated = set(listed.read_text().splitlines()) if listed.exists() else set()
    problems = []
    for name in images:
        image, record = folder / name, (folder / name).with_suffix(".json")
        if image.exists() and image.stat().st_mtime > finished_at:
            problems.append(f"{image} was changed after it was generated")
        elif image.exists() != record.exists():
            missing = record if image.exists() else image
            problems.append(f"{missing} is missing")
        elif not image.exists() and name in generated:
            problems.append(f"{image} and its record were deleted")
    return problems


class Stale(NamedTuple):
    """One image of a job that must be (re)generated."""

    condition: str
    seed: int
    image: str
    record: str
    fingerprint: str


def generate(
    *,
    edge_maps: Sequence[str],
    weights: str,
    requests: Sequence[Mapping[str, dict[str, Any]]],
    images: Sequence[Mapping[str, Sequence[str]]],
    records: Sequence[Mapping[str, Sequence[str]]],
    log: str,
    folders: Sequence[str] = (),
) -> None:
    """Generate the conditions of one or more control images in one job,
    loading the pipeline once, and write an image and a record per
    (condition, seed).

    Element i of ``edge_maps``, ``requests``, ``images`` and ``records`` is
    control image i; ``requests[i]`` maps each of its conditions to the
    request that holds everything its images depend on (texts, seeds,
    generation settings, runtime options), and ``images[i]`` and
    ``records[i]`` map the condition to its per-seed paths. ``folders[i]``,
    when given, is the folder that holds all of control image i's files (a
    generate rule's output): once they are all written, it gets their list
    (:func:`write_generated_list`).

    An image whose record shows the same :func:`image_fingerprint` is kept
    as it is: the workflow reruns this job when any one condition's request
    changes, and only that condition's images are generated again. The
    images that are generated go through the pipeline in batches of
    ``runtime.batch_size``, across conditions.
    """
    labels = [next(iter(image_requests.values()))["image_id"] for image_requests in requests]
    name = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more"
    with job_log(log, f"generate {name}") as logger:
        threads.import_on_compute_thread(MODEL_CODE)
        weights_record = files.read_json(Path(weights))
        stale = [
            stale_images(edge_map, image_requests, image_paths, record_paths, weights_record)
            for edge_map, image_requests, image_paths, record_paths in zip(
                edge_maps, requests, images, records, strict=True
            )
        ]
        for label, image_requests, image_stale in zip(labels, requests, stale):
            total = sum(len(request["seeds"]) for request in image_requests.values())
            logger.info("%s: %d of %d images up to date", label, total - len(image_stale), total)
        for folder, image_paths, record_paths, image_stale in (
            zip(folders, images, records, stale, strict=True) if folders else ()
        ):
            if image_stale:
                # Unfinished until Snakemake touches it again: images of a job
                # killed here are then redone, not taken as changed by hand.
                (Path(folder) / FINISHED_MARK).unlink(missing_ok=True)
            # Snakemake keeps the folder (an update() output): what a job
            # killed while writing left there, nothing else would remove.
            written = [Path(folder) / GENERATED_LIST, *chain(*image_paths.values(), *record_paths.values())]
            for path in files.remove_unfinished_writes(written):
                logger.info("removed %s, left by a job that was stopped while writing it", path)
        if any(stale):
            _generate_stale(logger, labels, edge_maps, requests, stale, weights_record)
        for folder, image_paths in zip(folders, images, strict=True) if folders else ():
            write_generated_list(Path(folder), image_paths)


def _generate_stale(
    logger: logging.Logger,
    labels: Sequence[str],
    edge_maps: Sequence[str],
    requests: Sequence[Mapping[str, dict[str, Any]]],
    stale: Sequence[Sequence[Stale]],
    weights_record: Mapping[str, Any],
) -> None:
    """Load the pipeline (once per process) and generate every control
    image's ``stale`` images, as :func:`generate` describes."""
    from promptsweep import provenance

    runtime = next(iter(requests[0].values()))["runtime"]
    family, pipeline, options, batch_size = load_pipeline(logger, weights_record, runtime)
    # Provenance shared by every image of the job, looked up once.
    job_provenance = {
        "model": weights_record,
        "device": provenance.device_description(options.device),
        "dtype": str(options.dtype).removeprefix("torch."),
        "packages": provenance.package_versions(),
        "batch_size": batch_size,
    }
    for label, edge_map, image_requests, image_stale in zip(labels, edge_maps, requests, stale):
        if image_stale:
            _generate_image(
                logger, label, family, pipeline, options.device, job_provenance, batch_size, edge_map,
                image_requests, image_stale,
            )


def load_pipeline(
    logger: logging.Logger, weights_record: Mapping[str, Any], runtime: Mapping[str, Any]
) -> tuple[Family, Any, Any, int]:
    """The model family, its pipeline (loaded once per process), the
    pipeline options and the batch size that ``runtime`` asks for."""
    from promptsweep import families, generation, models

    options = pipeline_options(dict(runtime))
    family = families.get(weights_record["family"])
    loaded = models.cached_pipeline(
        models.ResolvedWeights.from_record(weights_record["base"]),
        models.ResolvedWeights.from_record(weights_record["controlnet"]),
        options,
        family=family.name,
    )
    if loaded.load_seconds is None:
        logger.info("pipeline: reused (already loaded in this process)")
    else:
        logger.info("pipeline: loaded in %.2f s on %s, %s", loaded.load_seconds, options.device, options.dtype)
    return family, loaded.pipeline, options, generation.resolve_batch_size(runtime["batch_size"], options.device)


def stale_images(
    edge_map: str,
    requests: Mapping[str, dict[str, Any]],
    images: Mapping[str, Sequence[str]],
    records: Mapping[str, Sequence[str]],
    weights: Mapping[str, Any],
) -> list[Stale]:
    """The images of one control image, over its conditions and seeds, that
    are missing or no longer :func:`is_current`."""
    edge_sha256 = files.file_sha256(edge_map)
    stale = []
    for condition, request in requests.items():
        for seed, image, record in zip(request["seeds"], images[condition], records[condition], strict=True):
            fingerprint = image_fingerprint(request, seed, edge_sha256, weights)
            if not is_current(Path(image), Path(record), fingerprint):
                stale.append(Stale(condition, seed, image, record, fingerprint))
    return stale


def warn_long_texts(logger: logging.Logger, tokenizer: Any, inputs: GenerationInput, model_source: str) -> None:
    """Warn about a prompt that the loaded model's tokenizer cuts off.

    Only for real weights (``model.source: pretrained``): the built-in
    models' byte-level tokenizer spends a token per character, so it cuts
    prompts that CLIP's own tokenizer reads whole, and a warning would be
    about the stand-in, not about the user's prompt."""
    from promptsweep import generation

    if model_source != "pretrained":
        return
    for name, text in (("prompt", inputs.prompt), ("negative prompt", inputs.negative_prompt)):
        ignored = generation.tokens_beyond_limit(tokenizer, text)
        if ignored:
            logger.warning(
                "%s is %d tokens too long for CLIP (%d at most): its last %d tokens "
                "are ignored; shorten it: %r",
                name, ignored, tokenizer.model_max_length, ignored, text,
            )


def _generate_image(
    logger: logging.Logger,
    label: str,
    family: Family,
    pipeline: Any,
    device: str,
    job_provenance: dict[str, Any],
    batch_size: int,
    edge_map: str,
    requests: Mapping[str, dict[str, Any]],
    stale: Sequence[Stale],
) -> None:
    """Generate the ``stale`` images of one control image, batched across
    conditions, and write each image and its record."""
    import torch

    from promptsweep import emphasis, families, generation
    from promptsweep.study import GenerationSettings
    from promptsweep.threads import on_device_thread, submit_to_device_thread

    control = edges.control_image(files.read_png(Path(edge_map)))
    conditions = list(dict.fromkeys(item.condition for item in stale))
    settings = {GenerationSettings(**requests[condition]["generation"]) for condition in conditions}
    if len(settings) != 1:
        raise ValueError(f"{label}: the conditions of one image must share their generation settings")
    # Each condition's conditioning is computed once, for all its seeds.
    embedded: dict[str, emphasis.ConditionEmbeddings] = {}
    encode = functools.partial(family.encode, pipeline)
    encode_tokens = functools.partial(family.soft_prompt_conditioning, pipeline) if families.soft_prompts(family) else None
    for condition in conditions:
        request = requests[condition]
        texts = GenerationInput(request["prompt"], request["negative_prompt"])
        warn_long_texts(logger, pipeline.tokenizer, texts, job_provenance["model"]["source"])
        embedded[condition] = on_device_thread(
            device, emphasis.condition_embeddings, encode, texts, request.get("embedding"), encode_tokens
        )
        if embedded[condition].method != emphasis.METHOD_TEXT:
            logger.info(
                "%s/%s: %s embeddings, dose %s, norms %s", label, condition,
                embedded[condition].method, embedded[condition].dose, embedded[condition].norms,
            )
    items = [generation.Item(embedded[item.condition].conditioning, item.seed) for item in stale]
    shared_settings = settings.pop()
    batches = generation.chunks(items, batch_size)
    started = time.perf_counter()

    def generate_last(*arguments: Any) -> tuple[list[GeneratedImage], float]:
        """The last batch, then the job's line, on the device's thread: its
        time stamp is when the device finished, not when the images were written."""
        last = _timed_batch(*arguments)
        seconds = time.perf_counter() - started
        logger.info(
            "%s: %d images in %.2f s (%.2f s per image; %d conditions, batches of %d)",
            label, len(items), seconds, seconds / len(items), len(conditions), batch_size,
        )
        return last

    # Every batch is queued at once: the device generates them back to back
    # while this thread checks and writes the images of each one as it comes.
    queued = [
        submit_to_device_thread(
            device, generate_last if batch is batches[-1] else _timed_batch,
            family, pipeline, control, batch, shared_settings, batch_size,
        )
        for batch in batches
    ]
    try:
        for batch_stale, pending in zip(generation.chunks(stale, batch_size), queued, strict=True):
            try:
                generated, batch_seconds = pending.result()
            except torch.cuda.OutOfMemoryError as error:
                raise GenerationError(
                    f"{label}: out of GPU memory ({str(error).splitlines()[0]}); {OOM_REMEDIES}"
                ) from None
            _fail_on_invalid_images(label, requests, batch_stale, generated)
            for item, image in zip(batch_stale, generated, strict=True):
                _write_image(
                    logger, item, image, requests[item.condition], embedded[item.condition], edge_map, control,
                    {**job_provenance, "images_in_batch": len(generated),
                     "wall_seconds_per_image": batch_seconds / len(generated)},
                )
    finally:
        # When one failed, the batches not started yet are dropped; the one
        # the device is running finishes first.
        for pending in queued:
            pending.cancel()


def _timed_batch(*arguments: Any) -> tuple[list[GeneratedImage], float]:
    """:func:`promptsweep.generation.generate_batch`'s images, and its seconds."""
    from promptsweep import generation

    started = time.perf_counter()
    images = generation.generate_batch(*arguments)
    return images, time.perf_counter() - started


def _fail_on_invalid_images(
    label: str, requests: Mapping[str, dict[str, Any]], stale: Sequence[Stale], generated: Sequence[GeneratedImage]
) -> None:
    """Raise before anything of a batch is written if one of its images is
    invalid and its condition says ``on_invalid_image: fail``."""
    problems = [
        (item, image) for item, image in zip(stale, generated, strict=True)
        if image.problem and requests[item.condition]["runtime"]["on_invalid_image"] == "fail"
    ]
    if problems:
        details = "; ".join(f"{item.condition} seed {item.seed}: {image.problem}" for item, image in problems)
        raise GenerationError(
            f"{label}: {details}. Set runtime.on_invalid_image: exclude to record such "
            "images and leave them out of every metric instead"
        )


def _write_image(
    logger: logging.Logger,
    item: Stale,
    image: GeneratedImage,
    request: Mapping[str, Any],
    embedded: ConditionEmbeddings,
    edge_map: str,
    control: Image,
    provenance: dict[str, Any],
) -> None:
    """One generated image and its record: what it was made from and how."""
    if image.problem:
        logger.warning("%s seed %d excluded: %s", item.condition, item.seed, image.problem)
    files.write_png(Path(item.image), image.pixels)
    files.write_json(
        Path(item.record),
        {
            "image_id": request["image_id"],
            "condition": request["condition"],
            "prompt": request["prompt"],
            "negative_prompt": request["negative_prompt"],
            "method": embedded.method,
            "dose": embedded.dose,
            "embedding_norms": embedded.norms,
            **({"embedding": request["embedding"]} if "embedding" in request else {}),
            # An optimisation search's best point: which search chose it, and where.
            **({"search": request["search"]} if "search" in request else {}),
            "edge_map": edge_map,
            "generation": request["generation"],
            "resolution": [control.width, control.height],
            "runtime": request["runtime"],
            **provenance,
            "seed": image.seed,
            "image": item.image,
            "sha256": files.file_sha256(item.image),
            "fingerprint": item.fingerprint,
            "valid": image.problem is None,
            "problem": image.problem,
        },
    )
