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
leaving the GPU idle.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_NAME = "promptsweep-compute"
_compute_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_NAME)
_ACCELERATOR_NAME = "promptsweep-accelerator"
_accelerator_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_ACCELERATOR_NAME)


def on_compute_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` on the process's compute thread and return its result
    (directly, when called from that thread)."""
    if threading.current_thread().name.startswith(_NAME):
        return function(*args, **kwargs)
    return _compute_thread.submit(function, *args, **kwargs).result()


def on_device_thread(device: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run model work for ``device`` on its thread: the compute thread for the
    CPU, the accelerator thread for any other device."""
    if device == "cpu":
        return on_compute_thread(function, *args, **kwargs)
    if threading.current_thread().name.startswith(_ACCELERATOR_NAME):
        return function(*args, **kwargs)
    return _accelerator_thread.submit(function, *args, **kwargs).result()


def computed_alone(job: Callable[..., T]) -> Callable[..., T]:
    """A job whose whole body runs on the compute thread."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> T:
        return on_compute_thread(job, *args, **kwargs)

    return run
