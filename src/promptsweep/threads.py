"""The one thread of a process that does its heavy computing.

Snakemake runs local jobs on a pool of threads, and every thread that calls
into PyTorch gets its own OpenMP team. With more OpenMP threads than cores,
libgomp stops spinning and parks its workers at every parallel region:
generation ran 1.9x slower (1.6 s instead of 0.84 s per pair of seeds on 2
cores) once a second thread had touched the model. Array work beside it does
the same: on 2 cores, two seeds took 3.2 s alone and 11 to 16 s while a second
thread computed BRISQUE, OpenCV measures or SSIM maps. So model work and the
metric, plot and gallery jobs all run here, one at a time; jobs still overlap
their file reading and writing.

Generation on a GPU is the exception: it runs on a thread of its own, so that
the CPU jobs of the images already generated overlap with it instead of
leaving the GPU idle. Its cores are then free for the metrics, whose
per-image measures (:func:`map_measure`) run in worker processes: threads
would not help, as BRISQUE, three quarters of it a SciPy convolution then,
ran no faster on two threads than on one (1.94 s against 1.70 s for eight
512 px images on 2 cores), and its libsvm model must not be called from two
threads.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_NAME = "promptsweep-compute"
_compute_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_NAME)
_ACCELERATOR_NAME = "promptsweep-accelerator"
_accelerator_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_ACCELERATOR_NAME)
# runtime.metric_processes, runtime.device and the workflow's cores; the
# pool is made (and "auto" resolved) when first needed.
_measure_setting: tuple[int | str, str, int] = (0, "cpu", 1)
_measure_pool: tuple[ProcessPoolExecutor | None, int] | None = None
_measure_pool_lock = threading.Lock()


def on_compute_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` on the process's compute thread and return its result
    (directly, when called from that thread)."""
    return on_device_thread("cpu", function, *args, **kwargs)


def submit_to_device_thread(device: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Queue model work for ``device`` on its thread -- the compute thread for
    the CPU, the accelerator thread for any other device -- without waiting
    for it. Work queued one after another runs back to back, so a job can
    queue all its batches and write each one's images while the next is
    generated. Called from that thread, ``function`` runs at once."""
    name, thread = (_NAME, _compute_thread) if device == "cpu" else (_ACCELERATOR_NAME, _accelerator_thread)
    if not threading.current_thread().name.startswith(name):
        return thread.submit(function, *args, **kwargs)
    done: Future[T] = Future()
    try:
        done.set_result(function(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 -- handed to the caller through the future
        done.set_exception(error)
    return done


def on_device_thread(device: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run model work for ``device`` on its thread (see
    :func:`submit_to_device_thread`) and return its result."""
    return submit_to_device_thread(device, function, *args, **kwargs).result()


def computed_alone(job: Callable[..., T]) -> Callable[..., T]:
    """A job whose whole body runs on the compute thread."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> T:
        return on_compute_thread(job, *args, **kwargs)

    return run


def import_on_compute_thread(modules: Sequence[str]) -> None:
    """Import ``modules`` (the model code: torch, diffusers, transformers) on
    the compute thread, where the learned metrics' loaders import theirs:
    diffusers' and transformers' lazy modules fail ("cannot import name") when
    two threads import them at once. Modules already imported cost nothing."""
    if not all(module in sys.modules for module in modules):
        on_compute_thread(lambda: [importlib.import_module(module) for module in modules])


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when present, else CPU.

    Here, not beside the model code: asking PyTorch imports only torch, while
    the model code imports diffusers, whose lazy modules fail ("cannot import
    name") when a second thread imports them at the same time, as a generate
    job does."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def metric_process_count(setting: int | str, device: str, cores: int) -> int:
    """Worker processes for per-image measures: ``auto`` is none when the
    model runs on the CPU (its cores are the model's, see above) and one
    fewer than ``cores`` (the workflow's ``--cores``, at most the cores this
    process may use) otherwise, leaving one for the job threads."""
    if setting != "auto":
        return int(setting)
    if resolve_device(device) == "cpu":
        return 0
    # The cores this process may use (a cluster job's share); macOS lacks affinity.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cores, usable) - 1)


def use_metric_processes(setting: int | str, device: str, cores: int) -> None:
    """Set how :func:`map_measure` runs in this process: ``setting`` and
    ``device`` as in the config's ``runtime`` section, resolved on first use
    (``auto`` may need to ask PyTorch whether there is a GPU)."""
    global _measure_setting, _measure_pool
    with _measure_pool_lock:
        pool = _measure_pool[0] if _measure_pool else None
        if pool is not None:
            pool.shutdown()
        _measure_pool = None
        _measure_setting = (setting, device, cores)


def _one_thread_each() -> None:
    """Each worker computes with one thread: the workers share the cores."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    import cv2

    cv2.setNumThreads(1)


def _measure_workers() -> tuple[ProcessPoolExecutor | None, int]:
    """The pool and its size, made on first use (none when the size is 0)."""
    global _measure_pool
    with _measure_pool_lock:
        if _measure_pool is None:
            count = metric_process_count(*_measure_setting)
            # Spawned, not forked: the parent holds CUDA and running threads.
            pool = (
                ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread_each)
                if count
                else None
            )
            _measure_pool = pool, count
        return _measure_pool


def importable(function: Callable[..., Any]) -> bool:
    """Whether a worker process can import ``function`` (for a callable
    object, its class) by module and name."""
    if isinstance(function, functools.partial):
        return importable(function.func)
    named = function if hasattr(function, "__qualname__") else type(function)
    module = named.__module__
    return "<" not in named.__qualname__ and module != "__main__" and not module.startswith("snakemake")


@dataclass(frozen=True)
class _InDirectory:
    """``function``, called in ``directory``: a worker process keeps the
    working directory it started in, and relative paths must mean there
    what they mean to the job that passed them."""

    function: Callable[[Any], Any]
    directory: str

    def __call__(self, sample: Any) -> Any:
        if os.getcwd() != self.directory:
            os.chdir(self.directory)
        return self.function(sample)


def map_measure(measure: Callable[[Any], T], samples: Sequence[Any]) -> list[T]:
    """``measure`` of every sample, in order: in worker processes when
    :func:`use_metric_processes` asked for some, else here. Either way,
    relative paths are relative to this process's working directory.

    The workers import ``measure`` by its module and name, so a lambda, a
    nested function or a function of a Snakefile (a metric registered at run
    time, say) is computed here."""
    pool, count = _measure_workers()
    if pool is None or len(samples) < 2 or not importable(measure):
        return [measure(sample) for sample in samples]
    try:
        chunk = max(1, len(samples) // (4 * count))
        return list(pool.map(_InDirectory(measure, os.getcwd()), samples, chunksize=chunk))
    except BrokenProcessPool:
        # A worker died (killed for memory, say): the next job gets a new pool.
        use_metric_processes(*_measure_setting)
        raise
