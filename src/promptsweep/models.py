"""Finding and loading a model family's ControlNet pipeline.

Two steps, each in one place:

* :func:`resolve_weights` turns a model source (a hub id with a revision, or a
  local directory) into a local directory and a fingerprint (the resolved
  commit hash, or the sha256 of every weight file). It runs once per study,
  before any generation, so missing weights stop the run early.
* :func:`load_pipeline` builds the family's diffusers pipeline
  (:mod:`promptsweep.families`) from those directories, from safetensors only, and :func:`cached_pipeline` keeps it for the life of
  the process so that a worker loads it once, not once per job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

from promptsweep import families, files
from promptsweep.families import DEFAULT_FAMILY
from promptsweep.threads import on_device_thread

# Compiled graphs Dynamo may keep for the denoisers. The UNet's and the
# ControlNet's forwards are wrapped by the same diffusers decorator, so they
# share one cache: two entries per input shape (batch, height, width). With
# fullgraph=True a full cache is a hard error, and the default (8) is only four
# shapes -- fewer than the aspect ratios of a study's images.
COMPILED_GRAPHS_LIMIT = 64


T = TypeVar("T")


class MissingWeightsError(RuntimeError):
    """Weights that are neither local nor fetchable; the message says how to fetch them."""


@dataclass(frozen=True)
class ModelSource:
    """A hub repository id (with an optional revision) or a local directory."""

    id: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.id).expanduser().is_dir() or self.id.startswith((".", "/", "~"))


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's files are on disk, and what identifies them."""

    source: ModelSource
    directory: str
    commit: str | None
    sha256: dict[str, str]

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.source.id,
            "revision": self.source.revision,
            "directory": self.directory,
            "commit": self.commit,
            "sha256": self.sha256,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ResolvedWeights:
        return cls(
            ModelSource(record["id"], record["revision"]),
            record["directory"],
            record["commit"],
            record["sha256"],
        )


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> str | None:
    """The Hugging Face cache by its conventions (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``), read when called rather than when huggingface_hub was
    imported; ``None`` leaves huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def fetch_command(source: ModelSource, patterns: list[str]) -> str:
    revision = f" --revision {source.revision}" if source.revision else ""
    includes = " ".join(f"'{pattern}'" for pattern in patterns)
    return f"hf download {source.id}{revision} --include {includes}"


def resolve_weights(source: ModelSource, patterns: list[str], role: str) -> ResolvedWeights:
    """Find a model's files locally, fetching them from the hub if allowed.

    A local directory is fingerprinted by the sha256 of its safetensors files.
    A hub id is looked up in the Hugging Face cache (``HF_HOME``); if absent
    and ``HF_HUB_OFFLINE`` is not set, it is downloaded. The resolved commit
    hash identifies it.
    """
    if source.is_local:
        directory = Path(source.id).expanduser()
        if not directory.is_dir():
            raise MissingWeightsError(
                f"{role} model directory {source.id!r} does not exist; set model.{role}.id "
                "to a directory in diffusers' layout or to a hub id"
            )
        weights = sorted(directory.rglob("*.safetensors"))
        if not weights:
            pickled = sorted(directory.rglob("*.bin")) + sorted(directory.rglob("*.ckpt"))
            hint = " (it has only pickled .bin/.ckpt weights, which are never loaded)" if pickled else ""
            raise MissingWeightsError(
                f"{role} model directory {source.id!r} holds no .safetensors weights{hint}; "
                "convert or download the safetensors files"
            )
        return ResolvedWeights(
            source,
            str(directory.resolve()),
            None,
            {str(path.relative_to(directory)): files.file_sha256(path) for path in weights},
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot(local_files_only: bool) -> str:
        return snapshot_download(
            source.id,
            revision=source.revision,
            allow_patterns=patterns,
            cache_dir=hub_cache_dir(),
            local_files_only=local_files_only,
        )

    try:
        directory = snapshot(local_files_only=True)
    except LocalEntryNotFoundError:
        directory = None
    if directory is None and not hub_offline():
        try:
            directory = snapshot(local_files_only=False)
        except Exception as error:  # noqa: BLE001 -- any failure means "not fetchable"
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            raise MissingWeightsError(_missing_message(source, patterns, role, reason)) from None
    if directory is None:
        raise MissingWeightsError(
            _missing_message(source, patterns, role, "not in the local cache and HF_HUB_OFFLINE is set")
        )
    return ResolvedWeights(source, str(directory), Path(directory).name, {})


def _missing_message(source: ModelSource, patterns: list[str], role: str, reason: str) -> str:
    return (
        f"{role} weights {source.id!r} (revision {source.revision or 'main'}) are missing: "
        f"{reason}. Fetch them on a machine with network access with\n"
        f"    {fetch_command(source, patterns)}\n"
        f"(into the same HF_HOME), or set model.{role}.id to a local directory."
    )


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 on the CPU (fp16 is slow or unsupported there)."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


@dataclass(frozen=True)
class PipelineOptions:
    device: str
    dtype: torch.dtype
    safety_checker: bool = False
    attention_slicing: bool = False
    cpu_offload: bool = False
    compile: bool = False
    """Prepare and ``torch.compile`` the UNet and ControlNet (:func:`compile_denoisers`).

    Meant for a GPU (inductor takes minutes to compile for a CPU). Not
    bit-identical to eager: compiled kernels fuse and reorder floating-point
    operations, so pixels differ at rounding level."""

    def __post_init__(self) -> None:
        # Both would silently fight the compiled modules: slicing's attention
        # processor is replaced by the fused one, and offloading moves the
        # modules between devices around every call of a compiled graph.
        if self.compile and (self.attention_slicing or self.cpu_offload):
            raise ValueError("compile cannot be combined with attention_slicing or cpu_offload")


def load_pipeline(
    base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions, *, family: str = DEFAULT_FAMILY
) -> Any:
    """Build the model family's pipeline from local directories, from
    safetensors only (``Family.load_pipeline``), and set it up for ``options``."""
    pipeline = families.get(family).load_pipeline(base, controlnet, options)
    if options.attention_slicing:
        pipeline.enable_attention_slicing()
    if options.cpu_offload:
        pipeline.enable_model_cpu_offload(device=options.device)
    else:
        pipeline.to(options.device)
    if options.compile:
        compile_denoisers(pipeline)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def fuse_qkv_projections(model: torch.nn.Module) -> None:
    """One matmul for each attention layer's query, key and value projections
    (key and value for cross-attention), with diffusers' fused processor.

    Exact up to GEMM rounding: the fused weight is the three weights stacked,
    so every output is the same dot product. ``UNet2DConditionModel`` has this
    as ``fuse_qkv_projections()``, but ``ControlNetModel``'s method of that name
    (from ``AttentionMixin``, diffusers 0.42) skips ``Attention`` layers and
    silently does nothing, so both models go through the layers' own
    ``fuse_projections`` here.
    """
    for module in model.modules():
        if isinstance(module, Attention):
            module.fuse_projections()
    model.set_attn_processor(FusedAttnProcessor2_0())


def prepare_denoiser(model: torch.nn.Module) -> None:
    """Channels-last memory layout (what cuDNN's fp16 tensor-core convolutions
    read natively) and fused QKV projections, before compiling."""
    model.to(memory_format=torch.channels_last)
    fuse_qkv_projections(model)


def compile_denoisers(pipeline: Any, backend: str = "inductor") -> None:
    """Prepare and compile, in place, the two models that run at every step.

    Inductor's default mode: ``max-autotune`` benchmarks kernel candidates for
    minutes per shape and adds CUDA graphs, which save launch overhead that is
    negligible at throughput batch sizes. ``fullgraph=True`` turns a graph break
    -- a silent fall back to eager for part of the model -- into an error.
    ``dynamic=False`` specialises the kernels on the input shape: the batch
    size, which ``generation.generate_batch`` keeps fixed (``padded``), and the image
    size; each new shape compiles again. ``backend="eager"`` only captures the
    graphs (a quick check on a CPU).

    Only for the UNet families (sd15, sdxl): the transformer families' joint
    attention takes no fused processor, so they stop here with the config key.
    """
    if not hasattr(pipeline, "unet"):
        raise ValueError(
            f"runtime.compile: {type(pipeline).__name__} has no UNet; compiling is prepared for the UNet "
            "families (sd15, sdxl) only; set runtime.compile to false"
        )
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_GRAPHS_LIMIT)
    for model in (pipeline.unet, pipeline.controlnet):
        prepare_denoiser(model)
        model.compile(backend=backend, fullgraph=True, dynamic=False)


_pipelines: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class CachedPipeline:
    pipeline: Any
    load_seconds: float | None
    """Seconds spent loading by this call; ``None`` when the pipeline was already loaded."""


def cached_pipeline(
    base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions, *, family: str = DEFAULT_FAMILY
) -> CachedPipeline:
    """The pipeline for these weights and options, loaded at most once per process.

    Snakemake runs local jobs as threads of one process (the workflow profile
    sets ``force-use-threads``), so every generation job of a run shares it.
    Looked up on the device's thread: on a GPU, not behind the metric jobs
    that hold the compute thread, which left the GPU idle between images.
    """
    return on_device_thread(options.device, _cached_pipeline, base, controlnet, options, family)


def _cached_pipeline(
    base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions, family: str
) -> CachedPipeline:
    key = (
        family,
        base.directory,
        controlnet.directory,
        tuple(sorted(base.sha256.items())),
        tuple(sorted(controlnet.sha256.items())),
        options,
    )
    if key in _pipelines:
        return CachedPipeline(_pipelines[key], None)
    started = time.perf_counter()
    _pipelines[key] = load_pipeline(base, controlnet, options, family=family)
    return CachedPipeline(_pipelines[key], time.perf_counter() - started)
